//! `[hub] device-log`: seed 001's server record for people who want it, in the words the
//! seed's server prints (`Registered DEVICE=Sensor01 TYPE=temperature`, `Sent command to
//! Sensor01: SET_INTERVAL 3`, `Received ACK from Sensor01: ACK Command Executed`, `Closing
//! connection with Sensor01`, `Connection to 127.0.0.1:63403 closed.`), one timestamped line
//! each. The hub collects the lines here; the writer thread appends them (`store.rs`), so the
//! loop never waits for the file. Any client can cause lines, so they are rate-limited and
//! what a client sent is escaped.

use crate::rate_limit::{RateLimit, Verdict};
use std::time::{Duration, Instant};

/// Lines kept per [`WINDOW`]; beyond it they are left out, and the next line says how many.
pub const BURST: u32 = 2000;
pub const WINDOW: Duration = Duration::from_secs(10);

pub struct DeviceLog {
    lines: Vec<String>,
    limit: RateLimit,
}

impl Default for DeviceLog {
    fn default() -> Self {
        DeviceLog {
            lines: Vec::new(),
            limit: RateLimit::new(BURST, WINDOW),
        }
    }
}

impl DeviceLog {
    /// Records `words` now.
    pub fn note(&mut self, words: &str) {
        let now = chrono::Local::now();
        match self.limit.check(Instant::now()) {
            Verdict::Log { dropped } => {
                if dropped > 0 {
                    self.lines.push(line(
                        now,
                        &format!(
                            "({dropped} lines left out: more than {BURST} in {} s)",
                            WINDOW.as_secs()
                        ),
                    ));
                }
                self.lines.push(line(now, words));
            }
            Verdict::Drop => {}
        }
    }

    /// The lines since the last call, for the writer.
    pub fn take(&mut self) -> Vec<String> {
        std::mem::take(&mut self.lines)
    }
}

/// `YYYY-MM-DD HH:MM:SS <words>`, local time, as the event log dates its lines.
pub fn line(at: chrono::DateTime<chrono::Local>, words: &str) -> String {
    format!("{} {words}", at.format("%Y-%m-%d %H:%M:%S"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_dated_in_the_seed_servers_words() {
        let mut log = DeviceLog::default();
        log.note("Registered DEVICE=Sensor01 TYPE=temperature");
        let lines = log.take();
        assert_eq!(lines.len(), 1);
        let (date, words) = lines[0].split_at(20);
        assert!(
            chrono::NaiveDateTime::parse_from_str(date.trim_end(), "%Y-%m-%d %H:%M:%S").is_ok(),
            "{date:?}"
        );
        assert_eq!(words, "Registered DEVICE=Sensor01 TYPE=temperature");
        assert!(log.take().is_empty(), "taken once");
    }

    #[test]
    fn a_flood_is_cut_off_and_the_count_is_told() {
        let mut log = DeviceLog::default();
        for n in 0..BURST + 5 {
            log.note(&format!("Connection to 127.0.0.1:{n} closed."));
        }
        assert_eq!(log.take().len(), BURST as usize);
    }
}
