//! The control-socket protocol between `sited` and `sitectl`: one JSON object per line each
//! way, a request then its response. Types and framing only; no I/O policy lives here.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// The longest request line the daemon accepts, newline included.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// The longest response line `sitectl` accepts: `status` and `devices` on a hub with ten
/// thousand devices run to a few MiB.
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// The default socket path, used when neither `-s` nor `SITED_SOCKET` is given.
pub const DEFAULT_SOCKET: &str = "/run/sited/control.sock";

/// A request from `sitectl`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Every device and the daemon itself (observe). Field-less requests are empty struct
    /// variants so that `deny_unknown_fields` applies to them too.
    Status {},
    /// The daemon's version and ABI versions (observe).
    Version {},
    /// Drive a simulated input (operate; sim backend only).
    Sim { device: String, value: String },
    /// Drive an output (operate).
    Set { device: String, value: String },
    /// Re-read the config file (operate), as SIGHUP does.
    Reload {},
    /// The event log's last `lines` lines (observe). With `follow`, the connection stays open
    /// and every new line is sent as it is written, as `{"ok": true, "result": {"line": ...}}`.
    Log {
        #[serde(default = "default_log_lines")]
        lines: usize,
        #[serde(default)]
        follow: bool,
    },
    /// Set the staff counter to 0, with an event-log line saying so (operate).
    CountReset {},
    /// Writes `command` to the TCP device registered as `device` and answers with the line it
    /// sends back (operate): `{"reply": "ACK ..."}`; `quit` closes its connection instead
    /// (`{"closed": true}`). No answer within `timeout_ms` is a failure.
    Send {
        device: String,
        command: String,
        #[serde(default = "default_send_timeout_ms")]
        timeout_ms: u64,
    },
    /// Devices registered at the hub (TCP) and sensors streaming to it (UDP) (observe), one
    /// page at a time: `{"devices": [{"name", "via", "address", "state", "last_seen", ...}],
    /// "total": n, "next": "<cursor>"}`, TCP devices by name, then UDP senders by name; ask
    /// again with `after` = `next` for the next page (no `next`: that was the last). At most
    /// [`MAX_PAGE`] a page, so a hub with thousands of devices never holds the loop.
    Devices {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    /// The latest sensor readings (observe), paged like `devices`: `{"sensors": {"<device>":
    /// {"<quantity>": {"value", "at"}}}, "total": n, "next": "<device>"}`.
    Sensors {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    /// Adds a hub key (operate): the daemon makes a secret with the OS random generator,
    /// writes the keys file and answers once it is on disk with [`KeyAdded`], the only time
    /// the secret is ever shown.
    KeyAdd { name: String, role: String },
    /// The hub's keys (operate): [`KeyList`], names and roles, never secrets.
    KeyList {},
    /// Removes a hub key (operate) and drops the connections that used it: [`KeyRemoved`].
    KeyRemove { name: String },
    /// The hub's TLS certificate (observe): [`CertInfo`].
    Cert {},
}

/// `key-add`'s answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyAdded {
    pub name: String,
    pub role: String,
    /// 64 lowercase hex characters: the key, shown this once.
    pub secret: String,
}

/// `key-list`'s answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyList {
    pub keys: Vec<KeyInfo>,
}

/// One hub key, as `key list` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KeyInfo {
    /// Connections authenticated with it now.
    pub connections: usize,
    pub name: String,
    pub role: String,
}

/// `key-remove`'s answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRemoved {
    /// Connections that used the key and were dropped.
    pub dropped: usize,
    pub removed: String,
}

/// `cert`'s answer: what a door node pins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertInfo {
    /// The certificate file (PEM).
    pub file: String,
    /// SHA-256 over the certificate's DER encoding, 64 lowercase hex characters.
    pub fingerprint: String,
    /// The TLS listener's address.
    pub listen: String,
}

/// The most entries one `devices` or `sensors` page holds (and the default).
pub const MAX_PAGE: usize = 100;

/// Hub clients, UDP streams and sensors `status` carries; the rest are counted, and listed by
/// `devices` and `sensors`.
pub const STATUS_LIST: usize = 10;

