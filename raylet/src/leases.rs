//! The raylet's lease manager: worker pool and lease protocol as one sans-IO state machine.
//!
//! Ray's protocol: a submitter asks its raylet for a worker lease for a task shape; the raylet
//! grants a local worker when the resources allow, answers with a better node (spillback), or
//! queues the request; the submitter then pushes every task of that shape straight to the leased
//! worker and returns the lease when done. The raylet is not on each task's path.
//!
//! Calls take `now` (milliseconds, from the shell's clock) and change state; the shell then
//! drains [`LeaseManager::poll_commands`] and performs them (start or kill a process, answer a
//! request). Lifecycles, checked on every change:
//!
//! ```text
//! worker: Starting --registered--> Idle --granted--> Leased --returned--> Idle ...
//!            |                       |                  |
//!            +-----------------------+------------------+--exited/killed--> (gone)
//! lease:  Queued --> Granted --> Returned | WorkerDied ;  Queued --> Spilled | Infeasible
//! ```

use std::collections::{BTreeMap, VecDeque};

use manta_proto::JobId;
use manta_transport::NodeId;

use crate::policy::{
    ClusterView, Decision, NodeView, RandomSource, SchedulingPolicy, SchedulingStrategy, SharedNodes,
};
use crate::resources::{NodeResources, ResourceSet};

mod bundles;
use bundles::Bundles;

pub use manta_proto::{LeaseId, WorkerId};

/// Limits of the worker pool (Ray's defaults where it has them).
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// Workers starting at once at most (Ray: the number of CPUs).
    pub start_concurrency_max: usize,
    /// Workers at most, idle and leased (a soft limit in Ray; a hard one here).
    pub workers_max: usize,
    /// An idle worker is killed after this long (Ray: 1000 ms).
    pub idle_timeout_ms: u64,
    /// A worker that has not registered this long after its start is killed (Ray: 60 s).
    pub register_timeout_ms: u64,
    /// Worker processes that end before registering, one after another, before the requests
    /// waiting for a worker fail with the last one's exit (instead of starting more for ever).
    pub start_failures_max: u32,
    /// A request no node could ever meet waits (Ray: pending, with a warning, until a node
    /// that fits joins) instead of being answered `Infeasible` at once. A request pinned to a
    /// node the cluster lacks fails either way, as in Ray.
    pub wait_when_infeasible: bool,
    /// This node's labels (`manta start --labels`): label scheduling runs work here only when
    /// they meet its hard conditions.
    pub labels: Vec<(String, String)>,
    /// The scheduling policy's registered name (`crate::policies`; default `hybrid`).
    pub scheduler: String,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            start_concurrency_max: 2,
            workers_max: 16,
            idle_timeout_ms: 1_000,
            register_timeout_ms: 60_000,
            start_failures_max: 3,
            wait_when_infeasible: false,
            labels: Vec::new(),
            scheduler: "hybrid".to_owned(),
        }
    }
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Start a worker process of job `job` (its binary, its settings), which will register
    /// as `worker`.
    StartWorker {
        /// The id it registers under.
        worker: WorkerId,
        /// The job it will serve (a worker serves one job for its life, as in Ray).
        job: JobId,
    },
    /// Kill a worker process (it may exit, or never registered).
    KillWorker {
        /// Which.
        worker: WorkerId,
    },
    /// Ask an idle worker whether it may exit (it may own objects still referenced); answer
    /// with [`LeaseManager::retire_answered`].
    RetireWorker {
        /// Which.
        worker: WorkerId,
    },
    /// Answer a lease request.
    Reply {
        /// The request.
        lease: LeaseId,
        /// The answer.
        reply: LeaseReply,
    },
    /// No node could ever meet this request: it waits (for a node that fits to join); say so.
    WaitingInfeasible {
        /// The request.
        lease: LeaseId,
    },
}

/// The answer to a lease request.
#[derive(Debug, Clone, PartialEq)]
pub enum LeaseReply {
    /// Use this worker until the lease is returned.
    Granted {
        /// The worker.
        worker: WorkerId,
    },
    /// Ask this node instead.
    Spillback {
        /// The better node.
        node: NodeId,
    },
    /// No node of the cluster can ever run this shape.
    Infeasible,
    /// Workers could not be started: the last [`PoolConfig::start_failures_max`] started ended
    /// before registering, the last one this way.
    WorkerStartFailed {
        /// How the last one ended.
        exit: String,
    },
    /// The leased worker died (with this exit description) before the lease was returned.
    WorkerDied {
        /// The worker.
        worker: WorkerId,
        /// How it ended.
        exit: String,
    },
    /// The request can never be met, and says why (it asks for the resources of a placement
    /// group that was removed).
    Refused {
        /// Why.
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WorkerState {
    Starting {
        since_ms: u64,
    },
    Idle {
        since_ms: u64,
    },
    Leased {
        lease: LeaseId,
    },
    /// Idle too long, asked whether it may exit (it may own objects still in use).
    Retiring,
}

#[derive(Debug, Clone)]
struct Queued {
    lease: LeaseId,
    demand: ResourceSet,
    /// What must be free to grant it (the demand, or more: Ray's placement resources).
    placement: ResourceSet,
    strategy: SchedulingStrategy,
    dedicated: bool,
    job: JobId,
    spilled: bool,
    arguments: Vec<(NodeId, u64)>,
}

impl Queued {
    /// What the policy decides on.
    fn policy_request(&self) -> crate::policy::Request<'_> {
        crate::policy::Request {
            demand: &self.placement,
            strategy: &self.strategy,
            arguments: &self.arguments,
        }
    }
}

/// A lease request as [`LeaseManager::request_lease_placed`] takes it.
#[derive(Debug, Clone)]
pub struct LeaseRequest {
    /// What the lease holds while granted.
    pub demand: ResourceSet,
    /// What must be free for it to be placed and granted (at least `demand`; an actor with no
    /// resources given needs 1 CPU here and holds none, as in Ray).
    pub placement: ResourceSet,
    /// Where it should run.
    pub strategy: SchedulingStrategy,
    /// An actor's lease: held for the actor's life, its worker never reused.
    pub dedicated: bool,
    /// The job whose work it runs: only a worker of that job is granted.
    pub job: JobId,
    /// Another node spilled it here: it waits here when this node could ever hold it, and is
    /// never spilled on (Ray keeps a spilled request from bouncing the same way).
    pub spilled: bool,
    /// The bytes of the arguments of the task it is asked for, by node (for locality-aware
    /// policies; empty when unknown).
    pub arguments: Vec<(NodeId, u64)>,
}

/// The worker pool and leases of one node.
#[derive(Debug)]
pub struct LeaseManager<P: SchedulingPolicy> {
    node: NodeId,
    config: PoolConfig,
    policy: P,
    resources: NodeResources,
    /// The cluster as the policy sees it: this node first (its resources copied in from
    /// `resources` before each decision), then the other nodes as last reported (by the GCS),
    /// less what was spilled to them since. Kept, not rebuilt per decision: at thousands of
    /// nodes, copying the view cost more than deciding.
    view: ClusterView,
    workers: BTreeMap<WorkerId, WorkerState>,
    /// The job each worker serves.
    jobs: BTreeMap<WorkerId, JobId>,
    next_worker: u64,
    /// Granted leases: their worker and the resources they hold.
    granted: BTreeMap<LeaseId, (WorkerId, ResourceSet)>,
    /// Requests waiting for resources or a worker, oldest first.
    queue: VecDeque<Queued>,
    /// Requests no node could ever meet, waiting for one that fits (`wait_when_infeasible`).
    infeasible: VecDeque<Queued>,
    /// Workers leased to actors (dedicated leases).
    dedicated: std::collections::BTreeSet<WorkerId>,
    /// Leased workers blocked in a `get`, with the resources their lease gave up meanwhile.
    blocked: BTreeMap<WorkerId, ResourceSet>,
    /// Workers that ended before registering since the last one registered.
    start_failures: u32,
    commands: Vec<Command>,
    /// Placement groups' bundles held here, and the groups removed.
    bundles: Bundles,
}

impl<P: SchedulingPolicy> LeaseManager<P> {
    /// A manager for node `node` with `total` resources.
    pub fn new(node: NodeId, total: ResourceSet, policy: P, config: PoolConfig) -> Self {
        let labels = config.labels.clone();
        LeaseManager {
            node,
            config,
            policy,
            view: ClusterView::new(
                node,
                vec![NodeView {
                    id: node,
                    resources: NodeResources::idle(total.clone()),
                    alive: true,
                    labels,
                }],
            ),
            resources: NodeResources::idle(total),
            workers: BTreeMap::new(),
            jobs: BTreeMap::new(),
            next_worker: 1,
            granted: BTreeMap::new(),
            queue: VecDeque::new(),
            infeasible: VecDeque::new(),
            dedicated: std::collections::BTreeSet::new(),
            blocked: BTreeMap::new(),
            start_failures: 0,
            commands: Vec::new(),
            bundles: Bundles::default(),
        }
    }

