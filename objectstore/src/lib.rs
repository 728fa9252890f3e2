//! Manta's per-node object store: immutable objects in one shared-memory arena per node.
//!
//! - [`ObjectStore`]: the owner (the process hosting the node's store, which serves other
//!   processes through `manta-node`'s store service): `create_object` / `seal` / `get` /
//!   `delete`, with an offset allocator over the arena and typed errors ([`StoreError::Full`],
//!   [`StoreError::IndexCorrupted`] for a slot a peer wrote over).
//! - [`StoreReader`]: any process that mapped the arena pins sealed objects and reads them in
//!   place; a view is a `bytes::Bytes` that releases its pin when dropped.
//! - The shared index (one atomic word per object slot) lets readers pin without asking the
//!   owner, and guarantees the owner never reuses bytes a reader holds.

mod allocator;
mod arena;
mod index;
mod store;
mod sync;

pub use arena::{Arena, ArenaError};
pub use store::{ObjectId, ObjectLocation, ObjectStore, ObjectWriter, StoreError, StoreReader};
