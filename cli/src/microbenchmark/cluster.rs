//! `manta microbenchmark --cluster`: figures of a two-node cluster on this host, each node its
//! own `manta start` (daemons in their own processes, QUIC between the nodes), the driver on the
//! head. The shape of Ray's `bench_h_two_node_transfer.py` (`ray.cluster_utils.Cluster`, a
//! second node with the custom resource `node2`), so the figures compare. The head's GCS keeps
//! its tables on disk, for `gcs_restart_seconds` (the GCS killed and started again on them).

use std::time::{Duration, Instant};

use manta::cluster_utils::{Cluster, NodeSpec};
use manta::Buffer;

use super::{get, get_all, small_value, Figure, Runner};

/// Bytes of the transfer figures (Ray's: 5 * 10^8).
const TRANSFER_BYTES: usize = 500_000_000;

/// Each node's store: room for the transfer's object and its copy (Ray's run: 2.5 GB).
const STORE_BYTES: u64 = 2_500_000_000;

/// Makes `len` bytes of `fill` on the second node.
#[manta::remote]
fn make_on_node2(len: usize, fill: u8) -> Buffer<u8> {
    Buffer::from(vec![fill; len])
}

/// The length of an argument, on the second node.
#[manta::remote]
fn consume_on_node2(bytes: Buffer<u8>) -> usize {
    bytes.len()
}

