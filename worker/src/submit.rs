//! Task submission, the shell: arguments resolved, then Ray's lease protocol with lease reuse,
//! decided by the sans-IO [`SubmitterCore`](state::SubmitterCore) and performed here.
//!
//! A submitted task first resolves its arguments (top-level refs wait for their values; large
//! values go to the object store), then joins the queue of its *shape* (its function and the
//! resources it needs: Ray's scheduling class). Each shape keeps as many lease requests waiting
//! at the raylet as it has queued tasks, at most [`LEASE_REQUESTS_MAX`]; a granted worker runs
//! queued tasks of that shape one after another, pushed straight to it, and the lease goes back
//! when the queue is empty. The raylet is on the path once per lease, not once per task. A
//! function whose tasks run for under a millisecond gets up to [`PIPELINE`] of them pushed to a
//! worker at once (only while more tasks are queued than leases are coming), hiding the round
//! trip between them. The task lifecycle is drawn in `submit/state.rs`.
//!
//! The core's commands run on the core arbiter: lease requests and pushes become asks whose
//! answers go back into the core; a lease's worker death comes from the raylet (`WatchLease`),
//! which sees the process exit at once, where a connection would only time out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::{BoxFuture, Shared};
use futures_util::FutureExt;
use manta_actor::{ActorAddress, ActorRef, AskError, ServiceRef};
use manta_objectstore::ObjectId;
use manta_proto::raylet::Raylet;
use manta_proto::{NodeId, OwnerAddress};
use manta_raylet::requests::{LeaseOutcome, RequestLease, ReturnLease, WatchLease};
use manta_raylet::SchedulingStrategy;
use parking_lot::Mutex;
use serde_bytes::ByteBuf;
use tracing::debug;

use crate::codec::{CodecError, Encoded};
use crate::core::{self, CoreWorker};
use crate::error::TaskError;
use crate::executor::{Executor, EXECUTOR_NAME};
use crate::objects::{RawRef, State, Value};
use crate::wire::{CancelObject, PushTask, ReturnValue, TaskArg, TaskFailure, TaskOutput};

pub mod state;

use state::{
    Command, Ending, Failure, LeaseAnswer, Refusal, RequestId, Shape, SubmitterConfig, SubmitterCore,
};

/// The most tasks a leased worker may be given ahead of their turn (`Config::
/// max_tasks_in_flight_per_worker` is capped by it); the adaptive default uses it for short tasks.
pub const PIPELINE: usize = 8;

/// How long a lease with nothing to run waits for the next task of its shape before it goes back.
const LEASE_LINGER: Duration = Duration::from_millis(2);

/// A function whose recent tasks ran for less than this (on average) is pipelined.
const SHORT_TASK: Duration = Duration::from_millis(1);

/// Lease requests in flight per shape at most (Ray's `max_pending_lease_requests_per_scheduling_category`).
pub const LEASE_REQUESTS_MAX: usize = 10;

/// How long a call whose connection broke waits for the raylet's or the actor manager's word
/// on how its worker died (the raylet sees a worker exit within milliseconds).
pub(crate) const DEATH_VERDICT_WAIT: Duration = Duration::from_secs(30);

/// Per-call options of a remote function (`f::options()...`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskOptions {
    /// CPUs the task needs (default 1).
    pub num_cpus: Option<f64>,
    /// GPUs the task needs (default 0).
    pub num_gpus: Option<f64>,
    /// Custom resources it needs.
    pub resources: Vec<(String, f64)>,
    /// Retries if its worker dies (default: the cluster's, 3).
    pub max_retries: Option<u32>,
    /// Where it should run (default: Ray's hybrid policy).
    pub scheduling_strategy: SchedulingStrategy,
    /// A streaming task: how many values may wait, made and not yet taken by the consumer,
    /// before the task pauses (Ray's `_generator_backpressure_num_objects`; default: no limit).
    pub generator_backpressure: Option<u64>,
    /// Runs in a placement group's bundle, on its resources only.
    pub placement_group: Option<crate::placement::InGroup>,
}

/// One argument as the caller gave it (made by [`arg`]).
#[derive(Debug)]
pub struct ArgSpec(ArgKind);

#[derive(Debug)]
enum ArgKind {
    /// An encoded value, and handles on the refs inside it, taken while the caller's value
    /// still held them.
    Value(Result<(Box<Encoded>, Vec<RawRef>), CodecError>),
    /// A ref passed at the top level.
    Ref(RawRef),
}

/// What the generated code calls to turn an argument into an [`ArgSpec`].
pub fn arg<T: serde::Serialize, A: crate::IntoArg<T>>(argument: A) -> ArgSpec {
    match argument.into_arg() {
        crate::Arg::Value(value) => ArgSpec(ArgKind::Value(crate::codec::encode(&value).map(|encoded| {
            let holds = match core::try_current() {
                Some(core) => encoded.refs.iter().map(|wire| core.adopt(wire)).collect(),
                None => Vec::new(),
            };
            (Box::new(encoded), holds)
        }))),
        crate::Arg::Ref(reference) => ArgSpec(ArgKind::Ref(reference.raw)),
    }
}

/// What a worker's reply to a push carries.
type Reply = Result<TaskOutput, TaskFailure>;

