//! Rate limiting for log lines an outsider can trigger (bad control requests, later bad
//! datagrams): at most `burst` lines per window, then one line saying how many were dropped.
//! Without it, anyone who can reach a socket could fill the journal.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct RateLimit {
    window: Duration,
    burst: u32,
    window_start: Option<Instant>,
    in_window: u32,
    suppressed: u64,
}

impl RateLimit {
    pub const fn new(burst: u32, window: Duration) -> Self {
        RateLimit {
            window,
            burst,
            window_start: None,
            in_window: 0,
            suppressed: 0,
        }
    }

    /// May a line be logged now? When a new window opens after some were dropped, returns how
    /// many were, so the caller can say so.
    pub fn check(&mut self, now: Instant) -> Verdict {
        let fresh = self
            .window_start
            .is_none_or(|start| now.duration_since(start) >= self.window);
        if fresh {
            self.window_start = Some(now);
            self.in_window = 0;
        }
        if self.in_window < self.burst {
            self.in_window += 1;
            let dropped = std::mem::take(&mut self.suppressed);
            Verdict::Log { dropped }
        } else {
            self.suppressed += 1;
            Verdict::Drop
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Log it; `dropped` lines were suppressed since the last one logged.
    Log {
        dropped: u64,
    },
    Drop,
}

/// Logs a warning through `limit`, mentioning suppressed lines.
#[macro_export]
macro_rules! warn_limited {
    ($limit:expr, $($arg:tt)+) => {
        match $limit.check(std::time::Instant::now()) {
            $crate::rate_limit::Verdict::Log { dropped: 0 } => log::warn!($($arg)+),
            $crate::rate_limit::Verdict::Log { dropped } => {
                log::warn!("({dropped} similar messages suppressed)");
                log::warn!($($arg)+)
            }
            $crate::rate_limit::Verdict::Drop => {}
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_passes_then_lines_are_dropped_until_the_window_ends() {
        let mut limit = RateLimit::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limit.check(t0), Verdict::Log { dropped: 0 });
        assert_eq!(limit.check(t0), Verdict::Log { dropped: 0 });
        assert_eq!(limit.check(t0), Verdict::Drop);
        assert_eq!(limit.check(t0 + Duration::from_secs(1)), Verdict::Drop);
        assert_eq!(
            limit.check(t0 + Duration::from_secs(10)),
            Verdict::Log { dropped: 2 }
        );
        assert_eq!(
            limit.check(t0 + Duration::from_secs(10)),
            Verdict::Log { dropped: 0 }
        );
    }
}
