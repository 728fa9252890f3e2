//! Placement groups on the embedded cluster (one node, 4 CPUs), through real worker processes:
//! a group is reserved, its bundles hold their resources, work runs inside it, an index out of
//! range is refused at the call, a group that cannot fit stays pending, and removing a group
//! fails the work inside it and gives every resource back. The cases across nodes (the four
//! strategies, a node's death) are in `cli/tests/placement_groups.rs`.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use manta::{Config, PlacementGroupState, PlacementStrategy, TaskError};

fn cluster() {
    static CLUSTER: OnceLock<manta::Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let config = Config { num_cpus: 4, max_workers: Some(6), ..Config::default() };
        manta::init_with(config).unwrap()
    });
}

#[manta::remote]
fn echo(x: u64) -> u64 {
    x
}

/// The names of the resources the running task holds.
#[manta::remote]
fn held() -> Vec<String> {
    manta::get_runtime_context().unwrap().assigned_resources.into_iter().map(|(name, _)| name).collect()
}

/// What a child task (placed with no strategy of its own) holds.
#[manta::remote]
fn child_held() -> Vec<String> {
    held::remote().get().unwrap()
}

/// Says it runs (a file at `mark`), then runs until killed.
#[manta::remote]
fn hang(mark: String) -> u64 {
    std::fs::write(mark, b"running").unwrap();
    std::thread::sleep(Duration::from_secs(600));
    0
}

#[manta::actor]
struct Counter {
    count: u64,
}

#[manta::actor]
impl Counter {
    fn new() -> Self {
        Counter { count: 0 }
    }

    fn bump(&mut self) -> u64 {
        self.count += 1;
        self.count
    }

    /// What a task this actor submits (with no strategy of its own) holds.
    fn child_held(&self) -> Vec<String> {
        held::remote().get().unwrap()
    }
}

