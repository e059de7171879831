//! One request, one answer over sited's control socket. Blocking std I/O with a deadline is
//! enough for a client that asks once and exits; the framing and types come from `site_proto`.

use site_proto::{FrameError, LineBuffer, MAX_RESPONSE_BYTES, Request, Response, encode};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Why no answer came back. Every variant is a one-line message for stderr; all of them mean
/// exit status 2.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to sited at {}: {}", path.display(), connect_reason(path, source))]
    Connect { path: PathBuf, source: io::Error },
    #[error("cannot send the request to sited at {}: {}", path.display(), describe(source))]
    Send { path: PathBuf, source: io::Error },
    #[error("cannot read sited's answer: {}", describe(.0))]
    Receive(io::Error),
    #[error("sited closed the connection without answering")]
    Closed,
    #[error("sited did not answer within {} (raise --timeout; the request may still have been carried out)", seconds(*.0))]
    Timeout(Duration),
    #[error("sited's answer is longer than {MAX_RESPONSE_BYTES} bytes; refusing it")]
    TooLong,
    #[error("sited's answer is not UTF-8")]
    NotUtf8,
    #[error("cannot understand sited's answer: {0}")]
    Malformed(String),
}

/// Where sited listens and how long to wait for it.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

impl Client {
    pub fn new(socket: PathBuf, timeout: Duration) -> Self {
        Client { socket, timeout }
    }

    /// Sends `request` and waits, until the deadline, for the one line that answers it.
    pub fn call(&self, request: &Request) -> Result<Response, Error> {
        self.open(request).map(|(response, _)| response)
    }

    /// As [`Client::call`], keeping the connection for lines sited pushes afterwards
    /// (`log --follow`).
    pub fn open(&self, request: &Request) -> Result<(Response, Session), Error> {
        let deadline = Instant::now() + self.timeout;
        let mut stream = UnixStream::connect(&self.socket).map_err(|source| Error::Connect {
            path: self.socket.clone(),
            source,
        })?;
        let send_error = |source| Error::Send {
            path: self.socket.clone(),
            source,
        };
        stream
            .set_write_timeout(Some(self.timeout))
            .map_err(send_error)?;
        match stream.write_all(&encode(request)) {
            Ok(()) => {}
            Err(e) if is_hang_up(&e) => return Err(Error::Closed),
            Err(e) if is_timeout(&e) => return Err(Error::Timeout(self.timeout)),
            Err(e) => return Err(send_error(e)),
        }
        let mut session = Session {
            stream,
            lines: LineBuffer::with_limit(MAX_RESPONSE_BYTES),
            timeout: self.timeout,
        };
        let line = session.read_line(Some(deadline))?;
        let response = serde_json::from_str(&line).map_err(|e| Error::Malformed(e.to_string()))?;
        Ok((response, session))
    }
}

/// An open connection to sited, after the first answer.
pub struct Session {
    stream: UnixStream,
    lines: LineBuffer,
    timeout: Duration,
}

impl Session {
    /// The next line sited pushes, however long it takes. `Err(Closed)` when sited hangs up.
    pub fn next_pushed(&mut self) -> Result<Response, Error> {
        let line = self.read_line(None)?;
        serde_json::from_str(&line).map_err(|e| Error::Malformed(e.to_string()))
    }

    fn read_line(&mut self, deadline: Option<Instant>) -> Result<String, Error> {
        let Session { stream, lines, .. } = self;
        let mut chunk = [0u8; 8192];
        loop {
            match lines.next_line() {
                Ok(Some(line)) => return Ok(line),
                Ok(None) => {}
                Err(FrameError::TooLong) => return Err(Error::TooLong),
                Err(FrameError::NotUtf8) => return Err(Error::NotUtf8),
            }
            // The timeout bounds the whole answer, not each read: a daemon that trickles
            // bytes must not keep sitectl waiting forever.
            let remaining = match deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::Timeout(self.timeout));
                    }
                    Some(left)
                }
                None => None,
            };
            stream.set_read_timeout(remaining).map_err(Error::Receive)?;
            match stream.read(&mut chunk) {
                Ok(0) => return Err(Error::Closed),
                Ok(n) => lines.extend(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => return Err(Error::Timeout(self.timeout)),
                Err(e) if is_hang_up(&e) => return Err(Error::Closed),
                Err(e) => return Err(Error::Receive(e)),
            }
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn is_hang_up(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
    )
}

/// An OS error as the C library words it, without Rust's "(os error N)" suffix.
pub fn describe(e: &io::Error) -> String {
    let text = e.to_string();
    match (e.raw_os_error(), text.rfind(" (os error ")) {
        (Some(_), Some(at)) => text[..at].to_string(),
        _ => text,
    }
}

/// The reason a connect failed, with what the user can do about it.
fn connect_reason(path: &Path, e: &io::Error) -> String {
    let hint = match e.kind() {
        io::ErrorKind::NotFound => "is sited running? set -s or SITED_SOCKET".to_string(),
        io::ErrorKind::ConnectionRefused => {
            "nothing listens there: is sited running? set -s or SITED_SOCKET".to_string()
        }
        io::ErrorKind::PermissionDenied => permission_hint(path),
        _ => return describe(e),
    };
    format!("{} ({hint})", describe(e))
}

fn permission_hint(path: &Path) -> String {
    let group = std::fs::metadata(path)
        .ok()
        .map(|m| group_name(m.gid()).unwrap_or_else(|| format!("gid {}", m.gid())));
    match group {
        Some(group) => format!(
            "the socket is for group {group}: ask to be added to it or to sited's operator group, or use sudo"
        ),
        None => "ask to be added to sited's operator group, or use sudo".to_string(),
    }
}

/// The name of a group from /etc/group. Only for a hint, so a group known only to NSS (LDAP)
/// falls back to its number rather than pulling in libc.
fn group_name(gid: u32) -> Option<String> {
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id = fields.nth(1)?;
        (id.parse() == Ok(gid)).then(|| name.to_string())
    })
}

/// "10 s", "0.25 s": the user typed seconds, so say seconds.
fn seconds(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_socket_message_says_what_to_do() {
        let err = Error::Connect {
            path: PathBuf::from("/run/sited/control.sock"),
            source: io::Error::from_raw_os_error(2),
        };
        assert_eq!(
            err.to_string(),
            "cannot connect to sited at /run/sited/control.sock: No such file or directory \
             (is sited running? set -s or SITED_SOCKET)"
        );
    }

    #[test]
    fn permission_denied_mentions_the_operator_group() {
        let err = Error::Connect {
            path: PathBuf::from("/nonexistent/control.sock"),
            source: io::Error::from_raw_os_error(13),
        };
        let text = err.to_string();
        assert!(text.contains("Permission denied"), "{text}");
        assert!(text.contains("operator group"), "{text}");
        assert!(!text.contains("os error"), "{text}");
    }

    #[test]
    fn timeout_message_names_the_wait() {
        let text = Error::Timeout(Duration::from_millis(250)).to_string();
        assert!(
            text.starts_with("sited did not answer within 0.25 s"),
            "{text}"
        );
    }

    #[test]
    fn describe_keeps_non_os_errors_whole() {
        let e = io::Error::other("weird (os error 5) inside");
        assert_eq!(describe(&e), "weird (os error 5) inside");
        assert_eq!(
            describe(&io::Error::from_raw_os_error(111)),
            "Connection refused"
        );
    }

    #[test]
    fn group_name_finds_root() {
        // gid 0 is root on every Linux system this runs on.
        assert_eq!(group_name(0).as_deref(), Some("root"));
    }
}