/// A page of a long list (`devices`, `sensors`). Its fields are in name order, so its wire
/// form is what it was when the daemon sent it through a `serde_json::Value`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The page's entries, under the list's own name (`devices`, `sensors`).
    #[serde(flatten)]
    pub items: T,
    /// Where the next page starts (`after`), if there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// How many entries the whole list has.
    pub total: usize,
}

/// A page of `devices`: the hub's TCP clients by name, then its UDP senders by name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceList {
    pub devices: Vec<DeviceEntry>,
    /// Datagrams the hub dropped for their signature, time, nonce or role, by source host
    /// (on the first page only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<RejectedSource>,
}

/// A host whose datagrams the hub dropped, and how many for what.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedSource {
    #[serde(flatten)]
    pub counts: RejectedCounts,
    /// The host's address.
    pub source: String,
}

/// Dropped datagrams by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RejectedCounts {
    /// A wrong mac or an unknown key name.
    pub bad_mac: u64,
    /// Unsigned where `anonymous-role` allows none, or a name another key owns.
    pub forbidden: u64,
    /// A nonce its key used within the window.
    pub replayed: u64,
    /// A time outside `datagram-window-secs`.
    pub stale: u64,
}

impl RejectedCounts {
    pub fn total(&self) -> u64 {
        self.bad_mac + self.forbidden + self.replayed + self.stale
    }
}

/// One device the hub hears from. Fields in name order (see [`Page`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DeviceEntry {
    Tcp(TcpDevice),
    Udp(UdpDevice),
}

/// A registered hub client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TcpDevice {
    pub address: String,
    pub connected_secs: u64,
    /// The key it authenticated with (`CHAL`/`AUTH`), if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub last_seen: String,
    pub name: String,
    /// `connected`.
    pub state: Cow<'static, str>,
    #[serde(rename = "type")]
    pub kind: String,
    /// `tcp`, or `tls` for a client of the TLS listener.
    pub via: Cow<'static, str>,
}

/// A UDP sensor (one per device name and host).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UdpDevice {
    /// Where its last datagram came from.
    pub address: String,
    /// Its learnt sending interval, once it has one.
    pub interval_ms: Option<u64>,
    pub last_seen: String,
    pub name: String,
    /// `in cycle` or `idle`.
    pub state: Cow<'static, str>,
    pub stats: StreamStats,
    /// Its quantity (`temperature`).
    #[serde(rename = "type")]
    pub kind: String,
    /// `udp`.
    pub via: Cow<'static, str>,
}

/// A page of `sensors`: the latest reading of each quantity, by device name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SensorList {
    pub sensors: BTreeMap<String, BTreeMap<String, SensorReading>>,
}

fn default_log_lines() -> usize {
    20
}

/// How long a device has to answer an operator command unless the request says otherwise.
pub const DEFAULT_SEND_TIMEOUT_MS: u64 = 5000;

fn default_send_timeout_ms() -> u64 {
    DEFAULT_SEND_TIMEOUT_MS
}

impl Request {
    /// Does this request change anything? Those need an operator.
    pub fn operates(&self) -> bool {
        matches!(
            self,
            Request::Sim { .. }
                | Request::Set { .. }
                | Request::Reload {}
                | Request::CountReset {}
                | Request::Send { .. }
                | Request::KeyAdd { .. }
                | Request::KeyList {}
                | Request::KeyRemove { .. }
        )
    }
}

/// Why the daemon refused a request. `sitectl` exits 1 for all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// Malformed, oversized or unknown request.
    BadRequest,
    /// The caller may observe but not operate.
    Denied,
    /// No such device.
    NotFound,
    /// The device exists but does not take that value or that kind of request.
    Rejected,
    /// The daemon tried and failed (hardware, plugin fault, bad new config).
    Failed,
}

