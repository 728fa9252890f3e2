//! Manta's raylet: the per-node manager. Its sans-IO cores: resource accounting
//! ([`ResourceSet`], [`NodeResources`]), the pluggable scheduling policy ([`SchedulingPolicy`],
//! [`DefaultPolicy`]), and the worker pool with Ray's lease protocol ([`LeaseManager`]). None of
//! them touches a clock or a socket, so `manta-sim` runs them unchanged. [`RayletActor`] serves
//! them on the bus as `node/raylet` (its messages are in `manta-proto`): it starts worker
//! processes (this binary, re-executed from `/proc/self/exe`), reaps them through the runtime,
//! refuses a start that would cross an OS limit, and answers lease requests.

pub mod binary;
mod leases;
mod limits;
mod output;
pub mod policies;
#[doc(hidden)]
pub use inventory as __inventory;
mod policy;
pub use manta_proto::raylet::requests;
mod resources;
mod service;

pub use leases::{Command, LeaseId, LeaseManager, LeaseReply, LeaseRequest, PoolConfig, WorkerId};
pub use limits::raise_open_files_limit;
pub use policy::{
    place_bundles, BundleDemand, ClusterView, Decision, DefaultPolicy, LabelMatch, NodeView, Nodes,
    PlacementStrategy, PolicyConfig, RandomSource, Request, SchedulingPolicy, SchedulingStrategy,
    SharedNodes, SplitMix64,
};
pub use resources::{NodeResources, Quantity, ResourceError, ResourceSet, CPU, GPU, MEMORY};
pub use service::{
    local_scope, worker_env, Launch, RayletActor, WorkerAdmission, WorkerReports, RAYLET_NAME,
};
