//! The bus benchmark: a server process (this binary re-executed) hosts a raw quinn echo server
//! and a Manta node with echo and sink actors; this process measures round trips and one-way
//! throughput against both.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use manta::actor::{
    spawn, start_arbiter, wire_message, Actor, ActorAddress, ActorRef, ArbiterHandle, Context, Handler, Node,
    Routes, SpawnOptions, System,
};
use manta::transport::{
    join_blocking, Admission, ClusterCa, NodeId, NodeIdentity, TokenRegistry, TokenUse, Transport,
    TransportConfig,
};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::stats::{percentiles_us, report};

pub(crate) const SERVER_ROLE_ENV: &str = "MANTA_BENCH_SERVER";

/// Set for the server process by `--quic-only`: Manta's nodes use QUIC only.
const QUIC_ONLY_ENV: &str = "MANTA_BENCH_QUIC_ONLY";

/// The server's transport settings (it learns `--quic-only` from its environment).
fn transport_config() -> TransportConfig {
    TransportConfig { local_channel: std::env::var_os(QUIC_ONLY_ENV).is_none(), ..TransportConfig::default() }
}

pub(crate) struct Options {
    rounds: u32,
    messages: u64,
    repeat: usize,
    /// Manta's nodes talk QUIC even on one host (the local channel off).
    quic_only: bool,
}

impl Options {
    pub(crate) fn parse(args: &[String]) -> anyhow::Result<Self> {
        let mut options = Options { rounds: 20_000, messages: 1_000_000, repeat: 5, quic_only: false };
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            if flag == "--quic-only" {
                options.quic_only = true;
                continue;
            }
            let value = args.next().with_context(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--rounds" => options.rounds = value.parse()?,
                "--messages" => options.messages = value.parse()?,
                "--repeat" => options.repeat = value.parse::<usize>()?.max(1),
                other => anyhow::bail!("unknown option {other}"),
            }
        }
        Ok(options)
    }
}

struct Echo;
impl Actor for Echo {
    type Context = Context<Self>;
}

#[derive(Serialize, Deserialize)]
struct Ping(u64);
wire_message!(Ping => u64, id = 1);
impl Handler<Ping> for Echo {
    type Result = u64;
    fn handle(&mut self, message: Ping, _: &mut Context<Self>) -> u64 {
        message.0
    }
}

struct Sink(u64);
impl Actor for Sink {
    type Context = Context<Self>;
}

#[derive(Serialize, Deserialize)]
struct Record(u64);
wire_message!(Record => (), id = 2);
impl Handler<Record> for Sink {
    type Result = ();
    fn handle(&mut self, _: Record, _: &mut Context<Self>) {
        self.0 += 1;
    }
}

#[derive(Serialize, Deserialize)]
struct Count;
wire_message!(Count => u64, id = 3);
impl Handler<Count> for Sink {
    type Result = u64;
    fn handle(&mut self, _: Count, _: &mut Context<Self>) -> u64 {
        std::mem::take(&mut self.0)
    }
}

/// The server process: raw echo + a node with the actors, until stdin closes.
pub(crate) fn serve() -> anyhow::Result<()> {
    let head: SocketAddr = std::env::var(SERVER_ROLE_ENV)?.parse()?;
    let token = std::env::var("MANTA_BENCH_TOKEN")?.parse()?;
    let identity = join_blocking(head, &token, &TransportConfig::default())?;
    let raw_addr = raw::serve(&identity)?;
    let unix_path = unix::serve()?;
    let node = Node::start(Transport::builder(identity).config(transport_config()))?;
    let worker = start_arbiter("bench-actors")?;
    let echo = spawn(&worker, SpawnOptions::named("echo"), || Echo);
    node.register("echo", Routes::new(echo).message::<Ping>())?;
    let echo_inline = spawn(node.arbiter(), SpawnOptions::named("echo-inline"), || Echo);
    node.register("echo-inline", Routes::new(echo_inline).message::<Ping>())?;
    let sink = spawn(node.arbiter(), SpawnOptions::named("sink").mailbox_capacity(65_536), || Sink(0));
    node.register("sink", Routes::new(sink).message::<Record>().message::<Count>())?;
    println!("READY {raw_addr} {} {}", node.local_addr(), unix_path.display());
    std::io::stdout().flush()?;
    // Serve until the parent closes our stdin.
    let mut sink = String::new();
    while std::io::stdin().read_line(&mut sink)? > 0 {}
    Ok(())
}

