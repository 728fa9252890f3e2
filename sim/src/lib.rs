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
//! Actors run through the real actor manager core (`manta_gcs::actor_manager::ManagerCore`)
//! against the real GCS core and the head node's lease manager: their workers crash, their
//! constructors fail, users kill them; at the end every actor is alive or dead, and the GCS
//! agrees with the manager. Tasks are submitted through the core worker's own submitter
//! (`manta_worker::cores::submitter::SubmitterCore`, one per driver): shapes, lease reuse,
//! pipelining, lingering leases, retries, spillback and cancellation are the real logic; each
//! task completes exactly once, and at the end every lease it took is back. Every driver calls
//! every actor through the core worker's own actor-call client (`callers.rs`): each call is
//! decided once, runs at most once more than its retries, and a worker runs each caller's calls
//! in submission order.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

mod callers;
pub mod scale;
pub mod workload;

use callers::{CallEvent, Hosted, SimCaller};

use manta_gcs::actor_manager::{Command as ManagerCommand, ManagerCore, Phase};
use manta_gcs::wire::{ActorInfo, ActorState, NodeInfo, NodeState};
use manta_gcs::{ActorId, GcsCore, GcsError, MemoryStorage};
use manta_proto::raylet::requests::LeaseOutcome;
use manta_proto::worker::{ActorSpec, TaskFailure};
use manta_raylet::{
    Command, DefaultPolicy, LeaseId, LeaseManager, LeaseReply, LeaseRequest, NodeResources, NodeView,
    PoolConfig, Quantity, RandomSource, ResourceSet, SchedulingStrategy, SplitMix64, WorkerId, CPU,
};
use manta_transport::NodeId;
use manta_worker::cores::submitter::{
    Command as SubmitCommand, Ending, Failure as SubmitFailure, LeaseAnswer, Refusal, RequestId, Shape,
    SubmitterConfig, SubmitterCore,
};

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
    /// Actors created (by the head's actor manager, leasing on node 0).
    pub actors: usize,
    /// Chance, in thousandths, that an actor's constructor fails (a permanent death).
    pub constructor_failure_per_mille: u32,
    /// Chance, in thousandths, that an alive actor's worker crashes (at most a few times).
    pub actor_crash_per_mille: u32,
    /// Chance, in thousandths, that an actor is killed by its user.
    pub kill_per_mille: u32,
    /// Chance, in thousandths, that a task is cancelled by its user (half of them with force).
    pub cancel_per_mille: u32,
    /// Calls each driver makes to each actor (through the real actor-call client).
    pub calls_per_actor: usize,
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
            actors: 6,
            constructor_failure_per_mille: 50,
            actor_crash_per_mille: 400,
            kill_per_mille: 200,
            cancel_per_mille: 30,
            calls_per_actor: 6,
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
    /// Actors alive at the end.
    pub actors_alive: usize,
    /// Actors dead at the end.
    pub actors_dead: usize,
    /// Actor restarts the GCS granted.
    pub actor_restarts: u64,
    /// Replies the submitters discarded (for tasks cancelled or retried meanwhile).
    pub discarded: u64,
    /// Actor calls answered.
    pub actor_calls_answered: u64,
    /// Actor calls failed (the actor died, or no retries left).
    pub actor_calls_failed: u64,
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
    ReturnLease { lease: LeaseId, reusable: bool },
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
    /// The actor manager performs one of its core's commands (after a local hop's delay).
    Manager(ManagerCommand),
    /// An answer reaches the actor manager's core.
    ManagerAnswer(ManagerAnswer),
    /// An actor is constructed in its worker (or its constructor fails).
    ActorConstructed { actor: ActorId, lease: LeaseId, worker: WorkerId, fails: bool },
    /// An alive actor's worker crashes.
    ActorWorkerCrash { worker: WorkerId },
    /// A user kills an actor.
    KillActor { actor: ActorId },
    /// A submitter's core asked to be woken (a lingering lease's time is up).
    SubmitterTimer { submitter: Submitter },
    /// A user cancels a task.
    Cancel { submitter: Submitter, task: TaskId, force: bool },
    /// Something happens to a driver's calls to an actor.
    Call { submitter: Submitter, actor: ActorId, event: CallEvent },
}

/// An answer for the actor manager's core.
#[derive(Debug, Clone)]
enum ManagerAnswer {
    Lease { actor: ActorId, from: Option<String>, outcome: Result<LeaseOutcome, String> },
    Started { actor: ActorId, lease: LeaseId, outcome: Result<(), TaskFailure> },
    LeaseEnded { actor: ActorId, lease: LeaseId, exit: Option<String> },
    Verdict { actor: ActorId, state: Option<ActorState> },
}

/// A task as its user sees it: submitted, then completed once.
struct Task {
    shape: Shape,
    /// `Some` once completed: `Ok` or why it failed.
    outcome: Option<Result<(), String>>,
}

