//! Placement groups across nodes, as Ray's own tests check them: PACK keeps bundles on one
//! node; STRICT_PACK larger than any node and STRICT_SPREAD with more bundles than nodes stay
//! pending, and the latter is placed once a node joins; SPREAD puts an actor per bundle on
//! each node; removing a group kills its actors and gives its resources back; a node's death
//! reschedules only its bundles; a detached group outlives its job, another is removed with it.
//!
//! One test in this file: a worker re-executes this binary, and must only become a worker.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use manta::cluster_utils::{Cluster, NodeSpec, Removal};
use manta::{PlacementGroupOptions, PlacementGroupState, PlacementStrategy};

use support::eventually;

mod support;

#[manta::actor]
struct Where {}

#[manta::actor]
impl Where {
    fn new() -> Self {
        Where {}
    }

    fn node(&self) -> String {
        manta::get_runtime_context().unwrap().node_id.to_string()
    }
}

/// Set for the second driver this test starts.
const SECOND_DRIVER: &str = "MANTA_TEST_PG_SECOND_DRIVER";

fn state_of(name: &str) -> Option<PlacementGroupState> {
    manta::state::list_placement_groups()
        .unwrap()
        .into_iter()
        .filter(|info| info.spec.name == name)
        .map(|info| info.state)
        .next_back()
}

