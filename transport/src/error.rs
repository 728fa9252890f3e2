//! The transport's error types: one per operation.

use std::time::Duration;

use crate::frame::{FrameError, RemoteError};
use crate::handshake::HandshakeRefusal;
use crate::identity::{IdentityError, JoinRefusal};

/// Starting a transport failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The TLS configuration could not be built from the identity.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The UDP socket could not be bound.
    #[error("binding the QUIC endpoint: {0}")]
    Bind(#[from] std::io::Error),
    /// The transport's thread could not be started or died while starting.
    #[error("the transport thread failed to start")]
    Thread,
}

/// Establishing an authenticated connection failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    /// The QUIC or TLS handshake failed (wrong CA, no route, peer gone...).
    #[error("connecting to {addr}: {reason}")]
    Handshake {
        /// The address dialled.
        addr: std::net::SocketAddr,
        /// What quinn or rustls reported.
        reason: String,
    },
    /// The peer refused the application-level hello.
    #[error("{addr} refused the connection: {reason}")]
    Refused {
        /// The address dialled.
        addr: std::net::SocketAddr,
        /// Why.
        reason: HandshakeRefusal,
    },
    /// The peer sent something other than a valid hello answer.
    #[error("{addr} broke the handshake protocol: {reason}")]
    Protocol {
        /// The address dialled.
        addr: std::net::SocketAddr,
        /// What was wrong.
        reason: String,
    },
    /// No answer within the handshake timeout.
    #[error("connecting to {addr} timed out after {after:?}")]
    Timeout {
        /// The address dialled.
        addr: std::net::SocketAddr,
        /// How long was waited.
        after: Duration,
    },
    /// The peer is gone: it served the local channel at this address, and now nothing listens
    /// there and nothing holds its port (its process died). Transient: a restarted peer may bind
    /// the address again; each attempt fails at once instead of waiting for a QUIC timeout.
    #[error("no process serves {addr} any more")]
    Gone {
        /// The address dialled.
        addr: std::net::SocketAddr,
    },
    /// The local transport has shut down.
    #[error("the local transport is shut down")]
    Shutdown,
}

impl ConnectError {
    /// Whether dialling again could help: a refusal will not change by retrying.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ConnectError::Handshake { .. } | ConnectError::Timeout { .. } | ConnectError::Gone { .. }
        )
    }
}

/// A call, a one-way message or a bulk transfer failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// No connection to the peer could be established.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The connection was lost before the answer arrived.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// No answer within the deadline; a late answer is discarded.
    #[error("call timed out after {0:?}")]
    Timeout(Duration),
    /// The remote side answered with an error.
    #[error("remote error: {0}")]
    Remote(#[from] RemoteError),
    /// The message is too large for one frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A bulk transfer was used wrongly (more or fewer bytes than announced).
    #[error("bulk transfer: {0}")]
    Bulk(String),
}

/// Obtaining a certificate with a join token failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The head refused the token or the request.
    #[error("the head refused to admit this node: {0}")]
    Refused(#[from] JoinRefusal),
    /// The head could not be reached, or its CA is not the one the token names.
    #[error("joining via {addr}: {reason}")]
    Connect {
        /// The head's address.
        addr: std::net::SocketAddr,
        /// What failed.
        reason: String,
    },
    /// The head answered with something that is not a valid join reply.
    #[error("invalid join reply: {0}")]
    Protocol(String),
    /// A local key could not be generated.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// No answer within the timeout.
    #[error("join timed out after {0:?}")]
    Timeout(Duration),
}

/// What went wrong on one stream or one handshake, inside the transport. Its text becomes the
/// reason in the public errors (a lost connection, a refused dial) and in the logs.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StreamError {
    /// Reading a QUIC stream failed.
    #[error("reading: {0}")]
    QuicRead(#[from] quinn::ReadError),
    /// Writing a QUIC stream failed.
    #[error("writing: {0}")]
    QuicWrite(#[from] quinn::WriteError),
    /// The QUIC stream was finished or reset already.
    #[error("the stream is closed: {0}")]
    QuicClosed(#[from] quinn::ClosedStream),
    /// Opening or accepting a QUIC stream failed: the connection is gone.
    #[error("the connection is gone: {0}")]
    QuicConnection(#[from] quinn::ConnectionError),
    /// The local socket failed.
    #[error("the local socket: {0}")]
    Io(#[from] std::io::Error),
    /// A frame could not be read or written.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The stream ended inside a frame.
    #[error("the stream ended before a whole frame ({buffered} bytes)")]
    Truncated {
        /// Bytes of the partial frame.
        buffered: usize,
    },
    /// A handshake was expected and something else came.
    #[error("expected a handshake frame")]
    NotHandshake,
    /// The handshake's bytes do not decode.
    #[error("undecodable handshake: {0}")]
    BadHandshake(#[from] crate::handshake::HandshakeDecodeError),
    /// A handshake message that has no place at this step.
    #[error("unexpected handshake message")]
    UnexpectedHandshake,
    /// The peer refused this process's hello.
    #[error("refused: {0}")]
    Refused(HandshakeRefusal),
    /// This process refused the peer's hello.
    #[error("refused the peer: {0}")]
    RefusedPeer(HandshakeRefusal),
    /// The peer of a local connection belongs to another cluster.
    #[error("the peer belongs to another cluster")]
    OtherCluster,
    /// The peer of a local connection runs as another user.
    #[error("the peer runs as uid {peer}, this process as {own}")]
    OtherUser {
        /// The peer's uid.
        peer: u32,
        /// This process's uid.
        own: u32,
    },
    /// A join request refused.
    #[error("join refused: {0}")]
    JoinRefused(JoinRefusal),
    /// The QUIC handshake settled on no protocol this transport serves.
    #[error("no known application protocol was negotiated")]
    NoProtocol,
    /// A local socket for bulk transfers is served by another node than the connection's.
    #[error("the bulk socket is served by {served}, not {expected}")]
    WrongPeer {
        /// Who answered.
        served: crate::NodeId,
        /// Whom the connection is to.
        expected: crate::NodeId,
    },
    /// A bulk stream that does not start with a bulk header.
    #[error("the first frame of a bulk stream is not a bulk header")]
    NotBulkHeader,
    /// A step of a handshake did not complete in time.
    #[error("no {0} in time")]
    Timeout(&'static str),
}

impl From<StreamError> for CallError {
    fn from(error: StreamError) -> CallError {
        CallError::ConnectionLost(error.to_string())
    }
}
