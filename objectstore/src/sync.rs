//! The atomics the shared index uses, swapped for loom's under `--cfg manta_loom` so the loom
//! model explores every interleaving of the real index code.

#[cfg(not(manta_loom))]
pub(crate) use std::sync::atomic;

#[cfg(manta_loom)]
pub(crate) use loom::sync::atomic;
