//! The errors a caller can see and act on.

pub use manta_proto::worker::TaskError;

/// Creating or finding an actor failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActorError {
    /// Another live actor has this name in this namespace.
    #[error("an actor named {name:?} already exists in namespace {namespace:?}")]
    NameTaken {
        /// The namespace.
        namespace: String,
        /// The name.
        name: String,
    },
    /// No live actor has this name.
    #[error("no actor named {name:?} in namespace {namespace:?}")]
    NotFound {
        /// The namespace.
        namespace: String,
        /// The name.
        name: String,
    },
    /// The named actor is of another class than asked for.
    #[error("actor {name:?} is a {found}, not a {expected}")]
    WrongClass {
        /// The name.
        name: String,
        /// The class asked for.
        expected: String,
        /// Its class.
        found: String,
    },
    /// The constructor's arguments do not encode, or an option is invalid.
    #[error("invalid actor request: {0}")]
    Invalid(String),
    /// The cluster could not be reached or answered out of protocol.
    #[error("{0}")]
    Runtime(String),
    /// `manta::init` was not called in this process.
    #[error("manta::init() was not called in this process")]
    NotInitialized,
}
