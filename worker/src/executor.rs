//! The executor: the actor in each worker process that runs pushed tasks and hosts actors.
//!
//! Pushed tasks reach the worker's one task thread straight from the transport thread (an
//! inline route), run there in arrival order inside `catch_unwind`, so a panicking task becomes
//! a [`TaskFailure`] and the worker lives on. Each hosted actor has a thread of its own with a
//! single-threaded async runtime, which calls reach the same way: an actor with
//! `max_concurrency` 1 runs its synchronous methods on that thread, others on the runtime's
//! blocking pool under the instance's lock (`&mut self`: exclusive, `&self`: shared); `async`
//! methods run on the actor's thread; at most `max_concurrency` calls run at once, a caller's
//! calls start in their `seq` order, and the actor's thread writes each answer.
//!
//! Concurrency groups (Ray's): a method placed in a named group takes a slot of that group's
//! own, in a queue of the group's own, so a full group holds back no other group's calls. The
//! groups share the actor's thread (Ray gives each its own event loop or thread pool): `async`
//! methods that block the thread block every group, as they would block the default group.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use manta_actor::{
    panic_message, spawn, Actor, Context, Handler, LocalRef, RegisterError, Reply, ResponseFuture, Routes,
    SpawnOptions,
};
use manta_gcs::ActorId;
use manta_objectstore::ObjectId;
use manta_proto::OwnerAddress;
use parking_lot::RwLock;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::warn;

use crate::core::{self, CoreWorker};
use crate::error::TaskError;
use crate::objects::Value;
use crate::registry::{self, ActorClassEntry, Invocation, InvokeError, Output};
use crate::wire::{
    ActorCall, CancelTask, KillActor, MayExit, PushTask, ReturnPart, StartActor, TaskArg, TaskFailure,
    TaskOutput,
};

type Job = Box<dyn FnOnce() + Send>;

/// The thread that runs this worker's tasks, one after another in arrival order. A worker holds
/// one lease at a time, so its tasks never need to run side by side; pipelined tasks wait here.
fn task_thread() -> &'static std::sync::mpsc::Sender<Job> {
    static THREAD: std::sync::OnceLock<std::sync::mpsc::Sender<Job>> = std::sync::OnceLock::new();
    THREAD.get_or_init(|| {
        let (sender, jobs) = std::sync::mpsc::channel::<Job>();
        let spawned = std::thread::Builder::new().name("manta-tasks".to_owned()).spawn(move || {
            for job in jobs {
                job();
            }
        });
        if let Err(error) = spawned {
            warn!(%error, "cannot start the task thread");
        }
        sender
    })
}

/// The name the executor is registered under in a worker process.
pub const EXECUTOR_NAME: &str = <manta_proto::worker::Executor as manta_proto::Protocol>::NAME;

struct HostedCall {
    method: String,
    args: Vec<TaskArg>,
    caller: u64,
    seq: u64,
    return_id: ObjectId,
    returns: usize,
    /// The caller, which owns the returns (given with its first call; the host fills it in for
    /// the later ones).
    owner: Option<OwnerAddress>,
    reply: Replier,
}

type CallOutcome = Result<TaskOutput, TaskFailure>;

/// Where a hosted call's outcome goes: straight back to the caller's connection, from the
/// actor's thread (a call from the network), or to a future (a call from this process).
enum Replier {
    Wire(Reply<CallOutcome>),
    Local(oneshot::Sender<CallOutcome>),
}

impl Replier {
    fn send(self, outcome: CallOutcome) {
        match self {
            Replier::Wire(reply) => reply.send(outcome),
            Replier::Local(sender) => {
                let _ = sender.send(outcome);
            }
        }
    }
}

/// The actors this worker hosts: where each one's calls go. Shared by the executor (which adds
/// them) and the route that hands calls over as they arrive.
type Hosts = Arc<RwLock<HashMap<ActorId, mpsc::UnboundedSender<HostedCall>>>>;

/// The executor actor.
pub struct Executor {
    hosts: Hosts,
    /// The core worker whose tasks and actors this executor runs.
    core: std::sync::Weak<CoreWorker>,
}

impl Actor for Executor {
    type Context = Context<Self>;
}

