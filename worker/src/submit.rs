//! Task submission: arguments resolved, then Ray's lease protocol with lease reuse.
//!
//! A submitted task first resolves its arguments (top-level refs wait for their values; large
//! values go to the object store), then joins the queue of its *shape* (its function and the
//! resources it needs: Ray's scheduling class). Each shape keeps as many lease requests waiting
//! at the raylet as it has queued tasks, at most [`LEASE_REQUESTS_MAX`]; a granted worker runs
//! queued tasks of that shape one after another, pushed straight to it, and the lease goes back
//! when the queue is empty. The raylet is on the path once per lease, not once per task. A
//! function whose tasks run for under a millisecond gets up to [`PIPELINE`] of them pushed to a
//! worker at once (only while more tasks are queued than leases are coming), hiding the round
//! trip between them.
//!
//! Task lifecycle (asserted in [`TaskControl::advance`]):
//!
//! ```text
//! Resolving --> Queued --> Running --> Done
//!     |           |  ^        |
//!     |           |  +--------+  (its worker died; retries left)
//!     +-----------+------------------> Done (failed dependency, cancelled, infeasible)
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use manta_actor::{ActorAddress, ActorRef, AskError};
use manta_objectstore::ObjectId;
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
use crate::wire::{PushTask, ReturnValue, TaskArg, TaskFailure, TaskOutput};

/// The most tasks a leased worker may be given ahead of their turn (`Config::
/// max_tasks_in_flight_per_worker` is capped by it); the adaptive default uses it for short tasks.
pub const PIPELINE: usize = 8;

/// How long a lease with nothing to run waits for the next task of its shape before it goes back.
const LEASE_LINGER: Duration = Duration::from_millis(2);

/// A function whose recent tasks ran for less than this (on average) is pipelined.
const SHORT_TASK_US: f64 = 1_000.0;

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
            let holds = match core::try_get() {
                Some(core) => encoded.refs.iter().map(|wire| core.adopt(wire)).collect(),
                None => Vec::new(),
            };
            (Box::new(encoded), holds)
        }))),
        crate::Arg::Ref(reference) => ArgSpec(ArgKind::Ref(reference.raw)),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TaskState {
    Resolving,
    Queued,
    Running { lease: u64 },
    Done,
}

/// A submitted task's control block, shared by its stages and `cancel`.
#[derive(Debug)]
pub(crate) struct TaskControl {
    function: String,
    return_id: ObjectId,
    state: Mutex<TaskState>,
    cancelled: std::sync::atomic::AtomicBool,
    /// Woken by a forced cancel: the running attempt stops waiting for its killed worker.
    killed: tokio::sync::Notify,
}

