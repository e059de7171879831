//! Seed 001 sensor datagrams (and whatever else arrives on the hub's UDP port), through the
//! parser and a stream's cycle bookkeeping.
#![no_main]

use libfuzzer_sys::fuzz_target;
use site_daemon::hub::stream::{self, Stream};
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let mut s = Stream::default();
    let mut now = Duration::ZERO;
    // Several datagrams in one input, split at NUL, each through the same stream.
    for part in data.split(|&b| b == 0) {
        if let Ok(reading) = stream::parse(part) {
            assert!(reading.value.is_finite());
            assert!(!reading.device.is_empty() && !reading.quantity.is_empty());
            if let Some(seq) = reading.seq {
                let (closed, _fresh) = s.packet(seq, now);
                for cycle in closed {
                    assert!(cycle.status_line().starts_with("STATUS RECEIVED "));
                }
            }
        }
        now += Duration::from_millis(part.len() as u64);
        let _ = s.expire(now, Duration::from_millis(100));
    }
});
