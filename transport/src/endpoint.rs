//! The transport: one QUIC endpoint per process, serving and dialling, on a thread of its own.
//!
//! quinn drives an endpoint on the runtime that created it, and stopping that runtime drops every
//! connection; a busy runtime also delays quinn's ACK processing. So the endpoint gets a dedicated
//! long-lived thread (an actix `System` of its own) that runs only the endpoint, the handshakes
//! and the connection tasks. Callers on other threads use [`Transport`] and [`Connection`], which
//! are `Send + Sync` and talk to that thread through channels.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::error::StreamError;
use crate::throttle::warn_throttled;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use crate::config::TransportConfig;
use crate::connection::{self, close_code, read_frame, Connection, ConnectionParts, Dispatcher, Link};
use crate::error::{ConnectError, StartError};
use crate::frame::{self, FrameDecoder, Header};
use crate::handshake::{Handshake, HandshakeRefusal, WIRE_PROTOCOL};
use crate::id::{NodeId, CLUSTER_SERVER_NAME};
use crate::identity::{ClusterCa, Fingerprint, NodeIdentity, TokenRegistry};
use crate::local::{LocalLink, LocalListener, ReadHalf, WriteHalf};
use crate::tls::{self, ALPN_JOIN, ALPN_MEMBER};

/// What a node that admits newcomers (the head) holds: the CA and the live join tokens.
#[derive(Debug, Clone)]
pub struct Admission {
    /// The cluster CA that signs newcomers' certificates.
    pub ca: Arc<ClusterCa>,
    /// The tokens newcomers may present.
    pub tokens: Arc<TokenRegistry>,
}

/// Builds and starts a [`Transport`].
pub struct TransportBuilder {
    identity: NodeIdentity,
    bind: SocketAddr,
    config: TransportConfig,
    dispatcher: Option<Arc<dyn Dispatcher>>,
    admission: Option<Admission>,
    reset_key: Option<[u8; 32]>,
}

impl TransportBuilder {
    /// The secret behind this endpoint's stateless resets and connection ids (default:
    /// random). A process that restarts at the same address with the same key (a GCS on its
    /// kept identity) recognises the connection ids its previous life issued and resets those
    /// connections: their peers learn at their next packet that the connection is gone and
    /// connect again, instead of waiting for the idle timeout.
    pub fn reset_key(mut self, key: [u8; 32]) -> Self {
        self.reset_key = Some(key);
        self
    }

    /// Address to bind (default `127.0.0.1:0`, an ephemeral loopback port).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// Limits and timings.
    pub fn config(mut self, config: TransportConfig) -> Self {
        self.config = config;
        self
    }

    /// Where incoming messages go; without one, every incoming request is answered with
    /// `NoSuchTarget`.
    pub fn dispatcher(mut self, dispatcher: Arc<dyn Dispatcher>) -> Self {
        self.dispatcher = Some(dispatcher);
        self
    }

    /// Lets this node admit newcomers presenting a join token.
    pub fn admission(mut self, admission: Admission) -> Self {
        self.admission = Some(admission);
        self
    }

