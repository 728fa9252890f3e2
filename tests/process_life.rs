//! The life of a driver process and its workers, seen from outside: each test runs this binary
//! again as a child driver (the `scenario` test, which does nothing unless
//! `MANTA_TEST_SCENARIO` names what to do) and checks what a user would see: a driver whose
//! binary was replaced still starts workers; workers of a driver that ended exit without a word
//! on the terminal; no socket file is left behind.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use manta::{ActorHandle, Config, ObjectRef};

const SCENARIO: &str = "MANTA_TEST_SCENARIO";

#[manta::remote]
fn pid() -> u32 {
    std::process::id()
}

#[manta::actor]
struct Idle;

#[manta::actor]
impl Idle {
    fn new() -> Self {
        Idle
    }

    fn ping(&self) -> bool {
        true
    }

    fn pid(&self) -> u32 {
        std::process::id()
    }
}

/// The child driver (and its workers, which run this binary again with the same environment).
#[test]
fn scenario() {
    let Ok(scenario) = std::env::var(SCENARIO) else { return };
    if scenario == "unmarked-main" {
        // As a program whose `fn main` lacks `#[manta::main]`: `init` called from the thread
        // named `main` of a process no attribute marked.
        let main = std::thread::Builder::new().name("main".to_owned()).spawn(|| {
            let _cluster =
                manta::init_with(Config { num_cpus: 2, max_workers: Some(2), ..Config::default() }).unwrap();
            let pids: Vec<ObjectRef<u32>> = (0..3).map(|_| pid::remote()).collect();
            manta::get_all(&pids).unwrap();
            println!("scenario ok: unmarked main ran its tasks");
        });
        main.unwrap().join().unwrap();
        return;
    }
    if scenario == "deleted-binary" && !manta::is_worker_process() {
        // As a rebuild does: the file this process runs from is gone.
        std::fs::remove_file(std::env::current_exe().unwrap()).unwrap();
    }
    let _cluster =
        manta::init_with(Config { num_cpus: 2, max_workers: Some(2), ..Config::default() }).unwrap();
    match scenario.as_str() {
        "deleted-binary" => {
            let pids: Vec<ObjectRef<u32>> = (0..4).map(|_| pid::remote()).collect();
            let pids = manta::get_all(&pids).unwrap();
            assert!(pids.iter().all(|pid| *pid != std::process::id()));
            println!("scenario ok: {} tasks ran in workers", pids.len());
        }
        "exit-while-starting" => {
            let first = Idle::remote().unwrap();
            assert!(first.ping().get().unwrap());
            // Workers still starting (joining, mapping the store) when this process ends.
            let starting: Vec<ActorHandle<Idle>> = (0..12).map(|_| Idle::remote().unwrap()).collect();
            std::mem::forget(starting);
            println!("scenario ok: exiting with workers starting");
        }
        "descriptors" => {
            let open = || std::fs::read_dir("/proc/self/fd").unwrap().count();
            let warm = Idle::remote().unwrap();
            assert!(warm.ping().get().unwrap());
            let before = open();
            let actors: Vec<ActorHandle<Idle>> = (0..ACTORS).map(|_| Idle::remote().unwrap()).collect();
            for actor in &actors {
                assert!(actor.ping().get().unwrap());
            }
            println!("scenario ok: {} descriptors for {ACTORS} more actors", open() - before);
        }
        "killed-worker" => {
            let dir = Path::new(&std::env::var("XDG_RUNTIME_DIR").unwrap()).join("manta");
            let before = socket_files(&dir).len();
            let actor = Idle::remote().unwrap();
            assert!(actor.ping().get().unwrap());
            let pid = actor.pid().get().unwrap();
            assert_eq!(socket_files(&dir).len(), before + 1, "the actor's worker has its socket");
            // The last handle goes: the raylet ends the worker.
            drop(actor);
            let deadline = Instant::now() + Duration::from_secs(60);
            // SAFETY: signal 0 only checks that the process exists.
            while unsafe { libc::kill(pid as libc::pid_t, 0) } == 0 {
                assert!(Instant::now() < deadline, "the worker outlived its actor's last handle");
                std::thread::sleep(Duration::from_millis(10));
            }
            println!(
                "scenario ok: {} socket files left by the ended worker",
                socket_files(&dir).len() - before
            );
        }
        other => panic!("unknown scenario {other}"),
    }
}