/// One driver: the real submitter core, and the shell's books on its lease requests.
struct SimSubmitter {
    core: SubmitterCore<TaskId>,
    /// Each open request: the simulated lease it travels as, the node asked, and the worker
    /// once granted.
    requests: BTreeMap<RequestId, (LeaseId, Node, Option<WorkerId>)>,
    /// Which request each simulated lease was for (kept: late answers still name them).
    by_lease: HashMap<LeaseId, RequestId>,
    /// The wake-up armed, ms.
    timer: Option<u64>,
}

/// A worker busy with a lease's tasks, the first running, the rest pushed ahead.
#[derive(Debug)]
struct Busy {
    lease: LeaseId,
    from: Submitter,
    tasks: std::collections::VecDeque<TaskId>,
}

struct SimNode {
    id: NodeId,
    leases: LeaseManager<DefaultPolicy>,
    /// Processes alive, and the tasks each runs.
    workers: HashMap<WorkerId, Option<Busy>>,
    /// Which submitter asked for each lease this node knows.
    requesters: HashMap<LeaseId, Submitter>,
    /// Resources each granted lease holds, as the answers said (the conservation check).
    held: HashMap<LeaseId, ResourceSet>,
    /// Leases answered, and whether the answer was a grant.
    answered: HashMap<LeaseId, bool>,
    /// What each lease request asked for.
    demands: HashMap<LeaseId, ResourceSet>,
    /// The worker each granted lease went to.
    granted_worker: HashMap<LeaseId, WorkerId>,
    /// How the workers of ended leases died (what a late `WatchLease` is told).
    deaths: HashMap<LeaseId, String>,
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
    submitters: Vec<SimSubmitter>,
    /// The generation of each (submitter, node) link; a break starts a new one.
    links: HashMap<(Submitter, Node), u64>,
    next_lease: u64,
    processed: u64,
    trace: std::collections::VecDeque<String>,
    report: Report,
    /// An invariant broken inside a handler, reported by the next check.
    violation: Option<String>,
    /// The head's actor manager (it leases from node 0).
    manager: ManagerCore,
    /// The actors created.
    actor_ids: Vec<ActorId>,
    /// Leases the manager asked node 0 for, by actor.
    manager_leases: HashMap<LeaseId, ActorId>,
    /// Leases the manager watches.
    watched: HashMap<LeaseId, ActorId>,
    /// Actor workers: which actor each worker of node 0 constructs or hosts, under which lease.
    actor_workers: HashMap<WorkerId, (ActorId, LeaseId)>,
    /// Crashes injected per actor (bounded, so every run ends).
    actor_crashes: HashMap<ActorId, u32>,
    /// Each driver's client of each actor.
    callers: BTreeMap<(Submitter, ActorId), SimCaller>,
    /// Each caller epoch as each actor worker sees it.
    hosted: HashMap<(WorkerId, Submitter, u64), Hosted>,
    /// How many times each call ran.
    call_runs: HashMap<(Submitter, ActorId, u64), u32>,
    /// Whether a parked locate or watch may have its answer now (an actor's state or worker
    /// changed, or a caller asked).
    watches_dirty: bool,
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
        world.answer_watches();
        world.check()?;
        if world.all_settled() {
            break;
        }
        if world.now > world.config.time_limit_ms {
            return Err(world.failure(format!("not finished by {} ms: {}", world.now, world.unsettled())));
        }
    }
    if !world.all_settled() {
        return Err(world.failure(format!("nothing left to happen, yet {}", world.unsettled())));
    }
    world.check_actors_at_end()?;
    if let Some(why) = world.check_calls_at_end() {
        return Err(world.failure(why));
    }
    world.report.events = world.processed;
    world.report.end_ms = world.now;
    world.check_tasks_at_end()?;
    for tasks in &world.tasks {
        for task in tasks {
            match &task.outcome {
                Some(Ok(())) => world.report.finished += 1,
                Some(Err(reason)) => {
                    let kind = reason.split(':').next().unwrap_or(reason).to_owned();
                    *world.report.failed.entry(kind).or_default() += 1;
                }
                None => unreachable!("all settled"),
            }
        }
    }
    Ok(world.report)
}

/// The id the submitter knows a task by (the object its result goes to).
fn task_id(task: TaskId) -> manta_proto::ObjectId {
    manta_proto::ObjectId::from_parts([0; 12], task as u64)
}

fn task_index(id: manta_proto::ObjectId) -> TaskId {
    id.counter() as usize
}