    /// The commands produced since the last call, in order.
    pub fn poll_commands(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.commands)
    }

    /// This node's resources now.
    pub fn resources(&self) -> &NodeResources {
        &self.resources
    }

    /// Replaces what is known of the other nodes (an entry for this node is replaced by what
    /// it knows of itself).
    pub fn set_peers(&mut self, peers: Vec<NodeView>) {
        self.set_view(SharedNodes::new(peers));
    }

    /// Like [`set_peers`](Self::set_peers), from a snapshot other managers may share (the
    /// simulator gives ten thousand nodes one).
    pub fn set_view(&mut self, nodes: SharedNodes) {
        self.view = ClusterView::shared(self.node, nodes);
        self.view.upsert(NodeView {
            id: self.node,
            resources: self.resources.clone(),
            alive: true,
            labels: self.config.labels.clone(),
        });
    }

    /// Re-decides the queued requests that cannot run here now (after the view of the other
    /// nodes changed): one that fits elsewhere is spilled back; one that no live node could ever
    /// run is answered `Infeasible`. The rest keep their place in the queue.
    pub fn reconsider_queue(&mut self, random: &mut dyn RandomSource) {
        let mut kept = VecDeque::with_capacity(self.queue.len());
        for request in std::mem::take(&mut self.queue) {
            let runs_here =
                !self.pinned_elsewhere(&request) && self.resources.available.contains(&request.placement);
            if runs_here {
                kept.push_back(request);
                continue;
            }
            self.refresh_view();
            if request.spilled {
                // Spilled here, and no room here now: it moves on only to a node the new view
                // shows with room for it now (a node that judged this one best acted on an
                // older view; a request never moves just to wait elsewhere, so it does not
                // bounce). Without this, a request could wait forever at a node whose
                // resources a placement group has taken since.
                match self.policy.schedule(&request.policy_request(), &self.view, random) {
                    Decision::Scheduled(node) if node != self.node => self.spill(request, node),
                    _ => kept.push_back(request),
                }
                continue;
            }
            match self.policy.schedule(&request.policy_request(), &self.view, random) {
                Decision::Scheduled(node) if node != self.node => self.spill(request, node),
                Decision::Infeasible => self.infeasible(request),
                Decision::Retry => match self.waits_elsewhere(&request) {
                    Some(node) => self.spill(request, node),
                    None => kept.push_back(request),
                },
                Decision::Scheduled(_) => kept.push_back(request),
            }
        }
        // Those waiting for a node that fits: one may have joined.
        for request in std::mem::take(&mut self.infeasible) {
            self.refresh_view();
            match self.policy.schedule(&request.policy_request(), &self.view, random) {
                Decision::Scheduled(node) if node != self.node => self.spill(request, node),
                Decision::Infeasible => self.infeasible.push_back(request),
                Decision::Scheduled(_) | Decision::Retry => kept.push_back(request),
            }
        }
        self.queue = kept;
    }

    /// Requests waiting now.
    pub fn queued(&self) -> usize {
        self.queue.len() + self.infeasible.len()
    }

    /// The requests waiting now, oldest first: each lease, what it must find free, whether
    /// another node spilled it here, and whether no node could run it yet.
    pub fn waiting(&self) -> impl Iterator<Item = (LeaseId, &ResourceSet, bool, bool)> {
        let queued = self.queue.iter().map(|request| (request, false));
        let infeasible = self.infeasible.iter().map(|request| (request, true));
        queued
            .chain(infeasible)
            .map(|(request, infeasible)| (request.lease, &request.placement, request.spilled, infeasible))
    }

    /// Copies this node's resources now into the policy's view.
    fn refresh_view(&mut self) {
        if let Some(local) = self.view.node_mut(self.node) {
            local.resources.clone_from(&self.resources);
        }
    }

    /// The other nodes, as the view has them.
    fn peers(&self) -> impl Iterator<Item = &NodeView> {
        self.view.nodes().filter(|peer| peer.id != self.node)
    }

    /// A submitter of job 0 asks for a worker for tasks needing `demand`. A `dedicated` lease
    /// (an actor's, held for its whole life) may start a worker beyond `workers_max`, as Ray's
    /// actors do not count against the pool's soft limit.
    pub fn request_lease(
        &mut self,
        now_ms: u64,
        lease: LeaseId,
        demand: ResourceSet,
        strategy: SchedulingStrategy,
        dedicated: bool,
        random: &mut dyn RandomSource,
    ) {
        let placement = demand.clone();
        self.request_lease_placed(
            now_ms,
            lease,
            LeaseRequest {
                demand,
                placement,
                strategy,
                dedicated,
                job: JobId(0),
                spilled: false,
                arguments: Vec::new(),
            },
            random,
        );
    }

