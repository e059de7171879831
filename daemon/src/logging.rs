//! Where the daemon's own messages go (the `log` facade). Under systemd with the journal
//! (`JOURNAL_STREAM` set), to stderr with `<N>` priority prefixes so the journal keeps the
//! levels; under systemd without it (`NOTIFY_SOCKET` only), to syslog (`/dev/log`, facility
//! daemon); anywhere else (a terminal, a pipe, a test) to stderr with a timestamp. `SITED_LOG`
//! = stderr | journal | syslog overrides the choice. Never silently nowhere: if syslog cannot
//! be reached, stderr is used and says so. `SITED_LOG_LEVEL` = error | warn | info (default)
//! | debug.

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::io::{IsTerminal, Write};

/// Where messages go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sink {
    /// A person is watching: `HH:MM:SS.mmm LEVEL message`.
    Terminal,
    /// The systemd journal via stderr: `<6>message`.
    Journal,
    Syslog,
}

/// Picks the sink from the environment (see the module comment).
pub fn choose(
    log_env: Option<&str>,
    journal_stream: bool,
    under_systemd: bool,
    stderr_is_terminal: bool,
) -> Sink {
    match log_env {
        Some("stderr") => return Sink::Terminal,
        Some("journal") => return Sink::Journal,
        Some("syslog") => return Sink::Syslog,
        _ => {}
    }
    if journal_stream {
        Sink::Journal
    } else if stderr_is_terminal || !under_systemd {
        Sink::Terminal
    } else {
        Sink::Syslog
    }
}

pub fn level_from(text: Option<&str>) -> LevelFilter {
    match text.map(str::to_ascii_lowercase).as_deref() {
        Some("error") => LevelFilter::Error,
        Some("warn") | Some("warning") => LevelFilter::Warn,
        Some("debug") => LevelFilter::Debug,
        Some("trace") => LevelFilter::Trace,
        _ => LevelFilter::Info,
    }
}

/// The syslog priority journald reads from a `<N>` prefix.
pub fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// One stderr line for `sink` (without the newline).
pub fn format_line(
    sink: Sink,
    level: Level,
    message: &str,
    now: chrono::DateTime<chrono::Local>,
) -> String {
    match sink {
        Sink::Journal => format!("<{}>{message}", priority(level)),
        _ => format!("{} {:<5} {message}", now.format("%H:%M:%S%.3f"), level),
    }
}

struct StderrLogger {
    sink: Sink,
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format_line(
            self.sink,
            record.level(),
            &record.args().to_string(),
            chrono::Local::now(),
        );
        // One write per line, so lines from the store thread never interleave mid-line.
        let _ = std::io::stderr()
            .lock()
            .write_all(format!("{line}\n").as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// Installs the logger once, at start; returns where messages go.
pub fn init() -> Sink {
    let sink = choose(
        std::env::var("SITED_LOG").ok().as_deref(),
        std::env::var_os("JOURNAL_STREAM").is_some(),
        std::env::var_os("NOTIFY_SOCKET").is_some(),
        std::io::stderr().is_terminal(),
    );
    let level = level_from(std::env::var("SITED_LOG_LEVEL").ok().as_deref());
    log::set_max_level(level);
    if sink == Sink::Syslog {
        let formatter = syslog::Formatter3164 {
            facility: syslog::Facility::LOG_DAEMON,
            hostname: None,
            process: "sited".into(),
            pid: std::process::id(),
        };
        match syslog::unix(formatter) {
            Ok(logger) => {
                if log::set_boxed_logger(Box::new(syslog::BasicLogger::new(logger))).is_ok() {
                    return Sink::Syslog;
                }
            }
            Err(e) => {
                let _ = log::set_boxed_logger(Box::new(StderrLogger {
                    sink: Sink::Terminal,
                }));
                log::warn!("syslog (/dev/log) unavailable ({e}); logging to stderr");
                return Sink::Terminal;
            }
        }
    }
    let _ = log::set_boxed_logger(Box::new(StderrLogger { sink }));
    sink
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn sink_follows_the_environment() {
        assert_eq!(choose(Some("stderr"), true, true, false), Sink::Terminal);
        assert_eq!(choose(None, true, true, true), Sink::Journal);
        assert_eq!(choose(None, false, true, true), Sink::Terminal);
        assert_eq!(choose(None, false, true, false), Sink::Syslog);
        // Not under systemd (a pipe, a demo in an IDE, a test): stderr, no syslog warning.
        assert_eq!(choose(None, false, false, false), Sink::Terminal);
    }

    #[test]
    fn level_defaults_to_info() {
        assert_eq!(level_from(None), LevelFilter::Info);
        assert_eq!(level_from(Some("DEBUG")), LevelFilter::Debug);
        assert_eq!(level_from(Some("nonsense")), LevelFilter::Info);
    }

    #[test]
    fn journal_lines_carry_syslog_priorities() {
        let now = chrono::Local
            .with_ymd_and_hms(2026, 11, 22, 9, 14, 3)
            .single()
            .expect("time");
        assert_eq!(
            format_line(Sink::Journal, Level::Warn, "siren on", now),
            "<4>siren on"
        );
        assert_eq!(format_line(Sink::Journal, Level::Error, "x", now), "<3>x");
        assert_eq!(
            format_line(Sink::Terminal, Level::Info, "ready", now),
            "09:14:03.000 INFO  ready"
        );
    }
}
