//! Scheduling on four nodes, as Ray's tests check it: 2,000 `SPREAD` tasks run on every node;
//! hard node affinity runs only on its node, soft affinity to a dead node runs elsewhere and
//! hard affinity to it fails at once; label scheduling keeps to its hard conditions and prefers
//! its soft ones, and a placement group's bundles keep to their label selectors; a task needing
//! `{"node2": 1}` runs on node 2; a task needing what no node has waits, the driver is warned
//! with the demand named, and it runs as soon as a node that has it joins. A node whose store
//! is too small for all the copies it pulls evicts the least recently used (secondary copies
//! only) and reads on.
//!
//! One test in this file: a worker re-executes this binary, and must only become a worker.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use manta::cluster_utils::{Cluster, NodeSpec, Removal};
use manta::{LabelMatch, SchedulingStrategy};

mod support;

/// Where it ran.
#[manta::remote]
fn node_of() -> String {
    manta::get_runtime_context().unwrap().node_id.to_string()
}

/// Where it ran, after a pause.
#[manta::remote]
fn node_after(pause_ms: u64) -> String {
    std::thread::sleep(Duration::from_millis(pause_ms));
    manta::get_runtime_context().unwrap().node_id.to_string()
}

/// The sum of the bytes (read where the task runs: a copy is pulled there).
#[manta::remote]
fn weigh(bytes: Vec<u8>) -> u64 {
    bytes.iter().map(|byte| u64::from(*byte)).sum()
}

/// Copies evicted from the store of the node this task runs on.
#[manta::remote]
fn evicted_here() -> u64 {
    manta::object_store_stats().map_or(0, |stats| stats.evicted)
}