    /// Like [`request_lease`](Self::request_lease), with what must be free to place it apart
    /// from what it holds.
    pub fn request_lease_placed(
        &mut self,
        now_ms: u64,
        lease: LeaseId,
        request: LeaseRequest,
        random: &mut dyn RandomSource,
    ) {
        let LeaseRequest { demand, placement, strategy, dedicated, job, spilled, arguments } = request;
        if let Some(reason) = self.bundles.refusal(&placement) {
            self.reply(lease, LeaseReply::Refused { reason });
            return;
        }
        let queued = Queued { lease, demand, placement, strategy, dedicated, job, spilled, arguments };
        // Spilled here by a node that judged this one best: wait here if it could ever fit.
        let decision = if spilled && self.resources.total.contains(&queued.placement) {
            Decision::Retry
        } else {
            self.refresh_view();
            self.policy.schedule(&queued.policy_request(), &self.view, random)
        };
        match decision {
            Decision::Scheduled(node) if node != self.node => self.spill(queued, node),
            Decision::Infeasible => self.infeasible(queued),
            // Nobody has room now, and this node never will: wait at a node that could.
            Decision::Retry if !spilled => match self.waits_elsewhere(&queued) {
                Some(node) => self.spill(queued, node),
                None => {
                    self.queue.push_back(queued);
                    self.dispatch(now_ms);
                }
            },
            // Local, or nobody has room now: wait here, in order.
            Decision::Scheduled(_) | Decision::Retry => {
                self.queue.push_back(queued);
                self.dispatch(now_ms);
            }
        }
    }

    /// For a request no node has room for now: the node it should wait at when this one could
    /// never hold it (Ray queues such work at a feasible node, where it runs as soon as room
    /// frees, instead of where it was asked): the node a hard affinity names, else the least
    /// used live node that could hold it. `None`: wait here.
    fn waits_elsewhere(&self, request: &Queued) -> Option<NodeId> {
        let fits = |peer: &&NodeView| {
            peer.alive
                && peer.resources.total.contains(&request.placement)
                && request.strategy.labels_allow(&peer.labels)
        };
        // Pinned to another node: it waits there, whatever room this one has.
        if let SchedulingStrategy::NodeAffinity { node, soft: false } = request.strategy {
            if node != self.node {
                return self.peers().filter(fits).find(|peer| peer.id == node).map(|peer| peer.id);
            }
        }
        if self.resources.total.contains(&request.placement) && !self.pinned_elsewhere(request) {
            return None;
        }
        self.peers()
            .filter(fits)
            .min_by(|a, b| {
                a.resources.utilization().total_cmp(&b.resources.utilization()).then(a.id.cmp(&b.id))
            })
            .map(|peer| peer.id)
    }

    /// Whether `request` may not run here: pinned (hard node affinity) to another node, or
    /// asking for labels this node lacks.
    fn pinned_elsewhere(&self, request: &Queued) -> bool {
        matches!(request.strategy, SchedulingStrategy::NodeAffinity { node, soft: false } if node != self.node)
            || !request.strategy.labels_allow(&self.config.labels)
    }

    /// Sends `request` to `node`, and counts its resources as taken there until the next view
    /// (Ray's remote allocation): a burst of requests spreads instead of all going to the node
    /// that looked freest.
    fn spill(&mut self, request: Queued, node: NodeId) {
        if node != self.node {
            if let Some(peer) = self.view.node_mut(node) {
                peer.resources.available.saturating_take(&request.placement);
            }
        }
        self.reply(request.lease, LeaseReply::Spillback { node });
    }

    /// No node could ever meet `request`: it fails, or waits for one that fits (a request
    /// pinned to a node the cluster lacks fails either way, as in Ray; one in a placement group
    /// always waits for the group).
    fn infeasible(&mut self, request: Queued) {
        let pinned = matches!(request.strategy, SchedulingStrategy::NodeAffinity { soft: false, .. });
        // Work in a placement group waits for the group to be placed, whatever the setting
        // (its resources exist once its bundles are committed; a removed group's work is
        // refused, not kept).
        let in_group =
            request.placement.any_named(|name| manta_proto::placement::group_of_resource(name).is_some());
        if (self.config.wait_when_infeasible || in_group) && !pinned {
            // A group not placed yet is no cause for a warning.
            if !in_group {
                self.commands.push(Command::WaitingInfeasible { lease: request.lease });
            }
            self.infeasible.push_back(request);
        } else {
            self.reply(request.lease, LeaseReply::Infeasible);
        }
    }

    /// A started worker registered.
    pub fn worker_registered(&mut self, now_ms: u64, worker: WorkerId) -> bool {
        match self.workers.get(&worker) {
            Some(WorkerState::Starting { .. }) => {
                self.start_failures = 0;
                self.workers.insert(worker, WorkerState::Idle { since_ms: now_ms });
                self.dispatch(now_ms);
                true
            }
            // Unknown (killed for being late) or registered twice: the shell refuses it.
            _ => false,
        }
    }

    /// A leased worker is blocked waiting for an object (`blocked`), or runs again. While
    /// blocked, its lease's resources are free for other work (a task waiting for its own
    /// nested tasks must not hold the CPU they need: Ray's rule) and it does not count against
    /// `workers_max`. When it runs again it takes them back if they are free, and otherwise runs
    /// without them (oversubscribed) rather than waiting.
    pub fn worker_blocked(&mut self, now_ms: u64, worker: WorkerId, blocked: bool) {
        let Some(WorkerState::Leased { lease }) = self.workers.get(&worker).copied() else { return };
        let Some((_, held)) = self.granted.get_mut(&lease) else { return };
        if blocked {
            if self.blocked.contains_key(&worker) {
                return;
            }
            let given_up = std::mem::take(held);
            self.release(&given_up);
            self.blocked.insert(worker, given_up);
            self.dispatch(now_ms);
        } else if let Some(demand) = self.blocked.remove(&worker) {
            if self.resources.available.try_acquire(&demand) {
                if let Some((_, held)) = self.granted.get_mut(&lease) {
                    *held = demand;
                }
            }
        }
    }

    /// A worker process exited (or was found dead). A lease it held fails.
    pub fn worker_exited(&mut self, now_ms: u64, worker: WorkerId, exit: &str) {
        self.dedicated.remove(&worker);
        self.blocked.remove(&worker);
        match self.forget(worker) {
            Some(WorkerState::Leased { lease }) => {
                let (_, held) = self.granted.remove(&lease).expect("a leased worker's lease is granted");
                self.release(&held);
                self.reply(lease, LeaseReply::WorkerDied { worker, exit: exit.to_owned() });
            }
            Some(WorkerState::Starting { .. }) => {
                self.start_failures += 1;
                if self.start_failures >= self.config.start_failures_max.max(1) {
                    self.start_failures = 0;
                    self.fail_waiting_for_workers(exit);
                }
            }
            _ => {}
        }
        self.dispatch(now_ms);
    }

    /// Drops a worker from the pool (and the job it served); its last state, if it was known.
    fn forget(&mut self, worker: WorkerId) -> Option<WorkerState> {
        self.jobs.remove(&worker);
        self.workers.remove(&worker)
    }

    /// Fails the queued requests that only wait for a worker (their resources are free): no
    /// worker can be started for them.
    fn fail_waiting_for_workers(&mut self, exit: &str) {
        let (failed, kept): (VecDeque<Queued>, VecDeque<Queued>) = std::mem::take(&mut self.queue)
            .into_iter()
            .partition(|queued| self.resources.available.contains(&queued.placement));
        self.queue = kept;
        for queued in failed {
            self.reply(queued.lease, LeaseReply::WorkerStartFailed { exit: exit.to_owned() });
        }
    }