pub(crate) fn run(options: &Options) -> anyhow::Result<()> {
    let ca = Arc::new(ClusterCa::generate("bench")?);
    let tokens = Arc::new(TokenRegistry::default());
    let identity = ca.issue(NodeId::random()?)?;
    let config = TransportConfig { local_channel: !options.quic_only, ..TransportConfig::default() };
    let node = Node::start(
        Transport::builder(identity)
            .admission(Admission { ca: ca.clone(), tokens: tokens.clone() })
            .config(config),
    )?;
    let token = tokens.create(&ca, TokenUse::OneTime)?;
    let mut server = Command::new(std::env::current_exe()?)
        .env(SERVER_ROLE_ENV, node.local_addr().to_string())
        .env("MANTA_BENCH_TOKEN", token.to_string())
        .envs(options.quic_only.then_some((QUIC_ONLY_ENV, "1")))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(server.stdout.take().context("server stdout")?).read_line(&mut line)?;
    let mut fields = line.split_whitespace().skip(1);
    let raw_addr: SocketAddr = fields.next().context("server did not start")?.parse()?;
    let node_addr: SocketAddr = fields.next().context("server did not start")?.parse()?;
    let unix_path = std::path::PathBuf::from(fields.next().context("server did not start")?);

    println!(
        "# manta-bench bus: {} rounds, {} one-way messages, {} runs each; Manta over {}",
        options.rounds,
        options.messages,
        options.repeat,
        if options.quic_only { "QUIC" } else { "the local channel (Unix socket)" }
    );
    println!("# client pid {}, server pid {}", std::process::id(), server.id());
    let client_identity = ca.issue(NodeId::random()?)?;
    let mut raw_runs = Vec::new();
    let mut raw_p99 = Vec::new();
    let mut unix_runs = Vec::new();
    let mut unix_p99 = Vec::new();
    let mut call_runs = Vec::new();
    let mut ask_arbiter_runs = Vec::new();
    let mut ask_arbiter_p99 = Vec::new();
    let mut ask_thread_runs = Vec::new();
    let mut ask_worker_runs = Vec::new();
    let mut tell_arbiter_runs = Vec::new();
    let mut tell_thread_runs = Vec::new();
    let echo_inline: ActorRef<Echo> = node.actor(ActorAddress::new(node_addr, "echo-inline"));
    let echo_worker: ActorRef<Echo> = node.actor(ActorAddress::new(node_addr, "echo"));
    let sink: ActorRef<Sink> = node.actor(ActorAddress::new(node_addr, "sink"));
    for _ in 0..options.repeat {
        let (median, p99) = raw::ping_pong(&client_identity, raw_addr, options.rounds)?;
        raw_runs.push(median);
        raw_p99.push(p99);
        let (median, p99) = unix::ping_pong(&unix_path, options.rounds)?;
        unix_runs.push(median);
        unix_p99.push(p99);

        let transport = node.transport().clone();
        let rounds = options.rounds;
        let (median, _) = on_arbiter(node.arbiter(), async move {
            let connection = transport.connect(node_addr).await?;
            let body = rmp_serde::to_vec(&Ping(7))?;
            let mut samples = Vec::with_capacity(rounds as usize);
            for _ in 0..rounds {
                let started = Instant::now();
                connection.call("echo-inline", 1, &body, None).await?;
                samples.push(started.elapsed());
            }
            anyhow::Ok(percentiles_us(&mut samples))
        })??;
        call_runs.push(median);

        let (median, p99) = on_arbiter(node.arbiter(), ask_rounds(echo_inline.clone(), rounds))??;
        ask_arbiter_runs.push(median);
        ask_arbiter_p99.push(p99);
        let (median, _) = System::new().block_on(ask_rounds(echo_inline.clone(), rounds))?;
        ask_thread_runs.push(median);
        let (median, _) = System::new().block_on(ask_rounds(echo_worker.clone(), rounds))?;
        ask_worker_runs.push(median);

        tell_arbiter_runs.push(on_arbiter(node.arbiter(), tell_throughput(sink.clone(), options.messages))??);
        tell_thread_runs.push(System::new().block_on(tell_throughput(sink.clone(), options.messages))?);
    }
    drop(server.stdin.take());
    let raw = report("raw_quinn_round_trip_median", "us", raw_runs);
    report("raw_quinn_round_trip_p99", "us", raw_p99);
    report("raw_unix_socket_round_trip_median", "us", unix_runs);
    report("raw_unix_socket_round_trip_p99", "us", unix_p99);
    report("transport_call_round_trip_median", "us", call_runs);
    let ask = report("actor_ask_round_trip_median", "us", ask_arbiter_runs);
    report("actor_ask_round_trip_p99", "us", ask_arbiter_p99);
    let ask_thread = report("actor_ask_from_foreign_thread_median", "us", ask_thread_runs);
    report("actor_ask_to_worker_arbiter_from_foreign_thread_median", "us", ask_worker_runs);
    report("actor_tell_throughput", "msg/s", tell_arbiter_runs);
    report("actor_tell_throughput_from_foreign_thread", "msg/s", tell_thread_runs);
    println!("actor_ask_over_raw_quinn: {:.2} x", ask / raw);
    println!("actor_ask_from_foreign_thread_over_raw_quinn: {:.2} x", ask_thread / raw);
    let _ = server.wait();
    Ok(())
}

