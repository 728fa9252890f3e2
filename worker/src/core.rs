//! The core worker: what every Manta process (driver or worker) runs. It owns objects, borrows
//! others', reads and writes the node's object store, and is reachable on its node as the
//! `owner` service.
//!
//! `init()` in a driver starts the embedded cluster (transport, GCS, raylet, object store,
//! actor manager) and then the driver's core worker; the raylet starts worker processes by
//! re-executing this binary. In a worker the same `init()` finds the raylet's environment, joins
//! the cluster with its one-time token, starts its core worker and executor, registers with the
//! raylet, serves, and exits when the raylet's process is gone (the kernel sends it SIGTERM);
//! it never returns.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use manta_actor::{
    spawn, start_arbiter, Actor, ArbiterHandle, AskError, Context, Handler, Node, ResponseFuture, Routes,
    SpawnOptions, System,
};
use manta_gcs::requests::{AddJob, RegisterNode};
use manta_gcs::wire::JobId;
use manta_objectstore::{ObjectId, ObjectLocation, ObjectStore, StoreReader};
use manta_raylet::requests::{RegisterWorker, WorkerBlocked};
use manta_raylet::{worker_env, PoolConfig};
use manta_transport::{join_blocking, NodeId, TransportConfig};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde_bytes::ByteBuf;
use tracing::{debug, info, warn};

use crate::codec::{self, Encoded};
use crate::error::TaskError;
use crate::executor::Executor;
use crate::objects::state::{RefCommand, RefTable};
use crate::objects::{FreeHook, ObjectTable, RawRef, RefWire, Released, State, Value};
use crate::registry;
use crate::submit::Submitter;
use crate::wire::{
    AddBorrower, AwaitExit, CancelObject, CreateStoreObject, DeleteStoreObject, FreeObject, GetObject,
    ObjectReply, RemoveBorrower, SealStoreObject, StoreRefusal, WorkerOutput,
};
use manta_actor::ServiceRef;
use manta_proto::gcs::Gcs;
use manta_proto::raylet::Raylet;
use manta_proto::worker::{
    ActorManager as ActorManagerProtocol, AddObjectCopy, GetStoreStats, NodeLocation, Owner, PullError,
    PullObject, SendBinary, Store,
};
use manta_proto::OwnerAddress;
use std::collections::HashMap;

/// The name of every process's object service.
pub(crate) const OWNER_NAME: &str = <manta_proto::worker::Owner as manta_proto::Protocol>::NAME;

/// How long a watch on a process holding borrows waits before it is answered and asked again
/// (its death ends it at once).
const HOLDER_WATCH: Duration = Duration::from_secs(60);

/// Environment a driver passes to its workers (besides the raylet's own).
mod env {
    pub(super) use manta_raylet::worker_env::{JOB_ID, NODE_ID, STORE_PATH};
    pub(super) const INLINE_MAX: &str = "MANTA_INLINE_BYTES_MAX";
    pub(super) const NAMESPACE: &str = "MANTA_NAMESPACE";
    pub(super) const MAX_RETRIES: &str = "MANTA_MAX_RETRIES";
    pub(super) const TASKS_IN_FLIGHT: &str = "MANTA_TASKS_IN_FLIGHT";
}