impl TaskControl {
    fn advance(&self, next: TaskState) -> bool {
        let mut state = self.state.lock();
        if *state == TaskState::Done {
            return false;
        }
        let allowed = matches!(
            (*state, next),
            (TaskState::Resolving, TaskState::Queued)
                | (TaskState::Queued, TaskState::Running { .. })
                | (TaskState::Running { .. }, TaskState::Queued)
                | (_, TaskState::Done)
        );
        assert!(allowed, "task lifecycle: {} cannot go from {:?} to {next:?}", self.function, *state);
        *state = next;
        true
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Sets the outcome of a task once (a cancelled task's late result is dropped).
fn finish(
    core: &'static CoreWorker,
    control: &TaskControl,
    outcome: Result<(Value, Vec<crate::objects::RefWire>), TaskError>,
) {
    if !control.advance(TaskState::Done) {
        if let Ok((value, contains)) = outcome {
            // Completed after a cancel: nobody will read it; release what it holds.
            discard(core, control.return_id, value, contains);
        }
        return;
    }
    core.submitter.tasks.lock().remove(&control.return_id);
    if let Some(freed) = core.objects.complete(control.return_id, outcome) {
        core.clean_up(freed);
    }
}

fn discard(core: &'static CoreWorker, id: ObjectId, value: Value, contains: Vec<crate::objects::RefWire>) {
    core.clean_up(crate::objects::Freed::orphan(id, value, contains));
}

/// What a lease is for: one function with one set of resources (Ray's scheduling class), so a
/// leased worker runs tasks of one function, and their durations predict each other.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Shape {
    function: &'static str,
    /// Amounts in ten-thousandths (the raylet's fixed point).
    cpus: u64,
    gpus: u64,
    resources: Vec<(String, u64)>,
    /// Tasks placed differently never share a lease.
    strategy: SchedulingStrategy,
}

impl Shape {
    fn of(function: &'static str, options: &TaskOptions) -> Shape {
        let fixed = |amount: f64| (amount.max(0.0) * 10_000.0).round() as u64;
        let mut resources: Vec<(String, u64)> =
            options.resources.iter().map(|(name, amount)| (name.clone(), fixed(*amount))).collect();
        resources.sort();
        Shape {
            function,
            cpus: fixed(options.num_cpus.unwrap_or(1.0)),
            gpus: fixed(options.num_gpus.unwrap_or(0.0)),
            resources,
            strategy: options.scheduling_strategy,
        }
    }

    fn request(&self) -> RequestLease {
        let float = |fixed: u64| fixed as f64 / 10_000.0;
        RequestLease {
            cpus: float(self.cpus),
            gpus: float(self.gpus),
            resources: self.resources.iter().map(|(name, amount)| (name.clone(), float(*amount))).collect(),
            dedicated: false,
            strategy: self.strategy,
            requester: None,
        }
    }
}

/// A task whose arguments are resolved, waiting for a worker.
struct ReadyTask {
    function: &'static str,
    args: Vec<TaskArg>,
    /// Refs kept alive while the task may still run (its arguments).
    _holds: Vec<RawRef>,
    retries_left: u32,
    attempts: u32,
    control: Arc<TaskControl>,
}

#[derive(Default)]
struct ShapeQueue {
    ready: VecDeque<ReadyTask>,
    /// Lease requests still waiting for the raylet's answer.
    waiting: usize,
    /// Granted leases with nothing to run, lingering for the next task.
    idle_leases: usize,
    /// Signalled when a task is queued (wakes a lingering lease).
    arrived: Arc<tokio::sync::Notify>,
    /// Moving average of how long recent tasks ran in their worker, µs.
    mean_us: Option<f64>,
}

/// The task submitter of one process.
#[derive(Default)]
pub(crate) struct Submitter {
    shapes: Mutex<HashMap<Shape, ShapeQueue>>,
    pub(crate) tasks: Mutex<HashMap<ObjectId, Arc<TaskControl>>>,
    incoming: Mutex<Vec<Incoming>>,
    draining: std::sync::atomic::AtomicBool,
}

/// Submits `function` (what `f::remote(...)` calls). Returns at once.
pub fn submit(function: &'static str, args: Vec<ArgSpec>, options: &TaskOptions) -> RawRef {
    // Without `manta::init` the result's `get` reports `NotInitialized`.
    let Ok(core) = core::get() else { return RawRef::uninitialized() };
    let result = core.create_pending();
    let control = Arc::new(TaskControl {
        function: function.to_owned(),
        return_id: result.id,
        state: Mutex::new(TaskState::Resolving),
        cancelled: Default::default(),
        killed: tokio::sync::Notify::new(),
    });
    core.submitter.tasks.lock().insert(result.id, control.clone());
    let shape = Shape::of(function, options);
    let retries = options.max_retries.unwrap_or(core.max_retries);
    // Submissions are handed to the core arbiter in batches: one wake-up drains every task
    // submitted meanwhile.
    core.submitter.incoming.lock().push(Incoming { function, args, shape, retries, control });
    if !core.submitter.draining.swap(true, std::sync::atomic::Ordering::AcqRel) {
        core.arbiter.spawn(drain(core));
    }
    result
}

/// A submitted task on its way to the core arbiter.
struct Incoming {
    function: &'static str,
    args: Vec<ArgSpec>,
    shape: Shape,
    retries: u32,
    control: Arc<TaskControl>,
}

/// Takes the submitted tasks into their shapes' queues: at once when every argument is a small
/// value, through an asynchronous resolution otherwise.
async fn drain(core: &'static CoreWorker) {
    // Clear the flag before taking the batch: a task submitted after the take schedules
    // another drain.
    core.submitter.draining.store(false, std::sync::atomic::Ordering::Release);
    let batch = std::mem::take(&mut *core.submitter.incoming.lock());
    let mut touched: Vec<Shape> = Vec::new();
    for Incoming { function, args, shape, retries, control } in batch {
        if !args.iter().all(|ArgSpec(argument)| argument.is_small_value(core.inline_bytes_max)) {
            core.arbiter.spawn(async move {
                match resolve_args(core, function, args).await {
                    Ok((args, holds)) => {
                        if enqueue(core, function, args, holds, shape.clone(), retries, control) {
                            pump(core, shape);
                        }
                    }
                    Err(error) => finish(core, &control, Err(error)),
                }
            });
            continue;
        }
        // Small values only: resolving does not wait.
        match resolve_args(core, function, args).now_or_never() {
            Some(Ok((args, holds))) => {
                if enqueue(core, function, args, holds, shape.clone(), retries, control)
                    && !touched.contains(&shape)
                {
                    touched.push(shape);
                }
            }
            Some(Err(error)) => finish(core, &control, Err(error)),
            None => unreachable!("small values resolve without waiting"),
        }
    }
    for shape in touched {
        pump(core, shape);
    }
}

/// Queues a resolved task on its shape; `false` if it was cancelled meanwhile.
fn enqueue(
    core: &'static CoreWorker,
    function: &'static str,
    args: Vec<TaskArg>,
    holds: Vec<RawRef>,
    shape: Shape,
    retries: u32,
    control: Arc<TaskControl>,
) -> bool {
    if control.is_cancelled() || !control.advance(TaskState::Queued) {
        return false;
    }
    let task = ReadyTask { function, args, _holds: holds, retries_left: retries, attempts: 0, control };
    let mut shapes = core.submitter.shapes.lock();
    let queue = shapes.entry(shape).or_default();
    queue.ready.push_back(task);
    queue.arrived.notify_one();
    true
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

/// Resolves arguments: values are inlined (or stored when large), top-level refs wait for
/// their objects. Returns the arguments and the refs to hold while the task may run.
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

pub(crate) async fn resolve_args(
    core: &'static CoreWorker,
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
                    holds.push(RawRef::from_counted(id, None));
                    resolved.push(TaskArg::Shared { id, location: location.into() });
                }
            }
            ArgKind::Ref(reference) => {
                core.start_fetch_if_borrowed(&reference);
                match core.objects.wait_async(reference.id).await {
                    State::Ready(Value::Inline(bytes)) => {
                        resolved.push(TaskArg::Inline(ByteBuf::from(bytes.to_vec())))
                    }
                    State::Ready(Value::Shared(location)) => {
                        resolved.push(TaskArg::Shared { id: reference.id, location: location.into() })
                    }
                    State::Failed(error) => return Err(error),
                    State::Pending => unreachable!("wait_async returns settled states"),
                }
                holds.push(reference);
            }
        }
    }
    Ok((resolved, holds))
}

