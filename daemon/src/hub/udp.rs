//! The hub's UDP listener for sensor streams (seed 001) and JSON readings (seed 002): returns
//! the readings (for the hub's store and the site's rules), tracks each sender's cycle, and answers a closed
//! cycle with `STATUS RECEIVED x/10 PACKETS` to the address it came from. Malformed datagrams
//! are counted per source and logged rate-limited; none of them stops the hub.
//!
//! This is the hub's hottest path, so a datagram from a known sender allocates only for its
//! reading: senders are found by address and then by name without building a key, and times
//! are kept as `SystemTime` and formatted only when someone asks.

use super::envelope::{self, Rejected, Replays};
use super::stream::{self, Reading, Stream, local_time};
use crate::keys::{KeySet, Role};
use crate::rate_limit::RateLimit;
use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};
use nix::sys::socket::MultiHeaders;
use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

/// Senders (host and device name) kept at most; beyond it, the quietest are forgotten to make
/// room, so a sender spraying many names cannot grow the table.
pub const MAX_SENDERS: usize = 4096;
/// The receive buffer asked for: room for a few thousand datagrams, so a burst from many
/// sensors, or a moment when the loop is busy with something else, loses nothing. The kernel
/// caps it at `net.core.rmem_max` (4 MiB on this development machine, 208 KiB on some).
pub const RECEIVE_BUFFER_BYTES: usize = 1 << 20;
/// Sources of malformed datagrams kept at most (the same reasoning).
pub const MAX_MALFORMED_SOURCES: usize = 1024;

/// One device sending from one host. A sensor that restarts (or the README's `/dev/udp`, a new
/// socket per datagram) comes from a new source port: it is still the same sensor, one row in
/// `sitectl devices`, and its `STATUS` replies go to the port it last sent from.
struct Sender {
    device: String,
    /// The source port of its latest datagram.
    port: u16,
    /// What it last reported (`temperature`): its type in `sitectl devices`.
    quantity: String,
    stream: Stream,
    /// Wall-clock time of the last packet (for `sitectl devices`).
    last_seen: SystemTime,
    /// Monotonic time of the last packet (for eviction).
    last_packet: Duration,
}

pub struct SensorHub {
    socket: UdpSocket,
    addr: SocketAddr,
    /// `cycle-gap-ms`: the shortest quiet gap that closes a cycle; each sender's own is longer
    /// if its interval is ([`Stream::gap`]).
    gap: Duration,
    senders: HashMap<IpAddr, Vec<Sender>>,
    /// Every sender by (device, host), sorted: `devices` and `status` page through it.
    by_name: BTreeSet<(String, IpAddr)>,
    sender_count: usize,
    /// Datagrams taken in since the start, well-formed or not.
    datagrams: u64,
    /// [`MAX_SENDERS`] (smaller in tests).
    max_senders: usize,
    malformed: HashMap<SocketAddr, u64>,
    log_limit: RateLimit,
    /// Each datagram is logged at debug level (as seed 001's server prints it), within this
    /// budget, so that a flood at debug level does not become a flood of the journal.
    debug_limit: RateLimit,
    /// Receive buffers, kept between wake-ups.
    batch: Option<Box<Batch>>,
    /// `sendmmsg`'s headers, kept likewise.
    send_headers: Option<Box<MultiHeaders<nix::sys::socket::SockaddrStorage>>>,
    /// `STATUS` replies owed, sent after each batch.
    replies: Vec<(SocketAddr, String)>,
    /// The keys signed datagrams are checked against.
    keys: KeySet,
    /// What an unsigned datagram may do (`anonymous-role`): readings, or nothing.
    anonymous: Option<Role>,
    /// `datagram-window-secs`, rounded up.
    window: u64,
    replays: Replays,
    /// Datagrams dropped for their signature, time, nonce or role, by source host.
    rejected: HashMap<IpAddr, site_proto::RejectedCounts>,
}

