//! The hub's TCP line protocol: registrations, reports, answers, and the hub's own replies as
//! a link reads them. Nothing may panic, and a line that parses must format back the same.
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
    let _ = protocol::parse_reply(text);
    let err = protocol::err_line(text);
    assert_eq!(err.matches('\n').count(), 1, "an ERR is one line");
});
