//! A node killed (`kill -9` of its raylet, whose workers die with it) while a driver on the
//! head uses it: retriable tasks finish elsewhere with the right results, an actor with a
//! restart left answers again from the head, one without restarts fails, and an object whose
//! only copy was there is lost (an error, not a hang).
//!
//! One test in this file: a worker re-executes this binary, and must only become a worker.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Doubles `x` after a pause (long enough that the node dies with some of them running).
#[manta::remote]
fn double_later(x: u64, pause_ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(pause_ms));
    x * 2
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

/// A node started by `manta start`, stopped (with its session directory removed) on drop.
struct Daemons(PathBuf);

impl Daemons {
    fn start(root: &Path, args: &[&str]) -> Daemons {
        let _ = std::fs::remove_dir_all(root);
        let started = Command::new(env!("CARGO_BIN_EXE_manta"))
            .arg("start")
            .args(args)
            .env("MANTA_TEMP_DIR", root)
            .output();
        let started = started.unwrap();
        assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
        Daemons(root.to_owned())
    }

    fn session_file(&self, name: &str) -> String {
        std::fs::read_to_string(self.0.join("session_latest").join(name)).unwrap().trim().to_owned()
    }

    fn node_id(&self) -> String {
        self.session_file("raylet").lines().nth(2).unwrap().to_owned()
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        let _ =
            Command::new(env!("CARGO_BIN_EXE_manta")).args(["stop"]).env("MANTA_TEMP_DIR", &self.0).output();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_killed_node_loses_no_retriable_work_and_its_losses_are_errors() {
    if manta::is_worker_process() {
        let _ = manta::init();
        unreachable!("init never returns in a worker");
    }
    let base = std::env::temp_dir().join(format!("manta-node-death-{}", std::process::id()));
    // Quick health checks: the node is declared dead about a second after its death.
    let head = Daemons::start(
        &base.join("head"),
        &["--head", "--port", "0", "--num-cpus", "2", "--health-check-period-ms", "200"]
            .into_iter()
            .chain(["--health-check-timeout-ms", "200", "--health-check-failure-threshold", "3"])
            .collect::<Vec<_>>(),
    );
    let (address, token) = (head.session_file("gcs_address"), head.session_file("token"));
    let doomed = Daemons::start(
        &base.join("doomed"),
        &["--address", &address, "--token", &token, "--num-cpus", "2", "--resources", r#"{"doomed": 100}"#],
    );
    let doomed_id = doomed.node_id();
    let raylet_pid: i32 = doomed.session_file("pids/raylet.pid").parse().unwrap();

    // SAFETY (of the environment): set before any other thread of this test reads it.
    std::env::set_var("MANTA_TEMP_DIR", &head.0);
    let config = manta::Config { address: Some("auto".to_owned()), ..manta::Config::default() };
    let _driver = manta::init_with(config).unwrap();

    let on_doomed = manta::SchedulingStrategy::NodeAffinity { node: doomed_id.parse().unwrap(), soft: true };
    // Both actors live on the doomed node (soft affinity: a restart may go elsewhere).
    let restartable = Counter::options().scheduling_strategy(on_doomed).max_restarts(1).remote().unwrap();
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
        (0..200u64).map(|x| double_later::options().scheduling_strategy(spread).remote(x, 10)).collect();
    let ran_there = node_of::options().resources([("doomed", 1.0)]).remote().get().unwrap();
    assert_eq!(ran_there, doomed_id);

    // SAFETY: a signal to the raylet process this test's `manta start` started.
    unsafe { libc::kill(raylet_pid, libc::SIGKILL) };

    let results = manta::get_all(&doubled).expect("every retriable task finishes");
    assert_eq!(results, (0..200u64).map(|x| x * 2).collect::<Vec<_>>());
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
    // The one without restarts fails.
    let error = mortal.bump().get_timeout(Duration::from_secs(60)).unwrap_err();
    assert!(matches!(error, manta::TaskError::ActorDied { .. }), "{error:?}");
    // The stranded object is lost, and saying so does not hang.
    let error = stranded.get_timeout(Duration::from_secs(60)).unwrap_err();
    assert!(matches!(error, manta::TaskError::ObjectLost { .. }), "{error:?}");
}
