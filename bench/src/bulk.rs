//! The bulk floor: quinn alone, the same TLS 1.3 suite as the transport, one stream carrying
//! `bytes` in 5 MiB writes from one thread's endpoint to another's over loopback (each thread
//! its own runtime, as two processes would be). What the object manager's transfers between
//! nodes are judged against (`two_node_transfer_500mb_gigabytes` of `manta microbenchmark
//! --cluster`). Run with quinn's default transport settings and with the transport's (larger
//! windows, MTU discovery up to 64 KiB).

use std::net::SocketAddr;
use std::time::Instant;

use actix_rt::System;
use manta_transport::{ClusterCa, NodeId, NodeIdentity};

/// How the run is shaped.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    bytes: usize,
    repeat: usize,
}

impl Options {
    pub(crate) fn parse(args: &[String]) -> anyhow::Result<Options> {
        let mut options = Options { bytes: 500_000_000, repeat: 3 };
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let value = args.next().ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
            match flag.as_str() {
                "--bytes" => options.bytes = value.parse()?,
                "--repeat" => options.repeat = value.parse()?,
                other => anyhow::bail!("unknown flag {other}"),
            }
        }
        Ok(options)
    }
}

const CHUNK: usize = 5 * 1024 * 1024;

fn serve(identity: &NodeIdentity) -> anyhow::Result<SocketAddr> {
    let config = crate::bus::raw::server_config(identity)?;
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        System::new().block_on(async move {
            let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
            addr_tx.send(endpoint.local_addr().unwrap()).unwrap();
            while let Some(incoming) = endpoint.accept().await {
                actix_rt::spawn(async move {
                    let Ok(connection) = incoming.await else { return };
                    while let Ok((mut send, mut recv)) = connection.accept_bi().await {
                        actix_rt::spawn(async move {
                            let mut received = 0u64;
                            while let Ok(Some(chunk)) = recv.read_chunk(usize::MAX, true).await {
                                received += chunk.bytes.len() as u64;
                            }
                            let _ = send.write_all(&received.to_le_bytes()).await;
                            let _ = send.finish();
                            let _ = send.stopped().await;
                        });
                    }
                });
            }
        })
    });
    Ok(addr_rx.recv()?)
}

/// Sends `bytes` over one stream `repeat + 1` times (the first a warm-up); GB/s of each.
fn send(identity: &NodeIdentity, server: SocketAddr, options: &Options) -> anyhow::Result<Vec<f64>> {
    let config = crate::bus::raw::client_config(identity)?;
    let payload = bytes::Bytes::from(vec![7u8; options.bytes]);
    System::new().block_on(async move {
        let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
        let connection = endpoint.connect_with(config, server, "cluster.manta")?.await?;
        let mut rates = Vec::new();
        for round in 0..=options.repeat {
            let started = Instant::now();
            let (mut send, mut recv) = connection.open_bi().await?;
            let mut offset = 0;
            while offset < payload.len() {
                let end = (offset + CHUNK).min(payload.len());
                send.write_chunk(payload.slice(offset..end)).await?;
                offset = end;
            }
            send.finish()?;
            let mut answer = [0u8; 8];
            recv.read_exact(&mut answer).await?;
            let seconds = started.elapsed().as_secs_f64();
            anyhow::ensure!(u64::from_le_bytes(answer) == payload.len() as u64, "bytes lost");
            if round > 0 {
                rates.push(payload.len() as f64 / seconds / 1e9);
            }
        }
        connection.close(0u32.into(), b"done");
        Ok(rates)
    })
}

/// Measures and prints the figure.
pub(crate) fn run(options: &Options) -> anyhow::Result<()> {
    let ca = ClusterCa::generate("bench")?;
    let identity = ca.issue(NodeId::random()?)?;
    let server = serve(&identity)?;
    let rates = send(&identity, server, options)?;
    crate::stats::report("raw_quinn_bulk_gigabytes", "GB/s", rates);
    Ok(())
}
