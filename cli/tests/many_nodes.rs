//! Thirty-two nodes on this 2-core host (one CPU and 16 MiB of store each, each its own `manta
//! start`): all register, `manta status` lists them alive, 5,000 small tasks spread over every
//! one of them, and stopping the cluster leaves no daemon behind.
//!
//! One test in this file: a worker re-executes this binary, and must only become a worker.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use manta::cluster_utils::{Cluster, NodeSpec};

/// Where it ran, after a short pause (so that the work needs many leases at once).
#[manta::remote]
fn node_after(pause_ms: u64) -> String {
    std::thread::sleep(Duration::from_millis(pause_ms));
    manta::get_runtime_context().unwrap().node_id.to_string()
}

const NODES: usize = 32;

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| stat.contains(") Z "))
}

#[test]
fn thirty_two_nodes_take_spread_work_and_stop_leaves_no_process_behind() {
    if manta::is_worker_process() {
        let _ = manta::init();
        unreachable!("init never returns in a worker");
    }
    let small = || NodeSpec::new().num_cpus(1).args(["--object-store-memory", "16777216"]);
    let mut cluster = Cluster::start(env!("CARGO_BIN_EXE_manta"), small()).unwrap();
    for index in 1..NODES {
        cluster.add_node(small().label("index", &index.to_string())).unwrap();
    }
    cluster.wait_for_nodes(NODES, Duration::from_secs(120)).unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_manta"))
        .arg("status")
        .env("MANTA_TEMP_DIR", &cluster.head().root)
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(status.contains(&format!("{NODES} node(s) alive, 0 dead")), "{status}");
    assert!(status.contains(&format!("Resources in use (alive nodes): CPU 0/{NODES}")), "{status}");

    // SAFETY (of the environment): set before any other thread of this test reads it.
    std::env::set_var("MANTA_TEMP_DIR", &cluster.head().root);
    let config = manta::Config { address: Some("auto".to_owned()), ..manta::Config::default() };
    let driver = manta::init_with(config).unwrap();
    let started = Instant::now();
    let spread = manta::SchedulingStrategy::Spread;
    let tasks: Vec<_> =
        (0..5_000).map(|_| node_after::options().scheduling_strategy(&spread).remote(20)).collect();
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for node in manta::get_all(&tasks).unwrap() {
        *per_node.entry(node).or_default() += 1;
    }
    eprintln!("5,000 tasks over {} nodes in {:?}: {per_node:?}", per_node.len(), started.elapsed());
    let mut expected: Vec<String> = cluster.nodes().iter().map(|node| node.id.to_string()).collect();
    expected.push(cluster.head().id.to_string());
    expected.sort();
    assert_eq!(per_node.keys().cloned().collect::<Vec<_>>(), expected, "every node ran some");

    drop((tasks, driver));
    let gcs_pid: u32 = std::fs::read_to_string(cluster.head().root.join("session_latest/pids/gcs.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut pids: Vec<u32> = cluster.nodes().iter().map(|node| node.raylet_pid).collect();
    pids.extend([cluster.head().raylet_pid, gcs_pid]);
    drop(cluster);
    let deadline = Instant::now() + Duration::from_secs(60);
    while pids.iter().any(|pid| alive(*pid)) {
        assert!(
            Instant::now() < deadline,
            "daemons left: {:?}",
            pids.iter().filter(|pid| alive(**pid)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