/// The answer to one request. On the wire: `{"ok": true, "result": ...}` or
/// `{"ok": false, "kind": "denied", "error": "..."}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(into = "WireResponse", try_from = "WireResponse")]
pub enum Response {
    Ok { result: serde_json::Value },
    Err { kind: ErrorKind, error: String },
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireResponse {
    ok: bool,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    result: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<ErrorKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl From<Response> for WireResponse {
    fn from(r: Response) -> Self {
        match r {
            Response::Ok { result } => WireResponse {
                ok: true,
                result,
                kind: None,
                error: None,
            },
            Response::Err { kind, error } => WireResponse {
                ok: false,
                result: serde_json::Value::Null,
                kind: Some(kind),
                error: Some(error),
            },
        }
    }
}

impl TryFrom<WireResponse> for Response {
    type Error = String;
    fn try_from(w: WireResponse) -> Result<Self, String> {
        match (w.ok, w.kind, w.error) {
            (true, None, None) => Ok(Response::Ok { result: w.result }),
            (false, Some(kind), Some(error)) => Ok(Response::Err { kind, error }),
            _ => Err("a response needs either ok: true, or ok: false with kind and error".into()),
        }
    }
}

impl Response {
    pub fn ok(result: impl Serialize) -> Self {
        Response::Ok {
            result: serde_json::to_value(result).unwrap_or(serde_json::Value::Null),
        }
    }

    pub fn err(kind: ErrorKind, error: impl Into<String>) -> Self {
        Response::Err {
            kind,
            error: error.into(),
        }
    }
}

/// `status` result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub daemon: DaemonInfo,
    pub devices: BTreeMap<String, DeviceStatus>,
    /// Staff on the premises, on a node that runs the hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staff: Option<u64>,
    /// The site modules this node runs (access, emergency, office), with their hub links, and
    /// its rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<SiteStatus>,
    /// The hub's listener and registered clients, on a node that runs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<HubStatus>,
    /// Latest sensor readings, by device and then quantity, on a node that runs the hub: the
    /// first [`STATUS_LIST`] devices by name (`sensors` lists them all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sensors: Option<BTreeMap<String, BTreeMap<String, SensorReading>>>,
    /// How many devices have readings, all told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sensor_count: Option<usize>,
    /// The state and event-log writer, on a node that persists anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreStatus>,
}

// The status types below take a missing field as its default (`#[serde(default)]`), so a
// sitectl reads an older or newer sited's status, as it did when status was untyped JSON.

/// The site modules one node runs. Each is present only where this node runs it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SiteStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<AccessStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emergency: Option<EmergencyStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub office: Option<OfficeStatus>,
    /// The `[[rule]]`s, present when there are any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<RuleStatus>>,
    /// Modules a newer sited reports that this build does not know, kept as they came so
    /// `sitectl` can still show them.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

impl SiteStatus {
    pub fn is_empty(&self) -> bool {
        self.access.is_none()
            && self.emergency.is_none()
            && self.office.is_none()
            && self.rules.is_none()
            && self.other.is_empty()
    }
}

/// The double-door access control.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AccessStatus {
    /// `idle`, `entry`, `exit` or `released` (the emergency opened both doors).
    pub state: String,
    /// The doors open now.
    pub open: Vec<String>,
    /// Its link to the hub, on a door node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkStatus>,
}

/// The emergency exit.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EmergencyStatus {
    /// `open` or `closed`.
    pub door: String,
    /// `on` or `off`.
    pub siren: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkStatus>,
}

/// The office automation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OfficeStatus {
    pub occupied: bool,
    pub locked: bool,
    /// `open` or `closed`.
    pub door: String,
    /// `on` or `off`: what the light and fan get (a rule may share them).
    pub light: String,
    pub fan: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkStatus>,
}

/// A module's link to the hub it reports to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LinkStatus {
    /// The hub's address.
    pub hub: String,
    /// The name this node registers as.
    pub name: String,
    pub connected: bool,
    /// Reports waiting for the hub's `OK`.
    pub outbox: usize,
    /// Why the hub refused the report at the head of the outbox, if it did (shown as `null`
    /// otherwise).
    pub refused: Option<String>,
    /// The last heartbeat's round trip (`PING` → `PONG`), in milliseconds, once there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
}

