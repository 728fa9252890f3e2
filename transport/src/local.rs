//! The local channel: the same frames and the same connection logic over a Unix stream socket,
//! for peers in the same host and network namespace.
//!
//! Why: on one host, QUIC over loopback costs a UDP round trip through the kernel plus TLS and
//! QUIC packet processing on both sides. `manta-bench bus` on the 2-vCPU dev machine measures an
//! 8-byte ping-pong between two processes at 46 µs over a long-lived quinn stream and 13 µs over
//! a Unix socket, both with tokio at each end; a synchronous actor call or task round trip pays it
//! once per call.
//!
//! How a peer is found: every transport that serves the local channel binds
//! `<dir>/<netns>-<ip>-<port>.sock`, named after its UDP address, where `<dir>` is
//! `$XDG_RUNTIME_DIR/manta` or `<tmp>/manta-<uid>` (created 0700, refused unless it belongs to
//! this user and no one else may enter it) and `<netns>` the inode of the process's network
//! namespace, so two namespaces that reuse an address never meet; a transport with a
//! `local_scope` (a node of a cluster) binds and looks in `<dir>/<scope>/` instead, so that two
//! nodes on one host talk QUIC, as on two hosts. `connect(addr)` tries the socket
//! named after `addr` first and falls back to QUIC if there is none or nobody answers (a stale
//! file of a dead process).
//!
//! Who may connect: the kernel reports the peer's uid (`SO_PEERCRED`); both ends refuse a peer of
//! another user. A process of the same user can read this process's memory and key files, so it is
//! inside the trust boundary already; the node id it claims in its `LocalHello` is taken as is,
//! and its cluster CA's fingerprint must be ours (a process of another cluster is refused, as TLS
//! would refuse it).
//! Set `TransportConfig::local_channel = false` where every peer must present a certificate.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;

use crate::error::StreamError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::watch;

use crate::frame::FrameDecoder;
use crate::id::NodeId;
use crate::identity::Fingerprint;

/// The live state of one local link: where the peer listens, and whether the link is closed.
pub(crate) struct LocalLink {
    /// The peer's UDP address (what `connect` was given, or what the peer announced).
    pub(crate) remote: SocketAddr,
    /// The peer's socket, for opening bulk streams; `None` on the accepting side.
    pub(crate) path: Option<PathBuf>,
    /// This side's node id and UDP address, announced when opening bulk streams.
    pub(crate) local_node: NodeId,
    pub(crate) local_addr: SocketAddr,
    pub(crate) cluster: Fingerprint,
    closed: Mutex<Option<String>>,
    closing: watch::Sender<bool>,
}

impl LocalLink {
    pub(crate) fn new(
        remote: SocketAddr,
        path: Option<PathBuf>,
        local_node: NodeId,
        local_addr: SocketAddr,
        cluster: Fingerprint,
    ) -> Self {
        LocalLink {
            remote,
            path,
            local_node,
            local_addr,
            cluster,
            closed: Mutex::new(None),
            closing: watch::channel(false).0,
        }
    }

    /// Why the link closed, if it did.
    pub(crate) fn close_reason(&self) -> Option<String> {
        self.closed.lock().clone()
    }

    /// Marks the link closed (the first reason wins) and tells its reader and writer to stop.
    pub(crate) fn close(&self, reason: &str) {
        {
            let mut closed = self.closed.lock();
            if closed.is_none() {
                *closed = Some(reason.to_owned());
            }
        }
        self.closing.send_replace(true);
    }

    /// Resolves once the link is closed.
    pub(crate) fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }
}

/// Waits until `closing` turns true (or its link is gone).
pub(crate) async fn closed(mut closing: watch::Receiver<bool>) {
    let _ = closing.wait_for(|closed| *closed).await;
}

/// The reading half of a message or bulk stream, over QUIC or the local channel.
pub(crate) enum ReadHalf {
    Quic(quinn::RecvStream),
    Local { half: OwnedReadHalf, scratch: BytesMut },
}

impl ReadHalf {
    pub(crate) fn local(half: OwnedReadHalf) -> Self {
        ReadHalf::Local { half, scratch: BytesMut::new() }
    }

    /// The next bytes, at most `max`; `None` at a clean end of stream.
    pub(crate) async fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, StreamError> {
        match self {
            ReadHalf::Quic(recv) => match recv.read_chunk(max, true).await {
                Ok(Some(chunk)) => Ok(Some(chunk.bytes)),
                Ok(None) => Ok(None),
                Err(error) => Err(error.into()),
            },
            ReadHalf::Local { half, scratch } => {
                scratch.reserve(max.min(64 * 1024));
                let room = scratch.capacity() - scratch.len();
                let mut limited = (&mut *half).take(room.min(max) as u64);
                match limited.read_buf(scratch).await {
                    Ok(0) => Ok(None),
                    Ok(_) => Ok(Some(scratch.split().freeze())),
                    Err(error) => Err(error.into()),
                }
            }
        }
    }

