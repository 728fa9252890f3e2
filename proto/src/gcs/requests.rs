//! The GCS's wire messages: requests with their replies and stable ids (100-199), and the
//! publication subscribers receive.

use crate::wire_message;
use crate::NodeId;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::wire::{
    ActorId, ActorInfo, ActorState, Change, Channel, JobId, JobInfo, NodeInfo, NodeLoad, WorkerInfo,
};
use super::{GcsError, SubscriberId};

/// Registers a live node.
#[derive(Debug, Serialize, Deserialize)]
pub struct RegisterNode(pub NodeInfo);
wire_message!(RegisterNode => Result<(), GcsError>, id = 100);

/// Declares a node dead; replies with the actors it took down.
#[derive(Debug, Serialize, Deserialize)]
pub struct MarkNodeDead {
    /// The node.
    pub node_id: NodeId,
    /// Why.
    pub cause: String,
}
wire_message!(MarkNodeDead => Result<Vec<ActorId>, GcsError>, id = 101);

/// Every node's record.
#[derive(Debug, Serialize, Deserialize)]
pub struct GetAllNodes;
wire_message!(GetAllNodes => Result<Vec<NodeInfo>, GcsError>, id = 102);

/// Starts a job.
#[derive(Debug, Serialize, Deserialize)]
pub struct AddJob {
    /// The driver's address.
    pub driver_address: String,
    /// How its workers start on the nodes of a running cluster.
    #[serde(default)]
    pub launch: Option<super::wire::JobLaunch>,
}
wire_message!(AddJob => Result<JobInfo, GcsError>, id = 103);

/// A job's record.
#[derive(Debug, Serialize, Deserialize)]
pub struct GetJob(pub JobId);
wire_message!(GetJob => Result<Option<JobInfo>, GcsError>, id = 125);

/// Ends a job; replies with the actors it took down.
#[derive(Debug, Serialize, Deserialize)]
pub struct FinishJob {
    /// The job.
    pub job_id: JobId,
}
wire_message!(FinishJob => Result<Vec<ActorId>, GcsError>, id = 104);

/// Registers a new actor.
#[derive(Debug, Serialize, Deserialize)]
pub struct RegisterActor(pub ActorInfo);
wire_message!(RegisterActor => Result<(), GcsError>, id = 105);

/// An actor's worker is up.
#[derive(Debug, Serialize, Deserialize)]
pub struct ActorStarted {
    /// The actor.
    pub actor_id: ActorId,
    /// Its node.
    pub node_id: NodeId,
    /// Its worker's address.
    pub address: String,
}
wire_message!(ActorStarted => Result<(), GcsError>, id = 106);

/// An actor's worker died; replies with the actor's state now.
#[derive(Debug, Serialize, Deserialize)]
pub struct ActorFailed {
    /// The actor.
    pub actor_id: ActorId,
    /// Why.
    pub cause: String,
    /// The incarnation that failed (the actor's restart count when it started), if it started:
    /// a failure the GCS has counted already (its node's death) is not counted again.
    #[serde(default)]
    pub incarnation: Option<u64>,
}
wire_message!(ActorFailed => Result<ActorState, GcsError>, id = 107);

/// Kills an actor for good.
#[derive(Debug, Serialize, Deserialize)]
pub struct KillActor {
    /// The actor.
    pub actor_id: ActorId,
    /// Why.
    pub cause: String,
}
wire_message!(KillActor => Result<(), GcsError>, id = 108);

/// An actor's record.
#[derive(Debug, Serialize, Deserialize)]
pub struct GetActor(pub ActorId);
wire_message!(GetActor => Result<Option<ActorInfo>, GcsError>, id = 109);

/// The live actor with a name.
#[derive(Debug, Serialize, Deserialize)]
pub struct GetNamedActor {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}
wire_message!(GetNamedActor => Result<Option<ActorInfo>, GcsError>, id = 110);

/// The names in use in a namespace.
#[derive(Debug, Serialize, Deserialize)]
pub struct ListNamedActors {
    /// The namespace.
    pub namespace: String,
}
wire_message!(ListNamedActors => Result<Vec<(String, ActorId)>, GcsError>, id = 111);

/// Stores a value in the internal KV store; replies whether it was stored.
#[derive(Debug, Serialize, Deserialize)]
pub struct KvPut {
    /// The namespace.
    pub namespace: String,
    /// The key.
    pub key: String,
    /// The value, raw.
    pub value: ByteBuf,
    /// Whether to replace an existing value.
    pub overwrite: bool,
}
wire_message!(KvPut => Result<bool, GcsError>, id = 112);

