//! Manta's global control store: the cluster's tables (nodes, jobs, actors, named actors,
//! internal key-value store) and the publication of their changes.
//!
//! [`GcsCore`] is the logic as a plain state machine over a [`Storage`] backend (in memory by
//! default); the actor that serves it over the bus comes with the runtime.

mod core;
mod storage;
pub mod wire;

pub use crate::core::{GcsCore, GcsError, Publication, SubscriberId};
pub use storage::{MemoryStorage, Storage, Table};
