//! `manta-sim`: a deterministic, single-threaded simulation of a Manta cluster over the same
//! sans-IO cores the daemons run (the GCS core, one lease manager per node, the scheduling
//! policy), with simulated time and an in-memory network that delays and reorders messages and
//! breaks links.
//!
//! Everything that happens is an event in one queue ordered by (simulated time, sequence
//! number); every random choice comes from one seeded generator. A run is a pure function of
//! its seed and its [`SimConfig`], so a failure printed with its seed replays exactly
//! (`MANTA_SIM_SEED=<seed> cargo test -p manta-sim replay`). After every event the invariants
//! are checked:
//!
//! - each node's resources are conserved: what is free plus what granted leases hold is the
//!   node's total, and no release ever exceeds it;
//! - each lease request is answered at most once (a `WorkerDied` may follow a grant);
//! - at the end, every task is finished or failed with a reason, and nothing is stuck: a run
//!   that goes quiet or exceeds its time bound with unfinished work is a failure.
//!
//! A link break models what the real transport does on a lost connection: messages in flight
//! on it are gone and both ends learn of it; the raylet cancels the leases of a requester it
//! lost (`LeaseManager::cancel`), the requester retries. Tasks are therefore run *at least*
//! once, as in Ray; the submitter records the first result.
//!
//! The submitter here is a model of the core worker's (one lease per task, retries on worker
//! death). The worker's own cores join the simulation as they become sans-IO.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use manta_gcs::wire::{NodeInfo, NodeState};
use manta_gcs::{GcsCore, MemoryStorage};
use manta_raylet::{
    Command, DefaultPolicy, LeaseId, LeaseManager, LeaseReply, NodeResources, NodeView, PoolConfig, Quantity,
    RandomSource, ResourceSet, SchedulingStrategy, SplitMix64, WorkerId, CPU,
};
use manta_transport::NodeId;

/// The shape of one simulated run.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Nodes in the cluster.
    pub nodes: usize,
    /// CPUs per node.
    pub cpus_per_node: u64,
    /// Submitting processes (drivers), each attached to a home node.
    pub submitters: usize,
    /// Tasks each submitter runs.
    pub tasks_per_submitter: usize,
    /// Retries of a task whose worker dies (Ray's `max_retries`).
    pub max_retries: u32,
    /// Chance, in thousandths, that a task's worker crashes while running it.
    pub crash_per_mille: u32,
    /// Chance, in thousandths, that a worker process fails to start.
    pub start_failure_per_mille: u32,
    /// Chance, in thousandths per message, that its link breaks instead.
    pub link_break_per_mille: u32,
    /// One-way network delay bounds, ms (each message draws its own: messages reorder).
    pub latency_ms: (u64, u64),
    /// A run that has not finished by this simulated time is stuck.
    pub time_limit_ms: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 4,
            cpus_per_node: 2,
            submitters: 3,
            tasks_per_submitter: 20,
            max_retries: 3,
            crash_per_mille: 30,
            start_failure_per_mille: 20,
            link_break_per_mille: 5,
            latency_ms: (1, 20),
            time_limit_ms: 3_600_000,
        }
    }
}

/// What a finished run saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Events processed.
    pub events: u64,
    /// Simulated time at the end, ms.
    pub end_ms: u64,
    /// Tasks that finished.
    pub finished: usize,
    /// Tasks that failed (with their reasons counted by kind).
    pub failed: BTreeMap<String, usize>,
    /// Worker crashes, failed starts and broken links injected.
    pub faults: u64,
}