impl Executor {
    /// Starts the executor on `node`'s arbiter and registers its routes as [`EXECUTOR_NAME`].
    /// Tasks and actor calls skip its mailbox: they are handed to the task thread or the
    /// actor's thread on the transport's thread, as they arrive (one hop between threads less
    /// per call; tasks still run in arrival order), and an actor call's answer is written back
    /// by the actor's thread itself (one more).
    pub(crate) fn start(core: &Arc<CoreWorker>) -> Result<LocalRef<Executor>, RegisterError> {
        let node = &core.node;
        let hosts = Hosts::default();
        let shared = hosts.clone();
        // Weak: the node's registry holds the executor, and the core holds the node.
        let weak = Arc::downgrade(core);
        let (for_actor, for_task) = (weak.clone(), weak);
        let executor =
            spawn(node.arbiter(), SpawnOptions::named(EXECUTOR_NAME).max_restarts(u32::MAX), move || {
                Executor { hosts: shared.clone(), core: for_actor.clone() }
            });
        let routes = Routes::new(executor.clone())
            .message::<StartActor>()
            .message::<MayExit>()
            .message::<CancelTask>()
            .inline(move |task| run_task(for_task.upgrade(), task))
            .inline_answering(move |call: ActorCall, reply| {
                hand_over_answering(&hosts, call, Replier::Wire(reply))
            });
        node.register(EXECUTOR_NAME, routes)?;
        Ok(executor)
    }
}

/// Why a task, an actor's constructor or an actor call failed in this worker. The caller gets it
/// as the message of a [`TaskFailure`] (the wire carries text: the caller's process may not
/// know this worker's types).
#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error("{function} is not registered in this worker's binary (is it the same build as the driver?)")]
    NotRegistered { function: String },
    #[error("{class} has no method {method}")]
    NoMethod { class: &'static str, method: String },
    #[error("the worker's runtime is shutting down")]
    ShuttingDown,
    #[error("the worker's task thread has ended")]
    TaskThreadEnded,
    #[error("the task's thread dropped it")]
    Dropped,
    #[error("argument {index} (object {id}) is no longer in the object store")]
    ArgumentGone { index: usize, id: ObjectId },
    #[error("argument {index} failed: {error}")]
    ArgumentFailed { index: usize, error: TaskError },
    /// The function returned an error (its message as the user wrote it), or its arguments or
    /// output did not (de)serialize.
    #[error("{}", invoke_message(.0))]
    Invoke(InvokeError),
    #[error("panicked: {0}")]
    Panicked(String),
    #[error("{0}")]
    Output(TaskError),
}

/// Whether an argument is in another node's store (to be pulled here before the call runs).
fn is_remote(core: &CoreWorker, argument: &TaskArg) -> bool {
    matches!(argument, TaskArg::Shared { location, .. } if location.node != core.node_id)
}

/// Pulls the arguments other nodes' stores hold into this node's (in parallel); one that
/// cannot be pulled becomes a failed argument, and the call fails naming it. Each pulled copy
/// is pinned at once, and the pins are returned: hold them until the arguments are
/// materialized (the store may evict an unpinned copy when it needs room; one evicted before
/// it was pinned is pulled again).
async fn localize_args(core: &CoreWorker, args: Vec<TaskArg>) -> (Vec<TaskArg>, Vec<Bytes>) {
    if !args.iter().any(|argument| is_remote(core, argument)) {
        return (args, Vec::new());
    }
    let pulls = args.into_iter().map(|argument| async move {
        match argument {
            TaskArg::Shared { id, location, owner } if location.node != core.node_id => {
                match core.pull_pinned(id, location, owner).await {
                    Ok((local, pin)) => {
                        (TaskArg::Shared { id, location: core.here(local), owner }, Some(pin))
                    }
                    Err(error) => (TaskArg::Failed(error), None),
                }
            }
            other => (other, None),
        }
    });
    let (args, pins): (Vec<TaskArg>, Vec<Option<Bytes>>) =
        futures_util::future::join_all(pulls).await.into_iter().unzip();
    (args, pins.into_iter().flatten().collect())
}