/// The node's free CPUs as it last reported them, once they equal `wanted` (the report
/// follows each change within moments).
fn free_cpus_become(wanted: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let free = manta::available_resources().unwrap().get("CPU").copied().unwrap_or(0.0);
        if free == wanted {
            return;
        }
        assert!(Instant::now() < deadline, "free CPUs stayed {free}, not {wanted}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_group_is_reserved_its_work_runs_inside_and_removal_gives_everything_back() {
    cluster();
    let pg = manta::placement_group([[("CPU", 1.0)], [("CPU", 2.0)]], PlacementStrategy::Pack).unwrap();
    pg.ready().unwrap().get_timeout(Duration::from_secs(60)).unwrap();
    let info = pg.info().unwrap();
    assert_eq!(info.state, PlacementGroupState::Created);
    assert!(info.nodes.iter().all(Option::is_some), "{info:?}");
    assert!(manta::state::list_placement_groups().unwrap().iter().any(|listed| listed.spec.id == pg.id()));

    // Work in the group, in a bundle and in any bundle; an actor in bundle 1.
    assert_eq!(echo::options().placement_group(&pg, Some(0)).remote(7).get().unwrap(), 7);
    assert_eq!(echo::options().placement_group(&pg, None).remote(8).get().unwrap(), 8);
    let counter = Counter::options().placement_group(&pg, Some(1)).remote().unwrap();
    assert_eq!(counter.bump().get_timeout(Duration::from_secs(60)).unwrap(), 1);
    // Bundle 0 has 1 CPU: a task asking for 2 of it waits (it never runs outside the group).
    let too_big = echo::options().placement_group(&pg, Some(0)).num_cpus(2.0).remote(9);
    assert!(matches!(too_big.get_timeout(Duration::from_millis(300)), Err(TaskError::Timeout(_))));
    assert!(manta::cancel(&too_big));
    // An index out of range fails at the call.
    match echo::options().placement_group(&pg, Some(2)).remote(1).get() {
        Err(TaskError::Invalid { reason, .. }) => assert!(reason.contains("out of range"), "{reason}"),
        other => panic!("bundle 2 of 2: {other:?}"),
    }
    // The strategy form (Ray's PlacementGroupSchedulingStrategy), with its index checked at
    // the call; with capture_child_tasks, a child that names no strategy goes in the group too.
    assert!(matches!(pg.strategy(Some(2), false), Err(TaskError::Invalid { .. })));
    let in_group = |names: &[String]| names.iter().all(|name| name.contains(&pg.id().to_string()));
    let captured = child_held::options().scheduling_strategy(pg.strategy(None, true).unwrap()).remote();
    let captured = captured.get_timeout(Duration::from_secs(60)).unwrap();
    assert!(!captured.is_empty() && in_group(&captured), "the child holds {captured:?}");
    // An actor placed with capture_child_tasks captures its methods' children too.
    let capturing =
        Counter::options().scheduling_strategy(pg.strategy(Some(1), true).unwrap()).remote().unwrap();
    let from_actor = capturing.child_held().get_timeout(Duration::from_secs(60)).unwrap();
    assert!(!from_actor.is_empty() && in_group(&from_actor), "the actor's child holds {from_actor:?}");
    let from_plain = counter.child_held().get_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(from_plain, vec!["CPU".to_owned()], "an actor placed without capture does not capture");
    let free = child_held::options().scheduling_strategy(pg.strategy(Some(1), false).unwrap()).remote();
    let free = free.get_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(free, vec!["CPU".to_owned()], "without capture the child holds plain CPUs");

    // The group's 3 CPUs are held (its own resources counted apart): 1 of the node's 4 is
    // left for other work.
    let actor_gone = counter.bump().get().unwrap();
    assert_eq!(actor_gone, 2);
    free_cpus_become(1.0);
    let total = manta::cluster_resources().unwrap();
    assert_eq!(total.get(&format!("CPU_group_{}", pg.id())).copied(), Some(3.0), "{total:?}");

    // Work running in the group fails when the group is removed, saying why.
    let mark = std::env::temp_dir().join(format!("manta-pg-hang-{}", std::process::id()));
    let _ = std::fs::remove_file(&mark);
    let hanging =
        hang::options().placement_group(&pg, Some(0)).max_retries(0).remote(mark.display().to_string());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !mark.exists() {
        assert!(Instant::now() < deadline, "the task in the group never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_file(&mark);
    manta::remove_placement_group(&pg).unwrap();
    let error = hanging.get_timeout(Duration::from_secs(60)).unwrap_err();
    assert!(error.to_string().contains("was removed"), "{error}");
    assert_eq!(pg.info().unwrap().state, PlacementGroupState::Removed);
    // Later work in it fails at once; its waiters are told.
    match echo::options().placement_group(&pg, None).remote(1).get_timeout(Duration::from_secs(60)) {
        Err(TaskError::Invalid { reason, .. }) => assert!(reason.contains("was removed"), "{reason}"),
        other => panic!("work in a removed group: {other:?}"),
    }
    assert!(pg.ready().unwrap().get_timeout(Duration::from_secs(60)).is_err());
    // Every CPU is back, and the group's resources are gone.
    free_cpus_become(4.0);
    assert!(manta::cluster_resources().unwrap().keys().all(|name| !name.contains("_group_")));
}

#[test]
fn a_group_that_cannot_fit_stays_pending_and_names_are_unique() {
    cluster();
    // Two bundles on distinct nodes, one node: pending (Ray's behaviour), not an error.
    let spread = manta::placement_group_with(
        [[("CPU", 1.0)], [("CPU", 1.0)]],
        PlacementStrategy::StrictSpread,
        manta::PlacementGroupOptions { name: "spread".into(), ..Default::default() },
    )
    .unwrap();
    assert!(!spread.wait(Duration::from_millis(500)).unwrap());
    assert_eq!(spread.info().unwrap().state, PlacementGroupState::Pending);
    assert_eq!(manta::get_placement_group("spread").unwrap(), spread);
    let taken = manta::placement_group_with(
        [[("CPU", 1.0)]],
        PlacementStrategy::Pack,
        manta::PlacementGroupOptions { name: "spread".into(), ..Default::default() },
    );
    assert!(matches!(taken, Err(TaskError::Invalid { reason, .. }) if reason.contains("already exists")));
    // Malformed groups are refused.
    let empty: [[(&str, f64); 0]; 1] = [[]];
    assert!(manta::placement_group(empty, PlacementStrategy::Pack).is_err());
    let none: [[(&str, f64); 1]; 0] = [];
    assert!(manta::placement_group(none, PlacementStrategy::Pack).is_err());
    assert!(manta::placement_group([[("CPU", -1.0)]], PlacementStrategy::Pack).is_err());
    // Removing it frees the name.
    manta::remove_placement_group(&spread).unwrap();
    assert!(manta::get_placement_group("spread").is_err());
}
