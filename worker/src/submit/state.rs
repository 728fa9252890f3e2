//! The task submitter's logic as a state machine (Ray's `NormalTaskSubmitter`): tasks in, lease
//! requests, pushes and completions out. No clock, no socket, no lock: the shell in `submit.rs`
//! performs the commands and feeds their answers back, the simulator (`manta-sim`) drives it
//! over a simulated network, and the tests below drive it in any order a network could.
//!
//! Tasks of one *shape* (function, resources, placement: Ray's scheduling class) share a queue
//! and the leases asked for it. A shape keeps as many lease requests waiting as it has queued
//! tasks beyond its idle leases, at most `lease_requests_max`; a granted lease runs queued tasks
//! of its shape one after another (up to `pipeline_max` at once for short tasks, while more
//! are queued than leases are coming), lingers a moment when the queue is empty, and goes back.
//!
//! One task's life (each submitted task gets exactly one [`Command::Complete`]):
//!
//! ```text
//! Resolving --resolved--> Queued --pushed--> Running --replied--> Complete(Ok)
//!     |                     |  ^                |
//!     |                     |  +-- worker died, retries left
//!     +---------------------+------ cancelled, refused, retries spent --> Complete(Err)
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use manta_proto::raylet::SchedulingStrategy;
use manta_proto::{NodeId, ObjectId};

/// A task, named by the object its result goes to.
pub type TaskId = ObjectId;

/// One lease request, and the lease it becomes once granted (numbered by the core: lease ids
/// are only unique per raylet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// What a lease is for: one function with one set of resources and one placement, so a
/// leased worker runs tasks of one function and their durations predict each other.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Shape {
    /// The function's registered name.
    pub function: &'static str,
    /// CPUs, in ten-thousandths (the raylet's fixed point).
    pub cpus: u64,
    /// GPUs, in ten-thousandths.
    pub gpus: u64,
    /// Custom resources, in ten-thousandths, sorted by name.
    pub resources: Vec<(String, u64)>,
    /// Where it should run; tasks placed differently never share a lease.
    pub strategy: SchedulingStrategy,
}

impl Shape {
    /// A shape from amounts as users write them (negative amounts count as zero; the raylet
    /// refuses non-finite ones).
    pub fn new(
        function: &'static str,
        cpus: f64,
        gpus: f64,
        resources: &[(String, f64)],
        strategy: SchedulingStrategy,
    ) -> Shape {
        let mut resources: Vec<(String, u64)> =
            resources.iter().map(|(name, amount)| (name.clone(), fixed(*amount))).collect();
        resources.sort();
        Shape { function, cpus: fixed(cpus), gpus: fixed(gpus), resources, strategy }
    }

    /// The amounts back as floats: (cpus, gpus, custom resources).
    pub fn amounts(&self) -> (f64, f64, Vec<(String, f64)>) {
        let float = |fixed: u64| fixed as f64 / 10_000.0;
        let resources = self.resources.iter().map(|(name, amount)| (name.clone(), float(*amount))).collect();
        (float(self.cpus), float(self.gpus), resources)
    }
}

fn fixed(amount: f64) -> u64 {
    (amount.max(0.0) * 10_000.0).round() as u64
}

/// The submitter's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SubmitterConfig {
    /// Lease requests waiting per shape at most (Ray's
    /// `max_pending_lease_requests_per_scheduling_category`).
    pub lease_requests_max: usize,
    /// Tasks pushed to one leased worker at once at most.
    pub pipeline_max: usize,
    /// Tasks pushed to one leased worker at once; `None`: adaptive, `pipeline_max` for a shape
    /// whose recent tasks ran for under `short_task` on average, else 1.
    pub fixed_depth: Option<usize>,
    /// How long a lease with nothing to run waits for the next task before it goes back.
    pub linger: Duration,
    /// The adaptive depth's threshold.
    pub short_task: Duration,
}

impl Default for SubmitterConfig {
    fn default() -> Self {
        SubmitterConfig {
            lease_requests_max: 10,
            pipeline_max: 8,
            fixed_depth: None,
            linger: Duration::from_millis(2),
            short_task: Duration::from_millis(1),
        }
    }
}

/// A raylet's answer to a lease request, as the shell reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum LeaseAnswer {
    /// A worker is leased.
    Granted {
        /// The raylet's id of the lease (to return it).
        lease: u64,
        /// The worker's process id (for error messages).
        pid: u32,
    },
    /// Ask that node instead.
    Spillback {
        /// The node the raylet chose.
        node: NodeId,
    },
    /// No lease for this shape: every task queued for it fails with this.
    Refused(Refusal),
    /// The request or its answer was lost with a connection: ask again.
    Lost,
}

/// Why no lease could be had.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// No node can ever satisfy the shape.
    Infeasible {
        /// What was asked for.
        demand: String,
    },
    /// The request itself is invalid.
    Invalid {
        /// Why.
        reason: String,
    },
    /// No worker process could be started for it.
    WorkerStartFailed {
        /// How the last one ended.
        exit: String,
    },
    /// The raylet asked cannot be reached.
    Unreachable {
        /// Which raylet.
        target: String,
        /// What went wrong.
        reason: String,
    },
}

/// How a leased worker was lost.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    /// The worker process ended: how (its exit status or signal, or what broke), when known.
    Worker(String),
    /// The node it ran on died, or cannot be reached any more.
    Node {
        /// The node.
        node: NodeId,
        /// What was seen.
        reason: String,
    },
}

impl Ending {
    /// A worker's end, described.
    pub fn worker(exit: impl Into<String>) -> Ending {
        Ending::Worker(exit.into())
    }
}

/// Why a task failed, as far as submission is concerned (a task that ran and returned an error
/// completes with the shell's output instead).
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// Cancelled (before it ran, or while it ran).
    Cancelled,
    /// Its worker died on its last allowed attempt.
    WorkerDied {
        /// The last worker's process id.
        pid: u32,
        /// How it ended.
        exit: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The node of its worker died on its last allowed attempt.
    NodeDied {
        /// The node.
        node: NodeId,
        /// The last worker's process id.
        pid: u32,
        /// What was seen.
        reason: String,
        /// Attempts made.
        attempts: u32,
    },
    /// No lease could be had for its shape.
    Refused(Refusal),
}

