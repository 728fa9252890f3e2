//! The errors a task's caller can see.

use std::time::Duration;

/// Why a task produced no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    /// The function panicked, or its arguments or output did not (de)serialise.
    #[error("task {function} failed in worker pid {pid}: {message}")]
    Failed {
        /// The function's registered name.
        function: String,
        /// The worker's process id.
        pid: u32,
        /// The panic message or the codec error.
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
    /// No node of the cluster can ever provide what the task needs.
    #[error("task {function} is infeasible: no node has {demand}")]
    Infeasible {
        /// The function's registered name.
        function: String,
        /// What it asked for.
        demand: String,
    },
    /// The cluster could not be reached or answered out of protocol.
    #[error("task {function}: {message}")]
    Runtime {
        /// The function's registered name.
        function: String,
        /// What went wrong.
        message: String,
    },
    /// `get_timeout` gave up.
    #[error("no result within {0:?}")]
    Timeout(Duration),
    /// The value did not decode as the expected type.
    #[error("the result does not decode: {0}")]
    Codec(String),
    /// The object was released.
    #[error("the object was released")]
    Released,
}
