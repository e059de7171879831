//! Issue 12's costs, against the real `sited`, side by side in one run:
//!
//! - TLS: N actuators connecting over TLS 1.3 one after another, each pinning the hub's
//!   certificate, proving its key with `CHAL`/`AUTH` and registering: connections per second,
//!   and the RSS each adds, beside N plain clients doing the same without TLS; then `send` ->
//!   `ACK` round trips through the control socket to TLS actuators.
//! - Signed datagrams: the hub's CPU time per datagram taken in, unsigned and then signed (a
//!   fresh hub each, the same number of seed datagrams, each signed one with its own nonce),
//!   and the ingest capacity that gives, as a ratio.

use site_daemon::keys::{self, Key, Role, Secret};
use site_tests::{Daemon, SiteDir, wait_for};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// Sensor keys the signed datagrams are spread over (`t0` ...), one per sensor: a key may
/// have 65,536 nonces within the window, and the bench sends more than that a second.
const SENSOR_KEYS: usize = 8;

/// A hub with a TLS listener and UDP, its keys file written before it starts (`clients`
/// actuators `dev<k>` and [`SENSOR_KEYS`] sensor keys `t<k>`).
fn secure_hub(site: &SiteDir, clients: usize) -> (Daemon, Vec<Secret>, Vec<Secret>) {
    let mut keys = std::collections::BTreeMap::new();
    let mut secrets = Vec::with_capacity(clients);
    for k in 0..clients {
        let secret = Secret::generate().expect("random");
        secrets.push(secret.clone());
        let name = format!("dev{k}");
        keys.insert(
            name.clone(),
            Key {
                name,
                role: Role::Actuator,
                secret,
            },
        );
    }
    let sensors: Vec<Secret> = (0..SENSOR_KEYS)
        .map(|k| {
            let secret = Secret::generate().expect("random");
            keys.insert(
                format!("t{k}"),
                Key {
                    name: format!("t{k}"),
                    role: Role::Sensor,
                    secret: secret.clone(),
                },
            );
            secret
        })
        .collect();
    let path = site.path().join("keys.toml");
    site_daemon::store::write_atomic_mode(&path, keys::encode(&keys).as_bytes(), 0o600)
        .expect("keys file");
    site.write_config(&format!(
        "{}tls = \"127.0.0.1:0\"\nudp = \"127.0.0.1:0\"\nkeys = \"{}\"\nmax-clients-per-address = 100000\n",
        site.hub_section(),
        path.display()
    ));
    (Daemon::start(site), secrets, sensors)
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// A device: connected (over TLS if `fingerprint`), authenticated as `dev<k>`, registered.
fn device(
    addr: &str,
    fingerprint: Option<[u8; 32]>,
    k: usize,
    secret: &Secret,
) -> BufReader<Box<dyn Stream>> {
    let tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let stream: Box<dyn Stream> = match fingerprint {
        Some(fp) => {
            let config = site_daemon::tls::client_config(fp);
            let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
            let conn = rustls::ClientConnection::new(config, name).expect("client");
            Box::new(rustls::StreamOwned::new(conn, tcp))
        }
        None => Box::new(tcp),
    };
    let mut reader = BufReader::new(stream);
    let name = format!("dev{k}");
    reader.get_mut().write_all(b"CHAL\n").expect("CHAL");
    let mut line = String::new();
    reader.read_line(&mut line).expect("nonce");
    let nonce = line.trim_end().trim_start_matches("CHAL ");
    let mac = keys::auth_mac(secret, &name, nonce);
    reader
        .get_mut()
        .write_all(format!("AUTH {name} {mac}\nDEVICE {name} TYPE relay\n").as_bytes())
        .expect("AUTH");
    line.clear();
    reader.read_line(&mut line).expect("OK AUTH");
    assert_eq!(line, "OK AUTH actuator\n", "dev{k}");
    reader
}

fn rss_kib(pid: u32) -> u64 {
    super::proc_status(pid).1
}

/// `n` devices connected and registered one after another: (the devices, seconds taken,
/// RSS added per device in bytes).
fn connect_all(
    daemon: &Daemon,
    addr: &str,
    fingerprint: Option<[u8; 32]>,
    secrets: &[Secret],
) -> (Vec<BufReader<Box<dyn Stream>>>, f64, f64) {
    let pid = daemon.child.id();
    let before = rss_kib(pid);
    let start = Instant::now();
    let devices: Vec<_> = secrets
        .iter()
        .enumerate()
        .map(|(k, secret)| device(addr, fingerprint, k, secret))
        .collect();
    let n = devices.len();
    wait_for(&format!("{n} devices registered"), || {
        let clients = daemon.status()["hub"]["client_count"].as_u64().unwrap_or(0) as usize;
        (clients == n).then_some(())
    });
    let secs = start.elapsed().as_secs_f64();
    let per = (rss_kib(pid).saturating_sub(before) * 1024) as f64 / n as f64;
    (devices, secs, per)
}

pub fn tls(n: usize, samples: usize) {
    let limit = site_daemon::limits::raise_fd_limit().expect("raise the open-file limit");
    if (n as u64) * 2 + 64 > limit {
        println!(
            "secure: {n} TLS clients need {}+ descriptors; the hard limit is {limit}: skipped",
            n * 2
        );
        return;
    }
    // Plain first, on a hub of its own, for the comparison.
    let plain_site = SiteDir::new();
    let (plain_hub, secrets, _) = secure_hub(&plain_site, n);
    let (plain, plain_secs, plain_rss) =
        connect_all(&plain_hub, &plain_hub.hub_addr(), None, &secrets);
    drop(plain);
    drop(plain_hub);
    let site = SiteDir::new();
    let (daemon, secrets, _) = secure_hub(&site, n);
    let cert = daemon.ctl(&["cert"]);
    let fp = String::from_utf8_lossy(&cert.stdout).trim().to_string();
    let fp = site_daemon::config::site::parse_fingerprint(&fp).expect("fingerprint");
    let tls_addr = daemon.status()["hub"]["tls"]
        .as_str()
        .expect("tls")
        .to_string();
    let (mut devices, tls_secs, tls_rss) = connect_all(&daemon, &tls_addr, Some(fp), &secrets);
    println!(
        "secure: {n} actuators connecting one after another, each CHAL/AUTH + DEVICE: plain {:.0}/s, {plain_rss:.0} B RSS each; TLS 1.3 with the pinned certificate {:.0}/s, {tls_rss:.0} B RSS each (+{:.0} B for TLS)",
        n as f64 / plain_secs,
        n as f64 / tls_secs,
        tls_rss - plain_rss
    );
    let mut control = UnixStream::connect(&daemon.socket).expect("control socket");
    let mut replies = BufReader::new(control.try_clone().expect("clone"));
    let mut rtts = Vec::with_capacity(samples);
    let mut pick: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..samples {
        pick ^= pick << 13;
        pick ^= pick >> 7;
        pick ^= pick << 17;
        let k = (pick % n as u64) as usize;
        let request = format!(
            "{{\"cmd\":\"send\",\"device\":\"dev{k}\",\"command\":\"SET_INTERVAL 3\",\"timeout_ms\":5000}}\n"
        );
        let start = Instant::now();
        control.write_all(request.as_bytes()).expect("request");
        let mut line = String::new();
        devices[k].read_line(&mut line).expect("command");
        assert_eq!(line, "SET_INTERVAL 3\n");
        devices[k]
            .get_mut()
            .write_all(b"ACK Command Executed\n")
            .expect("ack");
        devices[k].get_mut().flush().expect("flush");
        line.clear();
        replies.read_line(&mut line).expect("response");
        rtts.push(start.elapsed());
        assert!(line.contains("ACK Command Executed"), "{line}");
    }
    println!(
        "secure: send -> ACK to TLS actuators at {n} clients over {samples} commands: {} (target p99 < 5 ms)",
        super::hub::summary("", &mut rtts).trim_start()
    );
}

/// Seed datagrams from [`SENSOR_KEYS`] sensors, `count` in all; each signed by its sensor's
/// key `t<k>` with its own nonce if `sign` holds the keys.
fn datagrams(count: usize, sign: Option<&[Secret]>) -> Vec<Vec<u8>> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        .to_string();
    (0..count)
        .map(|i| {
            let k = i % SENSOR_KEYS;
            let payload = format!(
                "Sensor{k:02},2026-11-22 10:00:00,temperature,21.5,SEQ:{}",
                (i / SENSOR_KEYS) % 10 + 1
            );
            match sign {
                Some(secrets) => {
                    let nonce = format!("{i:032x}");
                    let name = format!("t{k}");
                    let mac =
                        keys::datagram_mac(&secrets[k], &name, &now, &nonce, payload.as_bytes());
                    format!("SIG1 {name} {now} {nonce} {mac}\n{payload}").into_bytes()
                }
                None => payload.into_bytes(),
            }
        })
        .collect()
}