/// What the shell must do. `O` is the output a worker's reply carries (opaque to the core).
#[derive(Debug, PartialEq)]
pub enum Command<O> {
    /// Ask a raylet for a lease (`node`: `None` for the local raylet); answer with
    /// [`SubmitterCore::lease_answered`].
    RequestLease {
        /// The request (to name in the answer).
        request: RequestId,
        /// What for.
        shape: Shape,
        /// Which raylet.
        node: Option<NodeId>,
        /// Whether a raylet spilled it back to `node` (which then keeps it if it ever can),
        /// rather than the submitter choosing `node` for its arguments (which may spill again).
        spilled: bool,
        /// The arguments' bytes by node of the task the request is made for.
        arguments: Vec<(NodeId, u64)>,
    },
    /// Push a task to the leased worker; answer with [`SubmitterCore::task_replied`], or
    /// [`SubmitterCore::worker_died`] if the worker is gone.
    Push {
        /// The lease.
        request: RequestId,
        /// The task.
        task: TaskId,
        /// Its attempt, from 1.
        attempt: u32,
    },
    /// Give a lease back (`reusable`: its worker may serve others; otherwise it is killed).
    ReturnLease {
        /// The lease.
        request: RequestId,
        /// The raylet's id of it.
        lease: u64,
        /// Which raylet granted it.
        node: Option<NodeId>,
        /// Whether the worker lives on.
        reusable: bool,
    },
    /// The task is over: its output, or why it failed. Exactly once per submitted task.
    Complete {
        /// The task.
        task: TaskId,
        /// Its outcome.
        outcome: Result<O, Failure>,
    },
    /// Tell the leased worker that its running task was cancelled (it may stop early: Ray's
    /// cooperative cancel); its reply will be discarded.
    Interrupt {
        /// The lease.
        request: RequestId,
        /// The task.
        task: TaskId,
    },
    /// A reply nobody waits for (the task was cancelled or retried meanwhile): release what
    /// the output holds.
    Discard {
        /// The task the reply was for.
        task: TaskId,
        /// The output.
        output: O,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TaskState {
    Resolving,
    Queued,
    Running { request: RequestId },
}

#[derive(Debug)]
struct Task {
    shape: usize,
    /// The node holding most of its arguments' bytes, when that is not this one: a lease
    /// request made for it asks that node's raylet first (Ray's locality-aware lease policy).
    near: Option<NodeId>,
    /// Its arguments' bytes by the node whose store holds them (for the raylet's policy).
    arguments: Vec<(NodeId, u64)>,
    state: TaskState,
    retries_left: u32,
    attempts: u32,
}

#[derive(Debug)]
struct ShapeState {
    shape: Shape,
    queue: VecDeque<TaskId>,
    /// Lease requests not answered yet.
    waiting: usize,
    /// Granted leases, oldest first.
    granted: Vec<RequestId>,
    /// The granted leases with nothing to run (kept, not searched for: a driver may hold
    /// thousands of leases, and this is read on every reply).
    idle: BTreeSet<RequestId>,
    /// Moving average of how long recent tasks ran in their worker, µs.
    mean_us: Option<f64>,
}

#[derive(Debug)]
enum LeasePhase {
    Requested,
    Granted {
        lease: u64,
        pid: u32,
        /// Tasks pushed and not answered, in push order.
        running: Vec<TaskId>,
        /// Since when the lease has had nothing to run.
        idle_since: Option<Duration>,
    },
}

#[derive(Debug)]
struct Lease {
    shape: usize,
    node: Option<NodeId>,
    phase: LeasePhase,
    /// The arguments' bytes by node of the task it was asked for (asked again with them).
    arguments: Vec<(NodeId, u64)>,
}

/// The submitter of one process. Time (`now`) is any monotonic clock's reading as a
/// [`Duration`] since an origin the caller picks.
#[derive(Debug)]
pub struct SubmitterCore<O> {
    config: SubmitterConfig,
    shapes: Vec<ShapeState>,
    shape_index: HashMap<Shape, usize>,
    tasks: HashMap<TaskId, Task>,
    /// Ordered, so that expiry and the simulator's runs are deterministic.
    leases: BTreeMap<RequestId, Lease>,
    next_request: u64,
    commands: VecDeque<Command<O>>,
}

impl<O> SubmitterCore<O> {
    /// An idle submitter.
    pub fn new(config: SubmitterConfig) -> Self {
        SubmitterCore {
            config,
            shapes: Vec::new(),
            shape_index: HashMap::new(),
            tasks: HashMap::new(),
            leases: BTreeMap::new(),
            next_request: 1,
            commands: VecDeque::new(),
        }
    }

    /// The commands to perform, oldest first.
    pub fn poll_commands(&mut self) -> impl Iterator<Item = Command<O>> + '_ {
        self.commands.drain(..)
    }

    /// Whether commands are waiting.
    pub fn has_commands(&self) -> bool {
        !self.commands.is_empty()
    }

    /// Tasks submitted and not completed.
    pub fn tasks_open(&self) -> usize {
        self.tasks.len()
    }

    /// Leases requested or held.
    pub fn leases_open(&self) -> usize {
        self.leases.len()
    }

    /// A task was submitted; its arguments are being resolved. Call [`Self::resolved`] (or
    /// [`Self::resolve_failed`]) next. A task id already open is ignored (`false`).
    pub fn submit(&mut self, task: TaskId, shape: Shape, retries: u32) -> bool {
        if self.tasks.contains_key(&task) {
            return false;
        }
        let index = match self.shape_index.get(&shape) {
            Some(&index) => index,
            None => {
                let index = self.shapes.len();
                self.shape_index.insert(shape.clone(), index);
                self.shapes.push(ShapeState {
                    shape,
                    queue: VecDeque::new(),
                    waiting: 0,
                    granted: Vec::new(),
                    idle: BTreeSet::new(),
                    mean_us: None,
                });
                index
            }
        };
        self.tasks.insert(
            task,
            Task {
                shape: index,
                near: None,
                arguments: Vec::new(),
                state: TaskState::Resolving,
                retries_left: retries,
                attempts: 0,
            },
        );
        true
    }

    /// The task's arguments are resolved: it joins its shape's queue. `false` if it is no
    /// longer waiting for that (cancelled meanwhile): the caller drops its arguments.
    pub fn resolved(&mut self, now: Duration, task: TaskId) -> bool {
        self.resolved_near(now, task, None, Vec::new())
    }

    /// [`SubmitterCore::resolved`], for a task whose arguments are mostly (by bytes) on another
    /// node, `near`: a lease request made for it goes to that node's raylet, which may grant it
    /// or spill it back. `arguments`: its arguments' bytes by node, which the request carries
    /// to the raylet's policy.
    pub fn resolved_near(
        &mut self,
        now: Duration,
        task: TaskId,
        near: Option<NodeId>,
        arguments: Vec<(NodeId, u64)>,
    ) -> bool {
        let Some(entry) = self.tasks.get_mut(&task) else { return false };
        if entry.state != TaskState::Resolving {
            return false;
        }
        entry.state = TaskState::Queued;
        entry.near = near;
        entry.arguments = arguments;
        let shape = entry.shape;
        self.shapes[shape].queue.push_back(task);
        self.dispatch(now, shape);
        true
    }

    /// The task's arguments could not be resolved. `true` if the caller completes it with its
    /// own error (it is forgotten here); `false` if it was already completed (cancelled).
    pub fn resolve_failed(&mut self, task: TaskId) -> bool {
        match self.tasks.get(&task) {
            Some(entry) if entry.state == TaskState::Resolving => {
                self.tasks.remove(&task);
                true
            }
            _ => false,
        }
    }

    /// A raylet answered a lease request.
    pub fn lease_answered(&mut self, now: Duration, request: RequestId, answer: LeaseAnswer) {
        let Some(lease) = self.leases.get_mut(&request) else { return };
        if !matches!(lease.phase, LeasePhase::Requested) {
            // Answered twice: the first answer stands.
            return;
        }
        let shape = lease.shape;
        self.shapes[shape].waiting -= 1;
        match answer {
            LeaseAnswer::Granted { lease: id, pid } => {
                lease.phase = LeasePhase::Granted { lease: id, pid, running: Vec::new(), idle_since: None };
                self.shapes[shape].granted.push(request);
                self.shapes[shape].idle.insert(request);
                self.dispatch(now, shape);
            }
            LeaseAnswer::Spillback { node } => self.ask_again(request, Some(node)),
            LeaseAnswer::Lost => self.ask_again(request, None),
            LeaseAnswer::Refused(refusal) => {
                self.leases.remove(&request);
                // No lease for this shape: every task queued for it fails (they are alike).
                while let Some(task) = self.shapes[shape].queue.pop_front() {
                    self.tasks.remove(&task);
                    let outcome = Err(Failure::Refused(refusal.clone()));
                    self.commands.push_back(Command::Complete { task, outcome });
                }
            }
        }
    }

    /// Repeats a request (at `node`) if its shape still has tasks waiting for it; drops it
    /// otherwise.
    fn ask_again(&mut self, request: RequestId, node: Option<NodeId>) {
        let Some(lease) = self.leases.get_mut(&request) else { return };
        let state = &mut self.shapes[lease.shape];
        if state.queue.len() > state.waiting {
            state.waiting += 1;
            lease.node = node;
            let spilled = node.is_some();
            self.commands.push_back(Command::RequestLease {
                request,
                shape: state.shape.clone(),
                node,
                spilled,
                arguments: lease.arguments.clone(),
            });
        } else {
            self.leases.remove(&request);
        }
    }

    /// A leased worker answered a push. `run_us`: how long the task ran there (for the
    /// adaptive pipeline depth). A reply the core no longer waits for comes back as
    /// [`Command::Discard`].
    pub fn task_replied(
        &mut self,
        now: Duration,
        request: RequestId,
        task: TaskId,
        run_us: Option<u64>,
        output: O,
    ) {
        let running_here =
            matches!(self.tasks.get(&task), Some(entry) if entry.state == TaskState::Running { request });
        let Some(Lease { shape, phase: LeasePhase::Granted { running, .. }, .. }) =
            self.leases.get_mut(&request).filter(|_| running_here)
        else {
            // Cancelled while it ran: the worker is free again, the output nobody's.
            if let Some(Lease { shape, phase: LeasePhase::Granted { running, .. }, .. }) =
                self.leases.get_mut(&request)
            {
                if running.contains(&task) && !self.tasks.contains_key(&task) {
                    let shape = *shape;
                    running.retain(|other| *other != task);
                    if running.is_empty() {
                        self.shapes[shape].idle.insert(request);
                    }
                    self.commands.push_back(Command::Discard { task, output });
                    self.dispatch(now, shape);
                    return;
                }
            }
            self.commands.push_back(Command::Discard { task, output });
            return;
        };
        let shape = *shape;
        running.retain(|other| *other != task);
        if running.is_empty() {
            self.shapes[shape].idle.insert(request);
        }
        if let Some(took) = run_us {
            let mean = &mut self.shapes[shape].mean_us;
            let took = took as f64;
            *mean = Some(mean.map_or(took, |mean| mean * 0.8 + took * 0.2));
        }
        self.tasks.remove(&task);
        self.commands.push_back(Command::Complete { task, outcome: Ok(output) });
        self.dispatch(now, shape);
    }

    /// A leased worker died (or its connection is gone for good): its tasks are retried while
    /// they have retries, and fail otherwise. Repeated reports are ignored.
    pub fn worker_died(&mut self, now: Duration, request: RequestId, ending: &Ending) {
        let Some(lease) = self.leases.remove(&request) else { return };
        let shape = lease.shape;
        let LeasePhase::Granted { lease: id, pid, running, .. } = lease.phase else {
            // Not granted yet: the request is simply gone.
            self.shapes[shape].waiting -= 1;
            self.dispatch(now, shape);
            return;
        };
        self.shapes[shape].granted.retain(|other| *other != request);
        self.shapes[shape].idle.remove(&request);
        self.commands.push_back(Command::ReturnLease {
            request,
            lease: id,
            node: lease.node,
            reusable: false,
        });
        // Back to the front of the queue in their order.
        for task in running.into_iter().rev() {
            let Some(entry) = self.tasks.get_mut(&task) else { continue };
            if entry.retries_left == 0 {
                let attempts = entry.attempts;
                self.tasks.remove(&task);
                let outcome = Err(match ending.clone() {
                    Ending::Worker(exit) => Failure::WorkerDied { pid, exit, attempts },
                    Ending::Node { node, reason } => Failure::NodeDied { node, pid, reason, attempts },
                });
                self.commands.push_back(Command::Complete { task, outcome });
            } else {
                entry.retries_left -= 1;
                entry.state = TaskState::Queued;
                self.shapes[shape].queue.push_front(task);
            }
        }
        self.dispatch(now, shape);
    }

    /// Cancels a task: one not running yet at once; a running one at once too (Ray): with
    /// `force` its worker is killed (tasks pushed behind it there are retried), without it the
    /// worker is told ([`Command::Interrupt`]) and the task's reply is discarded when it comes.
    /// Returns whether it was cancelled (it then completes with [`Failure::Cancelled`]); a
    /// task already finished is not.
    pub fn cancel(&mut self, now: Duration, task: TaskId, force: bool) -> bool {
        let Some(entry) = self.tasks.get(&task) else { return false };
        let shape = entry.shape;
        match entry.state {
            TaskState::Resolving => {}
            TaskState::Queued => self.shapes[shape].queue.retain(|other| *other != task),
            TaskState::Running { request } if force => {
                if let Some(Lease { phase: LeasePhase::Granted { running, .. }, .. }) =
                    self.leases.get_mut(&request)
                {
                    running.retain(|other| *other != task);
                }
                self.tasks.remove(&task);
                self.commands.push_back(Command::Complete { task, outcome: Err(Failure::Cancelled) });
                self.worker_died(now, request, &Ending::worker("killed by a forced cancel"));
                return true;
            }
            TaskState::Running { request } => {
                // It stays on its worker's list until the reply frees the worker.
                self.tasks.remove(&task);
                self.commands.push_back(Command::Complete { task, outcome: Err(Failure::Cancelled) });
                self.commands.push_back(Command::Interrupt { request, task });
                return true;
            }
        }
        self.tasks.remove(&task);
        self.commands.push_back(Command::Complete { task, outcome: Err(Failure::Cancelled) });
        true
    }

    /// When [`Self::handle_timeout`] should next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.idle_leases()
            .filter_map(|lease| match &lease.phase {
                LeasePhase::Granted { idle_since: Some(since), .. } => Some(*since + self.config.linger),
                _ => None,
            })
            .min()
    }