/// Asks for leases while a shape has more queued tasks than lease requests waiting.
fn pump(core: &'static CoreWorker, shape: Shape) {
    let mut shapes = core.submitter.shapes.lock();
    let Some(queue) = shapes.get_mut(&shape) else { return };
    // Compare the queue with the requests still waiting for a worker, not with the leases in
    // use: a lease busy with a long task must not keep a queued task from a lease of its own.
    while queue.waiting < LEASE_REQUESTS_MAX && queue.waiting + queue.idle_leases < queue.ready.len() {
        queue.waiting += 1;
        let shape = shape.clone();
        core.arbiter.spawn(async move {
            lease_loop(core, &shape).await;
            pump(core, shape);
        });
    }
}

/// The next queued task of `shape`. An `extra` task (one pushed ahead while the worker is busy)
/// is taken only when more tasks are queued than leases are on their way, so a short task never
/// waits behind a long one while a free worker is coming for it.
fn next_task(core: &CoreWorker, shape: &Shape, extra: bool) -> Option<ReadyTask> {
    let mut shapes = core.submitter.shapes.lock();
    let queue = shapes.get_mut(shape)?;
    if extra && queue.ready.len() <= queue.waiting {
        return None;
    }
    while let Some(task) = queue.ready.pop_front() {
        if !task.control.is_cancelled() {
            return Some(task);
        }
    }
    None
}