    /// Binds the endpoint on the transport's own thread and starts accepting connections.
    pub fn start(self) -> Result<Transport, StartError> {
        let config = Arc::new(self.config);
        let server_config = tls::server_config(&self.identity, &config)?;
        let client_config = tls::client_config(&self.identity, &config)?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let bind = self.bind;
        let endpoint_config = match self.reset_key {
            Some(key) => {
                let mut config =
                    quinn::EndpointConfig::new(Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key)));
                // Connection ids it recognises after a restart too: a packet for an id it
                // never issued is dropped, not answered with a reset.
                let cid_key =
                    u64::from_be_bytes(key[..8].try_into().unwrap_or_default()) ^ 0x6d61_6e74_6163_6964;
                config.cid_generator(move || {
                    Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
                        as Box<dyn quinn::ConnectionIdGenerator>
                });
                config
            }
            None => quinn::EndpointConfig::default(),
        };
        let thread = std::thread::Builder::new().name("manta-transport".to_owned()).spawn(move || {
            let system = actix_rt::System::new();
            let endpoint = system.block_on(async move {
                let socket = std::net::UdpSocket::bind(bind)?;
                let runtime = quinn::default_runtime()
                    .ok_or_else(|| std::io::Error::other("no async runtime for the endpoint"))?;
                let mut endpoint =
                    quinn::Endpoint::new(endpoint_config, Some(server_config), socket, runtime)?;
                endpoint.set_default_client_config(client_config);
                Ok::<_, std::io::Error>((endpoint, actix_rt::Arbiter::current(), actix_rt::System::current()))
            });
            let started = endpoint.is_ok();
            if ready_tx.send(endpoint).is_ok() && started {
                let _ = system.run();
            }
        })?;
        let (endpoint, arbiter, system) = ready_rx.recv().map_err(|_| StartError::Thread)??;
        let local_addr = endpoint.local_addr()?;
        let local = if config.local_channel {
            match LocalListener::bind(local_addr, config.local_scope.as_deref()) {
                Ok(listener) => Some(listener),
                Err(error) => {
                    warn!(%error, "the local channel is off: its socket could not be bound");
                    None
                }
            }
        } else {
            None
        };
        let shared = Arc::new(Shared {
            endpoint,
            node_id: self.identity.node_id,
            local_addr,
            config,
            dispatcher: self.dispatcher.unwrap_or_else(|| Arc::new(NoTargets)),
            admission: self.admission,
            peers: Mutex::new(Peers::default()),
            dial_locks: Mutex::new(HashMap::new()),
            arbiter: arbiter.clone(),
            local,
            cluster: Fingerprint::of(self.identity.ca_cert()),
        });
        arbiter.spawn(accept_loop(shared.clone()));
        if shared.local.is_some() {
            arbiter.spawn(accept_local_loop(shared.clone()));
        }
        info!(node = %shared.node_id, addr = %local_addr, "transport listening");
        Ok(Transport { handle: Arc::new(Handle { shared, system, thread: Mutex::new(Some(thread)) }) })
    }
}

/// This process's QUIC endpoint: accepts authenticated peers and dials them, one connection per
/// peer, reused for every call. Cloning is cheap; the endpoint shuts down with the last clone.
#[derive(Clone)]
pub struct Transport {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("node_id", &self.handle.shared.node_id)
            .field("local_addr", &self.handle.shared.local_addr)
            .finish_non_exhaustive()
    }
}