    /// Returns the leases that have lingered with nothing to run for long enough.
    pub fn handle_timeout(&mut self, now: Duration) {
        let linger = self.config.linger;
        let mut expired: Vec<RequestId> = self
            .shapes
            .iter()
            .flat_map(|state| state.idle.iter())
            .filter(|request| {
                matches!(self.leases.get(request), Some(Lease { phase: LeasePhase::Granted { idle_since: Some(since), .. }, .. }) if *since + linger <= now)
            })
            .copied()
            .collect();
        expired.sort();
        for request in expired {
            let Some(lease) = self.leases.remove(&request) else { continue };
            let LeasePhase::Granted { lease: id, .. } = lease.phase else { continue };
            self.shapes[lease.shape].granted.retain(|other| *other != request);
            self.shapes[lease.shape].idle.remove(&request);
            self.commands.push_back(Command::ReturnLease {
                request,
                lease: id,
                node: lease.node,
                reusable: true,
            });
        }
    }

    /// Hands queued tasks of `shape` to its granted leases, and asks for more leases while
    /// more tasks are queued than leases are idle or coming.
    fn dispatch(&mut self, now: Duration, shape: usize) {
        let state = &mut self.shapes[shape];
        let idle = state.idle.len();
        // Compare the queue with the requests still waiting and the idle leases, not with the
        // leases in use: a lease busy with a long task must not keep a queued task from a
        // lease of its own.
        while state.waiting < self.config.lease_requests_max && state.waiting + idle < state.queue.len() {
            // The request is for the first queued task no idle lease or earlier request
            // stands for: it asks where that task's arguments are.
            let (near, arguments) = state
                .queue
                .get(idle + state.waiting)
                .and_then(|task| self.tasks.get(task))
                .map_or((None, Vec::new()), |task| (task.near, task.arguments.clone()));
            state.waiting += 1;
            let request = RequestId(self.next_request);
            self.next_request += 1;
            let lease =
                Lease { shape, node: near, phase: LeasePhase::Requested, arguments: arguments.clone() };
            self.leases.insert(request, lease);
            self.commands.push_back(Command::RequestLease {
                request,
                shape: state.shape.clone(),
                node: near,
                spilled: false,
                arguments,
            });
        }
        let depth = self.config.fixed_depth.unwrap_or_else(|| {
            let short = self.config.short_task.as_micros() as f64;
            if state.mean_us.is_some_and(|mean| mean < short) {
                self.config.pipeline_max
            } else {
                1
            }
        });
        // First a task for each lease with nothing to run (oldest first)...
        while !state.queue.is_empty() {
            let Some(request) = state.idle.pop_first() else { break };
            let Some(Lease { phase: LeasePhase::Granted { running, idle_since, .. }, .. }) =
                self.leases.get_mut(&request)
            else {
                continue;
            };
            let task = state.queue.pop_front().expect("the queue is not empty");
            push(&mut self.tasks, &mut self.commands, request, running, task);
            *idle_since = None;
        }
        // ...then tasks pushed ahead (behind a running one), and those only while more are
        // queued than leases are coming: a short task never waits behind a long one while a
        // free worker is on its way for it.
        if depth > 1 {
            for request in state.granted.iter().copied() {
                if state.queue.len() <= state.waiting {
                    break;
                }
                let Some(Lease { phase: LeasePhase::Granted { running, idle_since, .. }, .. }) =
                    self.leases.get_mut(&request)
                else {
                    continue;
                };
                while running.len() < depth && state.queue.len() > state.waiting {
                    let task = state.queue.pop_front().expect("more queued than waiting");
                    if running.is_empty() {
                        state.idle.remove(&request);
                        *idle_since = None;
                    }
                    push(&mut self.tasks, &mut self.commands, request, running, task);
                }
            }
        }
        for request in &state.idle {
            if let Some(Lease { phase: LeasePhase::Granted { idle_since, .. }, .. }) =
                self.leases.get_mut(request)
            {
                idle_since.get_or_insert(now);
            }
        }
    }

