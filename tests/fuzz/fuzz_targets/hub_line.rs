//! The hub's TCP line protocol: registrations, reports, answers, `CHAL`/`AUTH`, and the hub's
//! own replies as a link reads them. Nothing may panic, and a line that parses must format back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use site_daemon::hub::protocol::{self, Line};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(Line::Event { seq, report }) = protocol::parse(text) {
        let again = protocol::event_line(seq, report);
        assert_eq!(
            protocol::parse(again.trim_end()),
            Ok(Line::Event { seq, report })
        );
    }
    if let Ok(Line::Register { name, kind, epoch }) = protocol::parse(text) {
        let again = protocol::register_line(&name, &kind, epoch.as_deref());
        assert_eq!(
            protocol::parse(again.trim_end()),
            Ok(Line::Register { name, kind, epoch })
        );
    }
    // CHAL and AUTH: a mac of any shape is checked without a panic, and never passes.
    if let Ok(Line::Auth(Some((name, mac)))) = protocol::parse(text) {
        let secret = site_daemon::keys::Secret::from_hex(&"5a".repeat(32)).expect("secret");
        let nonce = "00".repeat(32);
        let right = site_daemon::keys::auth_mac(&secret, &name, &nonce);
        assert_eq!(
            site_daemon::keys::verify_auth(&secret, &name, &nonce, &mac),
            mac == right
        );
    }
    let _ = protocol::parse_reply(text);
    let err = protocol::err_line(text);
    assert_eq!(err.matches('\n').count(), 1, "an ERR is one line");
});