/// The process's CPU time so far (user + system), from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name's closing parenthesis; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    let ticks = fields.iter().sum::<u64>();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_secs_f64(ticks as f64 / hz as f64)
}

/// `count` seed datagrams, signed or not, sent to a fresh hub paced so that it keeps up (it
/// is the hub's cost that is measured, not the socket's drops): (datagrams taken in, the
/// hub's CPU time per datagram).
fn ingest(count: usize, signed: bool) -> (u64, Duration) {
    let site = SiteDir::new();
    let (daemon, _, sensors) = secure_hub(&site, 0);
    let batch = datagrams(count, signed.then_some(&sensors[..]));
    let to: SocketAddr = daemon.status()["hub"]["udp"]["listen"]
        .as_str()
        .expect("udp")
        .parse()
        .expect("addr");
    let pid = daemon.child.id();
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.connect(to).expect("connect");
    let before = cpu_time(pid);
    let start = Instant::now();
    for (i, d) in batch.iter().enumerate() {
        let _ = socket.send(d);
        // 100,000 a second: well under what either costs the hub.
        let due = start + Duration::from_micros(10 * i as u64);
        while Instant::now() < due {
            std::hint::spin_loop();
        }
    }
    let mut last = u64::MAX;
    let taken = wait_for("the hub to drain its socket", || {
        let now = daemon.status()["hub"]["udp"]["datagrams"]
            .as_u64()
            .unwrap_or(0);
        let settled = (now == last).then_some(now);
        last = now;
        std::thread::sleep(Duration::from_millis(200));
        settled
    });
    let cpu = cpu_time(pid) - before;
    // Each signed one was taken: none dropped as a bad mac, stale or replayed.
    let out = daemon.ctl(&["devices", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(list["rejected"].is_null(), "dropped: {}", list["rejected"]);
    (taken, cpu / u32::try_from(taken.max(1)).unwrap_or(u32::MAX))
}

pub fn signed(count: usize) {
    let (u_taken, u_cost) = ingest(count, false);
    let (s_taken, s_cost) = ingest(count, true);
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "secure: hub CPU per datagram, {count} sent at 100,000/s: unsigned {:.2} us ({u_taken} taken), signed {:.2} us ({s_taken} taken): signed ingest capacity = {:.0}% of unsigned (target >= 50%)",
        us(u_cost),
        us(s_cost),
        100.0 * u_cost.as_secs_f64() / s_cost.as_secs_f64().max(1e-12)
    );
}