    /// The granted leases with nothing to run.
    fn idle_leases(&self) -> impl Iterator<Item = &Lease> {
        self.shapes.iter().flat_map(|state| state.idle.iter()).filter_map(|request| self.leases.get(request))
    }
}

/// Hands `task` to the leased worker of `request`.
fn push<O>(
    tasks: &mut HashMap<TaskId, Task>,
    commands: &mut VecDeque<Command<O>>,
    request: RequestId,
    running: &mut Vec<TaskId>,
    task: TaskId,
) {
    let entry = tasks.get_mut(&task).expect("queued tasks are open");
    entry.state = TaskState::Running { request };
    entry.attempts += 1;
    running.push(task);
    commands.push_back(Command::Push { request, task, attempt: entry.attempts });
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{HashMap, HashSet};

    fn task(index: u64) -> TaskId {
        ObjectId::from_parts([0; 12], index)
    }

    fn shape(function: &'static str) -> Shape {
        Shape::new(function, 1.0, 0.0, &[], SchedulingStrategy::Hybrid)
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn drain(core: &mut SubmitterCore<u32>) -> Vec<Command<u32>> {
        core.poll_commands().collect()
    }

    fn requests(commands: &[Command<u32>]) -> Vec<RequestId> {
        commands
            .iter()
            .filter_map(|command| match command {
                Command::RequestLease { request, .. } => Some(*request),
                _ => None,
            })
            .collect()
    }

    fn pushes(commands: &[Command<u32>]) -> Vec<(RequestId, TaskId)> {
        commands
            .iter()
            .filter_map(|command| match command {
                Command::Push { request, task, .. } => Some((*request, *task)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_lease_runs_queued_tasks_one_after_another_then_lingers_and_goes_back() {
        let mut core = SubmitterCore::<u32>::new(SubmitterConfig::default());
        for index in 0..3 {
            core.submit(task(index), shape("f"), 0);
            core.resolved(ms(0), task(index));
        }
        let commands = drain(&mut core);
        let asked = requests(&commands);
        assert_eq!(asked.len(), 3, "one request per queued task: {commands:?}");
        core.lease_answered(ms(1), asked[0], LeaseAnswer::Granted { lease: 7, pid: 70 });
        // Unknown durations: one task at a time.
        assert_eq!(pushes(&drain(&mut core)), vec![(asked[0], task(0))]);
        core.task_replied(ms(2), asked[0], task(0), Some(5_000), 10);
        let commands = drain(&mut core);
        assert_eq!(commands[0], Command::Complete { task: task(0), outcome: Ok(10) });
        assert_eq!(pushes(&commands), vec![(asked[0], task(1))]);
        core.task_replied(ms(3), asked[0], task(1), Some(5_000), 11);
        core.task_replied(ms(3), asked[0], task(1), Some(5_000), 12);
        let commands = drain(&mut core);
        assert!(commands.contains(&Command::Discard { task: task(1), output: 12 }), "{commands:?}");
        core.task_replied(ms(4), asked[0], task(2), None, 13);
        drain(&mut core);
        assert_eq!(core.tasks_open(), 0);
        // Idle since 4 ms: back at 6 ms, not before.
        assert_eq!(core.poll_timeout(), Some(ms(6)));
        core.handle_timeout(ms(5));
        assert!(drain(&mut core).is_empty());
        core.handle_timeout(ms(6));
        assert_eq!(
            drain(&mut core),
            vec![Command::ReturnLease { request: asked[0], lease: 7, node: None, reusable: true }]
        );
        // The two other requests are still owed an answer; a late grant lingers and goes back.
        core.lease_answered(ms(7), asked[1], LeaseAnswer::Granted { lease: 8, pid: 80 });
        core.handle_timeout(ms(9));
        assert_eq!(
            drain(&mut core),
            vec![Command::ReturnLease { request: asked[1], lease: 8, node: None, reusable: true }]
        );
    }

    #[test]
    fn short_tasks_are_pipelined_only_while_more_are_queued_than_leases_are_coming() {
        let config = SubmitterConfig { lease_requests_max: 2, ..SubmitterConfig::default() };
        let mut core = SubmitterCore::<u32>::new(config);
        core.submit(task(0), shape("f"), 0);
        core.resolved(ms(0), task(0));
        let asked = requests(&drain(&mut core));
        core.lease_answered(ms(0), asked[0], LeaseAnswer::Granted { lease: 1, pid: 1 });
        drain(&mut core);
        core.task_replied(ms(0), asked[0], task(0), Some(10), 0);
        drain(&mut core);
        for index in 1..=20 {
            core.submit(task(index), shape("f"), 0);
            core.resolved(ms(1), task(index));
        }
        let commands = drain(&mut core);
        // The idle lease takes a full pipeline (18 queued > 2 coming); two more leases asked.
        assert_eq!(pushes(&commands).len(), 8, "{commands:?}");
        assert_eq!(requests(&commands).len(), 2);
    }

    #[test]
    fn a_dead_worker_s_tasks_are_retried_in_order_then_fail_with_the_exit() {
        let mut core =
            SubmitterCore::<u32>::new(SubmitterConfig { fixed_depth: Some(2), ..Default::default() });
        core.submit(task(0), shape("f"), 1);
        core.submit(task(1), shape("f"), 0);
        core.resolved(ms(0), task(0));
        core.resolved(ms(0), task(1));
        let asked = requests(&drain(&mut core));
        core.lease_answered(ms(0), asked[0], LeaseAnswer::Granted { lease: 1, pid: 41 });
        // Only one lease is granted and one is coming: no task is pushed ahead yet.
        assert_eq!(pushes(&drain(&mut core)).len(), 1);
        core.lease_answered(ms(0), asked[1], LeaseAnswer::Granted { lease: 2, pid: 42 });
        assert_eq!(pushes(&drain(&mut core)), vec![(asked[1], task(1))]);
        core.worker_died(ms(1), asked[1], &Ending::worker("killed by signal 9"));
        let commands = drain(&mut core);
        assert!(commands.contains(&Command::ReturnLease {
            request: asked[1],
            lease: 2,
            node: None,
            reusable: false
        }));
        assert!(commands.contains(&Command::Complete {
            task: task(1),
            outcome: Err(Failure::WorkerDied { pid: 42, exit: "killed by signal 9".into(), attempts: 1 })
        }));
        core.worker_died(ms(1), asked[0], &Ending::worker("killed by signal 9"));
        let commands = drain(&mut core);
        let again = requests(&commands);
        assert_eq!(again.len(), 1, "task 0 has a retry left: {commands:?}");
        core.lease_answered(ms(2), again[0], LeaseAnswer::Granted { lease: 3, pid: 43 });
        let commands = drain(&mut core);
        assert!(commands.contains(&Command::Push { request: again[0], task: task(0), attempt: 2 }));
    }

    #[test]
    fn a_task_near_its_arguments_asks_their_node_first_and_here_when_that_node_is_gone() {
        let mut core = SubmitterCore::<u32>::new(SubmitterConfig::default());
        let far = NodeId([5; 16]);
        core.submit(task(0), shape("f"), 0);
        let weights = vec![(far, 5_000_000)];
        core.resolved_near(ms(0), task(0), Some(far), weights.clone());
        let commands = drain(&mut core);
        let asked = requests(&commands);
        assert_eq!(
            commands,
            vec![Command::RequestLease {
                request: asked[0],
                shape: shape("f"),
                node: Some(far),
                spilled: false,
                arguments: weights.clone()
            }],
            "asked where the arguments are, free to spill back"
        );
        core.lease_answered(ms(1), asked[0], LeaseAnswer::Lost);
        assert_eq!(
            drain(&mut core),
            vec![Command::RequestLease {
                request: asked[0],
                shape: shape("f"),
                node: None,
                spilled: false,
                arguments: weights
            }],
            "asked here again, with the same arguments"
        );
    }

    #[test]
    fn a_task_whose_node_died_on_its_last_attempt_fails_naming_the_node() {
        let mut core = SubmitterCore::<u32>::new(SubmitterConfig::default());
        core.submit(task(0), shape("f"), 0);
        core.resolved(ms(0), task(0));
        let asked = requests(&drain(&mut core));
        let far = NodeId([7; 16]);
        core.lease_answered(ms(0), asked[0], LeaseAnswer::Spillback { node: far });
        let again = requests(&drain(&mut core));
        core.lease_answered(ms(1), again[0], LeaseAnswer::Granted { lease: 1, pid: 41 });
        assert_eq!(pushes(&drain(&mut core)), vec![(again[0], task(0))]);
        let ending = Ending::Node { node: far, reason: "connection lost".into() };
        core.worker_died(ms(2), again[0], &ending);
        let commands = drain(&mut core);
        assert!(
            commands.contains(&Command::Complete {
                task: task(0),
                outcome: Err(Failure::NodeDied {
                    node: far,
                    pid: 41,
                    reason: "connection lost".into(),
                    attempts: 1
                })
            }),
            "{commands:?}"
        );
    }

    #[test]
    fn a_refusal_fails_every_queued_task_of_the_shape_and_no_other() {
        let mut core = SubmitterCore::<u32>::new(SubmitterConfig::default());
        core.submit(task(0), shape("f"), 3);
        core.submit(task(1), shape("f"), 3);
        core.submit(task(2), shape("g"), 3);
        for index in 0..3 {
            core.resolved(ms(0), task(index));
        }
        let commands = drain(&mut core);
        let first_f = match &commands[0] {
            Command::RequestLease { request, shape, .. } if shape.function == "f" => *request,
            other => panic!("expected f's request first, got {other:?}"),
        };
        let refusal = Refusal::Infeasible { demand: "{CPU: 64}".into() };
        core.lease_answered(ms(1), first_f, LeaseAnswer::Refused(refusal.clone()));
        let completed: Vec<TaskId> = drain(&mut core)
            .into_iter()
            .map(|command| match command {
                Command::Complete { task, outcome } => {
                    assert_eq!(outcome, Err(Failure::Refused(refusal.clone())));
                    task
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(completed, vec![task(0), task(1)]);
        assert_eq!(core.tasks_open(), 1, "g's task is untouched");
    }

    #[test]
    fn spillback_asks_the_named_node_and_a_lost_request_is_asked_again_at_home() {
        let mut core = SubmitterCore::<u32>::new(SubmitterConfig::default());
        core.submit(task(0), shape("f"), 0);
        core.resolved(ms(0), task(0));
        let asked = requests(&drain(&mut core));
        let elsewhere = NodeId([9; 16]);
        core.lease_answered(ms(1), asked[0], LeaseAnswer::Spillback { node: elsewhere });
        assert_eq!(
            drain(&mut core),
            vec![Command::RequestLease {
                request: asked[0],
                shape: shape("f"),
                node: Some(elsewhere),
                spilled: true,
                arguments: Vec::new()
            }]
        );
        core.lease_answered(ms(2), asked[0], LeaseAnswer::Lost);
        assert_eq!(
            drain(&mut core),
            vec![Command::RequestLease {
                request: asked[0],
                shape: shape("f"),
                node: None,
                spilled: false,
                arguments: Vec::new()
            }]
        );
        core.lease_answered(ms(3), asked[0], LeaseAnswer::Granted { lease: 5, pid: 5 });
        assert_eq!(pushes(&drain(&mut core)), vec![(asked[0], task(0))]);
    }

    #[test]
    fn cancel_takes_a_queued_task_back_and_a_running_one_at_once() {
        let mut core =
            SubmitterCore::<u32>::new(SubmitterConfig { fixed_depth: Some(1), ..Default::default() });
        for index in 0..4 {
            core.submit(task(index), shape("f"), 2);
        }
        assert!(core.cancel(ms(0), task(3), false), "resolving");
        assert!(!core.resolved(ms(0), task(3)), "a cancelled task's arguments are dropped");
        for index in 0..3 {
            core.resolved(ms(0), task(index));
        }
        let asked = requests(&drain(&mut core));
        core.lease_answered(ms(1), asked[0], LeaseAnswer::Granted { lease: 1, pid: 1 });
        assert_eq!(pushes(&drain(&mut core)), vec![(asked[0], task(0))]);
        // Running, without force (Ray): over at once, the worker told, the reply discarded
        // when it comes, and the worker goes on with the next task.
        assert!(core.cancel(ms(1), task(0), false), "running, without force");
        let commands = drain(&mut core);
        assert!(commands.contains(&Command::Complete { task: task(0), outcome: Err(Failure::Cancelled) }));
        assert!(commands.contains(&Command::Interrupt { request: asked[0], task: task(0) }));
        assert!(!commands.iter().any(|command| matches!(command, Command::ReturnLease { .. })));
        core.task_replied(ms(2), asked[0], task(0), None, 7);
        let commands = drain(&mut core);
        assert!(commands.contains(&Command::Discard { task: task(0), output: 7 }));
        assert_eq!(pushes(&commands), vec![(asked[0], task(1))], "the worker takes the next task");
        assert!(core.cancel(ms(2), task(2), false), "still queued");
        // Running, with force: its worker is killed.
        assert!(core.cancel(ms(3), task(1), true), "running, with force");
        let commands = drain(&mut core);
        assert!(commands.contains(&Command::Complete { task: task(1), outcome: Err(Failure::Cancelled) }));
        assert!(commands.contains(&Command::ReturnLease {
            request: asked[0],
            lease: 1,
            node: None,
            reusable: false
        }));
        // The killed worker's late reply is not the task's outcome.
        core.task_replied(ms(4), asked[0], task(1), None, 1);
        assert_eq!(drain(&mut core), vec![Command::Discard { task: task(1), output: 1 }]);
        assert!(!core.cancel(ms(4), task(1), true), "already over");
        assert_eq!(core.tasks_open(), 0);
    }

    /// A step of the random drive: what the network and the workers do next.
    #[derive(Debug, Clone)]
    enum Step {
        Submit {
            function: usize,
            retries: u32,
        },
        Resolve(usize),
        /// Answer the oldest unanswered lease request whose index is this modulo their count.
        Answer {
            pick: usize,
            how: u8,
        },
        /// A pushed task's worker replies.
        Reply(usize),
        /// A granted lease's worker dies.
        Die(usize),
        Cancel {
            pick: usize,
            force: bool,
        },
        Advance(u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (0..3usize, 0..3u32).prop_map(|(function, retries)| Step::Submit { function, retries }),
            3 => (0..64usize).prop_map(Step::Resolve),
            4 => (0..64usize, 0..10u8).prop_map(|(pick, how)| Step::Answer { pick, how }),
            4 => (0..64usize).prop_map(Step::Reply),
            1 => (0..64usize).prop_map(Step::Die),
            1 => (0..64usize, any::<bool>()).prop_map(|(pick, force)| Step::Cancel { pick, force }),
            2 => (0..5u64).prop_map(Step::Advance),
        ]
    }

    /// The world around the core, and the invariants it must keep.
    #[derive(Default)]
    struct Harness {
        now: u64,
        submitted: Vec<TaskId>,
        resolving: Vec<TaskId>,
        /// Requests asked and not answered.
        asked: Vec<RequestId>,
        /// Granted leases not returned.
        granted: HashSet<RequestId>,
        /// Pushes not answered: (lease, task).
        pushed: Vec<(RequestId, TaskId)>,
        completed: HashSet<TaskId>,
        retries: HashMap<TaskId, u32>,
        attempts: HashMap<TaskId, u32>,
        returned: HashSet<RequestId>,
        next_lease: u64,
        replies: u64,
        replies_accounted: u64,
    }

    impl Harness {
        fn absorb(
            &mut self,
            core: &mut SubmitterCore<u64>,
            config: &SubmitterConfig,
        ) -> Result<(), TestCaseError> {
            let commands: Vec<Command<u64>> = core.poll_commands().collect();
            for command in commands {
                match command {
                    Command::RequestLease { request, .. } => {
                        prop_assert!(!self.asked.contains(&request), "{request:?} asked twice at once");
                        self.asked.push(request);
                    }
                    Command::Push { request, task, attempt } => {
                        prop_assert!(
                            self.granted.contains(&request),
                            "push to {request:?}, not a held lease"
                        );
                        prop_assert!(!self.completed.contains(&task), "push of a completed task");
                        prop_assert!(
                            self.pushed.iter().all(|(_, other)| *other != task),
                            "{task:?} pushed while it runs elsewhere"
                        );
                        let attempts = self.attempts.entry(task).or_default();
                        *attempts += 1;
                        prop_assert_eq!(*attempts, attempt);
                        prop_assert!(attempt <= self.retries[&task] + 1, "more attempts than retries allow");
                        let on_lease = self.pushed.iter().filter(|(held, _)| *held == request).count();
                        prop_assert!(on_lease < config.pipeline_max, "pipeline deeper than its maximum");
                        self.pushed.push((request, task));
                    }
                    Command::ReturnLease { request, reusable, .. } => {
                        prop_assert!(self.granted.remove(&request), "{request:?} returned but not held");
                        prop_assert!(self.returned.insert(request), "{request:?} returned twice");
                        if reusable {
                            prop_assert!(
                                self.pushed.iter().all(|(held, _)| *held != request),
                                "a lease returned while its worker runs a task"
                            );
                        }
                        // A returned lease's pushes are answered by nobody any more.
                        self.pushed.retain(|(held, _)| *held != request);
                    }
                    Command::Complete { task, .. } => {
                        prop_assert!(self.submitted.contains(&task), "completion of an unknown task");
                        prop_assert!(self.completed.insert(task), "{task:?} completed twice");
                        self.resolving.retain(|other| *other != task);
                    }
                    Command::Discard { .. } => self.replies_accounted += 1,
                    Command::Interrupt { request, task } => {
                        prop_assert!(
                            self.pushed.contains(&(request, task)),
                            "interrupt of {task:?}, not running there"
                        );
                        prop_assert!(
                            self.completed.contains(&task),
                            "interrupted before it completed as cancelled"
                        );
                    }
                }
            }
            let waiting_per_shape = self.asked.len();
            prop_assert!(waiting_per_shape <= config.lease_requests_max * 3, "too many requests waiting");
            Ok(())
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Whatever the raylets and workers do, in whatever order: each task completes exactly
        /// once, never runs on two workers at once, never beyond its retries; every granted
        /// lease goes back exactly once; every reply is a completion or a discard; and once the
        /// world goes quiet nothing is left open.
        #[test]
        fn every_task_completes_once_and_every_lease_goes_back(
            steps in proptest::collection::vec(step(), 1..300),
            depth in prop_oneof![Just(None), (1..4usize).prop_map(Some)],
        ) {
            let config = SubmitterConfig {
                lease_requests_max: 3,
                pipeline_max: 4,
                fixed_depth: depth,
                ..SubmitterConfig::default()
            };
            let mut core = SubmitterCore::<u64>::new(config);
            let mut world = Harness { next_lease: 1, ..Harness::default() };
            let functions = ["f", "g", "h"];
            for step in steps {
                let now = ms(world.now);
                match step {
                    Step::Submit { function, retries } => {
                        let id = task(world.submitted.len() as u64);
                        prop_assert!(core.submit(id, shape(functions[function]), retries));
                        world.submitted.push(id);
                        world.resolving.push(id);
                        world.retries.insert(id, retries);
                    }
                    Step::Resolve(pick) if !world.resolving.is_empty() => {
                        let id = world.resolving.remove(pick % world.resolving.len());
                        if pick % 7 == 0 {
                            if core.resolve_failed(id) {
                                prop_assert!(world.completed.insert(id));
                            }
                        } else {
                            core.resolved(now, id);
                        }
                    }
                    Step::Answer { pick, how } if !world.asked.is_empty() => {
                        let request = world.asked.remove(pick % world.asked.len());
                        let answer = match how {
                            0 => LeaseAnswer::Refused(Refusal::Infeasible { demand: "x".into() }),
                            1 => LeaseAnswer::Spillback { node: NodeId([how; 16]) },
                            2 => LeaseAnswer::Lost,
                            _ => {
                                world.granted.insert(request);
                                world.next_lease += 1;
                                LeaseAnswer::Granted { lease: world.next_lease, pid: 1 }
                            }
                        };
                        core.lease_answered(now, request, answer);
                    }
                    Step::Reply(pick) if !world.pushed.is_empty() => {
                        let (request, id) = world.pushed.remove(pick % world.pushed.len());
                        world.replies += 1;
                        let before = world.completed.len();
                        core.task_replied(now, request, id, Some(pick as u64 * 300), id.0[19] as u64);
                        world.absorb(&mut core, &config)?;
                        // The reply became this task's completion, or a discard.
                        if world.completed.len() > before && world.completed.contains(&id) {
                            world.replies_accounted += 1;
                        }
                        continue;
                    }
                    Step::Die(pick) if !world.granted.is_empty() => {
                        let mut held: Vec<RequestId> = world.granted.iter().copied().collect();
                        held.sort();
                        let request = held[pick % held.len()];
                        world.pushed.retain(|(lease, _)| *lease != request);
                        core.worker_died(now, request, &Ending::worker("killed by signal 9"));
                    }
                    Step::Cancel { pick, force } if !world.submitted.is_empty() => {
                        let id = world.submitted[pick % world.submitted.len()];
                        let was_open = !world.completed.contains(&id);
                        let cancelled = core.cancel(now, id, force);
                        prop_assert!(!cancelled || was_open, "a completed task cancelled");
                        if cancelled && force {
                            world.pushed.retain(|(_, other)| *other != id);
                        }
                    }
                    Step::Advance(by) => {
                        world.now += by;
                        core.handle_timeout(ms(world.now));
                    }
                    _ => {}
                }
                world.absorb(&mut core, &config)?;
            }
            // Quiesce: resolve everything, grant every request, answer every push, let time pass.
            for _ in 0..10_000 {
                let now = ms(world.now);
                if let Some(id) = world.resolving.pop() {
                    core.resolved(now, id);
                } else if let Some(request) = world.asked.pop() {
                    world.granted.insert(request);
                    world.next_lease += 1;
                    core.lease_answered(now, request, LeaseAnswer::Granted { lease: world.next_lease, pid: 1 });
                } else if !world.pushed.is_empty() {
                    let (request, id) = world.pushed.remove(0);
                    world.replies += 1;
                    let before = world.completed.len();
                    core.task_replied(now, request, id, None, 0);
                    world.absorb(&mut core, &config)?;
                    if world.completed.len() > before {
                        world.replies_accounted += 1;
                    }
                    continue;
                } else if core.leases_open() > 0 {
                    world.now += 10;
                    core.handle_timeout(ms(world.now));
                } else {
                    break;
                }
                world.absorb(&mut core, &config)?;
            }
            prop_assert_eq!(core.tasks_open(), 0, "tasks left open");
            prop_assert_eq!(core.leases_open(), 0, "leases left open");
            prop_assert!(world.granted.is_empty(), "granted leases never returned: {:?}", world.granted);
            prop_assert_eq!(world.completed.len(), world.submitted.len(), "every task completed");
            prop_assert_eq!(world.replies, world.replies_accounted, "every reply completed a task or was discarded");
        }
    }
}
