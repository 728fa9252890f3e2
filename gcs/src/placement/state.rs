//! The placement-group manager's logic as a state machine: events in (a create, a remove, a
//! raylet's answer, the cluster view, time), commands out (prepare, commit or cancel bundles at a
//! raylet; tell the waiters). No clock, no socket: the shell and the simulator drive it alike.
//! The protocol and its invariant (a group is never half reserved) are in
//! `docs/decisions/placement_groups.md`.
//!
//! One round of two-phase commit is in flight at a time (Ray's manager schedules one group at
//! a time too): the oldest group that can be placed on the view now goes first; one that
//! cannot waits for a later view without holding back the others; one whose round failed backs
//! off (100 ms, doubling to 5 s).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use manta_proto::placement::{
    Bundle, PlacementGroupError, PlacementGroupInfo, PlacementGroupSpec, PlacementGroupState,
    PlacementStrategy,
};
use manta_proto::{NodeId, PlacementGroupId};
use manta_raylet::{BundleDemand, ClusterView, NodeView, ResourceSet, SchedulingPolicy};

/// The first back-off after a failed round, ms.
pub const BACKOFF_FIRST_MS: u64 = 100;

/// The longest back-off, ms.
pub const BACKOFF_MAX_MS: u64 = 5_000;

/// Rounds of two-phase commit in flight at once at most (each for another group): a round
/// waits for its raylets' answers, and groups placed one at a time would be placed at the pace
/// of those round trips.
pub const ROUNDS_MAX: usize = 64;

/// Removed groups kept for `list` at most (the oldest forgotten first).
pub const REMOVED_KEPT: usize = 1_000;

/// What the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Ask `node`'s raylet to hold `bundles` of `group`; answer with
    /// [`PlacementCore::prepare_answered`].
    Prepare {
        /// The group.
        group: PlacementGroupId,
        /// The round (named again by its commit and its cancel).
        round: u64,
        /// The node.
        node: NodeId,
        /// The bundles, with their indices.
        bundles: Vec<(u32, Bundle)>,
    },
    /// Ask `node`'s raylet to commit the prepared `indices`; answer with
    /// [`PlacementCore::commit_answered`].
    Commit {
        /// The group.
        group: PlacementGroupId,
        /// The round.
        round: u64,
        /// The node.
        node: NodeId,
        /// The bundles.
        indices: Vec<u32>,
    },
    /// Tell `node`'s raylet to give back `indices` of `group` (none: the whole group, removed).
    Cancel {
        /// The group.
        group: PlacementGroupId,
        /// The round whose bundles go back (any, when `indices` is empty).
        round: u64,
        /// The node.
        node: NodeId,
        /// The bundles (none: all, and the group is gone).
        indices: Vec<u32>,
    },
    /// Every bundle of `group` is reserved: wake its waiters.
    Created {
        /// The group.
        group: PlacementGroupId,
    },
    /// `group` was removed: fail its waiters.
    Removed {
        /// The group.
        group: PlacementGroupId,
        /// Why.
        cause: String,
    },
}

#[derive(Debug)]
struct Group {
    info: PlacementGroupInfo,
    /// Not placed again before this time (after a failed round), ms.
    retry_at_ms: u64,
    /// The next back-off, ms.
    backoff_ms: u64,
}

#[derive(Debug)]
enum Phase {
    /// Waiting for these nodes' prepare answers; `ok` answered yes.
    Preparing { waiting: BTreeSet<NodeId>, ok: BTreeSet<NodeId>, failures: Vec<String> },
    /// Waiting for these nodes' commit answers; `lost` answered no (or died).
    Committing { waiting: BTreeSet<NodeId>, lost: BTreeSet<NodeId> },
}

/// The round of two-phase commit in flight.
#[derive(Debug)]
struct Round {
    id: u64,
    group: PlacementGroupId,
    /// Each bundle placed in this round, and its node.
    bundles: Vec<(u32, NodeId)>,
    phase: Phase,
}

impl Round {
    fn indices_on(&self, node: NodeId) -> Vec<u32> {
        self.bundles.iter().filter(|(_, at)| *at == node).map(|(index, _)| *index).collect()
    }
}