/// One lease: requested, used for queued tasks of its shape until none is left, returned.
async fn lease_loop(core: &'static CoreWorker, shape: &Shape) {
    let request = RequestLease { requester: core.worker_id, ..shape.request() };
    let outcome = core.raylet.ask_unbounded(request).await;
    if let Some(queue) = core.submitter.shapes.lock().get_mut(shape) {
        queue.waiting -= 1;
    }
    let (lease, address, pid) = match outcome {
        Ok(LeaseOutcome::Granted { lease, address, pid }) => (lease, address, pid),
        other => {
            // No lease for this shape: fail every task queued for it.
            while let Some(task) = next_task(core, shape, false) {
                let error = match &other {
                    Ok(LeaseOutcome::Infeasible { demand }) => {
                        TaskError::Infeasible { function: task.function.to_owned(), demand: demand.clone() }
                    }
                    Ok(LeaseOutcome::Spillback { node }) => TaskError::unreachable(
                        task.function,
                        format!("node {node}"),
                        "it was spilled back there, and a single-node cluster cannot reach another node",
                    ),
                    Ok(LeaseOutcome::Invalid { reason }) => {
                        TaskError::Invalid { function: task.function.to_owned(), reason: reason.clone() }
                    }
                    Ok(LeaseOutcome::WorkerStartFailed { exit }) => TaskError::WorkerStartFailed {
                        function: task.function.to_owned(),
                        exit: exit.clone(),
                    },
                    Ok(LeaseOutcome::Granted { .. }) => unreachable!("matched above"),
                    Err(error) => TaskError::unreachable(task.function, "the raylet", error),
                };
                finish(core, &task.control, Err(error));
            }
            return;
        }
    };
    let Ok(socket) = address.parse() else {
        let _ = core.raylet.tell(ReturnLease { lease, reusable: false }).await;
        return;
    };
    let executor: ActorRef<Executor> = core.node.actor(ActorAddress::new(socket, EXECUTOR_NAME));
    // The raylet sees the worker die at once (it waits on the process); a connection to a
    // killed process would only time out. One watch per lease.
    // Resolves when the worker died; never when the lease ended otherwise (the reply decides).
    let raylet = core.raylet.clone();
    let death = async move {
        match raylet.ask_unbounded(WatchLease { lease }).await {
            Ok(Some(exit)) => Some(exit),
            Ok(None) | Err(_) => std::future::pending().await,
        }
    }
    .boxed()
    .shared();
    let mut running = tokio::task::JoinSet::new();
    let mut dead = false;
    loop {
        let depth = core.tasks_in_flight_per_worker.unwrap_or_else(|| {
            let mean = core.submitter.shapes.lock().get(shape).and_then(|queue| queue.mean_us);
            if mean.is_some_and(|mean| mean < SHORT_TASK_US) {
                PIPELINE
            } else {
                1
            }
        });
        while !dead && running.len() < depth {
            let Some(mut task) = next_task(core, shape, !running.is_empty()) else { break };
            if !task.control.advance(TaskState::Running { lease }) {
                continue;
            }
            task.attempts += 1;
            let push = PushTask {
                function: task.function.to_owned(),
                args: task.args.clone(),
                return_id: task.control.return_id,
            };
            let (executor, death, control) = (executor.clone(), death.clone(), task.control.clone());
            running.spawn(async move {
                let reply = tokio::select! {
                    reply = executor.ask_unbounded(push) => reply,
                    exit = death => Err(AskError::ActorDied {
                        actor: format!("worker pid {pid}"),
                        cause: exit.unwrap_or_else(|| "its lease ended".to_owned()),
                    }),
                    () = control.killed.notified() => Err(AskError::ActorDied {
                        actor: format!("worker pid {pid}"),
                        cause: "killed by a forced cancel".to_owned(),
                    }),
                };
                (task, reply)
            });
        }
        if running.is_empty() {
            // Nothing to run: keep the lease a moment for the next task of this shape (a
            // caller submitting one task at a time), then give it back.
            if dead {
                break;
            }
            let arrived = {
                let mut shapes = core.submitter.shapes.lock();
                let queue = shapes.entry(shape.clone()).or_default();
                if !queue.ready.is_empty() {
                    continue;
                }
                queue.idle_leases += 1;
                queue.arrived.clone()
            };
            let woken = tokio::time::timeout(LEASE_LINGER, arrived.notified()).await.is_ok();
            if let Some(queue) = core.submitter.shapes.lock().get_mut(shape) {
                queue.idle_leases -= 1;
            }
            if woken {
                continue;
            }
            break;
        }
        let Some(joined) = running.join_next().await else { break };
        let (mut task, reply) = match joined {
            Ok(done) => done,
            Err(error) => unreachable!("a task push does not panic: {error}"),
        };
        if let Ok(Ok(output)) = &reply {
            if let Some(queue) = core.submitter.shapes.lock().get_mut(shape) {
                let took = output.run_us as f64;
                queue.mean_us = Some(queue.mean_us.map_or(took, |mean| mean * 0.8 + took * 0.2));
            }
        }
        match reply {
            Ok(Ok(output)) => finish(core, &task.control, Ok(output_value(output))),
            Ok(Err(TaskFailure { function, pid, message })) => {
                finish(core, &task.control, Err(TaskError::Failed { function, pid, message }))
            }
            Err(error) => {
                // The worker is gone with its lease: no new pushes; the others in flight end
                // the same way.
                dead = true;
                let exit = match error {
                    AskError::ActorDied { cause, .. } => cause,
                    broken @ (AskError::ConnectionLost(_) | AskError::Unreachable(_)) => {
                        // A local connection breaks the moment the worker dies, usually before
                        // the raylet's word on how it died: wait for that word (bounded).
                        match tokio::time::timeout(DEATH_VERDICT_WAIT, death.clone()).await {
                            Ok(Some(exit)) => exit,
                            _ => broken.to_string(),
                        }
                    }
                    other => other.to_string(),
                };
                if task.control.is_cancelled() {
                    finish(
                        core,
                        &task.control,
                        Err(TaskError::Cancelled { function: task.function.to_owned() }),
                    );
                } else if task.retries_left == 0 {
                    let attempts = task.attempts;
                    let function = task.function.to_owned();
                    finish(core, &task.control, Err(TaskError::WorkerDied { function, pid, exit, attempts }));
                } else {
                    debug!(function = task.function, pid, attempts = task.attempts, %exit, "worker died; retrying");
                    task.retries_left -= 1;
                    if task.control.advance(TaskState::Queued) {
                        core.submitter.shapes.lock().entry(shape.clone()).or_default().ready.push_front(task);
                    }
                }
            }
        }
    }
    let _ = core.raylet.tell(ReturnLease { lease, reusable: !dead }).await;
}