/// A task's function (for its errors) and, once resolved, its arguments and the refs they hold
/// (alive until the task completes).
struct Payload {
    function: &'static str,
    args: Vec<TaskArg>,
    _holds: Vec<RawRef>,
    /// What its lease holds: CPUs, GPUs, custom resources (told to the task).
    assigned: (f64, f64, Vec<(String, f64)>),
    /// How many values it returns (`num_returns`).
    returns: u32,
    /// The placement group its children go in (`capture_child_tasks`).
    capture: Option<manta_proto::PlacementGroupId>,
}

/// How pushes reach a leased worker, and how its death is learnt.
struct LeaseLink {
    executor: ActorRef<Executor>,
    /// The raylet that granted the lease (this node's, or the one a spillback named).
    raylet: ServiceRef<Raylet>,
    /// Resolves with the worker's exit when it died; with `None` when the lease ended otherwise
    /// (a push still waiting then fails as on a killed worker: only a kill ends a busy lease).
    death: Death,
}

type Death = Shared<BoxFuture<'static, Option<Ending>>>;

/// The core and what the shell keeps beside it, under one lock: each event takes it once, and
/// turns the core's commands into [`Effect`]s performed after it is released.
struct Inner {
    core: SubmitterCore<Reply>,
    payloads: HashMap<ObjectId, Payload>,
    links: HashMap<RequestId, LeaseLink>,
    /// Other nodes' raylets, as spillbacks named them.
    raylets: HashMap<NodeId, std::net::SocketAddr>,
    /// The core's next timeout a wake-up is armed for.
    timer: Option<Duration>,
}

/// Another node's raylet that a lease request goes to.
#[derive(Debug, Clone, Copy)]
struct RemoteRaylet {
    node: NodeId,
    address: std::net::SocketAddr,
    /// A raylet spilled the request back there (else the task's arguments are there).
    spilled: bool,
}

/// What the shell does outside the lock for a command of the core.
enum Effect {
    /// Ask for a lease: this node's raylet (`None`), or another node's.
    Ask {
        request: RequestId,
        shape: Shape,
        raylet: Option<RemoteRaylet>,
        /// The task's arguments' bytes by node, for the raylet's policy.
        arguments: Vec<(NodeId, u64)>,
    },
    Push {
        request: RequestId,
        message: PushTask,
        executor: ActorRef<Executor>,
        death: Death,
    },
    Return {
        lease: u64,
        reusable: bool,
        raylet: ServiceRef<Raylet>,
    },
    Complete {
        task: ObjectId,
        result: Result<TaskOutput, TaskError>,
        _payload: Option<Payload>,
    },
    Discard {
        task: ObjectId,
        output: TaskOutput,
    },
    Interrupt {
        executor: ActorRef<Executor>,
        task: ObjectId,
        recursive: bool,
    },
    WakeAt(Duration),
}

impl Inner {
    /// Turns the core's commands into effects (answering at once what needs no I/O), and arms
    /// the wake-up for the core's next timeout.
    fn effects(&mut self, now: Duration, owner: OwnerAddress) -> Vec<Effect> {
        let mut effects = Vec::new();
        loop {
            let commands: Vec<Command<Reply>> = self.core.poll_commands().collect();
            if commands.is_empty() {
                break;
            }
            for command in commands {
                match command {
                    Command::RequestLease { request, shape, node: Some(node), spilled, arguments } => {
                        // Spilled back to another node, or asked where the task's arguments
                        // are: ask its raylet, whose address came with the spillback or with
                        // the arguments' locations.
                        match self.raylets.get(&node) {
                            Some(&address) => effects.push(Effect::Ask {
                                request,
                                shape,
                                raylet: Some(RemoteRaylet { node, address, spilled }),
                                arguments,
                            }),
                            None => {
                                let refusal = Refusal::Unreachable {
                                    target: format!("node {node}"),
                                    reason: "it was spilled back there with no address".to_owned(),
                                };
                                self.core.lease_answered(now, request, LeaseAnswer::Refused(refusal));
                            }
                        }
                    }
                    Command::RequestLease { request, shape, node: None, arguments, .. } => {
                        effects.push(Effect::Ask { request, shape, raylet: None, arguments })
                    }
                    Command::Push { request, task, .. } => {
                        let message = self.payloads.get(&task).map(|payload| PushTask {
                            function: payload.function.to_owned(),
                            args: payload.args.clone(),
                            return_id: task,
                            more_returns: payload.returns - 1,
                            owner,
                            cpus: payload.assigned.0,
                            gpus: payload.assigned.1,
                            custom: payload.assigned.2.clone(),
                            capture_group: payload.capture,
                        });
                        match (message, self.links.get(&request)) {
                            (Some(message), Some(link)) => effects.push(Effect::Push {
                                request,
                                message,
                                executor: link.executor.clone(),
                                death: link.death.clone(),
                            }),
                            // The lease ended before the push could start.
                            _ => self.core.worker_died(
                                now,
                                request,
                                &Ending::worker("its lease ended before the task was pushed"),
                            ),
                        }
                    }
                    Command::ReturnLease { request, lease, reusable, .. } => {
                        if let Some(link) = self.links.remove(&request) {
                            effects.push(Effect::Return { lease, reusable, raylet: link.raylet });
                        }
                    }
                    Command::Complete { task, outcome } => {
                        let payload = self.payloads.remove(&task);
                        let function = payload.as_ref().map_or("a task", |payload| payload.function);
                        let result = match outcome {
                            Ok(Ok(output)) => Ok(output),
                            Ok(Err(failure)) => Err(failure.into()),
                            Err(failure) => Err(failure_error(function, failure)),
                        };
                        effects.push(Effect::Complete { task, result, _payload: payload });
                    }
                    Command::Discard { task, output } => {
                        if let Ok(output) = output {
                            effects.push(Effect::Discard { task, output });
                        }
                    }
                    Command::Interrupt { request, task } => {
                        if let Some(link) = self.links.get(&request) {
                            effects.push(Effect::Interrupt {
                                executor: link.executor.clone(),
                                task,
                                recursive: true,
                            });
                        }
                    }
                }
            }
        }
        if let Some(due) = self.core.poll_timeout() {
            if self.timer.is_none_or(|armed| due < armed) {
                self.timer = Some(due);
                effects.push(Effect::WakeAt(due));
            }
        }
        effects
    }
}

