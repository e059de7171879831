//! sd_notify with std only: tells systemd READY=1 once config, plugins and sockets are up,
//! RELOADING=1/READY=1 around a reload, STOPPING=1 at stop, and WATCHDOG=1 from the timer heap.
//! `NOTIFY_SOCKET` may name a path or an abstract socket (`@name`). Failures are logged, never
//! fatal: a daemon that cannot reach systemd still has doors to run.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

/// Where notifications go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    Path(PathBuf),
    /// A Linux abstract socket name (without the leading `@`).
    Abstract(Vec<u8>),
}

impl Address {
    /// Parses `NOTIFY_SOCKET`'s value.
    pub fn parse(value: &str) -> Option<Address> {
        if let Some(name) = value.strip_prefix('@') {
            Some(Address::Abstract(name.as_bytes().to_vec()))
        } else if value.starts_with('/') {
            Some(Address::Path(PathBuf::from(value)))
        } else {
            None
        }
    }
}

/// A connection to systemd's notification socket, or nothing when not run by systemd.
pub struct Notifier {
    target: Option<(UnixDatagram, Address)>,
}

impl Notifier {
    /// From `NOTIFY_SOCKET` (absent: notifications are no-ops).
    pub fn from_env() -> Notifier {
        let address = std::env::var("NOTIFY_SOCKET")
            .ok()
            .and_then(|v| Address::parse(&v));
        Notifier::to(address)
    }

    pub fn to(address: Option<Address>) -> Notifier {
        // Non-blocking: a full notify socket (a stuck PID 1) must not stall the loop; the
        // notification is dropped and logged instead, and the watchdog sorts it out.
        let target = address.and_then(|a| {
            match UnixDatagram::unbound().and_then(|s| s.set_nonblocking(true).map(|()| s)) {
                Ok(socket) => Some((socket, a)),
                Err(e) => {
                    log::warn!("sd_notify: cannot create a socket: {e}");
                    None
                }
            }
        });
        Notifier { target }
    }

    /// Sends one notification (newline-separated `KEY=value` assignments).
    pub fn send(&self, message: &str) {
        let Some((socket, address)) = &self.target else {
            return;
        };
        let result = match address {
            Address::Path(path) => socket.send_to(message.as_bytes(), path),
            Address::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name)
                    .and_then(|addr| socket.send_to_addr(message.as_bytes(), &addr))
            }
        };
        if let Err(e) = result {
            log::warn!("sd_notify: {e}");
        }
    }

    pub fn ready(&self, status: &str) {
        // One assignment per line: a newline in the text would start a bogus one.
        let status = status.replace(['\n', '\r'], " ");
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    pub fn reloading(&self) {
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}",
            crate::timers::monotonic_now().as_micros()
        ));
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }
}

/// How often to ping the watchdog: half of `WATCHDOG_USEC`, if it is meant for this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok()?;
    let pid = std::env::var("WATCHDOG_PID").ok();
    watchdog_interval_from(&usec, pid.as_deref(), std::process::id())
}

fn watchdog_interval_from(usec: &str, pid: Option<&str>, me: u32) -> Option<Duration> {
    if let Some(pid) = pid
        && pid.parse::<u32>().ok() != Some(me)
    {
        return None;
    }
    let usec: u64 = usec.parse().ok().filter(|u| *u > 0)?;
    Some(Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_paths_and_abstract_names() {
        assert_eq!(
            Address::parse("/run/systemd/notify"),
            Some(Address::Path("/run/systemd/notify".into()))
        );
        assert_eq!(
            Address::parse("@sd-notify"),
            Some(Address::Abstract(b"sd-notify".to_vec()))
        );
        assert_eq!(Address::parse("relative"), None);
    }

    #[test]
    fn ready_reaches_a_path_socket_with_its_status() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).expect("bind");
        Notifier::to(Some(Address::Path(path))).ready("13 devices on sim");
        let mut buf = [0u8; 256];
        let n = listener.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=13 devices on sim");
    }

    #[test]
    fn stopping_reaches_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("sited-notify-test-{}", std::process::id());
        let addr =
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
        let listener = UnixDatagram::bind_addr(&addr).expect("bind");
        Notifier::to(Some(Address::Abstract(name.into_bytes()))).stopping();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn a_newline_in_the_status_cannot_add_an_assignment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).expect("bind");
        Notifier::to(Some(Address::Path(path))).ready("ok\nWATCHDOG=trigger");
        let mut buf = [0u8; 256];
        let n = listener.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=ok WATCHDOG=trigger");
    }

    #[test]
    fn a_full_notify_socket_drops_the_message_instead_of_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let _listener = UnixDatagram::bind(&path).expect("bind");
        let notifier = Notifier::to(Some(Address::Path(path)));
        // Nobody reads: the receive queue fills (a few hundred datagrams at most), and every
        // send after that fails at once. A blocking socket would never finish.
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for _ in 0..10_000 {
                notifier.watchdog();
            }
            let _ = done.send(());
        });
        finished
            .recv_timeout(Duration::from_secs(10))
            .expect("sends to a full socket return instead of blocking");
    }

    #[test]
    fn no_socket_means_silent_no_ops() {
        Notifier::to(None).watchdog();
    }

    #[test]
    fn watchdog_pings_at_half_the_timeout_and_only_for_its_pid() {
        assert_eq!(
            watchdog_interval_from("30000000", None, 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval_from("30000000", Some("7"), 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(watchdog_interval_from("30000000", Some("8"), 7), None);
        assert_eq!(watchdog_interval_from("0", None, 7), None);
        assert_eq!(watchdog_interval_from("soon", None, 7), None);
    }
}