/// A broken invariant, with what is needed to replay it.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The run's seed.
    pub seed: u64,
    /// Simulated time of the event after which the invariant broke.
    pub time_ms: u64,
    /// Events processed by then.
    pub events: u64,
    /// The broken invariant.
    pub invariant: String,
    /// The last events, oldest first.
    pub trace: Vec<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "simulation seed {} broke an invariant at {} ms after {} events: {}",
            self.seed, self.time_ms, self.events, self.invariant
        )?;
        writeln!(f, "replay: MANTA_SIM_SEED={} cargo test -p manta-sim replay -- --nocapture", self.seed)?;
        writeln!(f, "last events:")?;
        for line in &self.trace {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

type Submitter = usize;
type Node = usize;
type TaskId = usize;

/// A message on the simulated network.
#[derive(Debug, Clone)]
enum Message {
    RequestLease { lease: LeaseId, from: Submitter, cpus: u64, strategy: SchedulingStrategy },
    LeaseAnswer { lease: LeaseId, reply: LeaseReply },
    PushTask { lease: LeaseId, worker: WorkerId, task: TaskId, from: Submitter },
    TaskResult { lease: LeaseId, task: TaskId, ok: bool },
    ReturnLease { lease: LeaseId },
}

#[derive(Debug, Clone)]
enum Event {
    /// A message arrives (`to_node` says which way it travels).
    Deliver { submitter: Submitter, node: Node, to_node: bool, link: u64, message: Message },
    /// A started worker process registers, or dies trying.
    WorkerUp { node: Node, worker: WorkerId, fails: bool },
    /// A running task ends, or its worker crashes.
    TaskEnds { node: Node, worker: WorkerId, lease: LeaseId, task: TaskId, from: Submitter, crash: bool },
    /// Both ends of a broken link learn of it.
    LinkLost { submitter: Submitter, node: Node },
    /// A node's periodic work: timeouts, and the resource view of its peers (the GCS's sync).
    Tick { node: Node },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TaskState {
    Pending,
    Requested { lease: LeaseId, node: Node },
    Running { lease: LeaseId, node: Node },
    Done,
    Failed(String),
}

struct Task {
    state: TaskState,
    cpus: u64,
    strategy: SchedulingStrategy,
    attempts: u32,
}

struct SimNode {
    id: NodeId,
    leases: LeaseManager<DefaultPolicy>,
    /// Processes alive, and the task each runs.
    workers: HashMap<WorkerId, Option<(LeaseId, TaskId, Submitter)>>,
    /// Which submitter asked for each lease this node knows.
    requesters: HashMap<LeaseId, Submitter>,
    /// Resources each granted lease holds, as the answers said (the conservation check).
    held: HashMap<LeaseId, ResourceSet>,
    /// Leases answered, and whether the answer was a grant.
    answered: HashMap<LeaseId, bool>,
    /// What each lease request asked for.
    demands: HashMap<LeaseId, ResourceSet>,
    /// Whether the node is alive.
    alive: bool,
}

struct World {
    config: SimConfig,
    seed: u64,
    random: SplitMix64,
    now: u64,
    seq: u64,
    events: BTreeMap<(u64, u64), Event>,
    nodes: Vec<SimNode>,
    gcs: GcsCore<MemoryStorage>,
    tasks: Vec<Vec<Task>>,
    /// The generation of each (submitter, node) link; a break starts a new one.
    links: HashMap<(Submitter, Node), u64>,
    next_lease: u64,
    processed: u64,
    trace: std::collections::VecDeque<String>,
    report: Report,
    /// An invariant broken inside a handler, reported by the next check.
    violation: Option<String>,
}

const TRACE_LEN: usize = 400;
const TICK_MS: u64 = 100;

/// Runs one simulation; `Ok` with what it saw, or the first broken invariant.
pub fn run(seed: u64, config: &SimConfig) -> Result<Report, Failure> {
    let mut world = World::new(seed, config.clone());
    world.start();
    while let Some(((time, _), event)) = world.events.pop_first() {
        world.now = time;
        world.processed += 1;
        if world.trace.len() == TRACE_LEN {
            world.trace.pop_front();
        }
        world.trace.push_back(format!("{time} ms: {event:?}"));
        world.handle(event);
        world.check()?;
        if world.all_tasks_settled() {
            break;
        }
        if world.now > world.config.time_limit_ms {
            return Err(world.failure(format!("not finished by {} ms: {}", world.now, world.unsettled())));
        }
    }
    if !world.all_tasks_settled() {
        return Err(world.failure(format!("nothing left to happen, yet {}", world.unsettled())));
    }
    world.report.events = world.processed;
    world.report.end_ms = world.now;
    for tasks in &world.tasks {
        for task in tasks {
            match &task.state {
                TaskState::Done => world.report.finished += 1,
                TaskState::Failed(reason) => {
                    let kind = reason.split(':').next().unwrap_or(reason).to_owned();
                    *world.report.failed.entry(kind).or_default() += 1;
                }
                _ => unreachable!("all settled"),
            }
        }
    }
    Ok(world.report)
}

fn node_id(index: Node) -> NodeId {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&(index as u64 + 1).to_be_bytes());
    NodeId(bytes)
}

fn cpus(n: u64) -> ResourceSet {
    ResourceSet::new().with(CPU, Quantity::units(n))
}

impl World {
    fn new(seed: u64, config: SimConfig) -> World {
        let mut gcs = GcsCore::new(MemoryStorage::default());
        let nodes = (0..config.nodes)
            .map(|index| {
                let id = node_id(index);
                let total = cpus(config.cpus_per_node);
                let info = NodeInfo {
                    node_id: id,
                    address: format!("10.0.{}.{}:7400", index / 250, index % 250),
                    resources: vec![(CPU.to_owned(), config.cpus_per_node as f64)],
                    state: NodeState::Alive,
                    registered_ms: 0,
                    death_cause: None,
                };
                gcs.register_node(info).expect("a fresh GCS registers every node");
                let pool =
                    PoolConfig { workers_max: config.cpus_per_node as usize * 2, ..PoolConfig::default() };
                SimNode {
                    id,
                    leases: LeaseManager::new(id, total, DefaultPolicy::default(), pool),
                    workers: HashMap::new(),
                    requesters: HashMap::new(),
                    held: HashMap::new(),
                    answered: HashMap::new(),
                    demands: HashMap::new(),
                    alive: true,
                }
            })
            .collect();
        let mut random = SplitMix64(seed);
        let tasks = (0..config.submitters)
            .map(|_| {
                (0..config.tasks_per_submitter)
                    .map(|_| {
                        let strategy = match random.below(10) {
                            0 => SchedulingStrategy::Spread,
                            1 => SchedulingStrategy::NodeAffinity {
                                node: node_id(random.below(config.nodes + 1)),
                                soft: random.below(2) == 0,
                            },
                            _ => SchedulingStrategy::Hybrid,
                        };
                        // Now and then more than any node has: infeasible.
                        let cpus = if random.below(50) == 0 { config.cpus_per_node + 1 } else { 1 };
                        Task { state: TaskState::Pending, cpus, strategy, attempts: 0 }
                    })
                    .collect()
            })
            .collect();
        World {
            config,
            seed,
            random,
            now: 0,
            seq: 0,
            events: BTreeMap::new(),
            nodes,
            gcs,
            tasks,
            links: HashMap::new(),
            next_lease: 1,
            processed: 0,
            trace: std::collections::VecDeque::new(),
            report: Report::default(),
            violation: None,
        }
    }

    fn chance(&mut self, per_mille: u32) -> bool {
        self.random.below(1000) < per_mille as usize
    }

    fn schedule(&mut self, after_ms: u64, event: Event) {
        self.seq += 1;
        self.events.insert((self.now + after_ms, self.seq), event);
    }

    fn home(&self, submitter: Submitter) -> Node {
        submitter % self.config.nodes
    }

    fn link(&self, submitter: Submitter, node: Node) -> u64 {
        self.links.get(&(submitter, node)).copied().unwrap_or(0)
    }

    /// Sends `message` over the (submitter, node) link: delayed, or the link breaks.
    fn send(&mut self, submitter: Submitter, node: Node, to_node: bool, message: Message) {
        let link = self.link(submitter, node);
        if self.chance(self.config.link_break_per_mille) {
            self.report.faults += 1;
            self.links.insert((submitter, node), link + 1);
            let delay = self.config.latency_ms.1;
            self.schedule(delay, Event::LinkLost { submitter, node });
            return;
        }
        let (low, high) = self.config.latency_ms;
        let delay = low + self.random.below((high - low + 1) as usize) as u64;
        self.schedule(delay, Event::Deliver { submitter, node, to_node, link, message });
    }

    fn start(&mut self) {
        for node in 0..self.nodes.len() {
            self.schedule(TICK_MS, Event::Tick { node });
        }
        self.sync_views();
        for submitter in 0..self.tasks.len() {
            for task in 0..self.tasks[submitter].len() {
                self.request(submitter, task, self.home(submitter));
            }
        }
    }

    // ---- the submitter model ----

    fn request(&mut self, submitter: Submitter, task: TaskId, node: Node) {
        let lease = LeaseId(self.next_lease);
        self.next_lease += 1;
        let (cpus, strategy) = {
            let task = &mut self.tasks[submitter][task];
            task.state = TaskState::Requested { lease, node };
            (task.cpus, task.strategy)
        };
        self.send(submitter, node, true, Message::RequestLease { lease, from: submitter, cpus, strategy });
    }

    /// The task's attempt ended without a result: retry while attempts remain.
    fn attempt_failed(&mut self, submitter: Submitter, task: TaskId, why: &str) {
        let max_retries = self.config.max_retries;
        let entry = &mut self.tasks[submitter][task];
        entry.attempts += 1;
        if entry.attempts > max_retries {
            entry.state = TaskState::Failed(format!("worker died: {why} after {} attempts", entry.attempts));
        } else {
            let home = self.home(submitter);
            self.request(submitter, task, home);
        }
    }

    fn task_with_lease(&self, submitter: Submitter, wanted: LeaseId) -> Option<TaskId> {
        self.tasks[submitter].iter().position(|task| match task.state {
            TaskState::Requested { lease, .. } | TaskState::Running { lease, .. } => lease == wanted,
            _ => false,
        })
    }

    fn submitter_receives(&mut self, submitter: Submitter, node: Node, message: Message) {
        match message {
            Message::LeaseAnswer { lease, reply } => {
                let Some(task) = self.task_with_lease(submitter, lease) else {
                    // A lease for a task settled meanwhile: give it back.
                    if matches!(reply, LeaseReply::Granted { .. }) {
                        self.send(submitter, node, true, Message::ReturnLease { lease });
                    }
                    return;
                };
                match reply {
                    LeaseReply::Granted { worker } => {
                        self.tasks[submitter][task].state = TaskState::Running { lease, node };
                        let push = Message::PushTask { lease, worker, task, from: submitter };
                        self.send(submitter, node, true, push);
                    }
                    LeaseReply::Spillback { node: target } => {
                        let index = self.nodes.iter().position(|candidate| candidate.id == target);
                        match index {
                            Some(target) => self.request(submitter, task, target),
                            None => {
                                let reason = format!("spilled back to unknown node {target}");
                                self.tasks[submitter][task].state = TaskState::Failed(reason);
                            }
                        }
                    }
                    LeaseReply::Infeasible => {
                        self.tasks[submitter][task].state = TaskState::Failed("infeasible".into());
                    }
                    LeaseReply::WorkerStartFailed { exit } => {
                        self.tasks[submitter][task].state =
                            TaskState::Failed(format!("no worker could be started: {exit}"));
                    }
                    LeaseReply::WorkerDied { exit, .. } => self.attempt_failed(submitter, task, &exit),
                }
            }
            Message::TaskResult { lease, task, ok } => {
                let current = &self.tasks[submitter][task].state;
                if *current != (TaskState::Running { lease, node }) {
                    // A late or duplicate result (the task already settled or moved on).
                    return;
                }
                if ok {
                    self.tasks[submitter][task].state = TaskState::Done;
                    self.send(submitter, node, true, Message::ReturnLease { lease });
                } else {
                    self.attempt_failed(submitter, task, "its connection broke");
                }
            }
            other => unreachable!("a node never sends {other:?}"),
        }
    }

    fn submitter_lost_link(&mut self, submitter: Submitter, node: Node) {
        for task in 0..self.tasks[submitter].len() {
            match self.tasks[submitter][task].state {
                TaskState::Requested { node: at, .. } if at == node => {
                    // Never reached a worker: ask again, no attempt used.
                    let home = self.home(submitter);
                    self.request(submitter, task, home);
                }
                TaskState::Running { node: at, .. } if at == node => {
                    self.attempt_failed(submitter, task, "the connection to its node broke")
                }
                _ => {}
            }
        }
    }

    // ---- the node shell (what `RayletActor` does around its `LeaseManager`) ----

    fn node_receives(&mut self, node: Node, submitter: Submitter, message: Message) {
        match message {
            Message::RequestLease { lease, from, cpus: wanted, strategy } => {
                self.nodes[node].requesters.insert(lease, from);
                self.nodes[node].demands.insert(lease, cpus(wanted));
                let now = self.now;
                let SimNode { leases, .. } = &mut self.nodes[node];
                leases.request_lease(now, lease, cpus(wanted), strategy, false, &mut self.random);
            }
            Message::PushTask { lease, worker, task, from } => {
                let runs_it = matches!(self.nodes[node].workers.get(&worker), Some(None));
                if !runs_it {
                    // Its worker is gone (the lease ended meanwhile): the push fails.
                    self.send(from, node, false, Message::TaskResult { lease, task, ok: false });
                    return;
                }
                self.nodes[node].workers.insert(worker, Some((lease, task, from)));
                let crash = self.chance(self.config.crash_per_mille);
                let duration = 1 + self.random.below(200) as u64;
                self.schedule(duration, Event::TaskEnds { node, worker, lease, task, from, crash });
            }
            Message::ReturnLease { lease } => {
                let now = self.now;
                if self.nodes[node].leases.return_lease(now, lease, true) {
                    self.nodes[node].held.remove(&lease);
                }
                self.nodes[node].requesters.remove(&lease);
                self.free_worker_of(node, lease);
            }
            other => unreachable!("a submitter never sends {other:?} (from {submitter})"),
        }
        self.perform(node);
    }

    fn free_worker_of(&mut self, node: Node, lease: LeaseId) {
        for running in self.nodes[node].workers.values_mut() {
            if matches!(running, Some((held, _, _)) if *held == lease) {
                *running = None;
            }
        }
    }

    fn node_lost_link(&mut self, node: Node, submitter: Submitter) {
        let now = self.now;
        let theirs: Vec<LeaseId> = self.nodes[node]
            .requesters
            .iter()
            .filter(|(_, from)| **from == submitter)
            .map(|(lease, _)| *lease)
            .collect();
        for lease in theirs {
            self.nodes[node].requesters.remove(&lease);
            if self.nodes[node].leases.cancel(now, lease) {
                self.nodes[node].held.remove(&lease);
            }
            // As the raylet's shell does after each call into its core: a cancel can grant a
            // queued lease, and that answer must be seen before the next cancel ends it.
            self.perform(node);
        }
    }

    /// Carries out the lease manager's commands, checking its answers as they go.
    fn perform(&mut self, node: Node) {
        loop {
            let commands = self.nodes[node].leases.poll_commands();
            if commands.is_empty() {
                return;
            }
            for command in commands {
                match command {
                    Command::StartWorker { worker } => {
                        let fails = self.chance(self.config.start_failure_per_mille);
                        let delay = 20 + self.random.below(100) as u64;
                        self.schedule(delay, Event::WorkerUp { node, worker, fails });
                    }
                    Command::KillWorker { worker } => {
                        if let Some(Some((lease, task, from))) = self.nodes[node].workers.remove(&worker) {
                            self.send(from, node, false, Message::TaskResult { lease, task, ok: false });
                        }
                    }
                    Command::Reply { lease, reply } => self.answer(node, lease, reply),
                }
            }
        }
    }

    fn answer(&mut self, node: Node, lease: LeaseId, reply: LeaseReply) {
        let died = matches!(reply, LeaseReply::WorkerDied { .. });
        if died {
            self.nodes[node].held.remove(&lease);
        } else {
            if self.nodes[node].answered.contains_key(&lease) {
                self.violation = Some(format!("node {node} answered lease {lease:?} twice (now {reply:?})"));
                return;
            }
            let granted = matches!(reply, LeaseReply::Granted { .. });
            self.nodes[node].answered.insert(lease, granted);
            if granted {
                let wanted = self.nodes[node].demands.get(&lease).cloned().unwrap_or_default();
                self.nodes[node].held.insert(lease, wanted);
            }
        }
        let Some(&submitter) = self.nodes[node].requesters.get(&lease) else { return };
        if !matches!(reply, LeaseReply::Granted { .. }) {
            self.nodes[node].requesters.remove(&lease);
        }
        self.send(submitter, node, false, Message::LeaseAnswer { lease, reply });
    }

    // ---- events ----

    fn handle(&mut self, event: Event) {
        match event {
            Event::Deliver { submitter, node, to_node, link, message } => {
                if link != self.link(submitter, node) {
                    // Sent on a link that broke since: lost with it.
                    return;
                }
                if to_node {
                    if self.nodes[node].alive {
                        self.node_receives(node, submitter, message);
                    }
                } else {
                    self.submitter_receives(submitter, node, message);
                }
            }
            Event::WorkerUp { node, worker, fails } => {
                let now = self.now;
                if fails {
                    self.report.faults += 1;
                    self.nodes[node].leases.worker_exited(now, worker, "not started: exited with code 1");
                } else if self.nodes[node].leases.worker_registered(now, worker) {
                    self.nodes[node].workers.insert(worker, None);
                }
                self.perform(node);
            }
            Event::TaskEnds { node, worker, lease, task, from, crash } => {
                let still = matches!(self.nodes[node].workers.get(&worker), Some(Some((held, _, _))) if *held == lease);
                if !still {
                    return;
                }
                if crash {
                    self.report.faults += 1;
                    self.nodes[node].workers.remove(&worker);
                    let now = self.now;
                    self.nodes[node].leases.worker_exited(now, worker, "killed by signal 9");
                    self.perform(node);
                } else {
                    self.send(from, node, false, Message::TaskResult { lease, task, ok: true });
                }
            }
            Event::LinkLost { submitter, node } => {
                self.node_lost_link(node, submitter);
                self.submitter_lost_link(submitter, node);
            }
            Event::Tick { node } => {
                let now = self.now;
                self.nodes[node].leases.tick(now);
                self.perform(node);
                // Workers the tick killed are gone.
                self.schedule(TICK_MS, Event::Tick { node });
                if node == 0 {
                    self.sync_views();
                }
            }
        }
    }

    /// What the GCS's resource broadcast does: every node learns the others' resources, and
    /// re-decides the requests it could not place.
    fn sync_views(&mut self) {
        let alive: HashSet<NodeId> = self
            .gcs
            .nodes()
            .expect("the simulation's GCS storage holds only its own records")
            .into_iter()
            .filter(|info| info.state == NodeState::Alive)
            .map(|info| info.node_id)
            .collect();
        let views: Vec<NodeView> = self
            .nodes
            .iter()
            .map(|node| NodeView {
                id: node.id,
                resources: NodeResources::clone(node.leases.resources()),
                alive: alive.contains(&node.id),
            })
            .collect();
        for node in 0..self.nodes.len() {
            self.nodes[node].leases.set_peers(views.clone());
            let SimNode { leases, .. } = &mut self.nodes[node];
            leases.reconsider_queue(&mut self.random);
            self.perform(node);
        }
    }

    // ---- invariants ----

    fn check(&mut self) -> Result<(), Failure> {
        if let Some(violation) = self.violation.take() {
            return Err(self.failure(violation));
        }
        for (index, node) in self.nodes.iter().enumerate() {
            let resources = node.leases.resources();
            let mut total = resources.available.clone();
            for (lease, held) in &node.held {
                if total.release(held, &resources.total).is_err() {
                    let why = format!("node {index}: releasing lease {lease:?}'s {held:?} exceeds the total");
                    return Err(self.failure(why));
                }
            }
            if total != resources.total {
                let why = format!(
                    "node {index}: free {:?} plus {} granted leases is {total:?}, not the total {:?}",
                    resources.available,
                    node.held.len(),
                    resources.total
                );
                return Err(self.failure(why));
            }
        }
        Ok(())
    }

    fn all_tasks_settled(&self) -> bool {
        self.tasks.iter().flatten().all(|task| matches!(task.state, TaskState::Done | TaskState::Failed(_)))
    }

    fn unsettled(&self) -> String {
        let open: Vec<String> = self
            .tasks
            .iter()
            .enumerate()
            .flat_map(|(submitter, tasks)| {
                tasks.iter().enumerate().filter_map(move |(index, task)| match &task.state {
                    TaskState::Done | TaskState::Failed(_) => None,
                    state => Some(format!("task {submitter}.{index} {state:?}")),
                })
            })
            .collect();
        format!(
            "{} tasks unsettled ({})",
            open.len(),
            open.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        )
    }

    fn failure(&self, invariant: String) -> Failure {
        Failure {
            seed: self.seed,
            time_ms: self.now,
            events: self.processed,
            invariant,
            trace: self.trace.iter().cloned().collect(),
        }
    }
}
