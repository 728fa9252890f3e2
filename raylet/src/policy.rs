//! Scheduling policies: which node runs a task or an actor.
//!
//! A policy is a pure function of the request, the cluster as the raylet sees it, and a random
//! source passed in: no clock, no socket, no global state. That keeps it testable and lets the
//! simulator run the same code over thousands of simulated nodes. Users can plug in their own
//! by implementing [`SchedulingPolicy`].

use manta_transport::NodeId;

use crate::resources::{NodeResources, ResourceSet, GPU};

/// One node as the scheduler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    /// The node.
    pub id: NodeId,
    /// Its resources now.
    pub resources: NodeResources,
    /// Whether it is alive (a dead node is never chosen).
    pub alive: bool,
    /// Its labels (`manta start --labels`), for label scheduling.
    pub labels: Vec<(String, String)>,
}

impl NodeView {
    /// A node as the GCS's view reports it (`GetClusterView`); amounts that are not valid
    /// quantities count as none.
    pub fn from_load(load: manta_proto::gcs::wire::NodeLoad) -> NodeView {
        let amounts = |pairs: &[(String, f64)]| {
            let mut set = ResourceSet::new();
            for (name, amount) in pairs {
                if let Ok(quantity) = crate::resources::Quantity::from_f64(name, *amount) {
                    set.add(&ResourceSet::new().with(name, quantity));
                }
            }
            set
        };
        NodeView {
            id: load.node_id,
            resources: NodeResources { total: amounts(&load.total), available: amounts(&load.available) },
            alive: load.state == manta_proto::gcs::wire::NodeState::Alive,
            labels: load.labels,
        }
    }
}

/// Every node as the last report gave them: one snapshot, shared by as many views as read it
/// (cloning it is a reference count), so a thousand raylets in one simulation, or one raylet
/// deciding a thousand times, never copy ten thousand nodes each.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SharedNodes(std::sync::Arc<Snapshot>);

#[derive(Debug, Default, PartialEq)]
struct Snapshot {
    nodes: Vec<NodeView>,
    /// Each node's index in `nodes`.
    index: std::collections::HashMap<NodeId, usize>,
}

impl SharedNodes {
    /// A snapshot of `nodes` (a node given twice keeps its first entry's place).
    pub fn new(nodes: Vec<NodeView>) -> Self {
        let mut index = std::collections::HashMap::with_capacity(nodes.len());
        for (at, node) in nodes.iter().enumerate() {
            index.entry(node.id).or_insert(at);
        }
        SharedNodes(std::sync::Arc::new(Snapshot { nodes, index }))
    }

    /// The nodes, in order.
    pub fn nodes(&self) -> &[NodeView] {
        &self.0.nodes
    }
}

/// The cluster as one raylet sees it: a shared snapshot of every node, with this view's own
/// changes over it (the deciding node's resources now, what it has sent to others since the
/// snapshot). Read it with [`nodes`](Self::nodes), [`node`](Self::node) and [`get`](Self::get).
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterView {
    /// The node deciding (preferred when it is a good choice: no transfer needed).
    pub local: NodeId,
    base: SharedNodes,
    /// Changed or added nodes by index (an index past the snapshot's end is a node the
    /// snapshot lacks), sorted by index.
    changes: Vec<(usize, NodeView)>,
}

impl ClusterView {
    /// A view of `nodes` from `local`.
    pub fn new(local: NodeId, nodes: Vec<NodeView>) -> Self {
        ClusterView::shared(local, SharedNodes::new(nodes))
    }

    /// A view from `local` over a shared snapshot.
    pub fn shared(local: NodeId, nodes: SharedNodes) -> Self {
        ClusterView { local, base: nodes, changes: Vec::new() }
    }