/// Runs `future` on `arbiter` and waits for its output here.
fn on_arbiter<T: Send + 'static>(
    arbiter: &ArbiterHandle,
    future: impl std::future::Future<Output = T> + Send + 'static,
) -> anyhow::Result<T> {
    let (done_tx, done_rx) = oneshot::channel();
    arbiter.spawn(async move {
        let _ = done_tx.send(future.await);
    });
    done_rx.blocking_recv().context("the arbiter stopped")
}

async fn ask_rounds(echo: ActorRef<Echo>, rounds: u32) -> anyhow::Result<(f64, f64)> {
    let mut samples = Vec::with_capacity(rounds as usize);
    for index in 0..u64::from(rounds) {
        let started = Instant::now();
        let answer = echo.ask(Ping(index)).await?;
        samples.push(started.elapsed());
        anyhow::ensure!(answer == index, "echo answered {answer} to {index}");
    }
    Ok(percentiles_us(&mut samples))
}

async fn tell_throughput(sink: ActorRef<Sink>, messages: u64) -> anyhow::Result<f64> {
    sink.ask(Count).await?;
    let started = Instant::now();
    for index in 0..messages {
        sink.tell(Record(index)).await?;
    }
    // One stream, in order: when Count answers, every Record before it was handled.
    let counted = sink.ask_timeout(Count, Duration::from_secs(120)).await?;
    let elapsed = started.elapsed();
    anyhow::ensure!(counted == messages, "the sink counted {counted} of {messages}");
    Ok(messages as f64 / elapsed.as_secs_f64())
}

