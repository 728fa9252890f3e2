//! What several cluster tests share (each test file uses some of it).
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// Waits (polling) until `done`, for at most a minute; fails the test naming `what` if not.
pub(crate) fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within a minute");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Everything written to this process's stderr (fd 2) from now on, as it comes (still written
/// to the real stderr too).
pub(crate) fn capture_stderr() -> std::sync::Arc<std::sync::Mutex<String>> {
    use std::io::{BufRead as _, Write as _};
    use std::os::fd::FromRawFd as _;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut fds = [0; 2];
    // SAFETY: plain descriptor calls on fresh descriptors; fd 2 is replaced by the pipe's write
    // end, and the original is kept to echo into.
    let original = unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        let original = libc::dup(2);
        assert!(libc::dup2(fds[1], 2) >= 0);
        libc::close(fds[1]);
        std::fs::File::from_raw_fd(original)
    };
    // SAFETY: the read end is this function's, handed to the thread.
    let reader = unsafe { std::fs::File::from_raw_fd(fds[0]) };
    let sink = seen.clone();
    std::thread::spawn(move || {
        let mut original = original;
        for line in std::io::BufReader::new(reader).lines().map_while(Result::ok) {
            let _ = writeln!(original, "{line}");
            let mut seen = sink.lock().unwrap();
            seen.push_str(&line);
            seen.push('\n');
        }
    });
    seen
}