/// The task submitter of one process.
pub(crate) struct Submitter {
    inner: Mutex<Inner>,
    incoming: Mutex<Vec<Incoming>>,
    /// The undecided tasks that return more than one value, by id (their first return's id),
    /// with how many.
    returns: Mutex<HashMap<ObjectId, u32>>,
    /// Tasks with several returns ever submitted (most programs: none, and completing a task
    /// then takes no lock).
    several_returns: std::sync::atomic::AtomicU64,
    /// The answer a streaming task's producer waits for while its consumer is a window behind.
    pub(crate) stream_acks: Mutex<HashMap<ObjectId, tokio::sync::oneshot::Sender<bool>>>,
    draining: AtomicBool,
    /// The origin of the core's clock.
    origin: Instant,
}

impl Submitter {
    /// A submitter pushing `depth` tasks to a worker at once (`None`: adaptive).
    pub(crate) fn new(depth: Option<usize>) -> Submitter {
        let config = SubmitterConfig {
            lease_requests_max: LEASE_REQUESTS_MAX,
            pipeline_max: PIPELINE,
            fixed_depth: depth.map(|depth| depth.clamp(1, PIPELINE)),
            linger: LEASE_LINGER,
            short_task: SHORT_TASK,
        };
        Submitter {
            inner: Mutex::new(Inner {
                core: SubmitterCore::new(config),
                payloads: HashMap::new(),
                links: HashMap::new(),
                raylets: HashMap::new(),
                timer: None,
            }),
            incoming: Mutex::new(Vec::new()),
            returns: Mutex::new(HashMap::new()),
            several_returns: std::sync::atomic::AtomicU64::new(0),
            stream_acks: Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
            origin: Instant::now(),
        }
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// The task that returns `id`: the one whose first return it is, or an undecided task
    /// with several returns that counts it among them.
    fn task_of(&self, id: ObjectId) -> ObjectId {
        let returns = self.returns.lock();
        if returns.is_empty() {
            return id;
        }
        returns
            .iter()
            .find(|(first, count)| {
                let offset = id.counter().wrapping_sub(first.counter());
                offset < u64::from(**count) && first.following(offset) == id
            })
            .map_or(id, |(first, _)| *first)
    }
}

/// Feeds one event to the core under the lock, then performs the effects. On the core arbiter.
fn drive(core: &Arc<CoreWorker>, event: impl FnOnce(&mut Inner, Duration)) {
    let now = core.submitter.now();
    let effects = {
        let mut inner = core.submitter.inner.lock();
        event(&mut inner, now);
        inner.effects(now, core.owner_address)
    };
    for effect in effects {
        perform(core, effect);
    }
}

/// Performs one effect. On the core arbiter.
fn perform(core: &Arc<CoreWorker>, effect: Effect) {
    match effect {
        Effect::Ask { request, shape, raylet, arguments } => {
            tokio::spawn(request_lease(core.clone(), request, (shape, arguments), raylet));
        }
        Effect::Push { request, message, executor, death } => {
            tokio::spawn(push(core.clone(), request, message, executor, death));
        }
        Effect::Interrupt { executor, task, recursive } => {
            tokio::spawn(async move {
                let _ = executor.tell(crate::wire::CancelTask { return_id: task, recursive }).await;
            });
        }
        Effect::Return { lease, reusable, raylet } => {
            tokio::spawn(async move {
                let _ = raylet.tell(ReturnLease { lease, reusable }).await;
            });
        }
        Effect::Complete { task, result, _payload } => {
            // The task's arguments are released before its result is visible: a `put` right
            // after the `get` finds their room free.
            drop(_payload);
            complete_task(core, task, result)
        }
        Effect::Discard { task, output } => {
            // A reply nobody waits for (cancelled, or retried): release what it holds.
            for (index, (value, contains)) in output_values(core, output).enumerate() {
                core.clean_up(core.objects.discard(task.following(index as u64), value, contains));
            }
        }
        Effect::WakeAt(due) => {
            let at = core.submitter.origin + due;
            let core = core.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(at.into()).await;
                drive(&core, |inner, now| {
                    if inner.timer == Some(due) {
                        inner.timer = None;
                    }
                    inner.core.handle_timeout(now);
                });
            });
        }
    }
}

/// Submits `function` (what `f::remote(...)` calls). Returns at once.
pub fn submit(function: &'static str, args: Vec<ArgSpec>, options: &TaskOptions) -> RawRef {
    let [first] = submit_returning::<1>(function, args, options);
    first
}

