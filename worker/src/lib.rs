//! Manta's core worker, linked into drivers and workers: the [`registry`] of remote functions,
//! [`init`] (the embedded cluster in a driver, the task loop in a worker process), task
//! submission over Ray's lease protocol, the [`Executor`] that runs tasks in workers, and
//! [`ObjectRef`] with the owner's store of results.

mod error;
mod executor;
mod object_ref;
pub mod registry;
mod runtime;

pub use error::TaskError;
pub use executor::{Executor, PushTask, TaskFailure, EXECUTOR_NAME};
pub use object_ref::ObjectRef;
pub use runtime::{init, init_with, submit, Cluster, Config, InitError};