/// A node id from its index (the index + 1, big-endian, in the first bytes: ids sort as
/// indices do).
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
                    labels: Vec::new(),
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
                    granted_worker: HashMap::new(),
                    deaths: HashMap::new(),
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
                        // Two functions, so shapes differ in more than resources.
                        let function = if random.below(2) == 0 { "sim::f" } else { "sim::g" };
                        let shape = Shape::new(function, cpus as f64, 0.0, &[], strategy);
                        Task { shape, outcome: None }
                    })
                    .collect()
            })
            .collect();
        let submitters = (0..config.submitters)
            .map(|_| SimSubmitter {
                core: SubmitterCore::new(SubmitterConfig::default()),
                requests: BTreeMap::new(),
                by_lease: HashMap::new(),
                timer: None,
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
            submitters,
            tasks,
            links: HashMap::new(),
            next_lease: 1,
            processed: 0,
            trace: std::collections::VecDeque::new(),
            report: Report::default(),
            violation: None,
            manager: ManagerCore::new(),
            actor_ids: Vec::new(),
            manager_leases: HashMap::new(),
            watched: HashMap::new(),
            actor_workers: HashMap::new(),
            actor_crashes: HashMap::new(),
            callers: BTreeMap::new(),
            hosted: HashMap::new(),
            call_runs: HashMap::new(),
            watches_dirty: false,
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
        let now = self.time();
        for submitter in 0..self.tasks.len() {
            for task in 0..self.tasks[submitter].len() {
                let shape = self.tasks[submitter][task].shape.clone();
                let core = &mut self.submitters[submitter].core;
                core.submit(task_id(task), shape, self.config.max_retries);
                core.resolved(now, task_id(task));
                if self.chance(self.config.cancel_per_mille) {
                    let delay = self.random.below(500) as u64;
                    let force = self.random.below(2) == 0;
                    self.schedule(delay, Event::Cancel { submitter, task, force });
                }
            }
            self.drive(submitter);
        }
        self.create_actors();
        self.plan_actor_calls();
    }

    // ---- actors: the real actor manager core against the real GCS core ----

    fn create_actors(&mut self) {
        let job = self.gcs.add_job("sim-driver", 0).expect("a fresh GCS adds a job").job_id;
        for index in 0..self.config.actors {
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&(index as u64 + 1).to_be_bytes());
            let actor = ActorId(bytes);
            let info = ActorInfo {
                actor_id: actor,
                job_id: job,
                class: "sim::Actor".into(),
                max_task_retries: 0,
                name: Some(format!("actor-{index}")),
                namespace: "sim".into(),
                detached: false,
                state: ActorState::PendingCreation,
                node_id: None,
                address: None,
                max_restarts: self.random.below(3) as i64,
                restarts: 0,
                death_cause: None,
            };
            if let Err(error) = self.gcs.register_actor(info.clone()) {
                self.violation = Some(format!("the GCS refused actor {index}: {error}"));
                return;
            }
            let spec = ActorSpec {
                info,
                args: Vec::new(),
                num_cpus: 0.0,
                num_gpus: 0.0,
                resources: Vec::new(),
                // Ray's default actor: a CPU to be placed, none held.
                placement_cpus: 1.0,
                max_concurrency: 1,
                concurrency_groups: Vec::new(),
                scheduling_strategy: SchedulingStrategy::Hybrid,
                capture_group: None,
            };
            self.actor_ids.push(actor);
            self.manager.registered(spec);
            if self.chance(self.config.kill_per_mille) {
                let delay = self.random.below(2_000) as u64;
                self.schedule(delay, Event::KillActor { actor });
            }
        }
        self.perform_manager();
    }

    /// Schedules the manager core's commands, each after a local hop.
    fn perform_manager(&mut self) {
        for command in self.manager.poll_commands() {
            let delay = self.random.below(3) as u64;
            self.schedule(delay, Event::Manager(command));
        }
    }

    fn answer_manager(&mut self, answer: ManagerAnswer) {
        let delay = self.random.below(3) as u64;
        self.schedule(delay, Event::ManagerAnswer(answer));
    }

    fn run_manager_command(&mut self, command: ManagerCommand) {
        const HEAD: Node = 0;
        let now = self.now;
        match command {
            ManagerCommand::RequestLease { actor, raylet: Some(raylet), .. } => {
                // The simulated manager leases from the head's raylet only (its actors' workers
                // are the head's); a spilled request fails as an unreachable raylet would, and
                // the actor dies of it, which the checks accept.
                let outcome = Err(format!("the simulation's manager cannot reach raylet {raylet}"));
                self.answer_manager(ManagerAnswer::Lease { actor, from: Some(raylet), outcome });
            }
            ManagerCommand::RequestLease { actor, request, raylet: None } => {
                let lease = LeaseId(self.next_lease);
                self.next_lease += 1;
                self.manager_leases.insert(lease, actor);
                let demand = cpus(request.cpus as u64);
                let placement = cpus(request.cpus.max(request.placement_cpus) as u64);
                self.nodes[HEAD].demands.insert(lease, demand.clone());
                let SimNode { leases, .. } = &mut self.nodes[HEAD];
                let request = LeaseRequest {
                    demand,
                    placement,
                    strategy: request.strategy,
                    dedicated: true,
                    // The simulation's one driver: its tasks (leased as job 0) and its actors
                    // are one job, sharing one pool of workers.
                    job: manta_proto::JobId(0),
                    spilled: request.spilled,
                    arguments: Vec::new(),
                };
                leases.request_lease_placed(now, lease, request, &mut self.random);
                self.perform(HEAD);
            }
            ManagerCommand::StartActor { lease, start, .. } => {
                let lease = LeaseId(lease);
                let worker = self.nodes[HEAD].granted_worker.get(&lease).copied();
                match worker.filter(|worker| self.nodes[HEAD].workers.contains_key(worker)) {
                    Some(worker) => {
                        self.actor_workers.insert(worker, (start.actor_id, lease));
                        let fails = self.chance(self.config.constructor_failure_per_mille);
                        let delay = 5 + self.random.below(50) as u64;
                        self.schedule(
                            delay,
                            Event::ActorConstructed { actor: start.actor_id, lease, worker, fails },
                        );
                        // Now and then its worker dies while the constructor runs (a restart,
                        // while restarts remain, as in Ray).
                        let crashes = self.actor_crashes.get(&start.actor_id).copied().unwrap_or(0);
                        if crashes < 3 && self.chance(self.config.actor_crash_per_mille / 4) {
                            self.actor_crashes.insert(start.actor_id, crashes + 1);
                            let before = self.random.below(delay as usize) as u64;
                            self.schedule(before, Event::ActorWorkerCrash { worker });
                        }
                    }
                    // Its worker is gone already: the ask fails as a lost connection would.
                    None => {
                        self.manager.start_outcome(start.actor_id, lease.0, Err("connection lost".into()));
                        self.perform_manager();
                    }
                }
            }
            ManagerCommand::WatchLease { actor, lease, .. } => {
                let lease = LeaseId(lease);
                if self.nodes[HEAD].held.contains_key(&lease) {
                    self.watched.insert(lease, actor);
                } else {
                    // Ended before the watch arrived: the raylet remembers how.
                    let exit = self.nodes[HEAD].deaths.get(&lease).cloned();
                    self.answer_manager(ManagerAnswer::LeaseEnded { actor, lease, exit });
                }
            }
            ManagerCommand::ReturnLease { lease, .. } => {
                let lease = LeaseId(lease);
                if self.nodes[HEAD].leases.return_lease(now, lease, false) {
                    self.nodes[HEAD].held.remove(&lease);
                }
                self.manager_leases.remove(&lease);
                if let Some(actor) = self.watched.remove(&lease) {
                    self.answer_manager(ManagerAnswer::LeaseEnded { actor, lease, exit: None });
                }
                self.perform(HEAD);
            }
            ManagerCommand::ReportStarted { actor, address, .. } => {
                let head_id = self.nodes[HEAD].id;
                match self.gcs.actor_started(actor, head_id, &address) {
                    // Killed meanwhile: the GCS refuses to revive it, and the shell moves on.
                    Ok(()) | Err(GcsError::IllegalTransition { .. }) => {}
                    Err(error) => self.violation = Some(format!("the GCS refused a start: {error}")),
                }
                self.maybe_crash_actor(actor);
            }
            ManagerCommand::ReportFailed { actor, cause } => {
                let state = match self.gcs.actor_failed(actor, &cause) {
                    Ok(state) => Some(state),
                    Err(GcsError::IllegalTransition { .. }) => None,
                    Err(error) => {
                        self.violation = Some(format!("the GCS refused a failure report: {error}"));
                        None
                    }
                };
                if state == Some(ActorState::Restarting) {
                    self.report.actor_restarts += 1;
                }
                self.answer_manager(ManagerAnswer::Verdict { actor, state });
            }
            ManagerCommand::MarkDead { actor, cause } => match self.gcs.kill_actor(actor, &cause) {
                Ok(()) | Err(GcsError::IllegalTransition { .. }) => {}
                Err(error) => self.violation = Some(format!("the GCS refused a death: {error}")),
            },
        }
    }

    fn manager_receives(&mut self, answer: ManagerAnswer) {
        match answer {
            ManagerAnswer::Lease { actor, from, outcome } => self.manager.lease_outcome(actor, from, outcome),
            ManagerAnswer::Started { actor, lease, outcome } => {
                self.manager.start_outcome(actor, lease.0, Ok(outcome))
            }
            ManagerAnswer::LeaseEnded { actor, lease, exit } => {
                self.manager.lease_ended(actor, lease.0, exit)
            }
            ManagerAnswer::Verdict { actor, state } => self.manager.verdict(actor, state),
        }
        self.perform_manager();
    }

    /// Now and then an alive actor's worker crashes (a bounded number of times per actor).
    fn maybe_crash_actor(&mut self, actor: ActorId) {
        let crashes = self.actor_crashes.get(&actor).copied().unwrap_or(0);
        if crashes >= 3 || !self.chance(self.config.actor_crash_per_mille) {
            return;
        }
        let Some((&worker, _)) = self.actor_workers.iter().find(|(_, (held_by, _))| *held_by == actor) else {
            return;
        };
        self.actor_crashes.insert(actor, crashes + 1);
        let delay = 10 + self.random.below(500) as u64;
        self.schedule(delay, Event::ActorWorkerCrash { worker });
    }

    fn actors_settled(&self) -> bool {
        self.actor_ids
            .iter()
            .all(|actor| matches!(self.manager.phase(*actor), Some(Phase::Alive { .. } | Phase::Dead)))
    }

    // ---- the submitters: the real core, and a shell like `submit.rs` ----

    fn time(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.now)
    }

    /// Performs a submitter core's commands, then arms its wake-up.
    fn drive(&mut self, submitter: Submitter) {
        loop {
            let commands: Vec<SubmitCommand<TaskId>> =
                self.submitters[submitter].core.poll_commands().collect();
            if commands.is_empty() {
                break;
            }
            for command in commands {
                self.perform_submit(submitter, command);
            }
        }
        let due = self.submitters[submitter].core.poll_timeout();
        if let Some(due) = due {
            let due_ms = due.as_micros().div_ceil(1_000) as u64;
            if self.submitters[submitter].timer.is_none_or(|armed| due_ms < armed) {
                self.submitters[submitter].timer = Some(due_ms);
                self.schedule(due_ms.saturating_sub(self.now), Event::SubmitterTimer { submitter });
            }
        }
    }

    fn perform_submit(&mut self, submitter: Submitter, command: SubmitCommand<TaskId>) {
        let now = self.time();
        match command {
            SubmitCommand::RequestLease { request, shape, node, .. } => {
                let target = match node {
                    None => Some(self.home(submitter)),
                    Some(id) => self.nodes.iter().position(|candidate| candidate.id == id),
                };
                let Some(target) = target else {
                    let refusal =
                        Refusal::Unreachable { target: format!("{node:?}"), reason: "no such node".into() };
                    self.submitters[submitter].core.lease_answered(
                        now,
                        request,
                        LeaseAnswer::Refused(refusal),
                    );
                    return;
                };
                let lease = LeaseId(self.next_lease);
                self.next_lease += 1;
                let books = &mut self.submitters[submitter];
                books.requests.insert(request, (lease, target, None));
                books.by_lease.insert(lease, request);
                let message = Message::RequestLease {
                    lease,
                    from: submitter,
                    cpus: shape.cpus / 10_000,
                    strategy: shape.strategy,
                };
                self.send(submitter, target, true, message);
            }
            SubmitCommand::Push { request, task, .. } => {
                let Some(&(lease, node, Some(worker))) = self.submitters[submitter].requests.get(&request)
                else {
                    self.violation =
                        Some(format!("submitter {submitter} pushed to {request:?}, not a granted lease"));
                    return;
                };
                let task = task_index(task);
                self.send(submitter, node, true, Message::PushTask { lease, worker, task, from: submitter });
            }
            SubmitCommand::ReturnLease { request, lease: id, reusable, .. } => {
                let Some((lease, node, _)) = self.submitters[submitter].requests.remove(&request) else {
                    self.violation =
                        Some(format!("submitter {submitter} returned {request:?}, which it does not hold"));
                    return;
                };
                if lease.0 != id {
                    self.violation = Some(format!("{request:?} is lease {lease:?}, returned as {id}"));
                }
                self.send(submitter, node, true, Message::ReturnLease { lease, reusable });
            }
            SubmitCommand::Complete { task, outcome } => {
                let task = task_index(task);
                let entry = &mut self.tasks[submitter][task];
                if entry.outcome.is_some() {
                    self.violation = Some(format!("task {submitter}.{task} completed twice"));
                    return;
                }
                entry.outcome = Some(match outcome {
                    Ok(echo) if echo == task => Ok(()),
                    Ok(echo) => Err(format!("wrong output: the result of task {echo}")),
                    Err(SubmitFailure::Cancelled) => Err("cancelled".into()),
                    Err(SubmitFailure::WorkerDied { exit, attempts, .. }) => {
                        if attempts > self.config.max_retries + 1 {
                            self.violation = Some(format!("task {submitter}.{task} ran {attempts} times"));
                        }
                        Err(format!("worker died: {exit} after {attempts} attempts"))
                    }
                    Err(SubmitFailure::NodeDied { node, reason, attempts, .. }) => {
                        if attempts > self.config.max_retries + 1 {
                            self.violation = Some(format!("task {submitter}.{task} ran {attempts} times"));
                        }
                        Err(format!("node {node} died: {reason} after {attempts} attempts"))
                    }
                    Err(SubmitFailure::Refused(refusal)) => Err(format!("refused: {refusal:?}")),
                });
            }
            SubmitCommand::Discard { .. } => self.report.discarded += 1,
            // Simulated tasks do not look at their cancellation; the reply comes and is discarded.
            SubmitCommand::Interrupt { .. } => {}
        }
    }

    /// The request a simulated lease stands for, if it is still that request's current lease.
    fn current_request(&self, submitter: Submitter, lease: LeaseId) -> Option<RequestId> {
        let books = &self.submitters[submitter];
        let request = *books.by_lease.get(&lease)?;
        matches!(books.requests.get(&request), Some((current, _, _)) if *current == lease).then_some(request)
    }

    fn submitter_receives(&mut self, submitter: Submitter, node: Node, message: Message) {
        let now = self.time();
        match message {
            Message::LeaseAnswer { lease, reply } => {
                let Some(request) = self.current_request(submitter, lease) else {
                    // An answer to a request asked again since (its link broke): a grant
                    // nobody uses goes straight back.
                    if matches!(reply, LeaseReply::Granted { .. }) {
                        self.send(submitter, node, true, Message::ReturnLease { lease, reusable: true });
                    }
                    return;
                };
                let books = &mut self.submitters[submitter];
                let answer = match reply {
                    LeaseReply::Granted { worker } => {
                        if let Some(entry) = books.requests.get_mut(&request) {
                            entry.2 = Some(worker);
                        }
                        LeaseAnswer::Granted { lease: lease.0, pid: worker.0 as u32 }
                    }
                    LeaseReply::WorkerDied { exit, .. } => {
                        // The core gives the lease back (`ReturnLease`), which ends the books' entry.
                        books.core.worker_died(now, request, &Ending::Worker(exit));
                        return self.drive(submitter);
                    }
                    LeaseReply::Spillback { node: target } => LeaseAnswer::Spillback { node: target },
                    LeaseReply::Infeasible => {
                        LeaseAnswer::Refused(Refusal::Infeasible { demand: "CPU".into() })
                    }
                    LeaseReply::WorkerStartFailed { exit } => {
                        LeaseAnswer::Refused(Refusal::WorkerStartFailed { exit })
                    }
                    LeaseReply::Refused { reason } => LeaseAnswer::Refused(Refusal::Invalid { reason }),
                };
                if !matches!(answer, LeaseAnswer::Granted { .. }) {
                    books.requests.remove(&request);
                }
                books.core.lease_answered(now, request, answer);
            }
            Message::TaskResult { lease, task, ok } => {
                let Some(&request) = self.submitters[submitter].by_lease.get(&lease) else { return };
                let core = &mut self.submitters[submitter].core;
                if ok {
                    core.task_replied(now, request, task_id(task), Some(100), task);
                } else {
                    core.worker_died(now, request, &Ending::worker("its worker is gone"));
                }
            }
            other => unreachable!("a node never sends {other:?} (from {node})"),
        }
        self.drive(submitter);
    }

    /// The submitter's end of a broken link: requests on it are lost, leases on it are gone.
    fn submitter_lost_link(&mut self, submitter: Submitter, node: Node) {
        let now = self.time();
        let books = &mut self.submitters[submitter];
        let lost: Vec<(RequestId, bool)> = books
            .requests
            .iter()
            .filter(|(_, (_, at, _))| *at == node)
            .map(|(request, (_, _, worker))| (*request, worker.is_some()))
            .collect();
        for (request, granted) in lost {
            if granted {
                // The core gives the lease back, which ends the books' entry.
                books.core.worker_died(now, request, &Ending::worker("the connection to its node broke"));
            } else {
                books.requests.remove(&request);
                books.core.lease_answered(now, request, LeaseAnswer::Lost);
            }
        }
        self.drive(submitter);
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
                let granted = self.nodes[node].granted_worker.get(&lease) == Some(&worker)
                    && self.nodes[node].held.contains_key(&lease);
                match self.nodes[node].workers.get_mut(&worker) {
                    // Pushed ahead, behind the task it runs.
                    Some(Some(busy)) if granted && busy.lease == lease => busy.tasks.push_back(task),
                    Some(idle @ None) if granted => {
                        *idle = Some(Busy { lease, from, tasks: [task].into() });
                        self.start_task(node, worker);
                    }
                    // Its worker is gone, or serves another lease now: the push fails.
                    _ => self.send(from, node, false, Message::TaskResult { lease, task, ok: false }),
                }
            }
            Message::ReturnLease { lease, reusable } => {
                let now = self.now;
                if self.nodes[node].leases.return_lease(now, lease, reusable) {
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
            if matches!(running, Some(busy) if busy.lease == lease) {
                *running = None;
            }
        }
    }

    /// Runs the first task a worker holds: it ends after a while, or its worker crashes.
    fn start_task(&mut self, node: Node, worker: WorkerId) {
        let Some(Some(busy)) = self.nodes[node].workers.get(&worker) else { return };
        let Some(&task) = busy.tasks.front() else { return };
        let (lease, from) = (busy.lease, busy.from);
        let crash = self.chance(self.config.crash_per_mille);
        let duration = 1 + self.random.below(200) as u64;
        self.schedule(duration, Event::TaskEnds { node, worker, lease, task, from, crash });
    }

    fn node_lost_link(&mut self, node: Node, submitter: Submitter) {
        let now = self.now;
        let mut theirs: Vec<LeaseId> = self.nodes[node]
            .requesters
            .iter()
            .filter(|(_, from)| **from == submitter)
            .map(|(lease, _)| *lease)
            .collect();
        // In a fixed order: a map's order differs between processes, and a seed must replay.
        theirs.sort();
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
                    Command::StartWorker { worker, .. } => {
                        let fails = self.chance(self.config.start_failure_per_mille);
                        let delay = 20 + self.random.below(100) as u64;
                        self.schedule(delay, Event::WorkerUp { node, worker, fails });
                    }
                    Command::KillWorker { worker } => {
                        if node == 0 {
                            self.actor_workers.remove(&worker);
                        }
                        if let Some(Some(busy)) = self.nodes[node].workers.remove(&worker) {
                            for task in busy.tasks {
                                let message = Message::TaskResult { lease: busy.lease, task, ok: false };
                                self.send(busy.from, node, false, message);
                            }
                        }
                    }
                    Command::Reply { lease, reply } => self.answer(node, lease, reply),
                    // The simulated raylets fail infeasible requests at once (the default).
                    Command::WaitingInfeasible { .. } => {}
                    // Simulated workers own no objects: an idle one may always exit.
                    Command::RetireWorker { worker } => {
                        let now = self.now;
                        self.nodes[node].leases.retire_answered(now, worker, true);
                    }
                }
            }
        }
    }

    fn answer(&mut self, node: Node, lease: LeaseId, reply: LeaseReply) {
        let died = matches!(reply, LeaseReply::WorkerDied { .. });
        if let LeaseReply::WorkerDied { exit, .. } = &reply {
            self.nodes[node].deaths.insert(lease, exit.clone());
        }
        if let LeaseReply::Granted { worker } = &reply {
            self.nodes[node].granted_worker.insert(lease, *worker);
        }
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
        if let Some(&actor) = self.manager_leases.get(&lease) {
            return self.answer_manager_lease(node, actor, lease, reply);
        }
        let Some(&submitter) = self.nodes[node].requesters.get(&lease) else { return };
        if !matches!(reply, LeaseReply::Granted { .. }) {
            self.nodes[node].requesters.remove(&lease);
        }
        self.send(submitter, node, false, Message::LeaseAnswer { lease, reply });
    }

    /// Hands the head raylet's answer on a manager lease to the manager, as the shell would.
    fn answer_manager_lease(&mut self, node: Node, actor: ActorId, lease: LeaseId, reply: LeaseReply) {
        let outcome = match reply {
            LeaseReply::Granted { worker } => LeaseOutcome::Granted {
                lease: lease.0,
                address: format!("node{node}/worker{}", worker.0),
                pid: worker.0 as u32,
            },
            LeaseReply::Spillback { node } => {
                LeaseOutcome::Spillback { node: node.to_string(), address: format!("sim-node-{node}") }
            }
            LeaseReply::Infeasible => LeaseOutcome::Infeasible { demand: "its resources".into() },
            LeaseReply::WorkerStartFailed { exit } => LeaseOutcome::WorkerStartFailed { exit },
            LeaseReply::Refused { reason } => LeaseOutcome::Invalid { reason },
            LeaseReply::WorkerDied { exit, .. } => {
                self.manager_leases.remove(&lease);
                if let Some(actor) = self.watched.remove(&lease) {
                    self.answer_manager(ManagerAnswer::LeaseEnded { actor, lease, exit: Some(exit) });
                }
                return;
            }
        };
        self.answer_manager(ManagerAnswer::Lease { actor, from: None, outcome: Ok(outcome) });
    }

    // ---- events ----

    fn handle(&mut self, event: Event) {
        if matches!(
            event,
            Event::Manager(_)
                | Event::ManagerAnswer(_)
                | Event::ActorConstructed { .. }
                | Event::ActorWorkerCrash { .. }
                | Event::KillActor { .. }
        ) {
            self.watches_dirty = true;
        }
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
                let still = matches!(self.nodes[node].workers.get(&worker),
                    Some(Some(busy)) if busy.lease == lease && busy.tasks.front() == Some(&task));
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
                    if let Some(Some(busy)) = self.nodes[node].workers.get_mut(&worker) {
                        busy.tasks.pop_front();
                        if busy.tasks.is_empty() {
                            self.nodes[node].workers.insert(worker, None);
                        } else {
                            self.start_task(node, worker);
                        }
                    }
                }
            }
            Event::SubmitterTimer { submitter } => {
                let now = self.time();
                self.submitters[submitter].timer = None;
                self.submitters[submitter].core.handle_timeout(now);
                self.drive(submitter);
            }
            Event::Cancel { submitter, task, force } => {
                let now = self.time();
                let open = self.tasks[submitter][task].outcome.is_none();
                let cancelled = self.submitters[submitter].core.cancel(now, task_id(task), force);
                if cancelled && !open {
                    self.violation = Some(format!("task {submitter}.{task} cancelled after it completed"));
                }
                self.drive(submitter);
            }
            Event::LinkLost { submitter, node } => {
                self.node_lost_link(node, submitter);
                self.submitter_lost_link(submitter, node);
            }
            Event::Manager(command) => {
                self.run_manager_command(command);
                self.perform_manager();
            }
            Event::ManagerAnswer(answer) => self.manager_receives(answer),
            Event::ActorConstructed { actor, lease, worker, fails } => {
                if self.actor_workers.get(&worker) != Some(&(actor, lease)) {
                    // Its worker died first: the lease's end tells the manager.
                    return;
                }
                let outcome = if fails {
                    let message = "the constructor panicked".to_owned();
                    Err(TaskFailure::new("sim::Actor.new".into(), worker.0 as u32, message))
                } else {
                    Ok(())
                };
                self.answer_manager(ManagerAnswer::Started { actor, lease, outcome });
            }
            Event::ActorWorkerCrash { worker } => {
                const HEAD: Node = 0;
                if self.actor_workers.remove(&worker).is_none()
                    || self.nodes[HEAD].workers.remove(&worker).is_none()
                {
                    return;
                }
                self.report.faults += 1;
                let now = self.now;
                self.nodes[HEAD].leases.worker_exited(now, worker, "killed by signal 9");
                self.perform(HEAD);
            }
            Event::KillActor { actor } => {
                self.manager.kill(actor, "killed by its user".into());
                self.perform_manager();
            }
            Event::Call { submitter, actor, event } => self.call_event(submitter, actor, event),
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
                labels: Vec::new(),
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

    /// Every task settled, every actor alive or dead, and nothing but ticks left to happen.
    fn all_settled(&self) -> bool {
        self.all_tasks_settled()
            && self.actors_settled()
            && self.calls_settled()
            && self.events.values().all(|event| matches!(event, Event::Tick { .. }))
    }

    /// The GCS agrees with the manager on every actor, restarts stayed within budget, and no
    /// dead actor still holds a lease (its worker would run for nothing, holding resources).
    fn check_actors_at_end(&mut self) -> Result<(), Failure> {
        let leaked: Vec<String> = self
            .manager_leases
            .iter()
            .filter(|(lease, actor)| {
                self.nodes[0].held.contains_key(lease) && self.manager.phase(**actor) == Some(&Phase::Dead)
            })
            .map(|(lease, actor)| format!("dead actor {actor} still holds lease {lease:?}"))
            .collect();
        if let Some(leak) = leaked.first() {
            return Err(self.failure(leak.clone()));
        }
        for index in 0..self.actor_ids.len() {
            let actor = self.actor_ids[index];
            let info = match self.gcs.actor(actor) {
                Ok(Some(info)) => info,
                other => return Err(self.failure(format!("the GCS lost actor {actor}: {other:?}"))),
            };
            let phase = self.manager.phase(actor).cloned();
            let agrees = match phase {
                Some(Phase::Alive { .. }) => info.state == ActorState::Alive,
                Some(Phase::Dead) => info.state == ActorState::Dead,
                _ => false,
            };
            if !agrees {
                let why = format!("actor {actor}: the manager says {phase:?}, the GCS {:?}", info.state);
                return Err(self.failure(why));
            }
            if info.max_restarts >= 0 && info.restarts > info.max_restarts as u64 {
                let why = format!("actor {actor} restarted {} times of {}", info.restarts, info.max_restarts);
                return Err(self.failure(why));
            }
            if info.state == ActorState::Alive {
                self.report.actors_alive += 1;
            } else {
                self.report.actors_dead += 1;
            }
        }
        Ok(())
    }

    /// Every submitter gave back every lease it took, and no node still holds one for a task.
    fn check_tasks_at_end(&mut self) -> Result<(), Failure> {
        for (index, books) in self.submitters.iter().enumerate() {
            if books.core.tasks_open() > 0 || books.core.leases_open() > 0 || !books.requests.is_empty() {
                let why = format!(
                    "submitter {index} ended with {} tasks and {} leases open (books: {:?})",
                    books.core.tasks_open(),
                    books.core.leases_open(),
                    books.requests
                );
                return Err(self.failure(why));
            }
        }
        for (index, node) in self.nodes.iter().enumerate() {
            let leaked: Vec<&LeaseId> =
                node.held.keys().filter(|lease| !self.manager_leases.contains_key(lease)).collect();
            if !leaked.is_empty() {
                return Err(self.failure(format!("node {index} still holds task leases {leaked:?}")));
            }
        }
        Ok(())
    }

    fn all_tasks_settled(&self) -> bool {
        self.tasks.iter().flatten().all(|task| task.outcome.is_some())
    }

    fn unsettled(&self) -> String {
        let open: Vec<String> = self
            .tasks
            .iter()
            .enumerate()
            .flat_map(|(submitter, tasks)| {
                tasks.iter().enumerate().filter_map(move |(index, task)| match &task.outcome {
                    Some(_) => None,
                    None => Some(format!("task {submitter}.{index} ({:?})", task.shape)),
                })
            })
            .collect();
        let actors: Vec<String> = self
            .actor_ids
            .iter()
            .filter(|actor| !matches!(self.manager.phase(**actor), Some(Phase::Alive { .. } | Phase::Dead)))
            .map(|actor| format!("actor {actor} {:?}", self.manager.phase(*actor)))
            .collect();
        let calls: usize = self.callers.values().map(|caller| caller.undecided()).sum();
        format!(
            "{} tasks unsettled ({}); {} actors unsettled ({}); {calls} actor calls undecided",
            open.len(),
            open.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
            actors.len(),
            actors.join(", ")
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