#[test]
fn placement_groups_across_nodes_behave_as_ray_s() {
    if manta::is_worker_process() {
        let _ = manta::init();
        unreachable!("init never returns in a worker");
    }
    if std::env::var_os(SECOND_DRIVER).is_some() {
        // A job that makes a detached group and another, then ends.
        let config = manta::Config { address: Some("auto".to_owned()), ..manta::Config::default() };
        let _driver = manta::init_with(config).unwrap();
        let named = |name: &str, lifetime| PlacementGroupOptions {
            name: name.into(),
            lifetime,
            ..Default::default()
        };
        let kept = manta::placement_group_with(
            [[("CPU", 0.5)]],
            PlacementStrategy::Pack,
            named("kept", manta::Lifetime::Detached),
        );
        let gone = manta::placement_group_with(
            [[("CPU", 0.5)]],
            PlacementStrategy::Pack,
            named("gone", manta::Lifetime::Job),
        );
        kept.unwrap().ready().unwrap().get_timeout(Duration::from_secs(60)).unwrap();
        gone.unwrap().ready().unwrap().get_timeout(Duration::from_secs(60)).unwrap();
        println!("second driver: both groups ready");
        std::process::exit(0);
    }
    let quick = ["--health-check-period-ms", "200", "--health-check-timeout-ms", "200"];
    let head = NodeSpec::new().num_cpus(2).args(quick).args(["--health-check-failure-threshold", "3"]);
    let mut cluster = Cluster::start(env!("CARGO_BIN_EXE_manta"), head).unwrap();
    for _ in 0..2 {
        cluster.add_node(NodeSpec::new().num_cpus(2)).unwrap();
    }
    cluster.wait_for_nodes(3, Duration::from_secs(60)).unwrap();
    // SAFETY (of the environment): set before any other thread of this test reads it.
    std::env::set_var("MANTA_TEMP_DIR", &cluster.head().root);
    let config = manta::Config { address: Some("auto".to_owned()), ..manta::Config::default() };
    let _driver = manta::init_with(config).unwrap();

    // PACK: both bundles on one node (it fits them); removing it gives the CPUs back.
    let pack = manta::placement_group([[("CPU", 1.0)], [("CPU", 1.0)]], PlacementStrategy::Pack).unwrap();
    pack.ready().unwrap().get_timeout(Duration::from_secs(60)).unwrap();
    let nodes = pack.info().unwrap().nodes;
    assert!(nodes[0].is_some() && nodes[0] == nodes[1], "{nodes:?}");
    manta::remove_placement_group(&pack).unwrap();
    eventually("the PACK group's CPUs came back", || {
        manta::available_resources().unwrap().get("CPU") == Some(&6.0)
    });

    // Larger than any node, or more bundles than nodes: pending, not failed.
    let too_big = manta::placement_group([[("CPU", 3.0)]], PlacementStrategy::StrictPack).unwrap();
    let four = [[("CPU", 1.0)], [("CPU", 1.0)], [("CPU", 1.0)], [("CPU", 1.0)]];
    let strict_spread = manta::placement_group(four, PlacementStrategy::StrictSpread).unwrap();
    assert!(!too_big.wait(Duration::from_millis(300)).unwrap());
    assert!(!strict_spread.wait(Duration::from_millis(300)).unwrap());
    assert_eq!(strict_spread.info().unwrap().state, PlacementGroupState::Pending);

    // SPREAD: one bundle per node, and an actor per bundle lands on its bundle's node.
    let spread =
        manta::placement_group([[("CPU", 1.0)], [("CPU", 1.0)], [("CPU", 1.0)]], PlacementStrategy::Spread)
            .unwrap();
    spread.ready().unwrap().get_timeout(Duration::from_secs(60)).unwrap();
    let placed = spread.info().unwrap().nodes;
    assert_eq!(placed.iter().collect::<BTreeSet<_>>().len(), 3, "one bundle per node: {placed:?}");
    let actors: Vec<_> = (0..3)
        .map(|index| Where::options().placement_group(&spread, Some(index)).remote().unwrap())
        .collect();
    for (index, actor) in actors.iter().enumerate() {
        assert_eq!(actor.node().get().unwrap(), placed[index].unwrap().to_string(), "bundle {index}");
    }

    // A fourth node: the STRICT_SPREAD group fits now (one free CPU on each of four nodes).
    let fourth = cluster.add_node(NodeSpec::new().num_cpus(2)).unwrap();
    assert!(strict_spread.wait(Duration::from_secs(60)).unwrap());
    let on_four = strict_spread.info().unwrap().nodes;
    assert_eq!(on_four.iter().collect::<BTreeSet<_>>().len(), 4);
    assert!(on_four.contains(&Some(fourth.id)));

    // The fourth node dies: only its bundle is placed again, once a node that can take it
    // (one the group does not use yet) joins.
    cluster.remove_node(&fourth.id, Removal::Kill).unwrap();
    eventually("the group is rescheduling", || {
        strict_spread.info().unwrap().state == PlacementGroupState::Rescheduling
    });
    let kept: Vec<_> = strict_spread.info().unwrap().nodes.into_iter().flatten().collect();
    assert_eq!(kept.len(), 3, "the other bundles stay where they are");
    let fifth = cluster.add_node(NodeSpec::new().num_cpus(2)).unwrap();
    eventually("the group is created again", || {
        strict_spread.info().unwrap().state == PlacementGroupState::Created
    });
    let again = strict_spread.info().unwrap().nodes;
    assert!(
        again.contains(&Some(fifth.id)) && kept.iter().all(|node| again.contains(&Some(*node))),
        "{again:?}"
    );

    // Removing the SPREAD group kills its actors, saying why; its CPUs come back.
    // (Killing a worker takes a moment: a call sent meanwhile may still be answered.)
    manta::remove_placement_group(&spread).unwrap();
    for actor in &actors {
        let mut error = None;
        eventually("the group's actor died", || {
            error = actor.node().get_timeout(Duration::from_secs(60)).err();
            error.is_some()
        });
        let error = error.unwrap();
        assert!(error.to_string().contains("was removed"), "{error}");
    }
    manta::remove_placement_group(&too_big).unwrap();
    manta::remove_placement_group(&strict_spread).unwrap();
    // 4 live nodes of 2 CPUs each.
    eventually("every CPU came back", || manta::available_resources().unwrap().get("CPU") == Some(&8.0));

    // A detached group outlives its job; the job's other group goes with it.
    let second = Command::new(std::env::current_exe().unwrap())
        .args(["placement_groups_across_nodes_behave_as_ray_s", "--exact", "--nocapture"])
        .env(SECOND_DRIVER, "1")
        .env("MANTA_TEMP_DIR", &cluster.head().root)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&second.stdout);
    assert!(second.status.success() && said.contains("both groups ready"), "{said}");
    eventually("the job's group was removed with it", || {
        state_of("gone") == Some(PlacementGroupState::Removed)
    });
    assert_eq!(state_of("kept"), Some(PlacementGroupState::Created));
    let kept = manta::get_placement_group("kept").unwrap();
    manta::remove_placement_group(&kept).unwrap();
}