    /// Tells the sender that nothing more will be read (QUIC `STOP_SENDING`; a no-op locally,
    /// where dropping the half is enough).
    pub(crate) fn stop(&mut self) {
        if let ReadHalf::Quic(recv) = self {
            let _ = recv.stop(quinn::VarInt::from_u32(0));
        }
    }
}

/// The writing half of a message or bulk stream, over QUIC or the local channel.
pub(crate) enum WriteHalf {
    Quic(quinn::SendStream),
    Local(OwnedWriteHalf),
}

impl WriteHalf {
    /// Writes one chunk whole.
    pub(crate) async fn write_chunk(&mut self, chunk: Bytes) -> Result<(), StreamError> {
        match self {
            WriteHalf::Quic(send) => Ok(send.write_chunk(chunk).await?),
            WriteHalf::Local(half) => Ok(half.write_all(&chunk).await?),
        }
    }

    /// Writes every chunk whole, in order, and empties `chunks`.
    pub(crate) async fn write_chunks(&mut self, chunks: &mut Vec<Bytes>) -> Result<(), StreamError> {
        match self {
            WriteHalf::Quic(send) => send.write_all_chunks(chunks).await?,
            WriteHalf::Local(half) => {
                for chunk in chunks.iter() {
                    half.write_all(chunk).await?;
                }
            }
        }
        chunks.clear();
        Ok(())
    }

    /// Ends the stream cleanly.
    pub(crate) async fn finish(&mut self) -> Result<(), StreamError> {
        match self {
            WriteHalf::Quic(send) => Ok(send.finish()?),
            WriteHalf::Local(half) => Ok(half.shutdown().await?),
        }
    }

    /// Abandons the stream: the receiver sees it end early.
    pub(crate) fn reset(&mut self) {
        if let WriteHalf::Quic(send) = self {
            let _ = send.reset(quinn::VarInt::from_u32(0));
        }
    }

    /// Waits until the receiver has taken everything (QUIC); locally the kernel keeps written
    /// bytes readable after this side closes, so there is nothing to wait for.
    pub(crate) async fn stopped(&mut self) {
        if let WriteHalf::Quic(send) = self {
            let _ = send.stopped().await;
        }
    }
}

/// This process's real uid.
pub(crate) fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// Whether `scope` may name a local channel's scope (it becomes a directory name).
pub(crate) fn valid_scope(scope: &str) -> bool {
    (1..=32).contains(&scope.len())
        && scope.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

/// The directory of this user's local sockets of `scope`, created if missing; `None` if it
/// cannot be made private to this user (or the scope is not a valid name).
fn socket_dir(scope: Option<&str>) -> Option<PathBuf> {
    let uid = current_uid();
    let mut dir = match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(runtime) if runtime.is_absolute() && runtime.is_dir() => runtime.join("manta"),
        _ => std::env::temp_dir().join(format!("manta-{uid}")),
    };
    let private = |dir: &Path| {
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(_) => return false,
        }
        std::fs::symlink_metadata(dir).is_ok_and(|metadata| {
            metadata.is_dir() && metadata.uid() == uid && metadata.permissions().mode() & 0o077 == 0
        })
    };
    if !private(&dir) {
        return None;
    }
    if let Some(scope) = scope {
        if !valid_scope(scope) {
            return None;
        }
        dir = dir.join(scope);
        if !private(&dir) {
            return None;
        }
    }
    Some(dir)
}

/// The inode of this process's network namespace ("0" where /proc does not say).
fn network_namespace() -> String {
    std::fs::read_link("/proc/self/ns/net")
        .ok()
        .and_then(|link| {
            let link = link.to_string_lossy().into_owned();
            let inode = link.strip_prefix("net:[")?.strip_suffix(']')?.to_owned();
            inode.chars().all(|c| c.is_ascii_digit()).then_some(inode)
        })
        .unwrap_or_else(|| "0".to_owned())
}

fn socket_name(ip: IpAddr, port: u16) -> String {
    format!("{}-{ip}-{port}.sock", network_namespace())
}

/// Where the transport bound at `addr` serves its local channel of `scope`.
pub(crate) fn socket_path(addr: SocketAddr, scope: Option<&str>) -> Option<PathBuf> {
    Some(socket_dir(scope)?.join(socket_name(addr.ip(), addr.port())))
}

