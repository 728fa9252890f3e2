//! Ray Core's semantics end to end on the embedded cluster, through real worker processes of
//! this test binary: nested tasks, refs as arguments (resolved at the top level, passed on when
//! nested), `Result` errors, `wait`, cancellation, actors (ordering, handles passed to tasks,
//! named actors, async concurrency, restarts, kill), `ActorPool`, and 200 actors.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use manta::{ActorError, Config, ObjectRef, SchedulingStrategy, TaskError};

fn cluster() {
    static CLUSTER: OnceLock<manta::Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let config = Config {
            num_cpus: 4,
            max_workers: Some(6),
            max_retries: 1,
            resources: vec![("gate".to_owned(), 1.0), ("orphan_gate".to_owned(), 1.0)],
            ..Config::default()
        };
        manta::init_with(config).unwrap()
    });
}

#[manta::remote]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

/// Submits two tasks from inside a task and gets them.
#[manta::remote]
fn fan_out(n: i64) -> (i64, u32) {
    let parts: Vec<ObjectRef<i64>> = (0..2).map(|index| add::remote(n, index)).collect();
    (manta::get_all(&parts).unwrap().into_iter().sum(), std::process::id())
}

/// Receives refs nested in a value: they arrive as refs, and this task gets them itself.
#[manta::remote]
fn sum_refs(refs: Vec<ObjectRef<i64>>) -> i64 {
    refs.iter().map(|reference| reference.get().unwrap()).sum()
}

#[manta::remote]
fn parse(text: String) -> Result<i64, std::num::ParseIntError> {
    text.parse()
}

/// A user's error type that serialises: callers get it back as a value.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
enum QuotaError {
    Over { by: u64 },
    NoAccount(String),
}

impl std::fmt::Display for QuotaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QuotaError::Over { by } => write!(f, "over quota by {by}"),
            QuotaError::NoAccount(account) => write!(f, "no account {account:?}"),
        }
    }
}

#[manta::remote]
fn withdraw(account: String, amount: u64) -> Result<i64, QuotaError> {
    match (account.as_str(), amount) {
        ("alice", amount) if amount <= 10 => Ok(10 - amount as i64),
        ("alice", amount) => Err(QuotaError::Over { by: amount - 10 }),
        _ => Err(QuotaError::NoAccount(account)),
    }
}

#[manta::remote]
fn fail_task(message: String) -> u64 {
    panic!("{message}")
}

#[manta::remote]
fn nap(millis: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(millis));
    millis
}

