//! Integration tests of the transport: two or more endpoints in one process, each on its own
//! thread, talking over loopback with real QUIC and TLS.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use manta_transport::frame::{self, Header};
use manta_transport::handshake::{Handshake, WIRE_PROTOCOL};
use manta_transport::{
    Admission, BulkBody, CallError, ClusterCa, ConnectError, DispatchFuture, Dispatched, Dispatcher,
    HandshakeRefusal, Incoming, JoinError, JoinRefusal, NodeId, NodeIdentity, RemoteErrorKind, TokenRegistry,
    TokenUse, Transport, TransportConfig,
};

fn run<F: std::future::Future>(future: F) -> F::Output {
    actix_rt::System::new().block_on(future)
}

/// Echoes requests, counts every message it sees, and never answers target "silent".
#[derive(Default)]
struct Echo {
    seen: AtomicUsize,
}

impl Dispatcher for Echo {
    fn dispatch(&self, message: Incoming) -> Dispatched {
        self.seen.fetch_add(1, Ordering::SeqCst);
        if message.target == "silent" {
            return Dispatched::Accepted(Box::pin(std::future::pending()));
        }
        let mut reply = message.peer.to_string().into_bytes();
        reply.push(b':');
        reply.extend_from_slice(&message.body);
        Dispatched::answer(Ok(Bytes::from(reply)))
    }

    fn dispatch_bulk(&self, _message: Incoming, mut body: BulkBody) -> DispatchFuture {
        Box::pin(async move {
            let mut sum = 0u64;
            let mut len = 0u64;
            while let Some(chunk) = body.next_chunk().await.map_err(|error| {
                manta_transport::RemoteError::new(RemoteErrorKind::Internal, error.to_string())
            })? {
                len += chunk.len() as u64;
                sum = chunk.iter().fold(sum, |acc, byte| acc.wrapping_mul(31).wrapping_add(u64::from(*byte)));
            }
            Ok(Bytes::from(format!("{len}:{sum}")))
        })
    }
}

struct Node {
    transport: Transport,
    echo: Arc<Echo>,
}

fn node(ca: &ClusterCa) -> Node {
    node_with(ca.issue(NodeId::random().unwrap()).unwrap(), TransportConfig::default(), None)
}

/// A node that serves and prefers the local channel, or speaks QUIC only.
fn node_over(ca: &ClusterCa, local: bool) -> Node {
    let config = TransportConfig { local_channel: local, ..TransportConfig::default() };
    node_with(ca.issue(NodeId::random().unwrap()).unwrap(), config, None)
}

/// Runs a test body once over QUIC and once over the local channel.
macro_rules! over_both_links {
    ($body:ident => $quic:ident, $local:ident) => {
        #[test]
        fn $quic() {
            $body(false);
        }
        #[test]
        fn $local() {
            $body(true);
        }
    };
}

fn node_with(identity: NodeIdentity, config: TransportConfig, admission: Option<Admission>) -> Node {
    let echo = Arc::new(Echo::default());
    let mut builder = Transport::builder(identity).config(config).dispatcher(echo.clone());
    if let Some(admission) = admission {
        builder = builder.admission(admission);
    }
    Node { transport: builder.start().unwrap(), echo }
}

fn quick_config() -> TransportConfig {
    TransportConfig {
        handshake_timeout: Duration::from_secs(5),
        connect_attempts_max: 2,
        reconnect_backoff_initial: Duration::from_millis(20),
        ..TransportConfig::default()
    }
}

over_both_links!(calls_and_one_way_messages =>
    calls_and_one_way_messages_reach_the_peer_over_one_reused_quic_connection,
    calls_and_one_way_messages_reach_the_peer_over_one_reused_local_connection);