/// The socket to try for a peer at `addr`, if one exists, with the UDP address its transport
/// bound: the one named after `addr`, or for a loopback address the one of a transport bound to
/// the unspecified address on that port.
pub(crate) fn socket_for_peer(addr: SocketAddr, scope: Option<&str>) -> Option<(PathBuf, SocketAddr)> {
    let dir = socket_dir(scope)?;
    let exact = dir.join(socket_name(addr.ip(), addr.port()));
    if exact.exists() {
        return Some((exact, addr));
    }
    if addr.ip().is_loopback() {
        let unspecified: IpAddr = match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
        };
        let any = dir.join(socket_name(unspecified, addr.port()));
        if any.exists() {
            return Some((any, SocketAddr::new(unspecified, addr.port())));
        }
    }
    None
}

/// After a failed local dial: whether the peer's process is gone, judged by binding its UDP
/// address (possible only if no process holds it: a live transport holds its own). If so, the stale socket file is removed while
/// the address is held, so it cannot be the file of a process that bound the port since.
pub(crate) fn reclaim_if_gone(path: &Path, bound: SocketAddr) -> bool {
    match std::net::UdpSocket::bind(bound) {
        Ok(_held) => {
            let _ = std::fs::remove_file(path);
            true
        }
        Err(_) => false,
    }
}

/// Whether nothing holds the UDP address `addr` on this host (in this network namespace): a
/// probe bind succeeds. Only meaningful for an address this process could bind (loopback).
pub(crate) fn udp_port_is_free(addr: SocketAddr) -> bool {
    std::net::UdpSocket::bind(addr).is_ok()
}

/// Stale sockets looked at, at most, when a transport starts (a bound on its start-up cost).
const STALE_SWEEP_MAX: usize = 1024;

/// Removes up to `max` socket files of this network namespace left by dead processes (killed
/// ones cannot remove their own). A file is stale when the UDP address it is named after can be
/// bound: a live transport holds its address. The file is removed while the address is held.
fn sweep_stale(dir: &Path, max: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let prefix = format!("{}-", network_namespace());
    for entry in entries.flatten().take(max) {
        let name = entry.file_name();
        let Some(addr) = name
            .to_str()
            .and_then(|name| name.strip_prefix(&prefix)?.strip_suffix(".sock"))
            .and_then(|rest| rest.rsplit_once('-'))
            .and_then(|(ip, port)| Some(SocketAddr::new(ip.parse().ok()?, port.parse().ok()?)))
        else {
            continue;
        };
        reclaim_if_gone(&entry.path(), addr);
    }
}

/// A bound local listener; its socket file is removed when it is dropped.
pub(crate) struct LocalListener {
    pub(crate) path: PathBuf,
    pub(crate) listener: Mutex<Option<std::os::unix::net::UnixListener>>,
}

impl LocalListener {
    /// Binds the socket of the transport at `addr`. The UDP port is ours, so a file already at
    /// that path belongs to a dead process and is replaced.
    pub(crate) fn bind(addr: SocketAddr, scope: Option<&str>) -> std::io::Result<Self> {
        let path = socket_path(addr, scope).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::PermissionDenied, "no private socket directory")
        })?;
        let _ = std::fs::remove_file(&path);
        if let Some(dir) = path.parent() {
            sweep_stale(dir, STALE_SWEEP_MAX);
        }
        // Listed for removal before the file exists: a process that exits (from another
        // thread) the moment after the bind still removes it.
        remove_at_exit(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path)?;
        listener.set_nonblocking(true)?;
        Ok(LocalListener { path, listener: Mutex::new(Some(listener)) })
    }
}

impl Drop for LocalListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        OWN_SOCKETS.lock().retain(|path| *path != self.path);
    }
}