/// The bytes of each argument: inline ones as they are, stored ones pinned in place.
fn materialize(core: &CoreWorker, args: Vec<TaskArg>) -> Result<Vec<Bytes>, RunError> {
    args.into_iter()
        .enumerate()
        .map(|(index, argument)| match argument {
            TaskArg::Inline(bytes) => Ok(Bytes::from(bytes.into_vec())),
            TaskArg::Shared { id, location, .. } if location.node == core.node_id => {
                core.store.reader().pin(location.at.into()).ok_or(RunError::ArgumentGone { index, id })
            }
            // Not pulled here (`localize_args` pulls every argument another node holds).
            TaskArg::Shared { id, .. } => Err(RunError::ArgumentGone { index, id }),
            TaskArg::Failed(error) => Err(RunError::ArgumentFailed { index, error }),
        })
        .collect()
}

fn invoke_message(error: &InvokeError) -> String {
    match error {
        InvokeError::Returned { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

impl RunError {
    /// The caller's view of this failure of `function`: its text, and the user's error value
    /// when the function returned one that serialises.
    fn into_failure(mut self, function: String, pid: u32) -> TaskFailure {
        let error = match &mut self {
            RunError::Invoke(InvokeError::Returned { error, .. }) => error.take(),
            _ => None,
        };
        TaskFailure { error, ..TaskFailure::new(function, pid, self.to_string()) }
    }
}

/// Stores an output (inline, or in the store under `return_id`), holds the refs inside it for
/// the caller, and registers this process as the borrower of argument refs it kept.
async fn finish_output(
    core: &Arc<CoreWorker>,
    output: Output,
    return_id: ObjectId,
    decoded: Arc<parking_lot::Mutex<Vec<ObjectId>>>,
    run_us: u64,
    (returns, owner): (usize, OwnerAddress),
) -> Result<TaskOutput, RunError> {
    let Output { value: encoded, holds, more } = output;
    if more.len() + 1 != returns {
        let reason = format!("the function returned {} values where {returns} were expected", more.len() + 1);
        return Err(RunError::Output(TaskError::Invalid { function: "num_returns".into(), reason }));
    }
    if more.is_empty() {
        let value = core.store_value(return_id, &encoded).await.map_err(RunError::Output)?;
        core.hold_contained(&encoded.refs, owner).await;
        drop(holds);
        let decoded = std::mem::take(&mut *decoded.lock());
        core.register_borrows(decoded).await;
        let value = crate::submit::return_value(core, value);
        return Ok(TaskOutput { value, contains: encoded.refs, run_us, more: Vec::new() });
    }
    // Every value is stored before any ref inside is held for the caller: a store that fails
    // half-way deletes what it wrote, and the task fails with nothing left behind.
    let mut values = Vec::with_capacity(returns);
    for (index, encoded) in std::iter::once(&encoded).chain(more.iter().map(|part| &part.value)).enumerate() {
        let id = return_id.following(index as u64);
        match core.store_value(id, encoded).await {
            Ok(value) => values.push(value),
            Err(error) => {
                for (index, value) in values.iter().enumerate() {
                    if matches!(value, Value::Shared(_)) {
                        core.delete_from_store(return_id.following(index as u64));
                    }
                }
                return Err(RunError::Output(error));
            }
        }
    }
    let mut values = values.into_iter().map(|value| crate::submit::return_value(core, value));
    let first = values.next().expect("one value per return");
    core.hold_contained(&encoded.refs, owner).await;
    drop(holds);
    let mut parts = Vec::with_capacity(more.len());
    for (part, value) in more.into_iter().zip(values) {
        core.hold_contained(&part.value.refs, owner).await;
        drop(part.holds);
        parts.push(ReturnPart { value, contains: part.value.refs });
    }
    let decoded = std::mem::take(&mut *decoded.lock());
    core.register_borrows(decoded).await;
    Ok(TaskOutput { value: first, contains: encoded.refs, run_us, more: parts })
}

impl Handler<PushTask> for Executor {
    type Result = ResponseFuture<Result<TaskOutput, TaskFailure>>;

    /// Tasks from this very process (the network's go to `run_task` directly).
    fn handle(&mut self, task: PushTask, _: &mut Context<Self>) -> Self::Result {
        Box::pin(run_task(self.core.upgrade(), task))
    }
}

/// Runs a pushed task on the task thread; resolves to its outcome. A task whose arguments
/// other nodes hold waits for them to be pulled here first (tasks with all their arguments
/// here are queued in the order they arrived, at once).
fn run_task(
    core: Option<Arc<CoreWorker>>,
    mut task: PushTask,
) -> impl std::future::Future<Output = Result<TaskOutput, TaskFailure>> + Send + 'static {
    use futures_util::future::Either;
    match core {
        Some(core) if task.args.iter().any(|argument| is_remote(&core, argument)) => {
            Either::Left(async move {
                let (args, pins) = localize_args(&core, std::mem::take(&mut task.args)).await;
                task.args = args;
                // The arguments are pinned for the run once it is queued.
                let running = run_task_here(Some(core), task);
                drop(pins);
                running.await
            })
        }
        core => Either::Right(run_task_here(core, task)),
    }
}

/// [`run_task`] with every argument in this node's store (or inline).
fn run_task_here(
    core: Option<Arc<CoreWorker>>,
    task: PushTask,
) -> impl std::future::Future<Output = Result<TaskOutput, TaskFailure>> + Send + 'static {
    let pid = std::process::id();
    let PushTask { function: name, args, return_id, more_returns, owner, cpus, gpus, custom, capture_group } =
        task;
    let assigned = (cpus, gpus, custom);
    // Handed to the task thread now, not when the answer is first polled: tasks run in the
    // order they arrived.
    let queued = (|| {
        let Some(function) = registry::lookup(&name) else {
            return Err(RunError::NotRegistered { function: name.clone() });
        };
        let core = core.ok_or(RunError::ShuttingDown)?;
        let invocation = Invocation::new(function.name, materialize(&core, args)?);
        let decoded = invocation.decoded.clone();
        let (reply, ran) = oneshot::channel();
        let runs_for = core.clone();
        let job: Job = Box::new(move || {
            let mut invocation = invocation;
            crate::origin::mark(function.name);
            crate::context::set_capture(capture_group);
            let started = std::time::Instant::now();
            let ran = core::within(&runs_for, || {
                crate::context::as_task((return_id, owner), assigned, || {
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        (function.invoke)(&mut invocation)
                    }))
                })
            });
            crate::context::set_capture(None);
            // The arguments' pins go before the answer: once the caller sees the result, the
            // store can free them at once (a `put` right after the `get` must find the room).
            drop(invocation);
            let _ = reply.send((ran, started.elapsed().as_micros() as u64));
        });
        task_thread().send(job).map_err(|_| RunError::TaskThreadEnded)?;
        Ok((core, decoded, ran))
    })();
    async move {
        let failure = |error: RunError| error.into_failure(name.clone(), pid);
        let (core, decoded, ran) = queued.map_err(failure)?;
        let (output, run_us) = match ran.await {
            Ok((Ok(Ok(output)), run_us)) => (output, run_us),
            Ok((Ok(Err(error)), _)) => return Err(failure(RunError::Invoke(error))),
            Ok((Err(panic), _)) => return Err(failure(RunError::Panicked(panic_message(&*panic)))),
            Err(_) => return Err(failure(RunError::Dropped)),
        };
        let returns = more_returns as usize + 1;
        finish_output(&core, output, return_id, decoded, run_us, (returns, owner)).await.map_err(failure)
    }
}

