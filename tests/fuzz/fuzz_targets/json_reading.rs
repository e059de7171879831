//! Seed 002 JSON readings, as they arrive on the hub's UDP port and as TCP lines.
#![no_main]

use libfuzzer_sys::fuzz_target;
use site_daemon::hub::stream;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(reading) = stream::parse_json(text) {
        assert!(reading.value.is_finite());
        assert_eq!(reading.seq, None);
    }
});
