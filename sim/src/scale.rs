//! The scale simulation: a [`Workload`] run on thousands of simulated nodes, on one thread,
//! from one seed, through the same cores the daemons run: one `LeaseManager` per node with
//! the policy chosen by name from the registry (`hybrid`, `binpack`, `locality`, or a user's),
//! the GCS core's node table and resource view (every raylet reads one shared snapshot per
//! broadcast, as the real raylets read `GetClusterView`), the placement-group manager's
//! two-phase commit (`PlacementCore`) against the raylets' bundle books, and one submitter core
//! per driver (shapes, lease reuse, pipelining, spillback, retries). Actors are leases the head
//! asks for on their behalf (dedicated workers held for their lifetime, restarted on another
//! node when theirs dies); their manager's own logic is driven by [`crate::run`].
//!
//! Messages cross a simulated network: each draws its own delay (so they reorder), a lost
//! packet arrives a retransmission timeout late (the transport is QUIC: nothing is lost or
//! doubled), and a partitioned node's messages wait until the partition heals. Nodes join and
//! die at the workload's times.
//!
//! Checked after every event, on the nodes it touched: each node's free resources plus what
//! its granted leases and held bundles take equal its total; each lease request is answered at
//! most once before its end; no task starts on a dead node; a created group has every bundle
//! committed on its node. At the end: every task finished or failed with a reason, every lease
//! is back, a removed group holds nothing anywhere and no bundle is held outside its group.
//! The result carries the makespan, utilisation over time, queueing delay by shape, tasks per
//! node, and a digest of the whole run (the same seed gives the same digest).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::fmt;
use std::time::Duration;

use manta_gcs::placement::state::{Command as GroupCommand, PlacementCore};
use manta_gcs::wire::{NodeInfo, NodeState};
use manta_gcs::{GcsCore, MemoryStorage};
use manta_proto::placement::{PlacementGroupSpec, PlacementGroupState};
use manta_proto::{JobId, ObjectId, PlacementGroupId};
use manta_raylet::policies::{policy_named, BoxedPolicy};
use manta_raylet::{
    Command, LeaseId, LeaseManager, LeaseReply, LeaseRequest, NodeView, PoolConfig, RandomSource,
    ResourceSet, SchedulingStrategy, SharedNodes, SplitMix64, WorkerId, CPU,
};
use manta_transport::NodeId;
use manta_worker::cores::submitter::{
    Command as SubmitCommand, Ending, Failure as SubmitFailure, LeaseAnswer, Refusal, RequestId, Shape,
    SubmitterConfig, SubmitterCore,
};

use crate::node_id;
use crate::workload::{ClusterEvent, NodeKind, Placement, Workload};

/// How to run a workload.
#[derive(Debug, Clone)]
pub struct ScaleConfig {
    /// The scheduling policy, by its registered name.
    pub policy: String,
    /// The seed of every random choice.
    pub seed: u64,
    /// A run not finished by this simulated time is stuck (a failure), ms.
    pub time_limit_ms: u64,
    /// How often utilisation is sampled, ms.
    pub sample_ms: u64,
    /// How often each raylet's timers run (idle workers, start timeouts), ms.
    pub tick_ms: u64,
}

impl Default for ScaleConfig {
    fn default() -> Self {
        ScaleConfig {
            policy: "hybrid".into(),
            seed: 1,
            time_limit_ms: 24 * 3_600_000,
            sample_ms: 1_000,
            tick_ms: 1_000,
        }
    }
}

/// The queueing delay of one shape of task: submission to first start.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeDelay {
    /// The shape (its function and resources).
    pub shape: String,
    /// Tasks that started.
    pub tasks: usize,
    /// Median delay, ms.
    pub p50_ms: u64,
    /// 99th percentile, ms.
    pub p99_ms: u64,
}

/// What a finished run saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The policy.
    pub policy: String,
    /// The seed.
    pub seed: u64,
    /// Nodes that ever took part.
    pub nodes: usize,
    /// Tasks that finished.
    pub finished: usize,
    /// Tasks that failed, by reason.
    pub failed: BTreeMap<String, usize>,
    /// When the last task ended, ms.
    pub makespan_ms: u64,
    /// Events processed.
    pub events: u64,
    /// CPU in use (by leases and reserved bundles) over CPU alive, at each sample.
    pub utilisation: Vec<f64>,
    /// Queueing delay by shape.
    pub queueing: Vec<ShapeDelay>,
    /// Tasks finished on each node, by node index (in the order nodes were added).
    pub tasks_per_node: Vec<u64>,
    /// Argument bytes read from another node's store.
    pub remote_bytes: u64,
    /// Placement groups created (each counted once) and still pending at the end.
    pub groups_created: usize,
    /// Groups never placed.
    pub groups_pending: usize,
    /// Group creation time (request to `Created`), p50 and p99, ms.
    pub group_latency_ms: (u64, u64),
    /// Actors that ran their whole lifetime.
    pub actors_completed: usize,
    /// Actors that failed, by reason.
    pub actors_failed: BTreeMap<String, usize>,
    /// Actor restarts after their node died.
    pub actor_restarts: u64,
    /// Requests the raylets spilled to another node.
    pub spillbacks: u64,
    /// A digest of the whole run: every completion, placement and count.
    pub digest: u64,
}

impl Outcome {
    /// The mean of the utilisation samples while work remained.
    pub fn mean_utilisation(&self) -> f64 {
        if self.utilisation.is_empty() {
            return 0.0;
        }
        self.utilisation.iter().sum::<f64>() / self.utilisation.len() as f64
    }

    /// Tasks per node: (nodes that ran any, fewest, median, most).
    pub fn spread(&self) -> (usize, u64, u64, u64) {
        let mut counts = self.tasks_per_node.clone();
        counts.sort_unstable();
        let used = counts.iter().filter(|count| **count > 0).count();
        let median = counts.get(counts.len() / 2).copied().unwrap_or(0);
        (used, counts.first().copied().unwrap_or(0), median, counts.last().copied().unwrap_or(0))
    }
}

/// A broken invariant, with what replays it.
#[derive(Debug, Clone)]
pub struct ScaleFailure {
    /// The policy.
    pub policy: String,
    /// The seed.
    pub seed: u64,
    /// Simulated time, ms.
    pub time_ms: u64,
    /// Events processed by then (the step).
    pub events: u64,
    /// What broke.
    pub invariant: String,
    /// The last events, oldest first.
    pub trace: Vec<String>,
}

