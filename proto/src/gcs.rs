//! The GCS's records, requests and errors: what the GCS's tables hold and its callers send and
//! receive.

pub mod requests;
pub mod wire;

use requests::*;

use crate::gcs::wire::ActorState;
use crate::{ActorId, JobId, NodeId};

/// Who receives publications; the shell maps it to an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct SubscriberId(pub u64);

/// A GCS request that cannot be carried out. Travels back to remote callers as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum GcsError {
    /// A subscriber address that does not parse.
    #[error("not an actor address: {0:?}")]
    BadAddress(String),
    /// Another live actor has this name in this namespace.
    #[error("an actor named {name:?} already exists in namespace {namespace:?}")]
    NameTaken {
        /// The namespace.
        namespace: String,
        /// The name.
        name: String,
    },
    /// Names and namespaces may not contain NUL.
    #[error("names and namespaces may not contain NUL bytes: {0:?}")]
    BadName(String),
    /// No such actor.
    #[error("unknown actor {0:?}")]
    UnknownActor(ActorId),
    /// The actor id is taken.
    #[error("actor {0:?} is already registered")]
    DuplicateActor(ActorId),
    /// No such node.
    #[error("unknown node {0}")]
    UnknownNode(NodeId),
    /// The node was declared dead; its id never comes back.
    #[error("node {0} is dead")]
    NodeDead(NodeId),
    /// A record in storage does not decode (a damaged or foreign backend).
    #[error("the GCS's {table} table holds a record it cannot read: {detail}")]
    BadRecord {
        /// The table.
        table: String,
        /// What was wrong.
        detail: String,
    },
    /// No such job.
    #[error("unknown job {0:?}")]
    UnknownJob(JobId),
    /// A join token could not be made (the system's random source failed).
    #[error("no join token: {0}")]
    Token(String),
    /// The job has finished.
    #[error("job {0:?} has finished")]
    JobFinished(JobId),
    /// The GCS's storage failed (a full disk, a damaged file, a database gone away): nothing
    /// was changed, and the GCS goes on serving.
    #[error("the GCS's storage failed: {0}")]
    Storage(String),
    /// The actor's lifecycle does not allow this step.
    #[error("actor {actor:?} cannot go from {from:?} to {to:?}")]
    IllegalTransition {
        /// The actor.
        actor: ActorId,
        /// Its state.
        from: ActorState,
        /// The state asked for.
        to: ActorState,
    },
}

crate::service::protocol!(
    /// The global control store (`node/gcs` on the head node).
    Gcs = "gcs": RegisterNode, MarkNodeDead, GetAllNodes, AddJob, FinishJob, RegisterActor, ActorStarted,
    ActorFailed, KillActor, GetActor, GetNamedActor, ListNamedActors, KvPut, KvGet, KvDelete, KvKeys,
    Subscribe, Unsubscribe, ReportWorker, ReportWorkerExit, GetAllWorkers, ListActors, GetJob, ReportResources,
    GetClusterView,
);

crate::service::protocol!(
    /// The cluster's admission (`node/admission`, beside the GCS, which holds the cluster CA):
    /// one-time join tokens for the workers a raylet starts.
    Admission = "admission": requests::IssueJoinTokens,
);
