//! The core worker's wire messages (ids 300-399): task pushes, actor calls, the owner's object
//! service, the store service for writers in other processes, and the actor manager.

use crate::gcs::wire::ActorInfo;
use crate::{wire_message, ActorId, ObjectId, OwnerAddress};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// An object id on the wire (the same type: ids travel as 20-byte `bin`s).
pub type WireId = ObjectId;

/// Where a sealed object is in the node's store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireLocation {
    /// Index slot.
    pub slot: u32,
    /// Slot generation.
    pub generation: u32,
}

/// Where a sealed object is in the cluster: which node's store, and where in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLocation {
    /// The node whose store holds it.
    pub node: crate::NodeId,
    /// That node's store service (its object manager), where a copy is pulled from.
    pub store: std::net::SocketAddr,
    /// Where in that store.
    pub at: WireLocation,
    /// The object's size in bytes (what a task that takes it as an argument weighs when it
    /// prefers the node holding most of its arguments).
    pub size: u64,
}

/// One resolved argument of a task or actor call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TaskArg {
    /// The encoded value, inline.
    Inline(ByteBuf),
    /// An object in a node's store (a large value, or a resolved ref): read in place on that
    /// node, pulled into the executing node's store first elsewhere.
    Shared {
        /// The object.
        id: WireId,
        /// Where it is.
        location: NodeLocation,
        /// Its owner, who learns of a copy pulled for the call (and deletes it with the object).
        owner: OwnerAddress,
    },
    /// A ref argument whose object failed: the call must not run.
    Failed(TaskError),
}

/// A task's or call's value.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ReturnValue {
    /// Inline (at most the inline limit).
    Inline(ByteBuf),
    /// Written into the executing node's store under the return id.
    Shared(NodeLocation),
}

/// What a task or actor call produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskOutput {
    /// The value.
    pub value: ReturnValue,
    /// Refs inside it; the worker holds one borrow on each for the caller.
    pub contains: Vec<RefWire>,
    /// How long the function itself ran, µs (the submitter pipelines short functions).
    #[serde(default)]
    pub run_us: u64,
    /// The returns past the first of a function with several, in order.
    #[serde(default)]
    pub more: Vec<ReturnPart>,
}

/// One return of a function with several.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReturnPart {
    /// The value.
    pub value: ReturnValue,
    /// Refs inside it, held for the caller as [`TaskOutput::contains`].
    pub contains: Vec<RefWire>,
}

/// A task or call ran but produced no value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{function} failed in worker pid {pid}: {message}")]
pub struct TaskFailure {
    /// The function's registered name.
    pub function: String,
    /// The worker's process id.
    pub pid: u32,
    /// What happened.
    pub message: String,
    /// The error value the function returned, when its type serialises.
    #[serde(default)]
    pub error: Option<Box<UserError>>,
}

impl TaskFailure {
    /// A failure whose message is cut to [`MESSAGE_MAX`] bytes (the head and the tail kept, the
    /// cut said in the middle), so that any message fits in a frame.
    pub fn new(function: String, pid: u32, message: String) -> Self {
        TaskFailure { function, pid, message: truncate_message(message), error: None }
    }
}

impl From<TaskFailure> for TaskError {
    fn from(TaskFailure { function, pid, message, error }: TaskFailure) -> Self {
        TaskError::Failed { function, pid, message, error }
    }
}

/// The value of a user's error type, as a function returning `Result<T, E>` gave it: `E`'s
/// type name and its MessagePack bytes (see [`TaskError::user_error`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserError {
    /// `std::any::type_name::<E>()` in the worker's binary (the same binary as the caller's).
    pub type_name: String,
    /// The value, MessagePack.
    pub value: ByteBuf,
}

impl UserError {
    /// The largest error value carried; a larger one keeps only its message.
    pub const MAX_BYTES: usize = MESSAGE_MAX;

    /// `error` as carried, or `None` when it does not serialise on its own (it holds an
    /// `ObjectRef`, say) or is larger than [`UserError::MAX_BYTES`].
    pub fn encode<E: Serialize>(error: &E) -> Option<Box<UserError>> {
        let value = rmp_serde::to_vec(error).ok().filter(|value| value.len() <= Self::MAX_BYTES)?;
        Some(Box::new(UserError {
            type_name: std::any::type_name::<E>().to_owned(),
            value: ByteBuf::from(value),
        }))
    }
}

