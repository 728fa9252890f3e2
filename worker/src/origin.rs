//! What a worker tells its raylet about the origin of its output (Ray's `:task_name:` lines):
//! when its stdout and stderr are piped to the raylet (`worker_env::OUTPUT_PIPED`), a worker
//! writes a line [`OUTPUT_ORIGIN_MARK`]`name` to both before the first task of another
//! function, or an actor's constructor, runs. The raylet reads such a line as the origin of
//! the lines after it. The mark goes through the same `Stdout` as the task's own prints, so it
//! is in order with them; a worker running several things at once (a threaded or async
//! actor) names one of them, as Ray's does.

use std::io::Write as _;
use std::sync::OnceLock;

use manta_proto::worker::OUTPUT_ORIGIN_MARK;
use parking_lot::Mutex;

/// Whether this process's output goes to its raylet.
fn piped() -> bool {
    static PIPED: OnceLock<bool> = OnceLock::new();
    *PIPED.get_or_init(|| std::env::var_os(manta_raylet::worker_env::OUTPUT_PIPED).is_some())
}

/// Marks the lines printed from now on as `name`'s (a function's or a class's registered
/// name: its last path segment, without the registry's fingerprint, as Ray shows a function's
/// name).
pub(crate) fn mark(name: &str) {
    if !piped() {
        return;
    }
    static LAST: Mutex<String> = Mutex::new(String::new());
    // Registered names carry a fingerprint after `#`, and may carry a module path.
    let name = name.split('#').next().unwrap_or(name);
    let short = name.rsplit("::").next().unwrap_or(name);
    let mut last = LAST.lock();
    if *last == short {
        return;
    }
    short.clone_into(&mut last);
    // Best effort: a closed stream loses the mark as it loses the lines.
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{OUTPUT_ORIGIN_MARK}{short}");
    let _ = stdout.flush();
    let _ = writeln!(std::io::stderr().lock(), "{OUTPUT_ORIGIN_MARK}{short}");
}