fn calls_and_one_way_messages(local: bool) {
    let ca = ClusterCa::generate("test").unwrap();
    let server = node_over(&ca, local);
    let client = node_over(&ca, local);
    run(async {
        let connection = client.transport.connect(server.transport.local_addr()).await.unwrap();
        assert_eq!(connection.is_local(), local);
        assert_eq!(connection.peer(), server.transport.node_id());
        let reply = connection.call("echo", 1, b"hello", None).await.unwrap();
        assert_eq!(reply, Bytes::from(format!("{}:hello", client.transport.node_id())));

        // The same connection is reused, and the server can call back over it.
        let again = client.transport.connect(server.transport.local_addr()).await.unwrap();
        assert_eq!(again.remote_addr(), connection.remote_addr());
        let back =
            server.transport.connection_to(client.transport.node_id()).expect("server knows the client");
        assert_eq!(back.is_local(), local);
        assert_eq!(back.remote_addr(), client.transport.local_addr());
        let reply = back.call("echo", 1, b"back", None).await.unwrap();
        assert_eq!(reply, Bytes::from(format!("{}:back", server.transport.node_id())));
        assert_eq!(client.transport.connection_count(), 1);
        assert_eq!(server.transport.connection_count(), 1);

        for index in 0..100u32 {
            connection.notify("echo", 2, &index.to_be_bytes()).await.unwrap();
        }
        // A call after the notifications is answered after they were all dispatched (one stream, in order).
        connection.call("echo", 1, b"fence", None).await.unwrap();
        assert_eq!(server.echo.seen.load(Ordering::SeqCst), 102);

        // A call answered through a callback, run exactly once with the answer.
        let (answered, answer) = tokio::sync::oneshot::channel();
        connection
            .start_call_with("echo", 1, b"callback", Box::new(move |reply| answered.send(reply).unwrap()))
            .await;
        let reply = answer.await.unwrap().unwrap();
        assert_eq!(reply, Bytes::from(format!("{}:callback", client.transport.node_id())));
        // One that is never answered runs with `ConnectionLost` when the connection closes.
        let (lost, unanswered) = tokio::sync::oneshot::channel();
        connection.start_call_with("silent", 1, b"", Box::new(move |reply| lost.send(reply).unwrap())).await;

        // Closing fails the calls of both sides and frees the peer tables.
        connection.close("done");
        let outcome = unanswered.await.expect("the callback ran");
        assert!(matches!(outcome, Err(CallError::ConnectionLost(_))), "{outcome:?}");
        assert!(connection.is_closed());
        let outcome = connection.call("echo", 1, b"late", None).await;
        assert!(matches!(outcome, Err(CallError::ConnectionLost(_))), "{outcome:?}");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !back.is_closed() || server.transport.connection_count() != 0 {
            assert!(std::time::Instant::now() < deadline, "the server never saw the close");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let outcome = back.call("echo", 1, b"late", None).await;
        assert!(matches!(outcome, Err(CallError::ConnectionLost(_))), "{outcome:?}");
        let fresh = client.transport.connect(server.transport.local_addr()).await.unwrap();
        assert!(fresh.call("echo", 1, b"again", None).await.is_ok());
    });
}

#[test]
fn a_call_without_an_answer_times_out_and_the_connection_stays_usable() {
    let ca = ClusterCa::generate("test").unwrap();
    let server = node(&ca);
    let client = node(&ca);
    run(async {
        let connection = client.transport.connect(server.transport.local_addr()).await.unwrap();
        let outcome = connection.call("silent", 1, b"", Some(Duration::from_millis(100))).await;
        assert!(matches!(outcome, Err(CallError::Timeout(_))), "{outcome:?}");
        assert!(connection.call("echo", 1, b"x", None).await.is_ok());
    });
}

over_both_links!(oversized_message =>
    an_oversized_message_is_a_typed_error_for_the_sender_over_quic,
    an_oversized_message_is_a_typed_error_for_the_sender_over_the_local_channel);

fn oversized_message(local: bool) {
    let ca = ClusterCa::generate("test").unwrap();
    let server = node_over(&ca, local);
    let config =
        TransportConfig { frame_bytes_max: 1024, local_channel: local, ..TransportConfig::default() };
    let client = node_with(ca.issue(NodeId::random().unwrap()).unwrap(), config, None);
    run(async {
        let connection = client.transport.connect(server.transport.local_addr()).await.unwrap();
        let outcome = connection.call("echo", 1, &[0u8; 4096], None).await;
        assert!(matches!(outcome, Err(CallError::Frame(frame::FrameError::TooLarge { .. }))), "{outcome:?}");
        assert!(connection.call("echo", 1, b"small", None).await.is_ok());
    });
}

over_both_links!(senders_everywhere =>
    calls_from_plain_threads_and_tasks_at_once_arrive_whole_over_quic,
    calls_from_plain_threads_and_tasks_at_once_arrive_whole_over_the_local_channel);

/// A body that names its sender and call and is `len` bytes long, so a reply shows whether the
/// frame arrived whole and undisturbed.
fn marked_body(thread: usize, call: usize, len: usize) -> Vec<u8> {
    let mut body = format!("{thread}/{call}/").into_bytes();
    body.extend((body.len()..len).map(|index| (index % 251) as u8));
    body
}

/// Frames written by the caller's own thread (`try_reserve`), by the writer task and, for the
/// local channel, left half-written for the writer task (frames far larger than a socket's
/// buffer) interleave on one connection: every one must arrive whole and be answered once.
fn senders_everywhere(local: bool) {
    let ca = ClusterCa::generate("test").unwrap();
    let server = node_over(&ca, local);
    let config =
        TransportConfig { local_channel: local, frame_bytes_max: 8 << 20, ..TransportConfig::default() };
    let client = node_with(ca.issue(NodeId::random().unwrap()).unwrap(), config, None);
    let prefix = format!("{}:", client.transport.node_id());
    let connection = run(async { client.transport.connect(server.transport.local_addr()).await.unwrap() });
    assert_eq!(connection.is_local(), local);
    let (answers, answered) = std::sync::mpsc::channel::<(Vec<u8>, Result<Bytes, CallError>)>();
    let sizes = [16usize, 300, 20_000, 1 << 20, 3 << 20];
    let threads: Vec<_> = (0..3)
        .map(|thread| {
            let (connection, answers) = (connection.clone(), answers.clone());
            std::thread::spawn(move || {
                let mut slow = 0;
                for call in 0..40 {
                    let body = marked_body(thread, call, sizes[(call + thread) % sizes.len()]);
                    let answers = answers.clone();
                    let sent = body.clone();
                    let Some(slot) = connection.try_reserve() else {
                        // The queue is full: the async path, as a caller would fall back to.
                        slow += 1;
                        let connection = connection.clone();
                        actix_rt::System::new().block_on(connection.start_call_with(
                            "echo",
                            1,
                            &body,
                            Box::new(move |reply| answers.send((sent, reply)).unwrap()),
                        ));
                        continue;
                    };
                    slot.start_call_with(
                        "echo",
                        1,
                        &body,
                        Box::new(move |reply| answers.send((sent, reply)).unwrap()),
                    );
                }
                slow
            })
        })
        .collect();
    // Meanwhile tasks on a runtime send through the queue.
    run(async {
        for call in 0..40 {
            let body = marked_body(9, call, sizes[call % sizes.len()]);
            let reply = connection.call("echo", 1, &body, None).await;
            answers.send((body, reply)).unwrap();
        }
    });
    for thread in threads {
        thread.join().unwrap();
    }
    drop(answers);
    let mut count = 0;
    for (body, reply) in answered.iter() {
        let reply = reply.unwrap_or_else(|error| panic!("call failed: {error}"));
        assert_eq!(reply.len(), prefix.len() + body.len());
        assert!(reply.starts_with(prefix.as_bytes()));
        assert!(reply[prefix.len()..] == body[..], "a reply does not match its call");
        count += 1;
    }
    assert_eq!(count, 4 * 40, "every call answered exactly once");
    assert_eq!(server.echo.seen.load(Ordering::SeqCst), 4 * 40);
}

over_both_links!(bulk_transfers =>
    bulk_transfers_stream_raw_bytes_on_their_own_quic_stream,
    bulk_transfers_stream_raw_bytes_on_their_own_local_socket);

fn bulk_transfers(local: bool) {
    let ca = ClusterCa::generate("test").unwrap();
    let server = node_over(&ca, local);
    let client = node_over(&ca, local);
    run(async {
        let connection = client.transport.connect(server.transport.local_addr()).await.unwrap();
        assert_eq!(connection.is_local(), local);
        let chunk: Vec<u8> = (0..1024 * 1024).map(|index| (index % 251) as u8).collect();
        let chunks = 8u64;
        let mut sender =
            connection.open_bulk("store", 9, b"meta", chunk.len() as u64 * chunks).await.unwrap();
        let mut expected = 0u64;
        for _ in 0..chunks {
            sender.write(Bytes::from(chunk.clone())).await.unwrap();
            expected =
                chunk.iter().fold(expected, |acc, byte| acc.wrapping_mul(31).wrapping_add(u64::from(*byte)));
        }
        let reply = sender.finish().await.unwrap();
        assert_eq!(reply, Bytes::from(format!("{}:{expected}", chunk.len() as u64 * chunks)));

        // Writing more than announced is refused locally.
        let mut sender = connection.open_bulk("store", 9, b"", 4).await.unwrap();
        assert!(matches!(sender.write(Bytes::from_static(b"12345")).await, Err(CallError::Bulk(_))));
        // Meanwhile small calls still work.
        assert!(connection.call("echo", 1, b"x", None).await.is_ok());
    });
}

/// A rustls client config with the given client certificate (or none) and the member ALPN.
fn raw_client_config(trust: &ClusterCa, client: Option<&NodeIdentity>) -> quinn::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trust.cert_der().clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots);
    let mut tls = match client {
        Some(identity) => builder
            .with_client_auth_cert(
                identity.cert_chain().to_vec(),
                rustls::pki_types::PrivateKeyDer::Pkcs8(identity.private_key_pkcs8().to_vec().into()),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![b"manta/1".to_vec()];
    quinn::ClientConfig::new(Arc::new(quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap()))
}

/// Dials `server` by hand, sends a hello claiming `claimed`, then `extra` bytes on the same
/// stream, and returns what came back (a handshake message or the error that ended it).
async fn raw_hello(
    server: SocketAddr,
    config: quinn::ClientConfig,
    claimed: NodeId,
    extra: &[u8],
) -> (quinn::Connection, Result<Handshake, String>) {
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let quic = endpoint.connect_with(config, server, "cluster.manta").unwrap().await.unwrap();
    let (mut send, mut recv) = quic.open_bi().await.unwrap();
    let hello = Handshake::Hello { protocol: WIRE_PROTOCOL, node_id: claimed };
    let frame = frame::encode(&Header::Handshake, &hello.encode(), 1 << 20).unwrap();
    let mut bytes = frame.to_vec();
    bytes.extend_from_slice(extra);
    let _ = send.write_all(&bytes).await;
    let mut decoder = frame::FrameDecoder::new(1 << 20);
    let answer = async {
        loop {
            if let Some(frame) = decoder.next_frame().map_err(|error| error.to_string())? {
                return Handshake::decode(&frame.body).map_err(|error| error.to_string());
            }
            match recv.read_chunk(65536, true).await {
                Ok(Some(chunk)) => decoder.push(&chunk.bytes),
                Ok(None) => return Err("stream ended".to_owned()),
                Err(error) => return Err(error.to_string()),
            }
        }
    };
    let answer =
        tokio::time::timeout(Duration::from_secs(10), answer).await.unwrap_or(Err("timeout".to_owned()));
    (quic, answer)
}

fn request_frame() -> Vec<u8> {
    frame::encode(&Header::Request { call_id: 1, target: "echo".into(), method: 1 }, b"sneaky", 1 << 20)
        .unwrap()
        .to_vec()
}

#[test]
fn a_client_without_a_certificate_is_refused_and_nothing_is_dispatched_for_it() {
    let ca = ClusterCa::generate("test").unwrap();
    let server = node(&ca);
    run(async {
        // The request pipelined right after the hello must never reach the dispatcher.
        let (_quic, answer) = raw_hello(
            server.transport.local_addr(),
            raw_client_config(&ca, None),
            NodeId::random().unwrap(),
            &request_frame(),
        )
        .await;
        assert_eq!(answer, Ok(Handshake::Refused { reason: HandshakeRefusal::NoCertificate }));
    });
    assert_eq!(server.echo.seen.load(Ordering::SeqCst), 0);
    assert_eq!(server.transport.connection_count(), 0);
}

#[test]
fn a_client_claiming_another_node_id_is_refused() {
    let ca = ClusterCa::generate("test").unwrap();
    let server = node(&ca);
    let identity = ca.issue(NodeId::random().unwrap()).unwrap();
    run(async {
        let (_quic, answer) = raw_hello(
            server.transport.local_addr(),
            raw_client_config(&ca, Some(&identity)),
            NodeId::random().unwrap(),
            &request_frame(),
        )
        .await;
        assert_eq!(answer, Ok(Handshake::Refused { reason: HandshakeRefusal::IdentityMismatch }));
    });
    assert_eq!(server.echo.seen.load(Ordering::SeqCst), 0);
}

#[test]
fn a_peer_with_a_certificate_from_another_ca_is_refused() {
    let ca = ClusterCa::generate("test").unwrap();
    let rogue_ca = ClusterCa::generate("rogue").unwrap();
    let server = node(&ca);
    // A rogue member that trusts the real CA (so it accepts the server) but whose own
    // certificate comes from another CA: the server's TLS layer refuses it.
    let rogue = rogue_ca.issue(NodeId::random().unwrap()).unwrap();
    run(async {
        let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let outcome = async {
            let quic = endpoint
                .connect_with(
                    raw_client_config(&ca, Some(&rogue)),
                    server.transport.local_addr(),
                    "cluster.manta",
                )
                .map_err(|error| error.to_string())?
                .await
                .map_err(|error| error.to_string())?;
            let (mut send, mut recv) = quic.open_bi().await.map_err(|error| error.to_string())?;
            let hello = Handshake::Hello { protocol: WIRE_PROTOCOL, node_id: rogue.node_id() };
            let mut bytes = frame::encode(&Header::Handshake, &hello.encode(), 1 << 20).unwrap().to_vec();
            bytes.extend_from_slice(&request_frame());
            send.write_all(&bytes).await.map_err(|error| error.to_string())?;
            recv.read_to_end(1 << 16).await.map_err(|error| error.to_string())
        };
        let outcome =
            tokio::time::timeout(Duration::from_secs(10), outcome).await.expect("refusal is prompt");
        assert!(outcome.is_err(), "a rogue client must not get an answer: {outcome:?}");

        // And a regular member whose transport trusts another CA cannot connect either way.
        let stranger = node_with(rogue_ca.issue(NodeId::random().unwrap()).unwrap(), quick_config(), None);
        let outcome = stranger.transport.connect(server.transport.local_addr()).await;
        assert!(matches!(outcome, Err(ConnectError::Handshake { .. })), "{outcome:?}");
    });
    assert_eq!(server.echo.seen.load(Ordering::SeqCst), 0);
}

/// Authenticates by hand, then sends `bytes` and reports whether the server closed the connection.
async fn send_after_hello(server: &Node, ca: &ClusterCa, bytes: &[u8], finish: bool) -> bool {
    let identity = ca.issue(NodeId::random().unwrap()).unwrap();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let quic = endpoint
        .connect_with(raw_client_config(ca, Some(&identity)), server.transport.local_addr(), "cluster.manta")
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = quic.open_bi().await.unwrap();
    let hello = Handshake::Hello { protocol: WIRE_PROTOCOL, node_id: identity.node_id() };
    send.write_all(&frame::encode(&Header::Handshake, &hello.encode(), 1 << 20).unwrap()).await.unwrap();
    let mut decoder = frame::FrameDecoder::new(1 << 20);
    let ack = loop {
        if let Some(frame) = decoder.next_frame().unwrap() {
            break Handshake::decode(&frame.body).unwrap();
        }
        let chunk = recv.read_chunk(65536, true).await.unwrap().unwrap();
        decoder.push(&chunk.bytes);
    };
    assert!(matches!(ack, Handshake::HelloAck { .. }));
    let _ = send.write_all(bytes).await;
    if finish {
        let _ = send.finish();
    }
    tokio::time::timeout(Duration::from_secs(10), quic.closed()).await.is_ok()
}

#[test]
fn garbage_truncated_and_oversized_frames_close_only_the_offending_connection() {
    let ca = ClusterCa::generate("test").unwrap();
    let config = TransportConfig { frame_bytes_max: 64 * 1024, ..TransportConfig::default() };
    let server = node_with(ca.issue(NodeId::random().unwrap()).unwrap(), config, None);
    let client = node(&ca);
    run(async {
        let good = client.transport.connect(server.transport.local_addr()).await.unwrap();
        assert!(good.call("echo", 1, b"before", None).await.is_ok());

        let mut garbage = vec![0u8, 0, 0, 12, 0xEE];
        garbage.extend_from_slice(&[0xAB; 12]);
        assert!(send_after_hello(&server, &ca, &garbage, false).await, "garbage closes the connection");

        let mut oversized = (10u32 * 1024 * 1024).to_be_bytes().to_vec();
        oversized.push(frame::PROTOCOL_VERSION);
        assert!(send_after_hello(&server, &ca, &oversized, false).await, "an oversized frame closes it");

        let truncated = &request_frame()[..9];
        assert!(send_after_hello(&server, &ca, truncated, true).await, "a truncated frame closes it");

        let handshake_again = frame::encode(&Header::Handshake, b"", 1024).unwrap();
        assert!(send_after_hello(&server, &ca, &handshake_again, false).await, "a second hello closes it");

        // The well-behaved peer never noticed.
        assert!(!good.is_closed());
        assert!(good.call("echo", 1, b"after", None).await.unwrap().ends_with(b"after"));
    });
}

#[test]
fn join_tokens_admit_newcomers_and_wrong_tokens_are_refused() {
    let ca = Arc::new(ClusterCa::generate("test").unwrap());
    let tokens = Arc::new(TokenRegistry::default());
    let head_identity = ca.issue(NodeId::random().unwrap()).unwrap();
    let head =
        node_with(head_identity, quick_config(), Some(Admission { ca: ca.clone(), tokens: tokens.clone() }));
    let head_addr = head.transport.local_addr();
    let config = quick_config();

    let once = tokens.create(&ca, TokenUse::OneTime).unwrap();
    let identity = manta_transport::join_blocking(head_addr, &once, &config).unwrap();
    assert_eq!(identity.ca_fingerprint(), ca.fingerprint());

    // The newcomer is now a full member.
    let member = node_with(identity.clone(), config.clone(), None);
    run(async {
        let connection = member.transport.connect(head_addr).await.unwrap();
        let reply = connection.call("echo", 1, b"hi", None).await.unwrap();
        assert_eq!(reply, Bytes::from(format!("{}:hi", identity.node_id())));
    });

    // A one-time token works once.
    let again = manta_transport::join_blocking(head_addr, &once, &config);
    assert!(matches!(again, Err(JoinError::Refused(JoinRefusal::TokenInvalid))), "{again:?}");

    // A made-up secret is refused.
    let mut forged = tokens.create(&ca, TokenUse::LongLived).unwrap();
    forged.secret[0] ^= 1;
    let outcome = manta_transport::join_blocking(head_addr, &forged, &config);
    assert!(matches!(outcome, Err(JoinError::Refused(JoinRefusal::TokenInvalid))), "{outcome:?}");

    // A token naming another CA does not even trust the head.
    let other = ClusterCa::generate("other").unwrap();
    let foreign = TokenRegistry::default().create(&other, TokenUse::OneTime).unwrap();
    let outcome = manta_transport::join_blocking(head_addr, &foreign, &config);
    assert!(matches!(outcome, Err(JoinError::Connect { .. })), "{outcome:?}");

    // A node without the CA admits nobody.
    let plain = node(&ca);
    let token = tokens.create(&ca, TokenUse::LongLived).unwrap();
    let outcome = manta_transport::join_blocking(plain.transport.local_addr(), &token, &config);
    assert!(matches!(outcome, Err(JoinError::Refused(JoinRefusal::NotAdmitting))), "{outcome:?}");
    assert_eq!(head.echo.seen.load(Ordering::SeqCst), 1);
}

over_both_links!(reconnects =>
    connect_retries_with_backoff_until_the_peer_is_up_and_reconnects_after_a_restart_over_quic,
    connect_retries_with_backoff_until_the_peer_is_up_and_reconnects_after_a_restart_locally);

fn reconnects(local: bool) {
    let ca = ClusterCa::generate("test").unwrap();
    let client = node_with(
        ca.issue(NodeId::random().unwrap()).unwrap(),
        TransportConfig {
            local_channel: local,
            handshake_timeout: Duration::from_millis(300),
            connect_attempts_max: 30,
            reconnect_backoff_initial: Duration::from_millis(20),
            reconnect_backoff_max: Duration::from_millis(200),
            ..TransportConfig::default()
        },
        None,
    );
    // Reserve a port, then free it for the server that comes up later.
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let late_identity = ca.issue(NodeId::random().unwrap()).unwrap();
    let server_config = TransportConfig { local_channel: local, ..TransportConfig::default() };
    let restart_config = server_config.clone();
    let late_server = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(400));
        Transport::builder(late_identity).bind(addr).config(server_config).start().unwrap()
    });
    run(async {
        let connection = client.transport.connect(addr).await.expect("retries until the server is up");
        assert_eq!(connection.is_local(), local);
        assert!(
            matches!(connection.call("nobody", 1, b"", None).await, Err(CallError::Remote(error)) if error.kind == RemoteErrorKind::NoSuchTarget)
        );
        let server = late_server.join().unwrap();

        // The server restarts on the same port: the old connection fails, a new one is dialled.
        drop(server);
        let outcome = connection.call("nobody", 1, b"", Some(Duration::from_secs(5))).await;
        assert!(matches!(outcome, Err(CallError::ConnectionLost(_) | CallError::Timeout(_))), "{outcome:?}");
        let restarted = Transport::builder(ca.issue(NodeId::random().unwrap()).unwrap())
            .bind(addr)
            .config(restart_config)
            .start()
            .unwrap();
        let fresh = client.transport.connect(addr).await.unwrap();
        assert_eq!(fresh.peer(), restarted.node_id());
        assert!(!fresh.is_closed());
    });
}