impl Handler<StartActor> for Executor {
    type Result = ResponseFuture<Result<(), TaskFailure>>;

    fn handle(&mut self, request: StartActor, _: &mut Context<Self>) -> Self::Result {
        let pid = std::process::id();
        let function = format!("{}.new", request.class);
        let failure = move |message: String| TaskFailure::new(function.clone(), pid, message);
        let Some(class) = registry::actor_class(&request.class) else {
            let message = format!(
                "actor class {} is not registered in this worker's binary (is it the same build as the driver?)",
                request.class
            );
            return Box::pin(std::future::ready(Err(failure(message))));
        };
        let (ready, started) = oneshot::channel();
        let (calls, receiver) = mpsc::unbounded_channel();
        let core = self.core.upgrade();
        let concurrency = Concurrency {
            default: request.max_concurrency.max(1) as usize,
            groups: request.concurrency_groups,
        };
        let (args, actor_id, held, capture) =
            (request.args, request.actor_id, request.resources, request.capture_group);
        let spawned = std::thread::Builder::new()
            .name(format!("manta-actor-{}", class.name.rsplit("::").next().unwrap_or(class.name)))
            .spawn(move || {
                host_actor(core, (actor_id, held, capture), class, args, concurrency, ready, receiver)
            });
        if let Err(error) = spawned {
            return Box::pin(std::future::ready(Err(failure(format!("no thread for the actor: {error}")))));
        }
        self.hosts.write().insert(request.actor_id, calls);
        Box::pin(async move {
            started
                .await
                .unwrap_or_else(|_| Err(failure("the actor's thread ended while it started".to_owned())))
        })
    }
}

