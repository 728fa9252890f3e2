//! Manta's raylet: the per-node manager. So far: resource accounting ([`ResourceSet`],
//! [`NodeResources`]) and the pluggable scheduling policy ([`SchedulingPolicy`],
//! [`DefaultPolicy`]), both plain data and pure functions with no I/O, so the simulator can run
//! them unchanged. The worker pool, the lease protocol and the actor shell come next.

mod policy;
mod resources;

pub use policy::{
    ClusterView, Decision, DefaultPolicy, NodeView, PolicyConfig, RandomSource, SchedulingPolicy,
    SchedulingStrategy, SplitMix64,
};
pub use resources::{NodeResources, Quantity, ResourceError, ResourceSet, CPU, GPU, MEMORY};