    /// Every known node, the local one included, in the snapshot's order (nodes added since
    /// last).
    pub fn nodes(&self) -> Nodes<'_> {
        Nodes { base: &self.base.0.nodes, changes: &self.changes, next: 0 }
    }

    /// How many nodes are known.
    pub fn len(&self) -> usize {
        let added = self.changes.iter().filter(|(at, _)| *at >= self.base.0.nodes.len()).count();
        self.base.0.nodes.len() + added
    }

    /// Whether no node is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The node at `index` in [`nodes`](Self::nodes)' order.
    pub fn get(&self, index: usize) -> Option<&NodeView> {
        match self.changes.binary_search_by_key(&index, |(at, _)| *at) {
            Ok(found) => Some(&self.changes[found].1),
            Err(_) => self.base.0.nodes.get(index),
        }
    }

    fn index_of(&self, id: NodeId) -> Option<usize> {
        self.base.0.index.get(&id).copied().or_else(|| {
            self.changes
                .iter()
                .find(|(at, node)| *at >= self.base.0.nodes.len() && node.id == id)
                .map(|(at, _)| *at)
        })
    }

    /// The node `id`, if known.
    pub fn node(&self, id: NodeId) -> Option<&NodeView> {
        self.get(self.index_of(id)?)
    }

    /// The deciding node, if known.
    pub fn local_node(&self) -> Option<&NodeView> {
        self.node(self.local)
    }

    /// The node `id`, to change in this view only (the snapshot stays as it is).
    pub fn node_mut(&mut self, id: NodeId) -> Option<&mut NodeView> {
        let index = self.index_of(id)?;
        let slot = match self.changes.binary_search_by_key(&index, |(at, _)| *at) {
            Ok(found) => found,
            Err(slot) => {
                self.changes.insert(slot, (index, self.base.0.nodes[index].clone()));
                slot
            }
        };
        Some(&mut self.changes[slot].1)
    }

    /// Replaces the node of `node.id` in this view, or adds it.
    pub fn upsert(&mut self, node: NodeView) {
        match self.node_mut(node.id) {
            Some(known) => *known = node,
            None => {
                let index = self.len();
                self.changes.push((index, node));
            }
        }
    }

    /// A view of the nodes that `keep` accepts (a new snapshot of them).
    pub fn filtered(&self, keep: impl Fn(&NodeView) -> bool) -> ClusterView {
        ClusterView::new(self.local, self.nodes().filter(|node| keep(node)).cloned().collect())
    }
}

/// The nodes of a [`ClusterView`], in order.
#[derive(Debug, Clone)]
pub struct Nodes<'a> {
    base: &'a [NodeView],
    changes: &'a [(usize, NodeView)],
    next: usize,
}

impl<'a> Iterator for Nodes<'a> {
    type Item = &'a NodeView;

    fn next(&mut self) -> Option<&'a NodeView> {
        let index = self.next;
        if let Some(((at, node), rest)) = self.changes.split_first() {
            if *at == index {
                self.changes = rest;
                self.next += 1;
                return Some(node);
            }
        }
        let node = self.base.get(index)?;
        self.next += 1;
        Some(node)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let base = self.base.len().saturating_sub(self.next);
        let added = self.changes.iter().filter(|(at, _)| *at >= self.base.len()).count();
        (base + added, Some(base + added))
    }
}

impl ExactSizeIterator for Nodes<'_> {}

pub use manta_proto::raylet::{LabelMatch, SchedulingStrategy};

/// The outcome of a scheduling decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Run it on this node (which has the resources free now).
    Scheduled(NodeId),
    /// Some node could run it, but none has the resources free now: queue and retry.
    Retry,
    /// No live node could ever run it (or the node it must run on is gone).
    Infeasible,
}

/// A source of randomness, passed in so decisions replay exactly from a seed.
pub trait RandomSource {
    /// A uniformly random number below `bound` (which is at least 1).
    fn below(&mut self, bound: usize) -> usize;
}

/// SplitMix64: small, fast and good enough to break ties among nodes.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl RandomSource for SplitMix64 {
    fn below(&mut self, bound: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z % bound.max(1) as u64) as usize
    }
}

/// What one scheduling decision is about.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// What it needs where it runs.
    pub demand: &'a ResourceSet,
    /// Where the user asked it to run.
    pub strategy: &'a SchedulingStrategy,
    /// The bytes of its arguments by the node whose store holds them (what a locality-aware
    /// policy weighs; empty when unknown, as for an actor).
    pub arguments: &'a [(NodeId, u64)],
}

impl<'a> Request<'a> {
    /// A request for `demand` under `strategy`, with no argument locations.
    pub fn new(demand: &'a ResourceSet, strategy: &'a SchedulingStrategy) -> Self {
        Request { demand, strategy, arguments: &[] }
    }
}

