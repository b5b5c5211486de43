//! Enforcing client byte-rate quotas: each shard measures, per client id, the
//! bytes produced and fetched over a sliding window, and when a client is over
//! its quota answers with `throttle_time_ms` and holds the response that long —
//! the client's next requests wait behind it, and KIP-219 clients back off on
//! their own. The limits come from the engine's `Quotas` (set at run time with
//! AlterClientQuotas). A client's connections live on the shard that accepted
//! them, so a client with one connection per broker is measured exactly; one
//! spreading connections over several shards is allowed the quota on each.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use brook_engine::meta::quota::RateWindow;

/// Idle clients are forgotten after this long.
const WINDOW: Duration = Duration::from_secs(10);
/// Kafka caps a throttle at the quota window.
const MAX_THROTTLE: Duration = Duration::from_secs(10);
/// Forget idle clients once this many are tracked.
const MAX_TRACKED: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    Produce,
    Fetch,
}

#[derive(Default)]
pub struct Throttler {
    windows: RefCell<HashMap<(String, Direction), RateWindow>>,
}

impl Throttler {
    /// Records `bytes` for `client` and returns how long it must be throttled to
    /// bring its rate back to `rate` bytes/s.
    pub fn record(
        &self,
        client: &str,
        dir: Direction,
        bytes: usize,
        rate: f64,
        now: Instant,
    ) -> Duration {
        let mut windows = self.windows.borrow_mut();
        if windows.len() >= MAX_TRACKED {
            windows.retain(|_, w| now.duration_since(w.last) < WINDOW);
        }
        let w = (windows.entry((client.to_string(), dir))).or_insert_with(|| RateWindow::new(now));
        w.record(bytes, now);
        let excess = w.excess(rate, now);
        if excess <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(excess / rate).min(MAX_THROTTLE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_quota_is_free_and_over_quota_waits_for_the_excess() {
        let t = Throttler::default();
        let now = Instant::now();
        assert_eq!(
            t.record("c", Direction::Produce, 500, 1000.0, now),
            Duration::ZERO
        );
        // 3000 bytes within the first second at 1000 B/s: 2 s of excess.
        let d = t.record("c", Direction::Produce, 2500, 1000.0, now);
        assert_eq!(d, Duration::from_secs(2));
        assert_eq!(
            t.record("c", Direction::Fetch, 2500, 1000.0, now),
            Duration::from_millis(1500),
            "directions are separate"
        );
        assert_eq!(
            t.record("other", Direction::Produce, 10, 1000.0, now),
            Duration::ZERO,
            "clients are separate"
        );
        // Much later the window has slid and the client is under quota again.
        assert_eq!(
            t.record(
                "c",
                Direction::Produce,
                10,
                1000.0,
                now + Duration::from_secs(60)
            ),
            Duration::ZERO
        );
    }
}