/// A value of the internal KV store.
#[derive(Debug, Serialize, Deserialize)]
pub struct KvGet {
    /// The namespace.
    pub namespace: String,
    /// The key.
    pub key: String,
}
wire_message!(KvGet => Result<Option<ByteBuf>, GcsError>, id = 113);

/// Deletes a key; replies whether it existed.
#[derive(Debug, Serialize, Deserialize)]
pub struct KvDelete {
    /// The namespace.
    pub namespace: String,
    /// The key.
    pub key: String,
}
wire_message!(KvDelete => Result<bool, GcsError>, id = 114);

/// The keys with a prefix.
#[derive(Debug, Serialize, Deserialize)]
pub struct KvKeys {
    /// The namespace.
    pub namespace: String,
    /// The prefix.
    pub prefix: String,
}
wire_message!(KvKeys => Result<Vec<String>, GcsError>, id = 115);

/// Subscribes the actor at `subscriber` (`host:port/name`, which must accept [`Published`]).
#[derive(Debug, Serialize, Deserialize)]
pub struct Subscribe {
    /// Where to send publications.
    pub subscriber: String,
    /// What to follow.
    pub channels: Vec<Channel>,
}
wire_message!(Subscribe => Result<SubscriberId, GcsError>, id = 116);

/// Ends a subscription.
#[derive(Debug, Serialize, Deserialize)]
pub struct Unsubscribe(pub SubscriberId);
wire_message!(Unsubscribe => (), id = 117);

/// A change, sent to a subscriber (which handles this message).
#[derive(Debug, Serialize, Deserialize)]
pub struct Published(pub Change);
wire_message!(Published => (), id = 120);

/// A raylet reports a worker process's record (started, or registered with its address).
#[derive(Debug, Serialize, Deserialize)]
pub struct ReportWorker(pub WorkerInfo);
wire_message!(ReportWorker => (), id = 121);

/// A raylet reports that a worker process ended.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReportWorkerExit {
    /// Its node.
    pub node_id: NodeId,
    /// Its id at the raylet.
    pub worker: u64,
    /// Its process id.
    pub pid: u32,
    /// How it ended.
    pub exit: String,
}
wire_message!(ReportWorkerExit => Result<(), GcsError>, id = 122);

/// Every worker's record.
#[derive(Debug, Serialize, Deserialize)]
pub struct GetAllWorkers;
wire_message!(GetAllWorkers => Result<Vec<WorkerInfo>, GcsError>, id = 123);

/// Every actor's record.
#[derive(Debug, Serialize, Deserialize)]
pub struct ListActors;
wire_message!(ListActors => Result<Vec<ActorInfo>, GcsError>, id = 124);

/// One-time join tokens for `count` worker processes about to start (at most
/// [`IssueJoinTokens::MAX`]); the answer is their text form. Only a member of the cluster can
/// ask (the connection is mutually authenticated).
#[derive(Debug, Serialize, Deserialize)]
pub struct IssueJoinTokens {
    /// How many.
    pub count: u32,
}
wire_message!(IssueJoinTokens => Result<Vec<String>, GcsError>, id = 130);

impl IssueJoinTokens {
    /// The most tokens one request gets.
    pub const MAX: u32 = 64;
}

/// A node's free resources now: a raylet reports them when they change (at most every 100 ms,
/// and every second regardless, as Ray's resource reports).
#[derive(Debug, Serialize, Deserialize)]
pub struct ReportResources {
    /// The node.
    pub node_id: NodeId,
    /// Free now, by name.
    pub available: Vec<(String, f64)>,
    /// Lease requests waiting here, by demand: (what they ask for, how many).
    #[serde(default)]
    pub pending: Vec<(String, u32)>,
    /// Its total now, when it changed since registration (placement groups' bundles add
    /// resources of their own); `None`: as registered.
    #[serde(default)]
    pub total: Option<Vec<(String, f64)>>,
}
wire_message!(ReportResources => Result<(), GcsError>, id = 126);

/// Every node with its resources now.
#[derive(Debug, Serialize, Deserialize)]
pub struct GetClusterView;
wire_message!(GetClusterView => Result<Vec<NodeLoad>, GcsError>, id = 127);
