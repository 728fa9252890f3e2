//! Scheduling policies by name: the registry a daemon or an embedded cluster picks its policy
//! from (`Config::scheduler`, `manta start --scheduler NAME`), and the policies Manta ships
//! besides the default: `binpack` (fewest nodes busy) and `locality` (the node holding most of
//! the task's argument bytes).
//!
//! A policy of one's own is a [`SchedulingPolicy`] impl registered with
//! [`register_policy!`](crate::register_policy) in any crate linked into the binary (force the
//! link with `use the_crate as _;`: a crate only registered through `inventory` and never
//! referenced is dropped by the linker, with an empty registry and no error).

use manta_transport::NodeId;

use crate::policy::{
    place_bundles, BundleDemand, ClusterView, Decision, DefaultPolicy, NodeView, PlacementStrategy,
    RandomSource, Request, SchedulingPolicy, SchedulingStrategy,
};
use crate::resources::ResourceSet;

/// A scheduling policy, boxed: what the raylet and the placement-group manager run.
pub type BoxedPolicy = Box<dyn SchedulingPolicy + Send>;

/// One registered policy.
pub struct PolicyEntry {
    /// Its name (`--scheduler NAME`).
    pub name: &'static str,
    /// What it does, in a line (`manta start --help` lists it).
    pub about: &'static str,
    /// Makes a fresh one (each raylet has its own).
    pub make: fn() -> BoxedPolicy,
}

inventory::collect!(PolicyEntry);

/// Registers a scheduling policy under a name:
/// `manta::register_policy!("mine", "what it does", || Box::new(MyPolicy::default()));`
#[macro_export]
macro_rules! register_policy {
    ($name:expr, $about:expr, $make:expr) => {
        $crate::__inventory::submit! {
            $crate::policies::PolicyEntry { name: $name, about: $about, make: $make }
        }
    };
}

register_policy!("hybrid", "Ray's default: the local node while lightly used, then the least used", || {
    Box::new(DefaultPolicy::default())
});
register_policy!("binpack", "fewest nodes busy: the most used node that fits", || Box::new(
    BinPackPolicy::default()
));
register_policy!("locality", "the node holding most of the task's argument bytes, then hybrid", || {
    Box::new(LocalityPolicy::default())
});

/// The policy registered as `name`, or the names there are.
pub fn policy_named(name: &str) -> Result<BoxedPolicy, String> {
    match inventory::iter::<PolicyEntry>.into_iter().find(|entry| entry.name == name) {
        Some(entry) => Ok((entry.make)()),
        None => {
            Err(format!("no scheduling policy named {name:?} (there are: {})", policy_names().join(", ")))
        }
    }
}

/// The registered policies' names, sorted.
pub fn policy_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> =
        inventory::iter::<PolicyEntry>.into_iter().map(|entry| entry.name).collect();
    names.sort_unstable();
    names
}

/// Bin packing: default-strategy work goes to the most used node that has room (ties: the
/// lowest id), so as few nodes as possible are busy and the others stay free for big work or
/// to be scaled away; bundles pack likewise. Every other strategy is decided as the default
/// policy decides it.
#[derive(Debug, Default)]
pub struct BinPackPolicy {
    default: DefaultPolicy,
}

/// The most used node among `nodes` (ties: the lowest id).
fn most_used<'a>(nodes: impl Iterator<Item = &'a NodeView>) -> Option<&'a NodeView> {
    nodes.max_by(|a, b| a.resources.utilization().total_cmp(&b.resources.utilization()).then(b.id.cmp(&a.id)))
}

fn with_room<'a>(demand: &'a ResourceSet, cluster: &'a ClusterView) -> impl Iterator<Item = &'a NodeView> {
    cluster.nodes().filter(move |node| node.alive && node.resources.available.contains(demand))
}

fn feasible(demand: &ResourceSet, cluster: &ClusterView) -> Decision {
    if cluster.nodes().any(|node| node.alive && node.resources.total.contains(demand)) {
        Decision::Retry
    } else {
        Decision::Infeasible
    }
}

impl SchedulingPolicy for BinPackPolicy {
    fn schedule(
        &mut self,
        request: &Request<'_>,
        cluster: &ClusterView,
        random: &mut dyn RandomSource,
    ) -> Decision {
        if !matches!(request.strategy, SchedulingStrategy::Hybrid | SchedulingStrategy::PlacementGroup { .. })
        {
            return self.default.schedule(request, cluster, random);
        }
        match most_used(with_room(request.demand, cluster)) {
            Some(node) => Decision::Scheduled(node.id),
            None => feasible(request.demand, cluster),
        }
    }

    fn place_bundles(
        &mut self,
        bundles: &[BundleDemand],
        strategy: PlacementStrategy,
        placed: &[NodeId],
        cluster: &ClusterView,
    ) -> Option<Vec<NodeId>> {
        if strategy != PlacementStrategy::Pack {
            return place_bundles(bundles, strategy, placed, cluster);
        }
        // PACK onto the most used nodes first.
        let mut view = cluster.clone();
        let mut chosen = Vec::with_capacity(bundles.len());
        for bundle in bundles {
            let node = most_used(view.nodes().filter(|node| bundle.fits(node)))?.id;
            if let Some(view) = view.node_mut(node) {
                view.resources.available.saturating_take(&bundle.resources);
            }
            chosen.push(node);
        }
        Some(chosen)
    }
}