/// A private directory for one child's socket files (`XDG_RUNTIME_DIR`), so that what it
/// leaves behind can be counted.
fn private_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("manta-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("run")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("run"), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

struct Finished {
    success: bool,
    stdout: String,
    /// Everything written to stderr until every process holding it (the workers too) ended.
    stderr: String,
}

/// Runs this binary as the driver of `scenario` in a private directory named `name`, and checks
/// that it succeeded; `None` inside a scenario's own process (the tests then do nothing).
fn run_successful_scenario(name: &str, scenario: &str) -> Option<(Finished, PathBuf)> {
    if std::env::var_os(SCENARIO).is_some() {
        return None;
    }
    let dir = private_dir(name);
    let finished = run_scenario(&std::env::current_exe().unwrap(), scenario, &dir.join("run"));
    assert!(finished.success, "stdout:\n{}\nstderr:\n{}", finished.stdout, finished.stderr);
    Some((finished, dir))
}

/// Runs `binary` as the driver of `scenario` and waits, within a generous bound, for it and
/// for every worker that shares its stderr.
fn run_scenario(binary: &Path, scenario: &str, runtime_dir: &Path) -> Finished {
    let mut child = Command::new(binary)
        .args(["scenario", "--exact", "--nocapture", "--test-threads=1"])
        .env(SCENARIO, scenario)
        .env("XDG_RUNTIME_DIR", runtime_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut out, mut err) = (String::new(), String::new());
        let _ = stdout.read_to_string(&mut out);
        let _ = stderr.read_to_string(&mut err);
        let _ = sender.send((out, err));
    });
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the {scenario} driver did not finish within 180 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (stdout, stderr) = receiver
        .recv_timeout(deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(30)))
        .unwrap_or_else(|_| panic!("workers of the {scenario} driver still hold its stderr"));
    Finished { success: status.success(), stdout, stderr }
}

fn socket_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .filter(|name| name.ends_with(".sock"))
                .collect()
        })
        .unwrap_or_default()
}

/// Regression: the raylet started workers from the path of the running binary; after a
/// rebuild that path named a deleted file, starts failed in a tight loop and every `get` hung.
#[test]
fn a_driver_whose_binary_was_replaced_still_starts_workers() {
    if std::env::var_os(SCENARIO).is_some() {
        return;
    }
    let dir = private_dir("deleted");
    let copy = dir.join("driver");
    std::fs::copy(std::env::current_exe().unwrap(), &copy).unwrap();
    let finished = run_scenario(&copy, "deleted-binary", &dir.join("run"));
    assert!(finished.success, "stdout:\n{}\nstderr:\n{}", finished.stdout, finished.stderr);
    assert!(finished.stdout.contains("scenario ok: 4 tasks ran in workers"), "{}", finished.stdout);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Regression: workers still starting when their driver ended printed `no process serves ...`
/// or `mapping the object store: ... No such file` after the program had ended, and every exit
/// left socket files behind.
#[test]
fn workers_of_an_ended_driver_exit_quietly_and_leave_no_socket_behind() {
    let Some((finished, dir)) = run_successful_scenario("exit", "exit-while-starting") else { return };
    let runtime = dir.join("run");
    assert!(finished.stdout.contains("scenario ok"), "{}", finished.stdout);
    let noise: Vec<&str> = finished
        .stderr
        .lines()
        .filter(|line| !line.trim().is_empty())
        .filter(|line| !line.starts_with("running ") && !line.starts_with("test "))
        .collect();
    assert!(
        noise.is_empty(),
        "the workers wrote to the terminal after the driver ended:\n{}",
        noise.join("\n")
    );
    let left = socket_files(&runtime.join("manta"));
    assert!(left.is_empty(), "socket files left behind: {left:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Regression: the raylet ended workers with SIGKILL, so a worker whose actor lost its last
/// handle left its socket file behind (seen as a flaky `socket files left behind` when the
/// driver's last actor was dropped as it exited). It now asks with SIGTERM, which the worker
/// ends through `exit`, and kills only one still there after a grace period.
#[test]
fn a_worker_the_raylet_ends_removes_its_socket_file() {
    let Some((finished, dir)) = run_successful_scenario("killed", "killed-worker") else { return };
    assert!(finished.stdout.contains("scenario ok: 0 socket files left"), "{}", finished.stdout);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Actors started by the `descriptors` scenario.
const ACTORS: usize = 40;

/// Regression: each worker cost the driver (which hosts the raylet) three descriptors, a pipe
/// on the worker's stdin, a pidfd and its connection, and 20,000 open files capped a machine at
/// about 6,600 actors. Now its connection only.
#[test]
fn a_worker_costs_its_driver_one_descriptor() {
    let Some((finished, dir)) = run_successful_scenario("descriptors", "descriptors") else { return };
    let line = finished.stdout.lines().find(|line| line.starts_with("scenario ok")).unwrap_or_default();
    let count: usize =
        line.split_whitespace().nth(2).and_then(|count| count.parse().ok()).unwrap_or(usize::MAX);
    // One per worker, and a few to spare for what else the driver opens meanwhile.
    assert!(count <= ACTORS + ACTORS / 4, "{count} descriptors for {ACTORS} workers: {line}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Regression: a program without `#[manta::main]` silently ran the code before `init()` again
/// in every worker; the driver now says once what to add.
#[test]
fn a_main_without_the_attribute_is_named_once() {
    let Some((finished, dir)) = run_successful_scenario("unmarked", "unmarked-main") else { return };
    assert!(finished.stdout.contains("scenario ok: unmarked main ran its tasks"), "{}", finished.stdout);
    assert_eq!(finished.stderr.matches("add #[manta::main] above fn main").count(), 1, "{}", finished.stderr);
    let _ = std::fs::remove_dir_all(&dir);
}
