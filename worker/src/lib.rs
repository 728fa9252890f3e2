//! Manta's core worker, linked into drivers and workers. So far: the [`registry`] of remote
//! functions compiled into the binary. Submission, dependency resolution, the lease client,
//! execution and ownership come with the runtime.

pub mod registry;