    /// The submitter is done with a lease. A worker that is not `reusable` (it misbehaved) is
    /// killed instead of going back to the pool. Returns whether the lease was known.
    pub fn return_lease(&mut self, now_ms: u64, lease: LeaseId, reusable: bool) -> bool {
        let Some((worker, held)) = self.granted.remove(&lease) else { return false };
        self.release(&held);
        self.blocked.remove(&worker);
        // An actor's worker is never reused: it held the actor's state.
        if reusable && !self.dedicated.remove(&worker) {
            self.transition(worker, WorkerState::Idle { since_ms: now_ms });
        } else {
            self.dedicated.remove(&worker);
            self.forget(worker);
            self.commands.push(Command::KillWorker { worker });
        }
        self.dispatch(now_ms);
        true
    }

    /// The requester of `lease` is gone (its connection broke, its process died: Ray's
    /// `CancelWorkerLease` and owner-death cleanup). A queued request is dropped unanswered; a
    /// granted lease ends and its worker, which may still run the requester's work, is killed.
    /// Returns whether the lease was known.
    pub fn cancel(&mut self, now_ms: u64, lease: LeaseId) -> bool {
        if let Some(index) = self.queue.iter().position(|queued| queued.lease == lease) {
            self.queue.remove(index);
            self.dispatch(now_ms);
            return true;
        }
        if let Some(index) = self.infeasible.iter().position(|queued| queued.lease == lease) {
            self.infeasible.remove(index);
            return true;
        }
        self.return_lease(now_ms, lease, false)
    }