/// The longest error or panic message carried whole; longer ones keep their first 48 KiB and
/// their last 16 KiB.
pub const MESSAGE_MAX: usize = 64 * 1024;

/// Cuts `message` to at most [`MESSAGE_MAX`] bytes plus a short note of what was cut, keeping
/// its head and its tail (on character boundaries).
pub fn truncate_message(message: String) -> String {
    if message.len() <= MESSAGE_MAX {
        return message;
    }
    let mut head = MESSAGE_MAX * 3 / 4;
    while !message.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = message.len() - MESSAGE_MAX / 4;
    while !message.is_char_boundary(tail) {
        tail += 1;
    }
    let cut = tail - head;
    format!("{} [... {cut} bytes cut of {} ...] {}", &message[..head], message.len(), &message[tail..])
}

/// Runs the registered function `function` on `args` (sent to a leased worker's executor).
#[derive(Debug, Serialize, Deserialize)]
pub struct PushTask {
    /// The function's registered name.
    pub function: String,
    /// Its arguments, in order.
    pub args: Vec<TaskArg>,
    /// The id a large return value is stored under; a function with several returns stores its
    /// return `i` under `return_id.following(i)`.
    pub return_id: WireId,
    /// Returns past the first (`num_returns - 1`).
    #[serde(default)]
    pub more_returns: u32,
    /// The submitter, which owns the returns: refs inside them are borrowed for it.
    pub owner: OwnerAddress,
    /// CPUs its lease holds (what the task sees as assigned).
    #[serde(default)]
    pub cpus: f64,
    /// GPUs its lease holds.
    #[serde(default)]
    pub gpus: f64,
    /// Custom resources its lease holds.
    #[serde(default)]
    pub custom: Vec<(String, f64)>,
    /// The placement group whose bundles the tasks and actors it creates go in, unless they
    /// say otherwise (`capture_child_tasks`).
    #[serde(default)]
    pub capture_group: Option<crate::PlacementGroupId>,
}
wire_message!(PushTask => Result<TaskOutput, TaskFailure>, id = 300);

/// Asks an owner for an object's value; answered once it is ready.
#[derive(Debug, Serialize, Deserialize)]
pub struct GetObject {
    /// The object.
    pub id: WireId,
}
wire_message!(GetObject => ObjectReply, id = 301, parks);

/// An owner's answer to [`GetObject`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ObjectReply {
    /// The encoded value.
    Inline(ByteBuf),
    /// In a node's store (pulled into the reader's node's store when it is another's).
    Shared(NodeLocation),
    /// Its task failed.
    Failed(TaskError),
    /// The owner does not have it (freed).
    Unknown,
}

/// Registers one borrow of an owned object; replies whether the object still exists.
#[derive(Debug, Serialize, Deserialize)]
pub struct AddBorrower {
    /// The object.
    pub id: WireId,
    /// The process the borrow is held for (the borrower itself, or the owner of an object that
    /// contains the ref): when it dies, the owner releases the borrow.
    pub holder: OwnerAddress,
}
wire_message!(AddBorrower => bool, id = 302);

/// Releases one borrow.
#[derive(Debug, Serialize, Deserialize)]
pub struct RemoveBorrower {
    /// The object.
    pub id: WireId,
    /// The process the borrow was held for.
    pub holder: OwnerAddress,
}
wire_message!(RemoveBorrower => (), id = 303);

/// One value a streaming task yielded, sent to the task's owner (its caller) as it is made;
/// answered `true` to go on (at once, or once the consumer has room: backpressure) or `false`
/// when nobody reads the stream any more. The value's id is `task.following(1 + index)`.
#[derive(Debug, Serialize, Deserialize)]
pub struct StreamItem {
    /// The streaming task (its own return's id).
    pub task: ObjectId,
    /// The value's place in the stream, from 0 (a retried task sends again from 0).
    pub index: u64,
    /// The value.
    pub part: ReturnPart,
}
wire_message!(StreamItem => bool, id = 312, parks);

/// Lines a worker of the driver's job printed, forwarded by its node to the driver, which
/// prints them on its stderr with their origin (Ray's `log_to_driver`).
#[derive(Debug, Serialize, Deserialize)]
pub struct WorkerOutput {
    /// The worker's node.
    pub node_id: crate::NodeId,
    /// The worker's process id.
    pub pid: u32,
    /// From its stderr (else its stdout).
    pub stderr: bool,
    /// What the worker ran when it printed them: a task's function or an actor's class (short
    /// name), empty before its first task.
    pub origin: String,
    /// The lines, without their line ends.
    pub lines: Vec<String>,
}
wire_message!(WorkerOutput => (), id = 313);