impl SensorHub {
    /// Binds `addr` and registers the socket as `token`.
    pub fn bind(
        addr: SocketAddr,
        gap: Duration,
        registry: &Registry,
        token: Token,
    ) -> io::Result<SensorHub> {
        let mut socket = UdpSocket::bind(addr)?;
        let addr = socket.local_addr()?;
        {
            use nix::sys::socket::{getsockopt, setsockopt, sockopt};
            if let Err(e) = setsockopt(&socket, sockopt::RcvBuf, &RECEIVE_BUFFER_BYTES) {
                log::warn!("hub udp: could not enlarge the receive buffer: {e}");
            }
            // Linux reports double what it was asked for (its bookkeeping overhead).
            if let Ok(size) = getsockopt(&socket, sockopt::RcvBuf) {
                log::info!("hub udp: receive buffer {} KiB", size / 2 / 1024);
            }
        }
        registry.register(&mut socket, token, Interest::READABLE)?;
        Ok(SensorHub {
            socket,
            addr,
            gap,
            senders: HashMap::new(),
            by_name: BTreeSet::new(),
            sender_count: 0,
            datagrams: 0,
            max_senders: MAX_SENDERS,
            malformed: HashMap::new(),
            log_limit: RateLimit::new(20, Duration::from_secs(60)),
            debug_limit: RateLimit::new(1000, Duration::from_secs(10)),
            batch: None,
            replies: Vec::new(),
            send_headers: None,
            keys: KeySet::default(),
            anonymous: None,
            window: 30,
            replays: Replays::default(),
            rejected: HashMap::new(),
        })
    }