#[test]
fn a_peer_that_never_says_hello_is_disconnected_after_the_handshake_timeout() {
    let ca = ClusterCa::generate("test").unwrap();
    let config =
        TransportConfig { handshake_timeout: Duration::from_millis(300), ..TransportConfig::default() };
    let server = node_with(ca.issue(NodeId::random().unwrap()).unwrap(), config, None);
    let identity = ca.issue(NodeId::random().unwrap()).unwrap();
    run(async {
        let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let quic = endpoint
            .connect_with(
                raw_client_config(&ca, Some(&identity)),
                server.transport.local_addr(),
                "cluster.manta",
            )
            .unwrap()
            .await
            .unwrap();
        let closed = tokio::time::timeout(Duration::from_secs(10), quic.closed()).await;
        match closed {
            Ok(quinn::ConnectionError::ApplicationClosed(close)) => {
                assert_eq!(close.error_code, quinn::VarInt::from_u32(3), "handshake-timeout close code")
            }
            other => panic!("expected the server to close the silent connection, got {other:?}"),
        }
    });
    assert_eq!(server.transport.connection_count(), 0);
}

#[test]
fn a_peer_without_the_local_channel_is_reached_over_quic() {
    let ca = ClusterCa::generate("test").unwrap();
    let server = node_over(&ca, false);
    let client = node_over(&ca, true);
    run(async {
        let connection = client.transport.connect(server.transport.local_addr()).await.unwrap();
        assert!(!connection.is_local());
        assert!(connection.call("echo", 1, b"x", None).await.is_ok());
    });
}
