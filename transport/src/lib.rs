//! Manta's transport: QUIC (quinn) with mutual TLS between the members of a cluster.
//!
//! - [`ClusterCa`], [`NodeIdentity`], [`JoinToken`]: who may talk. Every member holds a leaf
//!   certificate signed by the cluster CA that certifies its [`NodeId`]; a newcomer obtains one
//!   with a join token ([`join`]).
//! - [`Transport`]: the process's endpoint, on a thread of its own; [`Transport::connect`] gives
//!   the one [`Connection`] per peer, authenticated by a hello/ack after TLS.
//! - [`Connection`]: calls with timeouts, one-way messages, bulk streams. Incoming messages go to
//!   a [`Dispatcher`].
//! - [`frame`]: the wire format (length-prefixed frames, versioned MessagePack header, raw body).
//!
//! Only this crate knows the wire format.

mod bulk;
mod config;
mod connection;
mod endpoint;
mod error;
pub mod frame;
pub mod handshake;
mod id;
mod identity;
mod join;
mod local;
mod pending;
mod sync;
mod throttle;
mod tls;

pub use bulk::{BulkBody, BulkSender};
pub use config::TransportConfig;
pub use connection::{Answer, CallSlot, Connection, DispatchFuture, Dispatched, Dispatcher, Incoming};
pub use endpoint::{Admission, Transport, TransportBuilder};
pub use error::{CallError, ConnectError, JoinError, StartError};
pub use frame::{RemoteError, RemoteErrorKind};
pub use handshake::HandshakeRefusal;
pub use id::{NodeId, ParseNodeIdError};
pub use identity::{
    ClusterCa, Fingerprint, IdentityError, JoinRefusal, JoinToken, NodeIdentity, ParseTokenError,
    TokenRegistry, TokenUse,
};
pub use join::{join, join_blocking};
pub use rustls_pki_types::CertificateDer;