/// The placement-group manager's state.
#[derive(Debug)]
pub struct PlacementCore<P: SchedulingPolicy> {
    policy: P,
    groups: BTreeMap<PlacementGroupId, Group>,
    /// Live groups by (namespace, name).
    names: BTreeMap<(String, String), PlacementGroupId>,
    /// Groups with bundles to place, oldest first.
    queue: VecDeque<PlacementGroupId>,
    /// The rounds in flight, at most one per group and [`ROUNDS_MAX`] in all.
    rounds: BTreeMap<PlacementGroupId, Round>,
    /// The live nodes and their free resources, as the last view gave them, less what rounds
    /// took since.
    view: Vec<NodeView>,
    /// Nodes known dead (their ids never come back).
    dead: BTreeSet<NodeId>,
    /// Removed groups, oldest first (to forget the oldest beyond [`REMOVED_KEPT`]).
    removed: VecDeque<PlacementGroupId>,
    /// The next round's id.
    next_round: u64,
    commands: Vec<Command>,
}

impl<P: SchedulingPolicy> PlacementCore<P> {
    /// An empty manager placing bundles with `policy`.
    pub fn new(policy: P) -> Self {
        PlacementCore {
            policy,
            groups: BTreeMap::new(),
            names: BTreeMap::new(),
            queue: VecDeque::new(),
            rounds: BTreeMap::new(),
            view: Vec::new(),
            dead: BTreeSet::new(),
            removed: VecDeque::new(),
            next_round: 1,
            commands: Vec::new(),
        }
    }