/// The start of a line a worker whose output is piped to its raylet writes when what it runs
/// changes (Ray's `:task_name:` lines): the rest of the line names the task's function or the
/// actor's class. The raylet takes such lines as the origin of the lines after them, and
/// forwards no such line.
pub const OUTPUT_ORIGIN_MARK: &str = "\u{1e}manta-origin:";

/// An owner's watch on a process that holds borrows of its objects: answered after a while
/// (the owner asks again while the process still holds a borrow); the ask fails when the
/// process dies, and the owner then releases every borrow held for it (Ray's
/// `WaitForRefRemoved` long poll).
#[derive(Debug, Serialize, Deserialize)]
pub struct AwaitExit;
wire_message!(AwaitExit => (), id = 309, parks);

/// Why the store refused an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreRefusal {
    /// Not enough room.
    Full {
        /// Bytes asked for.
        requested: u64,
        /// Bytes free.
        free: u64,
        /// The largest free block.
        largest_free: u64,
        /// The store's size.
        capacity: u64,
    },
    /// Anything else.
    Other(String),
}

/// A process other than the store's asks for room for an object it will write in place.
#[derive(Debug, Serialize, Deserialize)]
pub struct CreateStoreObject {
    /// The object.
    pub id: WireId,
    /// Its size.
    pub len: u64,
}
wire_message!(CreateStoreObject => Result<WireLocation, StoreRefusal>, id = 304);

/// The writer is done: seal the object.
#[derive(Debug, Serialize, Deserialize)]
pub struct SealStoreObject {
    /// The object.
    pub id: WireId,
}
wire_message!(SealStoreObject => Result<WireLocation, StoreRefusal>, id = 305);

/// The object's owner freed it.
#[derive(Debug, Serialize, Deserialize)]
pub struct DeleteStoreObject {
    /// The object.
    pub id: WireId,
}
wire_message!(DeleteStoreObject => (), id = 306);

/// Asks this node's object manager for a copy of an object another node's store holds:
/// answered with its location in this node's store once it is there (pulls of one object are
/// merged, and an object already here is answered at once).
#[derive(Debug, Serialize, Deserialize)]
pub struct PullObject {
    /// The object.
    pub id: WireId,
    /// Where a copy is.
    pub from: NodeLocation,
    /// Its owner, told of the new copy (which it deletes with the object).
    pub owner: OwnerAddress,
}
wire_message!(PullObject => Result<WireLocation, PullError>, id = 314, parks);

/// Why a pull failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum PullError {
    /// The holder no longer has it (freed, or its node's store lost it).
    #[error("node {node} no longer holds it")]
    Gone {
        /// The holder.
        node: crate::NodeId,
    },
    /// This node's store has no room for it.
    #[error("this node's store has no room: {0:?}")]
    NoRoom(StoreRefusal),
    /// The holder could not be reached, or the transfer broke.
    #[error("the transfer from node {node} failed: {reason}")]
    Transfer {
        /// The holder.
        node: crate::NodeId,
        /// What happened.
        reason: String,
    },
}

/// Asks the object manager holding an object to send it to the node at `to` (sent by the
/// puller's object manager): the bytes go over a bulk stream of their own, straight into the
/// puller's store, and the answer is the copy's location there.
#[derive(Debug, Serialize, Deserialize)]
pub struct SendObject {
    /// The object.
    pub id: WireId,
    /// Where it is in this node's store.
    pub at: WireLocation,
    /// The puller's object manager.
    pub to: std::net::SocketAddr,
}
wire_message!(SendObject => Result<WireLocation, PullError>, id = 315);

/// The metadata of a bulk transfer of an object's bytes into a store (what the body is).
#[derive(Debug, Serialize, Deserialize)]
pub struct ObjectTransfer {
    /// The object.
    pub id: WireId,
}
wire_message!(ObjectTransfer => Result<WireLocation, StoreRefusal>, id = 316);

/// Asks a driver for its binary (sent by a raylet that must start the job's workers and has no
/// copy): the driver writes it over a bulk stream ([`BinaryTransfer`]) to the raylet at `to`,
/// and answers once the raylet has checked and kept it.
#[derive(Debug, Serialize, Deserialize)]
pub struct SendBinary {
    /// The binary's SHA-256, hex (the job's).
    pub sha256: String,
    /// The raylet's transport address.
    pub to: std::net::SocketAddr,
}
wire_message!(SendBinary => Result<(), String>, id = 319);

