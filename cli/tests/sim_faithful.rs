//! The simulator is faithful: one workload, run on a real four-node cluster (separate
//! processes, QUIC between them) and in `manta sim`'s simulation of the same nodes, puts the
//! same shares of its tasks on each node.
//!
//! The workload: nodes of 2 (the head, where the driver runs), 1, 4 and 8 CPUs; 360 tasks of
//! one CPU that each take 200 ms, submitted at once. Both place by the hybrid policy from the
//! driver's node, spill to the others, and reuse each granted worker for the next task, so a
//! node's share follows its CPUs: 2/15, 1/15, 4/15 and 8/15. What differs between the two is
//! timing: how long a worker takes to start (real: 100-300 ms on this machine, loaded; the
//! simulation: 150 ms), how old each raylet's view is, and the last round of tasks. With 24
//! rounds of tasks per CPU, a node starting its workers a round late or running one round
//! more moves its share by about 1/24 of its own, so each node's share must agree within 8
//! percentage points (a policy that ignored capacity, such as an even split, is 12 or more
//! points off on the largest node and fails).
//!
//! One test in this file: a worker re-executes this binary, and must only become a worker.

use std::collections::BTreeMap;
use std::time::Duration;

use manta::cluster_utils::{Cluster, NodeSpec};
use manta_sim::scale::{simulate, ScaleConfig};
use manta_sim::workload::Workload;

mod support;

/// Where it ran, after a pause.
#[manta::remote]
fn node_after(pause_ms: u64) -> String {
    std::thread::sleep(Duration::from_millis(pause_ms));
    manta::get_runtime_context().unwrap().node_id.to_string()
}

const CPUS: [usize; 4] = [2, 1, 4, 8];
const TASKS: usize = 360;
const TOLERANCE: f64 = 0.08;

#[test]
fn a_real_cluster_and_the_simulation_place_tasks_in_the_same_proportions() {
    if manta::is_worker_process() {
        let _ = manta::init();
        unreachable!("init never returns in a worker");
    }
    let _stderr = support::capture_stderr();

    // The real cluster.
    let mut cluster = Cluster::start(env!("CARGO_BIN_EXE_manta"), NodeSpec::new().num_cpus(CPUS[0])).unwrap();
    let mut ids = vec![cluster.head().id.to_string()];
    for cpus in &CPUS[1..] {
        ids.push(cluster.add_node(NodeSpec::new().num_cpus(*cpus)).unwrap().id.to_string());
    }
    cluster.wait_for_nodes(CPUS.len(), Duration::from_secs(60)).unwrap();
    // SAFETY (of the environment): set before any other thread of this test reads it.
    std::env::set_var("MANTA_TEMP_DIR", &cluster.head().root);
    let config = manta::Config { address: Some("auto".to_owned()), ..manta::Config::default() };
    let _driver = manta::init_with(config).unwrap();
    // The GCS's view holds every node's CPUs before the work starts (as in the simulation); the
    // raylets read that view every 100 ms.
    let total: f64 = CPUS.iter().map(|cpus| *cpus as f64).sum();
    support::eventually("the cluster's view shows every node's CPUs", || {
        manta::cluster_resources().is_ok_and(|resources| resources.get("CPU") == Some(&total))
    });
    let refs: Vec<_> = (0..TASKS).map(|_| node_after::remote(200)).collect();
    let mut real: BTreeMap<String, usize> = BTreeMap::new();
    for node in manta::get_all(&refs).unwrap() {
        *real.entry(node).or_default() += 1;
    }
    let real: Vec<f64> =
        ids.iter().map(|id| real.get(id).copied().unwrap_or(0) as f64 / TASKS as f64).collect();

    // The simulation of the same cluster and workload.
    let nodes: String = CPUS.iter().map(|cpus| format!("nodes count=1 cpu={cpus}\n")).collect();
    let text =
        format!("{nodes}drivers count=1\nworkers start=150\ntasks count={TASKS} cpu=1 duration=200 at=0\n");
    let workload = Workload::parse(&text).unwrap();
    let mut simulated = vec![0.0; CPUS.len()];
    let seeds = 5;
    for seed in 0..seeds {
        let outcome = simulate(&workload, &ScaleConfig { seed, ..ScaleConfig::default() }).unwrap();
        assert_eq!(outcome.finished, TASKS);
        for (share, count) in simulated.iter_mut().zip(&outcome.tasks_per_node) {
            *share += *count as f64 / TASKS as f64 / seeds as f64;
        }
    }
    let capacity: Vec<f64> =
        CPUS.iter().map(|cpus| *cpus as f64 / CPUS.iter().sum::<usize>() as f64).collect();
    eprintln!(
        "shares by node (CPUs {CPUS:?}): real {real:.3?}, simulated {simulated:.3?}, capacity {capacity:.3?}"
    );
    for node in 0..CPUS.len() {
        assert!(
            (real[node] - simulated[node]).abs() <= TOLERANCE,
            "node {node} ({} CPUs): real share {:.3}, simulated {:.3} (real {real:.3?}, simulated {simulated:.3?})",
            CPUS[node],
            real[node],
            simulated[node]
        );
    }
}
