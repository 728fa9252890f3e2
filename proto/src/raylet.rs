//! The raylet's messages (lease requests and their outcomes, worker registration) and the
//! scheduling strategy a request carries.

pub mod requests;

use requests::*;

use crate::NodeId;

/// Where the user asked a task or actor to run (Ray's `scheduling_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub enum SchedulingStrategy {
    #[default]
    /// Ray's default: pack onto lightly used nodes (the local one first), spread once busy.
    Hybrid,
    /// Spread over the nodes with room, round robin.
    Spread,
    /// A given node. `soft`: fall back to the default when it cannot take the work.
    NodeAffinity {
        /// The node asked for.
        node: NodeId,
        /// Whether another node will do if that one cannot.
        soft: bool,
    },
}

crate::service::protocol!(
    /// A node's raylet (`node/raylet`): leases and the workers that serve them.
    Raylet = "raylet": RequestLease, ReturnLease, RegisterWorker, WatchLease, WorkerBlocked, HealthCheck,
    crate::placement::PrepareBundles, crate::placement::CommitBundles, crate::placement::CancelBundles,
);