    /// Who may send: the keys for signed datagrams, and what unsigned ones may do.
    pub fn set_access(&mut self, keys: KeySet, anonymous: Option<Role>, window: Duration) {
        self.replays.retain_keys(&keys);
        self.keys = keys;
        self.anonymous = anonymous;
        self.window = window.as_secs_f64().ceil() as u64;
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Reads waiting datagrams, at most [`BATCHES_PER_WAKEUP`] batches; returns the readings
    /// that are news, in order (JSON readings, and stream packets that are neither duplicates
    /// nor older than one already seen in their cycle: a late packet must not overwrite a
    /// newer value or flip a rule), and whether more may be waiting. A flood therefore gets
    /// a bounded turn, and the loop's timers and other sockets get theirs in between.
    pub fn readable(&mut self, now: Duration, batches: usize) -> (Vec<Reading>, bool) {
        let mut readings = Vec::new();
        // Taken out while the datagrams are handled (which needs `self`), then put back.
        let mut batch = self.batch.take().unwrap_or_else(Batch::new);
        let wall = SystemTime::now();
        let mut more = false;
        for round in 0.. {
            if round == batches {
                more = true;
                break;
            }
            let got = match batch.receive(&self.socket) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    crate::warn_limited!(self.log_limit, "hub udp: receive failed: {e}");
                    break;
                }
            };
            self.datagrams += got as u64;
            for i in 0..got {
                let Some((bytes, from)) = batch.datagram(i) else {
                    continue;
                };
                self.datagram(bytes, from, now, wall, &mut readings);
            }
            self.send_replies();
            // Fewer than asked for: the queue was empty a moment ago, and a datagram arriving
            // since raises a new readiness event (each arrival does, edge-triggered or not),
            // so the extra call that would only say EAGAIN is saved.
            if got < BATCH {
                break;
            }
        }
        self.batch = Some(batch);
        (readings, more)
    }

    fn datagram(
        &mut self,
        bytes: &[u8],
        from: SocketAddr,
        now: Duration,
        wall: SystemTime,
        readings: &mut Vec<Reading>,
    ) {
        {
            crate::debug_limited!(
                self.debug_limit,
                "hub udp: DATA from {from}: {}",
                crate::rate_limit::escape_bytes(bytes)
            );
            if bytes.len() >= SLOT {
                let longest = SLOT - 1;
                self.malformed(from, &format!("longer than {longest} bytes"));
                return;
            }
            // Signed or not, and by which key.
            let (bytes, key) = match envelope::parse(bytes) {
                Ok(None) if self.anonymous.is_none() => {
                    let why = "unsigned, and anonymous-role is none";
                    self.reject(from, Rejected::Forbidden, why);
                    return;
                }
                Ok(None) => (bytes, None),
                Ok(Some(env)) => {
                    let now_secs = wall
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    match envelope::verify(
                        &env,
                        &self.keys,
                        &mut self.replays,
                        now_secs,
                        self.window,
                    ) {
                        Ok(key) => (env.payload, Some(key.name.clone())),
                        Err((why, words)) => {
                            self.reject(from, why, &words);
                            return;
                        }
                    }
                }
                Err(reason) => {
                    self.malformed(from, &reason);
                    return;
                }
            };
            // A name a key owns is that key's to send under.
            let owned = |device: &str| {
                self.keys
                    .owner_of(device)
                    .filter(|owner| key.as_deref() != Some(owner.name.as_str()))
                    .map(|owner| format!("{device} belongs to key {}", owner.name))
            };
            if let Some(device) = stream::hello(bytes) {
                if let Some(why) = owned(&device) {
                    self.reject(from, Rejected::Forbidden, &why);
                    return;
                }
                // A seed 002 peer's announcement: it is seen (`sitectl devices`), nothing more.
                let sender = self.sender(from, &device, now);
                if sender.quantity.is_empty() {
                    sender.quantity.push_str("hello");
                }
                sender.last_seen = wall;
                sender.last_packet = now;
                return;
            }
            match stream::parse(bytes) {
                Ok(reading) => {
                    if let Some(why) = owned(&reading.device) {
                        self.reject(from, Rejected::Forbidden, &why);
                        return;
                    }
                    let sender = self.sender(from, &reading.device, now);
                    if sender.quantity != reading.quantity {
                        sender.quantity.clone_from(&reading.quantity);
                    }
                    sender.last_seen = wall;
                    sender.last_packet = now;
                    let fresh = match reading.seq {
                        Some(seq) => {
                            let (closed, fresh) = sender.stream.packet(seq, now);
                            for cycle in closed {
                                self.replies.push((from, cycle.status_line()));
                            }
                            fresh
                        }
                        None => true,
                    };
                    if fresh {
                        readings.push(reading);
                    }
                }
                Err(reason) => self.malformed(from, &reason),
            }
        }
    }

    /// The sender `device` on `from`'s host, made if new (evicting the quietest when full),
    /// with `from`'s port as the one to answer.
    fn sender(&mut self, from: SocketAddr, device: &str, now: Duration) -> &mut Sender {
        let known = self
            .senders
            .get(&from.ip())
            .and_then(|list| list.iter().position(|s| s.device == device));
        if known.is_none() && self.sender_count >= self.max_senders {
            self.evict_quietest();
        }
        let list = self.senders.entry(from.ip()).or_default();
        let index = match known {
            Some(i) => i,
            None => {
                self.sender_count += 1;
                self.by_name.insert((device.to_string(), from.ip()));
                list.push(Sender {
                    device: device.to_string(),
                    port: from.port(),
                    quantity: String::new(),
                    stream: Stream::default(),
                    last_seen: SystemTime::now(),
                    last_packet: now,
                });
                list.len() - 1
            }
        };
        let sender = &mut list[index];
        sender.port = from.port();
        sender
    }

    /// Forgets the quietest eighth of the senders (at least one): one scan makes room for
    /// many newcomers, so a flood from ever-new senders costs no scan per datagram.
    fn evict_quietest(&mut self) {
        let mut times: Vec<Duration> = self.all().map(|(_, s)| s.last_packet).collect();
        let n = (times.len() / 8).max(1);
        if times.is_empty() {
            return;
        }
        let (_, cutoff, _) = times.select_nth_unstable(n - 1);
        let cutoff = *cutoff;
        let mut forgotten = 0;
        let mut example = String::new();
        let by_name = &mut self.by_name;
        self.senders.retain(|ip, list| {
            list.retain(|s| {
                let keep = s.last_packet > cutoff || forgotten >= n;
                if !keep {
                    forgotten += 1;
                    by_name.remove(&(s.device.clone(), *ip));
                    if example.is_empty() {
                        example.clone_from(&s.device);
                    }
                }
                keep
            });
            !list.is_empty()
        });
        self.sender_count -= forgotten;
        crate::warn_limited!(
            self.log_limit,
            "hub udp: {} senders known; forgot the {forgotten} quietest ({} among them)",
            self.max_senders,
            crate::rate_limit::escape(&example)
        );
    }

    /// A datagram dropped for its signature, time, nonce or role: counted by source host,
    /// logged within the budget.
    fn reject(&mut self, from: SocketAddr, why: Rejected, words: &str) {
        if !self.rejected.contains_key(&from.ip()) && self.rejected.len() >= MAX_MALFORMED_SOURCES {
            // As for malformed datagrams: the half with the fewest goes.
            let mut totals: Vec<u64> = self.rejected.values().map(|c| c.total()).collect();
            let half = totals.len() / 2;
            let (_, median, _) = totals.select_nth_unstable(half);
            let median = *median;
            let mut dropped = 0;
            self.rejected.retain(|_, c| {
                let keep = c.total() > median || dropped >= half;
                if !keep {
                    dropped += 1;
                }
                keep
            });
        }
        let counts = self.rejected.entry(from.ip()).or_default();
        let (what, n) = match why {
            Rejected::BadMac => ("bad mac", &mut counts.bad_mac),
            Rejected::Stale => ("stale", &mut counts.stale),
            Rejected::Replayed => ("replayed", &mut counts.replayed),
            Rejected::Forbidden => ("forbidden", &mut counts.forbidden),
        };
        *n += 1;
        let n = *n;
        crate::warn_limited!(
            self.log_limit,
            "hub udp: dropped a datagram from {from} ({what}, {n} so far): {}",
            crate::rate_limit::escape(words)
        );
    }

    /// The sources of dropped datagrams and their counts, by address.
    pub fn rejected(&self) -> Vec<site_proto::RejectedSource> {
        let mut list: Vec<site_proto::RejectedSource> = self
            .rejected
            .iter()
            .map(|(ip, counts)| site_proto::RejectedSource {
                counts: counts.clone(),
                source: ip.to_string(),
            })
            .collect();
        list.sort_by(|a, b| a.source.cmp(&b.source));
        list
    }

    fn malformed(&mut self, from: SocketAddr, reason: &str) {
        if !self.malformed.contains_key(&from) && self.malformed.len() >= MAX_MALFORMED_SOURCES {
            // Forget the half with the fewest: a steady offender keeps its count, and one
            // scan makes room for many newcomers.
            let mut counts: Vec<u64> = self.malformed.values().copied().collect();
            let half = counts.len() / 2;
            let (_, median, _) = counts.select_nth_unstable(half);
            let median = *median;
            let mut dropped = 0;
            self.malformed.retain(|_, n| {
                let keep = *n > median || dropped >= half;
                if !keep {
                    dropped += 1;
                }
                keep
            });
        }
        let count = self.malformed.entry(from).or_default();
        *count += 1;
        let count = *count;
        crate::warn_limited!(
            self.log_limit,
            "hub udp: malformed datagram from {from} ({count} so far): {reason}"
        );
    }

    /// Sends the `STATUS` lines owed, each as one datagram without a newline (seed clients
    /// print exactly what they receive), up to [`BATCH`] per system call (`sendmmsg`). A reply
    /// that cannot go (the sender's address unreachable, our buffer full) is logged and
    /// dropped: the sensor's next cycle gets its own.
    fn send_replies(&mut self) {
        use nix::sys::socket::{MsgFlags, SockaddrStorage, sendmmsg};
        use std::os::fd::AsRawFd;
        let headers = self
            .send_headers
            .get_or_insert_with(|| Box::new(MultiHeaders::preallocate(BATCH, None)));
        for chunk in self.replies.chunks(BATCH) {
            let addrs: Vec<Option<SockaddrStorage>> = chunk
                .iter()
                .map(|(to, _)| Some(SockaddrStorage::from(*to)))
                .collect();
            let lines: Vec<[io::IoSlice<'_>; 1]> = chunk
                .iter()
                .map(|(_, line)| [io::IoSlice::new(line.as_bytes())])
                .collect();
            let mut sent = 0;
            while sent < chunk.len() {
                let no_cmsgs: [nix::sys::socket::ControlMessage<'_>; 0] = [];
                match sendmmsg(
                    self.socket.as_raw_fd(),
                    headers,
                    &lines[sent..],
                    &addrs[sent..],
                    no_cmsgs,
                    MsgFlags::MSG_DONTWAIT,
                ) {
                    Ok(done) => sent += done.count().max(1),
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => {
                        // Skip the one that failed and carry on with the rest.
                        let to = chunk[sent].0;
                        crate::warn_limited!(
                            self.log_limit,
                            "hub udp: could not answer {to}: {}",
                            io::Error::from(e)
                        );
                        sent += 1;
                    }
                }
            }
        }
        self.replies.clear();
    }

    /// Every sender, with the address it last sent from.
    fn all(&self) -> impl Iterator<Item = (SocketAddr, &Sender)> {
        self.senders
            .iter()
            .flat_map(|(ip, list)| list.iter().map(move |s| (SocketAddr::new(*ip, s.port), s)))
    }

    /// When the earliest open cycle goes quiet for its sender's gap.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.all()
            .filter_map(|(_, s)| s.stream.deadline(self.gap))
            .min()
    }

    /// Closes the cycles that have been quiet for their sender's gap and answers their senders.
    pub fn expire(&mut self, now: Duration) {
        let gap = self.gap;
        let mut replies = Vec::new();
        for (ip, list) in &mut self.senders {
            for s in list {
                if let Some(cycle) = s.stream.expire(now, gap) {
                    replies.push((SocketAddr::new(*ip, s.port), cycle.status_line()));
                }
            }
        }
        self.replies.extend(replies);
        self.send_replies();
    }

    /// Senders by (device, host) after `after`, at most `limit`: a page costs its own length.
    fn page(
        &self,
        after: Option<&(String, IpAddr)>,
        limit: usize,
    ) -> impl Iterator<Item = (&(String, IpAddr), SocketAddr, &Sender)> {
        use std::ops::Bound;
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.by_name
            .range((from, Bound::Unbounded))
            .filter_map(|key| {
                let (device, ip) = key;
                let s = self.senders.get(ip)?.iter().find(|s| &s.device == device)?;
                Some((key, SocketAddr::new(*ip, s.port), s))
            })
            .take(limit)
    }

    /// A page of senders for `sitectl devices` (device, address, last packet, statistics), and
    /// the key the next page starts after, if there are more.
    pub fn senders(
        &self,
        after: Option<&(String, IpAddr)>,
        limit: usize,
    ) -> (Vec<site_proto::DeviceEntry>, Option<(String, IpAddr)>) {
        let mut last = None;
        let page = self
            .page(after, limit)
            .map(|(key, from, s)| {
                last = Some(key.clone());
                site_proto::DeviceEntry::Udp(site_proto::UdpDevice {
                    address: from.to_string(),
                    interval_ms: s.stream.interval().map(|i| i.as_millis() as u64),
                    last_seen: local_time(s.last_seen),
                    name: s.device.clone(),
                    state: if s.stream.is_open() {
                        "in cycle"
                    } else {
                        "idle"
                    }
                    .into(),
                    stats: s.stream.stats.clone(),
                    kind: s.quantity.clone(),
                    via: "udp".into(),
                })
            })
            .collect();
        let more = last
            .as_ref()
            .is_some_and(|key| self.by_name.range(key..).nth(1).is_some());
        (page, last.filter(|_| more))
    }

    pub fn sender_count(&self) -> usize {
        self.sender_count
    }

    /// For status: the first few senders' streams and the sources of the most malformed
    /// datagrams ([`site_proto::STATUS_LIST`] of each), with the counts of both.
    pub fn streams(&self) -> site_proto::UdpStatus {
        // Senders that only said hello (seed 002 peers) have no stream, as before.
        let streams = self
            .page(None, usize::MAX)
            .filter(|(_, _, s)| s.stream.stats.packets > 0)
            .take(site_proto::STATUS_LIST)
            .map(|(_, from, s)| site_proto::StreamStatus {
                device: s.device.clone(),
                from: from.to_string(),
                stats: s.stream.stats.clone(),
            })
            .collect();
        let mut worst: Vec<(&SocketAddr, &u64)> = self.malformed.iter().collect();
        let cut = site_proto::STATUS_LIST.min(worst.len());
        if cut > 0 && cut < worst.len() {
            worst.select_nth_unstable_by(cut - 1, |a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        }
        site_proto::UdpStatus {
            listen: self.addr.to_string(),
            streams,
            sender_count: self.sender_count,
            datagrams: self.datagrams,
            malformed: worst[..cut]
                .iter()
                .map(|(a, n)| (a.to_string(), **n))
                .collect(),
            malformed_sources: self.malformed.len(),
        }
    }
}

/// Datagrams received per system call (`recvmmsg`): the hub takes a burst in one call where a
/// `recv_from` loop makes one call per datagram.
const BATCH: usize = 32;
/// Batches read per wake-up before the loop gives the other sources and due timers a turn.
pub const BATCHES_PER_WAKEUP: usize = 8;
/// Room for the longest datagram the hub accepts (a signed one: the `SIG1` header and the
/// longest payload), plus one byte to notice a longer one.
const SLOT: usize = stream::MAX_DATAGRAM_BYTES + envelope::MAX_HEADER_BYTES + 1;

/// Buffers for one `recvmmsg`, kept between wake-ups.
struct Batch {
    data: Vec<u8>,
    headers: MultiHeaders<nix::sys::socket::SockaddrStorage>,
    lens: [usize; BATCH],
    from: [Option<SocketAddr>; BATCH],
}

impl Batch {
    fn new() -> Box<Batch> {
        Box::new(Batch {
            data: vec![0; SLOT * BATCH],
            headers: MultiHeaders::preallocate(BATCH, None),
            lens: [0; BATCH],
            from: [None; BATCH],
        })
    }

    /// Receives up to [`BATCH`] datagrams without blocking; returns how many.
    fn receive(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        use nix::sys::socket::{MsgFlags, recvmmsg};
        use std::os::fd::AsRawFd;
        let Batch {
            data,
            headers,
            lens,
            from,
        } = self;
        let mut slots = data.chunks_mut(SLOT);
        let mut iovecs: [[io::IoSliceMut<'_>; 1]; BATCH] = std::array::from_fn(|_| {
            [io::IoSliceMut::new(
                slots.next().expect("data holds BATCH slots"),
            )]
        });
        let received = recvmmsg(
            socket.as_raw_fd(),
            headers,
            iovecs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )
        .map_err(io::Error::from)?;
        let mut got = 0;
        for (i, message) in received.enumerate() {
            // A datagram longer than its slot is cut to the slot and MSG_TRUNC is set; the
            // slot's spare byte already makes it too long for `parse`.
            lens[i] = message.bytes.min(SLOT);
            from[i] = message.address.and_then(socket_addr);
            got += 1;
        }
        Ok(got)
    }

    /// The `i`th datagram of the last `receive` and who sent it (None for an address family
    /// other than IPv4 or IPv6, which a UDP socket bound to one of them does not produce).
    fn datagram(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        let bytes = &self.data[i * SLOT..i * SLOT + self.lens[i]];
        Some((bytes, self.from[i]?))
    }
}

/// The sender's address as the kernel gave it.
fn socket_addr(storage: nix::sys::socket::SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = storage.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    storage
        .as_sockaddr_in6()
        .map(|v6| SocketAddr::V6((*v6).into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(max_senders: usize) -> (mio::Poll, SensorHub) {
        let poll = mio::Poll::new().expect("poll");
        let addr = "127.0.0.1:0".parse().expect("addr");
        let mut hub =
            SensorHub::bind(addr, Duration::from_secs(2), poll.registry(), Token(0)).expect("bind");
        hub.max_senders = max_senders;
        // Unsigned readings, as a loopback hub takes them by default.
        hub.set_access(
            KeySet::default(),
            Some(Role::Sensor),
            Duration::from_secs(30),
        );
        (poll, hub)
    }

    fn udp(entry: &site_proto::DeviceEntry) -> &site_proto::UdpDevice {
        match entry {
            site_proto::DeviceEntry::Udp(d) => d,
            other => panic!("not a UDP sender: {other:?}"),
        }
    }

    fn sender(to: SocketAddr) -> std::net::UdpSocket {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.connect(to).expect("connect");
        s
    }

    #[test]
    fn a_full_sender_table_forgets_the_quietest_sender() {
        let (_poll, mut hub) = hub(2);
        let to = hub.local_addr();
        let sockets: Vec<_> = (0..3).map(|_| sender(to)).collect();
        for (i, s) in sockets.iter().enumerate() {
            s.send(format!("S{i},t,temperature,20.0,SEQ:1").as_bytes())
                .expect("send");
            // Loopback delivers at once; each arrives at its own (later) time.
            let (readings, _) = hub.readable(Duration::from_secs(i as u64 + 1), BATCHES_PER_WAKEUP);
            assert_eq!(readings.len(), 1, "S{i}'s reading");
        }
        let names: Vec<String> = hub
            .senders(None, usize::MAX)
            .0
            .iter()
            .map(|s| udp(s).name.clone())
            .collect();
        assert_eq!(names, ["S1", "S2"], "S0 was the quietest");
        assert_eq!(hub.sender_count, 2);
        assert_eq!(hub.by_name.len(), 2, "the name index forgets S0 too");
        // Pages of one: each names where the next starts, the last none.
        let (first, next) = hub.senders(None, 1);
        assert_eq!(udp(&first[0]).name, "S1");
        let (second, last) = hub.senders(next.as_ref(), 1);
        assert_eq!((udp(&second[0]).name.as_str(), last), ("S2", None));
    }

    #[test]
    fn a_sensor_on_a_new_port_is_the_same_sensor_and_is_answered_there() {
        let (_poll, mut hub) = hub(MAX_SENDERS);
        let to = hub.local_addr();
        let first = sender(to);
        let second = sender(to);
        second
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        for n in 1..=5u8 {
            first
                .send(format!("S0,t,temperature,20.0,SEQ:{n}").as_bytes())
                .expect("send");
        }
        hub.readable(Duration::from_secs(1), BATCHES_PER_WAKEUP);
        // Restarted: a new socket, the same name, the rest of the cycle.
        for n in 6..=10u8 {
            second
                .send(format!("S0,t,temperature,20.0,SEQ:{n}").as_bytes())
                .expect("send");
        }
        hub.readable(Duration::from_secs(2), BATCHES_PER_WAKEUP);
        let (listed, _) = hub.senders(None, usize::MAX);
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(
            udp(&listed[0]).address,
            second.local_addr().expect("addr").to_string()
        );
        let mut buf = [0u8; 64];
        let n = second
            .recv(&mut buf)
            .expect("the STATUS, at the latest port");
        assert_eq!(&buf[..n], b"STATUS RECEIVED 10/10 PACKETS");
    }

    #[test]
    fn a_batch_larger_than_one_receive_and_every_status_reply_go_through() {
        let (_poll, mut hub) = hub(MAX_SENDERS);
        let s = sender(hub.local_addr());
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        // 100 datagrams: four batches of 32 and then some, ten complete cycles.
        for k in 0..100u8 {
            let n = k % 10 + 1;
            s.send(format!("S0,t,temperature,{k}.0,SEQ:{n}").as_bytes())
                .expect("send");
        }
        let (readings, more) = hub.readable(Duration::from_secs(1), BATCHES_PER_WAKEUP);
        assert!(!more, "100 datagrams fit in one wake-up's budget");
        assert_eq!(readings.len(), 100);
        assert_eq!(readings[99].value, 99.0, "in order");
        let mut buf = [0u8; 64];
        for _ in 0..10 {
            let n = s.recv(&mut buf).expect("a STATUS reply per cycle");
            assert_eq!(&buf[..n], b"STATUS RECEIVED 10/10 PACKETS");
        }
    }
}