    /// Time passes: kill workers idle too long or never registered.
    pub fn tick(&mut self, now_ms: u64) {
        let expired: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, state)| match state {
                WorkerState::Idle { since_ms } => {
                    now_ms.saturating_sub(*since_ms) >= self.config.idle_timeout_ms
                }
                WorkerState::Starting { since_ms } => {
                    now_ms.saturating_sub(*since_ms) >= self.config.register_timeout_ms
                }
                WorkerState::Leased { .. } | WorkerState::Retiring => false,
            })
            .map(|(worker, _)| *worker)
            .collect();
        for worker in expired {
            if matches!(self.workers.get(&worker), Some(WorkerState::Idle { .. })) {
                // Ray: an idle worker that owns objects still in use is not reaped.
                self.workers.insert(worker, WorkerState::Retiring);
                self.commands.push(Command::RetireWorker { worker });
            } else {
                self.forget(worker);
                self.commands.push(Command::KillWorker { worker });
            }
        }
        self.dispatch(now_ms);
    }

    /// The answer to a [`Command::RetireWorker`]: the worker exits (killed), or, owning objects
    /// still in use, goes back to the idle pool (asked again after another idle period).
    pub fn retire_answered(&mut self, now_ms: u64, worker: WorkerId, may_exit: bool) {
        if self.workers.get(&worker) != Some(&WorkerState::Retiring) {
            return;
        }
        if may_exit {
            self.forget(worker);
            self.commands.push(Command::KillWorker { worker });
        } else {
            self.workers.insert(worker, WorkerState::Idle { since_ms: now_ms });
        }
        self.dispatch(now_ms);
    }

    fn release(&mut self, held: &ResourceSet) {
        self.resources
            .available
            .release(held, &self.resources.total)
            .expect("a lease releases exactly what it acquired");
    }

    fn reply(&mut self, lease: LeaseId, reply: LeaseReply) {
        self.commands.push(Command::Reply { lease, reply });
    }

    fn transition(&mut self, worker: WorkerId, next: WorkerState) {
        let current = self.workers.get(&worker).copied();
        let allowed = matches!(
            (current, next),
            (Some(WorkerState::Starting { .. }), WorkerState::Idle { .. })
                | (Some(WorkerState::Idle { .. }), WorkerState::Leased { .. })
                | (Some(WorkerState::Leased { .. }), WorkerState::Idle { .. })
        );
        assert!(allowed, "worker lifecycle: {worker:?} cannot go from {current:?} to {next:?}");
        self.workers.insert(worker, next);
    }

    /// Grants queued requests in order while resources and idle workers of their job allow,
    /// and starts workers (of their jobs) for the ones that only lack a worker.
    fn dispatch(&mut self, now_ms: u64) {
        // Per job: requests that fit but lack a worker, and whether one is an actor's.
        let mut waiting: BTreeMap<JobId, (usize, bool)> = BTreeMap::new();
        let mut index = 0;
        while index < self.queue.len() {
            // A request pinned to another node waits here only while that node is out of
            // sight (it goes there once a view shows it); it never runs here.
            if !self.resources.available.contains(&self.queue[index].placement)
                || self.pinned_elsewhere(&self.queue[index])
            {
                index += 1;
                continue;
            }
            let job = self.queue[index].job;
            let idle = self
                .workers
                .iter()
                .find(|(worker, state)| {
                    matches!(state, WorkerState::Idle { .. }) && self.jobs.get(worker) == Some(&job)
                })
                .map(|(worker, _)| *worker);
            match idle {
                Some(worker) => {
                    let request = self.queue.remove(index).expect("index is in bounds");
                    let acquired = self.resources.available.try_acquire(&request.demand);
                    assert!(acquired, "checked just above");
                    self.transition(worker, WorkerState::Leased { lease: request.lease });
                    if request.dedicated {
                        self.dedicated.insert(worker);
                    }
                    self.granted.insert(request.lease, (worker, request.demand));
                    self.reply(request.lease, LeaseReply::Granted { worker });
                }
                None => {
                    let entry = waiting.entry(job).or_default();
                    entry.0 += 1;
                    entry.1 |= self.queue[index].dedicated;
                    index += 1;
                }
            }
        }
        let starting_of =
            |workers: &BTreeMap<WorkerId, WorkerState>, jobs: &BTreeMap<WorkerId, JobId>, job| {
                workers
                    .iter()
                    .filter(|(worker, state)| {
                        matches!(state, WorkerState::Starting { .. }) && jobs.get(worker) == Some(&job)
                    })
                    .count()
            };
        for (job, (waiting, dedicated_waiting)) in waiting {
            let starting_all =
                self.workers.values().filter(|state| matches!(state, WorkerState::Starting { .. })).count();
            let starting = starting_of(&self.workers, &self.jobs, job);
            // Workers held by actors do not count against the pool's limit.
            let pooled = self.workers.len() - self.dedicated.len() - self.blocked.len();
            let room =
                if dedicated_waiting { usize::MAX } else { self.config.workers_max.saturating_sub(pooled) };
            let to_start = waiting
                .saturating_sub(starting)
                .min(self.config.start_concurrency_max.saturating_sub(starting_all))
                .min(room);
            for _ in 0..to_start {
                let worker = WorkerId(self.next_worker);
                self.next_worker += 1;
                self.workers.insert(worker, WorkerState::Starting { since_ms: now_ms });
                self.jobs.insert(worker, job);
                self.commands.push(Command::StartWorker { worker, job });
            }
        }
    }

    /// The job worker `worker` serves.
    pub fn job_of(&self, worker: WorkerId) -> Option<JobId> {
        self.jobs.get(&worker).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{DefaultPolicy, SplitMix64};
    use crate::resources::{Quantity, CPU};
    use proptest::prelude::*;

    fn cpus(n: u64) -> ResourceSet {
        ResourceSet::new().with(CPU, Quantity::units(n))
    }

    fn manager(total_cpus: u64) -> LeaseManager<DefaultPolicy> {
        LeaseManager::new(NodeId([1; 16]), cpus(total_cpus), DefaultPolicy::default(), PoolConfig::default())
    }

    fn request(manager: &mut LeaseManager<DefaultPolicy>, now: u64, lease: u64, want: u64) {
        manager.request_lease(
            now,
            LeaseId(lease),
            cpus(want),
            SchedulingStrategy::Hybrid,
            false,
            &mut SplitMix64(1),
        );
    }

    #[test]
    fn a_lease_starts_a_worker_and_is_granted_when_it_registers_then_reused() {
        let mut leases = manager(2);
        request(&mut leases, 0, 1, 1);
        assert_eq!(leases.poll_commands(), vec![Command::StartWorker { worker: WorkerId(1), job: JobId(0) }]);
        assert!(leases.worker_registered(5, WorkerId(1)));
        assert_eq!(
            leases.poll_commands(),
            vec![Command::Reply { lease: LeaseId(1), reply: LeaseReply::Granted { worker: WorkerId(1) } }]
        );
        assert_eq!(leases.resources().available.get(CPU), Quantity::units(1));
        assert!(leases.return_lease(10, LeaseId(1), true));
        assert_eq!(leases.resources().available, leases.resources().total);
        // The idle worker is reused: no new process.
        request(&mut leases, 20, 2, 1);
        assert_eq!(
            leases.poll_commands(),
            vec![Command::Reply { lease: LeaseId(2), reply: LeaseReply::Granted { worker: WorkerId(1) } }]
        );
        assert!(!leases.return_lease(21, LeaseId(99), true), "unknown lease");
    }

    #[test]
    fn dedicated_leases_start_workers_beyond_the_pool_limit_and_are_never_reused() {
        let config = PoolConfig { workers_max: 1, start_concurrency_max: 8, ..PoolConfig::default() };
        let mut leases = LeaseManager::new(NodeId([1; 16]), cpus(4), DefaultPolicy::default(), config);
        for lease in 1..=3 {
            leases.request_lease(
                0,
                LeaseId(lease),
                ResourceSet::new(),
                SchedulingStrategy::Hybrid,
                true,
                &mut SplitMix64(1),
            );
        }
        let started = leases.poll_commands();
        assert_eq!(started.len(), 3, "three actors, three workers, over a limit of 1: {started:?}");
        for worker in 1..=3 {
            assert!(leases.worker_registered(1, WorkerId(worker)));
        }
        assert_eq!(leases.poll_commands().len(), 3, "all three granted");
        // A returned actor lease kills its worker even when marked reusable.
        assert!(leases.return_lease(2, LeaseId(1), true));
        assert!(leases.poll_commands().iter().any(|command| matches!(command, Command::KillWorker { .. })));
        // A pooled request still respects the limit: two dedicated workers do not count.
        request(&mut leases, 3, 9, 1);
        assert_eq!(leases.poll_commands(), vec![Command::StartWorker { worker: WorkerId(4), job: JobId(0) }]);
    }

    /// Ray's default actor: placed only where a CPU is free, holding none once placed.
    fn place_actor(manager: &mut LeaseManager<DefaultPolicy>, now: u64, lease: u64) {
        let request = LeaseRequest {
            demand: ResourceSet::new(),
            placement: cpus(1),
            strategy: SchedulingStrategy::Hybrid,
            dedicated: true,
            job: JobId(0),
            spilled: false,
            arguments: Vec::new(),
        };
        manager.request_lease_placed(now, LeaseId(lease), request, &mut SplitMix64(1));
    }

    #[test]
    fn a_worker_serves_one_job_and_is_granted_only_to_its_leases() {
        let mut leases = manager(2);
        let ask = |leases: &mut LeaseManager<DefaultPolicy>, lease: u64, job: u32| {
            let request = LeaseRequest {
                demand: cpus(1),
                placement: cpus(1),
                strategy: SchedulingStrategy::Hybrid,
                dedicated: false,
                job: JobId(job),
                spilled: false,
                arguments: Vec::new(),
            };
            leases.request_lease_placed(0, LeaseId(lease), request, &mut SplitMix64(1));
        };
        ask(&mut leases, 1, 7);
        assert_eq!(leases.poll_commands(), vec![Command::StartWorker { worker: WorkerId(1), job: JobId(7) }]);
        assert!(leases.worker_registered(1, WorkerId(1)));
        leases.poll_commands();
        assert!(leases.return_lease(2, LeaseId(1), true));
        // Job 8's lease does not get job 7's idle worker: it starts one of its own.
        ask(&mut leases, 2, 8);
        assert_eq!(leases.poll_commands(), vec![Command::StartWorker { worker: WorkerId(2), job: JobId(8) }]);
        assert_eq!(
            (leases.job_of(WorkerId(1)), leases.job_of(WorkerId(2))),
            (Some(JobId(7)), Some(JobId(8)))
        );
        // Job 7's next lease reuses its idle worker at once.
        ask(&mut leases, 3, 7);
        assert_eq!(
            leases.poll_commands(),
            vec![Command::Reply { lease: LeaseId(3), reply: LeaseReply::Granted { worker: WorkerId(1) } }]
        );
    }

    #[test]
    fn an_actor_needs_a_free_cpu_to_be_placed_and_holds_none() {
        let mut none = manager(0);
        place_actor(&mut none, 0, 1);
        assert_eq!(
            none.poll_commands(),
            vec![Command::Reply { lease: LeaseId(1), reply: LeaseReply::Infeasible }],
            "a node without CPUs takes no default actor"
        );
        let mut one = manager(1);
        for lease in 1..=3 {
            place_actor(&mut one, 0, lease);
        }
        for worker in 1..=3 {
            assert!(one.worker_registered(1, WorkerId(worker)));
        }
        let granted = one
            .poll_commands()
            .into_iter()
            .filter(|command| matches!(command, Command::Reply { reply: LeaseReply::Granted { .. }, .. }))
            .count();
        assert_eq!(granted, 3, "three actors on one CPU");
        assert_eq!(one.resources().available, one.resources().total, "holding none");
        // With the CPU taken by a task, the next actor waits for it.
        request(&mut one, 2, 10, 1);
        one.worker_registered(3, WorkerId(4));
        one.poll_commands();
        assert_eq!(one.resources().available.get(CPU), Quantity::units(0));
        place_actor(&mut one, 4, 11);
        assert!(
            !one.poll_commands()
                .iter()
                .any(|command| matches!(command, Command::Reply { lease: LeaseId(11), .. })),
            "no free CPU to place it"
        );
        assert!(one.return_lease(5, LeaseId(10), true));
        let commands = one.poll_commands();
        assert!(
            commands.iter().any(|command| matches!(
                command,
                Command::Reply { lease: LeaseId(11), reply: LeaseReply::Granted { .. } }
            )),
            "placed once the CPU is free: {commands:?}"
        );
    }

    #[test]
    fn an_idle_worker_that_owns_objects_in_use_is_not_reaped() {
        let mut leases = manager(1);
        request(&mut leases, 0, 1, 1);
        leases.worker_registered(1, WorkerId(1));
        leases.poll_commands();
        assert!(leases.return_lease(2, LeaseId(1), true));
        leases.tick(2 + 1_000);
        assert_eq!(leases.poll_commands(), vec![Command::RetireWorker { worker: WorkerId(1) }]);
        leases.tick(3_000);
        assert!(leases.poll_commands().is_empty(), "asked once, not killed meanwhile");
        // It owns objects still in use: it stays, and takes the next lease.
        leases.retire_answered(3_001, WorkerId(1), false);
        request(&mut leases, 3_002, 2, 1);
        assert_eq!(
            leases.poll_commands(),
            vec![Command::Reply { lease: LeaseId(2), reply: LeaseReply::Granted { worker: WorkerId(1) } }]
        );
        assert!(leases.return_lease(3_003, LeaseId(2), true));
        // Asked again after another idle period; now it may go.
        leases.tick(4_003);
        assert_eq!(leases.poll_commands(), vec![Command::RetireWorker { worker: WorkerId(1) }]);
        leases.retire_answered(4_004, WorkerId(1), true);
        assert_eq!(leases.poll_commands(), vec![Command::KillWorker { worker: WorkerId(1) }]);
        leases.retire_answered(4_005, WorkerId(1), false);
        assert!(leases.poll_commands().is_empty(), "a late answer changes nothing");
    }

    #[test]
    fn a_burst_spreads_over_peers_and_a_spilled_request_waits_where_it_was_sent_until_a_view_shows_room_elsewhere(
    ) {
        // A full local node (1 CPU, taken) and two idle peers of 2 CPUs each.
        let mut leases = manager(1);
        request(&mut leases, 0, 1, 1);
        assert!(leases.worker_registered(1, WorkerId(1)));
        leases.poll_commands();
        let peer = |byte: u8| NodeView {
            id: NodeId([byte; 16]),
            resources: crate::resources::NodeResources::idle(cpus(2)),
            alive: true,
            labels: Vec::new(),
        };
        leases.set_peers(vec![peer(2), peer(3)]);
        // Four more requests: each spill counts as taken on its peer until the next view, so
        // the burst spreads two and two instead of all going to the node that looked freest.
        for lease in 2..=5 {
            request(&mut leases, 1, lease, 1);
        }
        let mut sent: BTreeMap<NodeId, usize> = BTreeMap::new();
        for command in leases.poll_commands() {
            if let Command::Reply { reply: LeaseReply::Spillback { node }, .. } = command {
                *sent.entry(node).or_default() += 1;
            }
        }
        assert_eq!(sent.into_values().collect::<Vec<_>>(), vec![2, 2]);
        // A spilled request waits here (this node could hold it) when it arrives, whatever
        // this node's view of its peers: it is not sent on on the view it was sent here by.
        let full = |byte: u8| NodeView {
            id: NodeId([byte; 16]),
            resources: crate::resources::NodeResources { total: cpus(2), available: cpus(0) },
            alive: true,
            labels: Vec::new(),
        };
        leases.set_peers(vec![peer(2), peer(3)]);
        let spilled = LeaseRequest {
            demand: cpus(1),
            placement: cpus(1),
            strategy: SchedulingStrategy::Hybrid,
            dedicated: false,
            job: JobId(0),
            spilled: true,
            arguments: Vec::new(),
        };
        leases.request_lease_placed(2, LeaseId(9), spilled.clone(), &mut SplitMix64(1));
        assert!(leases.poll_commands().is_empty());
        assert_eq!(leases.queued(), 1);
        // A new view with no room anywhere else: it keeps waiting here.
        leases.set_peers(vec![full(2), full(3)]);
        leases.reconsider_queue(&mut SplitMix64(1));
        assert!(leases.poll_commands().is_empty());
        assert_eq!(leases.queued(), 1);
        // A new view showing a peer with room while this node has none: it moves there (a
        // request must not wait forever where a placement group took the resources since).
        leases.set_peers(vec![full(2), peer(3)]);
        leases.reconsider_queue(&mut SplitMix64(1));
        assert_eq!(
            leases.poll_commands(),
            vec![Command::Reply {
                lease: LeaseId(9),
                reply: LeaseReply::Spillback { node: NodeId([3; 16]) }
            }]
        );
        assert_eq!(leases.queued(), 0);
        leases.request_lease_placed(2, LeaseId(9), spilled.clone(), &mut SplitMix64(1));
        leases.set_peers(vec![peer(2), peer(3)]);
        // Work this node could never hold waits at a node that could, even while it is full
        // (Ray queues it there), rather than here until a view shows room.
        let busy = NodeView {
            id: NodeId([4; 16]),
            resources: crate::resources::NodeResources { total: cpus(4), available: cpus(0) },
            alive: true,
            labels: Vec::new(),
        };
        leases.set_peers(vec![busy]);
        request(&mut leases, 2, 11, 3);
        assert_eq!(
            leases.poll_commands(),
            vec![Command::Reply {
                lease: LeaseId(11),
                reply: LeaseReply::Spillback { node: NodeId([4; 16]) }
            }]
        );
        leases.set_peers(vec![peer(2), peer(3)]);
        // One this node could never hold goes on to a node that can.
        let big = LeaseRequest { demand: cpus(2), placement: cpus(2), ..spilled };
        leases.request_lease_placed(2, LeaseId(10), big, &mut SplitMix64(1));
        assert!(matches!(
            leases.poll_commands()[..],
            [Command::Reply { lease: LeaseId(10), reply: LeaseReply::Spillback { .. } }]
        ));
    }

    #[test]
    fn work_pinned_to_a_busy_peer_waits_there_never_here() {
        // An idle local node, and a peer whose one CPU is taken (as the last view showed it).
        let mut leases = manager(2);
        let busy = NodeView {
            id: NodeId([4; 16]),
            resources: crate::resources::NodeResources { total: cpus(1), available: cpus(0) },
            alive: true,
            labels: Vec::new(),
        };
        leases.set_peers(vec![busy]);
        let pinned = LeaseRequest {
            demand: cpus(1),
            placement: cpus(1),
            strategy: SchedulingStrategy::NodeAffinity { node: NodeId([4; 16]), soft: false },
            dedicated: false,
            job: JobId(0),
            spilled: false,
            arguments: Vec::new(),
        };
        leases.request_lease_placed(0, LeaseId(1), pinned, &mut SplitMix64(1));
        assert_eq!(
            leases.poll_commands(),
            vec![Command::Reply {
                lease: LeaseId(1),
                reply: LeaseReply::Spillback { node: NodeId([4; 16]) }
            }],
            "it waits at its node, though this one is idle"
        );
        assert_eq!(leases.queued(), 0);
    }

    #[test]
    fn work_for_labels_this_node_lacks_waits_at_a_node_that_has_them() {
        // An idle local node with no labels, and a busy peer labelled zone=b.
        let mut leases = manager(2);
        let busy = NodeView {
            id: NodeId([4; 16]),
            resources: crate::resources::NodeResources { total: cpus(1), available: cpus(0) },
            alive: true,
            labels: vec![("zone".into(), "b".into())],
        };
        leases.set_peers(vec![busy]);
        let in_b = LeaseRequest {
            demand: cpus(1),
            placement: cpus(1),
            strategy: SchedulingStrategy::NodeLabels {
                hard: vec![crate::policy::LabelMatch::is_in("zone", ["b"])],
                soft: Vec::new(),
            },
            dedicated: false,
            job: JobId(0),
            spilled: false,
            arguments: Vec::new(),
        };
        leases.request_lease_placed(0, LeaseId(1), in_b, &mut SplitMix64(1));
        assert_eq!(
            leases.poll_commands(),
            vec![Command::Reply {
                lease: LeaseId(1),
                reply: LeaseReply::Spillback { node: NodeId([4; 16]) }
            }],
            "it waits where the labels are, though this node is idle"
        );
    }

    #[test]
    fn an_infeasible_request_waits_for_a_node_that_fits_when_asked_to() {
        let config = PoolConfig { wait_when_infeasible: true, ..PoolConfig::default() };
        let mut leases = LeaseManager::new(NodeId([1; 16]), cpus(1), DefaultPolicy::default(), config);
        request(&mut leases, 0, 1, 2);
        assert_eq!(leases.poll_commands(), vec![Command::WaitingInfeasible { lease: LeaseId(1) }]);
        assert_eq!(leases.queued(), 1);
        // Pinned to a node the cluster lacks: fails at once, as in Ray.
        let pinned = SchedulingStrategy::NodeAffinity { node: NodeId([9; 16]), soft: false };
        leases.request_lease(0, LeaseId(2), cpus(1), pinned, false, &mut SplitMix64(1));
        assert_eq!(
            leases.poll_commands(),
            vec![Command::Reply { lease: LeaseId(2), reply: LeaseReply::Infeasible }]
        );
        // A node that fits joins: the request goes there.
        let big = NodeId([2; 16]);
        let resources = crate::resources::NodeResources::idle(cpus(4));
        leases.set_peers(vec![NodeView { id: big, resources, alive: true, labels: Vec::new() }]);
        leases.reconsider_queue(&mut SplitMix64(1));
        assert_eq!(
            leases.poll_commands(),
            vec![Command::Reply { lease: LeaseId(1), reply: LeaseReply::Spillback { node: big } }]
        );
        assert_eq!(leases.queued(), 0);
        // A waiting request can be cancelled.
        request(&mut leases, 1, 3, 8);
        leases.poll_commands();
        assert!(leases.cancel(2, LeaseId(3)));
        assert_eq!(leases.queued(), 0);
    }

    #[test]
    fn a_blocked_worker_lends_its_resources_until_it_runs_again() {
        let config = PoolConfig { workers_max: 1, ..PoolConfig::default() };
        let mut leases = LeaseManager::new(NodeId([1; 16]), cpus(1), DefaultPolicy::default(), config);
        request(&mut leases, 0, 1, 1);
        leases.worker_registered(1, WorkerId(1));
        leases.poll_commands();
        // The parent task waits for a child that needs the only CPU.
        request(&mut leases, 2, 2, 1);
        assert!(leases.poll_commands().is_empty(), "no CPU for the child yet");
        leases.worker_blocked(3, WorkerId(1), true);
        assert_eq!(
            leases.poll_commands(),
            vec![Command::StartWorker { worker: WorkerId(2), job: JobId(0) }],
            "the CPU is free, and the blocked worker does not count against workers_max"
        );
        leases.worker_registered(4, WorkerId(2));
        assert_eq!(
            leases.poll_commands(),
            vec![Command::Reply { lease: LeaseId(2), reply: LeaseReply::Granted { worker: WorkerId(2) } }]
        );
        // The parent runs again while the child holds the CPU: oversubscribed, not stuck.
        leases.worker_blocked(5, WorkerId(1), false);
        assert!(leases.return_lease(6, LeaseId(2), true));
        assert!(leases.return_lease(7, LeaseId(1), true));
        assert_eq!(leases.resources().available, leases.resources().total, "nothing released twice");
    }

    #[test]
    fn requests_queue_while_resources_are_held_and_are_granted_in_order() {
        let mut leases = manager(1);
        request(&mut leases, 0, 1, 1);
        leases.worker_registered(1, WorkerId(1));
        leases.poll_commands();
        request(&mut leases, 2, 2, 1);
        request(&mut leases, 3, 3, 1);
        assert_eq!(leases.queued(), 2);
        assert!(leases.poll_commands().is_empty(), "no CPU free: no worker started, nothing granted");
        leases.return_lease(4, LeaseId(1), true);
        assert_eq!(
            leases.poll_commands(),
            vec![Command::Reply { lease: LeaseId(2), reply: LeaseReply::Granted { worker: WorkerId(1) } }]
        );
    }

    #[test]
    fn a_dead_leased_worker_fails_its_lease_and_frees_its_resources() {
        let mut leases = manager(2);
        request(&mut leases, 0, 1, 2);
        leases.worker_registered(1, WorkerId(1));
        leases.poll_commands();
        leases.worker_exited(2, WorkerId(1), "killed by signal 9");
        let commands = leases.poll_commands();
        assert_eq!(
            commands,
            vec![Command::Reply {
                lease: LeaseId(1),
                reply: LeaseReply::WorkerDied { worker: WorkerId(1), exit: "killed by signal 9".into() }
            }]
        );
        assert_eq!(leases.resources().available, leases.resources().total);
    }

    #[test]
    fn workers_that_end_before_registering_fail_the_waiting_requests_after_a_few_tries() {
        let mut leases = manager(4);
        request(&mut leases, 0, 1, 1);
        let mut exits = 0;
        let mut replies = Vec::new();
        for now in 1..20 {
            for command in leases.poll_commands() {
                match command {
                    Command::StartWorker { worker, .. } => {
                        exits += 1;
                        leases.worker_exited(now, worker, "not started: No such file or directory");
                    }
                    Command::Reply { lease, reply } => replies.push((lease, reply)),
                    Command::KillWorker { .. }
                    | Command::WaitingInfeasible { .. }
                    | Command::RetireWorker { .. } => {}
                }
            }
        }
        assert_eq!(exits, 3, "three starts, then no more");
        assert_eq!(
            replies,
            vec![(
                LeaseId(1),
                LeaseReply::WorkerStartFailed { exit: "not started: No such file or directory".into() }
            )]
        );
        // A later request tries again; a worker that registers resets the count.
        request(&mut leases, 30, 2, 1);
        let Some(Command::StartWorker { worker, .. }) = leases.poll_commands().pop() else {
            panic!("a start")
        };
        assert!(leases.worker_registered(31, worker));
        assert!(matches!(
            leases.poll_commands()[..],
            [Command::Reply { reply: LeaseReply::Granted { .. }, .. }]
        ));
    }

    #[test]
    fn a_cancelled_request_leaves_the_queue_and_a_cancelled_lease_kills_its_worker() {
        let mut leases = manager(1);
        request(&mut leases, 0, 1, 1);
        assert_eq!(leases.poll_commands(), vec![Command::StartWorker { worker: WorkerId(1), job: JobId(0) }]);
        assert!(leases.worker_registered(1, WorkerId(1)));
        leases.poll_commands();
        request(&mut leases, 2, 2, 1);
        assert_eq!(leases.queued(), 1);
        assert!(leases.cancel(3, LeaseId(2)));
        assert_eq!(leases.queued(), 0);
        assert!(leases.poll_commands().is_empty(), "a cancelled request is not answered");
        assert!(leases.cancel(4, LeaseId(1)));
        assert_eq!(leases.poll_commands(), vec![Command::KillWorker { worker: WorkerId(1) }]);
        assert_eq!(leases.resources().available, leases.resources().total);
        assert!(!leases.cancel(5, LeaseId(1)), "unknown now");
    }

    #[test]
    fn idle_and_unregistered_workers_are_killed_after_their_timeouts() {
        let mut leases = manager(4);
        request(&mut leases, 0, 1, 1);
        request(&mut leases, 0, 2, 1);
        assert_eq!(leases.poll_commands().len(), 2);
        leases.worker_registered(10, WorkerId(1));
        leases.poll_commands();
        leases.return_lease(20, LeaseId(1), true);
        leases.poll_commands();
        // Worker 1 goes idle at 20 and takes lease 2, which was waiting for a worker.
        leases.tick(1_500);
        assert!(leases.poll_commands().is_empty(), "worker 1 is leased; worker 2 still has time to register");
        leases.return_lease(1_600, LeaseId(2), true);
        leases.tick(2_700);
        // Idle too long: asked whether it may exit (it may own objects), then killed.
        assert_eq!(leases.poll_commands(), vec![Command::RetireWorker { worker: WorkerId(1) }]);
        leases.retire_answered(2_701, WorkerId(1), true);
        assert_eq!(leases.poll_commands(), vec![Command::KillWorker { worker: WorkerId(1) }]);
        leases.tick(60_000);
        assert_eq!(leases.poll_commands(), vec![Command::KillWorker { worker: WorkerId(2) }]);
        assert!(!leases.worker_registered(60_001, WorkerId(2)), "a worker killed for being late is refused");
    }

    #[test]
    fn impossible_shapes_are_infeasible_and_busy_nodes_spill_back() {
        let mut leases = manager(2);
        request(&mut leases, 0, 1, 3);
        assert_eq!(
            leases.poll_commands(),
            vec![Command::Reply { lease: LeaseId(1), reply: LeaseReply::Infeasible }]
        );
        let peer = NodeView {
            id: NodeId([2; 16]),
            resources: NodeResources::idle(cpus(8)),
            alive: true,
            labels: Vec::new(),
        };
        leases.set_peers(vec![peer]);
        request(&mut leases, 0, 2, 4);
        assert_eq!(
            leases.poll_commands(),
            vec![Command::Reply {
                lease: LeaseId(2),
                reply: LeaseReply::Spillback { node: NodeId([2; 16]) }
            }]
        );
    }

    #[test]
    fn queued_requests_spill_back_once_another_node_has_room() {
        let mut leases = manager(1);
        request(&mut leases, 0, 1, 1);
        leases.worker_registered(1, WorkerId(1));
        leases.poll_commands();
        request(&mut leases, 2, 2, 1);
        leases.reconsider_queue(&mut SplitMix64(3));
        assert!(leases.poll_commands().is_empty(), "no other node known: it waits");
        let peer = NodeView {
            id: NodeId([2; 16]),
            resources: NodeResources::idle(cpus(4)),
            alive: true,
            labels: Vec::new(),
        };
        leases.set_peers(vec![peer]);
        leases.reconsider_queue(&mut SplitMix64(3));
        assert_eq!(
            leases.poll_commands(),
            vec![Command::Reply {
                lease: LeaseId(2),
                reply: LeaseReply::Spillback { node: NodeId([2; 16]) }
            }]
        );
        assert_eq!(leases.queued(), 0);
    }

    #[derive(Debug, Clone)]
    enum Event {
        Request(u64),
        Register,
        StartFailed,
        Return(bool),
        Exit,
        Tick(u64),
    }

    fn any_event() -> impl Strategy<Value = Event> {
        prop_oneof![
            (0u64..3).prop_map(Event::Request),
            Just(Event::Register),
            Just(Event::StartFailed),
            any::<bool>().prop_map(Event::Return),
            Just(Event::Exit),
            (0u64..3_000).prop_map(Event::Tick),
        ]
    }

    proptest! {
        /// Under any sequence of events: resources held by granted leases plus those free add
        /// up to the total, every request is answered at most once, and a granted worker is
        /// never granted twice at the same time.
        #[test]
        fn leases_conserve_resources_and_answer_once(events in proptest::collection::vec(any_event(), 1..120)) {
            let mut leases = manager(4);
            let mut now = 0;
            let mut next_lease = 1;
            let mut answered = std::collections::BTreeSet::new();
            let mut died = std::collections::BTreeSet::new();
            let mut holding: BTreeMap<LeaseId, WorkerId> = BTreeMap::new();
            let mut retiring: Vec<WorkerId> = Vec::new();
            let mut started: Vec<WorkerId> = Vec::new();
            for event in events {
                now += 7;
                match event {
                    Event::Request(want) => {
                        request(&mut leases, now, next_lease, want);
                        next_lease += 1;
                    }
                    Event::Register => {
                        if let Some(worker) = started.pop() {
                            leases.worker_registered(now, worker);
                        }
                    }
                    Event::StartFailed => {
                        if let Some(worker) = started.pop() {
                            leases.worker_exited(now, worker, "not started");
                        }
                    }
                    Event::Return(reusable) => {
                        if let Some((&lease, _)) = holding.iter().next() {
                            holding.remove(&lease);
                            prop_assert!(leases.return_lease(now, lease, reusable));
                        }
                    }
                    Event::Exit => {
                        if let Some((&lease, &worker)) = holding.iter().next() {
                            holding.remove(&lease);
                            leases.worker_exited(now, worker, "crash");
                        }
                    }
                    Event::Tick(step) => {
                        now += step;
                        leases.tick(now);
                    }
                }
                for command in leases.poll_commands() {
                    match command {
                        Command::StartWorker { worker, .. } => started.push(worker),
                        Command::KillWorker { worker } => started.retain(|known| *known != worker),
                        Command::WaitingInfeasible { .. } => {}
                        // An idle worker owns nothing in this model: it may always exit.
                        Command::RetireWorker { worker } => retiring.push(worker),
                        Command::Reply { lease, reply } => match reply {
                            LeaseReply::Granted { worker } => {
                                prop_assert!(!holding.values().any(|held| *held == worker), "worker granted twice");
                                prop_assert!(answered.insert(lease), "answered twice");
                                holding.insert(lease, worker);
                            }
                            LeaseReply::WorkerDied { .. } => {
                                // Only for a lease that was granted and whose worker just exited.
                                prop_assert!(answered.contains(&lease) && !holding.contains_key(&lease));
                                prop_assert!(died.insert(lease), "death reported twice");
                            }
                            LeaseReply::Spillback { .. }
                            | LeaseReply::Infeasible
                            | LeaseReply::Refused { .. }
                            | LeaseReply::WorkerStartFailed { .. } => {
                                prop_assert!(answered.insert(lease), "answered twice");
                            }
                        },
                    }
                }
                // Half the idle workers own objects still in use and stay; the others exit.
                for worker in retiring.drain(..) {
                    leases.retire_answered(now, worker, worker.0 % 2 == 0);
                }
                let mut total = leases.resources().available.clone();
                for lease in holding.keys() {
                    let (_, held) = leases.granted.get(lease).expect("held leases are granted");
                    total.release(held, &leases.resources().total).expect("held plus free fit in the total");
                }
                prop_assert_eq!(&total, &leases.resources().total);
            }
        }
    }
}