    /// The commands made since the last call, in order.
    pub fn poll_commands(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.commands)
    }

    /// Records a new group (to be placed as soon as the view allows).
    pub fn create(&mut self, spec: PlacementGroupSpec, now_ms: u64) -> Result<(), PlacementGroupError> {
        validate(&spec)?;
        if self.groups.contains_key(&spec.id) {
            return Err(PlacementGroupError::Invalid(format!("placement group {} exists already", spec.id)));
        }
        if !spec.name.is_empty() {
            let key = (spec.namespace.clone(), spec.name.clone());
            if self.names.contains_key(&key) {
                return Err(PlacementGroupError::NameTaken { namespace: key.0, name: key.1 });
            }
            self.names.insert(key, spec.id);
        }
        let id = spec.id;
        let nodes = vec![None; spec.bundles.len()];
        let info = PlacementGroupInfo { spec, state: PlacementGroupState::Pending, nodes, removal: None };
        self.groups.insert(id, Group { info, retry_at_ms: 0, backoff_ms: BACKOFF_FIRST_MS });
        self.queue.push_back(id);
        self.place(now_ms);
        Ok(())
    }

    /// Removes a group: every live node is told to give back its bundles (and to refuse its
    /// work from now on). Removing a removed group changes nothing.
    pub fn remove(&mut self, id: PlacementGroupId, cause: &str) -> Result<(), PlacementGroupError> {
        let group = self.groups.get_mut(&id).ok_or(PlacementGroupError::Unknown(id))?;
        if group.info.state == PlacementGroupState::Removed {
            return Ok(());
        }
        group.info.state = PlacementGroupState::Removed;
        group.info.removal = Some(cause.to_owned());
        group.info.nodes.iter_mut().for_each(|node| *node = None);
        let key = (group.info.spec.namespace.clone(), group.info.spec.name.clone());
        if self.names.get(&key) == Some(&id) {
            self.names.remove(&key);
        }
        self.queue.retain(|queued| *queued != id);
        // Every live node, not only those holding bundles: a prepare still in flight may land
        // anywhere the round chose, and work for the group may wait anywhere.
        for node in self.view.iter().filter(|node| node.alive).map(|node| node.id) {
            self.commands.push(Command::Cancel { group: id, round: 0, node, indices: Vec::new() });
        }
        self.commands.push(Command::Removed { group: id, cause: cause.to_owned() });
        self.removed.push_back(id);
        if self.removed.len() > REMOVED_KEPT {
            if let Some(oldest) = self.removed.pop_front() {
                self.groups.remove(&oldest);
            }
        }
        Ok(())
    }

    /// Removes every group of `job` that is not detached (its job ended).
    pub fn job_finished(&mut self, job: manta_proto::JobId) {
        let owned: Vec<PlacementGroupId> = self
            .groups
            .values()
            .filter(|group| group.info.spec.job == Some(job) && !group.info.spec.detached)
            .map(|group| group.info.spec.id)
            .collect();
        for id in owned {
            let _ = self.remove(id, &format!("its job {job} ended"));
        }
    }

    /// A new view of the cluster: every node with its state and free resources. Nodes marked
    /// dead lose their bundles (placed again elsewhere); groups that fit now are placed.
    pub fn set_view(&mut self, nodes: Vec<NodeView>, now_ms: u64) {
        for node in nodes.iter().filter(|node| !node.alive) {
            self.node_died(node.id, now_ms);
        }
        self.view = nodes.into_iter().filter(|node| node.alive && !self.dead.contains(&node.id)).collect();
        self.place(now_ms);
    }

    /// Time passed: groups whose back-off ended may be placed.
    pub fn tick(&mut self, now_ms: u64) {
        self.place(now_ms);
    }

    /// `node` died: its bundles are placed again; a round waiting for it counts it as a no.
    pub fn node_died(&mut self, node: NodeId, now_ms: u64) {
        if !self.dead.insert(node) {
            return;
        }
        self.view.retain(|view| view.id != node);
        for group in self.groups.values_mut() {
            if group.info.state == PlacementGroupState::Removed || !group.info.nodes.contains(&Some(node)) {
                continue;
            }
            for at in group.info.nodes.iter_mut().filter(|at| **at == Some(node)) {
                *at = None;
            }
            if group.info.state == PlacementGroupState::Created {
                group.info.state = PlacementGroupState::Rescheduling;
            }
            if !self.queue.contains(&group.info.spec.id) {
                self.queue.push_back(group.info.spec.id);
            }
        }
        // The rounds in flight lose what they placed there, whether or not the node answered.
        let touched: Vec<PlacementGroupId> = self
            .rounds
            .values()
            .filter(|round| round.bundles.iter().any(|(_, at)| *at == node))
            .map(|round| round.group)
            .collect();
        for group in touched {
            let Some(round) = self.rounds.get_mut(&group) else { continue };
            let died = format!("node {node} died");
            match &mut round.phase {
                Phase::Preparing { waiting, .. } if waiting.contains(&node) => {
                    self.prepare_answered(group, node, Err(died), now_ms);
                }
                Phase::Preparing { ok, failures, .. } => {
                    ok.remove(&node);
                    failures.push(died);
                }
                Phase::Committing { waiting, .. } if waiting.contains(&node) => {
                    self.commit_answered(group, node, Err(died), now_ms);
                }
                Phase::Committing { lost, .. } => {
                    lost.insert(node);
                }
            }
        }
    }

    /// `node`'s answer to a [`Command::Prepare`] of `group`.
    pub fn prepare_answered(
        &mut self,
        group: PlacementGroupId,
        node: NodeId,
        answer: Result<(), String>,
        now_ms: u64,
    ) {
        let Some(round) = self.rounds.get_mut(&group) else { return };
        let Phase::Preparing { waiting, ok, failures } = &mut round.phase else { return };
        if !waiting.remove(&node) {
            return;
        }
        match answer {
            Ok(()) => {
                ok.insert(node);
            }
            Err(reason) => failures.push(format!("node {node}: {reason}")),
        }
        if !waiting.is_empty() {
            return;
        }
        let (ok, failures) = (std::mem::take(ok), std::mem::take(failures));
        let round = self.rounds.remove(&group).expect("matched above");
        let removed = self.state(group) == Some(PlacementGroupState::Removed);
        if removed {
            // Its removal told every node to give everything back.
        } else if !failures.is_empty() {
            // All or nothing: what was prepared goes back, and the group waits its turn again.
            for node in ok.iter().filter(|node| !self.dead.contains(node)) {
                self.commands.push(Command::Cancel {
                    group,
                    round: round.id,
                    node: *node,
                    indices: round.indices_on(*node),
                });
            }
            if let Some(entry) = self.groups.get_mut(&group) {
                entry.retry_at_ms = now_ms + entry.backoff_ms;
                entry.backoff_ms = (entry.backoff_ms * 2).min(BACKOFF_MAX_MS);
            }
            self.requeue(group);
        } else {
            for node in &ok {
                self.commands.push(Command::Commit {
                    group,
                    round: round.id,
                    node: *node,
                    indices: round.indices_on(*node),
                });
            }
            let committing = Round {
                id: round.id,
                group,
                bundles: round.bundles,
                phase: Phase::Committing { waiting: ok, lost: BTreeSet::new() },
            };
            self.rounds.insert(group, committing);
            return;
        }
        self.place(now_ms);
    }

    /// `node`'s answer to a [`Command::Commit`] of `group`.
    pub fn commit_answered(
        &mut self,
        group: PlacementGroupId,
        node: NodeId,
        answer: Result<(), String>,
        now_ms: u64,
    ) {
        let Some(round) = self.rounds.get_mut(&group) else { return };
        let Phase::Committing { waiting, lost } = &mut round.phase else { return };
        if !waiting.remove(&node) {
            return;
        }
        if answer.is_err() {
            lost.insert(node);
        }
        if !waiting.is_empty() {
            return;
        }
        let lost = std::mem::take(lost);
        let round = self.rounds.remove(&group).expect("matched above");
        let Some(entry) = self.groups.get_mut(&group) else { return };
        if entry.info.state != PlacementGroupState::Removed {
            if lost.is_empty() {
                for (index, at) in &round.bundles {
                    entry.info.nodes[*index as usize] = Some(*at);
                }
                if entry.info.nodes.iter().all(Option::is_some) {
                    entry.info.state = PlacementGroupState::Created;
                    entry.backoff_ms = BACKOFF_FIRST_MS;
                    self.commands.push(Command::Created { group });
                }
            } else {
                // A node failed to commit (it died): the round's bundles all go back, committed
                // or not, and are placed again together (all or nothing, as Ray does).
                let nodes: BTreeSet<NodeId> = round.bundles.iter().map(|(_, at)| *at).collect();
                for node in nodes.into_iter().filter(|node| !self.dead.contains(node)) {
                    self.commands.push(Command::Cancel {
                        group,
                        round: round.id,
                        node,
                        indices: round.indices_on(node),
                    });
                }
                entry.retry_at_ms = now_ms + entry.backoff_ms;
                entry.backoff_ms = (entry.backoff_ms * 2).min(BACKOFF_MAX_MS);
                self.requeue(group);
            }
        }
        self.place(now_ms);
    }

    /// Starts rounds for the queued groups that can be placed now, oldest first, while fewer
    /// than [`ROUNDS_MAX`] are in flight.
    fn place(&mut self, now_ms: u64) {
        if self.view.is_empty() {
            return;
        }
        let mut position = 0;
        while position < self.queue.len() && self.rounds.len() < ROUNDS_MAX {
            if self.start_round(position, now_ms) {
                // It left the queue: the next group is at the same position now.
                continue;
            }
            position += 1;
        }
    }

    /// Starts a round for the queued group at `position` if it can be placed now.
    fn start_round(&mut self, position: usize, now_ms: u64) -> bool {
        let id = self.queue[position];
        let Some(group) = self.groups.get(&id) else {
            self.queue.remove(position);
            return true;
        };
        if group.retry_at_ms > now_ms || self.rounds.contains_key(&id) {
            return false;
        }
        let unplaced: Vec<u32> = (0..group.info.nodes.len() as u32)
            .filter(|index| group.info.nodes[*index as usize].is_none())
            .collect();
        if unplaced.is_empty() || group.info.state == PlacementGroupState::Removed {
            // Nothing to place (queued twice, or removed meanwhile).
            self.queue.remove(position);
            return true;
        }
        let placed: Vec<NodeId> = group.info.nodes.iter().flatten().copied().collect();
        let bundles: Vec<BundleDemand> = unplaced
            .iter()
            .map(|index| BundleDemand {
                resources: ResourceSet::from_amounts(&group.info.spec.bundles[*index as usize])
                    .unwrap_or_default(),
                labels: group.info.spec.bundle_labels.get(*index as usize).cloned().unwrap_or_default(),
            })
            .collect();
        let cluster = ClusterView::new(self.view[0].id, self.view.clone());
        let Some(nodes) = self.policy.place_bundles(&bundles, group.info.spec.strategy, &placed, &cluster)
        else {
            return false;
        };
        if nodes.len() != unplaced.len() {
            return false;
        }
        self.queue.remove(position);
        let spec_bundles = group.info.spec.bundles.clone();
        let chosen: Vec<(u32, NodeId)> = unplaced.into_iter().zip(nodes).collect();
        let mut by_node: BTreeMap<NodeId, Vec<(u32, Bundle)>> = BTreeMap::new();
        for ((index, node), set) in chosen.iter().zip(&bundles) {
            by_node.entry(*node).or_default().push((*index, spec_bundles[*index as usize].clone()));
            // Taken until the next view shows it.
            if let Some(view) = self.view.iter_mut().find(|view| view.id == *node) {
                view.resources.available.saturating_take(&set.resources);
            }
        }
        let waiting: BTreeSet<NodeId> = by_node.keys().copied().collect();
        let round = self.next_round;
        self.next_round += 1;
        for (node, bundles) in by_node {
            self.commands.push(Command::Prepare { group: id, round, node, bundles });
        }
        let preparing = Round {
            id: round,
            group: id,
            bundles: chosen,
            phase: Phase::Preparing { waiting, ok: BTreeSet::new(), failures: Vec::new() },
        };
        self.rounds.insert(id, preparing);
        true
    }

    /// Puts `group` back at the front of the queue (once).
    fn requeue(&mut self, group: PlacementGroupId) {
        if !self.queue.contains(&group) {
            self.queue.push_front(group);
        }
    }

    fn state(&self, id: PlacementGroupId) -> Option<PlacementGroupState> {
        self.groups.get(&id).map(|group| group.info.state)
    }

    /// A group by id.
    pub fn info(&self, id: PlacementGroupId) -> Option<PlacementGroupInfo> {
        self.groups.get(&id).map(|group| group.info.clone())
    }

    /// A live group by name.
    pub fn named(&self, namespace: &str, name: &str) -> Option<PlacementGroupInfo> {
        let id = self.names.get(&(namespace.to_owned(), name.to_owned()))?;
        self.info(*id)
    }

    /// Every group known (removed ones: the most recent [`REMOVED_KEPT`]).
    pub fn list(&self) -> Vec<PlacementGroupInfo> {
        self.groups.values().map(|group| group.info.clone()).collect()
    }

    /// The strategy of a group, for callers that place work in it.
    pub fn strategy(&self, id: PlacementGroupId) -> Option<PlacementStrategy> {
        self.groups.get(&id).map(|group| group.info.spec.strategy)
    }
}