/// Holds the `gate` resource until `release` exists (a file), so tasks needing it queue. Says
/// it runs by creating `<release>.running`.
#[manta::remote]
fn hold_gate(release: String) -> bool {
    std::fs::write(format!("{release}.running"), b"").unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !std::path::Path::new(&release).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Waits (bounded) until the `hold_gate` task released by `release` runs.
fn wait_until_running(release: &std::path::Path) {
    let running = format!("{}.running", release.display());
    let deadline = Instant::now() + Duration::from_secs(120);
    while !std::path::Path::new(&running).exists() {
        assert!(Instant::now() < deadline, "the gate task never ran");
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = std::fs::remove_file(&running);
}

/// Runs until its caller cancels it (says it runs by creating `<marker>.running`, and that it
/// saw the cancel by creating `<marker>.saw`).
#[manta::remote]
fn run_until_cancelled(marker: String) -> bool {
    std::fs::write(format!("{marker}.running"), b"").expect("the marker is writable");
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if manta::is_cancelled() {
            std::fs::write(format!("{marker}.saw"), b"").expect("the marker is writable");
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

#[test]
fn a_running_task_is_cancelled_without_force_and_can_see_it() {
    cluster();
    let marker = std::env::temp_dir().join(format!("manta-cancel-running-{}", std::process::id()));
    let saw = format!("{}.saw", marker.display());
    let _ = std::fs::remove_file(&saw);
    assert!(!manta::is_cancelled(), "nothing to cancel in the driver");
    let running = run_until_cancelled::remote(marker.display().to_string());
    wait_until_running(&marker);
    // Ray: a running task is cancelled at once, without killing its worker; it may notice.
    assert!(manta::cancel(&running));
    assert!(matches!(running.get_timeout(Duration::from_secs(60)), Err(TaskError::Cancelled { .. })));
    let deadline = Instant::now() + Duration::from_secs(120);
    while !std::path::Path::new(&saw).exists() {
        assert!(Instant::now() < deadline, "the task never saw its cancel");
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = std::fs::remove_file(&saw);
}

/// Runs until cancelled or until `release` exists (says it runs by creating
/// `<marker>.running`); returns whether it saw a cancel.
#[manta::remote]
fn child_until(marker: String, release: String) -> bool {
    std::fs::write(format!("{marker}.running"), b"").unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !manta::is_cancelled() && !std::path::Path::new(&release).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    manta::is_cancelled()
}

/// Submits `child_until` and writes what its `get` gave into `<marker>.outcome`.
#[manta::remote]
fn parent_of_child(marker: String, release: String) -> bool {
    let child = child_until::remote(format!("{marker}.child"), release);
    let outcome = child.get();
    std::fs::write(format!("{marker}.outcome"), format!("{outcome:?}")).unwrap();
    true
}

/// Cancels the task making `target[0]`, a ref it borrows (nested, so not resolved).
#[manta::remote]
fn cancel_borrowed(target: Vec<ObjectRef<bool>>) -> bool {
    manta::cancel(&target[0])
}

fn read_when_written(path: &std::path::Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text;
        }
        assert!(Instant::now() < deadline, "{} was never written", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_cancel_reaches_the_tasks_the_task_submitted_unless_not_recursive() {
    cluster();
    let dir = std::env::temp_dir().join(format!("manta-cancel-tree-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for recursive in [true, false] {
        let marker = dir.join(format!("parent-{recursive}")).display().to_string();
        let release = dir.join(format!("release-{recursive}"));
        let parent = parent_of_child::remote(marker.clone(), release.display().to_string());
        wait_until_running(std::path::Path::new(&format!("{marker}.child")));
        let options = manta::CancelOptions { recursive, ..manta::CancelOptions::default() };
        assert!(manta::cancel_with(&parent, options));
        assert!(matches!(parent.get_timeout(Duration::from_secs(60)), Err(TaskError::Cancelled { .. })));
        if !recursive {
            // The child runs on, uncancelled, until it is let go.
            std::fs::write(&release, b"").unwrap();
        }
        let outcome = read_when_written(std::path::Path::new(&format!("{marker}.outcome")));
        if recursive {
            assert!(outcome.contains("Cancelled"), "the child was cancelled with its parent: {outcome}");
        } else {
            assert_eq!(outcome, "Ok(false)", "the child ran to its end, never cancelled");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_borrower_can_cancel_a_task_through_its_owner() {
    cluster();
    let marker = std::env::temp_dir().join(format!("manta-cancel-borrowed-{}", std::process::id()));
    let running = run_until_cancelled::remote(marker.display().to_string());
    wait_until_running(&marker);
    let cancelled = cancel_borrowed::remote(vec![running.clone()]);
    assert_eq!(cancelled.get_timeout(Duration::from_secs(60)), Ok(true));
    assert!(matches!(running.get_timeout(Duration::from_secs(60)), Err(TaskError::Cancelled { .. })));
    // Once the task is over, there is nothing to cancel.
    assert_eq!(cancel_borrowed::remote(vec![running]).get_timeout(Duration::from_secs(60)), Ok(false));
    let _ = std::fs::remove_file(format!("{}.saw", marker.display()));
    let _ = std::fs::remove_file(format!("{}.running", marker.display()));
}

/// Holds `orphan_gate` (writing its pid to `marker` once it does) until `release` exists.
#[manta::remote]
fn hold_orphan_gate(marker: String, release: String) -> bool {
    std::fs::write(&marker, std::process::id().to_string()).unwrap();
    hold_gate(release)
}

/// Writes its pid to `marker`, then waits for a nested task that holds `orphan_gate`.
#[manta::remote]
fn parent_of_gate_holder(marker: String, child_marker: String, release: String) -> bool {
    std::fs::write(&marker, std::process::id().to_string()).unwrap();
    hold_orphan_gate::options().resources([("orphan_gate", 1.0)]).remote(child_marker, release).get().unwrap()
}

fn wait_for_pid(marker: &std::path::Path) -> libc::pid_t {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(pid) = std::fs::read_to_string(marker).ok().and_then(|text| text.parse().ok()) {
            return pid;
        }
        assert!(Instant::now() < deadline, "{} was never written", marker.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Regression: a worker that died left the leases it had asked for (its nested tasks') held
/// for ever, with their workers running work nobody would collect. Now they end with it.
#[test]
fn the_leases_a_dead_worker_asked_for_end_with_it() {
    cluster();
    let dir = std::env::temp_dir().join(format!("manta-orphan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (marker, child_marker) = (dir.join("parent"), dir.join("child"));
    let never = dir.join("never-released").display().to_string();
    let parent = parent_of_gate_holder::options().max_retries(0).remote(
        marker.display().to_string(),
        child_marker.display().to_string(),
        never,
    );
    let parent_pid = wait_for_pid(&marker);
    wait_for_pid(&child_marker);
    // SAFETY: a signal to a worker process of this test's cluster.
    unsafe { libc::kill(parent_pid, libc::SIGKILL) };
    assert!(matches!(parent.get_timeout(Duration::from_secs(60)), Err(TaskError::WorkerDied { .. })));
    // The orphan's lease ended: the gate is free for a new holder (released at once).
    let open = dir.join("open");
    std::fs::write(&open, b"").unwrap();
    let next = hold_orphan_gate::options()
        .resources([("orphan_gate", 1.0)])
        .remote(dir.join("next").display().to_string(), open.display().to_string());
    assert_eq!(
        next.get_timeout(Duration::from_secs(60)),
        Ok(true),
        "the dead worker's lease still held the gate"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_task_submits_tasks_and_gets_their_results() {
    cluster();
    let (sum, pid) = fan_out::remote(10).get().unwrap();
    assert_eq!(sum, 10 + 11);
    assert_ne!(pid, std::process::id(), "the parent task ran in a worker");
}

/// Each level waits for the next: more tasks wait at once than the cluster has CPUs, which only
/// works because a task blocked in `get` lends its CPU (Ray's rule).
#[manta::remote]
fn chain(depth: u32) -> u32 {
    if depth == 0 {
        0
    } else {
        chain::remote(depth - 1).get().unwrap() + 1
    }
}

#[test]
fn nested_tasks_deeper_than_the_cpu_count_do_not_deadlock() {
    cluster();
    assert_eq!(chain::remote(7).get_timeout(Duration::from_secs(120)).unwrap(), 7);
}

#[test]
fn top_level_refs_are_resolved_and_nested_refs_are_passed_on() {
    cluster();
    let three = add::remote(1, 2);
    // A ref where an i64 is expected: the task gets the value.
    assert_eq!(add::remote(&three, 10).get().unwrap(), 13);
    let seven = add::remote(3, 4);
    assert_eq!(add::remote(three.clone(), &seven).get().unwrap(), 10);
    // Refs inside a value stay refs; the task resolves them itself.
    let refs: Vec<ObjectRef<i64>> = (0..5).map(|index| add::remote(index, 100)).collect();
    assert_eq!(sum_refs::remote(refs).get().unwrap(), 510);
    let put = manta::put(7i64).unwrap();
    assert_eq!(sum_refs::remote(vec![put.clone(), put]).get().unwrap(), 14);
}

#[test]
fn errors_name_the_function_and_carry_the_message() {
    cluster();
    assert_eq!(parse::remote("42".to_owned()).get().unwrap(), 42);
    match parse::remote("forty-two".to_owned()).get() {
        Err(error @ TaskError::Failed { .. }) => {
            let TaskError::Failed { function, pid, message, .. } = &error else { unreachable!() };
            assert_eq!(function, parse::NAME);
            assert_ne!(*pid, std::process::id());
            assert_eq!(message, "invalid digit found in string");
            // `ParseIntError` does not serialise: its text is all there is.
            assert_eq!(error.user_error_type(), None);
            assert_eq!(error.user_error::<String>(), None);
        }
        other => panic!("expected the Err as a task error, got {other:?}"),
    }
    // A failed dependency fails the task that needs it, with an error naming that task and
    // wrapping the dependency's (Ray's `RayTaskError` chain), through any depth.
    let failed = parse::remote("x".to_owned());
    let first = add::remote(&failed, 1);
    let second = add::remote(2, &first);
    match second.get() {
        Err(error @ TaskError::ArgumentFailed { .. }) => {
            let TaskError::ArgumentFailed { function, index, cause } = &error else { unreachable!() };
            assert_eq!((function.as_str(), *index), (add::NAME, 1));
            assert!(matches!(&**cause, TaskError::ArgumentFailed { index: 0, .. }), "{cause:?}");
            assert!(
                matches!(error.root_cause(), TaskError::Failed { function, .. } if function == parse::NAME)
            );
            assert!(error.to_string().contains("invalid digit"), "{error}");
        }
        other => panic!("expected ArgumentFailed, got {other:?}"),
    }
}

#[test]
fn an_actor_method_with_several_returns_gives_one_ref_per_value() {
    cluster();
    let log = Log::remote(1).unwrap();
    log.append(2);
    let (count, last) = log.stats();
    assert_eq!((count.get().unwrap(), last.get().unwrap()), (2, 2));
    let (head, tail) = log.split_at(1);
    drop(head);
    assert_eq!(tail.get().unwrap(), vec![2]);
    let (head, tail) = log.split_at(5);
    for error in [head.get().unwrap_err(), tail.get().unwrap_err()] {
        assert_eq!(error.user_error::<String>(), Some("5 is past the end".to_owned()));
    }
}

#[test]
fn an_error_type_that_serialises_comes_back_to_the_caller_as_a_value() {
    cluster();
    assert_eq!(withdraw::remote("alice".to_owned(), 4).get().unwrap(), 6);
    let error = withdraw::remote("alice".to_owned(), 15).get().unwrap_err();
    assert_eq!(error.user_error::<QuotaError>(), Some(QuotaError::Over { by: 5 }));
    assert_eq!(error.user_error_type(), Some(std::any::type_name::<QuotaError>()));
    assert!(error.to_string().contains("over quota by 5"), "{error}");
    // Another type asked for is not this error (even one its bytes would decode as).
    assert_eq!(error.user_error::<String>(), None);
    // Through a chain of failed arguments, the first failure's value is the one read.
    let missing = withdraw::remote("bob".to_owned(), 1);
    let chained = add::remote(1, add::remote(&missing, 2)).get().unwrap_err();
    assert!(matches!(chained, TaskError::ArgumentFailed { .. }), "{chained:?}");
    assert_eq!(chained.user_error::<QuotaError>(), Some(QuotaError::NoAccount("bob".to_owned())));
    // A panic carries no value.
    let panicked = fail_task::remote("kaboom".to_owned()).get().unwrap_err();
    assert_eq!(panicked.user_error::<String>(), None);
    // Actor methods too.
    let log = Log::remote(1).unwrap();
    let failed = log.fail("disk on fire".to_owned()).get().unwrap_err();
    assert_eq!(failed.user_error::<String>(), Some("disk on fire".to_owned()));
}

#[test]
fn wait_returns_the_first_ready_and_honours_its_timeout() {
    cluster();
    let refs = vec![nap::remote(2_000), nap::remote(1), nap::remote(2)];
    let (ready, pending) = manta::wait(&refs, 2, Some(Duration::from_secs(60))).unwrap();
    assert_eq!(ready.len(), 2);
    assert_eq!(pending, vec![refs[0].clone()]);
    let started = Instant::now();
    let (ready, pending) = manta::wait(&pending, 1, Some(Duration::from_millis(50))).unwrap();
    assert!(ready.is_empty() && pending.len() == 1, "nothing more is ready within 50 ms");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(manta::wait(&refs, 4, None).is_err(), "more returns than refs is an error");
    let (ready, pending) = manta::wait::<u64>(&[], 1, None).unwrap();
    assert!(ready.is_empty() && pending.is_empty(), "an empty list is ready at once (Ray)");
    let twice = vec![refs[1].clone(), refs[2].clone(), refs[1].clone()];
    assert!(
        matches!(manta::wait(&twice, 1, None), Err(TaskError::Invalid { .. })),
        "a ref twice is an error"
    );
}

#[manta::remote]
fn nap_then(millis: u64, value: i64) -> i64 {
    std::thread::sleep(Duration::from_millis(millis));
    value
}

#[test]
fn get_all_fails_as_soon_as_any_ref_fails() {
    cluster();
    let slow = nap_then::remote(120_000, 1);
    let failing = parse::remote("not a number".to_owned());
    let outcome = manta::get_all(&[slow.clone(), failing]);
    assert!(matches!(outcome, Err(TaskError::Failed { function, .. }) if function == parse::NAME));
    let (ready, _) = manta::wait(std::slice::from_ref(&slow), 1, Some(Duration::ZERO)).unwrap();
    assert!(ready.is_empty(), "the error came without waiting for the slow ref before it");
    assert!(manta::cancel_force(&slow));
}

#[test]
fn a_queued_task_can_be_cancelled() {
    cluster();
    let release = std::env::temp_dir().join(format!("manta-gate-{}", std::process::id()));
    let _ = std::fs::remove_file(&release);
    let holder = hold_gate::options().resources([("gate", 1.0)]).remote(release.display().to_string());
    // Wait until the holder runs, so the next one queues behind it.
    wait_until_running(&release);
    let queued = add::options().resources([("gate", 1.0)]).remote(1, 1);
    assert!(manta::cancel(&queued), "a queued task is cancelled");
    assert!(matches!(queued.get(), Err(TaskError::Cancelled { function }) if function == add::NAME));
    std::fs::write(&release, b"go").unwrap();
    assert!(holder.get().unwrap());
    let _ = std::fs::remove_file(&release);
    // The resource is free again.
    assert_eq!(add::options().resources([("gate", 1.0)]).remote(2, 2).get().unwrap(), 4);
}

#[test]
fn a_task_queued_behind_a_long_one_of_the_same_function_gets_a_worker_of_its_own() {
    cluster();
    let held = std::env::temp_dir().join(format!("manta-held-{}", std::process::id()));
    let open = std::env::temp_dir().join(format!("manta-open-{}", std::process::id()));
    let _ = std::fs::remove_file(&held);
    std::fs::write(&open, b"go").unwrap();
    let long = hold_gate::remote(held.display().to_string());
    wait_until_running(&held);
    // Same function, same resources: it must not wait for the long one's lease.
    let short = hold_gate::remote(open.display().to_string());
    assert!(short.get_timeout(Duration::from_secs(60)).unwrap());
    assert!(!long.is_ready(), "the long task is still running");
    std::fs::write(&held, b"go").unwrap();
    assert!(long.get().unwrap());
    let _ = std::fs::remove_file(&held);
    let _ = std::fs::remove_file(&open);
    let _ = std::fs::remove_file(format!("{}.running", open.display()));
}

/// The strategy reaches the raylet's policy: a task pinned (hard) to a node the cluster does
/// not have is infeasible; soft affinity and spread run it here.
#[test]
fn scheduling_strategies_reach_the_policy() {
    cluster();
    let elsewhere = manta::transport::NodeId([0xee; 16]);
    let hard = SchedulingStrategy::NodeAffinity { node: elsewhere, soft: false };
    match add::options().scheduling_strategy(&hard).remote(1, 1).get_timeout(Duration::from_secs(60)) {
        Err(TaskError::Infeasible { function, .. }) => assert_eq!(function, add::NAME),
        other => panic!("expected Infeasible for a node the cluster lacks, got {other:?}"),
    }
    let soft = SchedulingStrategy::NodeAffinity { node: elsewhere, soft: true };
    assert_eq!(add::options().scheduling_strategy(soft).remote(1, 2).get().unwrap(), 3);
    assert_eq!(add::options().scheduling_strategy(SchedulingStrategy::Spread).remote(1, 3).get().unwrap(), 4);
    let pinned = Log::options().scheduling_strategy(hard).remote(0).unwrap();
    match pinned.append(1).get_timeout(Duration::from_secs(60)) {
        Err(TaskError::ActorDied { cause, .. }) => assert!(cause.contains("infeasible"), "{cause}"),
        other => panic!("expected the pinned actor to die infeasible, got {other:?}"),
    }
}

#[test]
fn an_infeasible_task_waits_for_a_node_that_fits_and_a_timed_get_still_ends() {
    cluster();
    // Ray's default: pending (with a warning naming the demand), not failed; `tasks.rs` checks
    // the fail-fast switch.
    let pending = add::options().num_gpus(1.0).remote(1, 1);
    assert!(matches!(pending.get_timeout(Duration::from_millis(300)), Err(TaskError::Timeout(_))));
    let (ready, _) = manta::wait(std::slice::from_ref(&pending), 1, Some(Duration::ZERO)).unwrap();
    assert!(ready.is_empty(), "still waiting");
    assert!(manta::cancel(&pending));
}

#[test]
fn resource_amounts_above_one_must_be_whole() {
    cluster();
    // Ray: "Resource quantities >1 must be whole numbers"; fractions up to 1 share a unit.
    let invalid = |outcome: Result<i64, TaskError>| matches!(outcome, Err(TaskError::Invalid { .. }));
    assert!(invalid(add::options().num_cpus(1.5).remote(1, 1).get_timeout(Duration::from_secs(60))));
    assert!(invalid(add::options().num_cpus(-1.0).remote(1, 1).get_timeout(Duration::from_secs(60))));
    assert!(invalid(
        add::options().resources([("gate", 2.5)]).remote(1, 1).get_timeout(Duration::from_secs(60))
    ));
    assert_eq!(add::options().num_cpus(0.5).remote(1, 1).get_timeout(Duration::from_secs(60)).unwrap(), 2);
    assert_eq!(add::options().num_cpus(2.0).remote(1, 1).get_timeout(Duration::from_secs(60)).unwrap(), 2);
    assert!(matches!(Log::options().num_cpus(1.25).remote(0), Err(ActorError::Invalid(_))));
}

// ---- actors ----

#[manta::actor]
struct Log {
    entries: Vec<u64>,
}

#[manta::actor]
impl Log {
    fn new(first: u64) -> Self {
        Log { entries: vec![first] }
    }

    fn append(&mut self, entry: u64) -> usize {
        self.entries.push(entry);
        self.entries.len()
    }

    fn entries(&self) -> Vec<u64> {
        self.entries.clone()
    }

    /// How many entries, and the last one (two returns).
    #[manta(num_returns = 2)]
    fn stats(&self) -> (usize, u64) {
        (self.entries.len(), *self.entries.last().unwrap_or(&0))
    }

    /// The entries split at `at`, or an error past the end (two returns).
    #[manta(num_returns = 2)]
    fn split_at(&self, at: usize) -> Result<(Vec<u64>, Vec<u64>), String> {
        if at > self.entries.len() {
            return Err(format!("{at} is past the end"));
        }
        let (head, tail) = self.entries.split_at(at);
        Ok((head.to_vec(), tail.to_vec()))
    }

    /// Says it runs by creating `<marker>.running`, then naps.
    fn nap(&self, marker: String, millis: u64) -> u32 {
        std::fs::write(format!("{marker}.running"), b"").expect("the marker is writable");
        std::thread::sleep(Duration::from_millis(millis));
        std::process::id()
    }

    fn pid(&self) -> u32 {
        std::process::id()
    }

    fn fail(&self, message: String) -> Result<u64, String> {
        Err(message)
    }

    fn explode(&mut self) -> u64 {
        panic!("exploded on purpose")
    }
}

/// Calls an actor through a handle it received.
#[manta::remote]
fn append_through(log: manta::ActorHandle<Log>, entries: Vec<u64>) -> usize {
    let mut last = 0;
    for entry in entries {
        last = log.append(entry).get().unwrap();
    }
    last
}

/// Finds a named actor from inside a task.
#[manta::remote]
fn append_to_named(name: String, entry: u64) -> usize {
    let log = manta::get_actor::<Log>(&name).unwrap();
    log.append(entry).get().unwrap()
}

#[test]
fn calls_from_one_caller_run_in_submission_order() {
    cluster();
    let log = Log::remote(0).unwrap();
    let results: Vec<ObjectRef<usize>> = (1..=300).map(|entry| log.append(entry)).collect();
    let lengths = manta::get_all(&results).unwrap();
    assert_eq!(lengths, (2..=301).collect::<Vec<usize>>());
    assert_eq!(log.entries().get().unwrap(), (0..=300).collect::<Vec<u64>>());
    assert_ne!(log.pid().get().unwrap(), std::process::id());
}

#[test]
fn an_actor_handle_passed_to_a_task_reaches_the_same_actor() {
    cluster();
    let log = Log::remote(7).unwrap();
    assert_eq!(append_through::remote(log.clone(), vec![8, 9]).get().unwrap(), 3);
    assert_eq!(log.entries().get().unwrap(), vec![7, 8, 9]);
}

#[test]
fn a_named_actor_is_found_from_another_task() {
    cluster();
    let log = Log::options().name("shared-log").remote(1).unwrap();
    assert_eq!(append_to_named::remote("shared-log".to_owned(), 2).get().unwrap(), 2);
    assert_eq!(log.entries().get().unwrap(), vec![1, 2]);
    assert!(matches!(
        Log::options().name("shared-log").remote(0),
        Err(ActorError::NameTaken { name, .. }) if name == "shared-log"
    ));
    assert!(matches!(manta::get_actor::<Log>("no-such-log"), Err(ActorError::NotFound { .. })));
    assert!(matches!(manta::get_actor::<Gauge>("shared-log"), Err(ActorError::WrongClass { .. })));
    assert_eq!(manta::get_actor::<Log>("shared-log").unwrap().actor_id(), log.actor_id(), "one typed id");
}

/// Gets or creates the detached log `name` (starting at `first`); returns its id.
#[manta::remote]
fn get_or_create_log(name: String, first: u64) -> String {
    let log = Log::options().name(name).detached(true).get_if_exists(true).remote(first).unwrap();
    log.actor_id().to_string()
}

#[test]
fn get_if_exists_gets_the_named_actor_or_creates_it() {
    cluster();
    let first = Log::options().name("get-or-create").get_if_exists(true).remote(7).unwrap();
    let second = Log::options().name("get-or-create").get_if_exists(true).remote(99).unwrap();
    assert_eq!(first.actor_id(), second.actor_id());
    assert_eq!(second.entries().get().unwrap(), vec![7], "the second creator's arguments are ignored");
    assert!(matches!(
        Gauge::options().name("get-or-create").get_if_exists(true).remote(),
        Err(ActorError::WrongClass { .. })
    ));
    assert!(matches!(Log::options().get_if_exists(true).remote(0), Err(ActorError::Invalid(_))), "no name");
    // Creators racing from four tasks all get the one actor.
    let ids: Vec<ObjectRef<String>> =
        (0..4).map(|first| get_or_create_log::remote("get-or-create-raced".to_owned(), first)).collect();
    let ids = manta::get_all(&ids).unwrap();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert!(manta::kill(&manta::get_actor::<Log>("get-or-create-raced").unwrap()).unwrap());
}

#[test]
fn named_actors_are_listed_per_namespace_or_all() {
    cluster();
    let here = Log::options().name("listed-here").remote(0).unwrap();
    let _there = Log::options().name("listed-there").namespace("elsewhere").remote(0).unwrap();
    let named = |all| manta::state::list_named_actors(all).unwrap();
    let entry = |namespace: &str, name: &str| manta::state::NamedActor {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    };
    assert!(named(false).contains(&entry("default", "listed-here")));
    assert!(!named(false).iter().any(|actor| actor.namespace == "elsewhere"), "only this namespace");
    assert!(named(true).contains(&entry("elsewhere", "listed-there")));
    assert!(manta::kill(&here).unwrap());
    assert!(!named(false).contains(&entry("default", "listed-here")), "a dead actor is not listed");
}

#[test]
fn invalid_actor_options_are_refused() {
    cluster();
    for (restarts, retries) in [(-2, 0), (0, -2), (i64::MIN, -1)] {
        let options = Log::options().max_restarts(restarts).max_task_retries(retries);
        assert!(matches!(options.remote(0), Err(ActorError::Invalid(_))), "{restarts}, {retries}");
    }
    // Empty or blank names and namespaces (Ray: ValueError).
    for blank in ["", "  ", "\t"] {
        assert!(
            matches!(Log::options().name(blank).remote(0), Err(ActorError::Invalid(_))),
            "name {blank:?}"
        );
        let in_blank = Log::options().name("log-in-a-blank-namespace").namespace(blank).remote(0);
        assert!(matches!(in_blank, Err(ActorError::Invalid(_))), "namespace {blank:?}");
        assert!(matches!(manta::get_actor::<Log>(blank), Err(ActorError::Invalid(_))), "get {blank:?}");
        assert!(matches!(manta::get_actor_in::<Log>("a-log", blank), Err(ActorError::Invalid(_))));
    }
}

#[test]
fn actor_errors_and_panics_fail_the_call_and_the_actor_lives_on() {
    cluster();
    let log = Log::remote(0).unwrap();
    match log.fail("no luck".to_owned()).get() {
        Err(TaskError::Failed { function, message, .. }) => {
            assert!(function.ends_with("Log.fail"), "{function}");
            assert_eq!(message, "no luck");
        }
        other => panic!("expected the method's Err, got {other:?}"),
    }
    assert!(
        matches!(log.explode().get(), Err(TaskError::Failed { message, .. }) if message.contains("exploded on purpose"))
    );
    assert_eq!(log.append(1).get().unwrap(), 2, "the actor kept its state");
}

#[test]
fn a_killed_actor_fails_its_calls_with_actor_died() {
    cluster();
    let log = Log::remote(0).unwrap();
    assert_eq!(log.append(1).get().unwrap(), 2);
    assert!(manta::kill(&log).unwrap());
    match log.append(2).get_timeout(Duration::from_secs(60)) {
        Err(TaskError::ActorDied { cause, .. }) => assert!(cause.contains("manta::kill"), "{cause}"),
        other => panic!("expected ActorDied, got {other:?}"),
    }
}

#[test]
fn an_actor_whose_worker_dies_restarts_while_it_has_restarts_left() {
    cluster();
    let log = Log::options().max_restarts(1).remote(5).unwrap();
    assert_eq!(log.append(6).get().unwrap(), 2);
    let first = log.pid().get().unwrap();
    // SAFETY: a signal to a worker process this test's cluster started.
    unsafe {
        libc::kill(first as libc::pid_t, libc::SIGKILL);
    }
    // The next incarnation is constructed afresh from the same arguments.
    let deadline = Instant::now() + Duration::from_secs(60);
    let entries = loop {
        match log.entries().get_timeout(Duration::from_secs(60)) {
            Ok(entries) => break entries,
            Err(TaskError::ActorDied { .. }) if Instant::now() < deadline => continue,
            Err(error) => panic!("the actor did not come back: {error}"),
        }
    };
    assert_eq!(entries, vec![5]);
    let second = log.pid().get().unwrap();
    assert_ne!(first, second);
    // No restarts left: the next death is final.
    // SAFETY: as above.
    unsafe {
        libc::kill(second as libc::pid_t, libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match log.entries().get_timeout(Duration::from_secs(60)) {
            Err(TaskError::ActorDied { cause, .. }) => {
                assert!(cause.contains("signal 9"), "the cause names the signal: {cause}");
                break;
            }
            Ok(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            other => panic!("expected ActorDied, got {other:?}"),
        }
    }
}

#[manta::actor]
struct Gauge {
    running: std::sync::atomic::AtomicU32,
    peak: std::sync::atomic::AtomicU32,
}

#[manta::actor]
impl Gauge {
    fn new() -> Self {
        Gauge { running: Default::default(), peak: Default::default() }
    }

    /// Counts how many calls run at once.
    async fn work(&self, millis: u64) -> u32 {
        use std::sync::atomic::Ordering;
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(millis)).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        now
    }

    /// Awaits refs (the async form of `get`) inside an async method.
    async fn total(&self, refs: Vec<ObjectRef<i64>>) -> i64 {
        let mut total = 0;
        for reference in refs {
            total += reference.await.unwrap();
        }
        total
    }

    fn peak(&self) -> u32 {
        self.peak.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[test]
fn async_methods_run_concurrently_up_to_max_concurrency() {
    cluster();
    let gauge = Gauge::options().max_concurrency(3).remote().unwrap();
    let calls: Vec<ObjectRef<u32>> = (0..12).map(|_| gauge.work(300)).collect();
    manta::get_all(&calls).unwrap();
    let peak = gauge.peak().get().unwrap();
    assert!(peak <= 3, "at most max_concurrency calls at once, saw {peak}");
    assert!(peak >= 2, "async calls overlapped (peak {peak})");
    let refs: Vec<ObjectRef<i64>> = (1..=4).map(|value| add::remote(value, 0)).collect();
    assert_eq!(gauge.total(refs).get().unwrap(), 10, "refs awaited inside an async method");
}

#[manta::actor]
struct Doubler {
    factor: i64,
}

#[manta::actor]
impl Doubler {
    fn new(factor: i64) -> Self {
        Doubler { factor }
    }

    fn apply(&self, value: i64) -> i64 {
        std::thread::sleep(Duration::from_millis((value % 3) as u64 * 20));
        value * self.factor
    }

    fn pid(&self) -> u32 {
        std::process::id()
    }
}

#[test]
fn an_actor_pool_maps_in_input_order() {
    cluster();
    let actors = (0..3).map(|_| Doubler::remote(2).unwrap()).collect();
    let mut pool = manta::util::ActorPool::new(actors);
    let results = pool.map(|actor, value| actor.apply(value), 0..20i64);
    let values: Vec<i64> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(values, (0..20).map(|value| value * 2).collect::<Vec<i64>>());
    let mut unordered: Vec<i64> = pool
        .map_unordered(|actor, value| actor.apply(value), 0..9i64)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    unordered.sort_unstable();
    assert_eq!(unordered, (0..9).map(|value| value * 2).collect::<Vec<i64>>());
}

#[test]
fn an_actor_pool_keeps_rays_semantics_at_the_edges() {
    cluster();
    let first = Slow::remote().unwrap();
    let second = Slow::remote().unwrap();
    let mut pool = manta::util::ActorPool::new(vec![first.clone(), second.clone()]);
    assert!(matches!(pool.push(first.clone()), Err(ActorError::Invalid(_))), "an idle member again");
    // A long item (on `first`), then a timed wait that gives up without dropping it.
    pool.submit(|actor, millis| actor.nap(millis), 120_000u64);
    assert!(matches!(pool.push(first.clone()), Err(ActorError::Invalid(_))), "a busy member again");
    let timeout = Duration::from_millis(50);
    assert!(matches!(pool.get_next_timeout(timeout, false), Some(Err(TaskError::Timeout(_)))));
    assert!(pool.has_next(), "still to come");
    // A map returns its own results only, without waiting for the long item before it.
    let results = pool.map(|actor, millis| actor.nap(millis), vec![1u64, 2, 3]);
    assert_eq!(results.len(), 3);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(!pool.has_next());
    // A timed-out item skipped for good.
    pool.submit(|actor, millis| actor.nap(millis), 120_000u64);
    assert!(matches!(pool.get_next_timeout(timeout, true), Some(Err(TaskError::Timeout(_)))));
    assert!(!pool.has_next(), "ignored");
    assert!(pool.get_next().is_none());
    assert!(manta::kill(&first).unwrap() && manta::kill(&second).unwrap());
}

/// Where the code runs, as strings: (task id, actor id, pid, assigned resources, node id).
type Whereabouts = (Option<String>, Option<String>, u32, Vec<(String, f64)>, String);

fn whereabouts() -> Whereabouts {
    let context = manta::get_runtime_context().unwrap();
    (
        context.task_id.map(|id| id.to_string()),
        context.actor_id.map(|id| id.to_string()),
        context.worker_pid,
        context.assigned_resources,
        context.node_id.to_string(),
    )
}

#[manta::remote]
fn where_am_i() -> Whereabouts {
    whereabouts()
}

#[manta::actor]
struct Locator;

#[manta::actor]
impl Locator {
    fn new() -> Self {
        Locator
    }

    fn where_am_i(&self) -> Whereabouts {
        whereabouts()
    }
}

#[test]
fn the_runtime_context_says_where_the_code_runs() {
    cluster();
    let driver = manta::get_runtime_context().unwrap();
    assert_eq!(driver.worker_pid, std::process::id());
    assert!(driver.task_id.is_none() && driver.actor_id.is_none() && driver.assigned_resources.is_empty());
    let task = where_am_i::options().num_cpus(2.0).remote();
    let (task_id, actor_id, pid, resources, node) = task.get().unwrap();
    assert_eq!(task_id, Some(task.id()), "the task's id is its result's");
    assert_eq!(actor_id, None);
    assert_ne!(pid, std::process::id(), "in a worker");
    assert_eq!(resources, vec![("CPU".to_owned(), 2.0)]);
    assert_eq!(node, driver.node_id.to_string());
    let locator = Locator::options().num_cpus(1.0).remote().unwrap();
    let call = locator.where_am_i();
    let (task_id, actor_id, _, resources, _) = call.get().unwrap();
    assert_eq!(task_id, Some(call.id()));
    assert_eq!(actor_id, Some(locator.actor_id().to_string()));
    assert_eq!(resources, vec![("CPU".to_owned(), 1.0)]);
    assert!(manta::kill(&locator).unwrap());
}

#[test]
fn two_hundred_actors_are_created_and_each_called_once() {
    cluster();
    let started = Instant::now();
    let actors: Vec<manta::ActorHandle<Doubler>> =
        (0..200).map(|index| Doubler::remote(index).unwrap()).collect();
    let results: Vec<ObjectRef<i64>> = actors.iter().map(|actor| actor.apply(3)).collect();
    let values = manta::get_all(&results).unwrap();
    assert_eq!(values, (0..200).map(|index| index * 3).collect::<Vec<i64>>());
    eprintln!("200 actors created and called in {:?}", started.elapsed());
    let pids: std::collections::HashSet<u32> =
        manta::get_all(&actors.iter().map(|actor| actor.pid()).collect::<Vec<_>>())
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(pids.len(), 200, "each actor lives in a worker process of its own");
    assert!(!pids.contains(&std::process::id()));
}

#[test]
fn an_actor_is_killed_when_its_last_handle_is_dropped_unless_detached() {
    cluster();
    let ephemeral = Log::options().name("ephemeral-log").remote(1).unwrap();
    let copy = ephemeral.clone();
    assert_eq!(append_through::remote(copy.clone(), vec![2]).get().unwrap(), 2);
    drop(ephemeral);
    assert!(manta::get_actor::<Log>("ephemeral-log").is_ok(), "a copy of the handle is still held");
    drop(copy);
    let deadline = Instant::now() + Duration::from_secs(60);
    while manta::get_actor::<Log>("ephemeral-log").is_ok() {
        assert!(Instant::now() < deadline, "the actor outlived its last handle");
        std::thread::sleep(Duration::from_millis(20));
    }
    let lasting = Log::options().name("lasting-log").detached(true).remote(1).unwrap();
    drop(lasting);
    std::thread::sleep(Duration::from_millis(300));
    let found = manta::get_actor::<Log>("lasting-log").expect("a detached actor outlives its handles");
    assert_eq!(found.append(2).get().unwrap(), 2);
    assert!(manta::kill(&found).unwrap());
}

#[test]
fn calls_made_before_the_last_handle_went_still_run() {
    cluster();
    // Ray: `Counter.remote().add.remote(1)` returns 1; the actor ends after the calls made
    // through its last handle.
    let appended = Log::options().name("short-lived-log").remote(1).unwrap().append(2);
    assert_eq!(appended.get_timeout(Duration::from_secs(60)).unwrap(), 2);
    let log = Log::options().name("short-lived-log-2").remote(1).unwrap();
    let calls: Vec<ObjectRef<usize>> = (2..100).map(|entry| log.append(entry)).collect();
    drop(log);
    for (index, call) in calls.iter().enumerate() {
        assert_eq!(call.get_timeout(Duration::from_secs(60)).unwrap(), index + 2);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while manta::get_actor::<Log>("short-lived-log").is_ok()
        || manta::get_actor::<Log>("short-lived-log-2").is_ok()
    {
        assert!(Instant::now() < deadline, "the actors outlived their last handles and calls");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[manta::actor]
struct Slow;

#[manta::actor]
impl Slow {
    fn new() -> Self {
        Slow
    }

    fn pid(&self) -> u32 {
        std::process::id()
    }

    fn nap(&self, millis: u64) -> u32 {
        std::thread::sleep(Duration::from_millis(millis));
        std::process::id()
    }
}

#[test]
fn a_call_in_flight_when_its_actor_dies_is_retried_on_the_restarted_actor() {
    cluster();
    let slow = Slow::options().max_restarts(1).max_task_retries(1).remote().unwrap();
    let first = slow.pid().get().unwrap();
    let in_flight = slow.nap(1_000);
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: a signal to a worker process this test's cluster started.
    unsafe {
        libc::kill(first as libc::pid_t, libc::SIGKILL);
    }
    let second = in_flight.get_timeout(Duration::from_secs(60)).unwrap();
    assert_ne!(first, second, "the call ran again, on the new incarnation");
}

#[test]
fn calls_retried_after_their_actor_died_keep_their_order() {
    cluster();
    // Unlimited retries are written as unlimited restarts are: -1.
    let log = Log::options().max_restarts(1).max_task_retries(-1).remote(0).unwrap();
    let first = log.pid().get().unwrap();
    // The actor naps while 200 calls queue up behind the nap; its worker dies; 100 more calls
    // follow while it restarts. Every call runs again on the new incarnation, in the order it
    // was made (Ray's ordering guarantee for one caller survives the restart).
    let marker = std::env::temp_dir().join(format!("manta-retry-order-{}", std::process::id()));
    let nap = log.nap(marker.display().to_string(), 1_000);
    let queued: Vec<ObjectRef<usize>> = (1..=200).map(|entry| log.append(entry)).collect();
    // The calls are queued behind the nap once it runs.
    wait_until_running(&marker);
    // SAFETY: a signal to a worker process this test's cluster started.
    unsafe {
        libc::kill(first as libc::pid_t, libc::SIGKILL);
    }
    let later: Vec<ObjectRef<usize>> = (201..=300).map(|entry| log.append(entry)).collect();
    let second = nap.get_timeout(Duration::from_secs(60)).unwrap();
    assert_ne!(first, second, "the nap ran again, on the new incarnation");
    for (index, call) in queued.iter().chain(&later).enumerate() {
        assert_eq!(call.get_timeout(Duration::from_secs(60)).unwrap(), index + 2, "call {}", index + 1);
    }
    assert_eq!(log.entries().get().unwrap(), (0..=300).collect::<Vec<u64>>());
    // The retried nap said it runs again.
    let _ = std::fs::remove_file(format!("{}.running", marker.display()));
}

/// An actor whose constructor ends its worker process the first time (a marker file says it
/// did), fails with an error when asked to, and otherwise succeeds.
#[manta::actor]
struct Fragile;

#[manta::actor]
impl Fragile {
    fn new(marker: String, fail: bool) -> Result<Self, String> {
        if fail {
            return Err("refusing to start".to_owned());
        }
        if std::fs::metadata(&marker).is_err() {
            std::fs::write(&marker, b"").expect("the marker is writable");
            std::process::exit(3);
        }
        Ok(Fragile)
    }

    fn pid(&self) -> u32 {
        std::process::id()
    }
}

fn actor_info(id: manta::state::ActorId) -> manta::state::ActorInfo {
    let actors = manta::state::list_actors().unwrap();
    actors.into_iter().find(|info| info.actor_id == id).expect("listed")
}

#[test]
fn a_constructor_whose_worker_dies_is_restarted_and_one_that_fails_is_not() {
    cluster();
    let marker = |name: &str| {
        let path = std::env::temp_dir().join(format!("manta-{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        path.display().to_string()
    };
    // Ray: a worker that dies while the constructor runs is restarted while restarts remain.
    let restarted = Fragile::options().max_restarts(1).remote(marker("fragile-1"), false).unwrap();
    restarted.pid().get_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(actor_info(restarted.actor_id()).restarts, 1);
    // Without restarts left, that death is final, and says so.
    let doomed = Fragile::remote(marker("fragile-2"), false).unwrap();
    match doomed.pid().get_timeout(Duration::from_secs(60)) {
        Err(TaskError::ActorDied { cause, .. }) => assert!(cause.contains("while it started"), "{cause}"),
        other => panic!("expected ActorDied, got {other:?}"),
    }
    // A constructor that returns an error is a permanent death carrying it, restarts or not.
    let refused = Fragile::options().max_restarts(3).remote(marker("fragile-3"), true).unwrap();
    match refused.pid().get_timeout(Duration::from_secs(60)) {
        Err(TaskError::ActorDied { cause, .. }) => assert!(cause.contains("refusing to start"), "{cause}"),
        other => panic!("expected ActorDied, got {other:?}"),
    }
    assert_eq!(actor_info(refused.actor_id()).restarts, 0);
}

#[manta::actor]
struct Quitter;

#[manta::actor]
impl Quitter {
    fn new() -> Self {
        Quitter
    }

    fn pid(&self) -> u32 {
        std::process::id()
    }

    fn quit(&self) -> Result<u32, String> {
        let exited = manta::exit_actor().map_err(|error| error.to_string())?;
        match exited {}
    }
}

#[test]
fn an_actor_that_calls_exit_actor_ends_for_good() {
    cluster();
    assert!(matches!(manta::exit_actor(), Err(ActorError::Invalid(_))), "only inside an actor's method");
    // Restarts and retries left: an intended exit uses neither (Ray).
    let quitter = Quitter::options().max_restarts(3).max_task_retries(2).remote().unwrap();
    quitter.pid().get_timeout(Duration::from_secs(60)).unwrap();
    let quit = quitter.quit();
    let queued = quitter.pid();
    for (what, outcome) in [
        ("quit", quit.get_timeout(Duration::from_secs(60))),
        ("queued", queued.get_timeout(Duration::from_secs(60))),
    ] {
        match outcome {
            Err(TaskError::ActorDied { cause, .. }) => {
                assert!(cause.contains("exit_actor"), "{what}: {cause}")
            }
            other => panic!("{what}: expected ActorDied, got {other:?}"),
        }
    }
    let info = actor_info(quitter.actor_id());
    assert_eq!((info.state, info.restarts), (manta::state::ActorState::Dead, 0));
    assert!(matches!(quitter.pid().get_timeout(Duration::from_secs(60)), Err(TaskError::ActorDied { .. })));
}

#[manta::actor]
struct SlowStart;

#[manta::actor]
impl SlowStart {
    fn new(millis: u64) -> Self {
        std::thread::sleep(Duration::from_millis(millis));
        SlowStart
    }

    fn pid(&self) -> u32 {
        std::process::id()
    }
}

#[test]
fn a_call_made_while_its_actor_restarts_waits_for_the_new_incarnation() {
    cluster();
    // No retries: the call must not be sent to the dead incarnation at all.
    let actor = SlowStart::options().max_restarts(1).remote(1_000).unwrap();
    let first = actor.pid().get().unwrap();
    // SAFETY: a signal to a worker process this test's cluster started.
    unsafe {
        libc::kill(first as libc::pid_t, libc::SIGKILL);
    }
    // The cluster knows of the death; the new incarnation's constructor takes a second.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let info = actor_info(actor.actor_id());
        if info.restarts == 1 {
            assert_eq!(info.state, manta::state::ActorState::Restarting, "the restart took a second");
            break;
        }
        assert!(Instant::now() < deadline, "the death was never recorded");
        std::thread::sleep(Duration::from_millis(5));
    }
    let second = actor.pid().get_timeout(Duration::from_secs(60)).unwrap();
    assert_ne!(first, second, "answered by the new incarnation");
}

/// Calls `count` methods of `log` without waiting, then gets them all.
#[manta::remote]
fn flood(log: manta::ActorHandle<Log>, count: u64) -> usize {
    let refs: Vec<ObjectRef<usize>> = (0..count).map(|entry| log.append(entry)).collect();
    manta::get_all(&refs).unwrap().len()
}

#[test]
fn many_callers_with_thousands_of_calls_in_flight_all_complete() {
    cluster();
    // Regression: calls sent out of order filled the worker's bounded dispatch while the call
    // they waited for was stuck behind them on the connection.
    let log = Log::remote(0).unwrap();
    let floods: Vec<ObjectRef<usize>> = (0..4).map(|_| flood::remote(log.clone(), 2_500)).collect();
    let done: Vec<usize> =
        floods.iter().map(|flood| flood.get_timeout(Duration::from_secs(300)).unwrap()).collect();
    assert_eq!(done, vec![2_500; 4]);
    assert_eq!(log.entries().get().unwrap().len(), 10_001);
}

/// Waits (bounded) until `path` exists.
fn wait_for_file(path: &std::path::Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !path.exists() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

#[manta::actor]
struct Switchboard;

#[manta::actor(concurrency_groups(io = 2, compute = 1))]
impl Switchboard {
    fn new() -> Self {
        Switchboard
    }

    /// Says it runs (`<release>.running`), then holds its group's slot until `release` exists.
    #[manta(concurrency_group = "compute")]
    fn crunch(&self, release: String) -> bool {
        std::fs::write(format!("{release}.running"), b"").unwrap();
        wait_for_file(std::path::Path::new(&release))
    }

    /// Meets another call of the same group: both must run at once to return `true`.
    #[manta(concurrency_group = "io")]
    fn meet(&self, mine: String, theirs: String) -> bool {
        std::fs::write(&mine, b"").unwrap();
        wait_for_file(std::path::Path::new(&theirs))
    }

    #[manta(concurrency_group = "io")]
    fn ping(&self) -> u32 {
        std::process::id()
    }

    /// In the default group.
    fn plain(&self) -> u32 {
        std::process::id()
    }

    #[manta(concurrency_group = "io")]
    fn quit(&self) -> Result<u32, String> {
        let exited = manta::exit_actor().map_err(|error| error.to_string())?;
        match exited {}
    }
}

#[test]
fn concurrency_groups_run_their_calls_apart_each_up_to_its_size() {
    cluster();
    let scratch = std::env::temp_dir().join(format!("manta-groups-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let path = |name: &str| scratch.join(name).display().to_string();
    let board = Switchboard::remote().unwrap();
    // A full group (compute, 1 slot) holds back its own calls only.
    let first = board.crunch(path("release"));
    wait_until_running(&scratch.join("release"));
    let second = board.crunch(path("release"));
    assert!(board.ping().get_timeout(Duration::from_secs(60)).is_ok(), "io runs while compute is full");
    assert!(board.plain().get_timeout(Duration::from_secs(60)).is_ok(), "the default group too");
    // Two io calls run at once (the group has 2 slots): each waits for the other.
    let (one, two) = (board.meet(path("one"), path("two")), board.meet(path("two"), path("one")));
    assert!(one.get_timeout(Duration::from_secs(150)).unwrap() && two.get().unwrap());
    assert!(!second.is_ready(), "the second compute call waits for the first");
    std::fs::write(scratch.join("release"), b"go").unwrap();
    assert!(
        first.get_timeout(Duration::from_secs(60)).unwrap()
            && second.get_timeout(Duration::from_secs(60)).unwrap()
    );
    // An exit from a group's method ends the actor.
    assert!(matches!(board.quit().get_timeout(Duration::from_secs(60)), Err(TaskError::ActorDied { .. })));
    assert!(matches!(board.plain().get_timeout(Duration::from_secs(60)), Err(TaskError::ActorDied { .. })));

    // The options give the groups in place of the class's: every group a method uses must be
    // there, and sizes are at least 1.
    let missing = Switchboard::options().concurrency_groups([("io", 4)]).remote();
    assert!(
        matches!(&missing, Err(ActorError::Invalid(reason)) if reason.contains("compute")),
        "{missing:?}"
    );
    let empty = Switchboard::options().concurrency_groups([("io", 0), ("compute", 1)]).remote();
    assert!(matches!(empty, Err(ActorError::Invalid(_))));
    let resized = Switchboard::options().concurrency_groups([("io", 3), ("compute", 2)]).remote().unwrap();
    assert!(resized.ping().get_timeout(Duration::from_secs(60)).is_ok());
    let _ = std::fs::remove_dir_all(&scratch);
}
