//! The GCS's records: what its tables hold and what its replies carry. Plain data with serde,
//! converted by hand from and to the runtime's internal types.

use serde::{Deserialize, Serialize};

pub use crate::{ActorId, JobId, NodeId};

/// A node's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node.
    pub node_id: NodeId,
    /// Its transport address, `host:port`.
    pub address: String,
    /// Its resources by name, in whole or fractional units.
    pub resources: Vec<(String, f64)>,
    /// Alive or dead.
    pub state: NodeState,
    /// When it registered, ms since the epoch (given by the caller: the core reads no clock).
    pub registered_ms: u64,
    /// Why it died, once dead.
    pub death_cause: Option<String>,
    /// Its labels (`manta start --labels k=v,...`), for label scheduling.
    #[serde(default)]
    pub labels: Vec<(String, String)>,
}

/// A node and its resources now: the cluster's resource view (`manta status`; the raylets'
/// policies read it once spillback lands).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeLoad {
    /// The node.
    pub node_id: NodeId,
    /// Its transport address.
    pub address: String,
    /// Alive or dead.
    pub state: NodeState,
    /// What it offers.
    pub total: Vec<(String, f64)>,
    /// What is free, as it last reported (its total until it reports).
    pub available: Vec<(String, f64)>,
    /// Its labels.
    pub labels: Vec<(String, String)>,
    /// Lease requests waiting there, by demand: (what they ask for, how many).
    #[serde(default)]
    pub pending: Vec<(String, u32)>,
}

/// A node's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeState {
    /// Registered and heard from.
    Alive,
    /// Gone; never alive again under this id.
    Dead,
}

/// A job's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobInfo {
    /// The job.
    pub job_id: JobId,
    /// The driver's address.
    pub driver_address: String,
    /// Running or finished.
    pub finished: bool,
    /// Start, ms since the epoch.
    pub start_ms: u64,
    /// End, ms since the epoch, once finished.
    pub end_ms: Option<u64>,
    /// How its workers start, for a driver on a running cluster (`None`: an embedded driver,
    /// whose raylet starts them itself).
    #[serde(default)]
    pub launch: Option<JobLaunch>,
}

/// How a job's workers start on a node: from the driver's own binary, which the node checks by
/// its hash, with the job's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobLaunch {
    /// SHA-256 of the driver's executable, hex.
    pub binary_sha256: String,
    /// Its length in bytes.
    pub binary_len: u64,
    /// The driver's process id: a node on the driver's host starts workers from
    /// `/proc/<pid>/exe` once its hash matches.
    pub driver_pid: u32,
    /// The registry fingerprint its workers must have (the same code).
    pub registry_fingerprint: u64,
    /// Environment for its workers (namespace, settings).
    pub env: Vec<(String, String)>,
    /// Whether its workers' output goes to the driver (Ray's `log_to_driver`).
    #[serde(default = "yes")]
    pub log_to_driver: bool,
    /// The architecture and OS the binary runs on (`x86_64-linux`): a node of another refuses
    /// the job with the reason instead of starting workers that cannot run.
    #[serde(default)]
    pub platform: String,
}

fn yes() -> bool {
    true
}

/// This build's platform, as [`JobLaunch::platform`] names it.
pub fn this_platform() -> String {
    format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS)
}

/// An actor's lifecycle, as the GCS tracks it (Ray's states):
///
/// ```text
/// PendingCreation --> Alive --> Restarting --> Alive ...
///        |              |            |
///        +--------------+------------+--> Dead
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActorState {
    /// Registered; waiting for a worker.
    PendingCreation,
    /// Running on a worker.
    Alive,
    /// Its worker died and it has restarts left.
    Restarting,
    /// Gone for good.
    Dead,
}

impl ActorState {
    /// Whether the lifecycle allows going from `self` to `next`.
    pub fn can_become(self, next: ActorState) -> bool {
        use ActorState::*;
        matches!(
            (self, next),
            (PendingCreation, Alive)
                | (PendingCreation, Restarting)
                | (PendingCreation, Dead)
                | (Alive, Restarting)
                | (Alive, Dead)
                | (Restarting, Alive)
                | (Restarting, Restarting)
                | (Restarting, Dead)
        )
    }
}

/// An actor's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorInfo {
    /// The actor.
    pub actor_id: ActorId,
    /// The job that created it.
    pub job_id: JobId,
    /// Its class's registered name (checked by `get_actor::<Class>`).
    #[serde(default)]
    pub class: String,
    /// Retries of a call whose actor died and restarted (Ray's `max_task_retries`, default 0;
    /// -1: unlimited, as `max_restarts`).
    #[serde(default)]
    pub max_task_retries: i64,
    /// Its name, if named.
    pub name: Option<String>,
    /// The namespace its name lives in.
    pub namespace: String,
    /// Whether it outlives its job.
    pub detached: bool,
    /// Where it is in its lifecycle.
    pub state: ActorState,
    /// The node it runs on, while alive.
    pub node_id: Option<NodeId>,
    /// Its worker's address, while alive.
    pub address: Option<String>,
    /// Restarts allowed (-1: unlimited, as in Ray).
    pub max_restarts: i64,
    /// Restarts so far.
    pub restarts: u64,
    /// Why it died, once dead.
    pub death_cause: Option<String>,
}

/// A worker process's record (reported by its node's raylet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Its node.
    pub node_id: NodeId,
    /// Its id at that node's raylet.
    pub worker: u64,
    /// Its process id.
    pub pid: u32,
    /// Its transport address, once registered.
    pub address: Option<String>,
    /// Whether it is still running.
    pub alive: bool,
    /// How it ended (exit code or signal), once dead.
    pub exit: Option<String>,
}

/// What subscribers can follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Channel {
    /// Node records as they change.
    Nodes,
    /// Job records as they change.
    Jobs,
    /// Actor records as they change.
    Actors,
    /// Worker records as they change.
    Workers,
}

/// One change, sent to every subscriber of its channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Change {
    /// A node's new record.
    Node(NodeInfo),
    /// A job's new record.
    Job(JobInfo),
    /// An actor's new record.
    Actor(ActorInfo),
    /// A worker's new record.
    Worker(WorkerInfo),
}

impl Change {
    /// The channel this change is published on.
    pub fn channel(&self) -> Channel {
        match self {
            Change::Node(_) => Channel::Nodes,
            Change::Job(_) => Channel::Jobs,
            Change::Actor(_) => Channel::Actors,
            Change::Worker(_) => Channel::Workers,
        }
    }
}