/// A `[[rule]]`: a sensor threshold driving a device.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RuleStatus {
    pub name: String,
    pub sensor: String,
    pub quantity: String,
    pub above: f64,
    pub hysteresis: f64,
    pub device: String,
    /// `idle` or `active`.
    pub state: String,
    /// The last reading the rule saw in this run (`null` before the first).
    pub last: Option<f64>,
}

/// The hub: its TCP listener and clients, and its UDP listener.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HubStatus {
    pub listen: String,
    /// The first [`STATUS_LIST`] registered clients by name (`devices` lists them all).
    pub clients: Vec<ClientStatus>,
    /// How many clients are registered, all told.
    pub client_count: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<UdpStatus>,
    /// The TLS listener's address (`[hub] tls`), if there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<String>,
}

/// A registered TCP client of the hub.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientStatus {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// The key it authenticated with, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// It came over the TLS listener.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
    pub address: String,
    pub connected_secs: u64,
    /// Local wall-clock time of its last message, `YYYY-MM-DD HH:MM:SS`.
    pub last_seen: String,
}

/// The hub's UDP listener: each sender's stream and the malformed datagrams by source.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UdpStatus {
    pub listen: String,
    /// The first [`STATUS_LIST`] senders with a stream, by name (`devices` lists them all).
    pub streams: Vec<StreamStatus>,
    /// How many senders the hub knows, all told.
    pub sender_count: usize,
    /// Datagrams taken in since the start, well-formed or not.
    pub datagrams: u64,
    /// Malformed datagrams by source: the [`STATUS_LIST`] sources that sent the most.
    pub malformed: BTreeMap<String, u64>,
    /// How many sources sent malformed datagrams, all told.
    pub malformed_sources: usize,
}

/// One UDP sender's stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamStatus {
    pub device: String,
    /// The address it last sent from.
    pub from: String,
    pub stats: StreamStats,
}

/// A UDP stream's counters (fields in name order, see [`Page`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamStats {
    pub complete_cycles: u64,
    pub cycles: u64,
    pub duplicates: u64,
    pub missing: u64,
    pub out_of_order: u64,
    pub packets: u64,
    /// Cycles closed by the quiet gap whose sender then carried on (it had slowed down): the
    /// rest of such a cycle is counted, but not answered again.
    pub tails: u64,
}

/// A sensor's latest value of one quantity (fields in name order, see [`Page`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SensorReading {
    /// Local wall-clock time it arrived, `YYYY-MM-DD HH:MM:SS`.
    pub at: String,
    /// Always finite: the hub refuses other values.
    pub value: f64,
}

/// The writer's health: files it cannot write right now (empty when all is well). While a
/// file is stalled the writer retries every second and the hub holds its `OK`s.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStatus {
    pub stalled: Vec<StoreStall>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStall {
    /// The file's path (`/var/log/sited/events.log`).
    pub file: String,
    /// Local time of the first failure in this run of failures, `YYYY-MM-DD HH:MM:SS`.
    pub since: String,
    /// The system's reason (`No space left on device (os error 28)`).
    pub error: String,
    /// A record nothing waits for (the device log); false for the state file and the event
    /// log, whose stall holds the hub's acknowledgements.
    #[serde(default)]
    pub best_effort: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DaemonInfo {
    pub version: String,
    pub pid: u32,
    pub backend: String,
    /// What sited found out about the board at start (absent from older daemons).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub board: Option<BoardInfo>,
    pub config: String,
    pub uptime_secs: u64,
}

/// Board detection: the Raspberry Pi model, if this is one, and the files read to decide.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoardInfo {
    /// `Raspberry Pi 3 Model B`; none if this is not a Raspberry Pi.
    pub model: Option<String>,
    pub read: Vec<BoardSource>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoardSource {
    /// `/sys/firmware/devicetree/base/model`
    pub file: String,
    /// What it said (`"Raspberry Pi 3 Model B"`, `absent`, `no Model or Revision line`).
    pub said: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceStatus {
    pub kind: String,
    pub pin: u32,
    /// "input" or "output".
    pub role: String,
    /// The device's state word (`pressed`, `open`, `on`, ...), or `faulted`.
    pub state: String,
    /// Everything else the plugin publishes (angle, pattern, ...).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub detail: serde_json::Map<String, serde_json::Value>,
    /// Why the device is faulted, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
}

/// `version` result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub version: String,
    pub plugin_abi: Vec<u32>,
    pub protocol: u32,
}

/// The protocol's own version, reported by `version`.
pub const PROTOCOL_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("line too long")]
    TooLong,
    #[error("line is not UTF-8")]
    NotUtf8,
}