/// The owner's view of a task's or call's output.
pub(crate) fn output_value(output: TaskOutput) -> (Value, Vec<crate::objects::RefWire>) {
    let value = match output.value {
        ReturnValue::Inline(bytes) => Value::Inline(Bytes::from(bytes.into_vec())),
        ReturnValue::Shared(location) => Value::Shared(location.into()),
    };
    (value, output.contains)
}

/// Cancels the task that produces `reference`. A task not yet running is cancelled at once; a
/// running one only with `force`, which kills its worker (as Ray's `force=True`). Returns
/// whether the task was cancelled. Its `get` then fails with [`TaskError::Cancelled`].
pub(crate) fn cancel(reference: &RawRef, force: bool) -> bool {
    let Some(core) = core::try_get() else { return false };
    let Some(control) = core.submitter.tasks.lock().get(&reference.id).cloned() else { return false };
    let state = *control.state.lock();
    match state {
        TaskState::Resolving | TaskState::Queued => {
            control.cancelled.store(true, std::sync::atomic::Ordering::Release);
            finish(core, &control, Err(TaskError::Cancelled { function: control.function.clone() }));
            true
        }
        TaskState::Running { lease } if force => {
            control.cancelled.store(true, std::sync::atomic::Ordering::Release);
            control.killed.notify_one();
            core.arbiter.spawn(async move {
                let _ = core.raylet.tell(ReturnLease { lease, reusable: false }).await;
            });
            true
        }
        TaskState::Running { .. } | TaskState::Done => false,
    }
}