/// The metadata of a bulk transfer of a driver's binary to a raylet; the answer says whether
/// the bytes had the announced hash and were kept.
#[derive(Debug, Serialize, Deserialize)]
pub struct BinaryTransfer {
    /// The binary's SHA-256, hex.
    pub sha256: String,
}
wire_message!(BinaryTransfer => Result<(), String>, id = 320);

/// Asks a node's store service for its figures.
#[derive(Debug, Serialize, Deserialize)]
pub struct GetStoreStats;
wire_message!(GetStoreStats => StoreFigures, id = 318);

/// A node's store figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreFigures {
    /// Bytes in use (objects, and deleted ones a reader still holds).
    pub used_bytes: u64,
    /// The store's size.
    pub capacity: u64,
    /// Objects stored.
    pub objects: u64,
    /// Bytes of shared memory the store holds now.
    pub resident_bytes: u64,
    /// Secondary copies evicted to make room so far.
    #[serde(default)]
    pub evicted: u64,
}

/// Tells an object's owner that a node's store now holds a copy (a pull); answered `false` when
/// the owner no longer has the object, and the copy is then deleted.
#[derive(Debug, Serialize, Deserialize)]
pub struct AddObjectCopy {
    /// The object.
    pub id: WireId,
    /// The copy.
    pub copy: NodeLocation,
}
wire_message!(AddObjectCopy => bool, id = 317);

/// Starts an actor in a leased worker: constructs it from `args`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartActor {
    /// The actor.
    pub actor_id: ActorId,
    /// Its class's registered name.
    pub class: String,
    /// Constructor arguments.
    pub args: Vec<TaskArg>,
    /// Calls running at once at most (in the default concurrency group).
    pub max_concurrency: u32,
    /// Named concurrency groups and how many calls each runs at once.
    #[serde(default)]
    pub concurrency_groups: Vec<(String, u32)>,
    /// What the actor holds for its life (name, amount).
    #[serde(default)]
    pub resources: Vec<(String, f64)>,
    /// The placement group its methods' children go in (`capture_child_tasks`).
    #[serde(default)]
    pub capture_group: Option<crate::PlacementGroupId>,
}
wire_message!(StartActor => Result<(), TaskFailure>, id = 310);

/// Calls a method of an actor hosted by this worker.
#[derive(Debug, Serialize, Deserialize)]
pub struct ActorCall {
    /// The actor.
    pub actor_id: ActorId,
    /// The method's name.
    pub method: String,
    /// Its arguments.
    pub args: Vec<TaskArg>,
    /// The calling process's id for this actor (calls are ordered per caller).
    pub caller: u64,
    /// The call's number from this caller to this incarnation, from 0.
    pub seq: u64,
    /// The id a large return value is stored under (return `i` of several under
    /// `return_id.following(i)`).
    pub return_id: WireId,
    /// Returns past the first (`num_returns - 1`).
    #[serde(default)]
    pub more_returns: u32,
    /// The caller, which owns the returns (refs inside them are borrowed for it): sent with a
    /// caller's first call to an incarnation (`seq` 0), which the actor runs first.
    #[serde(default)]
    pub owner: Option<OwnerAddress>,
}
wire_message!(ActorCall => Result<TaskOutput, TaskFailure>, id = 311);

/// What a new actor needs: sent to the actor manager.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActorSpec {
    /// Where it should run.
    #[serde(default)]
    pub scheduling_strategy: crate::raylet::SchedulingStrategy,
    /// The record to register (state and counters are set by the GCS).
    pub info: ActorInfo,
    /// Constructor arguments, resolved.
    pub args: Vec<TaskArg>,
    /// CPUs held for the actor's life.
    pub num_cpus: f64,
    /// GPUs held for the actor's life.
    pub num_gpus: f64,
    /// Custom resources held.
    pub resources: Vec<(String, f64)>,
    /// CPUs that must be free to place it (1 when no resource was given, as in Ray).
    #[serde(default)]
    pub placement_cpus: f64,
    /// Calls running at once at most (in the default concurrency group).
    pub max_concurrency: u32,
    /// Named concurrency groups and how many calls each runs at once.
    #[serde(default)]
    pub concurrency_groups: Vec<(String, u32)>,
    /// The placement group its methods' children go in (`capture_child_tasks`).
    #[serde(default)]
    pub capture_group: Option<crate::PlacementGroupId>,
}