/// Serialises one message as a JSON line.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut out = serde_json::to_vec(msg).unwrap_or_else(|_| b"{}".to_vec());
    out.push(b'\n');
    out
}

/// Serialises an OK answer straight from its typed result, `{"ok":true,"result":...}` and a
/// newline, without building a `serde_json::Value` first: what [`encode`] of
/// [`Response::ok`] sends, at a fraction of the cost for a long answer (a page of 100
/// devices). The result's keys come in its types' field order.
pub fn encode_ok<T: Serialize>(result: &T) -> Vec<u8> {
    #[derive(Serialize)]
    struct OkLine<'a, T> {
        ok: bool,
        result: &'a T,
    }
    // Room for a page of devices without growing more than a few times.
    let mut line = Vec::with_capacity(16 * 1024);
    match serde_json::to_writer(&mut line, &OkLine { ok: true, result }) {
        Ok(()) => {
            line.push(b'\n');
            line
        }
        Err(e) => encode(&Response::err(
            ErrorKind::Failed,
            format!("cannot encode the answer: {e}"),
        )),
    }
}

/// Parses one request line (without its newline) into a request or a one-line reason.
pub fn decode_request(line: &str) -> Result<Request, String> {
    serde_json::from_str(line).map_err(|e| format!("malformed request: {e}"))
}

/// Splits a byte stream into lines, refusing any longer than its limit ([`MAX_LINE_BYTES`]
/// unless made [`LineBuffer::with_limit`]; the limit counts the newline). This is the one
/// framer: `sitectl` reads the daemon's answers with it, and the daemon's connections
/// (`conn_io` in the daemon) read requests, hub lines and hub replies with it.
///
/// Each byte is searched for a newline once: the part of the input already searched is
/// remembered, and lines are taken from the front without moving the rest until more input
/// comes.
#[derive(Debug)]
pub struct LineBuffer {
    buf: Vec<u8>,
    /// Bytes before this are taken already.
    start: usize,
    /// `buf[start..scanned]` is known to hold no newline.
    scanned: usize,
    limit: usize,
}

impl Default for LineBuffer {
    fn default() -> Self {
        LineBuffer::with_limit(MAX_LINE_BYTES)
    }
}

impl LineBuffer {
    pub fn new() -> Self {
        LineBuffer::default()
    }

    pub fn with_limit(limit: usize) -> Self {
        LineBuffer {
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            limit,
        }
    }

