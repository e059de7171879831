//! Log lines an outsider can trigger (connections, registrations, answers, bad requests, bad
//! datagrams): rate limiting, at most `burst` lines per window and then one line saying how
//! many were dropped, and escaping of what the client sent. Without them, anyone who can
//! reach a socket could fill the journal or forge lines in it.

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

/// Logs at `level` through `limit`, mentioning suppressed lines.
#[macro_export]
macro_rules! log_limited {
    ($limit:expr, $level:expr, $($arg:tt)+) => {
        match $limit.check(std::time::Instant::now()) {
            $crate::rate_limit::Verdict::Log { dropped: 0 } => log::log!($level, $($arg)+),
            $crate::rate_limit::Verdict::Log { dropped } => {
                log::log!($level, "({dropped} similar messages suppressed)");
                log::log!($level, $($arg)+)
            }
            $crate::rate_limit::Verdict::Drop => {}
        }
    };
}

/// Logs a warning through `limit`, mentioning suppressed lines.
#[macro_export]
macro_rules! warn_limited {
    ($limit:expr, $($arg:tt)+) => {
        $crate::log_limited!($limit, log::Level::Warn, $($arg)+)
    };
}

/// Logs an info line through `limit`: for lines any client can cause (connections,
/// registrations, answers), which must not let it fill the journal.
#[macro_export]
macro_rules! info_limited {
    ($limit:expr, $($arg:tt)+) => {
        $crate::log_limited!($limit, log::Level::Info, $($arg)+)
    };
}

/// Logs a debug line through `limit`: the hub's per-connection detail (each registration line
/// as received, each hello), which at `SITED_LOG_LEVEL=debug` any client could otherwise
/// repeat into the journal as fast as it can send.
#[macro_export]
macro_rules! debug_limited {
    ($limit:expr, $($arg:tt)+) => {
        if log::log_enabled!(log::Level::Debug) {
            $crate::log_limited!($limit, log::Level::Debug, $($arg)+)
        }
    };
}

/// `text` from a client, safe to log: control characters (ESC, NUL, CR, ...) and the
/// backslash are escaped as `\u{1b}`-style sequences, so a client cannot forge log lines or
/// drive the terminal of whoever reads the log. Borrowed when there is nothing to escape.
pub fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() || c == '\\') {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Bytes from a client, safe to log: as [`escape`], with bytes that are not UTF-8 shown as
/// `\x..`.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        out.push_str(&escape(chunk.valid()));
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
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

    #[test]
    fn control_characters_from_clients_are_escaped() {
        assert_eq!(escape("ACK ok"), "ACK ok");
        assert_eq!(escape("a\x1b[2Jb\0c\rd"), "a\\u{1b}[2Jb\\u{0}c\\u{d}d");
        assert_eq!(escape("back\\slash"), "back\\\\slash");
        assert_eq!(escape_bytes(b"ok\xff\n"), "ok\\xff\\u{a}");
    }
}
