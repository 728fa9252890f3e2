//! Rate-limited warnings: a peer that misbehaves over and over (300 connections failing their
//! handshake) must not flood the log. Each call site owns a [`Throttle`]; the first few events
//! of a window are logged, the rest counted, and the count reported with the next logged one.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Events logged per window at most.
const BURST: u32 = 5;
/// The length of a window.
const WINDOW: Duration = Duration::from_secs(30);

/// The state of one call site's warnings.
pub(crate) struct Throttle {
    state: Mutex<Window>,
}

struct Window {
    started: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl Throttle {
    /// A throttle with nothing logged yet.
    pub(crate) const fn new() -> Self {
        Throttle { state: Mutex::new(Window { started: None, logged: 0, suppressed: 0 }) }
    }

    /// Whether an event at `now` may be logged; if so, how many were suppressed since the last
    /// one logged (to say so in it).
    pub(crate) fn admit(&self, now: Instant) -> Option<u64> {
        let mut window = self.state.lock();
        if window.started.is_none_or(|started| now.duration_since(started) >= WINDOW) {
            window.started = Some(now);
            window.logged = 0;
        }
        if window.logged < BURST {
            window.logged += 1;
            Some(std::mem::take(&mut window.suppressed))
        } else {
            window.suppressed += 1;
            None
        }
    }
}

/// `tracing::warn!` through a static [`Throttle`] of the call site; a logged line carries
/// `suppressed`, the number of like lines left out before it.
macro_rules! warn_throttled {
    ($($field:tt)*) => {{
        static THROTTLE: $crate::throttle::Throttle = $crate::throttle::Throttle::new();
        if let Some(suppressed) = THROTTLE.admit(std::time::Instant::now()) {
            tracing::warn!(suppressed, $($field)*);
        }
    }};
}
pub(crate) use warn_throttled;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_logged_the_rest_counted_and_reported_in_the_next_window() {
        let throttle = Throttle::new();
        let start = Instant::now();
        let admitted: Vec<Option<u64>> = (0..8).map(|_| throttle.admit(start)).collect();
        assert_eq!(admitted, [Some(0), Some(0), Some(0), Some(0), Some(0), None, None, None]);
        assert_eq!(throttle.admit(start + WINDOW), Some(3), "the next window reports what was left out");
        assert_eq!(throttle.admit(start + WINDOW), Some(0));
    }
}
