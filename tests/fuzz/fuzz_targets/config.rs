//! The config loader: any text as a `sited.toml`. It may refuse, with one reason, but must
//! never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = site_daemon::config::parse(std::path::Path::new("/fuzz/sited.toml"), text) {
        assert!(!e.to_string().is_empty());
    }
});