/// Refuses a malformed group before anything is recorded (Ray's checks).
fn validate(spec: &PlacementGroupSpec) -> Result<(), PlacementGroupError> {
    let invalid = |reason: String| Err(PlacementGroupError::Invalid(reason));
    if spec.bundles.is_empty() {
        return invalid("a placement group needs at least one bundle".to_owned());
    }
    for (index, bundle) in spec.bundles.iter().enumerate() {
        match ResourceSet::from_amounts(bundle) {
            Err(error) => return invalid(format!("bundle {index}: {error}")),
            Ok(set) if set.is_empty() => {
                return invalid(format!("bundle {index} is empty (a bundle needs some resource above 0)"))
            }
            Ok(_) => {}
        }
        if let Some((name, _)) = bundle.iter().find(|(name, _)| name.is_empty() || name.contains("_group_")) {
            return invalid(format!("bundle {index}: {name:?} is not a resource a bundle can hold"));
        }
    }
    if spec.bundle_labels.len() > spec.bundles.len() {
        return invalid(format!(
            "{} label selectors for {} bundles",
            spec.bundle_labels.len(),
            spec.bundles.len()
        ));
    }
    for part in [&spec.name, &spec.namespace] {
        if part.contains('\0') {
            return invalid(format!("names and namespaces may not contain NUL bytes: {part:?}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use manta_proto::placement::{Bundle, PlacementGroupSpec, PlacementGroupState, PlacementStrategy};
    use manta_proto::{NodeId, PlacementGroupId};
    use manta_raylet::{DefaultPolicy, LeaseManager, NodeView, PoolConfig, Quantity, ResourceSet, CPU};
    use proptest::prelude::*;

    use super::{Command, PlacementCore};

    /// A cluster of real raylet cores, each `cpus` CPUs, driven with the manager.
    struct World {
        core: PlacementCore<DefaultPolicy>,
        raylets: BTreeMap<NodeId, LeaseManager<DefaultPolicy>>,
        cpus: u64,
        /// Commands sent and not yet delivered (the network may reorder them).
        in_flight: Vec<Command>,
        now: u64,
        /// Prepares refused on purpose from now on (a stale view, a raylet going away).
        refuse_prepares: bool,
    }

    fn node(n: u8) -> NodeId {
        NodeId([n; 16])
    }

    fn spec(n: u8, bundles: Vec<Bundle>, strategy: PlacementStrategy) -> PlacementGroupSpec {
        PlacementGroupSpec {
            id: PlacementGroupId([n; 16]),
            name: String::new(),
            namespace: "test".into(),
            strategy,
            bundles,
            job: None,
            detached: false,
            bundle_labels: Vec::new(),
        }
    }

    impl World {
        fn new(nodes: u8, cpus: u64) -> World {
            let raylets = (1..=nodes)
                .map(|n| {
                    let total = ResourceSet::new().with(CPU, Quantity::units(cpus));
                    (
                        node(n),
                        LeaseManager::new(node(n), total, DefaultPolicy::default(), PoolConfig::default()),
                    )
                })
                .collect();
            let mut world = World {
                core: PlacementCore::new(DefaultPolicy::default()),
                raylets,
                cpus,
                in_flight: Vec::new(),
                now: 0,
                refuse_prepares: false,
            };
            world.view();
            world
        }

        /// The GCS's view: every node's resources as its raylet has them now; the dead ones.
        fn view(&mut self) {
            let mut nodes: Vec<NodeView> = self
                .raylets
                .iter()
                .map(|(id, raylet)| NodeView {
                    id: *id,
                    resources: raylet.resources().clone(),
                    alive: true,
                    labels: Vec::new(),
                })
                .collect();
            for dead in (1..=4).map(node).filter(|id| !self.raylets.contains_key(id)) {
                nodes.push(NodeView {
                    id: dead,
                    resources: manta_raylet::NodeResources::idle(ResourceSet::new()),
                    alive: false,
                    labels: Vec::new(),
                });
            }
            self.core.set_view(nodes, self.now);
            self.collect();
        }

        fn collect(&mut self) {
            self.in_flight.extend(self.core.poll_commands());
        }

        /// Delivers the in-flight command at `pick` (modulo their count) and its answer.
        fn deliver(&mut self, pick: usize) {
            if self.in_flight.is_empty() {
                return;
            }
            let command = self.in_flight.remove(pick % self.in_flight.len());
            let now = self.now;
            match command {
                Command::Prepare { group, round, node, bundles } => {
                    let answer = match self.raylets.get_mut(&node) {
                        _ if self.refuse_prepares => Err("refused on purpose".to_owned()),
                        Some(raylet) => raylet.prepare_bundles(group, round, &bundles),
                        None => Err("dead".to_owned()),
                    };
                    self.core.prepare_answered(group, node, answer, now);
                }
                Command::Commit { group, round, node, indices } => {
                    let answer = match self.raylets.get_mut(&node) {
                        Some(raylet) => raylet.commit_bundles(now, group, round, &indices),
                        None => Err("dead".to_owned()),
                    };
                    self.core.commit_answered(group, node, answer, now);
                }
                Command::Cancel { group, round, node, indices } => {
                    if let Some(raylet) = self.raylets.get_mut(&node) {
                        raylet.cancel_bundles(now, group, round, &indices);
                    }
                }
                Command::Created { .. } | Command::Removed { .. } => {}
            }
            self.collect();
        }

        fn kill(&mut self, n: u8) {
            if self.raylets.remove(&node(n)).is_some() {
                self.core.node_died(node(n), self.now);
                self.collect();
            }
        }

        /// Delivers everything, with time passing and fresh views, until nothing moves.
        fn settle(&mut self) {
            for _ in 0..200 {
                while !self.in_flight.is_empty() {
                    self.deliver(0);
                }
                self.now += super::BACKOFF_MAX_MS;
                self.view();
                self.core.tick(self.now);
                self.collect();
                if self.in_flight.is_empty() {
                    return;
                }
            }
            panic!("the manager never settled: {:?}", self.in_flight);
        }

        /// Never half reserved, never leaked: what each raylet holds is exactly the created
        /// groups' bundles placed there, and its free CPUs are the rest.
        fn check(&self) -> Result<(), TestCaseError> {
            let groups: BTreeMap<PlacementGroupId, _> =
                self.core.list().into_iter().map(|info| (info.spec.id, info)).collect();
            for (id, raylet) in &self.raylets {
                let mut held_cpus = 0.0;
                for (group, index, committed) in raylet.held_bundles() {
                    let info = &groups[&group];
                    prop_assert!(committed, "bundle {index} of {group} only prepared at {id} once settled");
                    prop_assert!(
                        matches!(
                            info.state,
                            PlacementGroupState::Created | PlacementGroupState::Rescheduling
                        ),
                        "{group} ({:?}) holds bundle {index} at {id}",
                        info.state
                    );
                    prop_assert_eq!(info.nodes[index as usize], Some(*id));
                    held_cpus += info.spec.bundles[index as usize].iter().map(|(_, cpus)| cpus).sum::<f64>();
                }
                let free = raylet.resources().available.get(CPU).as_f64();
                prop_assert!(
                    (free + held_cpus - self.cpus as f64).abs() < 1e-9,
                    "{id}: {free} free + {held_cpus} held"
                );
            }
            for info in groups.values() {
                if info.state == PlacementGroupState::Created {
                    for (index, at) in info.nodes.iter().enumerate() {
                        let at = at.expect("a created group's bundles are all placed");
                        let held =
                            self.raylets.get(&at).map(|raylet| raylet.held_bundles()).unwrap_or_default();
                        prop_assert!(
                            held.contains(&(info.spec.id, index as u32, true)),
                            "{} bundle {index}",
                            info.spec.id
                        );
                    }
                    if info.spec.strategy == PlacementStrategy::StrictSpread {
                        let nodes: std::collections::BTreeSet<_> = info.nodes.iter().collect();
                        prop_assert_eq!(nodes.len(), info.nodes.len(), "strict spread shares a node");
                    }
                    if info.spec.strategy == PlacementStrategy::StrictPack {
                        prop_assert!(
                            info.nodes.windows(2).all(|pair| pair[0] == pair[1]),
                            "strict pack spans nodes"
                        );
                    }
                }
            }
            Ok(())
        }
    }

    #[test]
    fn a_group_is_prepared_everywhere_then_committed_and_a_failed_round_holds_nothing() {
        let mut world = World::new(2, 2);
        let bundles = vec![vec![(CPU.to_owned(), 2.0)], vec![(CPU.to_owned(), 2.0)]];
        world.core.create(spec(1, bundles, PlacementStrategy::Spread), 0).unwrap();
        world.collect();
        let prepares =
            world.in_flight.iter().filter(|command| matches!(command, Command::Prepare { .. })).count();
        assert_eq!(prepares, 2, "one prepare per node: {:?}", world.in_flight);
        // The first prepare is refused: the other node's bundle goes back, nothing is committed.
        world.refuse_prepares = true;
        world.deliver(0);
        world.refuse_prepares = false;
        world.deliver(0);
        assert!(
            world.in_flight.iter().any(|command| matches!(command, Command::Cancel { .. })),
            "{:?}",
            world.in_flight
        );
        assert!(!world.in_flight.iter().any(|command| matches!(command, Command::Commit { .. })));
        // After the back-off it is placed, prepared and committed.
        world.settle();
        let info = world.core.info(PlacementGroupId([1; 16])).unwrap();
        assert_eq!(info.state, PlacementGroupState::Created);
        world.check().unwrap();
        // A node dies: its bundle alone is placed again, when room appears.
        world.kill(2);
        world.settle();
        let info = world.core.info(PlacementGroupId([1; 16])).unwrap();
        assert_eq!(info.state, PlacementGroupState::Rescheduling, "no room for the lost bundle");
        assert_eq!(info.nodes[0].or(info.nodes[1]), Some(node(1)));
        world.check().unwrap();
        world.core.remove(PlacementGroupId([1; 16]), "test").unwrap();
        world.collect();
        world.settle();
        world.check().unwrap();
        assert!(world.raylets[&node(1)].held_bundles().is_empty());
    }

    #[test]
    fn malformed_groups_and_taken_names_are_refused() {
        let mut core = PlacementCore::new(DefaultPolicy::default());
        assert!(core.create(spec(1, Vec::new(), PlacementStrategy::Pack), 0).is_err());
        assert!(core.create(spec(1, vec![Vec::new()], PlacementStrategy::Pack), 0).is_err());
        assert!(core.create(spec(1, vec![vec![(CPU.to_owned(), 0.0)]], PlacementStrategy::Pack), 0).is_err());
        assert!(core
            .create(spec(1, vec![vec![(CPU.to_owned(), f64::NAN)]], PlacementStrategy::Pack), 0)
            .is_err());
        assert!(core
            .create(spec(1, vec![vec![("CPU_group_x".to_owned(), 1.0)]], PlacementStrategy::Pack), 0)
            .is_err());
        let named = |n| PlacementGroupSpec {
            name: "g".into(),
            ..spec(n, vec![vec![(CPU.to_owned(), 1.0)]], PlacementStrategy::Pack)
        };
        core.create(named(1), 0).unwrap();
        assert!(matches!(
            core.create(named(2), 0),
            Err(manta_proto::placement::PlacementGroupError::NameTaken { .. })
        ));
        core.remove(PlacementGroupId([1; 16]), "test").unwrap();
        core.create(named(2), 0).unwrap();
        assert_eq!(core.named("test", "g").map(|info| info.spec.id), Some(PlacementGroupId([2; 16])));
    }

    #[derive(Debug, Clone)]
    enum Step {
        Create { bundles: Vec<u8>, strategy: u8 },
        Remove(u8),
        Deliver(usize),
        View,
        Tick,
        Kill(u8),
        Refuse(bool),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (proptest::collection::vec(1u8..=2, 1..=3), 0u8..4)
                .prop_map(|(bundles, strategy)| Step::Create { bundles, strategy }),
            (1u8..=8).prop_map(Step::Remove),
            any::<usize>().prop_map(Step::Deliver),
            any::<usize>().prop_map(Step::Deliver),
            any::<usize>().prop_map(Step::Deliver),
            Just(Step::View),
            Just(Step::Tick),
            (1u8..=4).prop_map(Step::Kill),
            any::<bool>().prop_map(Step::Refuse),
        ]
    }

    proptest! {
        /// Any interleaving of creates, removals, answers in any order, refusals, node deaths,
        /// views and time: once settled, nothing is half reserved and no resource leaked.
        #[test]
        fn never_half_reserved_never_leaked(steps in proptest::collection::vec(step(), 1..80)) {
            let mut world = World::new(4, 4);
            let mut next = 1u8;
            for step in steps {
                match step {
                    Step::Create { bundles, strategy } => {
                        let strategy = [PlacementStrategy::Pack, PlacementStrategy::Spread,
                            PlacementStrategy::StrictPack, PlacementStrategy::StrictSpread][strategy as usize];
                        let bundles = bundles.into_iter().map(|cpus| vec![(CPU.to_owned(), f64::from(cpus))]).collect();
                        world.core.create(spec(next, bundles, strategy), world.now).unwrap();
                        next = next.wrapping_add(1).max(1);
                        world.collect();
                    }
                    Step::Remove(n) => {
                        let _ = world.core.remove(PlacementGroupId([n; 16]), "test");
                        world.collect();
                    }
                    Step::Deliver(pick) => world.deliver(pick),
                    Step::View => world.view(),
                    Step::Tick => {
                        world.now += 50;
                        world.core.tick(world.now);
                        world.collect();
                    }
                    // Node 1 stays: the cluster is never empty.
                    Step::Kill(n) if n > 1 => world.kill(n),
                    Step::Kill(_) => {}
                    Step::Refuse(refuse) => world.refuse_prepares = refuse,
                }
                // At every step: no raylet holds more than it has.
                for raylet in world.raylets.values() {
                    prop_assert!(raylet.resources().available.get(CPU).as_f64() >= 0.0);
                }
            }
            world.refuse_prepares = false;
            world.settle();
            world.check()?;
        }
    }
}