impl Handler<CancelTask> for Executor {
    type Result = ();

    fn handle(&mut self, request: CancelTask, _: &mut Context<Self>) {
        let children = crate::context::cancelled(request.return_id, request.recursive);
        if let (Some(core), false) = (self.core.upgrade(), children.is_empty()) {
            for child in children {
                crate::submit::cancel_task(&core, child, false, true);
            }
        }
    }
}

impl Handler<MayExit> for Executor {
    type Result = bool;

    /// Yes, unless this process owns objects still referenced (by other processes, or by
    /// objects elsewhere), or hosts an actor.
    fn handle(&mut self, _: MayExit, _: &mut Context<Self>) -> bool {
        let owns = self.core.upgrade().is_some_and(|core| core.objects.counts().0 > 0);
        !owns && self.hosts.read().is_empty()
    }
}

impl Handler<ActorCall> for Executor {
    type Result = ResponseFuture<Result<TaskOutput, TaskFailure>>;

    /// Calls from this very process (the network's go through `hand_over` directly).
    fn handle(&mut self, call: ActorCall, _: &mut Context<Self>) -> Self::Result {
        Box::pin(hand_over(&self.hosts, call))
    }
}

/// Hands a call from this process to its actor's thread; resolves to the call's outcome.
fn hand_over(
    hosts: &Hosts,
    call: ActorCall,
) -> impl std::future::Future<Output = CallOutcome> + Send + 'static {
    let (sender, answer) = oneshot::channel();
    let (function, pid) = (call.method.clone(), std::process::id());
    hand_over_answering(hosts, call, Replier::Local(sender));
    async move {
        answer
            .await
            .unwrap_or_else(|_| Err(TaskFailure::new(function, pid, "the call was dropped".to_owned())))
    }
}

/// Hands a call to its actor's thread, which sends the outcome through `reply`.
fn hand_over_answering(hosts: &Hosts, call: ActorCall, reply: Replier) {
    let refused = |method: String, reply: Replier, message: &str| {
        let pid = std::process::id();
        reply.send(Err(TaskFailure::new(method, pid, message.to_owned())));
    };
    let hosts = hosts.read();
    let Some(host) = hosts.get(&call.actor_id) else {
        return refused(call.method, reply, "the actor is not hosted by this worker");
    };
    let hosted = HostedCall {
        method: call.method,
        args: call.args,
        caller: call.caller,
        seq: call.seq,
        return_id: call.return_id,
        returns: call.more_returns as usize + 1,
        owner: call.owner,
        reply,
    };
    if let Err(returned) = host.send(hosted) {
        let HostedCall { method, reply, .. } = returned.0;
        drop(hosts);
        refused(method, reply, "the actor's thread has ended");
    }
}

/// How many calls of an actor run at once: `default` in the default group (the methods not
/// placed in a named group), and the named groups' own sizes.
struct Concurrency {
    default: usize,
    groups: Vec<(String, u32)>,
}

/// What every running call of a hosted actor shares (on the actor's thread).
struct Host {
    core: Arc<CoreWorker>,
    class: &'static ActorClassEntry,
    cell: registry::ActorCell,
    /// Signalled by the call that called `exit_actor`.
    exiting: tokio::sync::Notify,
    exited: std::cell::Cell<bool>,
    /// A method called `exit_actor`: its caller's answer is held (never sent), and so are the
    /// answers of the calls that never start, so that callers learn of the actor's death, not
    /// of a value (Ray's semantics).
    held: std::cell::RefCell<Vec<Replier>>,
}