/// A scheduling policy: which node runs a task or an actor, and where a placement group's
/// bundles go. Implement it in your own crate, register it by name with
/// [`register_policy!`](crate::register_policy), and select it with `Config::scheduler` or
/// `manta start --scheduler NAME`; the simulator runs it unchanged.
pub trait SchedulingPolicy {
    /// Decides where `request` runs, on the cluster as this node sees it.
    fn schedule(
        &mut self,
        request: &Request<'_>,
        cluster: &ClusterView,
        random: &mut dyn RandomSource,
    ) -> Decision;

    /// Places a placement group's `bundles` (those not placed yet) under `strategy`: the node
    /// of each, in order, or `None` when they cannot all be placed on the free resources now.
    /// `placed` are the nodes already holding the group's other bundles (after a node's death,
    /// only its bundles are placed again). The default is [`place_bundles`].
    fn place_bundles(
        &mut self,
        bundles: &[BundleDemand],
        strategy: PlacementStrategy,
        placed: &[NodeId],
        cluster: &ClusterView,
    ) -> Option<Vec<NodeId>> {
        place_bundles(bundles, strategy, placed, cluster)
    }
}

/// One bundle to place: its resources, and the conditions on the labels of its node (Ray's
/// per-bundle label selector; none: any node).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BundleDemand {
    /// What it reserves.
    pub resources: ResourceSet,
    /// Conditions its node's labels must meet.
    pub labels: Vec<LabelMatch>,
}

impl From<ResourceSet> for BundleDemand {
    fn from(resources: ResourceSet) -> Self {
        BundleDemand { resources, labels: Vec::new() }
    }
}

impl BundleDemand {
    /// Whether `node` could take this bundle now.
    pub fn fits(&self, node: &NodeView) -> bool {
        node.alive
            && node.resources.available.contains(&self.resources)
            && self.labels.iter().all(|condition| condition.matches(&node.labels))
    }
}

pub use manta_proto::placement::PlacementStrategy;

/// Ray's bundle placement: `STRICT_PACK` on one node that fits them all (the one already
/// holding the group's bundles, if any); `PACK` on as few nodes as possible (a node already
/// used first, else the least used that fits); `STRICT_SPREAD` each on a node of its own, none
/// shared with the group's other bundles; `SPREAD` on a node the group does not use yet when
/// one fits, else on any that fits. Ties go to the least used node, then the lowest id, so a
/// placement is the same for the same view.
pub fn place_bundles(
    bundles: &[BundleDemand],
    strategy: PlacementStrategy,
    placed: &[NodeId],
    cluster: &ClusterView,
) -> Option<Vec<NodeId>> {
    // Each live node's free resources, taken from as bundles are placed.
    let mut free: Vec<NodeResources> = Vec::new();
    let mut ids: Vec<NodeId> = Vec::new();
    let mut labels: Vec<&[(String, String)]> = Vec::new();
    for node in cluster.nodes().filter(|node| node.alive) {
        ids.push(node.id);
        free.push(node.resources.clone());
        labels.push(&node.labels);
    }
    let labels_fit = |bundle: &BundleDemand, index: usize| {
        bundle.labels.iter().all(|condition| condition.matches(labels[index]))
    };
    let mut used: Vec<NodeId> = placed.to_vec();
    let least_used = |free: &[NodeResources], candidates: &mut dyn Iterator<Item = usize>| {
        candidates.min_by(|a, b| {
            free[*a].utilization().total_cmp(&free[*b].utilization()).then(ids[*a].cmp(&ids[*b]))
        })
    };
    if strategy == PlacementStrategy::StrictPack {
        let mut sum = ResourceSet::new();
        bundles.iter().for_each(|bundle| sum.add(&bundle.resources));
        let fits = |index: &usize| {
            free[*index].available.contains(&sum) && bundles.iter().all(|bundle| labels_fit(bundle, *index))
        };
        let node = match used.first() {
            Some(node) => ids.iter().position(|id| id == node).filter(fits)?,
            None => least_used(&free, &mut (0..ids.len()).filter(fits))?,
        };
        return Some(vec![ids[node]; bundles.len()]);
    }
    let mut chosen = Vec::with_capacity(bundles.len());
    for bundle in bundles {
        let fits: Vec<usize> = (0..ids.len())
            .filter(|index| free[*index].available.contains(&bundle.resources) && labels_fit(bundle, *index))
            .collect();
        let fresh = || fits.iter().copied().filter(|index| !used.contains(&ids[*index]));
        let node = match strategy {
            PlacementStrategy::Pack => {
                // The first node the group already uses that fits, else the least used.
                used.iter()
                    .find_map(|node| fits.iter().copied().find(|index| ids[*index] == *node))
                    .or_else(|| least_used(&free, &mut fits.iter().copied()))
            }
            PlacementStrategy::StrictSpread => least_used(&free, &mut fresh()),
            PlacementStrategy::Spread => {
                least_used(&free, &mut fresh()).or_else(|| least_used(&free, &mut fits.iter().copied()))
            }
            PlacementStrategy::StrictPack => unreachable!("placed above"),
        }?;
        free[node].available.saturating_take(&bundle.resources);
        used.push(ids[node]);
        chosen.push(ids[node]);
    }
    Some(chosen)
}

