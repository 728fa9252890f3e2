//! Tasks end to end on the embedded cluster: real worker processes of this test binary, started
//! by the raylet inside this process. (A worker process re-runs this binary; its `init` call
//! turns it into a worker that never returns to the tests.)

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use manta::{Config, TaskError};

fn cluster() {
    static CLUSTER: OnceLock<manta::Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        // Fail-fast on infeasible demand (the default waits, as Ray; `runtime.rs` checks it).
        let config = Config {
            num_cpus: 2,
            max_workers: Some(4),
            max_retries: 1,
            fail_infeasible: true,
            ..Config::default()
        };
        manta::init_with(config).unwrap()
    });
}

#[test]
fn with_fail_infeasible_an_infeasible_task_fails_at_once() {
    cluster();
    match add::options().num_gpus(1.0).remote(1, 1).get_timeout(Duration::from_secs(60)) {
        Err(TaskError::Infeasible { function, .. }) => assert_eq!(function, add::NAME),
        other => panic!("expected Infeasible, got {other:?}"),
    }
}

#[manta::remote]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[manta::remote]
fn pid() -> u32 {
    std::process::id()
}

#[manta::remote]
fn fail(message: String) -> i64 {
    panic!("{message}")
}

/// Writes its worker's pid into `marker`, then works for a long time.
#[manta::remote]
fn linger(marker: String) -> u32 {
    std::fs::write(&marker, std::process::id().to_string()).unwrap();
    std::thread::sleep(Duration::from_secs(600));
    std::process::id()
}

#[test]
fn tasks_run_in_worker_processes_and_return_their_values() {
    cluster();
    let sums: Vec<_> = (0..30).map(|index| add::remote(index, 1000)).collect();
    for (index, sum) in sums.iter().enumerate() {
        assert_eq!(sum.get().unwrap(), index as i64 + 1000);
    }
    let worker = pid::remote().get().unwrap();
    assert_ne!(worker, std::process::id(), "the task ran in another process");
}

#[test]
fn a_panicking_task_reports_its_function_and_worker() {
    cluster();
    match fail::remote("kaboom".to_owned()).get() {
        Err(TaskError::Failed { function, pid, message, .. }) => {
            assert_eq!(function, fail::NAME);
            assert_ne!(pid, std::process::id());
            assert!(message.contains("kaboom"), "{message}");
        }
        other => panic!("expected a task failure, got {other:?}"),
    }
    // The worker survived its task's panic and takes new work.
    assert_eq!(add::remote(1, 2).get().unwrap(), 3);
}

#[test]
fn a_get_with_a_deadline_times_out_instead_of_hanging() {
    cluster();
    let marker = std::env::temp_dir().join(format!("manta-timeout-{}", std::process::id()));
    let slow = linger::remote(marker.display().to_string());
    assert!(matches!(slow.get_timeout(Duration::from_millis(200)), Err(TaskError::Timeout(_))));
    // Wait until it runs, then cancel it: its worker is killed and it is not retried.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "the task never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = std::fs::remove_file(&marker);
    assert!(manta::cancel_force(&slow), "a running task is cancelled with force");
    assert!(matches!(slow.get_timeout(Duration::from_secs(60)), Err(TaskError::Cancelled { .. })));
}

