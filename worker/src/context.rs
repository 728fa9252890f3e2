//! What the code that runs knows about where it runs (Ray's `ray.get_runtime_context()`): the
//! job, the node, the worker process, the task or actor call running, the actor hosting it and
//! the resources assigned to it.
//!
//! A task records itself on the task thread while it runs; an actor records itself on every
//! thread that runs its methods (its own and its blocking pool's); an actor call records itself
//! in the async task that runs it (a task-local, so concurrent calls of an async actor each see
//! their own), handed to the blocking pool's thread for a threaded actor's method.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;

use manta_proto::{ActorId, JobId, NodeId, ObjectId, OwnerAddress};

use crate::core;
use crate::error::TaskError;

/// Where the calling code runs.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeContext {
    /// The job (the driver) the code runs for.
    pub job_id: JobId,
    /// The node this process belongs to.
    pub node_id: NodeId,
    /// This process.
    pub worker_pid: u32,
    /// The task or actor call running (named by the object its result goes to); `None` in
    /// the driver and in an actor's constructor.
    pub task_id: Option<ObjectId>,
    /// The actor whose method runs, if any.
    pub actor_id: Option<ActorId>,
    /// The resources the running task or actor holds (name, amount); empty in the driver.
    pub assigned_resources: Vec<(String, f64)>,
}

/// Resources by name, with their amounts.
type Resources = Vec<(String, f64)>;

/// What a task's lease holds, as it came with the task: CPUs, GPUs, custom resources (made
/// into [`Resources`] only when asked, off the task's path).
pub(crate) type Assigned = (f64, f64, Resources);

fn named((cpus, gpus, custom): Assigned) -> Resources {
    let mut named: Resources = [("CPU", cpus), ("GPU", gpus)]
        .into_iter()
        .filter(|(_, amount)| *amount > 0.0)
        .map(|(name, amount)| (name.to_owned(), amount))
        .collect();
    named.extend(custom);
    named
}

thread_local! {
    /// The task running on this thread, and what its lease holds.
    static TASK: RefCell<Option<(ObjectId, Assigned)>> = const { RefCell::new(None) };
    /// The owner of the task running on this thread (its submitter).
    static TASK_OWNER: std::cell::Cell<Option<OwnerAddress>> = const { std::cell::Cell::new(None) };
    /// The actor whose methods this thread runs, and what it holds.
    static ACTOR: RefCell<Option<(ActorId, Resources)>> = const { RefCell::new(None) };
    /// The actor call a blocking-pool thread runs for (handed over from its async task).
    static BLOCKING_CALL: RefCell<Option<ObjectId>> = const { RefCell::new(None) };
    /// The placement group the task or actor running here captures its children in.
    static CAPTURE: std::cell::Cell<Option<manta_proto::PlacementGroupId>> = const { std::cell::Cell::new(None) };
}

/// Sets the placement group the code running on this thread captures its children in (a task
/// or actor placed with `capture_child_tasks`); `None` when it ends.
pub(crate) fn set_capture(group: Option<manta_proto::PlacementGroupId>) {
    CAPTURE.with(|current| current.set(group));
}

/// The placement group the running code's children go in when they name none.
pub(crate) fn capture_group() -> Option<manta_proto::PlacementGroupId> {
    CAPTURE.with(std::cell::Cell::get)
}

tokio::task_local! {
    /// The actor call an async task runs.
    static CALL: ObjectId;
}

/// Runs `body` as task `task` holding `resources` (on the task thread).
pub(crate) fn as_task<T>(
    (task, owner): (ObjectId, OwnerAddress),
    resources: Assigned,
    body: impl FnOnce() -> T,
) -> T {
    TASK.with(|current| *current.borrow_mut() = Some((task, resources)));
    TASK_OWNER.with(|current| current.set(Some(owner)));
    let output = body();
    TASK.with(|current| *current.borrow_mut() = None);
    TASK_OWNER.with(|current| current.set(None));
    // Its children outlive it as they may; a cancel of it now reaches none of them (Ray).
    if RUNNING_CHILDREN.with(|running| running.borrow_mut().take()).is_some() {
        if let Some(children) = CHILDREN.lock().as_mut() {
            children.remove(&task);
        }
    }
    output
}

/// Marks this thread as one that runs the methods of `actor`, holding `resources`.
pub(crate) fn enter_actor(actor: ActorId, resources: Resources) {
    ACTOR.with(|current| *current.borrow_mut() = Some((actor, resources)));
}

/// Whether this thread runs an actor's methods.
pub(crate) fn in_actor() -> bool {
    ACTOR.with(|current| current.borrow().is_some())
}

/// Runs `call` as actor call `id`.
pub(crate) async fn as_call<F: Future>(id: ObjectId, call: F) -> F::Output {
    CALL.scope(id, call).await
}

/// The actor call running here, to hand to a blocking-pool thread.
pub(crate) fn current_call() -> Option<ObjectId> {
    CALL.try_with(|id| *id).ok().or_else(|| BLOCKING_CALL.with(|call| *call.borrow()))
}