impl<P: SchedulingPolicy + ?Sized> SchedulingPolicy for Box<P> {
    fn schedule(
        &mut self,
        request: &Request<'_>,
        cluster: &ClusterView,
        random: &mut dyn RandomSource,
    ) -> Decision {
        (**self).schedule(request, cluster, random)
    }

    fn place_bundles(
        &mut self,
        bundles: &[BundleDemand],
        strategy: PlacementStrategy,
        placed: &[NodeId],
        cluster: &ClusterView,
    ) -> Option<Vec<NodeId>> {
        (**self).place_bundles(bundles, strategy, placed, cluster)
    }
}

/// Settings of [`DefaultPolicy`] (Ray's names and defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyConfig {
    /// Below this utilisation a node counts as idle (score 0) and work packs onto it.
    pub spread_threshold: f64,
    /// Busy nodes are picked at random among the best `max(top_k_fraction * N, top_k_absolute)`.
    pub top_k_fraction: f64,
    /// See `top_k_fraction`.
    pub top_k_absolute: usize,
    /// Keep CPU-only work off GPU nodes while other nodes can take it.
    pub avoid_gpu_nodes: bool,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig { spread_threshold: 0.5, top_k_fraction: 0.2, top_k_absolute: 1, avoid_gpu_nodes: true }
    }
}

/// The policy Manta ships: hybrid by default, spread, and node affinity.
#[derive(Debug, Clone, Default)]
pub struct DefaultPolicy {
    config: PolicyConfig,
    /// Where the last spread decision went, for round robin.
    spread_cursor: usize,
    /// Scratch space for a decision's candidates (kept: at ten thousand nodes, allocating it
    /// per decision costs more than filling it).
    plain: Vec<(f64, NodeId)>,
    gpu_nodes: Vec<(f64, NodeId)>,
}

impl DefaultPolicy {
    /// A policy with `config`.
    pub fn new(config: PolicyConfig) -> Self {
        DefaultPolicy { config, spread_cursor: 0, plain: Vec::new(), gpu_nodes: Vec::new() }
    }