/// The floor: quinn alone, same TLS identities, one long-lived stream, 8-byte ping-pong.
pub(crate) mod raw {
    use super::*;

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// A quinn server with `identity`'s certificate, TLS 1.3 and the transport's crypto.
    pub(crate) fn server_config(identity: &NodeIdentity) -> anyhow::Result<quinn::ServerConfig> {
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(identity.private_key_pkcs8().to_vec().into());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(identity.cert_chain().to_vec(), key)?;
        tls.alpn_protocols = vec![b"raw".to_vec()];
        Ok(quinn::ServerConfig::with_crypto(Arc::new(quinn::crypto::rustls::QuicServerConfig::try_from(
            tls,
        )?)))
    }

    /// A quinn client that trusts `identity`'s CA.
    pub(crate) fn client_config(identity: &NodeIdentity) -> anyhow::Result<quinn::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(identity.ca_cert().clone())?;
        let mut tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"raw".to_vec()];
        Ok(quinn::ClientConfig::new(Arc::new(quinn::crypto::rustls::QuicClientConfig::try_from(tls)?)))
    }

    pub(super) fn serve(identity: &NodeIdentity) -> anyhow::Result<SocketAddr> {
        let config = server_config(identity)?;
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
                                let mut buffer = [0u8; 8];
                                while recv.read_exact(&mut buffer).await.is_ok() {
                                    if send.write_all(&buffer).await.is_err() {
                                        break;
                                    }
                                }
                            });
                        }
                    });
                }
            })
        });
        Ok(addr_rx.recv()?)
    }

    pub(super) fn ping_pong(
        identity: &NodeIdentity,
        server: SocketAddr,
        rounds: u32,
    ) -> anyhow::Result<(f64, f64)> {
        let config = client_config(identity)?;
        System::new().block_on(async move {
            let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
            let connection = endpoint.connect_with(config, server, "cluster.manta")?.await?;
            let (mut send, mut recv) = connection.open_bi().await?;
            let mut samples = Vec::with_capacity(rounds as usize);
            let mut buffer = [0u8; 8];
            for index in 0..u64::from(rounds) {
                let started = Instant::now();
                send.write_all(&index.to_le_bytes()).await?;
                recv.read_exact(&mut buffer).await?;
                samples.push(started.elapsed());
                anyhow::ensure!(u64::from_le_bytes(buffer) == index, "raw echo out of order");
            }
            connection.close(0u32.into(), b"done");
            Ok(percentiles_us(&mut samples))
        })
    }
}

/// The other floor: a Unix stream socket between the same two processes, tokio on both ends
/// (the runtime the transport uses), 8-byte ping-pong. Measured to decide on a local channel.
mod unix {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    pub(super) fn serve() -> anyhow::Result<std::path::PathBuf> {
        let path = std::env::temp_dir().join(format!("manta-bench-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path)?;
        listener.set_nonblocking(true)?;
        std::thread::spawn(move || {
            System::new().block_on(async move {
                let listener = tokio::net::UnixListener::from_std(listener).unwrap();
                while let Ok((mut stream, _)) = listener.accept().await {
                    actix_rt::spawn(async move {
                        let mut buffer = [0u8; 8];
                        while stream.read_exact(&mut buffer).await.is_ok() {
                            if stream.write_all(&buffer).await.is_err() {
                                break;
                            }
                        }
                    });
                }
            })
        });
        Ok(path)
    }

    pub(super) fn ping_pong(path: &std::path::Path, rounds: u32) -> anyhow::Result<(f64, f64)> {
        System::new().block_on(async move {
            let mut stream = tokio::net::UnixStream::connect(path).await?;
            let mut samples = Vec::with_capacity(rounds as usize);
            let mut buffer = [0u8; 8];
            for index in 0..u64::from(rounds) {
                let started = Instant::now();
                stream.write_all(&index.to_le_bytes()).await?;
                stream.read_exact(&mut buffer).await?;
                samples.push(started.elapsed());
                anyhow::ensure!(u64::from_le_bytes(buffer) == index, "unix echo out of order");
            }
            Ok(percentiles_us(&mut samples))
        })
    }
}