/// Creates an actor: registers it (claiming its name) and starts it in the background.
#[derive(Debug, Serialize, Deserialize)]
pub struct CreateActor(pub ActorSpec);
wire_message!(CreateActor => Result<(), CreateActorError>, id = 320);

/// Why the actor manager did not create an actor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CreateActorError {
    /// The GCS refused to register it (its name is taken, a bad name, a duplicate id).
    #[error(transparent)]
    Refused(#[from] crate::gcs::GcsError),
    /// The GCS could not be reached.
    #[error("the GCS could not be reached: {0}")]
    GcsUnreachable(String),
}

/// Answers with the actor's record once incarnation `known` is over: the actor is dead, or
/// restarting or alive under a later restart count (`None`: once it is alive or dead at all), so
/// callers learn of restarts and deaths at once.
#[derive(Debug, Serialize, Deserialize)]
pub struct WatchActor {
    /// The actor.
    pub actor_id: ActorId,
    /// The restart count of the incarnation the caller uses.
    pub known: Option<u64>,
}
wire_message!(WatchActor => Option<ActorInfo>, id = 321, parks);

/// Kills an actor (`manta::kill`): no restart.
#[derive(Debug, Serialize, Deserialize)]
pub struct KillActor {
    /// The actor.
    pub actor_id: ActorId,
    /// Why (for its death cause).
    pub cause: String,
}
wire_message!(KillActor => bool, id = 322);

/// Why an object has no value: its task or actor call failed, or it cannot be had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum TaskError {
    /// The function panicked or returned `Err`, or its arguments or output did not
    /// (de)serialise, or it is not registered in the worker's binary.
    #[error("task {function} failed in worker pid {pid}: {message}")]
    Failed {
        /// The function's (or `Class.method`'s) registered name.
        function: String,
        /// The worker's process id.
        pid: u32,
        /// The panic message, the `Err`'s `Display`, or the codec error.
        message: String,
        /// The `Err` value itself when the function returned one of a type that serialises:
        /// read it back with [`TaskError::user_error`].
        error: Option<Box<UserError>>,
    },
    /// The worker running it died, and retries (`max_retries`) ran out.
    #[error("task {function}: worker pid {pid} died ({exit}) after {attempts} attempts")]
    WorkerDied {
        /// The function's registered name.
        function: String,
        /// The last worker's process id.
        pid: u32,
        /// How it ended (exit code or signal), when known.
        exit: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The node of the worker running it died (or could not be reached any more), and retries
    /// (`max_retries`) ran out (Ray's `NodeDiedError`).
    #[error("task {function}: its node {node} died ({reason}) after {attempts} attempts; its worker was pid {pid}")]
    NodeDied {
        /// The function's registered name.
        function: String,
        /// The node's id.
        node: String,
        /// The last worker's process id.
        pid: u32,
        /// What was seen of the death.
        reason: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The actor is dead (killed, or its worker died with no restarts or retries left).
    #[error("actor {actor} died: {cause}")]
    ActorDied {
        /// The actor's class and id.
        actor: String,
        /// Why.
        cause: String,
    },
    /// The task did not run: its argument `index` is an object whose own task failed (Ray's
    /// `RayTaskError` chain). [`TaskError::root_cause`] reaches the first failure.
    #[error("task {function} did not run: its argument {index} failed: {cause}")]
    ArgumentFailed {
        /// This task's function (or actor method).
        function: String,
        /// Which argument.
        index: usize,
        /// How the argument's task failed.
        cause: Box<TaskError>,
    },
    /// The task was cancelled with [`cancel`](crate::cancel).
    #[error("task {function} was cancelled")]
    Cancelled {
        /// The function's registered name.
        function: String,
    },
    /// No node of the cluster can ever provide what the task needs.
    #[error("task {function} is infeasible: no node has {demand}")]
    Infeasible {
        /// The function's registered name.
        function: String,
        /// What it asked for.
        demand: String,
    },
    /// No worker process could be started to run it: the raylet's last tries ended before
    /// the worker registered (the binary cannot be run, or it exits at once).
    #[error("task {function}: no worker could be started ({exit})")]
    WorkerStartFailed {
        /// The function's registered name.
        function: String,
        /// How the last worker process ended.
        exit: String,
    },
    /// The object cannot be had: its owner freed it or died.
    #[error("object {object} is lost: {reason}")]
    ObjectLost {
        /// The object's id.
        object: String,
        /// Why.
        reason: String,
    },
    /// The object was freed with `manta::free` while refs to it remained.
    #[error("object {object} was freed (manta::free)")]
    ObjectFreed {
        /// The object's id.
        object: String,
    },
    /// The object store has no room for the object (spilling comes later).
    #[error(
        "object store full: {requested} bytes requested, {free} free ({largest_free} in the largest block) of {capacity}"
    )]
    ObjectStoreFull {
        /// Bytes asked for.
        requested: u64,
        /// Bytes free in all.
        free: u64,
        /// The largest object that would fit now.
        largest_free: u64,
        /// The store's size.
        capacity: u64,
    },
    /// A service of the cluster (the raylet, the GCS, the actor manager, another node) could
    /// not be reached, or answered out of protocol.
    #[error("{function}: {service} could not be reached: {reason}")]
    Unreachable {
        /// The function or operation.
        function: String,
        /// The service.
        service: String,
        /// Why.
        reason: String,
    },
    /// The request itself is invalid (an argument out of range, a bad resource amount).
    #[error("{function}: invalid request: {reason}")]
    Invalid {
        /// The function or operation.
        function: String,
        /// Why.
        reason: String,
    },
    /// The object store failed otherwise than by being full (see [`TaskError::ObjectStoreFull`]).
    #[error("object store: {reason}")]
    ObjectStore {
        /// Why.
        reason: String,
    },
    /// A timed `get` or `wait` gave up.
    #[error("no result within {0:?}")]
    Timeout(Duration),
    /// The value could not be encoded (`put`).
    #[error("the value does not encode: {reason}")]
    Encode {
        /// Why.
        reason: String,
    },
    /// The value did not decode as the type asked for.
    #[error("the result does not decode as {type_name}: {reason}")]
    Decode {
        /// The type asked for.
        type_name: String,
        /// Why.
        reason: String,
    },
    /// `manta::init` was not called in this process.
    #[error("manta::init() was not called in this process")]
    NotInitialized,
}