    /// Appends bytes read from the socket.
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete line as bytes, without its newline; `None` if none is complete yet.
    /// A line over the limit is taken off and answered `Err(TooLong)`; the stream is still
    /// framed after it, and the caller decides whether that ends the connection.
    pub fn next_raw(&mut self) -> Option<Result<Vec<u8>, FrameError>> {
        let Some(at) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') else {
            self.scanned = self.buf.len();
            return None;
        };
        let end = self.scanned + at;
        let line = &self.buf[self.start..end];
        let taken = if line.len() + 1 > self.limit {
            Err(FrameError::TooLong)
        } else {
            Ok(line.to_vec())
        };
        self.start = end + 1;
        self.scanned = self.start;
        if self.start == self.buf.len() {
            self.clear();
        }
        Some(taken)
    }

    /// The next complete line, without its newline; `Ok(None)` if none is complete yet.
    /// After an error the stream is unusable and the connection should be closed.
    pub fn next_line(&mut self) -> Result<Option<String>, FrameError> {
        match self.next_raw() {
            Some(Ok(line)) => String::from_utf8(line)
                .map(Some)
                .map_err(|_| FrameError::NotUtf8),
            Some(Err(e)) => Err(e),
            None if self.overflowed() => Err(FrameError::TooLong),
            None => Ok(None),
        }
    }

    /// Unterminated input that is already as long as a line may be: the stream cannot be
    /// framed any more.
    pub fn overflowed(&self) -> bool {
        self.pending() >= self.limit && !self.has_line()
    }

    /// Bytes held (complete lines and the start of the next).
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Is a complete line held?
    pub fn has_line(&self) -> bool {
        // Bytes before `scanned` were searched already and hold no newline.
        self.buf[self.scanned..].contains(&b'\n')
    }

    /// The bytes held, as they stand (when no line is complete: the unterminated rest).
    pub fn partial(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Takes the bytes held, as they stand.
    pub fn take_partial(&mut self) -> Vec<u8> {
        let rest = self.buf[self.start..].to_vec();
        self.clear();
        rest
    }

    /// Drops everything held.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
        self.scanned = 0;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_long_response_arriving_in_chunks_is_one_line_within_its_limit() {
        let mut lb = super::LineBuffer::with_limit(super::MAX_RESPONSE_BYTES);
        let chunk = vec![b'x'; 4096];
        for _ in 0..512 {
            lb.extend(&chunk);
            assert_eq!(lb.next_line(), Ok(None));
        }
        lb.extend(b"\n{}\n");
        let line = lb.next_line().expect("frames").expect("a line");
        assert_eq!(line.len(), 512 * 4096);
        assert_eq!(lb.next_line(), Ok(Some("{}".to_string())));
        assert_eq!(lb.next_line(), Ok(None));
    }

    use super::*;

    #[test]
    fn every_request_round_trips_through_a_line() {
        let all = [
            Request::Status {},
            Request::Version {},
            Request::Sim {
                device: "entry_button".into(),
                value: "pressed".into(),
            },
            Request::Set {
                device: "office_light".into(),
                value: "on".into(),
            },
            Request::Reload {},
        ];
        for req in all {
            let line = encode(&req);
            assert_eq!(line.last(), Some(&b'\n'));
            let text = std::str::from_utf8(&line[..line.len() - 1]).expect("utf8");
            assert_eq!(decode_request(text).expect("decode"), req);
        }
    }

    #[test]
    fn request_wire_form_is_tagged_by_cmd() {
        let line = encode(&Request::Set {
            device: "fan".into(),
            value: "on".into(),
        });
        assert_eq!(
            line,
            b"{\"cmd\":\"set\",\"device\":\"fan\",\"value\":\"on\"}\n"
        );
    }

    #[test]
    fn unknown_command_and_unknown_field_are_rejected() {
        assert!(decode_request(r#"{"cmd":"explode"}"#).is_err());
        assert!(decode_request(r#"{"cmd":"status","extra":1}"#).is_err());
        assert!(
            decode_request("not json")
                .unwrap_err()
                .starts_with("malformed request")
        );
    }

    #[test]
    fn only_changing_requests_operate() {
        assert!(!Request::Status {}.operates());
        assert!(Request::Reload {}.operates());
        assert!(
            Request::Set {
                device: "a".into(),
                value: "on".into()
            }
            .operates()
        );
    }

    #[test]
    fn responses_round_trip_with_ok_flag() {
        let ok = Response::ok(VersionInfo {
            version: "1".into(),
            plugin_abi: vec![1],
            protocol: 1,
        });
        let text = String::from_utf8(encode(&ok)).expect("utf8");
        assert!(text.starts_with("{\"ok\":true"), "{text}");
        assert_eq!(serde_json::from_str::<Response>(&text).expect("parse"), ok);
        let err = Response::err(ErrorKind::Denied, "operators only");
        let text = String::from_utf8(encode(&err)).expect("utf8");
        assert_eq!(serde_json::from_str::<Response>(&text).expect("parse"), err);
    }

    #[test]
    fn line_buffer_splits_lines_across_reads() {
        let mut lb = LineBuffer::new();
        lb.extend(b"{\"cmd\":");
        assert_eq!(lb.next_line(), Ok(None));
        lb.extend(b"\"status\"}\n{\"cmd\":\"version\"}\n");
        assert_eq!(
            lb.next_line().expect("line").as_deref(),
            Some("{\"cmd\":\"status\"}")
        );
        assert_eq!(
            lb.next_line().expect("line").as_deref(),
            Some("{\"cmd\":\"version\"}")
        );
        assert_eq!(lb.next_line(), Ok(None));
        assert_eq!(lb.pending(), 0);
    }

    #[test]
    fn line_buffer_refuses_oversized_line_without_newline() {
        let mut lb = LineBuffer::new();
        lb.extend(&vec![b'x'; MAX_LINE_BYTES]);
        assert_eq!(lb.next_line(), Err(FrameError::TooLong));
    }

    #[test]
    fn line_buffer_searches_each_byte_once() {
        let mut lb = LineBuffer::with_limit(1 << 20);
        for _ in 0..100 {
            lb.extend(&[b'x'; 1000]);
            assert_eq!(lb.next_raw(), None);
            // What was searched is remembered: the next search starts at the new bytes.
            assert_eq!(lb.scanned, lb.buf.len());
        }
        lb.extend(b"\nrest");
        assert_eq!(lb.next_raw().map(|l| l.map(|l| l.len())), Some(Ok(100_000)));
        assert_eq!(lb.partial(), b"rest");
        assert_eq!(lb.take_partial(), b"rest");
        assert_eq!(lb.pending(), 0);
    }

    #[test]
    fn line_buffer_takes_an_overlong_line_off_and_frames_on() {
        let mut lb = LineBuffer::with_limit(9);
        lb.extend(b"123456789\nshort\n");
        assert_eq!(lb.next_raw(), Some(Err(FrameError::TooLong)));
        assert_eq!(lb.next_raw(), Some(Ok(b"short".to_vec())));
        lb.extend(b"12345678");
        assert!(!lb.overflowed(), "8 bytes and a newline still fit");
        lb.extend(b"9");
        assert!(lb.overflowed());
        assert_eq!(lb.next_line(), Err(FrameError::TooLong));
    }

    #[test]
    fn an_answer_encoded_from_its_types_is_the_one_a_value_gave() {
        let page = Page {
            items: DeviceList {
                rejected: Vec::new(),
                devices: vec![
                    DeviceEntry::Tcp(TcpDevice {
                        address: "127.0.0.1:4000".into(),
                        connected_secs: 3,
                        key: Some("thermo".into()),
                        last_seen: "2026-11-30 10:00:00".into(),
                        name: "Thermo".into(),
                        state: "connected".into(),
                        kind: "temperature".into(),
                        via: "tcp".into(),
                    }),
                    DeviceEntry::Udp(UdpDevice {
                        address: "127.0.0.1:4001".into(),
                        interval_ms: None,
                        last_seen: "2026-11-30 10:00:01".into(),
                        name: "Sensor01".into(),
                        state: "idle".into(),
                        stats: StreamStats::default(),
                        kind: "temperature".into(),
                        via: "udp".into(),
                    }),
                ],
            },
            next: Some("udp:127.0.0.1 Sensor01".into()),
            total: 7,
        };
        let direct = encode_ok(&page);
        assert_eq!(direct, encode(&Response::ok(&page)), "byte for byte");
        let Ok(Response::Ok { result }) =
            serde_json::from_slice::<Response>(&direct[..direct.len() - 1])
        else {
            panic!("an OK answer");
        };
        let back: Page<DeviceList> = serde_json::from_value(result).expect("typed");
        assert_eq!(back, page, "each entry reads back as its own kind");
    }

    #[test]
    fn line_buffer_refuses_invalid_utf8() {
        let mut lb = LineBuffer::new();
        lb.extend(b"\xff\xfe\n");
        assert_eq!(lb.next_line(), Err(FrameError::NotUtf8));
    }
}
