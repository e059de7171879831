//! Sensor streams (seed 001's UDP path, seed 002's JSON readings), as pure parsing and cycle
//! bookkeeping; the socket side is separate. A seed sensor sends
//! `Sensor01,<timestamp>,temperature,<value>,SEQ:<n>` with n = 1..10, then waits for
//! `STATUS RECEIVED x/10 PACKETS` (`; MISSING: [3, 7]`). A cycle closes on SEQ:10, on a SEQ:1
//! while it is open (the sender started over), or after a quiet gap. Duplicates and
//! out-of-order packets are counted, never double-counted.
//!
//! The quiet gap adapts to each sender ([`Stream::gap`]): a sensor reporting every 3 s must not
//! have its cycle closed between two of its packets (it would get `1/10` after every packet,
//! and a seed client, which reads one reply per cycle, would stay a cycle behind from then on),
//! and a lost `SEQ:10` must still be answered while a seed client waits for its reply (5 s
//! after sending `SEQ:10`). For the same reason a cycle is answered once: if the gap closed it
//! early and the sender carries on (it slowed down), the rest of it is counted as its tail and
//! not answered again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Packets per cycle in seed 001.
pub const CYCLE_LEN: u8 = 10;
/// The largest datagram the hub reads; anything longer is malformed.
pub const MAX_DATAGRAM_BYTES: usize = 1024;

/// One reading, from either format.
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    pub device: String,
    pub quantity: String,
    pub value: f64,
    /// Seed 001 datagrams carry a sequence number; JSON readings do not.
    pub seq: Option<u8>,
}