/// Starting the runtime failed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// Two remote functions share a name.
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    /// A service could not be registered on the node (a name already taken).
    #[error("registering a service: {0}")]
    Register(#[from] manta_actor::RegisterError),
    /// A thread of the runtime could not be started.
    #[error("starting the runtime's threads: {0}")]
    Threads(#[from] std::io::Error),
    /// The head's daemons could not start.
    #[error(transparent)]
    Daemons(#[from] manta_node::NodeError),
    /// The GCS could not be reached to register the node and the job.
    #[error("reaching the GCS: {0}")]
    GcsUnreachable(#[from] manta_actor::AskError),
    /// The GCS refused the node or the job.
    #[error("the GCS refused to register this driver: {0}")]
    GcsRefused(#[from] manta_proto::gcs::GcsError),
    /// `init` was called twice.
    #[error("manta::init was already called in this process")]
    AlreadyInitialized,
    /// The running cluster named by `MANTA_ADDRESS` (or `Config::address`) could not be
    /// joined: why.
    #[error("joining the cluster at {address}: {reason}")]
    Cluster {
        /// The address as given.
        address: String,
        /// Why.
        reason: String,
    },
}

/// Why a worker process could not start serving (printed by the worker, whose exit the raylet
/// reports with the lease it was started for).
#[derive(Debug, thiserror::Error)]
enum WorkerStartError {
    /// A variable the raylet sets is missing.
    #[error("{name}: {error}")]
    Environment { name: &'static str, error: std::env::VarError },
    /// A variable the raylet sets does not parse.
    #[error("{name} is {value:?}, which does not parse")]
    BadVariable { name: &'static str, value: String },
    #[error("the join token does not parse: {0}")]
    Token(#[from] manta_transport::ParseTokenError),
    #[error("mapping the object store: {0}")]
    Store(#[from] manta_objectstore::StoreError),
    #[error("joining the node: {0}")]
    Join(#[from] manta_transport::JoinError),
    #[error("starting the transport: {0}")]
    Transport(#[from] manta_transport::StartError),
    #[error(transparent)]
    Core(#[from] InitError),
    #[error("registering with the raylet: {0}")]
    Register(manta_actor::AskError),
    #[error("the raylet refused this worker")]
    Refused,
}

/// A variable the raylet set for this worker.
fn variable(name: &'static str) -> Result<String, WorkerStartError> {
    std::env::var(name).map_err(|error| WorkerStartError::Environment { name, error })
}

/// A variable the raylet set for this worker, parsed.
fn parsed<T: std::str::FromStr>(name: &'static str) -> Result<T, WorkerStartError> {
    let value = variable(name)?;
    value.parse().map_err(|_| WorkerStartError::BadVariable { name, value })
}

/// Settings of the embedded cluster.
#[derive(Debug, Clone)]
pub struct Config {
    /// CPUs the local node offers (default: the machine's).
    pub num_cpus: usize,
    /// GPUs the local node offers (default: 0).
    pub num_gpus: usize,
    /// Custom resources the local node offers.
    pub resources: Vec<(String, f64)>,
    /// Pooled worker processes at most (actors' workers are not counted, as in Ray). `None`
    /// (the default): twice the configured `num_cpus` (at least 1), not the machine's.
    pub max_workers: Option<usize>,
    /// Worker processes starting at once at most (Ray: the CPU count). A start mostly waits
    /// (join, registration), so the default is 8 per CPU: 200 actors start in 2.0 s instead of
    /// 9.4 s at 2 (`manta microbenchmark --filter actors_200`, 2 vCPUs).
    pub worker_start_concurrency: usize,
    /// Retries of a task whose worker dies (Ray's default: 3).
    pub max_retries: u32,
    /// Fail a task or actor whose demand no node can meet at once (`TaskError::Infeasible`),
    /// instead of Ray's default, kept here: it waits, with a warning naming the demand, for a
    /// node that fits to join (a `get_timeout` still ends). A task pinned to a node the
    /// cluster lacks fails either way.
    pub fail_infeasible: bool,
    /// Bytes of shared memory for the object store (default: 30% of the machine's memory,
    /// Ray's default; the memory is only used as objects fill it).
    pub object_store_bytes: u64,
    /// Objects up to this size travel inline and live in their owner's memory (Ray: 100 KiB).
    pub inline_bytes_max: usize,
    /// The namespace named actors live in by default.
    pub namespace: String,
    /// Tasks pushed to one leased worker at once (Ray's `max_tasks_in_flight_per_worker`), at
    /// most [`PIPELINE`]. More hides the round trip between a worker's tasks, but a task pushed
    /// behind a long one waits for it even when another worker frees up. `None` (the default):
    /// adaptive, [`PIPELINE`] for a function whose recent tasks took under a millisecond, else 1.
    ///
    /// [`PIPELINE`]: crate::PIPELINE
    pub max_tasks_in_flight_per_worker: Option<usize>,
    /// A running cluster to join instead of starting the embedded one: `"auto"` (the cluster
    /// this host's `manta start` daemons belong to) or the GCS's `HOST:PORT`. `None` (the
    /// default): the `MANTA_ADDRESS` environment variable if set, else the embedded cluster.
    /// The node resources above are then the cluster's, not this process's to set.
    pub address: Option<String>,
    /// The cluster's join token, with a `HOST:PORT` address (default: `MANTA_TOKEN`, else the
    /// token of this host's session for that cluster).
    pub token: Option<String>,
    /// On a running cluster: each line this job's workers print appears on this process's
    /// stderr, prefixed with its worker and node (Ray's `log_to_driver`, default on). The
    /// embedded cluster's workers write to this process's terminal directly.
    pub log_to_driver: bool,
    /// The embedded cluster's scheduling policy, by its registered name: `hybrid` (Ray's
    /// default), `binpack`, `locality`, or one registered with `manta::register_policy!`. (A
    /// running cluster's is chosen by `manta start --scheduler`.)
    pub scheduler: String,
}

impl Default for Config {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        Config {
            num_cpus: cpus,
            num_gpus: 0,
            resources: Vec::new(),
            max_workers: None,
            worker_start_concurrency: cpus.max(1) * 8,
            max_retries: 3,
            fail_infeasible: false,
            object_store_bytes: system_memory_bytes().map_or(2 << 30, |bytes| bytes / 10 * 3),
            inline_bytes_max: 100 * 1024,
            namespace: "default".to_owned(),
            max_tasks_in_flight_per_worker: None,
            address: None,
            token: None,
            log_to_driver: true,
            scheduler: "hybrid".to_owned(),
        }
    }
}

/// The raylet's worker pool as `config` asks.
fn pool_config(config: &Config) -> PoolConfig {
    PoolConfig {
        workers_max: config.max_workers.unwrap_or(config.num_cpus.max(1) * 2),
        start_concurrency_max: config.worker_start_concurrency.max(1),
        wait_when_infeasible: !config.fail_infeasible,
        scheduler: config.scheduler.clone(),
        ..PoolConfig::default()
    }
}

fn system_memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The node's object store as this process reaches it.
pub(crate) enum StoreAccess {
    /// This process hosts the store.
    Local(Arc<Mutex<ObjectStore>>, StoreReader),
    /// Another process does: write through its service, read the mapping in place.
    Remote(ServiceRef<Store>, StoreReader),
}

impl StoreAccess {
    pub(crate) fn reader(&self) -> &StoreReader {
        match self {
            StoreAccess::Local(_, reader) | StoreAccess::Remote(_, reader) => reader,
        }
    }
}

use manta_node::refusal;

fn refusal_error(refusal: StoreRefusal) -> TaskError {
    match refusal {
        StoreRefusal::Full { requested, free, largest_free, capacity } => {
            TaskError::ObjectStoreFull { requested, free, largest_free, capacity }
        }
        StoreRefusal::Other(reason) => TaskError::ObjectStore { reason },
    }
}

/// Used and total bytes of the node's object store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    /// Bytes in use (objects, and deleted ones a reader still holds).
    pub used_bytes: u64,
    /// The store's size.
    pub capacity: u64,
    /// Objects stored.
    pub objects: usize,
    /// Bytes of shared memory the store holds now (freed memory stays until the store has
    /// been idle a moment, then goes back to the kernel).
    pub resident_bytes: u64,
    /// Secondary copies (pulled from other nodes) evicted to make room so far.
    pub evicted: u64,
}

/// The core worker of this process.
pub(crate) struct CoreWorker {
    pub(crate) node: Node,
    pub(crate) raylet: ServiceRef<Raylet>,
    pub(crate) gcs: ServiceRef<Gcs>,
    pub(crate) actor_manager: ServiceRef<ActorManagerProtocol>,
    /// The placement-group manager (beside the actor manager).
    pub(crate) placement_groups: ServiceRef<manta_proto::placement::PlacementGroups>,
    pub(crate) objects: ObjectTable,
    pub(crate) store: StoreAccess,
    /// The address of this node's store service (its object manager).
    pub(crate) store_at: std::net::SocketAddr,
    /// Copies of objects owned here that other nodes pulled (deleted with the object).
    pub(crate) copies: Mutex<HashMap<ObjectId, Vec<NodeLocation>>>,
    /// Where submission, fetching and reference-counting messages run.
    pub(crate) arbiter: ArbiterHandle,
    pub(crate) submitter: Submitter,
    pub(crate) actor_clients: crate::actors::ActorClients,
    pub(crate) job: JobId,
    pub(crate) namespace: String,
    pub(crate) inline_bytes_max: usize,
    pub(crate) max_retries: u32,
    /// In a worker process: its id at the raylet (to report being blocked in a `get`).
    pub(crate) worker_id: Option<u64>,
    /// This process's address as owners are named (parsed once).
    pub(crate) owner_address: OwnerAddress,
    id_prefix: [u8; 12],
    /// The node this process belongs to.
    pub(crate) node_id: NodeId,
    next_id: AtomicU64,
}

/// The process's default core worker, installed by `init`: what the API reaches from a thread
/// that entered no core of its own (user code calls `remote()` from any thread, as in Ray).
/// Nothing below the API boundary reads it: the core is handed down, and each ref knows its own.
static DEFAULT: OnceLock<Arc<CoreWorker>> = OnceLock::new();

thread_local! {
    /// The core the calling thread entered, ahead of the default: several core workers can
    /// live in one process, each thread working for one.
    static CURRENT: std::cell::RefCell<Option<Arc<CoreWorker>>> = const { std::cell::RefCell::new(None) };
}

/// The calling thread's core worker (borrowed when it is the default: no count to take on the
/// hot path of a user thread), or [`TaskError::NotInitialized`].
pub(crate) fn current() -> Result<Current, TaskError> {
    try_current().ok_or(TaskError::NotInitialized)
}

/// The calling thread's core worker, if there is one.
pub(crate) fn try_current() -> Option<Current> {
    match CURRENT.with(|current| current.borrow().clone()) {
        Some(entered) => Some(Current::Owned(entered)),
        None => DEFAULT.get().map(Current::Borrowed),
    }
}

/// A core worker as [`current`] finds it.
pub(crate) type Current = std::borrow::Cow<'static, Arc<CoreWorker>>;

/// Makes `core` the calling thread's core worker for good (the core's own threads: its
/// arbiter, the threads hosting its actors).
pub(crate) fn enter(core: &Arc<CoreWorker>) {
    CURRENT.with(|current| *current.borrow_mut() = Some(core.clone()));
}

/// Runs `work` with `core` as the calling thread's core worker (a task on the shared task
/// thread: what its generated code decodes and encodes is counted by the core that runs it).
pub(crate) fn within<R>(core: &Arc<CoreWorker>, work: impl FnOnce() -> R) -> R {
    let previous = CURRENT.with(|current| current.borrow_mut().replace(core.clone()));
    let result = work();
    CURRENT.with(|current| *current.borrow_mut() = previous);
    result
}

impl CoreWorker {
    /// A fresh object id: this process's random prefix and a counter.
    pub(crate) fn new_object_id(&self) -> ObjectId {
        ObjectId::from_parts(self.id_prefix, self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// The object service of the process at `address`; `None` for an address that does not
    /// parse (it came from a peer, and nothing can be asked of it).
    pub(crate) fn owner_of(&self, address: OwnerAddress) -> ServiceRef<Owner> {
        self.node.service(address.0)
    }

    /// How the object table names an owner: `None` for this process.
    fn owner_key(&self, owner: OwnerAddress) -> Option<OwnerAddress> {
        (owner != self.owner_address).then_some(owner)
    }

    /// Runs `future` on the core arbiter and blocks this thread for its output. Never call it
    /// on the core arbiter itself.
    pub(crate) fn block_on<F>(&self, future: F) -> F::Output
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        self.arbiter.spawn(async move {
            let _ = sender.send(future.await);
        });
        receiver.recv().expect("the core arbiter runs for the life of the process")
    }

    /// A ref arriving in a value: count it, as owned or borrowed.
    pub(crate) fn adopt(self: &Arc<Self>, wire: &RefWire) -> RawRef {
        let id = wire.id;
        let owner = self.owner_key(wire.owner);
        self.objects.adopt(id, owner);
        RawRef::from_counted(self, id, owner)
    }

    /// A streaming task's own object, pending, with one handle; the ids after it are reserved
    /// for its values (see [`crate::stream`]).
    pub(crate) fn create_stream_task(self: &Arc<Self>) -> RawRef {
        let first = self.next_id.fetch_add(1 + crate::stream::STREAM_VALUES_MAX, Ordering::Relaxed);
        let id = ObjectId::from_parts(self.id_prefix, first);
        self.objects.create_owned(id, State::Pending, Vec::new());
        RawRef::from_counted(self, id, None)
    }

    /// `N` new owned objects with consecutive ids (a task's returns), pending, one handle each.
    pub(crate) fn create_pending_returns<const N: usize>(self: &Arc<Self>) -> [RawRef; N] {
        let first = self.next_id.fetch_add(N as u64, Ordering::Relaxed);
        std::array::from_fn(|index| {
            let id = ObjectId::from_parts(self.id_prefix, first + index as u64);
            self.objects.create_owned(id, State::Pending, Vec::new());
            RawRef::from_counted(self, id, None)
        })
    }

    /// Starts fetching a borrowed object's value from its owner (once).
    pub(crate) fn start_fetch_if_borrowed(self: &Arc<Self>, raw: &RawRef) {
        let Some(owner) = self.objects.start_fetch(raw.id) else { return };
        let id = raw.id;
        let this = self.clone();
        self.arbiter.spawn(async move {
            // Answered when the object is ready, however long its task runs; ends with the
            // owner's death otherwise.
            let reply = this.owner_of(owner).ask_unbounded(GetObject { id }).await;
            let state = match reply {
                Ok(ObjectReply::Inline(bytes)) => State::Ready(Value::Inline(Bytes::from(bytes.into_vec()))),
                Ok(ObjectReply::Shared(location)) => State::Ready(this.value_at(location)),
                Ok(ObjectReply::Failed(error)) => State::Failed(error),
                Ok(ObjectReply::Unknown) => State::Failed(TaskError::ObjectLost {
                    object: id.to_string(),
                    reason: format!("its owner {owner} no longer has it"),
                }),
                Err(error) => State::Failed(TaskError::ObjectLost {
                    object: id.to_string(),
                    reason: format!("its owner {owner} is unreachable: {error}"),
                }),
            };
            this.objects.fetched(id, state);
        });
    }

    /// Waits (blocking) until `raw` is ready or failed; `Ok(None)` at the deadline.
    pub(crate) fn wait_ready(
        self: &Arc<Self>,
        raw: &RawRef,
        deadline: Option<Instant>,
    ) -> Result<Option<State>, TaskError> {
        self.start_fetch_if_borrowed(raw);
        let pending = matches!(self.objects.state(raw.id), Some(State::Pending));
        let Some(worker) = self.worker_id.filter(|_| pending) else {
            return Ok(self.objects.wait_blocking(raw.id, deadline));
        };
        // A task waiting here lends its lease's resources to the work it waits for (nested
        // tasks could otherwise never get the CPU their parent holds).
        self.report_blocked(worker, true);
        let state = self.objects.wait_blocking(raw.id, deadline);
        self.report_blocked(worker, false);
        Ok(state)
    }

    /// `wait`'s and `get_all`'s sleep until `done` holds of the object table (or the deadline
    /// passes; returns whether it holds): like [`CoreWorker::wait_ready`], a worker that has to
    /// sleep reports itself blocked.
    pub(crate) fn wait_for_reporting(
        self: &Arc<Self>,
        deadline: Option<Instant>,
        mut done: impl FnMut(&RefTable) -> bool,
    ) -> bool {
        if self.objects.wait_for(Some(Instant::now()), &mut done) {
            return true;
        }
        match self.worker_id {
            Some(worker) => {
                self.report_blocked(worker, true);
                let done = self.objects.wait_for(deadline, done);
                self.report_blocked(worker, false);
                done
            }
            None => self.objects.wait_for(deadline, done),
        }
    }

    fn report_blocked(self: &Arc<Self>, worker: u64, blocked: bool) {
        let raylet = self.raylet.clone();
        self.arbiter.spawn(async move {
            let _ = raylet.tell(WorkerBlocked { worker, blocked }).await;
        });
    }

    /// The bytes of a ready value (pinned in the store when shared).
    pub(crate) fn value_bytes(&self, id: ObjectId, value: &Value) -> Result<Bytes, TaskError> {
        match value {
            Value::Inline(bytes) => Ok(bytes.clone()),
            Value::Shared(location) => {
                self.store.reader().pin(*location).ok_or_else(|| TaskError::ObjectLost {
                    object: id.to_string(),
                    reason: "it is no longer in the object store".into(),
                })
            }
            Value::Remote(location) => Err(TaskError::ObjectLost {
                object: id.to_string(),
                reason: format!("it is in node {}'s store and was not pulled here", location.node),
            }),
        }
    }

    fn decode_state<T: DeserializeOwned>(
        self: &Arc<Self>,
        id: ObjectId,
        state: State,
    ) -> Result<(T, Vec<RawRef>), TaskError> {
        match state {
            State::Ready(value) => {
                let bytes = self.value_bytes(id, &value)?;
                // The refs inside are counted by this core, whichever thread decodes.
                within(self, || codec::decode(bytes)).map_err(|error| TaskError::Decode {
                    type_name: std::any::type_name::<T>().to_owned(),
                    reason: error.to_string(),
                })
            }
            State::Failed(error) => Err(error),
            State::Pending => unreachable!("decoding waits for a ready state"),
        }
    }

    /// Decodes a ready value and registers this process as the borrower of the refs inside.
    pub(crate) fn decode_blocking<T: DeserializeOwned>(
        self: &Arc<Self>,
        id: ObjectId,
        state: State,
    ) -> Result<T, TaskError> {
        let state = match state {
            State::Ready(Value::Remote(_)) => {
                let this = self.clone();
                self.block_on(async move { this.localize_state(id, state).await })?
            }
            other => other,
        };
        let (value, refs) = self.decode_state(id, state)?;
        self.register_blocking(refs);
        Ok(value)
    }

    pub(crate) async fn decode_async<T: DeserializeOwned>(
        self: &Arc<Self>,
        id: ObjectId,
        state: State,
    ) -> Result<T, TaskError> {
        let state = self.localize_state(id, state).await?;
        let (value, refs) = self.decode_state(id, state)?;
        self.register_borrows(refs.iter().map(|raw| raw.id).collect()).await;
        Ok(value)
    }

    pub(crate) fn register_blocking(self: &Arc<Self>, refs: Vec<RawRef>) {
        let ids: Vec<ObjectId> = refs.iter().map(|raw| raw.id).collect();
        if !self.objects.unregistered(&ids).is_empty() {
            let this = self.clone();
            self.block_on(async move { this.register_borrows(ids).await });
        }
        drop(refs);
    }

    /// Registers this process as a borrower of the refs among `ids` it borrows and has not
    /// registered yet. Awaited before whatever carried the refs is released.
    pub(crate) async fn register_borrows(self: &Arc<Self>, ids: Vec<ObjectId>) {
        for (id, owner) in self.objects.unregistered(&ids) {
            let service = self.owner_of(owner);
            let added = service.ask(AddBorrower { id, holder: self.owner_address }).await.ok();
            match added {
                // Given back at once if every handle was dropped meanwhile.
                Some(true) => self.clean_up(self.objects.registered(id, owner)),
                _ => self.objects.fetched(
                    id,
                    State::Failed(TaskError::ObjectLost {
                        object: id.to_string(),
                        reason: format!("its owner {owner} no longer has it"),
                    }),
                ),
            }
        }
    }

    /// Takes one borrow on each ref, on behalf of an object that contains them, held for
    /// `holder`: the process that owns that object.
    pub(crate) async fn hold_contained(self: &Arc<Self>, refs: &[RefWire], holder: OwnerAddress) {
        for wire in refs {
            let id = wire.id;
            if wire.owner == self.owner_address {
                let (_, released) = self.objects.add_borrower(id, holder);
                self.clean_up(released);
            } else {
                let _ = self.owner_of(wire.owner).ask(AddBorrower { id, holder }).await;
            }
        }
    }

    /// Watches `holder`, a process holding borrows of objects owned here, until it holds none
    /// (asking again after each answer) or dies (then its borrows end).
    fn watch_holder(self: &Arc<Self>, holder: OwnerAddress) {
        let this = self.clone();
        self.arbiter.spawn(async move {
            loop {
                match this.owner_of(holder).ask_unbounded(AwaitExit).await {
                    Ok(()) => {
                        if !this.objects.holder_alive(holder) {
                            return;
                        }
                    }
                    Err(
                        AskError::ActorDied { .. }
                        | AskError::ConnectionLost(_)
                        | AskError::Unreachable(_)
                        | AskError::NoSuchActor { .. },
                    ) => {
                        debug!(%holder, "a process holding borrows died: they end");
                        this.clean_up(this.objects.holder_died(holder));
                        return;
                    }
                    // Not a death (the watch itself was refused): ask again in a while.
                    Err(error) => {
                        debug!(%holder, %error, "watching a holder of borrows");
                        tokio::time::sleep(HOLDER_WATCH).await;
                    }
                }
            }
        });
    }

    /// Performs what the object table decided when objects were freed: store copies deleted,
    /// owners told of ended borrows, hooks run.
    pub(crate) fn clean_up(self: &Arc<Self>, released: Released) {
        for command in released.0 {
            match command {
                RefCommand::DeleteStored { id, at } => self.delete_stored(id, at),
                RefCommand::RemoveBorrow { id, owner } => {
                    let (owner, holder) = (self.owner_of(owner), self.owner_address);
                    self.arbiter.spawn(async move {
                        let _ = owner.tell(RemoveBorrower { id, holder }).await;
                    });
                }
                RefCommand::WatchHolder { holder } => self.watch_holder(holder),
                RefCommand::Hook(FreeHook::KillActor(actor_id)) => {
                    crate::actors::kill_when_out_of_scope(self, actor_id);
                }
            }
        }
    }

    /// Deletes a freed object's stored copies: its primary (in this node's store, or `at`
    /// another's) and every copy other nodes pulled.
    pub(crate) fn delete_stored(self: &Arc<Self>, id: ObjectId, at: Option<NodeLocation>) {
        let mut elsewhere = self.copies.lock().remove(&id).unwrap_or_default();
        match at {
            None => self.delete_from_store(id),
            Some(at) => elsewhere.push(at),
        }
        for copy in elsewhere {
            if copy.node == self.node_id {
                self.delete_from_store(id);
                continue;
            }
            let store: ServiceRef<Store> = self.node.service(copy.store);
            self.arbiter.spawn(async move {
                let _ = store.tell(DeleteStoreObject { id }).await;
            });
        }
    }

    /// Where a location in this node's store is, as other nodes name it.
    pub(crate) fn here(&self, at: ObjectLocation) -> NodeLocation {
        // A location just handed out is sealed and held: it pins.
        let size = self.store.reader().pin(at).map_or(0, |bytes| bytes.len() as u64);
        NodeLocation { node: self.node_id, store: self.store_at, at: at.into(), size }
    }

    /// A stored value at `location`: in this node's store, or another's.
    pub(crate) fn value_at(&self, location: NodeLocation) -> Value {
        if location.node == self.node_id {
            Value::Shared(location.at.into())
        } else {
            Value::Remote(location)
        }
    }

    /// A value readable here: one in another node's store is pulled into this node's first
    /// (by the node's object manager, which merges pulls and keeps the copy for later readers).
    pub(crate) async fn localize(&self, id: ObjectId, value: Value) -> Result<Value, TaskError> {
        let Value::Remote(from) = value else { return Ok(value) };
        let owner = self.objects.owner(id).unwrap_or(self.owner_address);
        // Read through the pin (a view of the store, not a copy).
        self.pull_pinned(id, from, owner).await.map(|(_, pinned)| Value::Inline(pinned))
    }

    /// [`CoreWorker::pull`], and a pin of the copy taken at once: the store evicts secondary
    /// copies no reader pins when it needs room, and a copy evicted before it was pinned is
    /// pulled again (a few times: a store too small for the work on its node ends in an error).
    pub(crate) async fn pull_pinned(
        &self,
        id: ObjectId,
        from: NodeLocation,
        owner: OwnerAddress,
    ) -> Result<(ObjectLocation, Bytes), TaskError> {
        const ATTEMPTS: usize = 3;
        for _ in 0..ATTEMPTS {
            let at = self.pull(id, from, owner).await?;
            if let Some(pinned) = self.store.reader().pin(at) {
                return Ok((at, pinned));
            }
        }
        Err(TaskError::ObjectLost {
            object: id.to_string(),
            reason: format!(
                "{ATTEMPTS} copies pulled into this node's store were evicted before they could be read \
                 (the store is too small for the work on this node)"
            ),
        })
    }

    /// Pulls `id` from `from` into this node's store (its owner is `owner`).
    pub(crate) async fn pull(
        &self,
        id: ObjectId,
        from: NodeLocation,
        owner: OwnerAddress,
    ) -> Result<ObjectLocation, TaskError> {
        let manager: ServiceRef<Store> = self.node.service(self.store_at);
        let lost = |reason: String| TaskError::ObjectLost { object: id.to_string(), reason };
        match manager.ask_unbounded(PullObject { id, from, owner }).await {
            Ok(Ok(location)) => Ok(location.into()),
            Ok(Err(PullError::NoRoom(refusal))) => Err(refusal_error(refusal)),
            Ok(Err(error)) => Err(lost(format!("pulling it from node {}: {error}", from.node))),
            Err(error) => Err(lost(format!("this node's object manager could not be asked: {error}"))),
        }
    }

    /// A ready state whose value is readable here (see [`CoreWorker::localize`]).
    async fn localize_state(&self, id: ObjectId, state: State) -> Result<State, TaskError> {
        match state {
            State::Ready(value @ Value::Remote(_)) => self.localize(id, value).await.map(State::Ready),
            other => Ok(other),
        }
    }

    pub(crate) fn delete_from_store(self: &Arc<Self>, id: ObjectId) {
        match &self.store {
            StoreAccess::Local(store, _) => {
                let _ = store.lock().delete(id);
            }
            StoreAccess::Remote(service, _) => {
                let service = service.clone();
                self.arbiter.spawn(async move {
                    let _ = service.tell(DeleteStoreObject { id }).await;
                });
            }
        }
    }

    /// Writes an encoded value into the node's store under `id`.
    pub(crate) async fn write_to_store(
        &self,
        id: ObjectId,
        encoded: &Encoded,
    ) -> Result<ObjectLocation, TaskError> {
        let len = encoded.len() as u64;
        match &self.store {
            StoreAccess::Local(store, _) => write_local(store, id, encoded),
            StoreAccess::Remote(service, reader) => {
                let location = service
                    .ask(CreateStoreObject { id, len })
                    .await
                    .map_err(|error| TaskError::unreachable("put", "the object store", error))?
                    .map_err(refusal_error)?;
                // SAFETY: the store granted this location to this process for `id` just now, and
                // this is its only writer.
                let writer = unsafe { reader.open_writer(id, location.into()) };
                let Some(mut writer) = writer else {
                    let reason = "the granted object vanished before it was written".to_owned();
                    return Err(TaskError::ObjectStore { reason });
                };
                encoded.write_to(writer.as_mut_slice());
                drop(writer);
                let sealed = service
                    .ask(SealStoreObject { id })
                    .await
                    .map_err(|error| TaskError::unreachable("put", "the object store", error))?
                    .map_err(refusal_error)?;
                Ok(sealed.into())
            }
        }
    }

    /// Stores an encoded value as a value: inline if small, in the store otherwise.
    pub(crate) async fn store_value(&self, id: ObjectId, encoded: &Encoded) -> Result<Value, TaskError> {
        if encoded.len() <= self.inline_bytes_max {
            Ok(Value::Inline(Bytes::from(encoded.to_vec())))
        } else {
            Ok(Value::Shared(self.write_to_store(id, encoded).await?))
        }
    }

    /// `put` for any thread but the core arbiter.
    pub(crate) fn put_encoded(self: &Arc<Self>, encoded: Encoded) -> Result<RawRef, TaskError> {
        let id = self.new_object_id();
        let value = match &self.store {
            // The store is in this process: write without a hop through the arbiter.
            StoreAccess::Local(store, _) if encoded.len() > self.inline_bytes_max => {
                Value::Shared(write_local(store, id, &encoded)?)
            }
            _ if encoded.len() <= self.inline_bytes_max => Value::Inline(Bytes::from(encoded.to_vec())),
            _ => {
                let encoded = Arc::new(encoded);
                let shared = encoded.clone();
                let this = self.clone();
                let location = self.block_on(async move { this.write_to_store(id, &shared).await })?;
                match Arc::try_unwrap(encoded) {
                    Ok(encoded) => return self.finish_put(id, Value::Shared(location), encoded.refs),
                    Err(_) => unreachable!("the writer dropped its clone"),
                }
            }
        };
        self.finish_put(id, value, encoded.refs)
    }

    fn finish_put(
        self: &Arc<Self>,
        id: ObjectId,
        value: Value,
        refs: Vec<RefWire>,
    ) -> Result<RawRef, TaskError> {
        if !refs.is_empty() {
            let held = refs.clone();
            let this = self.clone();
            let holder = self.owner_address;
            self.block_on(async move { this.hold_contained(&held, holder).await });
        }
        self.objects.create_owned(id, State::Ready(value), refs);
        Ok(RawRef::from_counted(self, id, None))
    }

    /// The node store's use (asked of its process when that is another).
    pub(crate) fn store_stats(&self) -> Option<StoreStats> {
        match &self.store {
            StoreAccess::Local(store, _) => {
                let mut store = store.lock();
                store.reclaim();
                Some(StoreStats {
                    used_bytes: store.used_bytes(),
                    capacity: store.capacity(),
                    objects: store.len(),
                    resident_bytes: store.reader().arena().resident_bytes(),
                    evicted: store.evicted(),
                })
            }
            StoreAccess::Remote(service, _) => {
                let service = service.clone();
                let figures = self.block_on(async move { service.ask(GetStoreStats).await }).ok()?;
                Some(StoreStats {
                    used_bytes: figures.used_bytes,
                    capacity: figures.capacity,
                    objects: figures.objects as usize,
                    resident_bytes: figures.resident_bytes,
                    evicted: figures.evicted,
                })
            }
        }
    }
}

/// Writes an object into the store hosted by this process. The lock is not held while the
/// bytes are copied: the writer's block is its own until the seal.
fn write_local(
    store: &Mutex<ObjectStore>,
    id: ObjectId,
    encoded: &Encoded,
) -> Result<ObjectLocation, TaskError> {
    let mut writer = store
        .lock()
        .create_object(id, encoded.len() as u64)
        .map_err(|error| refusal_error(refusal(error)))?;
    encoded.write_to(writer.as_mut_slice());
    store.lock().seal(writer).map_err(|error| refusal_error(refusal(error)))
}

/// Every process's object service: answers `get`s of the objects it owns and counts borrowers.
pub(crate) struct OwnerService {
    /// Weak: the node's registry holds this service, and the core holds the node.
    pub(crate) core: std::sync::Weak<CoreWorker>,
}

impl Actor for OwnerService {
    type Context = Context<Self>;
}

impl Handler<GetObject> for OwnerService {
    type Result = ResponseFuture<ObjectReply>;

    fn handle(&mut self, request: GetObject, _: &mut Context<Self>) -> Self::Result {
        let core = self.core.clone();
        Box::pin(async move {
            let Some(core) = core.upgrade() else { return ObjectReply::Unknown };
            let id = request.id;
            if core.objects.state(id).is_none() {
                return ObjectReply::Unknown;
            }
            match core.objects.wait_async(id).await {
                State::Ready(Value::Inline(bytes)) => ObjectReply::Inline(ByteBuf::from(bytes.to_vec())),
                State::Ready(Value::Shared(location)) => ObjectReply::Shared(core.here(location)),
                State::Ready(Value::Remote(location)) => ObjectReply::Shared(location),
                State::Failed(TaskError::ObjectLost { .. }) => ObjectReply::Unknown,
                State::Failed(error) => ObjectReply::Failed(error),
                State::Pending => unreachable!("wait_async returns settled states"),
            }
        })
    }
}

impl Handler<AddBorrower> for OwnerService {
    type Result = bool;

    fn handle(&mut self, request: AddBorrower, _: &mut Context<Self>) -> bool {
        let Some(core) = self.core.upgrade() else { return false };
        let (added, released) = core.objects.add_borrower(request.id, request.holder);
        core.clean_up(released);
        added
    }
}

impl Handler<AddObjectCopy> for OwnerService {
    type Result = bool;

    /// A node's object manager pulled a copy of an object owned here: it is deleted with the
    /// object, or at once (`false`) when the object is gone.
    fn handle(&mut self, request: AddObjectCopy, _: &mut Context<Self>) -> bool {
        let Some(core) = self.core.upgrade() else { return false };
        let alive = matches!(core.objects.state(request.id), Some(State::Ready(_)))
            && core.objects.owner(request.id) == Some(core.owner_address);
        if alive {
            core.copies.lock().entry(request.id).or_default().push(request.copy);
        }
        alive
    }
}

impl Handler<SendBinary> for OwnerService {
    type Result = ResponseFuture<Result<(), String>>;

    /// A node must start this job's workers and has no copy of this program: send it, read from
    /// `/proc/self/exe` (the running binary, even if its file was replaced since) in 5 MiB
    /// chunks, off the core's thread.
    fn handle(&mut self, request: SendBinary, _: &mut Context<Self>) -> Self::Result {
        let Some(core) = self.core.upgrade() else {
            return Box::pin(std::future::ready(Err("this driver is shutting down".to_owned())));
        };
        Box::pin(async move { send_binary(&core, request).await })
    }
}

/// Sends this process's binary to the raylet that asked for it (see [`SendBinary`]).
async fn send_binary(core: &CoreWorker, request: SendBinary) -> Result<(), String> {
    use std::io::Read as _;
    const CHUNK: usize = 5 * 1024 * 1024;
    let exe = std::path::Path::new("/proc/self/exe");
    let (file, len) = tokio::task::spawn_blocking(move || {
        let (sha256, len) = manta_raylet::binary::sha256_of(exe)?;
        Ok::<_, std::io::Error>((std::fs::File::open(exe)?, len, sha256))
    })
    .await
    .map_err(|error| error.to_string())?
    .map_err(|error| format!("reading this program's binary: {error}"))
    .and_then(|(file, len, sha256)| {
        if sha256 == request.sha256 {
            Ok((file, len))
        } else {
            Err(format!("this driver's binary has sha256 {sha256}, not {}", request.sha256))
        }
    })?;
    let meta = manta_proto::worker::BinaryTransfer { sha256: request.sha256 };
    let raylet = <manta_proto::raylet::Raylet as manta_proto::Protocol>::NAME;
    let mut transfer =
        core.node.open_bulk(request.to, raylet, &meta, len).await.map_err(|error| error.to_string())?;
    let file = std::sync::Arc::new(parking_lot::Mutex::new(file));
    while transfer.remaining() > 0 {
        let want = usize::try_from(transfer.remaining()).unwrap_or(CHUNK).min(CHUNK);
        let file = file.clone();
        let chunk = tokio::task::spawn_blocking(move || {
            let mut chunk = vec![0u8; want];
            file.lock().read_exact(&mut chunk).map(|()| Bytes::from(chunk))
        })
        .await
        .map_err(|error| error.to_string())?
        .map_err(|error| format!("reading this program's binary: {error}"))?;
        transfer.write(chunk).await.map_err(|error| error.to_string())?;
    }
    transfer.finish().await.map_err(|error| error.to_string())?
}

impl Handler<FreeObject> for OwnerService {
    type Result = ();

    /// A borrower freed the object (`manta::free`).
    fn handle(&mut self, request: FreeObject, _: &mut Context<Self>) {
        if let Some(core) = self.core.upgrade() {
            core.clean_up(core.objects.free(request.id).0);
        }
    }
}

impl Handler<CancelObject> for OwnerService {
    type Result = bool;

    /// A borrower cancels the task that makes one of this process's objects.
    fn handle(&mut self, request: CancelObject, _: &mut Context<Self>) -> bool {
        let Some(core) = self.core.upgrade() else { return false };
        crate::submit::cancel_task(&core, request.id, request.force, request.recursive)
    }
}

impl Handler<WorkerOutput> for OwnerService {
    type Result = ();

    /// Lines a worker of this driver's job printed: on this process's stderr, with their origin
    /// (what the worker ran, its pid and node).
    fn handle(&mut self, output: WorkerOutput, _: &mut Context<Self>) {
        use std::io::Write as _;
        let node = output.node_id.to_string();
        let node = &node[..node.len().min(8)];
        // Ray's form: `(square pid=123, ip=..)`; the node's id stands for its address.
        let what: String = output.origin.chars().filter(|c| !c.is_control()).collect();
        let origin = if what.is_empty() {
            format!("(pid={}, node={node})", output.pid)
        } else {
            format!("({what} pid={}, node={node})", output.pid)
        };
        let mut stderr = std::io::stderr().lock();
        for line in output.lines {
            let _ = writeln!(stderr, "{origin} {line}");
        }
    }
}

impl Handler<AwaitExit> for OwnerService {
    type Result = ResponseFuture<()>;

    /// An owner watches this process (it holds borrows of the owner's objects): answered after
    /// a while; the ask fails when this process dies.
    fn handle(&mut self, _: AwaitExit, _: &mut Context<Self>) -> Self::Result {
        Box::pin(tokio::time::sleep(HOLDER_WATCH))
    }
}

impl Handler<RemoveBorrower> for OwnerService {
    type Result = ();

    fn handle(&mut self, request: RemoveBorrower, _: &mut Context<Self>) {
        if let Some(core) = self.core.upgrade() {
            core.clean_up(core.objects.remove_borrower(request.id, request.holder));
        }
    }
}

/// A handle to the embedded cluster.
#[derive(Debug)]
pub struct Cluster {
    _private: (),
}

impl Cluster {
    /// The address of this driver's node.
    pub fn address(&self) -> Option<std::net::SocketAddr> {
        DEFAULT.get().map(|core| core.node.local_addr())
    }
}

/// Starts Manta with the default [`Config`]. In a worker process this never returns.
pub fn init() -> Result<Cluster, InitError> {
    init_with(Config::default())
}

/// Starts Manta with `config`. In a worker process this never returns.
pub fn init_with(config: Config) -> Result<Cluster, InitError> {
    registry::check()?;
    let fingerprint = registry::fingerprint();
    if is_worker_process() {
        // Only the first caller becomes the worker; any other thread that calls `init` (a test
        // harness runs tests in parallel) waits here for ever, as `init` never returns in a worker.
        static WORKER: std::sync::Once = std::sync::Once::new();
        WORKER.call_once(|| worker_main(fingerprint));
        unreachable!("worker_main exits the process");
    }
    if DEFAULT.get().is_some() {
        return Err(InitError::AlreadyInitialized);
    }
    let address =
        config.address.clone().or_else(|| std::env::var(ADDRESS_ENV).ok().filter(|text| !text.is_empty()));
    if let Some(address) = address {
        return connect(&config, &address, fingerprint);
    }
    // The head's daemons (GCS, actor manager, store, raylet), composed by `manta-node`.
    let node_config = manta_node::NodeConfig {
        num_cpus: config.num_cpus,
        num_gpus: config.num_gpus,
        resources: config.resources.clone(),
        object_store_bytes: config.object_store_bytes,
        object_slots: 65_536,
        scheduler: config.scheduler.clone(),
    };
    manta_raylet::policies::policy_named(&config.scheduler).map_err(manta_node::NodeError::Scheduler)?;
    let head = manta_node::Head::start(&node_config)?;
    let address = head.node.local_addr().to_string();
    let core_arbiter = start_arbiter("manta-core")?;
    let job = {
        let gcs = head.gcs.clone();
        let info = head.node_info(now_ms());
        let driver = address.clone();
        run_on(&core_arbiter, async move {
            gcs.ask(RegisterNode(info)).await??;
            Ok::<_, InitError>(gcs.ask(AddJob { driver_address: driver, launch: None }).await??.job_id)
        })?
    };
    let worker_env = vec![
        (env::STORE_PATH.to_owned(), head.store_path.display().to_string()),
        (env::JOB_ID.to_owned(), job.0.to_string()),
        (env::INLINE_MAX.to_owned(), config.inline_bytes_max.to_string()),
        (env::NAMESPACE.to_owned(), config.namespace.clone()),
        (env::NODE_ID.to_owned(), head.node_id.to_string()),
        (env::MAX_RETRIES.to_owned(), config.max_retries.to_string()),
        (env::TASKS_IN_FLIGHT.to_owned(), config.max_tasks_in_flight_per_worker.unwrap_or(0).to_string()),
    ];
    head.start_raylet(pool_config(&config), fingerprint, worker_env)?;
    let manta_node::Head { node, node_id, store, store_reader, gcs, .. } = head;
    let here = node.local_addr();
    let services = (node.service(here), gcs, node.service(here), node.service(here));
    let core = driver_core(
        &config,
        node,
        services,
        (StoreAccess::Local(store, store_reader), here),
        (core_arbiter, job, node_id),
    );
    let _core = start_core(core)?;
    info!(%address, "embedded cluster started");
    Ok(Cluster { _private: () })
}

/// The environment variable naming a running cluster for `init` (Ray's `RAY_ADDRESS`).
pub const ADDRESS_ENV: &str = "MANTA_ADDRESS";
/// The environment variable holding that cluster's join token.
pub const TOKEN_ENV: &str = "MANTA_TOKEN";

/// What a driver on a running cluster needs to know of its host's node.
struct LocalNode {
    gcs: std::net::SocketAddr,
    token: manta_transport::JoinToken,
    raylet: std::net::SocketAddr,
    store_path: std::path::PathBuf,
    node_id: NodeId,
}

/// This host's node of the cluster at `address` (`auto`: the newest session's), from the
/// session directories `manta start` keeps.
fn local_node(config: &Config, address: &str) -> Result<LocalNode, String> {
    use manta_node::session::{self, Session, TOKEN};
    let root = session::root();
    let session = if address == "auto" {
        Session::latest(&root).map_err(|error| error.to_string())?
    } else {
        let wanted: std::net::SocketAddr =
            address.parse().map_err(|_| "the address is neither `auto` nor HOST:PORT".to_owned())?;
        Session::all(&root)
            .into_iter()
            .rev()
            .find(|session| session.gcs_address().is_ok_and(|gcs| gcs == wanted))
            .ok_or_else(|| {
                format!(
                    "no node of that cluster runs on this host (in {}); start one with `manta start --address {wanted} --token ...`",
                    root.display()
                )
            })?
    };
    let gcs = session.gcs_address().map_err(|error| error.to_string())?;
    let token = match config.token.clone().or_else(|| std::env::var(TOKEN_ENV).ok()) {
        Some(token) => token,
        None => session.required(TOKEN).map_err(|error| error.to_string())?,
    };
    let token = token.parse().map_err(|error| format!("the join token: {error}"))?;
    let raylet = session.raylet().map_err(|error| error.to_string())?;
    Ok(LocalNode {
        gcs,
        token,
        raylet: raylet.address,
        store_path: raylet.store_path,
        node_id: raylet.node_id,
    })
}

/// How long a process waits for the GCS to admit it while it cannot be reached (it may be
/// restarting on its tables): Ray's clients wait 60 s; a worker's raylet gives up on it at 60 s.
const JOIN_PATIENCE: std::time::Duration = std::time::Duration::from_secs(45);

/// Joins at `address`, asking again while nobody answers there (a GCS restarting) for up to
/// [`JOIN_PATIENCE`]; a refusal is final at once.
fn join_patiently(
    address: std::net::SocketAddr,
    token: &manta_transport::JoinToken,
) -> Result<manta_transport::NodeIdentity, manta_transport::JoinError> {
    use manta_transport::JoinError;
    let started = std::time::Instant::now();
    loop {
        match join_blocking(address, token, &TransportConfig::default()) {
            Err(error @ (JoinError::Timeout(_) | JoinError::Connect { .. }))
                if started.elapsed() < JOIN_PATIENCE =>
            {
                tracing::debug!(%error, %address, "not admitted yet; asking again");
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
            outcome => return outcome,
        }
    }
}

/// Joins the running cluster at `address` as a driver: registers a job (with how its workers
/// start: this binary, checked by its hash) and uses this host's node's raylet and store.
fn connect(config: &Config, address: &str, fingerprint: u64) -> Result<Cluster, InitError> {
    let failed = |reason: String| InitError::Cluster { address: address.to_owned(), reason };
    let local = local_node(config, address).map_err(failed)?;
    let identity = join_patiently(local.gcs, &local.token).map_err(|error| failed(error.to_string()))?;
    // In the scope of this host's node: its raylet and workers are reached over the local
    // channel, other nodes over QUIC.
    let transport = TransportConfig::cluster(Some(manta_raylet::local_scope(local.node_id)));
    // On the node's address: workers of other hosts reach this driver (its objects, its binary,
    // its workers' output) where they reach its node.
    let bind = std::net::SocketAddr::new(local.raylet.ip(), 0);
    let node = Node::start(manta_transport::Transport::builder(identity).bind(bind).config(transport))
        .map_err(|error| failed(format!("starting the transport: {error}")))?;
    let reader = StoreReader::open(&local.store_path)
        .map_err(|error| failed(format!("mapping the store: {error}")))?;
    let (binary_sha256, binary_len) = manta_raylet::binary::sha256_of(std::path::Path::new("/proc/self/exe"))
        .map_err(|error| failed(format!("hashing this program's binary: {error}")))?;
    let launch = manta_proto::gcs::wire::JobLaunch {
        binary_sha256,
        binary_len,
        driver_pid: std::process::id(),
        registry_fingerprint: fingerprint,
        env: vec![
            (env::INLINE_MAX.to_owned(), config.inline_bytes_max.to_string()),
            (env::NAMESPACE.to_owned(), config.namespace.clone()),
            (env::MAX_RETRIES.to_owned(), config.max_retries.to_string()),
            (env::TASKS_IN_FLIGHT.to_owned(), config.max_tasks_in_flight_per_worker.unwrap_or(0).to_string()),
        ],
        log_to_driver: config.log_to_driver,
        platform: manta_proto::gcs::wire::this_platform(),
    };
    let core_arbiter = start_arbiter("manta-core")?;
    let gcs: manta_actor::ServiceRef<manta_proto::gcs::Gcs> = node.service(local.gcs);
    let job = {
        let (gcs, driver) = (gcs.clone(), node.local_addr().to_string());
        run_on(&core_arbiter, async move {
            Ok::<_, InitError>(
                gcs.ask(AddJob { driver_address: driver, launch: Some(launch) }).await??.job_id,
            )
        })?
    };
    let services = (node.service(local.raylet), gcs, node.service(local.gcs), node.service(local.gcs));
    let store = StoreAccess::Remote(node.service(local.raylet), reader);
    let core = driver_core(config, node, services, (store, local.raylet), (core_arbiter, job, local.node_id));
    let _core = start_core(core)?;
    info!(%address, %job, "joined a running cluster");
    Ok(Cluster { _private: () })
}

/// The services a driver's core talks to: its raylet, the GCS, the actor manager and the
/// placement-group manager.
type Services = (
    ServiceRef<Raylet>,
    ServiceRef<Gcs>,
    ServiceRef<ActorManagerProtocol>,
    ServiceRef<manta_proto::placement::PlacementGroups>,
);

/// A driver's core worker on `node`, reaching the raylet, the GCS and the actor manager through
/// `services` and the node's store through `store`.
fn driver_core(
    config: &Config,
    node: Node,
    (raylet, gcs, actor_manager, placement_groups): Services,
    (store, store_at): (StoreAccess, std::net::SocketAddr),
    (arbiter, job, node_id): (ArbiterHandle, JobId, NodeId),
) -> CoreWorker {
    CoreWorker {
        owner_address: OwnerAddress(node.local_addr()),
        raylet,
        gcs,
        actor_manager,
        placement_groups,
        objects: ObjectTable::new(OwnerAddress(node.local_addr())),
        store,
        store_at,
        copies: Default::default(),
        arbiter,
        submitter: Submitter::new(config.max_tasks_in_flight_per_worker),
        actor_clients: Default::default(),
        job,
        namespace: config.namespace.clone(),
        inline_bytes_max: config.inline_bytes_max,
        max_retries: config.max_retries,
        worker_id: None,
        // From this process's own identity, not its node's: two drivers of one node never
        // make the same object id.
        id_prefix: id_prefix(&node.node_id()),
        node_id,
        next_id: AtomicU64::new(1),
        node,
    }
}

/// Whether this process was started by a raylet as a worker.
pub fn is_worker_process() -> bool {
    std::env::var_os(worker_env::WORKER_ID).is_some()
}

fn id_prefix(node_id: &NodeId) -> [u8; 12] {
    let mut prefix = [0u8; 12];
    prefix.copy_from_slice(&node_id.0[..12]);
    prefix
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

fn run_on<F>(arbiter: &ArbiterHandle, future: F) -> F::Output
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (sender, receiver) = std::sync::mpsc::sync_channel(1);
    arbiter.spawn(async move {
        let _ = sender.send(future.await);
    });
    receiver.recv().expect("a new arbiter runs its futures")
}

/// Installs the core worker and its `owner` service.
fn start_core(core: CoreWorker) -> Result<Arc<CoreWorker>, InitError> {
    let core = Arc::new(core);
    if DEFAULT.set(core.clone()).is_err() {
        return Err(InitError::AlreadyInitialized);
    }
    // The core arbiter works for this core (whatever the process's default).
    let entered = core.clone();
    core.arbiter.spawn(async move { enter(&entered) });
    let service = Arc::downgrade(&core);
    let owner =
        spawn(core.node.arbiter(), SpawnOptions::named(OWNER_NAME).max_restarts(u32::MAX), move || {
            OwnerService { core: service.clone() }
        });
    core.node
        .register(
            OWNER_NAME,
            Routes::new(owner)
                .message::<GetObject>()
                .message::<AddBorrower>()
                .message::<RemoveBorrower>()
                .message::<FreeObject>()
                .message::<CancelObject>()
                .message::<AwaitExit>()
                .message::<manta_proto::worker::StreamItem>()
                .message::<WorkerOutput>()
                .message::<AddObjectCopy>()
                .message::<SendBinary>(),
        )
        .map_err(InitError::Register)?;
    Ok(core)
}

/// The worker process's life: join, start the core worker, register, serve until the raylet
/// goes away, exit.
fn worker_main(fingerprint: u64) -> ! {
    install_panic_hook();
    let raylet_pid: Option<u32> = std::env::var(worker_env::RAYLET_PID).ok().and_then(|pid| pid.parse().ok());
    // This thread runs the core arbiter (a worker runs three threads: this one, the transport's,
    // and the one running its tasks or its actor; a node's thread limit is what caps its actors).
    let system = System::new();
    let core_arbiter = system.block_on(async { actix_rt::Arbiter::current() });
    // The raylet's death reaches this process as SIGTERM (`PR_SET_PDEATHSIG`, set when it was
    // started). Caught here, before any socket file exists, it ends the process through `exit`,
    // which removes them; uncaught, it would kill the process where it stands.
    let mut terminated = system
        .block_on(async { tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok() });
    let outcome = (|| -> Result<(), WorkerStartError> {
        let worker: u64 = parsed(worker_env::WORKER_ID)?;
        let raylet_address: std::net::SocketAddr = parsed(worker_env::RAYLET_ADDRESS)?;
        // On a node of a running cluster the worker joins at the GCS's admission, and talks to
        // the GCS there; in an embedded cluster all three are the raylet's address.
        let join_address: std::net::SocketAddr = if std::env::var_os(worker_env::JOIN_ADDRESS).is_some() {
            parsed(worker_env::JOIN_ADDRESS)?
        } else {
            raylet_address
        };
        let gcs_address: std::net::SocketAddr = if std::env::var_os(worker_env::GCS_ADDRESS).is_some() {
            parsed(worker_env::GCS_ADDRESS)?
        } else {
            raylet_address
        };
        let token = variable(worker_env::JOIN_TOKEN)?.parse()?;
        let job = JobId(parsed(env::JOB_ID)?);
        let inline_bytes_max = parsed(env::INLINE_MAX)?;
        let max_retries = parsed(env::MAX_RETRIES)?;
        let in_flight: usize = parsed(env::TASKS_IN_FLIGHT)?;
        let reader = StoreReader::open(std::path::Path::new(&variable(env::STORE_PATH)?))?;
        let identity = join_patiently(join_address, &token)?;
        let node_id = identity.node_id();
        // A worker of a running cluster's node (which names its scope), or of an embedded one.
        let transport = match std::env::var(worker_env::LOCAL_SCOPE) {
            Ok(scope) => TransportConfig::cluster(Some(scope)),
            Err(_) => TransportConfig::default(),
        };
        // On the raylet's address: other nodes' processes reach this worker where they reach
        // its node.
        let bind = std::net::SocketAddr::new(raylet_address.ip(), 0);
        let node = Node::start(manta_transport::Transport::builder(identity).bind(bind).config(transport))?;
        let core = CoreWorker {
            owner_address: OwnerAddress(node.local_addr()),
            raylet: node.service(raylet_address),
            gcs: node.service(gcs_address),
            actor_manager: node.service(gcs_address),
            placement_groups: node.service(gcs_address),
            objects: ObjectTable::new(OwnerAddress(node.local_addr())),
            store: StoreAccess::Remote(node.service(raylet_address), reader),
            store_at: raylet_address,
            copies: Default::default(),
            arbiter: core_arbiter,
            submitter: Submitter::new((in_flight > 0).then_some(in_flight)),
            actor_clients: Default::default(),
            job,
            namespace: variable(env::NAMESPACE)?,
            inline_bytes_max,
            max_retries,
            worker_id: Some(worker),
            id_prefix: id_prefix(&node_id),
            node_id: parsed(env::NODE_ID)?,
            next_id: AtomicU64::new(1),
            node,
        };
        let core = start_core(core)?;
        Executor::start(&core).map_err(InitError::from)?;
        let registration = RegisterWorker {
            worker,
            address: core.node.local_addr().to_string(),
            registry_fingerprint: fingerprint,
        };
        let raylet = core.raylet.clone();
        // From here on this thread runs the core arbiter's work, until the raylet is gone.
        system.block_on(async {
            let accepted = raylet.ask(registration).await.map_err(WorkerStartError::Register)?;
            if !accepted {
                return Err(WorkerStartError::Refused);
            }
            debug!(worker, pid = std::process::id(), "worker serving");
            match terminated.as_mut() {
                Some(terminated) => {
                    terminated.recv().await;
                }
                None => {
                    while !driver_gone(raylet_pid, std::time::Duration::ZERO) {
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                }
            }
            Ok(())
        })
    })();
    // Told to end (SIGTERM) while it started: the raylet killed it, or its driver died.
    let told_to_end = system.block_on(async {
        terminated
            .as_mut()
            .is_some_and(|terminated| futures_util::FutureExt::now_or_never(terminated.recv()).is_some())
    });
    match outcome {
        Ok(()) => std::process::exit(0),
        // The driver ended while this worker started (its store and sockets are gone with it),
        // or the raylet ended it: nothing to report to anyone, and the user's terminal is no
        // place for it.
        Err(_) if told_to_end || driver_gone(raylet_pid, std::time::Duration::from_millis(500)) => {
            std::process::exit(0)
        }
        Err(error) => {
            warn!(%error, "worker failed");
            eprintln!("manta worker {}: {error}", std::process::id());
            std::process::exit(1)
        }
    }
}

/// Prints a panic the way the standard hook does, but with a huge message cut (a task that
/// panics with a 200 MiB message must not write 200 MiB to the terminal at each retry).
fn install_panic_hook() {
    let standard = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied());
        match message {
            Some(message) if message.len() > crate::wire::MESSAGE_MAX => {
                let thread = std::thread::current();
                let location = info.location().map(|location| format!(" at {location}")).unwrap_or_default();
                let cut = crate::wire::truncate_message(message.to_owned());
                eprintln!("\nthread '{}' panicked{location}:\n{cut}", thread.name().unwrap_or("<unnamed>"));
            }
            _ => standard(info),
        }
    }));
}

/// Whether the raylet that started this worker is gone: this process has another parent now.
/// Waits up to `wait` for it, since a dying driver closes its sockets before its process ends.
fn driver_gone(raylet_pid: Option<u32>, wait: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + wait;
    loop {
        // SAFETY: getppid has no preconditions and cannot fail.
        let parent = unsafe { libc::getppid() } as u32;
        if raylet_pid.is_some_and(|raylet| raylet != parent) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_pool_follows_the_configured_cpus_not_the_machines() {
        let one = Config { num_cpus: 1, ..Config::default() };
        assert_eq!(pool_config(&one).workers_max, 2);
        let none = Config { num_cpus: 0, ..Config::default() };
        assert_eq!(pool_config(&none).workers_max, 2, "a node without CPUs still runs a worker");
        let set = Config { num_cpus: 1, max_workers: Some(7), ..Config::default() };
        assert_eq!(pool_config(&set).workers_max, 7);
    }
}