/// Locality first: default-strategy work goes to the node with room that holds most of its
/// argument bytes (Ray's submitter asks that node first; this decides so at every raylet too);
/// work whose arguments are nowhere with room is decided as the default policy decides it.
#[derive(Debug, Default)]
pub struct LocalityPolicy {
    default: DefaultPolicy,
}

impl SchedulingPolicy for LocalityPolicy {
    fn schedule(
        &mut self,
        request: &Request<'_>,
        cluster: &ClusterView,
        random: &mut dyn RandomSource,
    ) -> Decision {
        if matches!(request.strategy, SchedulingStrategy::Hybrid) {
            let bytes = |node: &NodeView| {
                request
                    .arguments
                    .iter()
                    .filter(|(at, _)| *at == node.id)
                    .map(|(_, bytes)| *bytes)
                    .sum::<u64>()
            };
            let best = with_room(request.demand, cluster)
                .map(|node| (bytes(node), node))
                .filter(|(bytes, _)| *bytes > 0)
                .max_by(|(a, left), (b, right)| a.cmp(b).then(right.id.cmp(&left.id)));
            if let Some((_, node)) = best {
                return Decision::Scheduled(node.id);
            }
        }
        self.default.schedule(request, cluster, random)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::SplitMix64;
    use crate::resources::{NodeResources, Quantity, CPU};

    fn id(n: u8) -> NodeId {
        NodeId([n; 16])
    }

    fn cpus(n: u64) -> ResourceSet {
        ResourceSet::new().with(CPU, Quantity::units(n))
    }

    fn node(n: u8, total: u64, free: u64) -> NodeView {
        NodeView {
            id: id(n),
            resources: NodeResources { total: cpus(total), available: cpus(free) },
            alive: true,
            labels: Vec::new(),
        }
    }

    fn cluster(nodes: Vec<NodeView>) -> ClusterView {
        ClusterView::new(id(1), nodes)
    }

    #[test]
    fn the_registry_has_the_shipped_policies_and_names_them_when_asked_for_another() {
        assert_eq!(policy_names(), vec!["binpack", "hybrid", "locality"]);
        assert!(policy_named("binpack").is_ok());
        let error = policy_named("fastest").err().unwrap();
        assert!(error.contains("binpack, hybrid, locality"), "{error}");
    }

    #[test]
    fn binpack_fills_the_busiest_node_that_fits_before_waking_another() {
        // Node 1 idle (local), node 2 half used, node 3 nearly full.
        let view = cluster(vec![node(1, 4, 4), node(2, 4, 2), node(3, 4, 1)]);
        let strategy = SchedulingStrategy::Hybrid;
        let decide = |demand: ResourceSet| {
            BinPackPolicy::default().schedule(&Request::new(&demand, &strategy), &view, &mut SplitMix64(1))
        };
        assert_eq!(decide(cpus(1)), Decision::Scheduled(id(3)));
        assert_eq!(decide(cpus(2)), Decision::Scheduled(id(2)), "node 3 has no room for 2");
        assert_eq!(decide(cpus(4)), Decision::Scheduled(id(1)));
        assert_eq!(decide(cpus(5)), Decision::Infeasible);
        // The default would have stayed local (node 1 is under half used).
        let default =
            DefaultPolicy::default().schedule(&Request::new(&cpus(1), &strategy), &view, &mut SplitMix64(1));
        assert_eq!(default, Decision::Scheduled(id(1)));
        // PACK bundles go to the busiest nodes first.
        let placed = BinPackPolicy::default().place_bundles(
            &[cpus(1).into(), cpus(2).into()],
            PlacementStrategy::Pack,
            &[],
            &view,
        );
        assert_eq!(placed, Some(vec![id(3), id(2)]));
    }

    #[test]
    fn locality_goes_where_the_argument_bytes_are_when_there_is_room() {
        let view = cluster(vec![node(1, 4, 4), node(2, 4, 2), node(3, 4, 0)]);
        let strategy = SchedulingStrategy::Hybrid;
        let decide = |arguments: &[(NodeId, u64)]| {
            let request = Request { demand: &cpus(1), strategy: &strategy, arguments };
            LocalityPolicy::default().schedule(&request, &view, &mut SplitMix64(1))
        };
        assert_eq!(decide(&[(id(1), 10), (id(2), 300)]), Decision::Scheduled(id(2)));
        // The heaviest node is full: the next heaviest with room.
        assert_eq!(decide(&[(id(3), 900), (id(2), 300)]), Decision::Scheduled(id(2)));
        // No argument anywhere with room: the default decides (the idle local node).
        assert_eq!(decide(&[(id(3), 900)]), Decision::Scheduled(id(1)));
        assert_eq!(decide(&[]), Decision::Scheduled(id(1)));
    }
}