/// Waits for the task to write its worker's pid, then kills that worker with SIGKILL.
fn kill_worker_of(marker: &std::path::Path) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(pid) = std::fs::read_to_string(marker).ok().and_then(|text| text.parse::<u32>().ok()) {
            let _ = std::fs::remove_file(marker);
            // SAFETY: a signal to a worker process this test's cluster started.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
            return pid;
        }
        assert!(Instant::now() < deadline, "the task never started");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_task_whose_worker_is_killed_is_retried_then_fails_with_worker_died() {
    cluster();
    let marker = std::env::temp_dir().join(format!("manta-kill-{}", std::process::id()));
    let doomed = linger::remote(marker.display().to_string());
    // max_retries = 1: the first worker is killed, the retry's worker is killed too.
    let first = kill_worker_of(&marker);
    let second = kill_worker_of(&marker);
    assert_ne!(first, second, "the retry ran in a fresh worker");
    match doomed.get_timeout(Duration::from_secs(60)) {
        Err(TaskError::WorkerDied { function, attempts, pid, exit }) => {
            assert_eq!(function, linger::NAME);
            assert_eq!(attempts, 2);
            assert_eq!(pid, second);
            assert!(exit.contains("signal 9"), "the error names the signal: {exit}");
        }
        other => panic!("expected WorkerDied, got {other:?}"),
    }
    // The GCS's worker table records both deaths.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let workers = manta::state::list_workers().unwrap();
        let dead = |pid: u32| {
            workers.iter().any(|worker| {
                worker.pid == pid
                    && !worker.alive
                    && worker.exit.as_deref().is_some_and(|exit| exit.contains("signal 9"))
            })
        };
        if dead(first) && dead(second) {
            break;
        }
        assert!(Instant::now() < deadline, "worker table: {workers:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---- several returns (`num_returns`) ----

/// Splits `text` in two returns; with `big`, its first return is large (in the shared store).
#[manta::remote(num_returns = 3)]
fn split(text: String, big: bool) -> (String, usize, Vec<u8>) {
    let bytes = if big { vec![7u8; 1 << 20] } else { vec![7u8; 4] };
    (text.to_uppercase(), text.len(), bytes)
}

#[manta::remote(num_returns = 2)]
fn checked_split(text: String) -> Result<(String, String), String> {
    match text.split_once(':') {
        Some((head, tail)) => Ok((head.to_owned(), tail.to_owned())),
        None => Err(format!("no ':' in {text:?}")),
    }
}

#[manta::remote]
fn length(bytes: Vec<u8>) -> usize {
    bytes.len()
}

/// Runs until cancelled; says it runs by creating `marker`.
#[manta::remote(num_returns = 2)]
fn spin_pair(marker: String) -> (bool, u32) {
    std::fs::write(&marker, b"").unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !manta::is_cancelled() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    (manta::is_cancelled(), std::process::id())
}

#[test]
fn a_function_with_several_returns_gives_one_ref_per_value() {
    cluster();
    for big in [false, true] {
        let (text, len, bytes) = split::remote("manta".to_owned(), big);
        // Each value is an object of its own: one can be dropped, another passed to a task.
        drop(text);
        assert_eq!(len.get().unwrap(), 5);
        let expected = if big { 1 << 20 } else { 4 };
        assert_eq!(length::remote(&bytes).get().unwrap(), expected);
        assert_eq!(bytes.get().unwrap().len(), expected);
    }
    let (head, tail) = checked_split::remote("key:value".to_owned());
    assert_eq!((head.get().unwrap(), tail.get().unwrap()), ("key".to_owned(), "value".to_owned()));
    // An `Err` fails every return with it.
    let (head, tail) = checked_split::remote("plain".to_owned());
    for error in [head.get().unwrap_err(), tail.get().unwrap_err()] {
        assert_eq!(error.user_error::<String>(), Some("no ':' in \"plain\"".to_owned()), "{error:?}");
    }
}

#[test]
fn any_return_of_a_task_cancels_it() {
    cluster();
    let marker = std::env::temp_dir().join(format!("manta-spin-pair-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let (saw, pid) = spin_pair::remote(marker.display().to_string());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "the task never ran");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(manta::cancel(&pid), "the second return names the task");
    for error in [saw.get().unwrap_err(), pid.get().unwrap_err()] {
        assert!(
            matches!(&error, TaskError::Cancelled { function } if function == spin_pair::NAME),
            "{error:?}"
        );
    }
    let _ = std::fs::remove_file(&marker);
}

// ---- streaming tasks ----

/// Yields `0..n`; once `gate` is named, waits for it to exist before yielding the last value,
/// and writes `<log>.<i>` as it makes value `i` (when a log is named).
#[manta::remote(streaming)]
fn numbers(n: u64, gate: String, log: String) -> impl Iterator<Item = u64> {
    (0..n).inspect(move |value| {
        if !log.is_empty() {
            std::fs::write(format!("{log}.{value}"), b"").unwrap();
        }
        if !gate.is_empty() && *value + 1 == n {
            let deadline = Instant::now() + Duration::from_secs(120);
            while !std::path::Path::new(&gate).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    })
}

/// Parses each text: an `Err` ends the stream with it.
#[manta::remote(streaming)]
fn parse_each(texts: Vec<String>) -> impl Iterator<Item = Result<i64, String>> {
    texts.into_iter().map(|text| text.parse::<i64>().map_err(|error| format!("{text:?}: {error}")))
}

/// Yields `count` buffers of `len` bytes (large ones travel through the shared store).
#[manta::remote(streaming)]
fn chunks(count: u8, len: usize) -> Box<dyn Iterator<Item = manta::Buffer<u8>> + Send> {
    Box::new((0..count).map(move |fill| manta::Buffer::from(vec![fill; len])))
}

/// Yields `0..5`; the first attempt's worker dies (exits) after yielding 3 values.
#[manta::remote(streaming)]
fn dies_once(marker: String) -> impl Iterator<Item = u64> {
    (0..5).inspect(move |value| {
        if *value == 3 && !std::path::Path::new(&marker).exists() {
            std::fs::write(&marker, b"").unwrap();
            std::process::exit(3);
        }
    })
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("manta-stream-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn wait_for(path: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_streaming_task_gives_its_values_as_they_are_made() {
    cluster();
    let dir = scratch("made");
    let gate = dir.join("gate");
    let mut values = numbers::remote(4, gate.display().to_string(), String::new());
    // The first values come while the task still runs (it waits for the gate before its last).
    let first: Vec<u64> = (0..3).map(|_| values.next().unwrap().get().unwrap()).collect();
    assert_eq!(first, vec![0, 1, 2]);
    assert!(!values.completed().is_ready(), "the task is still running");
    std::fs::write(&gate, b"").unwrap();
    assert_eq!(values.next().unwrap().get().unwrap(), 3);
    assert!(values.next().is_none(), "the stream ends with the task");
    assert_eq!(values.completed().get().unwrap(), 4, "the task's own value: how many");
    // Large values go through the store; each is an object of its own.
    let buffers: Vec<_> = chunks::remote(3, 1 << 20).collect();
    for (fill, buffer) in buffers.iter().enumerate() {
        let view = buffer.get().unwrap();
        assert_eq!((view.len(), view[1000]), (1 << 20, fill as u8));
        assert!(manta::is_in_object_store(view.as_bytes()));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failing_streaming_task_ends_its_stream_with_the_error() {
    cluster();
    let texts = ["1", "2", "x", "4"].map(str::to_owned).to_vec();
    let refs: Vec<_> = parse_each::remote(texts).collect();
    assert_eq!(refs.len(), 3, "two values, then the error");
    assert_eq!((refs[0].get().unwrap(), refs[1].get().unwrap()), (1, 2));
    let error = refs[2].get().unwrap_err();
    assert!(error.user_error::<String>().is_some_and(|text| text.starts_with("\"x\"")), "{error:?}");
    // A next with a deadline on a stream that makes nothing in time says so.
    let dir = scratch("timeout");
    let mut slow = numbers::remote(1, dir.join("gate").display().to_string(), String::new());
    assert!(matches!(slow.next_timeout(Duration::from_millis(50)), Err(TaskError::Timeout(_))));
    std::fs::write(dir.join("gate"), b"").unwrap();
    assert_eq!(slow.next_timeout(Duration::from_secs(60)).unwrap().unwrap().get().unwrap(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_streaming_task_waits_for_a_slow_consumer_and_stops_when_it_is_gone() {
    cluster();
    let dir = scratch("backpressure");
    let log = dir.join("made").display().to_string();
    let made = |index: u64| dir.join(format!("made.{index}"));
    let mut values = numbers::options().generator_backpressure(2).remote(10, String::new(), log);
    // Two values may wait untaken: value `k + 2` is never made before `k + 1` were taken,
    // whatever the timing (a task without backpressure makes all ten while this waits for one).
    wait_for(&made(1));
    for taken in 0..5u64 {
        assert!(!made(taken + 2).exists(), "the task ran ahead of its consumer ({taken} taken)");
        assert_eq!(values.next().unwrap().get().unwrap(), taken);
    }
    wait_for(&made(6));
    // The consumer goes: the task stops at its next value instead of making all ten.
    let done = values.completed();
    drop(values);
    let count = done.get_timeout(Duration::from_secs(60)).unwrap();
    assert!(count < 10, "it made {count} values for nobody");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_retried_streaming_task_gives_each_value_once() {
    cluster();
    let dir = scratch("retry");
    let values: Vec<u64> =
        dies_once::remote(dir.join("died").display().to_string()).map(|value| value.get().unwrap()).collect();
    assert_eq!(values, vec![0, 1, 2, 3, 4]);
    assert!(dir.join("died").exists(), "the first attempt died");
    let _ = std::fs::remove_dir_all(&dir);
}
