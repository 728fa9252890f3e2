//! The operating system's limits on how many worker processes a node can hold: file
//! descriptors of the raylet's process (each worker costs it one: its connection) and the
//! system's threads (each worker runs three). A start that would cross one
//! fails with an error naming the limit and how to raise it, instead of a worker that dies
//! half-started or a raylet that can no longer accept connections.

/// Descriptors the raylet's process needs per worker it starts (its connection; no pipe, no
/// process descriptor: see `service.rs`).
const FDS_PER_WORKER: u64 = 1;
/// Descriptors kept free for everything else the process does (connections, files).
const FDS_RESERVE: u64 = 64;
/// Threads a worker runs (main, which runs its core, the transport's, and a task or actor
/// thread).
const THREADS_PER_WORKER: u64 = 3;
/// Threads kept free for the rest of the system.
const THREADS_RESERVE: u64 = 256;

/// Raises this process's soft limit on open files to its hard limit, as Ray does: the default
/// soft limit (often 1,024) caps a node at a few hundred workers. Returns the new soft limit.
pub fn raise_open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: a valid out-pointer for getrlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: a valid rlimit, within the hard limit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Some(raised.rlim_cur);
        }
    }
    Some(limit.rlim_cur)
}

/// Why one more worker process would cross a limit, if it would.
pub(crate) fn worker_start_refusal() -> Option<String> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: a valid out-pointer for getrlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        let open = std::fs::read_dir("/proc/self/fd").map_or(0, |entries| entries.count() as u64);
        if open + FDS_PER_WORKER + FDS_RESERVE > limit.rlim_cur {
            return Some(format!(
                "the limit on open files: this process has {open} of {} open, and each worker needs \
                 {FDS_PER_WORKER} (raise it with `ulimit -n`; the hard limit is {})",
                limit.rlim_cur, limit.rlim_max
            ));
        }
    }
    if let Some((running, max, name)) = system_threads() {
        if running + THREADS_PER_WORKER + THREADS_RESERVE > max {
            return Some(format!(
                "the system's limit on threads: {running} of {max} in use ({name}), and each worker \
                 runs {THREADS_PER_WORKER}"
            ));
        }
    }
    None
}

/// The threads the system runs now, its limit, and the limit's name.
fn system_threads() -> Option<(u64, u64, &'static str)> {
    // The fourth field of /proc/loadavg is `running/total` scheduling entities (threads).
    let loadavg = std::fs::read_to_string("/proc/loadavg").ok()?;
    let running: u64 = loadavg.split_whitespace().nth(3)?.split_once('/')?.1.parse().ok()?;
    let read = |path: &str| std::fs::read_to_string(path).ok()?.trim().parse::<u64>().ok();
    let limits = [
        ("kernel.pid_max", read("/proc/sys/kernel/pid_max")),
        ("kernel.threads-max", read("/proc/sys/kernel/threads-max")),
    ];
    let (name, max) =
        limits.into_iter().filter_map(|(name, max)| Some((name, max?))).min_by_key(|(_, max)| *max)?;
    Some((running, max, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_test_process_is_far_from_every_limit() {
        raise_open_files_limit();
        assert_eq!(worker_start_refusal(), None);
        let (running, max, _) = system_threads().expect("Linux reports threads");
        assert!(running > 0 && max > running);
    }
}
