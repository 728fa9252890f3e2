//! A driver on a running cluster: `manta start --head` starts the daemons, then this test's
//! process joins with `MANTA_ADDRESS=auto` and runs tasks and an actor there. The node's raylet
//! starts the workers from this test binary (found by its hash under the driver's pid), and they
//! join the cluster with tokens from the GCS's admission service.
//!
//! One test in this file: a worker re-executes this binary, and must only become a worker.

use std::path::PathBuf;
use std::process::Command;

use support::capture_stderr;

mod support;

#[manta::remote]
fn square(x: i64) -> i64 {
    x * x
}

/// Where it ran: its process and node.
#[manta::remote]
fn whereabouts() -> (u32, String) {
    let context = manta::get_runtime_context().unwrap();
    (context.worker_pid, context.node_id.to_string())
}

/// Prints `marker` on its stdout and `marker-err` on its stderr (through the handles: the test
/// harness captures `println!` in the worker, which is this test binary).
#[manta::remote]
fn shout(marker: String) -> bool {
    use std::io::Write as _;
    writeln!(std::io::stdout(), "{marker}").is_ok() && writeln!(std::io::stderr(), "{marker}-err").is_ok()
}

#[manta::actor]
struct Tally {
    total: i64,
}

#[manta::actor]
impl Tally {
    fn new(start: i64) -> Self {
        Tally { total: start }
    }

    fn add(&mut self, by: i64) -> i64 {
        self.total += by;
        self.total
    }

    fn say(&self, marker: String) -> bool {
        use std::io::Write as _;
        writeln!(std::io::stdout(), "{marker}").is_ok()
    }
}

struct Cluster(PathBuf);

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ =
            Command::new(env!("CARGO_BIN_EXE_manta")).args(["stop"]).env("MANTA_TEMP_DIR", &self.0).output();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_driver_joins_a_running_cluster_and_its_tasks_and_actors_run_there() {
    if manta::is_worker_process() {
        let _ = manta::init();
        unreachable!("init never returns in a worker");
    }
    let root = std::env::temp_dir().join(format!("manta-cli-driver-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let cluster = Cluster(root.clone());
    let started = Command::new(env!("CARGO_BIN_EXE_manta"))
        .args(["start", "--head", "--port", "0", "--num-cpus", "2"])
        .env("MANTA_TEMP_DIR", &root)
        .output()
        .unwrap();
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    let node_id = std::fs::read_to_string(root.join("session_latest/raylet")).unwrap();
    let node_id = node_id.lines().nth(2).unwrap().to_owned();

    // SAFETY (of the environment): set before any other thread of this test reads it.
    std::env::set_var("MANTA_TEMP_DIR", &root);
    let stderr = capture_stderr();
    let config = manta::Config { address: Some("auto".to_owned()), ..manta::Config::default() };
    let _driver = manta::init_with(config).unwrap();

    let squares: Vec<_> = (0..20).map(square::remote).collect();
    assert_eq!(manta::get_all(&squares).unwrap().iter().sum::<i64>(), 2470);
    let (pid, node) = whereabouts::remote().get().unwrap();
    assert_ne!(pid, std::process::id(), "the task ran in a worker process");
    assert_eq!(node, node_id, "on the cluster's node");
    assert_eq!(manta::get_runtime_context().unwrap().node_id.to_string(), node_id, "the driver's node");

    // What a worker prints reaches this driver's stderr, with its origin (the function, the
    // worker's pid, its node).
    let marker = format!("marker-{}", std::process::id());
    assert!(shout::remote(marker.clone()).get().unwrap());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let seen = stderr.lock().unwrap().clone();
        let printed =
            |text: &str| seen.lines().any(|line| line.starts_with("(shout pid=") && line.ends_with(text));
        if printed(&format!(") {marker}")) && printed(&format!(") {marker}-err")) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the worker's lines never reached the driver: {seen}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    let tally = Tally::options().num_cpus(1.0).remote(10).unwrap();
    assert_eq!(tally.add(5).get().unwrap(), 15);
    // The actor holds a CPU for its life: the node reports it, and `manta status` shows it.
    let status = || {
        let run =
            Command::new(env!("CARGO_BIN_EXE_manta")).arg("status").env("MANTA_TEMP_DIR", &root).output();
        String::from_utf8_lossy(&run.unwrap().stdout).into_owned()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !(status().contains("Resources in use (alive nodes): CPU 1/2")
        && status().contains("Actors: 1 Alive"))
    {
        assert!(std::time::Instant::now() < deadline, "the actor's CPU never showed: {}", status());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(tally.add(&squares[3]).get().unwrap(), 24, "a ref argument from the driver");
    // An actor's lines name its class.
    let marker = format!("tally-{}", std::process::id());
    assert!(tally.say(marker.clone()).get().unwrap());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !stderr
        .lock()
        .unwrap()
        .lines()
        .any(|line| line.starts_with("(Tally pid=") && line.ends_with(&marker))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the actor's line never came: {}",
            stderr.lock().unwrap()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Work no node can run waits, and `manta status` shows it as pending demand.
    let stuck = square::options().resources([("gpu_farm", 1.0)]).remote(3);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !status()
        .lines()
        .any(|line| line.starts_with("Pending demand: 1x {") && line.contains("1 gpu_farm"))
    {
        assert!(std::time::Instant::now() < deadline, "the demand never showed: {}", status());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(manta::cancel(&stuck));
    let big = manta::put(vec![7u8; 1 << 20]).unwrap();
    assert_eq!(big.get().unwrap().len(), 1 << 20, "a large object through the node's store");

    // A second driver, another program (this CLI's microbenchmark), joins meanwhile: its job's
    // workers start from its binary, and neither job is given the other's workers.
    let second = Command::new(env!("CARGO_BIN_EXE_manta"))
        .args(["microbenchmark", "--no-cold-start", "--repeat", "1", "--scale", "0.01"])
        .args(["--filter", "single_client_tasks_sync"])
        .env("MANTA_TEMP_DIR", &root)
        .env("MANTA_ADDRESS", "auto")
        .output()
        .unwrap();
    assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stderr));
    assert!(String::from_utf8_lossy(&second.stdout).contains("single_client_tasks_sync:"));
    let again: Vec<_> = (0..20).map(square::remote).collect();
    assert_eq!(manta::get_all(&again).unwrap().iter().sum::<i64>(), 2470, "this job's tasks still run");
    drop(cluster);
}