/// Starts the two nodes, joins the head as this process's driver, and measures. Returns the
/// figures (each also reported as it completes), or why the cluster could not be set up.
pub(crate) fn run(options: super::Options, report: &dyn Fn(&Figure)) -> Result<Vec<Figure>, String> {
    let exe = std::env::current_exe().map_err(|error| format!("this program's path: {error}"))?;
    let store = STORE_BYTES.to_string();

    // The GCS keeps its tables on disk, for `gcs_restart_seconds`.
    let tables = std::env::temp_dir().join(format!("manta-bench-gcs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tables);
    let tables_arg = tables.display().to_string();
    let started = Instant::now();
    let head = NodeSpec::new().num_cpus(1).args(["--object-store-memory", &store, "--storage", &tables_arg]);
    let mut cluster = Cluster::start(&exe, head)?;
    // SAFETY (of the environment): set before this process starts any thread that reads it.
    std::env::set_var("MANTA_TEMP_DIR", &cluster.head().root);
    let config = manta::Config { address: Some("auto".to_owned()), ..manta::Config::default() };
    let _driver = manta::init_with(config).map_err(|error| format!("joining the cluster: {error}"))?;
    get(&small_value::remote());
    let cluster_start = started.elapsed().as_secs_f64();

    let joined = Instant::now();
    let node2 =
        NodeSpec::new().num_cpus(1).resource("node2", 1_000_000.0).args(["--object-store-memory", &store]);
    cluster.add_node(node2)?;
    get(&small_value::options().num_cpus(0.0).resources([("node2", 1.0)]).remote());
    let node_join = joined.elapsed().as_secs_f64();

    let mut runner = Runner { options, figures: Vec::new(), report };
    if runner.wanted("cluster_start_seconds") {
        runner.value("cluster_start_seconds", "s", vec![cluster_start]);
    }
    if runner.wanted("node_join_seconds") {
        runner.value("node_join_seconds", "s", vec![node_join]);
    }
    let n = runner.count(1000);
    runner.rate("two_node_tasks_async", "ops/s", n as f64, || {
        let refs: Vec<_> = (0..n)
            .map(|_| small_value::options().num_cpus(0.0).resources([("node2", 1.0)]).remote())
            .collect();
        get_all(&refs);
    });
    let bytes = ((TRANSFER_BYTES as f64 * runner.options.scale.min(1.0)) as usize).max(1 << 20);
    let repeat = runner.options.repeat;
    if runner.wanted("two_node_transfer_500mb_gigabytes") {
        // Made on node 2, read by the driver on the head: timed from the object being ready
        // (Ray: `ray.wait(fetch_local=False)`) to the driver holding its bytes. One warm-up.
        let mut values = Vec::new();
        for round in 0..=repeat {
            let fill = round as u8;
            let made = make_on_node2::options().num_cpus(0.0).resources([("node2", 1.0)]).remote(bytes, fill);
            manta::wait(std::slice::from_ref(&made), 1, None).map_err(|error| error.to_string())?;
            let began = Instant::now();
            let value = get(&made);
            let seconds = began.elapsed().as_secs_f64();
            if value.len() != bytes || value[bytes - 1] != fill {
                return Err("the transferred bytes differ from those made".to_owned());
            }
            if round > 0 {
                values.push(bytes as f64 / seconds / 1e9);
            }
            drop((value, made));
            std::thread::sleep(Duration::from_millis(200));
        }
        runner.value("two_node_transfer_500mb_gigabytes", "GB/s", values);
    }
    if runner.wanted("two_node_transfer_500mb_to_task_gigabytes") {
        // Put on the head, taken as an argument by a task on node 2 (its round trip timed).
        let mut values = Vec::new();
        for round in 0..=repeat {
            let put =
                manta::put(Buffer::from(vec![round as u8; bytes])).map_err(|error| error.to_string())?;
            let began = Instant::now();
            let consumed = consume_on_node2::options().num_cpus(0.0).resources([("node2", 1.0)]).remote(&put);
            let len = get(&consumed);
            let seconds = began.elapsed().as_secs_f64();
            if len != bytes {
                return Err(format!("the task saw {len} bytes of {bytes}"));
            }
            if round > 0 {
                values.push(bytes as f64 / seconds / 1e9);
            }
            drop(put);
            std::thread::sleep(Duration::from_millis(200));
        }
        runner.value("two_node_transfer_500mb_to_task_gigabytes", "GB/s", values);
    }
    // Ray's `many_pgs` release test, on a cluster of this host: groups of one small bundle
    // created at once and waited for, over 32 nodes (fewer when scaled down).
    if runner.wanted("many_pgs") {
        let nodes = ((32.0 * runner.options.scale).round() as usize).clamp(4, 32);
        let small = (64u64 << 20).to_string();
        for _ in 1 + cluster.nodes().len()..nodes {
            cluster.add_node(NodeSpec::new().num_cpus(1).args(["--object-store-memory", &small]))?;
        }
        cluster.wait_for_nodes(nodes, Duration::from_secs(120))?;
        let groups = runner.count(1000);
        let mut values = Vec::new();
        for _ in 0..runner.options.repeat {
            let began = Instant::now();
            let created = (0..groups)
                .map(|_| manta::placement_group([[("CPU", 0.01)]], manta::PlacementStrategy::Pack))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|error| format!("a placement group: {error}"))?;
            let ready = created.iter().map(|group| group.ready()).collect::<Result<Vec<_>, _>>();
            let ready = ready.map_err(|error| format!("a ready ref: {error}"))?;
            manta::get_all(&ready).map_err(|error| format!("the groups were not placed: {error}"))?;
            values.push(groups as f64 / began.elapsed().as_secs_f64());
            for group in &created {
                manta::remove_placement_group(group).map_err(|error| format!("a removal: {error}"))?;
            }
        }
        runner.value("many_pgs", "groups/s", values);
    }
    // The GCS killed (`kill -9`) and started again on its tables (`--gcs-only`): seconds from
    // the kill to the first actor created after it answering a call (Ray keeps its clients
    // waiting up to 60 s for a GCS to come back).
    if runner.wanted("gcs_restart_seconds") {
        let mut values = Vec::new();
        for _ in 0..runner.options.repeat {
            values.push(restart_gcs(&exe, &cluster, &tables_arg)?);
        }
        runner.value("gcs_restart_seconds", "s", values);
    }
    drop(cluster);
    let _ = std::fs::remove_dir_all(&tables);
    Ok(runner.figures)
}

/// Kills the head's GCS, starts it again on `tables`, and times until a new actor answers.
fn restart_gcs(exe: &std::path::Path, cluster: &Cluster, tables: &str) -> Result<f64, String> {
    let root = &cluster.head().root;
    let pid_file = root.join("session_latest/pids/gcs.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .ok_or_else(|| format!("no GCS pid in {}", pid_file.display()))?;
    let began = Instant::now();
    // SAFETY: kill(2) on a pid this cluster's session recorded for its GCS; no memory involved.
    if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
        return Err(format!("killing the GCS (pid {pid}): {}", std::io::Error::last_os_error()));
    }
    let gone = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        if Instant::now() > gone {
            return Err(format!("the GCS (pid {pid}) did not end within 10 s of SIGKILL"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let restarted = std::process::Command::new(exe)
        .args(["start", "--head", "--storage", tables, "--gcs-only"])
        .env("MANTA_TEMP_DIR", root)
        .output()
        .map_err(|error| format!("starting the GCS again: {error}"))?;
    if !restarted.status.success() {
        return Err(format!("starting the GCS again: {}", String::from_utf8_lossy(&restarted.stderr).trim()));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // A call sent on the connection to the GCS's previous life fails once; ask again.
        let answered = super::Sink::remote().ok().and_then(|sink| sink.small_value().get().ok());
        if answered.is_some() {
            return Ok(began.elapsed().as_secs_f64());
        }
        if Instant::now() > deadline {
            return Err("no actor answered within 60 s of the GCS's restart".to_owned());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
