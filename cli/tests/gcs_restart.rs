//! The GCS killed (`kill -9`) while a cluster of two nodes runs, and started again on its
//! tables (`manta start --head --storage DIR --gcs-only`): the nodes stay (their raylets wait
//! for it and reconnect by themselves), the restarted GCS knows them alive, the cluster's
//! identity is the same (no node or driver is told anything new), tasks submitted during the
//! outage finish after it (a worker that must start waits to be admitted), the driver that ran
//! all along runs tasks on both nodes and creates an actor again, and the restarted GCS finds a
//! node killed after it dead, as the first would have.
//!
//! One test in this file: a worker re-executes this binary, and must only become a worker.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use manta::cluster_utils::{Cluster, NodeSpec, Removal};
use manta::SchedulingStrategy;

mod support;

/// Where it ran.
#[manta::remote]
fn node_of() -> String {
    manta::get_runtime_context().unwrap().node_id.to_string()
}

#[manta::actor]
struct Tally {
    total: u64,
}

#[manta::actor]
impl Tally {
    fn new() -> Self {
        Tally { total: 0 }
    }

    fn add(&mut self, amount: u64) -> u64 {
        self.total += amount;
        self.total
    }
}

fn spread_nodes(count: usize) -> BTreeSet<String> {
    let refs: Vec<_> = (0..count)
        .map(|_| node_of::options().scheduling_strategy(SchedulingStrategy::Spread).remote())
        .collect();
    manta::get_all(&refs).unwrap().into_iter().collect()
}

#[test]
fn a_gcs_killed_and_started_again_on_its_tables_keeps_its_cluster() {
    if manta::is_worker_process() {
        let _ = manta::init();
        unreachable!("init never returns in a worker");
    }
    let _stderr = support::capture_stderr();
    let storage = std::env::temp_dir().join(format!("manta-gcs-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&storage);
    let storage_arg = storage.display().to_string();
    let quick = ["--health-check-period-ms", "300", "--health-check-failure-threshold", "5"];
    let head = NodeSpec::new().num_cpus(1).args(["--storage", &storage_arg]).args(quick);
    let mut cluster = Cluster::start(env!("CARGO_BIN_EXE_manta"), head).unwrap();
    let second = cluster.add_node(NodeSpec::new().num_cpus(1)).unwrap().id;
    let ids: BTreeSet<String> = [cluster.head().id.to_string(), second.to_string()].into_iter().collect();
    cluster.wait_for_nodes(2, Duration::from_secs(60)).unwrap();
    // SAFETY (of the environment): set before any other thread of this test reads it.
    std::env::set_var("MANTA_TEMP_DIR", &cluster.head().root);
    let config = manta::Config { address: Some("auto".to_owned()), ..manta::Config::default() };
    let _driver = manta::init_with(config).unwrap();
    support::eventually("tasks run on both nodes", || spread_nodes(40) == ids);

    // The GCS dies with nothing done for it.
    let session = cluster.head().root.join("session_latest");
    let gcs_pid = std::fs::read_to_string(session.join("pids/gcs.pid")).unwrap().trim().to_owned();
    assert!(Command::new("kill").args(["-9", &gcs_pid]).status().unwrap().success());
    let gone = format!("/proc/{gcs_pid}");
    support::eventually("the GCS is gone", || !std::path::Path::new(&gone).exists());
    // Work submitted meanwhile is not failed: leases come from the raylets, and a worker that
    // must start waits for the GCS to admit it.
    let meanwhile: Vec<_> = (0..20)
        .map(|_| node_of::options().scheduling_strategy(SchedulingStrategy::Spread).remote())
        .collect();

    let restarted = Command::new(env!("CARGO_BIN_EXE_manta"))
        .args(["start", "--head", "--storage", &storage_arg, "--gcs-only"])
        .env("MANTA_TEMP_DIR", &cluster.head().root)
        .output()
        .unwrap();
    assert!(restarted.status.success(), "{}", String::from_utf8_lossy(&restarted.stderr));

    // The same cluster: both nodes alive, tasks on both, and an actor (the GCS's actor manager
    // creates it) answers.
    let head_root = cluster.head().root.clone();
    let status = || {
        let output = Command::new(env!("CARGO_BIN_EXE_manta"))
            .arg("status")
            .env("MANTA_TEMP_DIR", &head_root)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    support::eventually("the restarted GCS lists both nodes alive", || {
        status().contains("2 node(s) alive, 0 dead")
    });
    let ran: BTreeSet<String> = manta::get_all(&meanwhile).unwrap().into_iter().collect();
    assert!(ran.is_subset(&ids), "{ran:?}");
    // The raylets' views catch up with the restarted GCS within a few of its broadcasts.
    support::eventually("tasks run on both nodes after the restart", || spread_nodes(40) == ids);
    let tally = Tally::remote().unwrap();
    assert_eq!(tally.add(5).get().unwrap(), 5);
    assert_eq!(tally.add(2).get().unwrap(), 7);
    // The restarted GCS checks its members' health as the first did: the node killed now is
    // found dead, the head stays alive.
    cluster.remove_node(&second, Removal::Kill).unwrap();
    support::eventually("the restarted GCS finds the killed node dead", || {
        status().contains("1 node(s) alive, 1 dead")
    });
    drop(cluster);
    let _ = std::fs::remove_dir_all(&storage);
}
