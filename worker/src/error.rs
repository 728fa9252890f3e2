//! The errors a caller can see and act on.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why an object has no value: its task or actor call failed, or it cannot be had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum TaskError {
    /// The function panicked or returned `Err`, or its arguments or output did not
    /// (de)serialise, or it is not registered in the worker's binary.
    #[error("task {function} failed in worker pid {pid}: {message}")]
    Failed {
        /// The function's (or `Class.method`'s) registered name.
        function: String,
        /// The worker's process id.
        pid: u32,
        /// The panic message, the `Err`'s `Display`, or the codec error.
        message: String,
    },
    /// The worker running it died, and retries (`max_retries`) ran out.
    #[error("task {function}: worker pid {pid} died ({exit}) after {attempts} attempts")]
    WorkerDied {
        /// The function's registered name.
        function: String,
        /// The last worker's process id.
        pid: u32,
        /// How it ended (exit code or signal), when known.
        exit: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The actor is dead (killed, or its worker died with no restarts or retries left).
    #[error("actor {actor} died: {cause}")]
    ActorDied {
        /// The actor's class and id.
        actor: String,
        /// Why.
        cause: String,
    },
    /// The task was cancelled with [`cancel`](crate::cancel).
    #[error("task {function} was cancelled")]
    Cancelled {
        /// The function's registered name.
        function: String,
    },
    /// No node of the cluster can ever provide what the task needs.
    #[error("task {function} is infeasible: no node has {demand}")]
    Infeasible {
        /// The function's registered name.
        function: String,
        /// What it asked for.
        demand: String,
    },
    /// No worker process could be started to run it: the raylet's last tries ended before
    /// the worker registered (the binary cannot be run, or it exits at once).
    #[error("task {function}: no worker could be started ({exit})")]
    WorkerStartFailed {
        /// The function's registered name.
        function: String,
        /// How the last worker process ended.
        exit: String,
    },
    /// The object cannot be had: its owner freed it or died.
    #[error("object {object} is lost: {reason}")]
    ObjectLost {
        /// The object's id.
        object: String,
        /// Why.
        reason: String,
    },
    /// The object store has no room for the object (spilling comes later).
    #[error(
        "object store full: {requested} bytes requested, {free} free ({largest_free} in the largest block) of {capacity}"
    )]
    ObjectStoreFull {
        /// Bytes asked for.
        requested: u64,
        /// Bytes free in all.
        free: u64,
        /// The largest object that would fit now.
        largest_free: u64,
        /// The store's size.
        capacity: u64,
    },
    /// The cluster could not be reached or answered out of protocol.
    #[error("{function}: {message}")]
    Runtime {
        /// The function or operation.
        function: String,
        /// What went wrong.
        message: String,
    },
    /// A timed `get` or `wait` gave up.
    #[error("no result within {0:?}")]
    Timeout(Duration),
    /// The value did not decode as the expected type.
    #[error("the result does not decode: {0}")]
    Codec(String),
    /// `manta::init` was not called in this process.
    #[error("manta::init() was not called in this process")]
    NotInitialized,
}

impl TaskError {
    pub(crate) fn runtime(function: impl Into<String>, message: impl std::fmt::Display) -> Self {
        TaskError::Runtime { function: function.into(), message: message.to_string() }
    }
}

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
