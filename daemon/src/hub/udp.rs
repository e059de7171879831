//! The hub's UDP listener for sensor streams (seed 001) and JSON readings (seed 002): hands the
//! readings to the node's store, tracks each sender's cycle, and answers a closed
//! cycle with `STATUS RECEIVED x/10 PACKETS` to the address it came from. Malformed datagrams
//! are counted per source and logged rate-limited; none of them stops the hub.

use super::stream::{self, Reading, Stream};
use crate::event_loop::Tok;
use crate::rate_limit::RateLimit;
use mio::net::UdpSocket;
use mio::{Interest, Registry};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

pub struct SensorHub {
    socket: UdpSocket,
    addr: SocketAddr,
    gap: Duration,
    /// Per sender address and device name: a sensor restarting on a new port starts afresh.
    streams: HashMap<(SocketAddr, String), Stream>,
    malformed: HashMap<SocketAddr, u64>,
    /// Local wall-clock time of each stream's last packet.
    last_seen: HashMap<(SocketAddr, String), String>,
    log_limit: RateLimit,
}

impl SensorHub {
    pub fn bind(addr: SocketAddr, gap: Duration, registry: &Registry) -> io::Result<SensorHub> {
        let mut socket = UdpSocket::bind(addr)?;
        let addr = socket.local_addr()?;
        registry.register(&mut socket, Tok::HubUdp.into(), Interest::READABLE)?;
        Ok(SensorHub {
            socket,
            addr,
            gap,
            streams: HashMap::new(),
            malformed: HashMap::new(),
            last_seen: HashMap::new(),
            log_limit: RateLimit::new(20, Duration::from_secs(60)),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Reads every waiting datagram; returns the readings, in order.
    pub fn readable(&mut self, now: Duration) -> Vec<Reading> {
        let mut readings = Vec::new();
        let mut buf = [0u8; stream::MAX_DATAGRAM_BYTES + 1];
        loop {
            let (n, from) = match self.socket.recv_from(&mut buf) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    crate::warn_limited!(self.log_limit, "hub udp: receive failed: {e}");
                    break;
                }
            };
            match stream::parse(&buf[..n]) {
                Ok(reading) => {
                    self.last_seen
                        .insert((from, reading.device.clone()), super::server::wall_clock());
                    if let Some(seq) = reading.seq {
                        let s = self
                            .streams
                            .entry((from, reading.device.clone()))
                            .or_default();
                        for cycle in s.packet(seq, now) {
                            self.reply(from, &cycle.status_line());
                        }
                    }
                    readings.push(reading);
                }
                Err(reason) => {
                    let count = self.malformed.entry(from).or_default();
                    *count += 1;
                    let count = *count;
                    crate::warn_limited!(
                        self.log_limit,
                        "hub udp: malformed datagram from {from} ({count} so far): {reason}"
                    );
                }
            }
        }
        readings
    }

    fn reply(&mut self, to: SocketAddr, line: &str) {
        // One datagram, no newline: seed clients print exactly what they receive.
        if let Err(e) = self.socket.send_to(line.as_bytes(), to) {
            crate::warn_limited!(self.log_limit, "hub udp: could not answer {to}: {e}");
        }
    }

    /// When the earliest open cycle goes quiet for the gap.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.streams
            .values()
            .filter_map(|s| s.deadline(self.gap))
            .min()
    }

    /// Closes the cycles that have been quiet for the gap and answers their senders.
    pub fn expire(&mut self, now: Duration) {
        let gap = self.gap;
        let mut replies = Vec::new();
        for ((from, _), s) in &mut self.streams {
            if let Some(cycle) = s.expire(now, gap) {
                replies.push((*from, cycle.status_line()));
            }
        }
        for (to, line) in replies {
            self.reply(to, &line);
        }
    }

    /// Every sender seen, for `sitectl devices`: device, address, last packet, statistics.
    pub fn senders(&self) -> Vec<serde_json::Value> {
        let mut out: Vec<serde_json::Value> = self
            .last_seen
            .iter()
            .map(|((from, device), at)| {
                let stats = self.streams.get(&(*from, device.clone())).map(|s| serde_json::json!(s.stats));
                serde_json::json!({
                    "name": device, "via": "udp", "address": from.to_string(),
                    "state": if self.streams.get(&(*from, device.clone())).is_some_and(Stream::is_open) { "in cycle" } else { "idle" },
                    "last_seen": at, "stats": stats,
                })
            })
            .collect();
        out.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        out
    }

    /// Per-sender stream statistics and malformed counts, for status.
    pub fn streams(&self) -> serde_json::Value {
        let streams: Vec<serde_json::Value> = self
            .streams
            .iter()
            .map(|((from, device), s)| serde_json::json!({ "device": device, "from": from.to_string(), "stats": s.stats }))
            .collect();
        let malformed: BTreeMap<String, u64> = self
            .malformed
            .iter()
            .map(|(a, n)| (a.to_string(), *n))
            .collect();
        serde_json::json!({ "listen": self.addr.to_string(), "streams": streams, "malformed": malformed })
    }
}
