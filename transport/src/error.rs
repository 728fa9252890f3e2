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