impl fmt::Display for ScaleFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "simulation (policy {}, seed {}) broke an invariant at {} ms, step {}: {}",
            self.policy, self.seed, self.time_ms, self.events, self.invariant
        )?;
        writeln!(
            f,
            "replay: manta sim --policy {} --seed {} (with the same workload)",
            self.policy, self.seed
        )?;
        writeln!(f, "last events:")?;
        for line in &self.trace {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ScaleFailure {}

type Node = usize;
type Driver = usize;
type Task = usize;
type Actor = usize;
type Group = usize;

/// Who asked for a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Requester {
    Driver(Driver),
    /// The head, for an actor (its incarnation).
    Actor(Actor, u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Driver(Driver),
    Node(Node),
    Gcs,
}

#[derive(Debug, Clone)]
enum Message {
    RequestLease {
        lease: LeaseId,
        requester: Requester,
        demand: ResourceSet,
        strategy: SchedulingStrategy,
        spilled: bool,
        arguments: Vec<(NodeId, u64)>,
    },
    LeaseReply {
        lease: LeaseId,
        reply: LeaseReply,
    },
    Push {
        lease: LeaseId,
        worker: WorkerId,
        task: Task,
    },
    TaskDone {
        lease: LeaseId,
        task: Task,
        ok: bool,
    },
    ReturnLease {
        lease: LeaseId,
        reusable: bool,
    },
    Prepare {
        group: Group,
        round: u64,
        bundles: Vec<(u32, Vec<(String, f64)>)>,
    },
    Commit {
        group: Group,
        round: u64,
        indices: Vec<u32>,
    },
    Cancel {
        group: Group,
        round: u64,
        indices: Vec<u32>,
    },
    GroupAnswer {
        group: Group,
        node: Node,
        commit: bool,
        answer: Result<(), String>,
    },
}

#[derive(Debug, Clone)]
enum Event {
    Arrivals,
    Deliver { from: Endpoint, to: Endpoint, message: Message },
    WorkerUp { node: Node, worker: WorkerId },
    TaskEnds { node: Node, worker: WorkerId, lease: LeaseId, task: Task },
    SubmitterTimer { driver: Driver },
    ActorArrives { actor: Actor },
    ActorEnds { actor: Actor, incarnation: u32 },
    GroupCreate { group: Group },
    GroupRemove { group: Group },
    Cluster { index: usize },
    Sync,
    Tick,
    Sample,
}

impl Event {
    /// Whether it recurs for as long as the run lasts (a run ends when only these remain).
    fn periodic(&self) -> bool {
        matches!(self, Event::Sync | Event::Tick | Event::Sample)
    }
}

struct Scheduled {
    at: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// A worker's tasks: the first runs, the rest were pushed ahead.
#[derive(Debug)]
struct Busy {
    lease: LeaseId,
    tasks: std::collections::VecDeque<Task>,
}

struct SimNode {
    id: NodeId,
    leases: LeaseManager<BoxedPolicy>,
    alive: bool,
    /// Until when it is cut off, ms.
    partitioned_until: u64,
    /// Live workers, and what each runs.
    workers: HashMap<WorkerId, Option<Busy>>,
    /// Who asked for each lease this node knows.
    requesters: HashMap<LeaseId, Requester>,
    /// What each lease asked for.
    demands: HashMap<LeaseId, ResourceSet>,
    /// What each granted lease holds (the conservation check).
    held: HashMap<LeaseId, ResourceSet>,
    /// The worker of each granted lease.
    granted_worker: HashMap<LeaseId, WorkerId>,
    /// Leases answered (a second answer before the lease ends is a violation).
    answered: std::collections::HashSet<LeaseId>,
    /// Its CPUs (for utilisation).
    cpus: f64,
    /// Whether its resources changed since its last report to the GCS.
    dirty: bool,
}

struct TaskRecord {
    batch: u16,
    driver: u32,
    arrive: u64,
    duration: u32,
    /// The node whose store holds its argument (`u32::MAX`: none).
    argument_at: u32,
    /// First start, ms (`u64::MAX`: never started).
    started: u64,
    /// The node of its last successful run.
    node: u32,
    done: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum ActorPhase {
    Waiting,
    Requested { lease: LeaseId, node: Node },
    Running { lease: LeaseId, node: Node },
    Completed,
    Failed(String),
}

struct ActorRecord {
    demand: ResourceSet,
    lifetime: u64,
    restarts_left: u32,
    incarnation: u32,
    phase: ActorPhase,
}

struct SimDriver {
    core: SubmitterCore<Task>,
    home: Node,
    /// Each open request: its lease, the node asked, and the worker once granted.
    requests: HashMap<RequestId, (LeaseId, Node, Option<WorkerId>)>,
    by_lease: HashMap<LeaseId, RequestId>,
    timer: Option<u64>,
}

struct GroupRecord {
    id: PlacementGroupId,
    spec: PlacementGroupSpec,
    asked_at: u64,
    created_at: Option<u64>,
    removed: bool,
}

const TRACE_LEN: usize = 64;
/// Open work and nothing happening but the periodic broadcasts and timers for this long (ten
/// simulated minutes): the run is stuck.
const STUCK_MS: u64 = 600_000;

fn task_object(task: Task) -> ObjectId {
    ObjectId::from_parts([0; 12], task as u64)
}

fn group_id(group: Group) -> PlacementGroupId {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&(group as u64 + 1).to_be_bytes());
    bytes[15] = 0x9d;
    PlacementGroupId(bytes)
}

fn resource_set(amounts: &[(String, f64)]) -> ResourceSet {
    ResourceSet::from_amounts(amounts).unwrap_or_default()
}

fn amounts_of(set: &ResourceSet) -> Vec<(String, f64)> {
    set.iter().map(|(name, quantity)| (name.to_owned(), quantity.as_f64())).collect()
}

/// FNV-1a, 64 bits: a digest that is the same on every machine and every build.
#[derive(Debug, Clone, Copy)]
struct Digest(u64);

impl Digest {
    fn add(&mut self, value: u64) {
        for byte in value.to_le_bytes() {
            self.0 ^= byte as u64;
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01B3);
        }
    }
}

/// The node a driver lives on: drivers spread evenly over the first nodes.
pub fn driver_home(driver: usize, drivers: usize, nodes: usize) -> usize {
    driver * nodes / drivers.max(1)
}

struct World<'w> {
    workload: &'w Workload,
    config: ScaleConfig,
    random: SplitMix64,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    /// Events pending that are not periodic.
    pending: usize,
    processed: u64,
    gcs: GcsCore<MemoryStorage>,
    groups_core: PlacementCore<BoxedPolicy>,
    nodes: Vec<SimNode>,
    index_of: HashMap<NodeId, Node>,
    drivers: Vec<SimDriver>,
    shapes: Vec<Shape>,
    tasks: Vec<TaskRecord>,
    /// Tasks in order of arrival, and how many have arrived.
    arrivals: Vec<u32>,
    arrived: usize,
    open_tasks: usize,
    actors: Vec<ActorRecord>,
    open_actors: usize,
    groups: Vec<GroupRecord>,
    group_index: HashMap<PlacementGroupId, Group>,
    next_lease: u64,
    /// When the last event that was not periodic happened, ms.
    last_progress: u64,
    trace: std::collections::VecDeque<(u64, Event)>,
    violation: Option<String>,
    touched: Vec<Node>,
    // What the outcome reports.
    failed: BTreeMap<String, usize>,
    finished: usize,
    makespan: u64,
    utilisation: Vec<f64>,
    remote_bytes: u64,
    actors_failed: BTreeMap<String, usize>,
    actors_completed: usize,
    actor_restarts: u64,
    spillbacks: u64,
    digest: Digest,
}

/// Runs `workload` under `config`: what it saw, or the first broken invariant.
pub fn simulate(workload: &Workload, config: &ScaleConfig) -> Result<Outcome, ScaleFailure> {
    let failure = |invariant: String| ScaleFailure {
        policy: config.policy.clone(),
        seed: config.seed,
        time_ms: 0,
        events: 0,
        invariant,
        trace: Vec::new(),
    };
    workload.validate().map_err(|error| failure(error.to_string()))?;
    check_kills(workload).map_err(failure)?;
    let mut world = World::new(workload, config.clone()).map_err(failure)?;
    world.start();
    while let Some(Reverse(Scheduled { at, event, .. })) = world.queue.pop() {
        world.now = at;
        world.processed += 1;
        if !event.periodic() {
            world.pending -= 1;
        }
        if world.trace.len() == TRACE_LEN {
            world.trace.pop_front();
        }
        if !event.periodic() {
            world.last_progress = at;
        }
        world.trace.push_back((at, event.clone()));
        world.handle(event);
        world.check()?;
        if !world.going_on() {
            break;
        }
        if world.now.saturating_sub(world.last_progress) > STUCK_MS {
            let why =
                format!("stuck: nothing but the periodic work for {STUCK_MS} ms, yet {}", world.unsettled());
            return Err(world.failure(why));
        }
        if world.now > world.config.time_limit_ms {
            let why = format!("not finished by {} ms: {}", world.now, world.unsettled());
            return Err(world.failure(why));
        }
    }
    if world.open_tasks > 0 || world.open_actors > 0 {
        let why = format!("nothing left to happen, yet {}", world.unsettled());
        return Err(world.failure(why));
    }
    world.check_at_end()?;
    Ok(world.outcome())
}

/// The simulator does not model a driver's death with its node, nor the head's (GCS fault
/// tolerance is another issue's): a workload may not kill the nodes they live on.
fn check_kills(workload: &Workload) -> Result<(), String> {
    let nodes = workload.initial_nodes();
    for event in &workload.events {
        if let ClusterEvent::Kill { from, to, .. } = event {
            for driver in 0..workload.drivers {
                let home = driver_home(driver, workload.drivers, nodes);
                if (*from..=*to).contains(&home) {
                    return Err(format!(
                        "kill nodes {from}..{to}: node {home} runs driver {driver} (node 0 is the head); \
                         the simulator does not model a driver dying with its node"
                    ));
                }
            }
        }
    }
    Ok(())
}