    fn hybrid(
        &mut self,
        demand: &ResourceSet,
        cluster: &ClusterView,
        random: &mut dyn RandomSource,
    ) -> Decision {
        let below_threshold = |node: &NodeView| node.resources.utilization() < self.config.spread_threshold;
        // The local node when it is lightly used and would stay a candidate (CPU work on a GPU
        // node is one only when no other node has room): decided without looking further, as
        // the full decision below would decide it.
        if let Some(local) = cluster.local_node() {
            let gpu_kept = !self.config.avoid_gpu_nodes
                || !demand.get(GPU).is_zero()
                || local.resources.total.get(GPU).is_zero();
            if local.alive && gpu_kept && local.resources.available.contains(demand) && below_threshold(local)
            {
                return Decision::Scheduled(local.id);
            }
        }
        let score = |node: &NodeView| {
            let utilization = node.resources.utilization();
            if utilization < self.config.spread_threshold {
                0.0
            } else {
                utilization
            }
        };
        // One pass over the nodes with room, each scored once (a node's utilisation reads
        // every resource it has): CPU-only work keeps off GPU nodes while others have room.
        let avoid_gpus = self.config.avoid_gpu_nodes && demand.get(GPU).is_zero();
        let (mut plain, mut gpu_nodes) =
            (std::mem::take(&mut self.plain), std::mem::take(&mut self.gpu_nodes));
        plain.clear();
        gpu_nodes.clear();
        for node in available_nodes(demand, cluster) {
            let entry = (score(node), node.id);
            if avoid_gpus && !node.resources.total.get(GPU).is_zero() {
                gpu_nodes.push(entry);
            } else {
                plain.push(entry);
            }
        }
        let candidates = if plain.is_empty() { &mut gpu_nodes } else { &mut plain };
        let decision = if candidates.is_empty() {
            if feasible(demand, cluster) {
                Decision::Retry
            } else {
                Decision::Infeasible
            }
        } else if candidates.iter().any(|(score, id)| *id == cluster.local && *score == 0.0) {
            Decision::Scheduled(cluster.local)
        } else {
            let top_k = ((self.config.top_k_fraction * cluster.len() as f64) as usize)
                .max(self.config.top_k_absolute)
                .clamp(1, candidates.len());
            // The node at a random rank among the best `top_k`, by (score, id): a selection,
            // not a sort (the same node a sort would give; linear at ten thousand nodes).
            let rank = random.below(top_k);
            let (_, chosen, _) =
                candidates.select_nth_unstable_by(rank, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            Decision::Scheduled(chosen.1)
        };
        (self.plain, self.gpu_nodes) = (plain, gpu_nodes);
        decision
    }

    fn spread(&mut self, demand: &ResourceSet, cluster: &ClusterView) -> Decision {
        let count = cluster.len();
        for step in 0..count {
            let index = (self.spread_cursor + step) % count;
            let Some(node) = cluster.get(index) else { break };
            if node.alive && node.resources.available.contains(demand) {
                self.spread_cursor = index + 1;
                return Decision::Scheduled(node.id);
            }
        }
        if feasible(demand, cluster) {
            Decision::Retry
        } else {
            Decision::Infeasible
        }
    }
}

fn available_nodes<'a>(
    demand: &'a ResourceSet,
    cluster: &'a ClusterView,
) -> impl Iterator<Item = &'a NodeView> {
    cluster.nodes().filter(move |node| node.alive && node.resources.available.contains(demand))
}

fn feasible(demand: &ResourceSet, cluster: &ClusterView) -> bool {
    cluster.nodes().any(|node| node.alive && node.resources.total.contains(demand))
}

