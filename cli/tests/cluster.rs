//! `manta start`, `status` and `stop` as a user runs them: a head and a second node as daemons
//! (real processes, QUIC between them on loopback), the nodes listed with their resources and
//! labels, a wrong token and bad flags refused with a one-line reason, and `stop` leaving no
//! daemon behind. Each test has a session root of its own (`MANTA_TEMP_DIR`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

struct Root(PathBuf);

impl Root {
    fn new(name: &str) -> Root {
        let root = std::env::temp_dir().join(format!("manta-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        Root(root)
    }

    fn manta(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_manta"))
            .args(args)
            .env("MANTA_TEMP_DIR", &self.0)
            .output()
            .expect("the manta binary runs")
    }

    /// Every daemon pid recorded under the root.
    fn pids(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        let sessions = std::fs::read_dir(&self.0).into_iter().flatten().filter_map(Result::ok);
        for session in sessions.filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir())) {
            for file in
                std::fs::read_dir(session.path().join("pids")).into_iter().flatten().filter_map(Result::ok)
            {
                if let Some(pid) =
                    std::fs::read_to_string(file.path()).ok().and_then(|text| text.trim().parse().ok())
                {
                    pids.push(pid);
                }
            }
        }
        pids
    }

    fn latest(&self, file: &str) -> String {
        std::fs::read_to_string(self.0.join("session_latest").join(file)).unwrap().trim().to_owned()
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        // Whatever a failed test left running goes with it.
        let _ = self.manta(&["stop", "--force"]);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z'))
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_head_and_a_node_form_a_cluster_that_status_lists_and_stop_ends() {
    let root = Root::new("cluster");
    let head =
        root.manta(&["start", "--head", "--port", "0", "--num-cpus", "2", "--labels", "zone=a,disk=ssd"]);
    assert!(head.status.success(), "{}", text(&head.stderr));
    let printed = text(&head.stdout);
    let (address, token) = (root.latest("gcs_address"), root.latest("token"));
    assert!(printed.contains(&format!("manta start --address {address} --token {token}")), "{printed}");

    let node = root.manta(&[
        "start",
        "--address",
        &address,
        "--token",
        &token,
        "--num-cpus",
        "1",
        "--resources",
        r#"{"node2": 1}"#,
    ]);
    assert!(node.status.success(), "{}", text(&node.stderr));

    let status = root.manta(&["status"]);
    assert!(status.status.success(), "{}", text(&status.stderr));
    let listed = text(&status.stdout);
    assert!(listed.contains("2 node(s) alive, 0 dead"), "{listed}");
    assert!(listed.contains("zone=a,disk=ssd") || listed.contains("disk=ssd,zone=a"), "{listed}");
    assert!(listed.contains("node2 0/1"), "{listed}");
    assert!(listed.contains("Resources in use (alive nodes): CPU 0/3"), "{listed}");
    assert!(listed.contains("Pending demand: none") && listed.contains("Actors: none"), "{listed}");

    // A node with a token of another cluster (or a forged one) is refused, and says why.
    let forged = format!("{}.{}", token.rsplit_once('.').unwrap().0, "ab".repeat(32));
    let refused = root.manta(&["start", "--address", &address, "--token", &forged, "--num-cpus", "1"]);
    assert_eq!(refused.status.code(), Some(1));
    let reason = text(&refused.stderr);
    assert!(reason.contains("token is not valid"), "{reason}");
    assert_eq!(reason.trim().lines().count(), 1, "one line: {reason}");
    // The cluster goes on, and a failed start is not the session local clients find.
    let again = text(&root.manta(&["status"]).stdout);
    assert!(again.contains("2 node(s) alive"), "{again}");

    let pids = root.pids();
    assert_eq!(pids.len(), 3, "gcs and two raylets: {pids:?}");
    let stopped = root.manta(&["stop"]);
    assert!(stopped.status.success());
    assert!(text(&stopped.stdout).contains("Stopped 3 Manta daemons"), "{}", text(&stopped.stdout));
    wait_until("every daemon is gone", || pids.iter().all(|pid| !alive(*pid)));
    assert!(text(&root.manta(&["stop"]).stdout).contains("No Manta daemons"));
    let gone = root.manta(&["status"]);
    assert_eq!(gone.status.code(), Some(1), "{}", text(&gone.stdout));
    assert!(text(&gone.stderr).contains("not running"), "{}", text(&gone.stderr));
}

#[test]
fn bad_flags_are_refused_before_anything_starts() {
    let root = Root::new("flags");
    for (args, expected) in [
        (&["start"][..], "say --head"),
        (&["start", "--head", "--resources", "[1]"][..], "--resources"),
        (&["start", "--head", "--resources", r#"{"x": -1}"#][..], "at least 0"),
        (&["start", "--head", "--labels", "novalue"][..], "--labels"),
        (&["start", "--head", "--object-store-memory", "0"][..], "above 0"),
        (&["start", "--head", "--scheduler", "fastest"][..], "binpack, hybrid, locality"),
        (&["start", "--address", "127.0.0.1:1", "--token", "nonsense"][..], "--token"),
    ] {
        let run = root.manta(args);
        assert_eq!(run.status.code(), Some(1), "{args:?}");
        assert!(text(&run.stderr).contains(expected), "{args:?}: {}", text(&run.stderr));
    }
    assert!(root.pids().is_empty(), "nothing was started");
    // Usage errors are clap's: exit code 2.
    assert_eq!(root.manta(&["start", "--head", "--address", "127.0.0.1:1"]).status.code(), Some(2));
    assert_eq!(root.manta(&["start", "--address", "127.0.0.1:1"]).status.code(), Some(2), "needs --token");
    let status = root.manta(&["status"]);
    assert_eq!(status.status.code(), Some(1));
    assert!(text(&status.stderr).contains("no Manta session"), "{}", text(&status.stderr));
    assert!(Path::new(&root.0).exists());
}

#[test]
fn a_node_that_dies_is_marked_dead_by_the_health_checks() {
    let root = Root::new("health");
    let fast = [
        "--health-check-period-ms",
        "100",
        "--health-check-timeout-ms",
        "500",
        "--health-check-failure-threshold",
        "3",
    ];
    let head = root.manta(&[&["start", "--head", "--port", "0", "--num-cpus", "1"][..], &fast].concat());
    assert!(head.status.success(), "{}", text(&head.stderr));
    let (address, token) = (root.latest("gcs_address"), root.latest("token"));
    let head_pids = root.pids();
    let node = root.manta(&["start", "--address", &address, "--token", &token, "--num-cpus", "1"]);
    assert!(node.status.success(), "{}", text(&node.stderr));
    let victim = *root.pids().iter().find(|pid| !head_pids.contains(pid)).expect("the new node's raylet");
    // SAFETY: a signal to a daemon this test started.
    unsafe { libc::kill(victim as libc::pid_t, libc::SIGKILL) };
    let status = || text(&root.manta(&["status", "--address", &address, "--token", &token]).stdout);
    wait_until("the dead node is marked dead", || status().contains("1 node(s) alive, 1 dead"));
    let listed = status();
    assert!(listed.contains("died: missed 3 health checks in a row"), "{listed}");
    assert!(
        listed.contains("Resources in use (alive nodes): CPU 0/1"),
        "the dead node's are not counted: {listed}"
    );
}

#[test]
fn a_node_whose_gcs_is_gone_leaves_instead_of_serving_nothing() {
    let root = Root::new("orphan");
    let fast = ["--health-check-period-ms", "100", "--gcs-timeout-ms", "1500"];
    let head = root.manta(&[&["start", "--head", "--port", "0", "--num-cpus", "1"][..], &fast].concat());
    assert!(head.status.success(), "{}", text(&head.stderr));
    let pid = |name: &str| -> u32 {
        let path = root.0.join(format!("session_latest/pids/{name}.pid"));
        std::fs::read_to_string(path).unwrap().trim().parse().unwrap()
    };
    let (gcs_pid, raylet_pid) = (pid("gcs"), pid("raylet"));
    // SAFETY: a signal to a daemon this test started.
    unsafe { libc::kill(gcs_pid as libc::pid_t, libc::SIGKILL) };
    wait_until("the raylet leaves", || !alive(raylet_pid));
    assert!(text(&root.manta(&["stop"]).stdout).contains("No Manta daemons"), "nothing is left to stop");
}

#[test]
fn a_gcs_started_again_on_its_storage_remembers_the_cluster_it_had() {
    let root = Root::new("storage");
    let storage = root.0.join("gcs-tables");
    let storage_arg = storage.display().to_string();
    let quick = [
        "--health-check-period-ms",
        "200",
        "--health-check-timeout-ms",
        "200",
        "--health-check-failure-threshold",
        "2",
    ];
    let start = |root: &Root| {
        let mut args = vec!["start", "--head", "--port", "0", "--num-cpus", "1", "--storage", &storage_arg];
        args.extend(quick);
        let head = root.manta(&args);
        assert!(head.status.success(), "{}", text(&head.stderr));
    };
    start(&root);
    let first = text(&root.manta(&["status"]).stdout);
    assert!(first.contains("1 node(s) alive, 0 dead"), "{first}");
    assert!(storage.join("gcs.redb").is_file(), "the tables are on disk");
    let stopped = root.manta(&["stop"]);
    assert!(stopped.status.success(), "{}", text(&stopped.stderr));

    // A new GCS on the same storage finds the first head's node record, checks it, and finds
    // it dead; with the tables in memory it would know only the new head.
    start(&root);
    let mut listed = String::new();
    wait_until("the restarted GCS lists the old node as dead", || {
        listed = text(&root.manta(&["status"]).stdout);
        listed.contains("1 node(s) alive, 1 dead")
    });
    // Storage that cannot be opened is a one-line error, and nothing is left running.
    let _ = root.manta(&["stop"]);
    std::fs::write(root.0.join("not-a-dir"), b"x").unwrap();
    let bad = root.0.join("not-a-dir").display().to_string();
    let refused = root.manta(&["start", "--head", "--port", "0", "--num-cpus", "1", "--storage", &bad]);
    assert_eq!(refused.status.code(), Some(1), "{listed}");
    assert!(text(&refused.stderr).contains("not-a-dir"), "{}", text(&refused.stderr));
    // Only with --head.
    let joined = root.manta(&["start", "--address", "127.0.0.1:1", "--token", "x", "--storage", &bad]);
    assert_eq!(joined.status.code(), Some(1), "{}", text(&joined.stderr));
    assert!(text(&joined.stderr).contains("goes with --head"), "{}", text(&joined.stderr));
}