impl<'w> World<'w> {
    fn new(workload: &'w Workload, config: ScaleConfig) -> Result<World<'w>, String> {
        let mut random = SplitMix64(config.seed);
        let groups_core = PlacementCore::new(policy_named(&config.policy)?);
        let mut world = World {
            workload,
            random: SplitMix64(0),
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            pending: 0,
            processed: 0,
            gcs: GcsCore::new(MemoryStorage::default()),
            groups_core,
            nodes: Vec::new(),
            index_of: HashMap::new(),
            drivers: Vec::new(),
            shapes: Vec::new(),
            tasks: Vec::new(),
            arrivals: Vec::new(),
            arrived: 0,
            open_tasks: 0,
            actors: Vec::new(),
            open_actors: 0,
            groups: Vec::new(),
            group_index: HashMap::new(),
            next_lease: 1,
            last_progress: 0,
            trace: std::collections::VecDeque::new(),
            violation: None,
            touched: Vec::new(),
            failed: BTreeMap::new(),
            finished: 0,
            makespan: 0,
            utilisation: Vec::new(),
            remote_bytes: 0,
            actors_failed: BTreeMap::new(),
            actors_completed: 0,
            actor_restarts: 0,
            spillbacks: 0,
            digest: Digest(0xcbf2_9ce4_8422_2325),
            config,
        };
        for kind in &workload.nodes {
            for _ in 0..kind.count {
                world.add_node(kind)?;
            }
        }
        let nodes = world.nodes.len();
        for driver in 0..workload.drivers {
            world.drivers.push(SimDriver {
                core: SubmitterCore::new(SubmitterConfig::default()),
                home: driver_home(driver, workload.drivers, nodes),
                requests: HashMap::new(),
                by_lease: HashMap::new(),
                timer: None,
            });
        }
        for (index, group) in workload.groups.iter().enumerate() {
            let id = group_id(index);
            let spec = PlacementGroupSpec {
                id,
                name: group.name.clone(),
                namespace: "sim".into(),
                strategy: group.strategy,
                bundles: group.bundles.clone(),
                job: None,
                detached: true,
                bundle_labels: Vec::new(),
            };
            world.group_index.insert(id, index);
            world.groups.push(GroupRecord { id, spec, asked_at: group.at, created_at: None, removed: false });
        }
        // Each batch's shape, and its tasks with their arrival, duration and argument.
        for (batch_index, batch) in workload.tasks.iter().enumerate() {
            let function: &'static str = Box::leak(batch.function.clone().into_boxed_str());
            let amount = |name: &str| {
                batch.resources.iter().filter(|(key, _)| key == name).map(|(_, amount)| amount).sum::<f64>()
            };
            let custom: Vec<(String, f64)> =
                batch.resources.iter().filter(|(name, _)| name != CPU && name != "GPU").cloned().collect();
            let shape = match &batch.placement {
                Placement::Default => {
                    Shape::new(function, amount(CPU), amount("GPU"), &custom, SchedulingStrategy::Hybrid)
                }
                Placement::Spread => {
                    Shape::new(function, amount(CPU), amount("GPU"), &custom, SchedulingStrategy::Spread)
                }
                Placement::Group { name, bundle } => {
                    let group =
                        workload.groups.iter().position(|group| &group.name == name).unwrap_or_default();
                    let demand =
                        manta_proto::placement::demand_in_group(&batch.resources, group_id(group), *bundle);
                    Shape::new(function, 0.0, 0.0, &demand, SchedulingStrategy::Hybrid)
                }
            };
            world.shapes.push(shape);
            let span = batch.arrival.to - batch.arrival.from;
            for index in 0..batch.count {
                let arrive = batch.arrival.from + span * index as u64 / batch.count.max(1) as u64;
                let duration = batch.duration.from
                    + random.below((batch.duration.to - batch.duration.from + 1) as usize) as u64;
                let argument_at =
                    if batch.argument_bytes > 0 { random.below(nodes) as u32 } else { u32::MAX };
                let driver = (world.tasks.len() % workload.drivers) as u32;
                world.tasks.push(TaskRecord {
                    batch: batch_index as u16,
                    driver,
                    arrive,
                    duration: duration.min(u32::MAX as u64) as u32,
                    argument_at,
                    started: u64::MAX,
                    node: u32::MAX,
                    done: false,
                });
            }
        }
        world.open_tasks = world.tasks.len();
        let mut order: Vec<u32> = (0..world.tasks.len() as u32).collect();
        order.sort_by_key(|task| (world.tasks[*task as usize].arrive, *task));
        world.arrivals = order;
        for batch in &workload.actors {
            for _ in 0..batch.count {
                world.actors.push(ActorRecord {
                    demand: resource_set(&batch.resources),
                    lifetime: batch.lifetime,
                    restarts_left: batch.restarts,
                    incarnation: 0,
                    phase: ActorPhase::Waiting,
                });
            }
        }
        world.open_actors = world.actors.len();
        world.random = random;
        Ok(world)
    }

    fn add_node(&mut self, kind: &NodeKind) -> Result<(), String> {
        let index = self.nodes.len();
        let id = node_id(index);
        let total = ResourceSet::from_amounts(&kind.resources).map_err(|error| error.to_string())?;
        let info = NodeInfo {
            node_id: id,
            address: format!("sim-node-{index}"),
            resources: kind.resources.clone(),
            state: NodeState::Alive,
            registered_ms: self.now,
            death_cause: None,
            labels: kind.labels.clone(),
        };
        self.gcs.register_node(info).map_err(|error| error.to_string())?;
        let cpus = total.get(CPU).as_f64();
        let pool = PoolConfig {
            // As `manta start` configures a node's pool.
            workers_max: (cpus as usize).max(1) * 2,
            start_concurrency_max: (cpus as usize).max(1),
            labels: kind.labels.clone(),
            // As the daemons run: work no node can run yet waits for one that can.
            wait_when_infeasible: true,
            ..PoolConfig::default()
        };
        let policy = policy_named(&self.config.policy)?;
        self.nodes.push(SimNode {
            id,
            leases: LeaseManager::new(id, total, policy, pool),
            alive: true,
            partitioned_until: 0,
            workers: HashMap::new(),
            requesters: HashMap::new(),
            demands: HashMap::new(),
            held: HashMap::new(),
            granted_worker: HashMap::new(),
            answered: std::collections::HashSet::new(),
            cpus,
            dirty: true,
        });
        self.index_of.insert(id, index);
        Ok(())
    }

    /// Whether anything is left to happen or to finish.
    fn going_on(&self) -> bool {
        self.pending > 0 || self.open_tasks > 0 || self.open_actors > 0
    }

    fn schedule(&mut self, after_ms: u64, event: Event) {
        self.seq += 1;
        if !event.periodic() {
            self.pending += 1;
        }
        self.queue.push(Reverse(Scheduled { at: self.now + after_ms, seq: self.seq, event }));
    }

    fn start(&mut self) {
        self.schedule(0, Event::Sync);
        self.schedule(self.config.tick_ms, Event::Tick);
        self.schedule(0, Event::Sample);
        if let Some(&first) = self.arrivals.first() {
            let at = self.tasks[first as usize].arrive;
            self.schedule(at, Event::Arrivals);
        }
        let mut actor = 0;
        for batch in &self.workload.actors {
            for index in 0..batch.count {
                let span = batch.arrival.to - batch.arrival.from;
                let at = batch.arrival.from + span * index as u64 / batch.count.max(1) as u64;
                self.schedule(at, Event::ActorArrives { actor });
                actor += 1;
            }
        }
        for (group, spec) in self.workload.groups.iter().enumerate() {
            self.schedule(spec.at, Event::GroupCreate { group });
            if let Some(at) = spec.remove_at {
                self.schedule(at.max(spec.at), Event::GroupRemove { group });
            }
        }
        for (index, event) in self.workload.events.iter().enumerate() {
            let at = match event {
                ClusterEvent::Join { at, .. }
                | ClusterEvent::Kill { at, .. }
                | ClusterEvent::Partition { at, .. } => *at,
            };
            self.schedule(at, Event::Cluster { index });
        }
    }

    // ---- the network ----

    fn node_of(endpoint: Endpoint, drivers: &[SimDriver]) -> Option<Node> {
        match endpoint {
            Endpoint::Node(node) => Some(node),
            Endpoint::Driver(driver) => Some(drivers[driver].home),
            Endpoint::Gcs => Some(0),
        }
    }

    fn send(&mut self, from: Endpoint, to: Endpoint, message: Message) {
        let network = self.workload.network;
        let span = network.latency.to - network.latency.from;
        let mut delay = network.latency.from + self.random.below(span as usize + 1) as u64;
        if network.loss > 0.0 && (self.random.below(1_000_000) as f64) < network.loss * 1_000_000.0 {
            delay += network.retransmit_ms;
        }
        // A partitioned end holds the message until the partition heals.
        let held_until = [from, to]
            .into_iter()
            .filter_map(|end| World::node_of(end, &self.drivers))
            .map(|node| self.nodes[node].partitioned_until)
            .max()
            .unwrap_or(0);
        if held_until > self.now + delay {
            delay += held_until - self.now;
        }
        self.schedule(delay, Event::Deliver { from, to, message });
    }

    fn alive(&self, endpoint: Endpoint) -> bool {
        match endpoint {
            Endpoint::Node(node) => self.nodes[node].alive,
            Endpoint::Driver(_) | Endpoint::Gcs => true,
        }
    }

    // ---- events ----

    fn handle(&mut self, event: Event) {
        match event {
            Event::Arrivals => self.arrivals(),
            Event::Deliver { from, to, message } => {
                // A dead end: the connection is gone with what was on it.
                if !self.alive(from) || !self.alive(to) {
                    return;
                }
                match to {
                    Endpoint::Node(node) => self.node_receives(node, from, message),
                    Endpoint::Driver(driver) => self.driver_receives(driver, from, message),
                    Endpoint::Gcs => self.gcs_receives(message),
                }
            }
            Event::WorkerUp { node, worker } => {
                if !self.nodes[node].alive {
                    return;
                }
                let now = self.now;
                if self.nodes[node].leases.worker_registered(now, worker) {
                    self.nodes[node].workers.insert(worker, None);
                }
                self.perform(node);
            }
            Event::TaskEnds { node, worker, lease, task } => self.task_ends(node, worker, lease, task),
            Event::SubmitterTimer { driver } => {
                let now = Duration::from_millis(self.now);
                self.drivers[driver].timer = None;
                self.drivers[driver].core.handle_timeout(now);
                self.drive(driver);
            }
            Event::ActorArrives { actor } => self.request_actor_lease(actor),
            Event::ActorEnds { actor, incarnation } => {
                let record = &mut self.actors[actor];
                if record.incarnation != incarnation {
                    return;
                }
                if let ActorPhase::Running { lease, node } = record.phase.clone() {
                    record.phase = ActorPhase::Completed;
                    self.actors_completed += 1;
                    self.open_actors -= 1;
                    self.send(
                        Endpoint::Gcs,
                        Endpoint::Node(node),
                        Message::ReturnLease { lease, reusable: false },
                    );
                }
            }
            Event::GroupCreate { group } => {
                let spec = self.groups[group].spec.clone();
                self.groups[group].asked_at = self.now;
                if let Err(error) = self.groups_core.create(spec, self.now) {
                    self.violation =
                        Some(format!("the placement-group manager refused group {group}: {error}"));
                }
                self.perform_groups();
            }
            Event::GroupRemove { group } => {
                let id = self.groups[group].id;
                self.groups[group].removed = true;
                if let Err(error) = self.groups_core.remove(id, "removed by the workload") {
                    self.violation = Some(format!("removing group {group}: {error}"));
                }
                self.perform_groups();
            }
            Event::Cluster { index } => self.cluster_event(index),
            Event::Sync => {
                self.sync();
                if self.going_on() {
                    self.schedule(self.workload.sync_ms, Event::Sync);
                }
            }
            Event::Tick => {
                let now = self.now;
                for node in 0..self.nodes.len() {
                    if self.nodes[node].alive && !self.nodes[node].workers.is_empty() {
                        self.nodes[node].leases.tick(now);
                        self.perform(node);
                    }
                }
                self.groups_core.tick(now);
                self.perform_groups();
                if self.going_on() {
                    self.schedule(self.config.tick_ms, Event::Tick);
                }
            }
            Event::Sample => {
                self.sample();
                if self.going_on() {
                    self.schedule(self.config.sample_ms, Event::Sample);
                }
            }
        }
    }

    fn arrivals(&mut self) {
        let now = Duration::from_millis(self.now);
        let mut drivers = Vec::new();
        while let Some(&task) = self.arrivals.get(self.arrived) {
            let task = task as usize;
            if self.tasks[task].arrive > self.now {
                let at = self.tasks[task].arrive - self.now;
                self.schedule(at, Event::Arrivals);
                break;
            }
            self.arrived += 1;
            let record = &self.tasks[task];
            let (driver, batch) = (record.driver as usize, record.batch as usize);
            let shape = self.shapes[batch].clone();
            let retries = self.workload.tasks[batch].retries;
            let home = self.drivers[driver].home;
            let arguments: Vec<(NodeId, u64)> = match record.argument_at {
                u32::MAX => Vec::new(),
                at => vec![(node_id(at as usize), self.workload.tasks[batch].argument_bytes)],
            };
            // As the core worker does: default-strategy work whose arguments are mostly on
            // another node asks that node's raylet first.
            let near = match (record.argument_at, &shape.strategy) {
                (at, SchedulingStrategy::Hybrid) if at != u32::MAX && at as usize != home => {
                    Some(node_id(at as usize))
                }
                _ => None,
            };
            let core = &mut self.drivers[driver].core;
            core.submit(task_object(task), shape, retries);
            core.resolved_near(now, task_object(task), near, arguments);
            if !drivers.contains(&driver) {
                drivers.push(driver);
            }
        }
        for driver in drivers {
            self.drive(driver);
        }
    }

    // ---- drivers: the real submitter core ----

    fn drive(&mut self, driver: Driver) {
        loop {
            let commands: Vec<SubmitCommand<Task>> = self.drivers[driver].core.poll_commands().collect();
            if commands.is_empty() {
                break;
            }
            for command in commands {
                self.perform_submit(driver, command);
            }
        }
        if let Some(due) = self.drivers[driver].core.poll_timeout() {
            let due_ms = due.as_micros().div_ceil(1_000) as u64;
            if self.drivers[driver].timer.is_none_or(|armed| due_ms < armed) {
                self.drivers[driver].timer = Some(due_ms);
                self.schedule(due_ms.saturating_sub(self.now), Event::SubmitterTimer { driver });
            }
        }
    }

    fn perform_submit(&mut self, driver: Driver, command: SubmitCommand<Task>) {
        let now = Duration::from_millis(self.now);
        match command {
            SubmitCommand::RequestLease { request, shape, node, spilled, arguments } => {
                let target = match node {
                    None => Some(self.drivers[driver].home),
                    Some(id) => self.index_of.get(&id).copied().filter(|node| self.nodes[*node].alive),
                };
                let Some(target) = target else {
                    // As the core worker's shell does: the node it was sent to is gone, so it
                    // asks its own raylet again, whose view will have moved on.
                    self.drivers[driver].core.lease_answered(now, request, LeaseAnswer::Lost);
                    return;
                };
                let lease = LeaseId(self.next_lease);
                self.next_lease += 1;
                let books = &mut self.drivers[driver];
                books.requests.insert(request, (lease, target, None));
                books.by_lease.insert(lease, request);
                let (cpus, gpus, custom) = shape.amounts();
                let mut demand = resource_set(&custom);
                demand.add(&resource_set(&[(CPU.into(), cpus), ("GPU".into(), gpus)]));
                let message = Message::RequestLease {
                    lease,
                    requester: Requester::Driver(driver),
                    demand,
                    strategy: shape.strategy,
                    spilled,
                    arguments,
                };
                self.send(Endpoint::Driver(driver), Endpoint::Node(target), message);
            }
            SubmitCommand::Push { request, task, .. } => {
                let Some(&(lease, node, Some(worker))) = self.drivers[driver].requests.get(&request) else {
                    self.violation =
                        Some(format!("driver {driver} pushed to {request:?}, not a granted lease"));
                    return;
                };
                let task = task.counter() as usize;
                self.send(
                    Endpoint::Driver(driver),
                    Endpoint::Node(node),
                    Message::Push { lease, worker, task },
                );
            }
            SubmitCommand::ReturnLease { request, reusable, .. } => {
                let Some((lease, node, _)) = self.drivers[driver].requests.remove(&request) else {
                    self.violation =
                        Some(format!("driver {driver} returned {request:?}, which it does not hold"));
                    return;
                };
                self.send(
                    Endpoint::Driver(driver),
                    Endpoint::Node(node),
                    Message::ReturnLease { lease, reusable },
                );
            }
            SubmitCommand::Complete { task, outcome } => {
                let task = task.counter() as usize;
                let record = &mut self.tasks[task];
                if record.done {
                    self.violation = Some(format!("task {task} completed twice"));
                    return;
                }
                record.done = true;
                self.open_tasks -= 1;
                self.makespan = self.makespan.max(self.now);
                let node = record.node;
                match outcome {
                    Ok(echo) if echo == task && node != u32::MAX => {
                        self.finished += 1;
                        self.digest.add(task as u64);
                        self.digest.add(node as u64);
                        self.digest.add(self.now);
                    }
                    Ok(echo) => {
                        self.violation = Some(format!("task {task} completed with task {echo}'s output"))
                    }
                    Err(failure) => {
                        let reason = match failure {
                            SubmitFailure::Cancelled => "cancelled".to_owned(),
                            SubmitFailure::WorkerDied { .. } => "worker died".to_owned(),
                            SubmitFailure::NodeDied { .. } => "node died".to_owned(),
                            SubmitFailure::Refused(Refusal::Infeasible { .. }) => "infeasible".to_owned(),
                            SubmitFailure::Refused(Refusal::Invalid { reason })
                                if reason.contains("placement group") =>
                            {
                                "its group was removed".to_owned()
                            }
                            SubmitFailure::Refused(Refusal::Invalid { .. }) => "invalid".to_owned(),
                            SubmitFailure::Refused(Refusal::WorkerStartFailed { .. }) => {
                                "worker start failed".to_owned()
                            }
                            SubmitFailure::Refused(Refusal::Unreachable { .. }) => {
                                "node unreachable".to_owned()
                            }
                        };
                        self.digest.add(task as u64 | 1 << 63);
                        *self.failed.entry(reason).or_default() += 1;
                    }
                }
            }
            SubmitCommand::Discard { .. } | SubmitCommand::Interrupt { .. } => {}
        }
    }

    fn current_request(&self, driver: Driver, lease: LeaseId) -> Option<RequestId> {
        let books = &self.drivers[driver];
        let request = *books.by_lease.get(&lease)?;
        matches!(books.requests.get(&request), Some((current, _, _)) if *current == lease).then_some(request)
    }

    fn driver_receives(&mut self, driver: Driver, from: Endpoint, message: Message) {
        let now = Duration::from_millis(self.now);
        let Endpoint::Node(node) = from else { return };
        match message {
            Message::LeaseReply { lease, reply } => {
                let Some(request) = self.current_request(driver, lease) else {
                    // Nobody waits for it any more: a grant goes straight back.
                    if matches!(reply, LeaseReply::Granted { .. }) {
                        self.send(
                            Endpoint::Driver(driver),
                            Endpoint::Node(node),
                            Message::ReturnLease { lease, reusable: true },
                        );
                    }
                    return;
                };
                let books = &mut self.drivers[driver];
                let answer = match reply {
                    LeaseReply::Granted { worker } => {
                        if let Some(entry) = books.requests.get_mut(&request) {
                            entry.2 = Some(worker);
                        }
                        LeaseAnswer::Granted { lease: lease.0, pid: worker.0 as u32 }
                    }
                    LeaseReply::WorkerDied { exit, .. } => {
                        books.core.worker_died(now, request, &Ending::Worker(exit));
                        return self.drive(driver);
                    }
                    LeaseReply::Spillback { node } => {
                        self.spillbacks += 1;
                        LeaseAnswer::Spillback { node }
                    }
                    LeaseReply::Infeasible => {
                        LeaseAnswer::Refused(Refusal::Infeasible { demand: "its resources".into() })
                    }
                    LeaseReply::WorkerStartFailed { exit } => {
                        LeaseAnswer::Refused(Refusal::WorkerStartFailed { exit })
                    }
                    LeaseReply::Refused { reason } => LeaseAnswer::Refused(Refusal::Invalid { reason }),
                };
                let books = &mut self.drivers[driver];
                if !matches!(answer, LeaseAnswer::Granted { .. }) {
                    books.requests.remove(&request);
                }
                books.core.lease_answered(now, request, answer);
            }
            Message::TaskDone { lease, task, ok } => {
                let Some(&request) = self.drivers[driver].by_lease.get(&lease) else { return };
                let run_us = self.tasks[task].duration as u64 * 1_000;
                let core = &mut self.drivers[driver].core;
                if ok {
                    core.task_replied(now, request, task_object(task), Some(run_us), task);
                } else {
                    core.worker_died(now, request, &Ending::worker("its worker is gone"));
                }
            }
            _ => {}
        }
        self.drive(driver);
    }

    // ---- the node shell (what `RayletActor` does around its `LeaseManager`) ----

    fn touch(&mut self, node: Node) {
        self.nodes[node].dirty = true;
        if !self.touched.contains(&node) {
            self.touched.push(node);
        }
    }

    fn node_receives(&mut self, node: Node, from: Endpoint, message: Message) {
        self.touch(node);
        let now = self.now;
        match message {
            Message::RequestLease { lease, requester, demand, strategy, spilled, arguments } => {
                self.nodes[node].requesters.insert(lease, requester);
                self.nodes[node].demands.insert(lease, demand.clone());
                let dedicated = matches!(requester, Requester::Actor(..));
                let request = LeaseRequest {
                    placement: demand.clone(),
                    demand,
                    strategy,
                    dedicated,
                    job: JobId(0),
                    spilled,
                    arguments,
                };
                let SimNode { leases, .. } = &mut self.nodes[node];
                leases.request_lease_placed(now, lease, request, &mut self.random);
            }
            Message::Push { lease, worker, task } => {
                let granted = self.nodes[node].granted_worker.get(&lease) == Some(&worker)
                    && self.nodes[node].held.contains_key(&lease);
                let Endpoint::Driver(driver) = from else { return };
                match self.nodes[node].workers.get_mut(&worker) {
                    Some(Some(busy)) if granted && busy.lease == lease => busy.tasks.push_back(task),
                    Some(idle @ None) if granted => {
                        *idle = Some(Busy { lease, tasks: [task].into() });
                        self.start_task(node, worker);
                    }
                    _ => self.send(
                        Endpoint::Node(node),
                        Endpoint::Driver(driver),
                        Message::TaskDone { lease, task, ok: false },
                    ),
                }
            }
            Message::ReturnLease { lease, reusable } => {
                if self.nodes[node].leases.return_lease(now, lease, reusable) {
                    self.end_lease(node, lease);
                }
                self.nodes[node].requesters.remove(&lease);
                for running in self.nodes[node].workers.values_mut() {
                    if matches!(running, Some(busy) if busy.lease == lease) {
                        *running = None;
                    }
                }
            }
            Message::Prepare { group, round, bundles } => {
                let id = self.groups[group].id;
                let answer = self.nodes[node].leases.prepare_bundles(id, round, &bundles);
                let message = Message::GroupAnswer { group, node, commit: false, answer };
                self.send(Endpoint::Node(node), Endpoint::Gcs, message);
            }
            Message::Commit { group, round, indices } => {
                let id = self.groups[group].id;
                let answer = self.nodes[node].leases.commit_bundles(now, id, round, &indices);
                let message = Message::GroupAnswer { group, node, commit: true, answer };
                self.send(Endpoint::Node(node), Endpoint::Gcs, message);
            }
            Message::Cancel { group, round, indices } => {
                let id = self.groups[group].id;
                self.nodes[node].leases.cancel_bundles(now, id, round, &indices);
            }
            Message::LeaseReply { .. } | Message::TaskDone { .. } | Message::GroupAnswer { .. } => {}
        }
        self.perform(node);
    }

    /// A lease is over: it holds nothing now, and may be answered again if asked again.
    fn end_lease(&mut self, node: Node, lease: LeaseId) {
        let record = &mut self.nodes[node];
        record.held.remove(&lease);
        record.granted_worker.remove(&lease);
        record.demands.remove(&lease);
    }

    fn start_task(&mut self, node: Node, worker: WorkerId) {
        if !self.nodes[node].alive {
            self.violation = Some(format!("a task was started on node {node}, which is dead"));
            return;
        }
        let Some(Some(busy)) = self.nodes[node].workers.get(&worker) else { return };
        let Some(&task) = busy.tasks.front() else { return };
        let lease = busy.lease;
        let record = &mut self.tasks[task];
        if record.started == u64::MAX {
            record.started = self.now;
        }
        let mut duration = record.duration as u64;
        if record.argument_at != u32::MAX && record.argument_at as usize != node {
            // Its argument is pulled from the node holding it first.
            let bytes = self.workload.tasks[record.batch as usize].argument_bytes;
            self.remote_bytes += bytes;
            duration += bytes * 1_000 / self.workload.network.bandwidth.max(1);
        }
        self.schedule(duration.max(1), Event::TaskEnds { node, worker, lease, task });
    }

    fn task_ends(&mut self, node: Node, worker: WorkerId, lease: LeaseId, task: Task) {
        let still = matches!(self.nodes[node].workers.get(&worker),
            Some(Some(busy)) if busy.lease == lease && busy.tasks.front() == Some(&task));
        if !still || !self.nodes[node].alive {
            return;
        }
        self.tasks[task].node = node as u32;
        let Some(Requester::Driver(driver)) = self.nodes[node].requesters.get(&lease).copied() else {
            self.violation =
                Some(format!("node {node} ran task {task} on lease {lease:?}, which no driver holds"));
            return;
        };
        self.send(
            Endpoint::Node(node),
            Endpoint::Driver(driver),
            Message::TaskDone { lease, task, ok: true },
        );
        if let Some(Some(busy)) = self.nodes[node].workers.get_mut(&worker) {
            busy.tasks.pop_front();
            if busy.tasks.is_empty() {
                self.nodes[node].workers.insert(worker, None);
            } else {
                self.start_task(node, worker);
            }
        }
    }

    /// Carries out a lease manager's commands, checking its answers.
    fn perform(&mut self, node: Node) {
        self.touch(node);
        loop {
            let commands = self.nodes[node].leases.poll_commands();
            if commands.is_empty() {
                return;
            }
            for command in commands {
                match command {
                    Command::StartWorker { worker, .. } => {
                        let delay = self.workload.worker_start_ms;
                        self.schedule(delay, Event::WorkerUp { node, worker });
                    }
                    Command::KillWorker { worker } => {
                        if let Some(Some(busy)) = self.nodes[node].workers.remove(&worker) {
                            if let Some(Requester::Driver(driver)) =
                                self.nodes[node].requesters.get(&busy.lease).copied()
                            {
                                for task in busy.tasks {
                                    let message = Message::TaskDone { lease: busy.lease, task, ok: false };
                                    self.send(Endpoint::Node(node), Endpoint::Driver(driver), message);
                                }
                            }
                        }
                    }
                    Command::Reply { lease, reply } => self.answer(node, lease, reply),
                    Command::WaitingInfeasible { .. } => {}
                    Command::RetireWorker { worker } => {
                        let now = self.now;
                        self.nodes[node].leases.retire_answered(now, worker, true);
                    }
                }
            }
        }
    }

    fn answer(&mut self, node: Node, lease: LeaseId, reply: LeaseReply) {
        let record = &mut self.nodes[node];
        match &reply {
            LeaseReply::WorkerDied { .. } => {
                record.held.remove(&lease);
                record.granted_worker.remove(&lease);
            }
            _ => {
                if !record.answered.insert(lease) {
                    self.violation =
                        Some(format!("node {node} answered lease {lease:?} twice (now {reply:?})"));
                    return;
                }
                if let LeaseReply::Granted { worker } = &reply {
                    let wanted = record.demands.get(&lease).cloned().unwrap_or_default();
                    record.held.insert(lease, wanted);
                    record.granted_worker.insert(lease, *worker);
                }
            }
        }
        let Some(&requester) = self.nodes[node].requesters.get(&lease) else { return };
        if !matches!(reply, LeaseReply::Granted { .. }) {
            self.nodes[node].requesters.remove(&lease);
        }
        match requester {
            Requester::Driver(driver) => self.send(
                Endpoint::Node(node),
                Endpoint::Driver(driver),
                Message::LeaseReply { lease, reply },
            ),
            Requester::Actor(actor, incarnation) => {
                self.actor_answered(actor, incarnation, node, lease, reply)
            }
        }
    }

    // ---- actors: leases the head asks for on their behalf ----

    fn request_actor_lease(&mut self, actor: Actor) {
        self.request_actor_lease_at(actor, 0, false);
    }

    fn request_actor_lease_at(&mut self, actor: Actor, node: Node, spilled: bool) {
        let lease = LeaseId(self.next_lease);
        self.next_lease += 1;
        let record = &mut self.actors[actor];
        record.phase = ActorPhase::Requested { lease, node };
        let message = Message::RequestLease {
            lease,
            requester: Requester::Actor(actor, record.incarnation),
            demand: record.demand.clone(),
            strategy: SchedulingStrategy::Hybrid,
            spilled,
            arguments: Vec::new(),
        };
        self.send(Endpoint::Gcs, Endpoint::Node(node), message);
    }

    fn actor_answered(
        &mut self,
        actor: Actor,
        incarnation: u32,
        node: Node,
        lease: LeaseId,
        reply: LeaseReply,
    ) {
        // The answer travels back to the head.
        let current = self.actors[actor].incarnation == incarnation
            && self.actors[actor].phase == ActorPhase::Requested { lease, node };
        match reply {
            LeaseReply::Granted { .. } if current => {
                self.actors[actor].phase = ActorPhase::Running { lease, node };
                let lifetime = self.actors[actor].lifetime;
                self.schedule(lifetime, Event::ActorEnds { actor, incarnation });
            }
            LeaseReply::Granted { .. } => self.send(
                Endpoint::Gcs,
                Endpoint::Node(node),
                Message::ReturnLease { lease, reusable: false },
            ),
            LeaseReply::Spillback { node: target } if current => {
                self.spillbacks += 1;
                match self.index_of.get(&target).copied() {
                    Some(target) => self.request_actor_lease_at(actor, target, true),
                    None => self.actor_failed(actor, "spilled to an unknown node"),
                }
            }
            LeaseReply::WorkerDied { .. }
                if self.actors[actor].phase == (ActorPhase::Running { lease, node }) =>
            {
                self.actor_lost(actor, "its worker died");
            }
            LeaseReply::Infeasible if current => self.actor_failed(actor, "infeasible"),
            LeaseReply::WorkerStartFailed { .. } if current => {
                self.actor_failed(actor, "its worker did not start")
            }
            LeaseReply::Refused { .. } if current => self.actor_failed(actor, "refused"),
            _ => {}
        }
    }

    fn actor_failed(&mut self, actor: Actor, reason: &str) {
        self.actors[actor].phase = ActorPhase::Failed(reason.into());
        *self.actors_failed.entry(reason.into()).or_default() += 1;
        self.open_actors -= 1;
    }

    /// Its worker or node is gone: it restarts while it may, as Ray's `max_restarts`.
    fn actor_lost(&mut self, actor: Actor, reason: &str) {
        let record = &mut self.actors[actor];
        if record.restarts_left == 0 {
            return self.actor_failed(actor, reason);
        }
        record.restarts_left -= 1;
        record.incarnation += 1;
        self.actor_restarts += 1;
        self.request_actor_lease(actor);
    }

    // ---- placement groups: the real manager core, over the network to the raylets ----

    fn perform_groups(&mut self) {
        for command in self.groups_core.poll_commands() {
            match command {
                GroupCommand::Prepare { group, round, node, bundles } => {
                    let (Some(&group), Some(&node)) =
                        (self.group_index.get(&group), self.index_of.get(&node))
                    else {
                        continue;
                    };
                    self.send(
                        Endpoint::Gcs,
                        Endpoint::Node(node),
                        Message::Prepare { group, round, bundles },
                    );
                }
                GroupCommand::Commit { group, round, node, indices } => {
                    let (Some(&group), Some(&node)) =
                        (self.group_index.get(&group), self.index_of.get(&node))
                    else {
                        continue;
                    };
                    self.send(Endpoint::Gcs, Endpoint::Node(node), Message::Commit { group, round, indices });
                }
                GroupCommand::Cancel { group, round, node, indices } => {
                    let (Some(&group), Some(&node)) =
                        (self.group_index.get(&group), self.index_of.get(&node))
                    else {
                        continue;
                    };
                    self.send(Endpoint::Gcs, Endpoint::Node(node), Message::Cancel { group, round, indices });
                }
                GroupCommand::Created { group } => {
                    let Some(&index) = self.group_index.get(&group) else { continue };
                    let record = &mut self.groups[index];
                    if record.created_at.is_none() {
                        record.created_at = Some(self.now);
                    }
                    self.digest.add(index as u64);
                    self.digest.add(self.now);
                    self.check_group(index);
                }
                GroupCommand::Removed { .. } => {}
            }
        }
    }

    fn gcs_receives(&mut self, message: Message) {
        if let Message::GroupAnswer { group, node, commit, answer } = message {
            let (id, node_id) = (self.groups[group].id, self.nodes[node].id);
            if commit {
                self.groups_core.commit_answered(id, node_id, answer, self.now);
            } else {
                self.groups_core.prepare_answered(id, node_id, answer, self.now);
            }
            self.perform_groups();
        }
    }

    /// A created group has every bundle committed on the node the manager says.
    fn check_group(&mut self, group: Group) {
        let Some(info) = self.groups_core.info(self.groups[group].id) else { return };
        if info.state != PlacementGroupState::Created {
            return;
        }
        for (index, at) in info.nodes.iter().enumerate() {
            let held = at
                .and_then(|id| self.index_of.get(&id).copied())
                .filter(|node| self.nodes[*node].alive)
                .map(|node| self.nodes[node].leases.held_bundles())
                .unwrap_or_default();
            if !held.contains(&(info.spec.id, index as u32, true)) {
                self.violation = Some(format!(
                    "group {group} is Created, yet bundle {index} is not committed at {at:?} (held there: {held:?})"
                ));
                return;
            }
        }
    }

    // ---- the cluster: joins, deaths, partitions, and the GCS's resource broadcast ----

    fn cluster_event(&mut self, index: usize) {
        match self.workload.events[index].clone() {
            ClusterEvent::Join { kind, .. } => {
                for _ in 0..kind.count {
                    if let Err(error) = self.add_node(&kind) {
                        self.violation = Some(format!("a node could not join: {error}"));
                    }
                }
            }
            ClusterEvent::Kill { from, to, .. } => {
                for node in from..=to.min(self.nodes.len() - 1) {
                    self.kill_node(node);
                }
            }
            ClusterEvent::Partition { until, from, to, .. } => {
                for node in from..=to.min(self.nodes.len() - 1) {
                    self.nodes[node].partitioned_until = until;
                }
            }
        }
    }

    fn kill_node(&mut self, node: Node) {
        if !self.nodes[node].alive {
            return;
        }
        let now = Duration::from_millis(self.now);
        let id = self.nodes[node].id;
        self.nodes[node].alive = false;
        self.nodes[node].workers.clear();
        if let Err(error) = self.gcs.mark_node_dead(id, "killed by the workload") {
            self.violation = Some(format!("the GCS refused node {node}'s death: {error}"));
        }
        self.groups_core.node_died(id, self.now);
        self.perform_groups();
        // Every driver learns of it (the GCS publishes node deaths): its leases there end,
        // its requests there are lost.
        for driver in 0..self.drivers.len() {
            let mut there: Vec<(RequestId, bool)> = self.drivers[driver]
                .requests
                .iter()
                .filter(|(_, (_, at, _))| *at == node)
                .map(|(request, (_, _, worker))| (*request, worker.is_some()))
                .collect();
            there.sort();
            let books = &mut self.drivers[driver];
            for (request, granted) in there {
                if granted {
                    let ending = Ending::Node { node: id, reason: "killed by the workload".into() };
                    books.core.worker_died(now, request, &ending);
                } else {
                    books.requests.remove(&request);
                    books.core.lease_answered(now, request, LeaseAnswer::Lost);
                }
            }
            self.drive(driver);
        }
        for actor in 0..self.actors.len() {
            match self.actors[actor].phase {
                ActorPhase::Running { node: at, .. } if at == node => self.actor_lost(actor, "its node died"),
                ActorPhase::Requested { node: at, .. } if at == node => {
                    // Its request died with the node: ask again.
                    self.request_actor_lease(actor)
                }
                _ => {}
            }
        }
    }

    /// Each raylet reports what changed; the GCS's view goes out to every raylet (one shared
    /// snapshot), which re-decides its queued requests; the group manager gets it too.
    fn sync(&mut self) {
        for node in 0..self.nodes.len() {
            let record = &mut self.nodes[node];
            if !record.alive || !record.dirty || record.partitioned_until > self.now {
                continue;
            }
            record.dirty = false;
            let resources = record.leases.resources();
            let (available, total) = (amounts_of(&resources.available), amounts_of(&resources.total));
            let id = record.id;
            if let Err(error) = self.gcs.report_resources(id, available, Vec::new(), Some(total)) {
                self.violation = Some(format!("the GCS refused node {node}'s report: {error}"));
            }
        }
        let view = match self.gcs.cluster_view() {
            Ok(view) => view,
            Err(error) => {
                self.violation = Some(format!("the GCS could not give its view: {error}"));
                return;
            }
        };
        let views: Vec<NodeView> = view.into_iter().map(NodeView::from_load).collect();
        if !self.groups.is_empty() {
            self.groups_core.set_view(views.clone(), self.now);
            self.perform_groups();
        }
        let shared = SharedNodes::new(views);
        for node in 0..self.nodes.len() {
            if !self.nodes[node].alive || self.nodes[node].partitioned_until > self.now {
                continue;
            }
            let SimNode { leases, .. } = &mut self.nodes[node];
            leases.set_view(shared.clone());
            if leases.queued() > 0 {
                leases.reconsider_queue(&mut self.random);
                self.perform(node);
            }
        }
    }

    fn sample(&mut self) {
        let (mut used, mut total) = (0.0, 0.0);
        for node in self.nodes.iter().filter(|node| node.alive) {
            total += node.cpus;
            used += node.cpus - node.leases.resources().available.get(CPU).as_f64().min(node.cpus);
        }
        if self.open_tasks > 0 || self.open_actors > 0 {
            self.utilisation.push(if total > 0.0 { used / total } else { 0.0 });
        }
    }

    // ---- invariants ----

    fn check(&mut self) -> Result<(), ScaleFailure> {
        if let Some(violation) = self.violation.take() {
            return Err(self.failure(violation));
        }
        let touched = std::mem::take(&mut self.touched);
        for &node in &touched {
            if let Some(why) = self.conservation(node) {
                return Err(self.failure(why));
            }
        }
        self.touched = touched;
        self.touched.clear();
        Ok(())
    }

    /// Free plus what leases and bundles hold is the node's total.
    fn conservation(&self, node: Node) -> Option<String> {
        let record = &self.nodes[node];
        if !record.alive {
            return None;
        }
        let resources = record.leases.resources();
        let mut sum = resources.available.clone();
        for held in record.held.values() {
            sum.add(held);
        }
        for (group, index, _) in record.leases.held_bundles() {
            let Some(&at) = self.group_index.get(&group) else {
                return Some(format!("node {node} holds a bundle of {group}, which no one created"));
            };
            match self.groups[at].spec.bundles.get(index as usize) {
                Some(bundle) => sum.add(&resource_set(bundle)),
                None => {
                    return Some(format!("node {node} holds bundle {index} of group {at}, which has fewer"))
                }
            }
        }
        (sum != resources.total).then(|| {
            format!(
                "node {node}: free {:?} plus {} leases and its bundles is {sum:?}, not the total {:?}",
                resources.available,
                record.held.len(),
                resources.total
            )
        })
    }

    fn check_at_end(&mut self) -> Result<(), ScaleFailure> {
        for (index, driver) in self.drivers.iter().enumerate() {
            if driver.core.tasks_open() > 0 || driver.core.leases_open() > 0 || !driver.requests.is_empty() {
                let mut books: Vec<String> = driver
                    .requests
                    .iter()
                    .map(|(request, (lease, node, worker))| {
                        let there = &self.nodes[*node];
                        format!(
                            "{request:?}: {lease:?} at node {node} (worker {worker:?}; the node knows it: {}, \
                             answered it: {}, queues {})",
                            there.requesters.contains_key(lease),
                            there.answered.contains(lease),
                            there.leases.queued()
                        )
                    })
                    .collect();
                books.sort();
                let why = format!(
                    "driver {index} ended with {} tasks and {} leases open (its requests: {books:?})",
                    driver.core.tasks_open(),
                    driver.core.leases_open()
                );
                return Err(self.failure(why));
            }
        }
        for node in 0..self.nodes.len() {
            if !self.nodes[node].alive {
                continue;
            }
            if !self.nodes[node].held.is_empty() {
                let why = format!(
                    "node {node} still holds leases {:?}",
                    self.nodes[node].held.keys().collect::<Vec<_>>()
                );
                return Err(self.failure(why));
            }
            if let Some(why) = self.conservation(node) {
                return Err(self.failure(why));
            }
            // Every bundle held belongs to its group's placement; a removed group holds none.
            for (group, index, committed) in self.nodes[node].leases.held_bundles() {
                let info = self.groups_core.info(group);
                let placed_here = info.as_ref().is_some_and(|info| {
                    matches!(info.state, PlacementGroupState::Created | PlacementGroupState::Rescheduling)
                        && info.nodes.get(index as usize) == Some(&Some(self.nodes[node].id))
                        && committed
                });
                if !placed_here {
                    let state = info.map(|info| info.state);
                    let why = format!(
                        "node {node} holds bundle {index} of {group} ({state:?}, committed: {committed})"
                    );
                    return Err(self.failure(why));
                }
            }
        }
        for group in 0..self.groups.len() {
            self.check_group(group);
        }
        if let Some(violation) = self.violation.take() {
            return Err(self.failure(violation));
        }
        Ok(())
    }

    fn unsettled(&self) -> String {
        let open: Vec<String> = self
            .tasks
            .iter()
            .enumerate()
            .filter(|(_, task)| !task.done)
            .take(5)
            .map(|(index, task)| {
                format!("task {index} (batch {}, started {})", task.batch, task.started != u64::MAX)
            })
            .collect();
        let actors: Vec<String> = self
            .actors
            .iter()
            .enumerate()
            .filter(|(_, actor)| {
                matches!(
                    actor.phase,
                    ActorPhase::Waiting | ActorPhase::Requested { .. } | ActorPhase::Running { .. }
                )
            })
            .take(5)
            .map(|(index, actor)| format!("actor {index} {:?}", actor.phase))
            .collect();
        let waiting: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, node)| node.alive && node.leases.queued() > 0)
            .take(5)
            .map(|(index, node)| {
                let requests: Vec<String> = node
                    .leases
                    .waiting()
                    .take(3)
                    .map(|(lease, demand, spilled, infeasible)| {
                        let demand: Vec<String> =
                            demand.iter().map(|(name, amount)| format!("{name}:{amount}")).collect();
                        format!(
                            "{lease:?} {{{}}} spilled {spilled} infeasible {infeasible}",
                            demand.join(",")
                        )
                    })
                    .collect();
                format!("node {index}: {} waiting ({})", node.leases.queued(), requests.join("; "))
            })
            .collect();
        let groups: Vec<String> = self
            .groups
            .iter()
            .enumerate()
            .filter_map(|(index, group)| {
                let info = self.groups_core.info(group.id)?;
                let nodes: Vec<Option<usize>> =
                    info.nodes.iter().map(|at| at.and_then(|id| self.index_of.get(&id).copied())).collect();
                Some(format!("group {index} {:?} on {nodes:?}", info.state))
            })
            .collect();
        format!(
            "{} tasks open ({}); {} actors open ({}); requests waiting: [{}]; groups: [{}]",
            self.open_tasks,
            open.join(", "),
            self.open_actors,
            actors.join(", "),
            waiting.join("; "),
            groups.join(", ")
        )
    }

    fn failure(&self, invariant: String) -> ScaleFailure {
        ScaleFailure {
            policy: self.config.policy.clone(),
            seed: self.config.seed,
            time_ms: self.now,
            events: self.processed,
            invariant,
            trace: self.trace.iter().map(|(at, event)| format!("{at} ms: {event:?}")).collect(),
        }
    }

    fn outcome(mut self) -> Outcome {
        let mut tasks_per_node = vec![0u64; self.nodes.len()];
        let mut delays: Vec<Vec<u64>> = vec![Vec::new(); self.shapes.len()];
        for task in &self.tasks {
            if task.node != u32::MAX && task.done {
                tasks_per_node[task.node as usize] += 1;
            }
            if task.started != u64::MAX {
                delays[task.batch as usize].push(task.started - task.arrive);
            }
        }
        let percentile = |values: &[u64], fraction: f64| {
            if values.is_empty() {
                return 0;
            }
            values[((values.len() - 1) as f64 * fraction).round() as usize]
        };
        let queueing = delays
            .iter_mut()
            .enumerate()
            .map(|(batch, values)| {
                values.sort_unstable();
                let spec = &self.workload.tasks[batch];
                let resources: Vec<String> =
                    spec.resources.iter().map(|(name, amount)| format!("{name}:{amount}")).collect();
                let placement = match &spec.placement {
                    Placement::Default => String::new(),
                    Placement::Spread => " spread".into(),
                    Placement::Group { name, .. } => format!(" in {name}"),
                };
                ShapeDelay {
                    shape: format!("{} {{{}}}{placement}", spec.function, resources.join(",")),
                    tasks: values.len(),
                    p50_ms: percentile(values, 0.5),
                    p99_ms: percentile(values, 0.99),
                }
            })
            .collect();
        let mut latencies: Vec<u64> = self
            .groups
            .iter()
            .filter_map(|group| group.created_at.map(|created| created - group.asked_at))
            .collect();
        latencies.sort_unstable();
        let groups_created = latencies.len();
        let groups_pending =
            self.groups.iter().filter(|group| group.created_at.is_none() && !group.removed).count();
        for count in &tasks_per_node {
            self.digest.add(*count);
        }
        self.digest.add(self.finished as u64);
        self.digest.add(self.makespan);
        Outcome {
            policy: self.config.policy.clone(),
            seed: self.config.seed,
            nodes: self.nodes.len(),
            finished: self.finished,
            failed: self.failed,
            makespan_ms: self.makespan,
            events: self.processed,
            utilisation: self.utilisation,
            queueing,
            tasks_per_node,
            remote_bytes: self.remote_bytes,
            groups_created,
            groups_pending,
            group_latency_ms: (percentile(&latencies, 0.5), percentile(&latencies, 0.99)),
            actors_completed: self.actors_completed,
            actors_failed: self.actors_failed,
            actor_restarts: self.actor_restarts,
            spillbacks: self.spillbacks,
            digest: self.digest.0,
        }
    }
}
