//! Manta's raylet: the per-node manager. So far its sans-IO cores: resource accounting
//! ([`ResourceSet`], [`NodeResources`]), the pluggable scheduling policy ([`SchedulingPolicy`],
//! [`DefaultPolicy`]), and the worker pool with Ray's lease protocol ([`LeaseManager`]). None of
//! them touches a clock or a socket, so the simulator can run them unchanged. The actor shell
//! that spawns worker processes and answers submitters comes next.

mod leases;
mod policy;
mod resources;

pub use leases::{Command, LeaseId, LeaseManager, LeaseReply, PoolConfig, WorkerId};
pub use policy::{
    ClusterView, Decision, DefaultPolicy, NodeView, PolicyConfig, RandomSource, SchedulingPolicy,
    SchedulingStrategy, SplitMix64,
};
pub use resources::{NodeResources, Quantity, ResourceError, ResourceSet, CPU, GPU, MEMORY};