impl TaskError {
    /// The error value of type `E` that the failed function returned, as the function gave it
    /// (through a chain of [`TaskError::ArgumentFailed`] too): `None` when the failure is not
    /// an `Err` of type `E` (a panic, a lost worker, another error type), or when `E` did not
    /// serialise on its own or was larger than [`UserError::MAX_BYTES`] (its `Display` text is
    /// in `message` either way).
    ///
    /// ```ignore
    /// match parse::remote("x".into()).get() {
    ///     Err(error) => assert_eq!(error.user_error::<ParseError>(), Some(ParseError::NotANumber)),
    ///     Ok(_) => unreachable!(),
    /// }
    /// ```
    pub fn user_error<E: serde::de::DeserializeOwned>(&self) -> Option<E> {
        let carried = self.carried_error()?;
        if carried.type_name != std::any::type_name::<E>() {
            return None;
        }
        rmp_serde::from_slice(&carried.value).ok()
    }

    /// The type name of the error value the failed function returned, when it was carried.
    pub fn user_error_type(&self) -> Option<&str> {
        self.carried_error().map(|carried| carried.type_name.as_str())
    }

    fn carried_error(&self) -> Option<&UserError> {
        match self.root_cause() {
            TaskError::Failed { error: Some(error), .. } => Some(error),
            _ => None,
        }
    }

    /// The failure a chain of [`TaskError::ArgumentFailed`] started from (itself otherwise).
    pub fn root_cause(&self) -> &TaskError {
        let mut error = self;
        while let TaskError::ArgumentFailed { cause, .. } = error {
            error = cause;
        }
        error
    }

    /// `function` could not reach `service`.
    pub fn unreachable(
        function: impl Into<String>,
        service: impl Into<String>,
        reason: impl std::fmt::Display,
    ) -> Self {
        TaskError::Unreachable {
            function: function.into(),
            service: service.into(),
            reason: reason.to_string(),
        }
    }
}

/// How a ref travels: the object's id and its owner's address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RefWire {
    /// The object.
    pub id: ObjectId,
    /// The owner's transport address, parsed where it entered.
    pub owner: OwnerAddress,
}