impl SchedulingPolicy for DefaultPolicy {
    fn schedule(
        &mut self,
        request: &Request<'_>,
        cluster: &ClusterView,
        random: &mut dyn RandomSource,
    ) -> Decision {
        let demand = request.demand;
        match request.strategy {
            // In a placement group, the demand names the group's resources (the submitter
            // rewrote it): only nodes holding its bundles have them.
            SchedulingStrategy::Hybrid | SchedulingStrategy::PlacementGroup { .. } => {
                self.hybrid(demand, cluster, random)
            }
            SchedulingStrategy::Spread => self.spread(demand, cluster),
            SchedulingStrategy::NodeAffinity { node, soft } => {
                let target = cluster.node(*node).filter(|view| view.alive);
                match target {
                    Some(view) if view.resources.available.contains(demand) => Decision::Scheduled(*node),
                    Some(view) if view.resources.total.contains(demand) && !soft => Decision::Retry,
                    _ if *soft => self.hybrid(demand, cluster, random),
                    _ => Decision::Infeasible,
                }
            }
            SchedulingStrategy::NodeLabels { hard, soft } => {
                // Ray's label scheduling: the nodes that meet the hard conditions, those that
                // also meet the soft ones first, each set scheduled as the default would.
                let meets = |node: &NodeView, conditions: &[LabelMatch]| {
                    conditions.iter().all(|condition| condition.matches(&node.labels))
                };
                let allowed = cluster.filtered(|node| meets(node, hard));
                if !soft.is_empty() {
                    let preferred = allowed.filtered(|node| meets(node, soft));
                    if let decision @ Decision::Scheduled(_) = self.hybrid(demand, &preferred, random) {
                        return decision;
                    }
                }
                self.hybrid(demand, &allowed, random)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{Quantity, CPU};
    use proptest::prelude::*;

    fn id(n: u8) -> NodeId {
        NodeId([n; 16])
    }

    fn node(n: u8, cpus: u64, free_cpus: u64, gpus: u64) -> NodeView {
        let total = ResourceSet::new().with(CPU, Quantity::units(cpus)).with(GPU, Quantity::units(gpus));
        let mut available = total.clone();
        available.set(CPU, Quantity::units(free_cpus));
        NodeView { id: id(n), resources: NodeResources { total, available }, alive: true, labels: Vec::new() }
    }

    fn cpus(n: u64) -> ResourceSet {
        ResourceSet::new().with(CPU, Quantity::units(n))
    }

    fn decide(strategy: SchedulingStrategy, demand: &ResourceSet, nodes: Vec<NodeView>) -> Decision {
        let cluster = ClusterView::new(id(1), nodes);
        DefaultPolicy::default().schedule(&Request::new(demand, &strategy), &cluster, &mut SplitMix64(7))
    }

    #[test]
    fn hybrid_packs_locally_while_the_local_node_is_lightly_used() {
        let nodes = vec![node(1, 8, 6, 0), node(2, 8, 8, 0), node(3, 8, 8, 0)];
        assert_eq!(decide(SchedulingStrategy::Hybrid, &cpus(1), nodes), Decision::Scheduled(id(1)));
    }

    #[test]
    fn hybrid_leaves_a_busy_local_node_for_an_idle_one() {
        let nodes = vec![node(1, 8, 2, 0), node(2, 8, 8, 0), node(3, 8, 1, 0)];
        assert_eq!(decide(SchedulingStrategy::Hybrid, &cpus(1), nodes), Decision::Scheduled(id(2)));
    }

    #[test]
    fn cpu_work_avoids_gpu_nodes_when_it_can() {
        let nodes = vec![node(1, 8, 8, 4), node(2, 8, 8, 0)];
        assert_eq!(decide(SchedulingStrategy::Hybrid, &cpus(1), nodes.clone()), Decision::Scheduled(id(2)));
        let gpu = ResourceSet::new().with(GPU, Quantity::units(1));
        assert_eq!(decide(SchedulingStrategy::Hybrid, &gpu, nodes), Decision::Scheduled(id(1)));
    }

    #[test]
    fn retry_when_busy_infeasible_when_impossible_or_dead() {
        let nodes = vec![node(1, 4, 0, 0), node(2, 4, 1, 0)];
        assert_eq!(decide(SchedulingStrategy::Hybrid, &cpus(2), nodes.clone()), Decision::Retry);
        assert_eq!(decide(SchedulingStrategy::Hybrid, &cpus(5), nodes.clone()), Decision::Infeasible);
        let mut dead = nodes;
        dead.iter_mut().for_each(|node| node.alive = false);
        assert_eq!(decide(SchedulingStrategy::Hybrid, &cpus(1), dead), Decision::Infeasible);
    }

    #[test]
    fn node_affinity_hard_and_soft() {
        let nodes = vec![node(1, 4, 4, 0), node(2, 4, 0, 0)];
        let hard = SchedulingStrategy::NodeAffinity { node: id(2), soft: false };
        let soft = SchedulingStrategy::NodeAffinity { node: id(2), soft: true };
        assert_eq!(decide(hard, &cpus(1), nodes.clone()), Decision::Retry);
        assert_eq!(decide(soft, &cpus(1), nodes.clone()), Decision::Scheduled(id(1)));
        let gone = SchedulingStrategy::NodeAffinity { node: id(9), soft: false };
        assert_eq!(decide(gone, &cpus(1), nodes), Decision::Infeasible);
    }

    #[test]
    fn label_scheduling_keeps_to_hard_conditions_and_prefers_soft_ones() {
        let labelled = |n, free, zone: &str, gpu: Option<&str>| {
            let mut view = node(n, 4, free, 0);
            view.labels.push(("zone".into(), zone.into()));
            if let Some(gpu) = gpu {
                view.labels.push(("gpu".into(), gpu.into()));
            }
            view
        };
        let nodes =
            vec![labelled(1, 4, "a", None), labelled(2, 4, "b", Some("h200")), labelled(3, 4, "b", None)];
        let labels =
            |hard: Vec<LabelMatch>, soft: Vec<LabelMatch>| SchedulingStrategy::NodeLabels { hard, soft };
        let zone_b = labels(vec![LabelMatch::is_in("zone", ["b"])], Vec::new());
        assert!(
            matches!(decide(zone_b.clone(), &cpus(1), nodes.clone()), Decision::Scheduled(n) if n != id(1))
        );
        // Soft: among zone b, the node with a GPU label.
        let prefer_gpu =
            labels(vec![LabelMatch::is_in("zone", ["b"])], vec![LabelMatch::Exists { key: "gpu".into() }]);
        assert_eq!(decide(prefer_gpu.clone(), &cpus(1), nodes.clone()), Decision::Scheduled(id(2)));
        // The preferred node is full: another node meeting the hard conditions.
        let mut busy = nodes.clone();
        busy[1] = labelled(2, 0, "b", Some("h200"));
        assert_eq!(decide(prefer_gpu, &cpus(1), busy), Decision::Scheduled(id(3)));
        // NotIn, DoesNotExist; no node meets the conditions: infeasible; all busy: retry.
        let not_b = labels(vec![LabelMatch::not_in("zone", ["b"])], Vec::new());
        assert_eq!(decide(not_b, &cpus(1), nodes.clone()), Decision::Scheduled(id(1)));
        let no_gpu = labels(
            vec![LabelMatch::DoesNotExist { key: "gpu".into() }, LabelMatch::is_in("zone", ["b"])],
            Vec::new(),
        );
        assert_eq!(decide(no_gpu, &cpus(1), nodes.clone()), Decision::Scheduled(id(3)));
        let zone_c = labels(vec![LabelMatch::is_in("zone", ["c"])], Vec::new());
        assert_eq!(decide(zone_c, &cpus(1), nodes.clone()), Decision::Infeasible);
        let full = vec![labelled(1, 4, "a", None), labelled(2, 0, "b", None), labelled(3, 0, "b", None)];
        assert_eq!(decide(zone_b, &cpus(1), full), Decision::Retry);
    }

    #[test]
    fn bundles_are_placed_by_ray_s_four_strategies() {
        // Three nodes: 4, 2 and 2 CPUs free.
        let cluster = ClusterView::new(id(1), vec![node(1, 4, 4, 0), node(2, 2, 2, 0), node(3, 2, 2, 0)]);
        let one = [cpus(1), cpus(1)];
        let place = |bundles: &[ResourceSet], strategy, placed: &[NodeId]| {
            let bundles: Vec<BundleDemand> = bundles.iter().cloned().map(Into::into).collect();
            place_bundles(&bundles, strategy, placed, &cluster)
        };
        // PACK: one node while it fits; STRICT_PACK: one node or none.
        assert_eq!(place(&one, PlacementStrategy::Pack, &[]), Some(vec![id(1), id(1)]));
        assert_eq!(place(&[cpus(3), cpus(2)], PlacementStrategy::Pack, &[]), Some(vec![id(1), id(2)]));
        assert_eq!(place(&[cpus(2), cpus(2)], PlacementStrategy::StrictPack, &[]), Some(vec![id(1), id(1)]));
        assert_eq!(place(&[cpus(3), cpus(2)], PlacementStrategy::StrictPack, &[]), None, "no node has 5");
        // SPREAD: a node each while there are nodes; then shared. STRICT_SPREAD: or none.
        let three = [cpus(1), cpus(1), cpus(1)];
        let mut spread = place(&three, PlacementStrategy::Spread, &[]).unwrap();
        spread.sort();
        assert_eq!(spread, vec![id(1), id(2), id(3)]);
        assert_eq!(
            place(&vec![cpus(1); 4], PlacementStrategy::Spread, &[]).map(|nodes| nodes.len()),
            Some(4)
        );
        assert_eq!(
            place(&vec![cpus(1); 4], PlacementStrategy::StrictSpread, &[]),
            None,
            "4 bundles, 3 nodes"
        );
        // A lost bundle of a STRICT_SPREAD group goes to a node the group does not use.
        assert_eq!(place(&[cpus(1)], PlacementStrategy::StrictSpread, &[id(1), id(2)]), Some(vec![id(3)]));
        // One of a STRICT_PACK group goes where the others are, or waits.
        assert_eq!(place(&[cpus(3)], PlacementStrategy::StrictPack, &[id(2)]), None);
        assert_eq!(place(&[cpus(1)], PlacementStrategy::StrictPack, &[id(2)]), Some(vec![id(2)]));
        // A bundle's label selector keeps it to the nodes that meet it.
        let mut labelled = cluster.clone();
        labelled.node_mut(id(2)).unwrap().labels.push(("zone".into(), "b".into()));
        let in_b = BundleDemand { resources: cpus(1), labels: vec![LabelMatch::is_in("zone", ["b"])] };
        assert_eq!(
            place_bundles(std::slice::from_ref(&in_b), PlacementStrategy::Pack, &[], &labelled),
            Some(vec![id(2)])
        );
        let two_in_b = [in_b.clone(), in_b];
        assert_eq!(place_bundles(&two_in_b, PlacementStrategy::StrictSpread, &[], &labelled), None);
        // Dead nodes are never chosen.
        let mut dead = cluster.clone();
        dead.node_mut(id(1)).unwrap().alive = false;
        assert_eq!(place_bundles(&[cpus(3).into()], PlacementStrategy::Pack, &[], &dead), None);
    }

    #[test]
    fn spread_goes_round_robin_over_nodes_with_room() {
        let cluster = ClusterView::new(id(1), vec![node(1, 4, 4, 0), node(2, 4, 0, 0), node(3, 4, 4, 0)]);
        let mut policy = DefaultPolicy::default();
        let mut random = SplitMix64(1);
        let picks: Vec<Decision> = (0..4)
            .map(|_| {
                policy.schedule(&Request::new(&cpus(1), &SchedulingStrategy::Spread), &cluster, &mut random)
            })
            .collect();
        let expected = [1, 3, 1, 3].map(|n| Decision::Scheduled(id(n)));
        assert_eq!(picks, expected);
    }

    fn any_cluster() -> impl Strategy<Value = Vec<NodeView>> {
        proptest::collection::vec((1u64..16, 0u64..16, 0u64..3, any::<bool>()), 1..12).prop_map(|nodes| {
            nodes
                .into_iter()
                .enumerate()
                .map(|(index, (cpus, free, gpus, alive))| {
                    let mut view = node(index as u8 + 1, cpus, free.min(cpus), gpus);
                    view.alive = alive;
                    view
                })
                .collect()
        })
    }

    proptest! {
        /// Whatever the cluster: a scheduled node is alive with the demand free; Retry means some
        /// live node could hold it; Infeasible means none could; and a seed replays exactly.
        #[test]
        fn decisions_are_sound_and_replay(nodes in any_cluster(), want in 0u64..20, seed in any::<u64>(), spread in any::<bool>()) {
            let demand = cpus(want);
            let cluster = ClusterView::new(id(1), nodes);
            let strategy = if spread { SchedulingStrategy::Spread } else { SchedulingStrategy::Hybrid };
            let request = Request::new(&demand, &strategy);
            let decision = DefaultPolicy::default().schedule(&request, &cluster, &mut SplitMix64(seed));
            let again = DefaultPolicy::default().schedule(&request, &cluster, &mut SplitMix64(seed));
            prop_assert_eq!(decision, again);
            let some_node_fits_now = cluster.nodes().any(|node| node.alive && node.resources.available.contains(&demand));
            let some_node_fits_ever = cluster.nodes().any(|node| node.alive && node.resources.total.contains(&demand));
            match decision {
                Decision::Scheduled(chosen) => {
                    let node = cluster.node(chosen).unwrap();
                    prop_assert!(node.alive && node.resources.available.contains(&demand));
                }
                Decision::Retry => prop_assert!(!some_node_fits_now && some_node_fits_ever),
                Decision::Infeasible => prop_assert!(!some_node_fits_ever),
            }
        }
    }
}