/// Submits `function`, which returns `N` values (`#[manta::remote(num_returns = N)]`): one
/// ref per value, in order. Returns at once.
pub fn submit_returning<const N: usize>(
    function: &'static str,
    args: Vec<ArgSpec>,
    options: &TaskOptions,
) -> [RawRef; N] {
    const { assert!(N >= 1 && N <= u32::MAX as usize, "a task returns at least one value") };
    let returns = N as u32;
    // Without `manta::init` the results' `get`s report `NotInitialized`.
    let Ok(core) = core::current() else { return std::array::from_fn(|_| RawRef::uninitialized()) };
    let refs: [RawRef; N] = core.create_pending_returns::<N>();
    if returns > 1 {
        core.submitter.several_returns.fetch_add(1, Ordering::AcqRel);
        core.submitter.returns.lock().insert(refs[0].id, returns);
    }
    enqueue(&core, refs[0].id, (function, args, options), returns);
    refs
}

/// Submits the streaming function `function`: its own ref (see [`crate::stream`]).
pub(crate) fn submit_stream(function: &'static str, args: Vec<ArgSpec>, options: &TaskOptions) -> RawRef {
    let Ok(core) = core::current() else { return RawRef::uninitialized() };
    let task = core.create_stream_task();
    core.objects.open_stream(task.id, options.generator_backpressure);
    enqueue(&core, task.id, (function, args, options), 1);
    task
}

