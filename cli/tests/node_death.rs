//! A node killed (`kill -9` of its raylet, whose workers die with it) during 500 retriable
//! tasks of a driver on the head: the tasks finish elsewhere with the right results, an actor
//! with a restart left answers again from the head, one without restarts fails naming the node,
//! a task without retries fails with `NodeDied` naming it, the GCS declares the node dead, and
//! an object whose only copy was there is lost (an error, not a hang). Work that needed the
//! dead node's resource waits until a node that has it joins.
//!
//! One test in this file: a worker re-executes this binary, and must only become a worker.

use std::time::{Duration, Instant};

use manta::cluster_utils::{Cluster, NodeSpec, Removal};

/// Doubles `x` after a pause (long enough that the node dies with some of them running).
#[manta::remote]
fn double_later(x: u64, pause_ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(pause_ms));
    x * 2
}

/// Says it runs (a file at `mark`), then runs longer than the test.
#[manta::remote]
fn mark_and_hang(mark: String) -> u64 {
    std::fs::write(mark, b"running").unwrap();
    std::thread::sleep(Duration::from_secs(600));
    0
}

/// Where it ran.
#[manta::remote]
fn node_of() -> String {
    manta::get_runtime_context().unwrap().node_id.to_string()
}

/// A large value made where the task runs (its only copy stays there until someone reads it).
#[manta::remote]
fn make(len: usize) -> Vec<u8> {
    vec![1; len]
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

    fn node(&self) -> String {
        manta::get_runtime_context().unwrap().node_id.to_string()
    }
}

#[test]
fn a_killed_node_loses_no_retriable_work_and_its_losses_are_errors() {
    if manta::is_worker_process() {
        let _ = manta::init();
        unreachable!("init never returns in a worker");
    }
    // Quick health checks: the node is declared dead about a second after its death.
    let quick = ["--health-check-period-ms", "200", "--health-check-timeout-ms", "200"];
    let head = NodeSpec::new().num_cpus(2).args(quick).args(["--health-check-failure-threshold", "3"]);
    let mut cluster = Cluster::start(env!("CARGO_BIN_EXE_manta"), head).unwrap();
    let doomed = cluster.add_node(NodeSpec::new().num_cpus(2).resource("doomed", 100.0)).unwrap();
    let doomed_id = doomed.id.to_string();

    // SAFETY (of the environment): set before any other thread of this test reads it.
    std::env::set_var("MANTA_TEMP_DIR", &cluster.head().root);
    let config = manta::Config { address: Some("auto".to_owned()), ..manta::Config::default() };
    let _driver = manta::init_with(config).unwrap();

    let on_doomed = manta::SchedulingStrategy::NodeAffinity { node: doomed_id.parse().unwrap(), soft: true };
    // Both actors live on the doomed node (soft affinity: a restart may go elsewhere).
    let restartable = Counter::options().scheduling_strategy(&on_doomed).max_restarts(1).remote().unwrap();
    let mortal = Counter::options().scheduling_strategy(on_doomed).max_restarts(0).remote().unwrap();
    assert_eq!(restartable.node().get().unwrap(), doomed_id);
    assert_eq!(mortal.node().get().unwrap(), doomed_id);
    assert_eq!(restartable.bump().get().unwrap(), 1);
    // An object whose only copy is in the doomed node's store.
    let stranded = make::options().resources([("doomed", 1.0)]).remote(1 << 20);
    manta::wait(std::slice::from_ref(&stranded), 1, None).unwrap();
    // Work spread over both nodes, some of it running when the node dies.
    let spread = manta::SchedulingStrategy::Spread;
    let doubled: Vec<_> =
        (0..500u64).map(|x| double_later::options().scheduling_strategy(&spread).remote(x, 10)).collect();
    let ran_there = node_of::options().resources([("doomed", 1.0)]).remote().get().unwrap();
    assert_eq!(ran_there, doomed_id);

    // A task without retries, running there when the node dies.
    let mark = cluster.head().root.join(format!("running-{}", std::process::id()));
    let unretried = mark_and_hang::options()
        .resources([("doomed", 1.0)])
        .max_retries(0)
        .remote(mark.to_string_lossy().into_owned());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !mark.exists() {
        assert!(Instant::now() < deadline, "the unretried task never started");
        std::thread::sleep(Duration::from_millis(20));
    }

    cluster.remove_node(&doomed.id, Removal::Kill).unwrap();
    // The GCS finds out by its health checks.
    cluster.wait_for_nodes(1, Duration::from_secs(60)).unwrap();

    let results = manta::get_all(&doubled).expect("every retriable task finishes");
    assert_eq!(results, (0..500u64).map(|x| x * 2).collect::<Vec<_>>());
    match unretried.get_timeout(Duration::from_secs(60)) {
        Err(manta::TaskError::NodeDied { node, attempts: 1, .. }) => assert_eq!(node, doomed_id),
        other => panic!("a task without retries on the dead node: {other:?}"),
    }
    // The restartable actor answers again, from the head (its state begins anew).
    let deadline = Instant::now() + Duration::from_secs(60);
    let answered = loop {
        match restartable.bump().get_timeout(Duration::from_secs(30)) {
            Ok(count) => break count,
            Err(error) => {
                assert!(Instant::now() < deadline, "the restarted actor never answered: {error}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    assert_eq!(answered, 1, "a new incarnation");
    assert_ne!(restartable.node().get().unwrap(), doomed_id);
    // The one without restarts fails, naming the node it died with.
    let error = mortal.bump().get_timeout(Duration::from_secs(60)).unwrap_err();
    assert!(matches!(error, manta::TaskError::ActorDied { .. }), "{error:?}");
    assert!(error.to_string().contains(&doomed_id), "{error}");
    // The stranded object is lost, and saying so does not hang.
    let error = stranded.get_timeout(Duration::from_secs(60)).unwrap_err();
    assert!(matches!(error, manta::TaskError::ObjectLost { .. }), "{error:?}");

    // Work no node can run waits (the node it needed is gone, and none other has it), and
    // runs as soon as a node that has what it needs joins.
    let waiting = node_of::options().resources([("doomed", 1.0)]).remote();
    assert!(matches!(waiting.get_timeout(Duration::from_millis(500)), Err(manta::TaskError::Timeout(_))));
    let newcomer = cluster.add_node(NodeSpec::new().num_cpus(1).resource("doomed", 1.0)).unwrap();
    assert_eq!(waiting.get_timeout(Duration::from_secs(60)).unwrap(), newcomer.id.to_string());
}