/// The socket files this process bound and has not removed yet: removed when it exits, since
/// a transport held in a static (or a process ending in `exit`) is never dropped.
static OWN_SOCKETS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn remove_at_exit(path: &Path) {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        extern "C" fn remove_own_sockets() {
            // Bounded: an exit while another thread holds the list (for a moment) must not hang.
            if let Some(paths) = OWN_SOCKETS.try_lock_for(std::time::Duration::from_millis(100)) {
                for path in paths.iter() {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        // SAFETY: registers a plain function with no captured state; it only removes files.
        unsafe {
            libc::atexit(remove_own_sockets);
        }
    });
    OWN_SOCKETS.lock().push(path.to_owned());
}

/// Checks that the process at the other end of `stream` runs as this user.
pub(crate) fn check_peer_user(stream: &UnixStream) -> Result<(), StreamError> {
    let credentials = stream.peer_cred()?;
    let own = current_uid();
    if credentials.uid() == own {
        Ok(())
    } else {
        Err(StreamError::OtherUser { peer: credentials.uid(), own })
    }
}

/// A fresh decoder and the two halves of an accepted or dialled local stream.
pub(crate) fn split(stream: UnixStream, frame_bytes_max: usize) -> (ReadHalf, WriteHalf, FrameDecoder) {
    let (read, write) = stream.into_split();
    (ReadHalf::local(read), WriteHalf::Local(write), FrameDecoder::new(frame_bytes_max))
}

/// Connects to `path` and checks the user at the other end.
pub(crate) async fn dial(path: &Path) -> Result<UnixStream, StreamError> {
    let stream = UnixStream::connect(path).await?;
    check_peer_user(&stream)?;
    Ok(stream)
}

/// Dials `path` and says a `LocalHello`; returns the stream and the node id of a server that
/// acknowledged it (any other answer is an error naming it).
pub(crate) async fn hello(
    path: &Path,
    hello: LocalHello,
    frame_bytes_max: usize,
) -> Result<(ReadHalf, WriteHalf, FrameDecoder, NodeId), StreamError> {
    let stream = dial(path).await?;
    let (mut recv, mut send, mut decoder) = split(stream, frame_bytes_max);
    let message = crate::handshake::Handshake::LocalHello {
        protocol: crate::handshake::WIRE_PROTOCOL,
        node_id: hello.node_id,
        cluster: serde_bytes::ByteBuf::from(hello.cluster.0.to_vec()),
        listen: hello.listen,
        bulk: hello.bulk,
    };
    send.write_chunk(crate::endpoint::handshake_frame(&message)).await?;
    match crate::endpoint::read_handshake(&mut recv, &mut decoder).await? {
        crate::handshake::Handshake::HelloAck { protocol, node_id }
            if protocol == crate::handshake::WIRE_PROTOCOL =>
        {
            Ok((recv, send, decoder, node_id))
        }
        crate::handshake::Handshake::Refused { reason } => Err(StreamError::Refused(reason)),
        _ => Err(StreamError::UnexpectedHandshake),
    }
}

/// What a client says in its `LocalHello`.
pub(crate) struct LocalHello {
    pub(crate) node_id: NodeId,
    pub(crate) cluster: Fingerprint,
    pub(crate) listen: SocketAddr,
    pub(crate) bulk: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_are_named_per_namespace_address_and_port() {
        let a = socket_path("127.0.0.1:4000".parse().unwrap(), None).unwrap();
        let b = socket_path("127.0.0.2:4000".parse().unwrap(), None).unwrap();
        assert_ne!(a, b);
        assert!(a.file_name().unwrap().to_string_lossy().ends_with("-127.0.0.1-4000.sock"));
        let dir = a.parent().unwrap();
        let metadata = std::fs::metadata(dir).unwrap();
        assert_eq!(metadata.permissions().mode() & 0o077, 0, "the socket directory is private");
        assert!(a.as_os_str().len() < 100, "fits sun_path: {}", a.display());
    }

    #[test]
    fn stale_sockets_are_swept_and_live_ones_kept() {
        let held = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let live = LocalListener::bind(held.local_addr().unwrap(), None).unwrap();
        let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let stale = socket_path(SocketAddr::from(([127, 0, 0, 1], port)), None).unwrap();
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        sweep_stale(stale.parent().unwrap(), usize::MAX);
        assert!(!stale.exists(), "nobody holds its port");
        assert!(live.path.exists(), "its port is held");
    }

    #[test]
    fn a_bound_listener_is_found_and_its_file_removed_on_drop() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let listener = LocalListener::bind(addr, None).unwrap();
        assert_eq!(socket_for_peer(addr, None), Some((listener.path.clone(), addr)));
        assert_eq!(socket_for_peer(addr, Some("other-node")), None, "another scope does not see it");
        let path = listener.path.clone();
        drop(listener);
        assert!(!path.exists());
        assert_eq!(socket_for_peer(addr, None), None);
    }

    #[test]
    fn a_scoped_listener_is_found_only_in_its_scope() {
        let addr: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let listener = LocalListener::bind(addr, Some("node-a")).unwrap();
        assert_eq!(socket_for_peer(addr, Some("node-a")), Some((listener.path.clone(), addr)));
        assert_eq!(socket_for_peer(addr, None), None);
        assert_eq!(socket_for_peer(addr, Some("node-b")), None);
        assert!(socket_path(addr, Some("../escape")).is_none(), "a scope is a plain name");
        assert!(!valid_scope("") && !valid_scope(&"x".repeat(33)) && valid_scope("node_1-A"));
    }
}