/// Checks a new task and hands it to the core arbiter (or completes it at once with why not).
fn enqueue(
    core: &Arc<CoreWorker>,
    id: ObjectId,
    (function, args, options): (&'static str, Vec<ArgSpec>, &TaskOptions),
    returns: u32,
) {
    // Submitted by a task whose caller cancelled it recursively: cancelled at once.
    if crate::context::child_submitted(id) {
        complete_task(core, id, Err(TaskError::Cancelled { function: function.to_owned() }));
        return;
    }
    let amounts =
        [("num_cpus", options.num_cpus.unwrap_or(1.0)), ("num_gpus", options.num_gpus.unwrap_or(0.0))];
    let custom = options.resources.iter().map(|(name, amount)| (name.as_str(), *amount));
    if let Err(reason) = check_amounts(amounts.into_iter().chain(custom)) {
        complete_task(core, id, Err(TaskError::Invalid { function: function.to_owned(), reason }));
        return;
    }
    let (cpus, gpus) = (options.num_cpus.unwrap_or(1.0), options.num_gpus.unwrap_or(0.0));
    let (in_group, capture, strategy) =
        crate::placement::resolve(options.placement_group, &options.scheduling_strategy);
    let shape = match &in_group {
        None => Shape::new(function, cpus, gpus, &options.resources, strategy),
        // In a placement group: the same amounts, of the group's (or the bundle's) resources.
        Some(group) => {
            let mut demand = vec![("CPU".to_owned(), cpus), ("GPU".to_owned(), gpus)];
            demand.extend(options.resources.iter().cloned());
            match group.demand(&demand) {
                Ok(in_group) => Shape::new(function, 0.0, 0.0, &in_group, strategy),
                Err(reason) => {
                    complete_task(
                        core,
                        id,
                        Err(TaskError::Invalid { function: function.to_owned(), reason }),
                    );
                    return;
                }
            }
        }
    };
    let retries = options.max_retries.unwrap_or(core.max_retries);
    // Submissions are handed to the core arbiter in batches: one wake-up drains every task
    // submitted meanwhile, under one lock of the core.
    core.submitter.incoming.lock().push(Incoming { id, function, args, shape, retries, returns, capture });
    if !core.submitter.draining.swap(true, Ordering::AcqRel) {
        core.arbiter.spawn(drain(Arc::clone(core)));
    }
}

/// A submitted task on its way to the core arbiter.
struct Incoming {
    id: ObjectId,
    function: &'static str,
    args: Vec<ArgSpec>,
    shape: Shape,
    retries: u32,
    returns: u32,
    /// The placement group its children go in (`capture_child_tasks`).
    capture: Option<manta_proto::PlacementGroupId>,
}

/// Hands the submitted tasks to the core, with their arguments when every one is a small value;
/// the others resolve asynchronously.
async fn drain(core: Arc<CoreWorker>) {
    // Clear the flag before taking the batch: a task submitted after the take schedules
    // another drain.
    core.submitter.draining.store(false, Ordering::Release);
    let mut waiting = Vec::new();
    drive(&core, |inner, now| {
        // Taken under the core's lock, so that `cancel` finds each task in one place or the
        // other.
        let batch = std::mem::take(&mut *core.submitter.incoming.lock());
        for Incoming { id, function, args, shape, retries, returns, capture } in batch {
            let assigned = shape.amounts();
            if !args.iter().all(|ArgSpec(argument)| argument.is_small_value(core.inline_bytes_max)) {
                // Ray's locality-aware leases are for the default strategy only.
                let local_first = shape.strategy == SchedulingStrategy::Hybrid;
                inner.core.submit(id, shape, retries);
                let payload =
                    Payload { function, args: Vec::new(), _holds: Vec::new(), assigned, returns, capture };
                inner.payloads.insert(id, payload);
                waiting.push((id, function, args, local_first));
                continue;
            }
            inner.core.submit(id, shape, retries);
            // Small values only: resolving does not wait.
            match resolve_args(&core, function, args).now_or_never() {
                Some(Ok((args, holds))) => {
                    inner
                        .payloads
                        .insert(id, Payload { function, args, _holds: holds, assigned, returns, capture });
                    inner.core.resolved(now, id);
                }
                Some(Err(error)) => {
                    inner.core.resolve_failed(id);
                    waiting_failed(&core, id, error);
                }
                None => unreachable!("small values resolve without waiting"),
            }
        }
    });
    for (id, function, args, local_first) in waiting {
        let core = core.clone();
        tokio::spawn(async move {
            let resolved = resolve_args(&core, function, args).await;
            let mut failed = None;
            drive(&core, |inner, now| match resolved {
                // Cancelled meanwhile: its payload went with its completion; the arguments drop.
                Ok((args, holds)) => {
                    if let Some(payload) = inner.payloads.get_mut(&id) {
                        let weights = argument_weights(&args);
                        let near =
                            if local_first { heaviest_elsewhere(core.node_id, &weights) } else { None };
                        if let Some((node, raylet)) = near {
                            inner.raylets.insert(node, raylet);
                        }
                        payload.args = args;
                        payload._holds = holds;
                        let bytes = weights.into_iter().map(|(node, _, bytes)| (node, bytes)).collect();
                        inner.core.resolved_near(now, id, near.map(|(node, _)| node), bytes);
                    }
                }
                Err(error) => {
                    if inner.core.resolve_failed(id) {
                        inner.payloads.remove(&id);
                        failed = Some(error);
                    }
                }
            });
            if let Some(error) = failed {
                complete_task(&core, id, Err(error));
            }
        });
    }
}

/// The bytes of `args` by the node whose store holds them, with that node's raylet address (a
/// node's store service and its raylet share the node's address); inline arguments weigh
/// nothing.
fn argument_weights(args: &[TaskArg]) -> Vec<(NodeId, std::net::SocketAddr, u64)> {
    let mut weights: Vec<(NodeId, std::net::SocketAddr, u64)> = Vec::new();
    for argument in args {
        let TaskArg::Shared { location, .. } = argument else { continue };
        match weights.iter_mut().find(|(node, ..)| *node == location.node) {
            Some(weight) => weight.2 = weight.2.saturating_add(location.size),
            None => weights.push((location.node, location.store, location.size)),
        }
    }
    weights
}

/// The node of `weights` that holds the most bytes, and its raylet's address, when that is
/// not `here` and it holds more than `here` does (Ray's locality-aware lease policy; a tie
/// stays here).
fn heaviest_elsewhere(
    here: NodeId,
    weights: &[(NodeId, std::net::SocketAddr, u64)],
) -> Option<(NodeId, std::net::SocketAddr)> {
    let local = weights.iter().find(|(node, ..)| *node == here).map_or(0, |(.., bytes)| *bytes);
    let (node, raylet, bytes) =
        weights.iter().filter(|(node, ..)| *node != here).max_by_key(|(.., bytes)| *bytes)?;
    (*bytes > local).then_some((*node, *raylet))
}

/// A task whose arguments do not resolve fails with that error (outside the core's lock).
fn waiting_failed(core: &Arc<CoreWorker>, id: ObjectId, error: TaskError) {
    let core = core.clone();
    core.arbiter.clone().spawn(async move { complete_task(&core, id, Err(error)) });
}

/// The error a task's submission failure gives its `get`.
fn failure_error(function: &str, failure: Failure) -> TaskError {
    let function = function.to_owned();
    match failure {
        Failure::Cancelled => TaskError::Cancelled { function },
        Failure::WorkerDied { pid, exit, attempts } => {
            TaskError::WorkerDied { function, pid, exit, attempts }
        }
        Failure::NodeDied { node, pid, reason, attempts } => {
            TaskError::NodeDied { function, node: node.to_string(), pid, reason, attempts }
        }
        Failure::Refused(Refusal::Infeasible { demand }) => TaskError::Infeasible { function, demand },
        Failure::Refused(Refusal::Invalid { reason }) => TaskError::Invalid { function, reason },
        Failure::Refused(Refusal::WorkerStartFailed { exit }) => {
            TaskError::WorkerStartFailed { function, exit }
        }
        Failure::Refused(Refusal::Unreachable { target, reason }) => {
            TaskError::unreachable(function, target, reason)
        }
    }
}

/// Sets a task's result.
/// Resource amounts as Ray accepts them: finite, not negative, and whole above 1 (`1.5` CPUs
/// is an error; `0.5` shares one).
pub(crate) fn check_amounts<'a>(amounts: impl IntoIterator<Item = (&'a str, f64)>) -> Result<(), String> {
    for (name, amount) in amounts {
        if !amount.is_finite() || amount < 0.0 {
            return Err(format!("{name} must be a finite amount of 0 or more, got {amount}"));
        }
        if amount > 1.0 && amount.fract() != 0.0 {
            return Err(format!("{name} above 1 must be a whole number, got {amount}"));
        }
    }
    Ok(())
}

/// One returned value, as its owner keeps it.
pub(crate) type Part = (Value, Vec<crate::objects::RefWire>);

/// Completes each return of `task` (one, or `num_returns`): with its value, or all with the
/// error.
fn complete_task(core: &Arc<CoreWorker>, task: ObjectId, result: Result<TaskOutput, TaskError>) {
    let returns = match core.submitter.several_returns.load(Ordering::Acquire) {
        0 => 1,
        _ => core.submitter.returns.lock().remove(&task).unwrap_or(1),
    };
    complete_returns(core, task, returns, result);
}

