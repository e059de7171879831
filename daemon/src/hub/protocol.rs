//! The hub's TCP line protocol (seed 001 + seed 000 reports, DESIGN.md §8), as pure parsing
//! and formatting. A client's first line registers it: `DEVICE <name> TYPE <type>`; a site
//! module adds the epoch its reports are numbered in, `DEVICE <name> TYPE <type> EPOCH <id>`.
//! Modules then send `EVENT <seq> <KIND>` and get `OK <seq>`; a bad line gets `ERR <reason>`.

use crate::site::Report;

/// The longest line the hub accepts, newline included.
pub const MAX_LINE_BYTES: usize = 1024;

/// Client types the site modules register with.
pub const TYPE_ACCESS: &str = "access-control";
pub const TYPE_EMERGENCY: &str = "emergency-exit";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    Register {
        name: String,
        kind: String,
        /// The report epoch of a site module (see `hub::sequence`); seed devices send none.
        epoch: Option<String>,
    },
    Event {
        seq: u64,
        report: Report,
    },
    /// `CHAL`: the client asks for a nonce to prove its key with.
    Chal,
    /// `PING <token>`: answered `PONG <token>` at once, whatever the client's role.
    Ping(String),
    /// `AUTH <name> <mac>` (`None`: the words are not that shape; it fails like a wrong mac).
    Auth(Option<(String, String)>),
    /// Anything else a registered device says (an `ACK ...` to an operator command).
    Other(String),
}

/// Parses one line (without its newline).
pub fn parse(line: &str) -> Result<Line, String> {
    let line = line.trim_end_matches('\r');
    let words: Vec<&str> = line.split_ascii_whitespace().collect();
    match words.as_slice() {
        ["DEVICE", name, "TYPE", kind, rest @ ..] => {
            if !valid_word(name) || !valid_word(kind) {
                return Err(
                    "DEVICE names and TYPEs are 1-64 letters, digits, '_', '-', '.' or '@'".into(),
                );
            }
            let epoch = match rest {
                [] => None,
                ["EPOCH", epoch] if valid_epoch(epoch) => Some(epoch.to_string()),
                ["EPOCH", _] => return Err("an EPOCH is 8-64 hex digits".into()),
                _ => return Err("expected DEVICE <name> TYPE <type> [EPOCH <id>]".into()),
            };
            Ok(Line::Register {
                name: name.to_string(),
                kind: kind.to_string(),
                epoch,
            })
        }
        ["DEVICE", ..] => Err("expected DEVICE <name> TYPE <type>".into()),
        ["EVENT", seq, kind] => {
            let seq = seq
                .parse::<u64>()
                .map_err(|_| format!("bad sequence number {seq:?}"))?;
            let report = Report::from_wire(kind).ok_or_else(|| {
                format!("unknown event {kind:?} (ENTRY, EXIT, EMERGENCY_OPEN, EMERGENCY_CLOSED)")
            })?;
            Ok(Line::Event { seq, report })
        }
        ["EVENT", ..] => Err("expected EVENT <seq> <KIND>".into()),
        ["CHAL"] => Ok(Line::Chal),
        ["PING", token] if valid_word(token) => Ok(Line::Ping(token.to_string())),
        ["PING", ..] => Err("expected PING <token> (1-64 of A-Z a-z 0-9 _ - . @)".into()),
        ["CHAL", ..] => Err("expected CHAL".into()),
        ["AUTH", name, mac] => Ok(Line::Auth(Some((name.to_string(), mac.to_string())))),
        ["AUTH", ..] => Ok(Line::Auth(None)),
        [] => Err("empty line".into()),
        _ => Ok(Line::Other(line.to_string())),
    }
}

fn valid_word(w: &str) -> bool {
    !w.is_empty()
        && w.len() <= 64
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.@".contains(c))
}

fn valid_epoch(w: &str) -> bool {
    (8..=64).contains(&w.len()) && w.bytes().all(|b| b.is_ascii_hexdigit())
}