struct Handle {
    shared: Arc<Shared>,
    system: actix_rt::System,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.endpoint.close(quinn::VarInt::from_u32(close_code::SHUTDOWN), b"shutdown");
        self.system.stop();
        if let Some(thread) = self.thread.lock().take() {
            // The transport thread never waits on the caller, so this join cannot deadlock,
            // unless the last handle is dropped on the transport thread itself.
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

pub(crate) struct Shared {
    endpoint: quinn::Endpoint,
    node_id: NodeId,
    local_addr: SocketAddr,
    config: Arc<TransportConfig>,
    dispatcher: Arc<dyn Dispatcher>,
    admission: Option<Admission>,
    peers: Mutex<Peers>,
    dial_locks: Mutex<HashMap<SocketAddr, Arc<tokio::sync::Mutex<()>>>>,
    arbiter: actix_rt::ArbiterHandle,
    /// The local channel's listener, while it serves.
    local: Option<LocalListener>,
    /// The fingerprint of the cluster CA, which local peers must share.
    pub(crate) cluster: Fingerprint,
}

#[derive(Default)]
struct Peers {
    by_addr: HashMap<SocketAddr, Connection>,
    by_node: HashMap<NodeId, Connection>,
}

impl Transport {
    /// Starts building a transport that presents `identity`.
    pub fn builder(identity: NodeIdentity) -> TransportBuilder {
        TransportBuilder {
            identity,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            config: TransportConfig::default(),
            dispatcher: None,
            admission: None,
            reset_key: None,
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.handle.shared.node_id
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.shared.local_addr
    }

    /// The arbiter of the transport's thread. Light, non-blocking actors (the control-plane
    /// state machines) may run here: their messages then cross no thread on the way in or out.
    /// Anything that blocks or computes for long must not, or it delays every connection.
    pub fn arbiter(&self) -> &actix_rt::ArbiterHandle {
        &self.handle.shared.arbiter
    }

    /// The settings in force.
    pub fn config(&self) -> &TransportConfig {
        &self.handle.shared.config
    }

    /// The live connection to `node`, if there is one (dialled by either side).
    pub fn connection_to(&self, node: NodeId) -> Option<Connection> {
        let peers = self.handle.shared.peers.lock();
        peers.by_node.get(&node).filter(|connection| !connection.is_closed()).cloned()
    }

    /// Number of live connections.
    pub fn connection_count(&self) -> usize {
        self.handle.shared.peers.lock().by_node.values().filter(|connection| !connection.is_closed()).count()
    }

    /// The connection to the peer at `addr`: the live one if any, else a new one, dialled with
    /// exponential backoff up to `connect_attempts_max` times. A refusal is not retried.
    pub async fn connect(&self, addr: SocketAddr) -> Result<Connection, ConnectError> {
        let shared = &self.handle.shared;
        if let Some(connection) = shared.live(addr) {
            return Ok(connection);
        }
        let lock = shared.dial_locks.lock().entry(addr).or_default().clone();
        let _dialling = lock.lock().await;
        if let Some(connection) = shared.live(addr) {
            return Ok(connection);
        }
        let mut backoff = shared.config.reconnect_backoff_initial;
        let mut attempt = 1;
        loop {
            let (result_tx, result_rx) = oneshot::channel();
            let dial_shared = shared.clone();
            shared.arbiter.spawn(async move {
                let _ = result_tx.send(dial(&dial_shared, addr).await);
            });
            let error = match result_rx.await {
                Ok(Ok(connection)) => return Ok(connection),
                Ok(Err(error)) => error,
                Err(_) => ConnectError::Shutdown,
            };
            if !error.is_transient() || attempt >= shared.config.connect_attempts_max {
                return Err(error);
            }
            debug!(%addr, attempt, %error, "dial failed, retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(shared.config.reconnect_backoff_max);
            attempt += 1;
        }
    }

    /// Closes the endpoint and every connection, QUIC and local: calls in flight on either side
    /// fail with a lost connection. Further calls fail; idempotent.
    pub fn shutdown(&self) {
        let shared = &self.handle.shared;
        shared.endpoint.close(quinn::VarInt::from_u32(close_code::SHUTDOWN), b"shutdown");
        let connections: Vec<Connection> = {
            let peers = shared.peers.lock();
            peers.by_addr.values().chain(peers.by_node.values()).cloned().collect()
        };
        for connection in connections {
            connection.close("the peer's transport shut down");
        }
        if let Some(local) = &shared.local {
            // New local dials find no socket; the QUIC endpoint refuses them already.
            let _ = std::fs::remove_file(&local.path);
        }
    }
}

impl Shared {
    fn live(&self, addr: SocketAddr) -> Option<Connection> {
        let peers = self.peers.lock();
        peers.by_addr.get(&addr).filter(|connection| !connection.is_closed()).cloned()
    }

    fn register(&self, connection: &Connection) {
        let mut peers = self.peers.lock();
        peers.by_addr.insert(connection.remote_addr(), connection.clone());
        peers.by_node.insert(connection.peer(), connection.clone());
    }

    fn forget(&self, connection: &Connection) {
        let mut peers = self.peers.lock();
        if peers.by_addr.get(&connection.remote_addr()).is_some_and(|known| known.same(connection)) {
            peers.by_addr.remove(&connection.remote_addr());
        }
        if peers.by_node.get(&connection.peer()).is_some_and(|known| known.same(connection)) {
            peers.by_node.remove(&connection.peer());
        }
    }

    fn start_connection(
        self: &Arc<Self>,
        link: Link,
        peer: NodeId,
        send: WriteHalf,
        recv: ReadHalf,
        decoder: FrameDecoder,
    ) -> Connection {
        let weak: Weak<Shared> = Arc::downgrade(self);
        let connection = connection::start(ConnectionParts {
            link,
            peer,
            send,
            recv,
            decoder,
            dispatcher: self.dispatcher.clone(),
            config: self.config.clone(),
            on_close: Box::new(move |connection| {
                if let Some(shared) = weak.upgrade() {
                    shared.forget(connection);
                }
            }),
        });
        self.register(&connection);
        connection
    }
}

/// Answers every message with `NoSuchTarget`: the dispatcher of a transport built without one.
struct NoTargets;

impl Dispatcher for NoTargets {
    fn dispatch(&self, message: connection::Incoming) -> connection::Dispatched {
        connection::Dispatched::answer(Err(crate::RemoteError::new(
            crate::RemoteErrorKind::NoSuchTarget,
            format!("nothing is registered under {:?}", message.target),
        )))
    }
}

pub(crate) fn handshake_frame(message: &Handshake) -> bytes::Bytes {
    // Handshake messages are a few hundred bytes: far below any frame limit.
    frame::encode(&Header::Handshake, &message.encode(), usize::MAX).expect("handshake frames encode")
}

/// Reads one handshake message from a stream.
pub(crate) async fn read_handshake(
    recv: &mut ReadHalf,
    decoder: &mut FrameDecoder,
) -> Result<Handshake, StreamError> {
    let frame = read_frame(recv, decoder).await?;
    if frame.header != Header::Handshake {
        return Err(StreamError::NotHandshake);
    }
    Ok(Handshake::decode(&frame.body)?)
}

/// One dial attempt: the local channel if the peer serves one on this host, else QUIC + TLS,
/// then the hello/ack.
async fn dial(shared: &Arc<Shared>, addr: SocketAddr) -> Result<Connection, ConnectError> {
    if shared.config.local_channel {
        if let Some((path, bound)) = crate::local::socket_for_peer(addr, shared.config.local_scope.as_deref())
        {
            match dial_local(shared, addr, path.clone()).await {
                Ok(connection) => return Ok(connection),
                Err(reason) => {
                    // A dead peer leaves its socket file behind: then fail now rather than after
                    // QUIC's handshake timeout, which is all a dead UDP port would answer.
                    if crate::local::reclaim_if_gone(&path, bound) {
                        return Err(ConnectError::Gone { addr });
                    }
                    // A peer of another user or another cluster: QUIC and TLS decide.
                    debug!(%addr, %reason, "local channel not taken, dialling QUIC");
                }
            }
        }
    }
    // A dead peer on this host answers QUIC with silence until the handshake timeout; a probe
    // bind of its loopback port tells at once that no process holds it.
    if addr.ip().is_loopback() && crate::local::udp_port_is_free(addr) {
        return Err(ConnectError::Gone { addr });
    }
    dial_quic(shared, addr).await
}

/// Dials the local channel of the peer at `addr`.
async fn dial_local(
    shared: &Arc<Shared>,
    addr: SocketAddr,
    path: std::path::PathBuf,
) -> Result<Connection, StreamError> {
    let hello = crate::local::LocalHello {
        node_id: shared.node_id,
        cluster: shared.cluster,
        listen: shared.local_addr,
        bulk: false,
    };
    let exchange = async {
        let (recv, send, decoder, node_id) =
            crate::local::hello(&path, hello, shared.config.frame_bytes_max).await?;
        let link =
            LocalLink::new(addr, Some(path.clone()), shared.node_id, shared.local_addr, shared.cluster);
        Ok(shared.start_connection(Link::Local(link), node_id, send, recv, decoder))
    };
    tokio::time::timeout(shared.config.handshake_timeout, exchange)
        .await
        .map_err(|_| StreamError::Timeout("answer to the local hello"))?
}

/// One QUIC dial attempt: QUIC + TLS, then the hello/ack.
async fn dial_quic(shared: &Arc<Shared>, addr: SocketAddr) -> Result<Connection, ConnectError> {
    let timeout = shared.config.handshake_timeout;
    let handshake_error = |reason: String| ConnectError::Handshake { addr, reason };
    let attempt = async {
        let quic = shared
            .endpoint
            .connect(addr, CLUSTER_SERVER_NAME)
            .map_err(|error| handshake_error(error.to_string()))?
            .await
            .map_err(|error| handshake_error(error.to_string()))?;
        let (mut send, recv) = quic.open_bi().await.map_err(|error| handshake_error(error.to_string()))?;
        let mut recv = ReadHalf::Quic(recv);
        let hello = Handshake::Hello { protocol: WIRE_PROTOCOL, node_id: shared.node_id };
        send.write_chunk(handshake_frame(&hello))
            .await
            .map_err(|error| handshake_error(error.to_string()))?;
        let mut decoder = FrameDecoder::new(shared.config.frame_bytes_max);
        let answer = read_handshake(&mut recv, &mut decoder).await.map_err(|reason| {
            // A refused peer sees the server's close reason here rather than a refusal message.
            handshake_error(
                quic.close_reason().map_or_else(|| reason.to_string(), |closed| closed.to_string()),
            )
        })?;
        match answer {
            Handshake::HelloAck { protocol, node_id } if protocol == WIRE_PROTOCOL => {
                if !tls::peer_certifies(quic.peer_identity(), node_id) {
                    quic.close(quinn::VarInt::from_u32(close_code::PROTOCOL), b"server id not certified");
                    return Err(ConnectError::Protocol {
                        addr,
                        reason: format!("server claims {node_id} but its certificate does not certify it"),
                    });
                }
                Ok(shared.start_connection(Link::Quic(quic), node_id, WriteHalf::Quic(send), recv, decoder))
            }
            Handshake::HelloAck { protocol, .. } => {
                quic.close(quinn::VarInt::from_u32(close_code::REFUSED), b"version");
                Err(ConnectError::Protocol {
                    addr,
                    reason: format!("server speaks protocol {protocol}, we speak {WIRE_PROTOCOL}"),
                })
            }
            Handshake::Refused { reason } => {
                quic.close(quinn::VarInt::from_u32(close_code::REFUSED), b"refused");
                Err(ConnectError::Refused { addr, reason })
            }
            _ => {
                quic.close(quinn::VarInt::from_u32(close_code::PROTOCOL), b"unexpected handshake message");
                Err(ConnectError::Protocol { addr, reason: "unexpected handshake message".to_owned() })
            }
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| ConnectError::Timeout { addr, after: timeout })?
}

async fn accept_loop(shared: Arc<Shared>) {
    while let Some(incoming) = shared.endpoint.accept().await {
        let shared = shared.clone();
        actix_rt::spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(quic) => serve_connection(&shared, quic).await,
                Err(error) => {
                    warn_throttled!(%remote, %error, "incoming connection failed its TLS handshake")
                }
            }
        });
    }
}

async fn serve_connection(shared: &Arc<Shared>, quic: quinn::Connection) {
    let remote = quic.remote_address();
    let alpn = quic
        .handshake_data()
        .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|data| data.protocol);
    let timeout = shared.config.handshake_timeout;
    let served = match alpn.as_deref() {
        Some(ALPN_MEMBER) => tokio::time::timeout(timeout, serve_hello(shared, &quic)).await,
        Some(ALPN_JOIN) => {
            tokio::time::timeout(
                timeout,
                crate::join::serve(shared.admission.as_ref(), &quic, &shared.config),
            )
            .await
        }
        _ => Ok(Err(StreamError::NoProtocol)),
    };
    match served {
        Ok(Ok(())) => {}
        Ok(Err(reason)) => {
            warn_throttled!(%remote, %reason, "refused a connection");
            quic.close(quinn::VarInt::from_u32(close_code::REFUSED), reason.to_string().as_bytes());
        }
        Err(_) => {
            warn_throttled!(%remote, "closing a connection that did not finish its handshake in time");
            quic.close(quinn::VarInt::from_u32(close_code::HANDSHAKE_TIMEOUT), b"handshake timeout");
        }
    }
}

/// Server side of the hello/ack. Nothing is dispatched for the peer unless this returns `Ok`.
async fn serve_hello(shared: &Arc<Shared>, quic: &quinn::Connection) -> Result<(), StreamError> {
    let (mut send, recv) = quic.accept_bi().await?;
    let mut recv = ReadHalf::Quic(recv);
    let mut decoder = FrameDecoder::new(shared.config.frame_bytes_max);
    let hello = read_handshake(&mut recv, &mut decoder).await?;
    let refusal = match hello {
        Handshake::Hello { protocol, .. } if protocol != WIRE_PROTOCOL => {
            Err(HandshakeRefusal::Version { server: WIRE_PROTOCOL })
        }
        Handshake::Hello { node_id, .. } => match quic.peer_identity() {
            None => Err(HandshakeRefusal::NoCertificate),
            identity => {
                if tls::peer_certifies(identity, node_id) {
                    Ok(node_id)
                } else {
                    Err(HandshakeRefusal::IdentityMismatch)
                }
            }
        },
        _ => Err(HandshakeRefusal::Unexpected),
    };
    match refusal {
        Ok(peer) => {
            let ack = Handshake::HelloAck { protocol: WIRE_PROTOCOL, node_id: shared.node_id };
            send.write_chunk(handshake_frame(&ack)).await?;
            shared.start_connection(Link::Quic(quic.clone()), peer, WriteHalf::Quic(send), recv, decoder);
            info!(%peer, remote = %quic.remote_address(), "peer authenticated");
            Ok(())
        }
        Err(reason) => {
            send.write_chunk(handshake_frame(&Handshake::Refused { reason })).await?;
            let _ = send.finish();
            // Give the refusal a moment to arrive before the connection is closed under it.
            let _ = tokio::time::timeout(Duration::from_secs(1), quic.closed()).await;
            Err(StreamError::RefusedPeer(reason))
        }
    }
}

async fn accept_local_loop(shared: Arc<Shared>) {
    let Some(std_listener) = shared.local.as_ref().and_then(|local| local.listener.lock().take()) else {
        return;
    };
    let listener = match tokio::net::UnixListener::from_std(std_listener) {
        Ok(listener) => listener,
        Err(error) => {
            warn!(%error, "the local channel is off: its listener could not be registered");
            return;
        }
    };
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of descriptors, typically: back off instead of spinning.
                warn_throttled!(%error, "local accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        actix_rt::spawn(async move {
            let timeout = shared.config.handshake_timeout;
            match tokio::time::timeout(timeout, serve_local(&shared, stream)).await {
                Ok(Ok(())) => {}
                Ok(Err(reason)) => warn_throttled!(%reason, "refused a local connection"),
                Err(_) => warn_throttled!("closing a local connection that did not finish its hello in time"),
            }
        });
    }
}