/// Completes the `returns` objects of a task or actor call whose first is `task`: each with its
/// value, or all with the error.
pub(crate) fn complete_returns(
    core: &Arc<CoreWorker>,
    task: ObjectId,
    returns: u32,
    result: Result<TaskOutput, TaskError>,
) {
    match result {
        Ok(output) => {
            let given = output.more.len() + 1;
            let mut parts = output_values(core, output);
            for index in 0..u64::from(returns) {
                let id = task.following(index);
                let part = parts.next().ok_or_else(|| TaskError::Invalid {
                    function: "num_returns".into(),
                    reason: format!("the task returned {given} values where {returns} were expected"),
                });
                core.clean_up(core.objects.complete(id, part));
            }
            // More values than refs (a worker out of protocol): nobody can read them.
            for (index, (value, contains)) in parts.enumerate() {
                let id = task.following(u64::from(returns) + index as u64);
                core.clean_up(core.objects.discard(id, value, contains));
            }
        }
        Err(error) => {
            for index in 0..u64::from(returns) {
                core.clean_up(core.objects.complete(task.following(index), Err(error.clone())));
            }
        }
    }
}

/// Asks a raylet for a lease (this node's, or another's: after a spillback, or where the
/// task's arguments are) and hands the answer to the core.
async fn request_lease(
    core: Arc<CoreWorker>,
    request: RequestId,
    (shape, arguments): (Shape, Vec<(NodeId, u64)>),
    remote: Option<RemoteRaylet>,
) {
    let (cpus, gpus, resources) = shape.amounts();
    let remote_at = remote.map(|raylet| raylet.address);
    let asked: ServiceRef<Raylet> = match remote_at {
        Some(address) => core.node.service(address),
        None => core.raylet.clone(),
    };
    let ask = RequestLease {
        cpus,
        gpus,
        resources,
        dedicated: false,
        strategy: shape.strategy,
        // A worker id means something to its own raylet only.
        requester: core.worker_id.filter(|_| remote_at.is_none()),
        placement_cpus: 0.0,
        job: Some(core.job),
        spilled: remote.is_some_and(|raylet| raylet.spilled),
        // Another node's raylet watches this process instead, and ends its leases at its death.
        remote_requester: remote_at.map(|_| core.owner_address.0),
        warn: Some(core.owner_address.0),
        arguments,
    };
    let mut link = None;
    let mut spilled_raylet = None;
    let answer = match asked.ask_unbounded(ask).await {
        Ok(LeaseOutcome::Granted { lease, address, pid }) => match address.parse() {
            Ok(socket) => {
                let executor: ActorRef<Executor> = core.node.actor(ActorAddress::new(socket, EXECUTOR_NAME));
                let raylet = asked.clone();
                // `None` once the lease ended otherwise (returned): the watch then ends too,
                // instead of waiting for ever (one parked task per lease, for the process's life).
                // Another node's raylet that cannot be asked any more is that node's death.
                let node = remote.map(|raylet| raylet.node);
                let death: Death = async move {
                    match raylet.ask_unbounded(WatchLease { lease }).await {
                        Ok(exit) => exit.map(Ending::Worker),
                        Err(error) => node.map(|node| Ending::Node { node, reason: error.to_string() }),
                    }
                }
                .boxed()
                .shared();
                // The watch runs from the start: a death is learnt even with no push waiting.
                let watch = death.clone();
                let watcher = core.clone();
                tokio::spawn(async move {
                    if let Some(exit) = watch.await {
                        drive(&watcher, |inner, now| inner.core.worker_died(now, request, &exit));
                    }
                });
                link = Some(LeaseLink { executor, raylet: asked.clone(), death });
                LeaseAnswer::Granted { lease, pid }
            }
            Err(_) => {
                // Not a worker anyone can reach: give it back, and say why.
                let _ = asked.tell(ReturnLease { lease, reusable: false }).await;
                LeaseAnswer::Refused(Refusal::Invalid {
                    reason: format!("the raylet granted a worker at `{address}`, which is not an address"),
                })
            }
        },
        Ok(LeaseOutcome::Spillback { node, address }) => {
            match (node.parse::<NodeId>(), address.parse::<std::net::SocketAddr>()) {
                (Ok(node), Ok(address)) => {
                    spilled_raylet = Some((node, address));
                    LeaseAnswer::Spillback { node }
                }
                _ => LeaseAnswer::Refused(Refusal::Invalid {
                    reason: format!(
                        "the raylet spilled it back to node `{node}` at `{address}`, which do not parse"
                    ),
                }),
            }
        }
        Ok(LeaseOutcome::Infeasible { demand }) => LeaseAnswer::Refused(Refusal::Infeasible { demand }),
        Ok(LeaseOutcome::Invalid { reason }) => LeaseAnswer::Refused(Refusal::Invalid { reason }),
        Ok(LeaseOutcome::WorkerStartFailed { exit }) => {
            LeaseAnswer::Refused(Refusal::WorkerStartFailed { exit })
        }
        // The node it was sent to is gone (or unreachable): ask this node's raylet again,
        // whose view will have moved on.
        Err(error) if remote_at.is_some() => {
            debug!(%error, "a lease request found its node unreachable; asking here again");
            LeaseAnswer::Lost
        }
        Err(error) => LeaseAnswer::Refused(Refusal::Unreachable {
            target: match remote_at {
                Some(address) => format!("the raylet at {address}"),
                None => "the raylet".to_owned(),
            },
            reason: error.to_string(),
        }),
    };
    drive(&core, |inner, now| {
        if let Some(link) = link {
            inner.links.insert(request, link);
        }
        if let Some((node, address)) = spilled_raylet {
            inner.raylets.insert(node, address);
        }
        inner.core.lease_answered(now, request, answer);
    });
}

