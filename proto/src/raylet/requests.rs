//! The raylet's wire messages (ids 200-299): what submitters and workers send it.

use crate::wire_message;
use serde::{Deserialize, Serialize};

/// A submitter asks for a worker for tasks needing `cpus` CPUs, `gpus` GPUs and custom
/// `resources`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestLease {
    /// CPUs per task.
    pub cpus: f64,
    /// GPUs per task.
    pub gpus: f64,
    /// Custom resources per task, by name.
    pub resources: Vec<(String, f64)>,
    /// An actor's lease: held for the actor's life, its worker never reused.
    pub dedicated: bool,
    /// Where it should run (the policy's input).
    #[serde(default)]
    pub strategy: super::SchedulingStrategy,
    /// The worker (of this raylet) that asks, if a worker asks: when it dies, its requests are
    /// dropped and its leases end (Ray's owner-death cleanup), instead of holding resources
    /// for a requester that will never use or return them.
    #[serde(default)]
    pub requester: Option<u64>,
    /// CPUs that must be free for the lease to be placed, beyond those it holds (Ray's
    /// placement resources: an actor with no resources given needs 1 CPU to be placed and
    /// holds none while it runs).
    #[serde(default)]
    pub placement_cpus: f64,
    /// The job whose work the lease runs: its worker is one of that job's (its binary, its
    /// settings). `None`: the raylet's own job (an embedded cluster's driver).
    #[serde(default)]
    pub job: Option<crate::JobId>,
    /// Another node's raylet spilled this request here: it waits here for room (if this node
    /// could ever hold it) instead of being spilled again on a view that may be as stale as the
    /// one that sent it (no request bounces between nodes).
    #[serde(default)]
    pub spilled: bool,
    /// The requesting process's owner service, when it is on another node (its worker id
    /// means nothing here): the raylet watches it, and its requests and leases end with it.
    #[serde(default)]
    pub remote_requester: Option<std::net::SocketAddr>,
    /// The owner service of the driver or worker to tell (on its stderr, once per kind of
    /// demand) when the request waits for a node that does not exist yet (Ray's "cannot be
    /// scheduled right now" warning, seen by the user, not only in a log).
    #[serde(default)]
    pub warn: Option<std::net::SocketAddr>,
    /// The bytes of the arguments of the task it is asked for, by the node whose store holds
    /// them (what a locality-aware policy weighs; empty when unknown).
    #[serde(default)]
    pub arguments: Vec<(crate::NodeId, u64)>,
}
wire_message!(RequestLease => LeaseOutcome, id = 200, parks);

/// The raylet's answer to a [`RequestLease`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LeaseOutcome {
    /// Push tasks to the worker at `address` (`host:port`), then return the lease.
    Granted {
        /// The lease, to return.
        lease: u64,
        /// The worker's transport address.
        address: String,
        /// The worker's process id (for error messages).
        pid: u32,
    },
    /// Ask another node instead.
    Spillback {
        /// The better node's id.
        node: String,
        /// Its raylet's transport address (`host:port`).
        address: String,
    },
    /// No node can ever run this shape.
    Infeasible {
        /// What was asked for, for the error message.
        demand: String,
    },
    /// No worker process could be started for it (several ended before registering).
    WorkerStartFailed {
        /// How the last one ended.
        exit: String,
    },
    /// The request itself is invalid (a negative or non-finite amount).
    Invalid {
        /// Why.
        reason: String,
    },
}

/// The submitter is done with a lease.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReturnLease {
    /// The lease.
    pub lease: u64,
    /// Whether the worker may be reused (false after it misbehaved).
    pub reusable: bool,
}
wire_message!(ReturnLease => (), id = 201);

/// A worker process started by this raylet is up and serving at `address`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterWorker {
    /// The id the raylet gave it (from its environment).
    pub worker: u64,
    /// Its transport address.
    pub address: String,
    /// Its registry fingerprint: a worker built from other code is refused.
    pub registry_fingerprint: u64,
}
wire_message!(RegisterWorker => bool, id = 202);

/// Resolves when the lease ends: `Some(exit)` if its worker died (how it ended, such as
/// "killed by signal 9"), `None` if it was returned or is unknown. Lets a submitter learn of a
/// worker's death at once instead of when its connection times out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WatchLease {
    /// The lease.
    pub lease: u64,
}
wire_message!(WatchLease => Option<String>, id = 203, parks);

/// A worker reports that it is blocked waiting for an object (`blocked: true`) or runs again;
/// see `LeaseManager::worker_blocked`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerBlocked {
    /// The id the raylet gave it.
    pub worker: u64,
    /// Blocked or running again.
    pub blocked: bool,
}
wire_message!(WorkerBlocked => (), id = 204);

/// The GCS's health check of a raylet: answered at once while the raylet lives (Ray's
/// `CheckAlive`; the GCS marks a node dead after `failure threshold` misses in a row).
#[derive(Debug, Serialize, Deserialize)]
pub struct HealthCheck;
wire_message!(HealthCheck => (), id = 205);