/// Server side of a local hello: the peer's user is checked, then it names itself.
async fn serve_local(shared: &Arc<Shared>, stream: tokio::net::UnixStream) -> Result<(), StreamError> {
    crate::local::check_peer_user(&stream)?;
    let (mut recv, mut send, mut decoder) = crate::local::split(stream, shared.config.frame_bytes_max);
    let (peer, listen, bulk) = match read_handshake(&mut recv, &mut decoder).await? {
        Handshake::LocalHello { cluster, .. } if cluster.as_slice() != shared.cluster.0.as_slice() => {
            let refusal = Handshake::Refused { reason: HandshakeRefusal::IdentityMismatch };
            send.write_chunk(handshake_frame(&refusal)).await?;
            return Err(StreamError::OtherCluster);
        }
        Handshake::LocalHello { protocol, node_id, listen, bulk, .. } if protocol == WIRE_PROTOCOL => {
            (node_id, listen, bulk)
        }
        Handshake::LocalHello { .. } => {
            let refusal = Handshake::Refused { reason: HandshakeRefusal::Version { server: WIRE_PROTOCOL } };
            send.write_chunk(handshake_frame(&refusal)).await?;
            return Err(StreamError::RefusedPeer(HandshakeRefusal::Version { server: WIRE_PROTOCOL }));
        }
        _ => {
            let refusal = Handshake::Refused { reason: HandshakeRefusal::Unexpected };
            send.write_chunk(handshake_frame(&refusal)).await?;
            return Err(StreamError::RefusedPeer(HandshakeRefusal::Unexpected));
        }
    };
    let ack = Handshake::HelloAck { protocol: WIRE_PROTOCOL, node_id: shared.node_id };
    send.write_chunk(handshake_frame(&ack)).await?;
    if bulk {
        // The transfer may outlast the hello's deadline: serve it on a task of its own.
        let dispatcher = shared.dispatcher.clone();
        let config = shared.config.clone();
        actix_rt::spawn(async move {
            if let Err(error) = crate::bulk::serve(peer, send, recv, &dispatcher, &config).await {
                warn!(%peer, %error, "local bulk stream failed");
            }
        });
    } else {
        let link = LocalLink::new(listen, None, shared.node_id, shared.local_addr, shared.cluster);
        shared.start_connection(Link::Local(link), peer, send, recv, decoder);
        debug!(%peer, %listen, "local peer connected");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport(ca: &ClusterCa, local_channel: bool) -> Transport {
        let config = TransportConfig { local_channel, ..TransportConfig::default() };
        Transport::builder(ca.issue(NodeId::random().unwrap()).unwrap()).config(config).start().unwrap()
    }

    #[test]
    fn a_dead_peer_is_reported_gone_at_once_and_its_stale_socket_removed() {
        let ca = ClusterCa::generate("test").unwrap();
        // What a killed process leaves behind: a socket file nobody listens on, and a free port.
        let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let stale = crate::local::socket_path(addr, None).unwrap();
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        let config = TransportConfig { connect_attempts_max: 1, ..TransportConfig::default() };
        let client =
            Transport::builder(ca.issue(NodeId::random().unwrap()).unwrap()).config(config).start().unwrap();
        // Not a QUIC handshake timeout, which is all a dead UDP port would give.
        let outcome = actix_rt::System::new().block_on(client.connect(addr));
        assert!(matches!(outcome, Err(ConnectError::Gone { .. })), "{outcome:?}");
        assert!(!stale.exists());
    }

    #[test]
    fn a_dead_loopback_peer_without_a_socket_file_is_reported_gone_at_once() {
        let ca = ClusterCa::generate("test").unwrap();
        let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        for local_channel in [true, false] {
            let config =
                TransportConfig { connect_attempts_max: 1, local_channel, ..TransportConfig::default() };
            let client = Transport::builder(ca.issue(NodeId::random().unwrap()).unwrap())
                .config(config)
                .start()
                .unwrap();
            let outcome = actix_rt::System::new().block_on(client.connect(addr));
            assert!(matches!(outcome, Err(ConnectError::Gone { .. })), "{outcome:?}");
        }
    }

    #[test]
    fn a_stale_local_socket_falls_back_to_quic_and_a_live_one_is_removed_with_its_transport() {
        let ca = ClusterCa::generate("test").unwrap();
        let server = transport(&ca, false);
        // What a killed process leaves behind: a socket file nobody listens on.
        let stale = crate::local::socket_path(server.local_addr(), None).unwrap();
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        assert!(stale.exists());
        let client = transport(&ca, true);
        let connection = actix_rt::System::new().block_on(client.connect(server.local_addr())).unwrap();
        assert!(!connection.is_local());
        let _ = std::fs::remove_file(&stale);

        let local = transport(&ca, true);
        let path = crate::local::socket_path(local.local_addr(), None).unwrap();
        assert!(path.exists());
        drop(local);
        assert!(!path.exists(), "the socket file goes with its transport");
    }
}