crate::service::protocol!(
    /// A process's owner service (`process/owner`): the objects it owns.
    Owner = "owner": GetObject, AddBorrower, RemoveBorrower, FreeObject, CancelObject, AwaitExit, StreamItem,
    WorkerOutput, AddObjectCopy, SendBinary,
);

/// Asks an object's owner to cancel the task that makes it (`manta::cancel` of a borrowed ref);
/// answered with whether it was cancelled.
#[derive(Debug, Serialize, Deserialize)]
pub struct CancelObject {
    /// The object (any return of the task).
    pub id: ObjectId,
    /// Kill the task's worker if it runs.
    pub force: bool,
    /// Cancel the tasks it submitted too.
    pub recursive: bool,
}
wire_message!(CancelObject => bool, id = 308);

/// Asks an object's owner to free it now (`manta::free` of a borrowed ref).
#[derive(Debug, Serialize, Deserialize)]
pub struct FreeObject {
    /// The object.
    pub id: ObjectId,
}
wire_message!(FreeObject => (), id = 307);

crate::service::protocol!(
    /// A node's object store service and object manager (`node/store`): writers in other
    /// processes, deletions, and pulls between nodes.
    Store = "store": CreateStoreObject, SealStoreObject, DeleteStoreObject, PullObject, SendObject,
    GetStoreStats,
);

crate::service::protocol!(
    /// The actor manager, beside the GCS (`head/actor-manager`).
    ActorManager = "actor-manager": CreateActor, WatchActor, KillActor,
);

crate::service::protocol!(
    /// A worker's executor (`worker/executor`): tasks and actor calls.
    Executor = "executor": PushTask, StartActor, ActorCall, MayExit, CancelTask,
);

/// The caller cancelled this worker's running task (`manta::cancel` without force): the task
/// may stop early (`manta::is_cancelled()`); its result is discarded.
#[derive(Debug, Serialize, Deserialize)]
pub struct CancelTask {
    /// The task (the id its result goes to).
    pub return_id: WireId,
    /// Cancel the tasks it submitted too (Ray's `recursive`, its default).
    #[serde(default = "yes")]
    pub recursive: bool,
}

fn yes() -> bool {
    true
}
wire_message!(CancelTask => (), id = 331);

/// The raylet would end this idle worker: may it? `false` while it owns objects something still
/// references (Ray: an owner is not reaped, or its objects would be lost with it).
#[derive(Debug, Serialize, Deserialize)]
pub struct MayExit;
wire_message!(MayExit => bool, id = 330);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_message_keeps_its_head_and_tail_and_says_what_was_cut() {
        let short = "short".to_owned();
        assert_eq!(truncate_message(short.clone()), short);
        let long = format!("HEAD{}TAIL", "é".repeat(MESSAGE_MAX));
        let cut = truncate_message(long.clone());
        assert!(cut.len() < MESSAGE_MAX + 100);
        assert!(cut.starts_with("HEAD") && cut.ends_with("TAIL"));
        assert!(
            cut.contains(&format!("bytes cut of {}", long.len())),
            "{}",
            &cut[MESSAGE_MAX * 3 / 4 - 10..][..80]
        );
    }

    #[test]
    fn a_user_error_is_read_back_only_as_its_own_type_and_only_when_it_fits() {
        let failed = |error| TaskError::Failed { function: "f".into(), pid: 1, message: "m".into(), error };
        let carried = failed(UserError::encode(&("quota".to_owned(), 7u32)));
        assert_eq!(carried.user_error::<(String, u32)>(), Some(("quota".to_owned(), 7)));
        assert_eq!(carried.user_error::<(String, u64)>(), None, "another type, however close");
        let chained = TaskError::ArgumentFailed { function: "g".into(), index: 0, cause: Box::new(carried) };
        assert_eq!(chained.user_error::<(String, u32)>(), Some(("quota".to_owned(), 7)));
        assert!(UserError::encode(&vec![0u8; UserError::MAX_BYTES + 1]).is_none());
        assert_eq!(failed(None).user_error_type(), None);
        // A failure from a worker of an older build (no `error` field) still decodes.
        #[derive(Serialize)]
        struct Old {
            function: String,
            pid: u32,
            message: String,
        }
        let old =
            rmp_serde::to_vec_named(&Old { function: "f".into(), pid: 1, message: "m".into() }).unwrap();
        assert_eq!(rmp_serde::from_slice::<TaskFailure>(&old).unwrap().error, None);
    }
}