/// Runs `body` (on a blocking-pool thread) as actor call `call`.
pub(crate) fn in_blocking_call<T>(call: Option<ObjectId>, body: impl FnOnce() -> T) -> T {
    BLOCKING_CALL.with(|current| *current.borrow_mut() = call);
    let output = body();
    BLOCKING_CALL.with(|current| *current.borrow_mut() = None);
    output
}

/// Tasks of this worker cancelled while they ran, with whether recursively (the most recent
/// ones: a cancel that arrives after its task ended stays here until pushed out).
static CANCELLED: parking_lot::Mutex<std::collections::VecDeque<(ObjectId, bool)>> =
    parking_lot::Mutex::new(std::collections::VecDeque::new());

/// How many cancelled tasks are remembered.
const CANCELLED_KEPT: usize = 4096;

/// The tasks one running task submitted, for a recursive cancel.
#[derive(Default)]
struct Children {
    /// Its caller cancelled it recursively: what it submits now is cancelled at once.
    cancelled: std::sync::atomic::AtomicBool,
    /// By their first return's id.
    ids: parking_lot::Mutex<Vec<ObjectId>>,
}

/// The running tasks of this worker that submitted tasks. An entry is made at a task's first
/// submission and goes when it ends; the running task's own is also in `RUNNING_CHILDREN`, so
/// that a submission takes no global lock but the first.
static CHILDREN: parking_lot::Mutex<Option<HashMap<ObjectId, std::sync::Arc<Children>>>> =
    parking_lot::Mutex::new(None);

thread_local! {
    /// The running task's entry in `CHILDREN`, once it submitted a task.
    static RUNNING_CHILDREN: RefCell<Option<std::sync::Arc<Children>>> = const { RefCell::new(None) };
}

/// The caller cancelled task `task` while it runs here; with `recursive`, the tasks it
/// submitted so far are returned, to be cancelled too (and any it submits later is cancelled
/// at once, see [`child_submitted`]).
pub(crate) fn cancelled(task: ObjectId, recursive: bool) -> Vec<ObjectId> {
    // Under the children's lock: a first submission either sees this cancel or is seen by it.
    let mut children = CHILDREN.lock();
    let mut cancelled = CANCELLED.lock();
    if cancelled.len() == CANCELLED_KEPT {
        cancelled.pop_front();
    }
    cancelled.push_back((task, recursive));
    drop(cancelled);
    if !recursive {
        return Vec::new();
    }
    let Some(entry) = children.as_mut().and_then(|children| children.get(&task).cloned()) else {
        return Vec::new();
    };
    drop(children);
    entry.cancelled.store(true, std::sync::atomic::Ordering::Release);
    let ids = std::mem::take(&mut *entry.ids.lock());
    ids
}

/// The running task submitted task `child`: remembered for a recursive cancel. `true` when the
/// running task was cancelled recursively already: the child is to be cancelled at once.
pub(crate) fn child_submitted(child: ObjectId) -> bool {
    let Some(parent) = current_task() else { return false };
    RUNNING_CHILDREN.with(|running| {
        let mut running = running.borrow_mut();
        let entry = running.get_or_insert_with(|| {
            let entry = std::sync::Arc::new(Children::default());
            let mut children = CHILDREN.lock();
            if CANCELLED.lock().contains(&(parent, true)) {
                entry.cancelled.store(true, std::sync::atomic::Ordering::Release);
            }
            children.get_or_insert_with(HashMap::new).insert(parent, entry.clone());
            entry
        });
        // Checked under the list's lock: a cancel takes the list under it after setting the flag.
        let mut ids = entry.ids.lock();
        if entry.cancelled.load(std::sync::atomic::Ordering::Acquire) {
            return true;
        }
        ids.push(child);
        false
    })
}

/// The task running on this thread and its owner (not an actor call).
pub(crate) fn current_task_and_owner() -> Option<(ObjectId, OwnerAddress)> {
    Some((current_task()?, TASK_OWNER.with(std::cell::Cell::get)?))
}

/// The task running on this thread (not an actor call).
fn current_task() -> Option<ObjectId> {
    TASK.with(|current| current.borrow().as_ref().map(|(task, _)| *task))
}

/// Whether the running task was cancelled by its caller (`manta::cancel` without force, Ray's
/// cooperative cancel): a long task may check it and stop; its result is discarded anyway.
/// `false` outside a task.
pub fn is_cancelled() -> bool {
    let Some(task) = current_task() else { return false };
    CANCELLED.lock().iter().any(|(cancelled, _)| *cancelled == task)
}

/// Where the calling code runs: its job, node, process, task or actor call, actor, and the
/// resources assigned to it (Ray's `ray.get_runtime_context()`).
pub fn get_runtime_context() -> Result<RuntimeContext, TaskError> {
    let core = core::current()?;
    let task = TASK.with(|current| current.borrow().clone());
    let actor = ACTOR.with(|current| current.borrow().clone());
    let (task_id, actor_id, assigned_resources) = match (task, actor) {
        (Some((task, resources)), _) => (Some(task), None, named(resources)),
        (None, Some((actor, resources))) => (current_call(), Some(actor), resources),
        (None, None) => (None, None, Vec::new()),
    };
    Ok(RuntimeContext {
        job_id: core.job,
        node_id: core.node_id,
        worker_pid: std::process::id(),
        task_id,
        actor_id,
        assigned_resources,
    })
}
