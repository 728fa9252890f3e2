//! Manta's global control store: the cluster's tables (nodes, jobs, actors, named actors,
//! internal key-value store) and the publication of their changes.
//!
//! [`GcsCore`] is the logic as a plain state machine over a [`Storage`] backend (in memory by
//! default, or on disk in [`RedbStorage`] for a GCS that restarts without loss); [`GcsActor`] serves it on the bus as `node/gcs`, with the [`requests`] (defined in
//! `manta-proto`) as its wire messages. Beside it, the [`ActorManager`] creates, watches and
//! restarts actors, and the [`PlacementGroupManager`] reserves placement groups' bundles.

pub mod actor_manager;
mod core;
mod durable;
pub mod placement;
pub use manta_proto::gcs::requests;
mod service;
mod storage;
pub use manta_proto::gcs::wire;

pub use crate::core::{GcsCore, GcsError, Publication, SubscriberId, DEAD_ACTORS_KEPT};
pub use actor_manager::{ActorManager, ACTOR_MANAGER_NAME};
pub use durable::RedbStorage;
pub use placement::{PlacementGroupManager, PLACEMENT_GROUPS_NAME};
pub use service::{GcsActor, GCS_NAME, SUBSCRIBER_QUEUE_MAX};
pub use storage::{Entries, MemoryStorage, Storage, StorageError, Table, Write};
pub use wire::{ActorId, ActorInfo, ActorState};