/// May a client of this type report this event?
pub fn type_may_report(kind: &str, report: Report) -> bool {
    match report {
        Report::Entry | Report::Exit => kind == TYPE_ACCESS,
        Report::EmergencyOpen | Report::EmergencyClosed => kind == TYPE_EMERGENCY,
    }
}

pub fn register_line(name: &str, kind: &str, epoch: Option<&str>) -> String {
    match epoch {
        Some(epoch) => format!("DEVICE {name} TYPE {kind} EPOCH {epoch}\n"),
        None => format!("DEVICE {name} TYPE {kind}\n"),
    }
}

pub fn event_line(seq: u64, report: Report) -> String {
    format!("EVENT {seq} {}\n", report.wire())
}

/// The answer to `AUTH` that worked.
pub fn auth_ok_line(role: crate::keys::Role) -> String {
    format!("OK AUTH {role}\n")
}

/// The answer to `AUTH` that did not (whatever the reason: the log says which).
pub const AUTH_ERR: &str = "ERR auth\n";
/// The answer to a line the client's role does not allow.
pub const FORBIDDEN: &str = "forbidden";

pub fn ok_line(seq: u64) -> String {
    format!("OK {seq}\n")
}

pub fn err_line(reason: &str) -> String {
    format!("ERR {}\n", reason.replace(['\n', '\r'], " "))
}

/// Parses the hub's answer to an event, as the hub link reads it.
pub fn parse_reply(line: &str) -> Result<u64, String> {
    let line = line.trim_end_matches('\r');
    match line.split_once(' ') {
        Some(("OK", seq)) => seq
            .trim()
            .parse()
            .map_err(|_| format!("bad OK line {line:?}")),
        Some(("ERR", reason)) => Err(reason.to_string()),
        _ => Err(format!("unexpected reply {line:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_registration_parses() {
        assert_eq!(
            parse("DEVICE Sensor01 TYPE temperature"),
            Ok(Line::Register {
                name: "Sensor01".into(),
                kind: "temperature".into(),
                epoch: None,
            })
        );
    }

    #[test]
    fn a_module_registers_with_its_epoch() {
        let line = register_line("front-access", TYPE_ACCESS, Some("0123abcd0123abcd"));
        assert_eq!(
            parse(line.trim_end()),
            Ok(Line::Register {
                name: "front-access".into(),
                kind: TYPE_ACCESS.into(),
                epoch: Some("0123abcd0123abcd".into()),
            })
        );
        assert!(parse("DEVICE a TYPE b EPOCH xyz").is_err());
        assert!(parse("DEVICE a TYPE b EPOCH").is_err());
        assert!(parse("DEVICE a TYPE b NONSENSE 12345678").is_err());
    }

    #[test]
    fn events_parse_and_round_trip() {
        for report in [
            Report::Entry,
            Report::Exit,
            Report::EmergencyOpen,
            Report::EmergencyClosed,
        ] {
            let line = event_line(42, report);
            assert_eq!(parse(line.trim_end()), Ok(Line::Event { seq: 42, report }));
        }
    }

    #[test]
    fn malformed_lines_get_reasons() {
        assert!(parse("DEVICE x").is_err());
        assert!(
            parse("EVENT one ENTRY")
                .expect_err("bad seq")
                .contains("sequence")
        );
        assert!(
            parse("EVENT 1 PARTY")
                .expect_err("bad kind")
                .contains("unknown event")
        );
        assert!(parse("").is_err());
        assert!(parse("DEVICE a;rm TYPE x").is_err());
    }

    #[test]
    fn only_the_right_module_type_may_report_each_event() {
        assert!(type_may_report(TYPE_ACCESS, Report::Entry));
        assert!(!type_may_report(TYPE_ACCESS, Report::EmergencyOpen));
        assert!(type_may_report(TYPE_EMERGENCY, Report::EmergencyClosed));
        assert!(!type_may_report("temperature", Report::Exit));
    }

    #[test]
    fn replies_parse() {
        assert_eq!(parse_reply("OK 7"), Ok(7));
        assert_eq!(parse_reply("ERR no"), Err("no".into()));
        assert!(parse_reply("HELLO").is_err());
    }
}
