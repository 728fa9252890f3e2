//! Errors of the actor layer: what a caller of `ask`/`tell` can see, and registration errors.

use std::time::Duration;

use manta_transport::{CallError, ConnectError, RemoteError, RemoteErrorKind};

/// An `ask` or `tell` failed. The same variants whether the actor is local or remote.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AskError {
    /// No answer within the deadline. The message may still be handled later.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The actor crashed or stopped while this call was queued or being handled; if it is
    /// supervised and has restarts left, later calls reach its next incarnation.
    #[error("actor {actor} died: {cause}")]
    ActorDied {
        /// The actor's name.
        actor: String,
        /// Why (the panic message, "stopped", restarts exhausted...).
        cause: String,
    },
    /// Nothing is registered under that name on the target node.
    #[error("no actor named {name:?} on {node}")]
    NoSuchActor {
        /// The node asked.
        node: String,
        /// The name asked for.
        name: String,
    },
    /// The actor exists but does not accept this message type over the wire.
    #[error("{0}")]
    UnknownMessage(String),
    /// A message or reply did not (de)serialise.
    #[error("message encoding: {0}")]
    Codec(String),
    /// The actor's node is overloaded and refused the message.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// The remote node could not be reached.
    #[error(transparent)]
    Unreachable(#[from] ConnectError),
    /// The connection to the remote node broke before the answer arrived.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// Another failure reported by the remote node.
    #[error("remote failure: {0}")]
    Remote(RemoteError),
}

impl AskError {
    /// Converts a transport failure of a call to `name`.
    pub(crate) fn from_call(error: CallError, node: &str, name: &str) -> Self {
        match error {
            CallError::Connect(error) => AskError::Unreachable(error),
            CallError::ConnectionLost(reason) => AskError::ConnectionLost(reason),
            CallError::Timeout(after) => AskError::Timeout(after),
            CallError::Frame(error) => AskError::Codec(error.to_string()),
            CallError::Bulk(reason) => AskError::Codec(reason),
            CallError::Remote(error) => match error.kind {
                RemoteErrorKind::NoSuchTarget => {
                    AskError::NoSuchActor { node: node.to_owned(), name: name.to_owned() }
                }
                RemoteErrorKind::UnknownMethod => AskError::UnknownMessage(error.message),
                RemoteErrorKind::BadMessage => AskError::Codec(error.message),
                RemoteErrorKind::ActorDied => {
                    AskError::ActorDied { actor: name.to_owned(), cause: error.message }
                }
                RemoteErrorKind::Overloaded => AskError::Overloaded(error.message),
                RemoteErrorKind::Handler | RemoteErrorKind::Internal => AskError::Remote(error),
            },
        }
    }

    /// The error as reported to a remote caller.
    pub(crate) fn to_remote(&self) -> RemoteError {
        let kind = match self {
            AskError::ActorDied { .. } => RemoteErrorKind::ActorDied,
            AskError::NoSuchActor { .. } => RemoteErrorKind::NoSuchTarget,
            AskError::UnknownMessage(_) => RemoteErrorKind::UnknownMethod,
            AskError::Codec(_) => RemoteErrorKind::BadMessage,
            AskError::Overloaded(_) => RemoteErrorKind::Overloaded,
            AskError::Remote(error) => return error.clone(),
            _ => RemoteErrorKind::Internal,
        };
        let message = match self {
            AskError::ActorDied { cause, .. } => cause.clone(),
            other => other.to_string(),
        };
        RemoteError::new(kind, message)
    }
}

/// Registering an actor under a name failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// Another actor already has the name on this node.
    #[error("an actor named {0:?} is already registered on this node")]
    NameTaken(String),
}