/// Pushes a task to its leased worker; its reply, or the worker's death, goes to the core.
async fn push(
    core: Arc<CoreWorker>,
    request: RequestId,
    message: PushTask,
    executor: ActorRef<Executor>,
    death: Death,
) {
    let task = message.return_id;
    let reply = tokio::select! {
        reply = executor.ask_unbounded(message) => Ok(reply),
        exit = death.clone() => Err(exit.unwrap_or_else(|| Ending::worker("its lease ended"))),
    };
    match reply {
        Ok(Ok(reply)) => {
            let run_us = reply.as_ref().ok().map(|output| output.run_us);
            drive(&core, |inner, now| inner.core.task_replied(now, request, task, run_us, reply));
        }
        Err(exit) => {
            debug!(%task, ?exit, "a leased worker is gone");
            drive(&core, |inner, now| inner.core.worker_died(now, request, &exit));
        }
        Ok(Err(error)) => {
            let exit = match error {
                AskError::ActorDied { cause, .. } => Ending::Worker(cause),
                broken @ (AskError::ConnectionLost(_) | AskError::Unreachable(_)) => {
                    // A local connection breaks the moment the worker dies, usually before the
                    // raylet's word on how it died: wait for that word (bounded), unless the
                    // lease is over already (returned, or its death handled).
                    let open = core.submitter.inner.lock().links.contains_key(&request);
                    let verdict = if open {
                        tokio::time::timeout(DEATH_VERDICT_WAIT, death).await.ok().flatten()
                    } else {
                        None
                    };
                    verdict.unwrap_or_else(|| Ending::Worker(broken.to_string()))
                }
                other => Ending::Worker(other.to_string()),
            };
            debug!(%task, ?exit, "a leased worker is gone");
            drive(&core, |inner, now| inner.core.worker_died(now, request, &exit));
        }
    }
}

impl ArgKind {
    /// Whether the argument is a value that travels inline (nothing to wait for).
    fn is_small_value(&self, inline_bytes_max: usize) -> bool {
        match self {
            ArgKind::Value(Ok((encoded, _))) => encoded.len() <= inline_bytes_max,
            ArgKind::Value(Err(_)) => true,
            ArgKind::Ref(_) => false,
        }
    }
}

/// [`resolve_args`] without waiting: the arguments when every one is a value small enough to
/// travel inline (nothing to wait for, nothing to store); otherwise `None`, and `args` is left
/// as it was.
pub(crate) fn resolve_now(
    core: &CoreWorker,
    args: &mut Option<Vec<ArgSpec>>,
) -> Option<(Vec<TaskArg>, Vec<RawRef>)> {
    let inline = |argument: &ArgSpec| matches!(&argument.0, ArgKind::Value(Ok((encoded, _))) if encoded.len() <= core.inline_bytes_max);
    if !args.as_ref().is_some_and(|args| args.iter().all(inline)) {
        return None;
    }
    let mut resolved = Vec::new();
    let mut holds = Vec::new();
    for ArgSpec(argument) in args.take().unwrap_or_default() {
        if let ArgKind::Value(Ok((encoded, nested))) = argument {
            holds.extend(nested);
            resolved.push(TaskArg::Inline(ByteBuf::from(encoded.to_vec())));
        }
    }
    Some((resolved, holds))
}

/// Resolves arguments: values are inlined (or stored when large), top-level refs wait for
/// their objects. Returns the arguments and the refs to hold while the task may run.
pub(crate) async fn resolve_args(
    core: &Arc<CoreWorker>,
    function: &str,
    args: Vec<ArgSpec>,
) -> Result<(Vec<TaskArg>, Vec<RawRef>), TaskError> {
    let mut resolved = Vec::with_capacity(args.len());
    let mut holds = Vec::new();
    for (index, ArgSpec(argument)) in args.into_iter().enumerate() {
        match argument {
            ArgKind::Value(Err(error)) => {
                return Err(TaskError::Failed {
                    function: function.to_owned(),
                    pid: std::process::id(),
                    message: format!("argument {index} does not encode: {error}"),
                    error: None,
                })
            }
            ArgKind::Value(Ok((encoded, nested))) => {
                // Refs nested in the value are held until the task ends (the worker registers
                // as their borrower before it answers, if it keeps them).
                holds.extend(nested);
                if encoded.len() <= core.inline_bytes_max {
                    resolved.push(TaskArg::Inline(ByteBuf::from(encoded.to_vec())));
                } else {
                    // A large argument travels through the object store, as in Ray.
                    let id = core.new_object_id();
                    let location = core.write_to_store(id, &encoded).await?;
                    core.objects.create_owned(id, State::Ready(Value::Shared(location)), Vec::new());
                    holds.push(RawRef::from_counted(core, id, None));
                    let owner = core.owner_address;
                    resolved.push(TaskArg::Shared { id, location: core.here(location), owner });
                }
            }
            ArgKind::Ref(reference) => {
                core.start_fetch_if_borrowed(&reference);
                match core.objects.wait_async(reference.id).await {
                    State::Ready(Value::Inline(bytes)) => {
                        resolved.push(TaskArg::Inline(ByteBuf::from(bytes.to_vec())))
                    }
                    State::Ready(Value::Shared(location)) => resolved.push(TaskArg::Shared {
                        id: reference.id,
                        location: core.here(location),
                        owner: reference.owner.unwrap_or(core.owner_address),
                    }),
                    // In another node's store: the executing node pulls it (unless it is there).
                    State::Ready(Value::Remote(location)) => resolved.push(TaskArg::Shared {
                        id: reference.id,
                        location,
                        owner: reference.owner.unwrap_or(core.owner_address),
                    }),
                    State::Failed(error) => {
                        return Err(TaskError::ArgumentFailed {
                            function: function.to_owned(),
                            index,
                            cause: Box::new(error),
                        })
                    }
                    State::Pending => unreachable!("wait_async returns settled states"),
                }
                holds.push(reference);
            }
        }
    }
    Ok((resolved, holds))
}