/// Parses a datagram (or a TCP line) in seed 001's CSV form or seed 002's JSON form.
pub fn parse(bytes: &[u8]) -> Result<Reading, String> {
    if bytes.len() > MAX_DATAGRAM_BYTES {
        return Err(format!("longer than {MAX_DATAGRAM_BYTES} bytes"));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    let text = text.trim();
    if text.starts_with('{') {
        return parse_json(text);
    }
    // Five fields, without collecting them (this is the hub's per-datagram path).
    let mut fields = text.split(',').map(str::trim);
    let (Some(device), Some(_timestamp), Some(quantity), Some(value), Some(seq), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(format!(
            "expected 5 comma-separated fields (name,timestamp,type,value,SEQ:n), got {}",
            text.split(',').count()
        ));
    };
    let seq = seq
        .strip_prefix("SEQ:")
        .and_then(|n| n.trim().parse::<u8>().ok())
        .filter(|n| (1..=CYCLE_LEN).contains(n))
        .ok_or_else(|| format!("bad sequence field {seq:?} (expected SEQ:1 to SEQ:{CYCLE_LEN})"))?;
    Ok(Reading {
        device: word(device, "device name")?,
        quantity: word(quantity, "type")?,
        value: number(value)?,
        seq: Some(seq),
    })
}

/// A seed 002 peer's `{"type": "hello", "device": ...}` announcement: the device it names, if
/// `bytes` is one. It is not a reading and not malformed; discovery proper is separate.
pub fn hello(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Hello {
        #[serde(rename = "type")]
        kind: String,
        device: String,
    }
    if bytes.first() != Some(&b'{') || bytes.len() > MAX_DATAGRAM_BYTES {
        return None;
    }
    let h: Hello = serde_json::from_slice(bytes).ok()?;
    (h.kind == "hello").then(|| word(&h.device, "device").ok())?
}

pub fn parse_json(text: &str) -> Result<Reading, String> {
    #[derive(serde::Deserialize)]
    struct Json {
        #[serde(rename = "type")]
        quantity: String,
        device: String,
        value: f64,
    }
    let j: Json = serde_json::from_str(text).map_err(|e| format!("bad JSON reading: {e}"))?;
    if !j.value.is_finite() {
        return Err("the value is not a finite number".into());
    }
    Ok(Reading {
        device: word(&j.device, "device")?,
        quantity: word(&j.quantity, "type")?,
        value: j.value,
        seq: None,
    })
}

fn word(w: &str, what: &str) -> Result<String, String> {
    let ok = !w.is_empty()
        && w.len() <= 64
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.@".contains(c));
    if ok {
        Ok(w.to_string())
    } else {
        Err(format!("bad {what} {w:?}"))
    }
}

fn number(v: &str) -> Result<f64, String> {
    v.parse::<f64>()
        .ok()
        .filter(|n| n.is_finite())
        .ok_or_else(|| format!("bad value {v:?}"))
}

/// The latest value of one quantity, and when it arrived.
#[derive(Clone, Debug, PartialEq)]
pub struct Latest {
    pub value: f64,
    pub at: std::time::SystemTime,
}

/// The latest reading per device and quantity, from UDP streams and TCP JSON lines alike.
/// Storing allocates only for a device or quantity not seen before.
#[derive(Debug, Default)]
pub struct Readings {
    latest: std::collections::BTreeMap<String, std::collections::BTreeMap<String, Latest>>,
}

impl Readings {
    pub fn store(&mut self, r: &Reading, at: std::time::SystemTime) {
        let latest = Latest { value: r.value, at };
        let quantities = match self.latest.get_mut(r.device.as_str()) {
            Some(q) => q,
            None => self.latest.entry(r.device.clone()).or_default(),
        };
        match quantities.get_mut(r.quantity.as_str()) {
            Some(slot) => *slot = latest,
            None => {
                quantities.insert(r.quantity.clone(), latest);
            }
        }
    }

    /// A page of the readings for `status` and `sitectl sensors`: by device after `after`
    /// (at most `limit` devices), then quantity, `at` in local wall-clock time; and the device
    /// the next page starts after, if there are more.
    #[allow(clippy::type_complexity)]
    pub fn page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> (
        BTreeMap<String, BTreeMap<String, site_proto::SensorReading>>,
        Option<String>,
    ) {
        use std::ops::Bound;
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut range = self.latest.range::<str, _>((from, Bound::Unbounded));
        let page: BTreeMap<String, BTreeMap<String, site_proto::SensorReading>> = range
            .by_ref()
            .take(limit)
            .map(|(device, quantities)| {
                let q = quantities
                    .iter()
                    .map(|(name, l)| {
                        (
                            name.clone(),
                            site_proto::SensorReading {
                                value: l.value,
                                at: local_time(l.at),
                            },
                        )
                    })
                    .collect();
                (device.clone(), q)
            })
            .collect();
        let next = if range.next().is_some() {
            page.keys().next_back().cloned()
        } else {
            None
        };
        (page, next)
    }

    /// How many devices have readings.
    pub fn count(&self) -> usize {
        self.latest.len()
    }
}

/// `YYYY-MM-DD HH:MM:SS` in local time, as the event log and `sitectl` show times.
///
/// A page of 100 devices formats 100 of these on the loop, so the digits are written here
/// and the zone's offset (from chrono, which reads the system's zone rules) is asked for once
/// per quarter hour of the clock (zones change offset only on quarter hours) and again after
/// a minute, so a zone changed under a running daemon is seen.
pub fn local_time(t: std::time::SystemTime) -> String {
    use std::cell::Cell;
    use std::time::{Instant, UNIX_EPOCH};
    const QUARTER: i64 = 15 * 60;
    thread_local! {
        /// (quarter hour since the epoch, its offset in seconds, when that was asked).
        static OFFSET: Cell<Option<(i64, i64, Instant)>> = const { Cell::new(None) };
    }
    let Ok(since) = t.duration_since(UNIX_EPOCH) else {
        return chrono_local_time(t);
    };
    let Ok(secs) = i64::try_from(since.as_secs()) else {
        return chrono_local_time(t);
    };
    let quarter = secs.div_euclid(QUARTER);
    let offset = match OFFSET.get() {
        Some((q, offset, asked)) if q == quarter && asked.elapsed().as_secs() < 60 => offset,
        _ => {
            use chrono::{Offset, TimeZone};
            let Some(utc) = chrono::DateTime::from_timestamp(secs, 0) else {
                return chrono_local_time(t);
            };
            let offset = i64::from(
                chrono::Local
                    .offset_from_utc_datetime(&utc.naive_utc())
                    .fix()
                    .local_minus_utc(),
            );
            OFFSET.set(Some((quarter, offset, Instant::now())));
            offset
        }
    };
    let local = secs + offset;
    let (days, day_secs) = (local.div_euclid(86_400), local.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        return chrono_local_time(t);
    }
    let mut out = String::with_capacity(19);
    let mut digits = |n: i64, width: u32, then: Option<char>| {
        for place in (0..width).rev() {
            let digit = (n / 10i64.pow(place) % 10) as u8;
            out.push(char::from(b'0' + digit));
        }
        if let Some(c) = then {
            out.push(c);
        }
    };
    digits(year, 4, Some('-'));
    digits(month, 2, Some('-'));
    digits(day, 2, Some(' '));
    digits(day_secs / 3600, 2, Some(':'));
    digits(day_secs / 60 % 60, 2, Some(':'));
    digits(day_secs % 60, 2, None);
    out
}

fn chrono_local_time(t: std::time::SystemTime) -> String {
    chrono::DateTime::<chrono::Local>::from(t)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// (year, month, day) of a day number counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A finished cycle, and the reply its sender is owed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClosedCycle {
    pub received: usize,
    pub missing: Vec<u8>,
}

impl ClosedCycle {
    /// Seed 001's wording and Python's list format.
    pub fn status_line(&self) -> String {
        if self.missing.is_empty() {
            format!("STATUS RECEIVED {}/{CYCLE_LEN} PACKETS", self.received)
        } else {
            let list: Vec<String> = self.missing.iter().map(u8::to_string).collect();
            format!(
                "STATUS RECEIVED {}/{CYCLE_LEN} PACKETS; MISSING: [{}]",
                self.received,
                list.join(", ")
            )
        }
    }
}

/// How long a cycle waits for a sender whose interval is not known yet (until two packets of
/// one cycle have arrived), unless `cycle-gap-ms` is longer: long enough for the first cycle
/// of any sensor reporting at least once a minute. Only a sender that sends one packet and
/// then nothing waits this long for its reply.
pub const FIRST_INTERVAL_ALLOWANCE: Duration = Duration::from_secs(60);
/// How late a packet may be, beyond its sender's interval, before its cycle is closed: one more
/// interval, but at most this, so a cycle whose `SEQ:10` was lost is answered within the 5 s a
/// seed client waits for its `STATUS`.
pub const MAX_LATENESS: Duration = Duration::from_secs(3);
/// Intervals remembered per sender; the longest of them is its interval.
const INTERVALS_KEPT: usize = 4;

/// Counters for `sitectl devices` and `status`.
pub use site_proto::StreamStats;

/// One sender's open cycle (if any) and its counters.
#[derive(Debug, Default)]
pub struct Stream {
    received: BTreeSet<u8>,
    highest: u8,
    last_packet: Option<Duration>,
    /// The open cycle's newest fresh packet: its sequence number and arrival.
    last_fresh: Option<(u8, Duration)>,
    /// Recent time per sequence step between fresh packets of one cycle (the pause between
    /// cycles, which includes the sender's wait for its reply, is not an interval).
    intervals: [Option<Duration>; INTERVALS_KEPT],
    next_interval: usize,
    /// The highest sequence number of a cycle the quiet gap closed, until the next packet.
    answered_early: Option<u8>,
    /// The open cycle carries on one the gap closed and answered: a seed client reads one
    /// reply per cycle, so a second would leave it a cycle behind for good.
    tail: bool,
    pub stats: StreamStats,
}

impl Stream {
    pub fn is_open(&self) -> bool {
        !self.received.is_empty()
    }

    /// A packet with sequence `seq` arrived at `now`; returns the cycles it closed, and whether
    /// it is fresh: neither a duplicate nor older than one already seen in its cycle, so its
    /// value is the sensor's latest.
    pub fn packet(&mut self, seq: u8, now: Duration) -> (Vec<ClosedCycle>, bool) {
        let mut closed = Vec::new();
        self.stats.packets += 1;
        if seq == 1 && self.is_open() {
            closed.extend(self.close());
        }
        if self
            .answered_early
            .take()
            .is_some_and(|highest| seq > highest)
        {
            self.tail = true;
            self.stats.tails += 1;
        }
        let mut fresh = false;
        if !self.received.insert(seq) {
            self.stats.duplicates += 1;
        } else if seq < self.highest {
            self.stats.out_of_order += 1;
        } else {
            fresh = true;
            if let Some((before, at)) = self.last_fresh.filter(|(before, _)| seq > *before) {
                let steps = u32::from(seq - before);
                self.intervals[self.next_interval] = Some(now.saturating_sub(at) / steps);
                self.next_interval = (self.next_interval + 1) % INTERVALS_KEPT;
            }
            self.last_fresh = Some((seq, now));
        }
        self.highest = self.highest.max(seq);
        self.last_packet = Some(now);
        if seq == CYCLE_LEN {
            closed.extend(self.close());
        }
        (closed, fresh)
    }

    /// The sender's interval between packets: the longest of its recent ones, once it has sent
    /// two packets of one cycle.
    pub fn interval(&self) -> Option<Duration> {
        self.intervals.iter().flatten().max().copied()
    }

    /// How long this sender's open cycle may be quiet before it is closed: `floor`
    /// (`cycle-gap-ms`), or, if longer, the time until the cycle's last packet is due plus the
    /// lateness allowed ([`MAX_LATENESS`], at most one interval). Until `SEQ:9` that is two
    /// intervals, so one lost packet mid-cycle does not split the cycle in two (two replies
    /// for one cycle would leave a seed client a cycle behind); after `SEQ:9`, one, so a lost
    /// `SEQ:10` is answered while a seed client still waits for its reply. Before the
    /// interval is known, [`FIRST_INTERVAL_ALLOWANCE`].
    pub fn gap(&self, floor: Duration) -> Duration {
        let wait = match self.interval() {
            Some(i) => {
                let steps = if self.highest >= CYCLE_LEN - 1 { 1 } else { 2 };
                i * steps + i.min(MAX_LATENESS)
            }
            None => FIRST_INTERVAL_ALLOWANCE,
        };
        wait.max(floor)
    }

    /// Closes an open cycle that has been quiet for its gap (see [`Stream::gap`]). The last
    /// packet's sequence number and time are kept, so the sender's next packet still measures
    /// its interval: a sender that has slowed down (`SET_INTERVAL`) learns its new pace from
    /// the cycle that closed too early, rather than having every cycle closed after one packet.
    pub fn expire(&mut self, now: Duration, floor: Duration) -> Option<ClosedCycle> {
        if self.deadline(floor)? > now {
            return None;
        }
        let kept = self.last_fresh;
        let highest = self.highest;
        let cycle = self.close();
        self.last_fresh = kept;
        if cycle.is_some() {
            self.answered_early = Some(highest);
        }
        cycle
    }

    /// When the open cycle times out, if one is open.
    pub fn deadline(&self, floor: Duration) -> Option<Duration> {
        if self.is_open() {
            self.last_packet.map(|at| at + self.gap(floor))
        } else {
            None
        }
    }

    /// Ends the open cycle; its reply, unless it is the tail of a cycle already answered.
    fn close(&mut self) -> Option<ClosedCycle> {
        let missing: Vec<u8> = (1..=CYCLE_LEN)
            .filter(|n| !self.received.contains(n))
            .collect();
        let cycle = ClosedCycle {
            received: self.received.len(),
            missing,
        };
        self.received.clear();
        self.highest = 0;
        self.last_fresh = None;
        if std::mem::take(&mut self.tail) {
            return None;
        }
        self.stats.cycles += 1;
        self.stats.missing += cycle.missing.len() as u64;
        if cycle.missing.is_empty() {
            self.stats.complete_cycles += 1;
        }
        Some(cycle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_002_hello_is_recognised_and_is_not_a_reading() {
        let hi = br#"{"type": "hello", "device": "sensor1", "port": 50001}"#;
        assert_eq!(hello(hi), Some("sensor1".to_string()));
        assert!(parse(hi).is_err());
        assert_eq!(
            hello(br#"{"type": "temperature", "device": "s", "value": 1}"#),
            None
        );
        assert_eq!(hello(br#"{"type": "hello", "device": "bad name!"}"#), None);
        assert_eq!(hello(b"Sensor01,t,temperature,1,SEQ:1"), None);
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn local_time_writes_what_chrono_writes() {
        use std::time::{Duration, UNIX_EPOCH};
        let now = std::time::SystemTime::now();
        // Every 599 s over two years around now (so several in each quarter hour the offset
        // is kept for, and every change of the machine's zone in that span: run with
        // TZ=Europe/Berlin or TZ=Australia/Lord_Howe to see them), the epoch, and leap days.
        let mut instants: Vec<std::time::SystemTime> = (0..105_000u64)
            .map(|k| now - Duration::from_secs(366 * 86_400) + Duration::from_secs(k * 599))
            .collect();
        instants.extend([
            UNIX_EPOCH,
            UNIX_EPOCH + Duration::from_secs(951_782_400), // 2000-02-29
            UNIX_EPOCH + Duration::from_secs(4_107_542_399), // 2100-02-28 23:59:59
            UNIX_EPOCH - Duration::from_secs(1),
        ]);
        for t in instants {
            assert_eq!(local_time(t), chrono_local_time(t), "{t:?}");
        }
    }

    #[test]
    fn seed_datagram_parses() {
        let r = parse(b"Sensor01,2025-11-02 10:00:01,temperature,27.2,SEQ:1").expect("valid");
        assert_eq!(
            r,
            Reading {
                device: "Sensor01".into(),
                quantity: "temperature".into(),
                value: 27.2,
                seq: Some(1)
            }
        );
    }

    #[test]
    fn seed_002_json_reading_parses() {
        let r = parse(br#"{"type": "temperature", "device": "sensor1", "value": 24.8}"#)
            .expect("valid");
        assert_eq!(
            r,
            Reading {
                device: "sensor1".into(),
                quantity: "temperature".into(),
                value: 24.8,
                seq: None
            }
        );
    }

    #[test]
    fn malformed_datagrams_get_reasons() {
        assert!(
            parse(b"Sensor01,t,temperature,27.2")
                .expect_err("4 fields")
                .contains("5 comma-separated")
        );
        assert!(
            parse(b"Sensor01,t,temperature,hot,SEQ:1")
                .expect_err("value")
                .contains("bad value")
        );
        assert!(
            parse(b"Sensor01,t,temperature,1.0,SEQ:11")
                .expect_err("seq")
                .contains("SEQ:1 to SEQ:10")
        );
        assert!(parse(b"Sensor01,t,temperature,NaN,SEQ:1").is_err());
        assert!(parse(b"\xff\xfe").expect_err("utf8").contains("UTF-8"));
        assert!(parse(&[b'a'; 2000]).expect_err("size").contains("longer"));
        assert!(
            parse(br#"{"type": "temperature"}"#)
                .expect_err("json")
                .contains("JSON")
        );
    }

    #[test]
    fn a_full_cycle_closes_on_seq_10_with_nothing_missing() {
        let mut s = Stream::default();
        for n in 1..=9 {
            assert!(s.packet(n, ms(u64::from(n))).0.is_empty());
        }
        let closed = s.packet(10, ms(10)).0;
        assert_eq!(
            closed,
            vec![ClosedCycle {
                received: 10,
                missing: vec![]
            }]
        );
        assert_eq!(closed[0].status_line(), "STATUS RECEIVED 10/10 PACKETS");
        assert!(!s.is_open());
    }

    #[test]
    fn gaps_are_listed_in_the_seed_format() {
        let mut s = Stream::default();
        for n in [1, 2, 4, 5, 6, 8, 9] {
            s.packet(n, ms(1));
        }
        let closed = s.packet(10, ms(2)).0;
        assert_eq!(
            closed[0].status_line(),
            "STATUS RECEIVED 8/10 PACKETS; MISSING: [3, 7]"
        );
    }

    #[test]
    fn duplicates_and_reordering_are_counted_not_double_counted() {
        let mut s = Stream::default();
        for n in [1, 3, 2, 3, 4] {
            s.packet(n, ms(1));
        }
        assert_eq!(s.stats.duplicates, 1);
        assert_eq!(s.stats.out_of_order, 1);
        let closed = s.expire(ms(5000), ms(2000)).expect("quiet cycle closes");
        assert_eq!(closed.received, 4);
        assert_eq!(closed.missing, vec![5, 6, 7, 8, 9, 10]);
    }

    #[test]
    fn only_fresh_packets_carry_the_latest_value() {
        let mut s = Stream::default();
        assert!(s.packet(1, ms(1)).1);
        assert!(s.packet(3, ms(2)).1);
        assert!(!s.packet(2, ms(3)).1, "older than SEQ:3");
        assert!(!s.packet(3, ms(4)).1, "a duplicate");
        assert!(s.packet(4, ms(5)).1);
        assert!(s.packet(1, ms(6)).1, "a new cycle");
    }

    #[test]
    fn readings_keep_the_latest_per_device_and_quantity() {
        let mut r = Readings::default();
        let at = std::time::SystemTime::UNIX_EPOCH;
        for (device, quantity, value) in [("s1", "t", 1.0), ("s1", "h", 2.0), ("s1", "t", 3.0)] {
            let reading = Reading {
                device: device.into(),
                quantity: quantity.into(),
                value,
                seq: None,
            };
            r.store(&reading, at);
        }
        let (status, next) = r.page(None, 10);
        assert_eq!(next, None);
        assert_eq!(status["s1"]["t"].value, 3.0);
        assert_eq!(status["s1"]["h"].value, 2.0);
        assert_eq!(status["s1"]["t"].at.len(), 19);
    }

    #[test]
    fn seq_1_while_open_closes_the_old_cycle_first() {
        let mut s = Stream::default();
        s.packet(1, ms(1));
        s.packet(2, ms(2));
        let closed = s.packet(1, ms(3)).0;
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].received, 2);
        assert!(s.is_open(), "the new cycle has its SEQ:1");
        assert_eq!(s.stats.duplicates, 0);
    }

    #[test]
    fn a_cycle_stays_open_until_the_gap_has_passed() {
        let mut s = Stream::default();
        s.packet(1, ms(100));
        s.packet(2, ms(200));
        assert_eq!(s.deadline(ms(2000)), Some(ms(2200)));
        assert_eq!(s.expire(ms(2199), ms(2000)), None);
        assert!(s.expire(ms(2200), ms(2000)).is_some());
        assert_eq!(s.deadline(ms(2000)), None);
    }

    /// A seed sender: one cycle per entry of `every` (its interval in ms for that cycle), each
    /// packet `late` ms behind schedule every third packet, the `(cycle, seq)` packets in `lost`
    /// never arriving. After `SEQ:10` it waits up to 5 s for its STATUS, then sleeps one interval
    /// and starts over, as seed 001's client does. Returns the replies and when each came, and
    /// checks that each cycle's reply came while the client waited for it.
    fn play(every: &[u64], late: u64, lost: &[(usize, u8)]) -> Vec<(u64, ClosedCycle)> {
        let mut s = Stream::default();
        let mut replies = Vec::new();
        let mut now = 0;
        // Runs the expiry at every millisecond for `span`, as the loop's timer would.
        fn wait(s: &mut Stream, now: &mut u64, span: u64, replies: &mut Vec<(u64, ClosedCycle)>) {
            for _ in 0..span {
                *now += 1;
                if let Some(c) = s.expire(ms(*now), ms(2000)) {
                    replies.push((*now, c));
                }
            }
        }
        for (cycle, &interval) in every.iter().enumerate() {
            for seq in 1..=CYCLE_LEN {
                let delay = if seq % 3 == 0 { late } else { 0 };
                wait(&mut s, &mut now, delay, &mut replies);
                if !lost.contains(&(cycle, seq)) {
                    for c in s.packet(seq, ms(now)).0 {
                        replies.push((now, c));
                    }
                }
                if seq < CYCLE_LEN {
                    wait(&mut s, &mut now, interval - delay, &mut replies);
                }
            }
            let sent_10 = now;
            wait(&mut s, &mut now, 5000, &mut replies);
            assert!(
                replies.len() > cycle && replies[cycle].0 <= sent_10 + 5000,
                "every {interval} ms, cycle {cycle}: no reply within the seed client's 5 s: {replies:?}"
            );
            wait(&mut s, &mut now, interval, &mut replies);
        }
        assert_eq!(
            replies.len(),
            every.len(),
            "one reply per cycle: {replies:?}"
        );
        replies
    }

    fn lines(replies: &[(u64, ClosedCycle)]) -> Vec<String> {
        replies.iter().map(|(_, c)| c.status_line()).collect()
    }

    const FULL: &str = "STATUS RECEIVED 10/10 PACKETS";
    const INTERVALS: [u64; 7] = [100, 1000, 2500, 3000, 10_000, 20_000, 50_000];

    #[test]
    fn a_steady_sender_gets_one_status_per_cycle_at_any_interval() {
        for every in INTERVALS {
            for late in [0, (every / 10).min(500)] {
                let replies = play(&[every; 3], late, &[]);
                assert_eq!(
                    lines(&replies),
                    vec![FULL; 3],
                    "every {every} ms, {late} ms late"
                );
            }
        }
    }

    #[test]
    fn a_lost_seq_10_is_answered_while_the_seed_client_still_waits() {
        for every in INTERVALS {
            for cycle in [0, 1] {
                let replies = play(&[every; 3], (every / 10).min(500), &[(cycle, 10)]);
                let mut expected = vec![FULL; 3];
                expected[cycle] = "STATUS RECEIVED 9/10 PACKETS; MISSING: [10]";
                assert_eq!(
                    lines(&replies),
                    expected,
                    "every {every} ms, SEQ:10 lost in cycle {cycle}"
                );
            }
        }
    }

    #[test]
    fn a_packet_lost_mid_cycle_does_not_split_the_cycle() {
        for every in INTERVALS {
            for seq in [2, 5, 9] {
                let replies = play(&[every; 3], (every / 10).min(500), &[(1, seq)]);
                let mut expected = vec![FULL.to_string(); 3];
                expected[1] = format!("STATUS RECEIVED 9/10 PACKETS; MISSING: [{seq}]");
                assert_eq!(
                    lines(&replies),
                    expected,
                    "every {every} ms, SEQ:{seq} lost"
                );
            }
            // The last two lost: answered while the client waits, too.
            let replies = play(&[every; 2], (every / 10).min(500), &[(0, 9), (0, 10)]);
            assert_eq!(
                lines(&replies),
                vec!["STATUS RECEIVED 8/10 PACKETS; MISSING: [9, 10]", FULL],
                "every {every} ms"
            );
        }
    }

    #[test]
    fn a_sender_that_slows_down_learns_its_new_pace_and_stays_in_step() {
        // SET_INTERVAL 3, as seed 001's operator sends it, on a 1 s sensor; then slower still.
        let replies = play(&[1000, 1000, 3000, 3000, 10_000, 10_000], 0, &[]);
        let early = |n: usize| {
            let missing: Vec<String> = (n + 1..=10).map(|m| m.to_string()).collect();
            format!(
                "STATUS RECEIVED {n}/10 PACKETS; MISSING: [{}]",
                missing.join(", ")
            )
        };
        // The first cycle at each new pace is answered early, once (play checks one reply
        // per cycle, each while the client waits); the next is whole.
        assert_eq!(
            lines(&replies),
            [
                FULL.to_string(),
                FULL.into(),
                early(1),
                FULL.into(),
                early(1),
                FULL.into()
            ]
        );
    }

    #[test]
    fn the_gap_follows_the_senders_recent_interval() {
        let mut s = Stream::default();
        s.packet(1, ms(0));
        assert_eq!(s.interval(), None);
        assert_eq!(s.gap(ms(2000)), FIRST_INTERVAL_ALLOWANCE);
        s.packet(2, ms(3000));
        assert_eq!(s.interval(), Some(ms(3000)));
        assert_eq!(
            s.gap(ms(2000)),
            ms(9000),
            "two intervals (one packet may be lost) and one late"
        );
        // SEQ:3 lost: SEQ:4 two steps later is still a 3 s interval.
        s.packet(4, ms(9000));
        assert_eq!(s.interval(), Some(ms(3000)));
        // A late or repeated packet is not an interval.
        s.packet(3, ms(9500));
        s.packet(4, ms(9600));
        assert_eq!(s.interval(), Some(ms(3000)));
        // Once the slow steps are out of the window, the gap shrinks back to the floor.
        for seq in 5..=9 {
            s.packet(seq, ms(9000 + 100 * u64::from(seq - 4)));
        }
        assert_eq!(s.interval(), Some(ms(100)));
        assert_eq!(s.gap(ms(2000)), ms(2000));
        // A slow sender is allowed at most MAX_LATENESS beyond its interval.
        let mut slow = Stream::default();
        slow.packet(1, ms(0));
        slow.packet(2, ms(20_000));
        assert_eq!(slow.gap(ms(2000)), ms(40_000) + MAX_LATENESS);
        // After SEQ:9 only SEQ:10 is due: one interval, so a lost SEQ:10 is answered in time.
        for seq in 3..=9 {
            slow.packet(seq, ms(20_000 * u64::from(seq - 1)));
        }
        assert_eq!(slow.gap(ms(2000)), ms(20_000) + MAX_LATENESS);
        // The pause between cycles is not an interval.
        let mut s = Stream::default();
        for seq in 1..=CYCLE_LEN {
            s.packet(seq, ms(u64::from(seq) * 100));
        }
        s.packet(1, ms(60_000));
        assert_eq!(s.interval(), Some(ms(100)));
    }
}