impl Host {
    /// Starts `call`, which holds `slot` while it runs; `false` (the call never starts) once
    /// the actor has exited.
    fn start(self: &std::rc::Rc<Self>, call: HostedCall, slot: tokio::sync::OwnedSemaphorePermit) -> bool {
        if self.exited.get() {
            self.held.borrow_mut().push(call.reply);
            return false;
        }
        let host = self.clone();
        tokio::task::spawn_local(async move {
            let HostedCall { method, args, return_id, returns, owner, reply, .. } = call;
            let call = (return_id, returns, owner.unwrap_or(host.core.owner_address));
            let outcome = run_call(&host.core, host.class, &host.cell, method, args, call).await;
            drop(slot);
            match outcome {
                Some(outcome) => reply.send(outcome),
                None => {
                    host.held.borrow_mut().push(reply);
                    host.exited.set(true);
                    host.exiting.notify_one();
                }
            }
        });
        true
    }
}

/// Starts the calls of one named concurrency group in the order they come, each once the
/// group has room: a full group holds back only its own calls.
async fn run_group(
    host: std::rc::Rc<Host>,
    slots: Arc<Semaphore>,
    mut queue: mpsc::UnboundedReceiver<HostedCall>,
) {
    while let Some(call) = queue.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        if !host.start(call, slot) {
            // The actor exited: the calls still queued are never answered.
            std::future::pending::<()>().await;
        }
    }
}

/// The life of one hosted actor, on its own thread.
fn host_actor(
    core: Option<Arc<CoreWorker>>,
    (actor_id, held, capture): (ActorId, Vec<(String, f64)>, Option<manta_proto::PlacementGroupId>),
    class: &'static ActorClassEntry,
    args: Vec<TaskArg>,
    concurrency: Concurrency,
    ready: oneshot::Sender<Result<(), TaskFailure>>,
    mut calls: mpsc::UnboundedReceiver<HostedCall>,
) {
    let pid = std::process::id();
    let failure = |message: String| TaskFailure::new(format!("{}.new", class.name), pid, message);
    crate::context::enter_actor(actor_id, held.clone());
    crate::context::set_capture(capture);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_start(move || {
            crate::context::enter_actor(actor_id, held.clone());
            crate::context::set_capture(capture);
        })
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = ready.send(Err(failure(format!("no runtime for the actor: {error}"))));
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    registry::run_inline_on_this_thread(concurrency.default == 1 && concurrency.groups.is_empty());
    local.block_on(&runtime, async move {
        let Some(core) = core else {
            let _ = ready.send(Err(failure(RunError::ShuttingDown.to_string())));
            return;
        };
        // This thread works for the core that hosts its actor.
        core::enter(&core);
        let (args, pins) = localize_args(&core, args).await;
        let args = materialize(&core, args);
        drop(pins);
        let args = match args {
            Ok(args) => args,
            Err(error) => {
                let _ = ready.send(Err(failure(error.to_string())));
                return;
            }
        };
        let mut invocation = Invocation::new(class.name, args);
        let decoded = invocation.decoded.clone();
        crate::origin::mark(class.name);
        let constructed =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (class.construct)(&mut invocation)));
        drop(invocation);
        let cell = match constructed {
            Ok(Ok(cell)) => cell,
            Ok(Err(error)) => {
                let _ = ready.send(Err(failure(RunError::Invoke(error).to_string())));
                return;
            }
            Err(panic) if panic.is::<registry::ExitActor>() => {
                let _ = ready.send(Err(failure("the constructor called manta::exit_actor()".to_owned())));
                return;
            }
            Err(panic) => {
                let _ = ready.send(Err(failure(RunError::Panicked(panic_message(&*panic)).to_string())));
                return;
            }
        };
        let decoded = std::mem::take(&mut *decoded.lock());
        core.register_borrows(decoded).await;
        let _ = ready.send(Ok(()));

        let host = std::rc::Rc::new(Host {
            core: core.clone(),
            class,
            cell,
            exiting: tokio::sync::Notify::new(),
            exited: std::cell::Cell::new(false),
            held: Default::default(),
        });
        // The default group's slots, taken here in call order; each named group's calls go to
        // the group's own queue (its slots taken there), so that a full group holds back no
        // other group's calls.
        let slots = Arc::new(Semaphore::new(concurrency.default));
        let mut groups: HashMap<&str, mpsc::UnboundedSender<HostedCall>> = HashMap::new();
        let mut group_slots = Vec::new();
        for (name, size) in &concurrency.groups {
            let (queue, queued) = mpsc::unbounded_channel();
            let group = Arc::new(Semaphore::new(*size as usize));
            group_slots.push((group.clone(), *size));
            tokio::task::spawn_local(run_group(host.clone(), group, queued));
            groups.insert(name.as_str(), queue);
        }
        let group_of: HashMap<&str, &mpsc::UnboundedSender<HostedCall>> = class
            .method_groups
            .iter()
            .filter_map(|(method, group)| Some((*method, groups.get(group)?)))
            .collect();
        // Per caller: the next `seq` to run, and its address (from its first call, `seq` 0).
        let mut next_seq: HashMap<u64, (u64, Option<OwnerAddress>)> = HashMap::new();
        let mut parked: HashMap<u64, BTreeMap<u64, HostedCall>> = HashMap::new();
        'calls: loop {
            let call = tokio::select! {
                biased;
                () = host.exiting.notified() => break,
                call = calls.recv() => match call {
                    Some(call) => call,
                    None => return,
                },
            };
            let caller = call.caller;
            parked.entry(caller).or_default().insert(call.seq, call);
            loop {
                let (expected, owner) = next_seq.entry(caller).or_insert((0, None));
                let Some(mut call) = parked.get_mut(&caller).and_then(|calls| calls.remove(expected)) else {
                    break;
                };
                *expected += 1;
                match call.owner {
                    Some(given) => *owner = Some(given),
                    None => call.owner = *owner,
                }
                if let Some(queue) =
                    (!group_of.is_empty()).then(|| group_of.get(call.method.as_str())).flatten()
                {
                    // Its group's queue lives as long as this loop.
                    let _ = queue.send(call);
                    continue;
                }
                let Ok(slot) = slots.clone().acquire_owned().await else { return };
                // `false`: the call it waited behind ended the actor; this one never starts.
                if !host.start(call, slot) {
                    break 'calls;
                }
            }
            if parked.get(&caller).is_some_and(BTreeMap::is_empty) {
                parked.remove(&caller);
            }
        }
        // The actor exits: the calls running finish, the ones not started are never answered
        // (`parked`, `calls`, the groups' queues and `held` stay alive), and the actor manager
        // records the exit (no restart) and returns the lease, whose end stops this process;
        // every caller then sees `ActorDied` with the cause.
        let _running = slots.acquire_many(concurrency.default as u32).await;
        for (group, size) in &group_slots {
            let _running = group.acquire_many(*size).await;
        }
        let cause = "the actor exited: manta::exit_actor() was called".to_owned();
        if let Err(error) = core.actor_manager.ask(KillActor { actor_id, cause }).await {
            warn!(class = class.name, %error, "an exiting actor could not tell the actor manager");
        }
        std::future::pending::<()>().await;
        drop((parked, calls, groups, host));
    });
    warn!(class = class.name, "actor host ended");
}