#[test]
fn four_nodes_spread_pin_and_wait_as_ray_does() {
    if manta::is_worker_process() {
        let _ = manta::init();
        unreachable!("init never returns in a worker");
    }
    let stderr = support::capture_stderr();
    // Quick health checks: a killed node is declared dead about a second after its death.
    let quick = ["--health-check-period-ms", "200", "--health-check-timeout-ms", "200"];
    let head = NodeSpec::new().num_cpus(1).args(quick).args(["--health-check-failure-threshold", "3"]);
    let mut cluster = Cluster::start(env!("CARGO_BIN_EXE_manta"), head).unwrap();
    let mut ids = vec![cluster.head().id.to_string()];
    // Labels: node 1 in zone a; nodes 2 and 3 in zone b, node 3 with a GPU label.
    for (index, zone) in [(1, "a"), (2, "b"), (3, "b")] {
        let mut spec = NodeSpec::new().num_cpus(1).resource(&format!("node{index}"), 1.0).label("zone", zone);
        if index == 3 {
            spec = spec.label("gpu", "h200");
        }
        let node = cluster.add_node(spec).unwrap();
        ids.push(node.id.to_string());
    }
    cluster.wait_for_nodes(4, Duration::from_secs(60)).unwrap();

    // SAFETY (of the environment): set before any other thread of this test reads it.
    std::env::set_var("MANTA_TEMP_DIR", &cluster.head().root);
    let config = manta::Config { address: Some("auto".to_owned()), ..manta::Config::default() };
    let _driver = manta::init_with(config).unwrap();

    // 2,000 spread tasks: every node runs some.
    // (Each takes 2 ms, so that the run outlasts the raylets' views catching up with the
    // last node to join: a node a view lacks gets no spread work.)
    let spread: Vec<_> = (0..2_000)
        .map(|_| node_after::options().scheduling_strategy(SchedulingStrategy::Spread).remote(2))
        .collect();
    let mut ran: BTreeMap<String, usize> = BTreeMap::new();
    for node in manta::get_all(&spread).unwrap() {
        *ran.entry(node).or_default() += 1;
    }
    assert_eq!(ran.values().sum::<usize>(), 2_000);
    assert_eq!(ran.keys().cloned().collect::<Vec<_>>(), sorted(&ids), "every node runs some: {ran:?}");

    // Hard affinity: only there.
    let on = |index: usize, soft: bool| SchedulingStrategy::NodeAffinity {
        node: ids[index].parse().unwrap(),
        soft,
    };
    let pinned: Vec<_> =
        (0..50).map(|_| node_of::options().scheduling_strategy(on(1, false)).remote()).collect();
    let places = manta::get_all(&pinned).unwrap();
    assert!(places.iter().all(|node| *node == ids[1]), "hard affinity to {}: {places:?} ({ids:?})", ids[1]);
    // A custom resource only node 2 has.
    let needs: Vec<_> = (0..20).map(|_| node_of::options().resources([("node2", 1.0)]).remote()).collect();
    assert!(manta::get_all(&needs).unwrap().iter().all(|node| *node == ids[2]));

    // Label scheduling: hard conditions keep work to zone b; a soft one prefers the GPU node.
    let zone_b =
        SchedulingStrategy::NodeLabels { hard: vec![LabelMatch::is_in("zone", ["b"])], soft: Vec::new() };
    let in_b: Vec<_> = (0..20).map(|_| node_of::options().scheduling_strategy(&zone_b).remote()).collect();
    assert!(manta::get_all(&in_b).unwrap().iter().all(|node| *node == ids[2] || *node == ids[3]));
    let prefer_gpu = SchedulingStrategy::NodeLabels {
        hard: vec![LabelMatch::Exists { key: "zone".into() }],
        soft: vec![LabelMatch::is_in("gpu", ["h200"])],
    };
    // A preference yields to a node the view shows busy (each raylet's view is up to 100 ms
    // old): once the cluster is idle again and the views have caught up, it is the GPU node.
    support::eventually("a task runs on the preferred node", || {
        node_of::options().scheduling_strategy(&prefer_gpu).remote().get().unwrap() == ids[3]
    });

    // A placement group whose bundles must be in zone b: one on each of nodes 2 and 3.
    let in_b = vec![LabelMatch::is_in("zone", ["b"])];
    let options =
        manta::PlacementGroupOptions { bundle_labels: vec![in_b.clone(), in_b], ..Default::default() };
    let bundles = [[("CPU", 0.5)], [("CPU", 0.5)]];
    let group =
        manta::placement_group_with(bundles, manta::PlacementStrategy::StrictSpread, options).unwrap();
    assert!(group.wait(Duration::from_secs(60)).unwrap());
    let nodes: std::collections::BTreeSet<String> =
        group.info().unwrap().nodes.iter().flatten().map(|node| node.to_string()).collect();
    assert_eq!(nodes, [ids[2].clone(), ids[3].clone()].into_iter().collect());
    manta::remove_placement_group(&group).unwrap();

    // Node 3 dies: soft affinity to it runs elsewhere; hard affinity to it fails at once.
    let dead = ids[3].parse().unwrap();
    cluster.remove_node(&dead, Removal::Kill).unwrap();
    cluster.wait_for_nodes(3, Duration::from_secs(60)).unwrap();
    let elsewhere = node_of::options().scheduling_strategy(on(3, true)).remote().get().unwrap();
    assert!(ids[..3].contains(&elsewhere), "soft affinity to a dead node ran on {elsewhere}");
    match node_of::options().scheduling_strategy(on(3, false)).remote().get_timeout(Duration::from_secs(60)) {
        Err(manta::TaskError::Infeasible { .. }) => {}
        other => panic!("hard affinity to a dead node: {other:?}"),
    }

    // What no node has: the task waits, and the driver is told what it waits for.
    let waiting = node_of::options().resources([("gpu_farm", 2.0)]).remote();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !stderr.lock().unwrap().lines().any(|line| {
        line.contains("Warning: the following resource request cannot be scheduled")
            && line.contains("2 gpu_farm")
    }) {
        assert!(Instant::now() < deadline, "no warning came: {}", stderr.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(matches!(waiting.get_timeout(Duration::from_millis(200)), Err(manta::TaskError::Timeout(_))));
    let farm = cluster.add_node(NodeSpec::new().num_cpus(1).resource("gpu_farm", 4.0)).unwrap();
    assert_eq!(waiting.get_timeout(Duration::from_secs(60)).unwrap(), farm.id.to_string());

    // A node with a 64 MiB store reads five 24 MB objects (their primaries here, all alive):
    // the copies pulled there do not all fit, and the least recently used make room.
    let small =
        NodeSpec::new().num_cpus(1).resource("small", 1.0).args(["--object-store-memory", "67108864"]);
    cluster.add_node(small).unwrap();
    let len = 24_000_000;
    let objects: Vec<_> = (1..=5u8).map(|fill| manta::put(vec![fill; len]).unwrap()).collect();
    for (index, object) in objects.iter().enumerate() {
        let sum = weigh::options().resources([("small", 1.0)]).remote(object).get().unwrap();
        assert_eq!(sum, (index as u64 + 1) * len as u64);
    }
    let evicted = evicted_here::options().resources([("small", 1.0)]).remote().get().unwrap();
    assert!(evicted >= 3, "copies evicted: {evicted}");
    // The first, evicted, is pulled again from its primary.
    assert_eq!(weigh::options().resources([("small", 1.0)]).remote(&objects[0]).get().unwrap(), len as u64);
}

fn sorted(ids: &[String]) -> Vec<String> {
    let mut ids = ids.to_vec();
    ids.sort();
    ids
}