/// Each return of a task's output, in order.
fn output_values(core: &CoreWorker, output: TaskOutput) -> impl Iterator<Item = Part> + '_ {
    std::iter::once((owned_value(core, output.value), output.contains))
        .chain(output.more.into_iter().map(|part| (owned_value(core, part.value), part.contains)))
}

/// One return as its owner keeps it.
pub(crate) fn part_value(core: &CoreWorker, part: crate::wire::ReturnPart) -> Part {
    (owned_value(core, part.value), part.contains)
}

/// A value this process made, as it travels (`Value::Remote` is only ever an owner's).
pub(crate) fn return_value(core: &CoreWorker, value: Value) -> ReturnValue {
    match value {
        Value::Inline(bytes) => ReturnValue::Inline(ByteBuf::from(bytes.to_vec())),
        Value::Shared(location) => ReturnValue::Shared(core.here(location)),
        Value::Remote(location) => ReturnValue::Shared(location),
    }
}

fn owned_value(core: &CoreWorker, value: ReturnValue) -> Value {
    match value {
        ReturnValue::Inline(bytes) => Value::Inline(Bytes::from(bytes.into_vec())),
        ReturnValue::Shared(location) => core.value_at(location),
    }
}

/// Cancels the task that produces `reference`, at once: a task not yet running never runs; a
/// running one is told (its result dropped), or with `force` its worker is killed (as Ray's
/// `force=True`); with `recursive`, the tasks it submitted are cancelled too. A borrowed ref's
/// cancel is asked of its owner. Returns whether the task was cancelled. Its `get` then fails
/// with [`TaskError::Cancelled`].
pub(crate) fn cancel(reference: &RawRef, force: bool, recursive: bool) -> bool {
    let Some(core) = reference.core() else { return false };
    match reference.owner {
        None => cancel_task(core, reference.id, force, recursive),
        Some(owner) => {
            let owner = core.owner_of(owner);
            let request = CancelObject { id: reference.id, force, recursive };
            core.block_on(async move { owner.ask(request).await.unwrap_or(false) })
        }
    }
}

/// Cancels this process's task that returns `id` (see [`cancel`]).
pub(crate) fn cancel_task(core: &Arc<CoreWorker>, id: ObjectId, force: bool, recursive: bool) -> bool {
    let now = core.submitter.now();
    let mut unqueued = None;
    // Any return of a task names it (its first return is its id).
    let task = core.submitter.task_of(id);
    let (cancelled, mut effects) = {
        let mut inner = core.submitter.inner.lock();
        let cancelled = inner.core.cancel(now, task, force);
        if !cancelled {
            // Not handed to the core yet: take it out of the batch on its way.
            let mut incoming = core.submitter.incoming.lock();
            if let Some(index) = incoming.iter().position(|incoming| incoming.id == task) {
                unqueued = Some(incoming.swap_remove(index));
            }
        }
        (cancelled || unqueued.is_some(), inner.effects(now, core.owner_address))
    };
    // The running task this cancel interrupts is told whether to cancel its own tasks.
    for effect in &mut effects {
        if let Effect::Interrupt { recursive: interrupt_recursive, .. } = effect {
            *interrupt_recursive = recursive;
        }
    }
    if let Some(unqueued) = unqueued {
        let function = unqueued.function.to_owned();
        drop(unqueued);
        complete_task(core, task, Err(TaskError::Cancelled { function }));
    }
    if !effects.is_empty() {
        let core = core.clone();
        core.arbiter.clone().spawn(async move {
            for effect in effects {
                perform(&core, effect);
            }
        });
    }
    cancelled
}

#[cfg(test)]
mod tests {
    use super::*;
    use manta_proto::worker::{NodeLocation, WireLocation};

    fn shared(node: u8, size: u64) -> TaskArg {
        let location = NodeLocation {
            node: NodeId([node; 16]),
            store: format!("127.0.0.{node}:7000").parse().unwrap(),
            at: WireLocation { slot: 0, generation: 0 },
            size,
        };
        TaskArg::Shared {
            id: ObjectId::from_parts([node; 12], 1),
            location,
            owner: OwnerAddress("127.0.0.9:1".parse().unwrap()),
        }
    }

    #[test]
    fn the_heaviest_node_wins_only_when_it_outweighs_this_one() {
        let here = NodeId([1; 16]);
        let inline = TaskArg::Inline(ByteBuf::from(vec![0; 100]));
        assert_eq!(
            heaviest_elsewhere(here, &argument_weights(std::slice::from_ref(&inline))),
            None,
            "inline arguments weigh nothing"
        );
        let args = [shared(1, 10), shared(2, 6), shared(2, 6), shared(3, 11), inline];
        assert_eq!(
            heaviest_elsewhere(here, &argument_weights(&args)),
            Some((NodeId([2; 16]), "127.0.0.2:7000".parse().unwrap())),
            "two arguments on node 2 weigh 12 bytes"
        );
        assert_eq!(
            heaviest_elsewhere(here, &argument_weights(&[shared(1, 12), shared(2, 12)])),
            None,
            "a tie stays here"
        );
    }
}