/// Runs one call of an actor; `None` when the method called `exit_actor`.
async fn run_call(
    core: &Arc<CoreWorker>,
    class: &'static ActorClassEntry,
    cell: &registry::ActorCell,
    method: String,
    args: Vec<TaskArg>,
    (return_id, returns, owner): (ObjectId, usize, OwnerAddress),
) -> Option<Result<TaskOutput, TaskFailure>> {
    let pid = std::process::id();
    let function = format!("{}.{method}", class.name);
    let failure = |error: RunError| error.into_failure(function.clone(), pid);
    let (args, pins) = localize_args(core, args).await;
    let args = materialize(core, args);
    drop(pins);
    let args = match args {
        Ok(args) => args,
        Err(error) => return Some(Err(failure(error))),
    };
    let invocation = Invocation::new(class.name, args);
    let decoded = invocation.decoded.clone();
    let Some(running) = (class.dispatch)(cell, &method, invocation) else {
        return Some(Err(failure(RunError::NoMethod { class: class.name, method })));
    };
    let started = std::time::Instant::now();
    let output = match crate::context::as_call(return_id, registry::catch_unwind(running)).await {
        Ok(Ok(output)) => output,
        Ok(Err(InvokeError::ActorExit)) | Err(InvokeError::ActorExit) => return None,
        Ok(Err(error)) | Err(error) => return Some(Err(failure(RunError::Invoke(error)))),
    };
    let run_us = started.elapsed().as_micros() as u64;
    Some(finish_output(core, output, return_id, decoded, run_us, (returns, owner)).await.map_err(failure))
}
