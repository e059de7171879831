//! Who may do what at the hub (issue 12, PROTOCOL.md): the pre-shared keys, their roles, the
//! HMAC-SHA256 proofs that a client knows one, and the keys file they live in.
//!
//! - **Roles** are ordered: a `sensor` sends readings; an `actuator` may also register a
//!   `DEVICE`, take commands and answer them; a `node` may also report site events.
//! - **Names belong to keys**: a key's name, and for a node key every name that starts with
//!   it and a hyphen (`front-access`). Nobody else may register such a name, or send readings
//!   under it.
//! - **The keys file** (`[hub] keys`, `<state-dir>/keys.toml`) holds one `[[key]]` table per
//!   client. It must be readable by sited's user only; the daemon refuses it otherwise.
//!   `sitectl key add`/`remove` rewrite it atomically on [`KeyWriter`]'s thread, never on the
//!   loop, and the change takes effect when it is on disk.
//! - **The daemon's own key** ([`own_key`]) lets this daemon's own site modules, reporting to
//!   the hub in the same process, authenticate as a node without any setup. Its name,
//!   [`OWN_KEY_NAME`], cannot be a key file's (a dot is not allowed there).
//!
//! No secret is ever logged, printed by `Debug`, or sent to anyone but the operator who made
//! it.

use hmac::{KeyInit, Mac};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Where the keys file is unless `[hub] keys` says otherwise (in the state directory).
pub const KEYS_FILE: &str = "keys.toml";
/// The daemon's own secret, in the state directory.
pub const OWN_SECRET_FILE: &str = "own.secret";
/// The name the daemon's own modules authenticate with.
pub const OWN_KEY_NAME: &str = "sited.own";
/// What the `CHAL`/`AUTH` mac covers, before the name and the nonce.
pub const AUTH_CONTEXT: &str = "sited-auth-v1\n";
/// What a signed datagram's mac covers, before the name, time, nonce and payload.
pub const DATAGRAM_CONTEXT: &str = "sited-datagram-v1\n";
/// A secret is 32 bytes, written as 64 lowercase hex characters.
pub const SECRET_BYTES: usize = 32;

/// What a client may do at the hub. Ordered: each role may do what the ones before it may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Sensor,
    Actuator,
    Node,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Sensor, Role::Actuator, Role::Node];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Sensor => "sensor",
            Role::Actuator => "actuator",
            Role::Node => "node",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// 32 secret bytes. `Debug` does not show them.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; SECRET_BYTES]);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A new secret from the OS random generator.
    pub fn generate() -> io::Result<Secret> {
        let mut bytes = [0u8; SECRET_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Secret(bytes))
    }

    /// Exactly 64 lowercase hex characters (surrounding whitespace, such as a secret file's
    /// trailing newline, is ignored). PROTOCOL.md's test vector (the bytes 0 to 31) is
    /// refused: it is published.
    pub fn from_hex(text: &str) -> Result<Secret, String> {
        let secret = Secret::parse_hex(text)?;
        if secret
            .0
            .iter()
            .enumerate()
            .all(|(i, b)| usize::from(*b) == i)
        {
            return Err(
                "that is PROTOCOL.md's published test vector, not a secret (make one with sitectl key add)"
                    .into(),
            );
        }
        Ok(secret)
    }

    fn parse_hex(text: &str) -> Result<Secret, String> {
        let text = text.trim();
        let bytes = from_hex(text)
            .filter(|b| b.len() == SECRET_BYTES && !text.bytes().any(|c| c.is_ascii_uppercase()))
            .ok_or("a secret is 64 lowercase hex characters")?;
        let mut secret = [0u8; SECRET_BYTES];
        secret.copy_from_slice(&bytes);
        Ok(Secret(secret))
    }

    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes a key of any length.
        match <HmacSha256 as KeyInit>::new_from_slice(&self.0) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts 32-byte keys"),
        }
    }
}

/// One client's key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    pub name: String,
    pub role: Role,
    pub secret: Secret,
}

/// A key's name: it is also a hub registration name (or, for a node, the start of one), so
/// it is plain: a letter, then letters, digits, `_` and `-`, at most 48 characters (a node's
/// `-emergency` must still fit the protocol's 64).
pub fn valid_key_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && name.len() <= 48
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The keys the hub knows: the keys file's, and the daemon's own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeySet {
    keys: BTreeMap<String, Key>,
    own: Option<Key>,
}

impl KeySet {
    pub fn new(keys: BTreeMap<String, Key>, own: Option<Key>) -> KeySet {
        KeySet { keys, own }
    }

    /// The keys file's keys, by name.
    pub fn file_keys(&self) -> &BTreeMap<String, Key> {
        &self.keys
    }

    pub fn get(&self, name: &str) -> Option<&Key> {
        match &self.own {
            Some(own) if own.name == name => Some(own),
            _ => self.keys.get(name),
        }
    }

    /// The key a device name belongs to: the key of that name, or the node key it starts
    /// with, followed by a hyphen.
    pub fn owner_of(&self, device: &str) -> Option<&Key> {
        if let Some(key) = self.keys.get(device) {
            return Some(key);
        }
        // Names are at most 64 bytes, so trying each hyphen is cheap.
        device
            .match_indices('-')
            .filter_map(|(at, _)| self.keys.get(&device[..at]))
            .find(|k| k.role == Role::Node)
    }

    /// May a client holding `key` (none: not authenticated) register, or send readings as,
    /// `device`? `Err` says why not.
    pub fn may_use_name(&self, key: Option<&Key>, device: &str) -> Result<(), String> {
        let owner = self.owner_of(device);
        match key {
            None => match owner {
                Some(k) => Err(format!("{device} belongs to key {}", k.name)),
                None => Ok(()),
            },
            // The daemon's own modules may take any name no key file's key owns.
            Some(k) if self.own.as_ref() == Some(k) => match owner {
                Some(o) => Err(format!("{device} belongs to key {}", o.name)),
                None => Ok(()),
            },
            Some(k) if owner.is_some_and(|o| o.name == k.name) => Ok(()),
            Some(k) if k.role == Role::Node => Err(format!(
                "key {} registers names that start with \"{}-\"",
                k.name, k.name
            )),
            Some(k) => Err(format!("key {} registers only the name {}", k.name, k.name)),
        }
    }
}

/// `HMAC-SHA256(secret, "sited-auth-v1\n" + name + "\n" + nonce)`, as hex: what `AUTH`
/// carries.
pub fn auth_mac(secret: &Secret, name: &str, nonce: &str) -> String {
    let mut mac = secret.mac();
    for part in [AUTH_CONTEXT, name, "\n", nonce] {
        mac.update(part.as_bytes());
    }
    to_hex(&mac.finalize().into_bytes())
}

/// Checks an `AUTH` mac in constant time.
pub fn verify_auth(secret: &Secret, name: &str, nonce: &str, mac_hex: &str) -> bool {
    let Some(given) = lower_hex(mac_hex, 32) else {
        return false;
    };
    let mut mac = secret.mac();
    for part in [AUTH_CONTEXT, name, "\n", nonce] {
        mac.update(part.as_bytes());
    }
    mac.verify_slice(&given).is_ok()
}

/// `HMAC-SHA256(secret, "sited-datagram-v1\n" + name + "\n" + secs + "\n" + nonce + "\n" +
/// payload)`: a signed datagram's mac.
fn datagram_hmac(
    secret: &Secret,
    name: &str,
    secs: &str,
    nonce: &str,
    payload: &[u8],
) -> HmacSha256 {
    let mut mac = secret.mac();
    for part in [DATAGRAM_CONTEXT, name, "\n", secs, "\n", nonce, "\n"] {
        mac.update(part.as_bytes());
    }
    mac.update(payload);
    mac
}

/// A signed datagram's mac, as hex (what a sensor puts in its `SIG1` line).
pub fn datagram_mac(
    secret: &Secret,
    name: &str,
    secs: &str,
    nonce: &str,
    payload: &[u8],
) -> String {
    to_hex(
        &datagram_hmac(secret, name, secs, nonce, payload)
            .finalize()
            .into_bytes(),
    )
}

/// Checks a signed datagram's mac in constant time.
pub fn verify_datagram(
    secret: &Secret,
    name: &str,
    secs: &str,
    nonce: &str,
    payload: &[u8],
    mac_hex: &str,
) -> bool {
    let Some(given) = lower_hex(mac_hex, 32) else {
        return false;
    };
    datagram_hmac(secret, name, secs, nonce, payload)
        .verify_slice(&given)
        .is_ok()
}

/// `bytes` random bytes from the OS, as lowercase hex (`CHAL` nonces). The OS generator does
/// not fail on Linux once booted; if it ever did, the nonce would be unusable, so this
/// panics rather than hand out a predictable one.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    if let Err(e) = getrandom::fill(&mut buf) {
        panic!("the OS random generator failed: {e}");
    }
    to_hex(&buf)
}

/// SHA-256 of `bytes` as 64 lowercase hex characters (a certificate's fingerprint).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    to_hex(&sha2::Sha256::digest(bytes))
}

pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// Hex (either case) to bytes.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| char::from(c).to_digit(16);
    text.as_bytes()
        .chunks(2)
        .map(|pair| u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok())
        .collect()
}

/// Exactly `len` bytes written as lowercase hex, or nothing.
fn lower_hex(text: &str, len: usize) -> Option<Vec<u8>> {
    if text.len() != len * 2 || text.bytes().any(|c| c.is_ascii_uppercase()) {
        return None;
    }
    from_hex(text)
}

/// A keys file, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    key: Vec<RawKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    name: String,
    role: String,
    secret: String,
}

/// Refuses a secret-holding file that group or others may read or write; `what` names it
/// in the message. A missing file is `Ok(false)`.
pub fn check_private(path: &Path, what: &str) -> Result<bool, String> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o077 != 0 {
                return Err(format!(
                    "{what} {} has mode {mode:04o}: it must be readable and writable by sited's user only (chmod 600 {})",
                    path.display(),
                    path.display()
                ));
            }
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(format!("{what} {}: {e}", path.display())),
    }
}

/// Reads the keys file. A missing file holds no keys; one that others may read, or that does
/// not parse, is an error naming the file (and the key at fault).
pub fn load(path: &Path) -> Result<BTreeMap<String, Key>, String> {
    if !check_private(path, "keys file")? {
        return Ok(BTreeMap::new());
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("keys file {}: cannot read: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("keys file {}: {e}", path.display()))
}

/// Parses a keys file's text.
pub fn parse(text: &str) -> Result<BTreeMap<String, Key>, String> {
    let raw: RawFile = toml::from_str(text).map_err(|e| e.message().trim().replace('\n', " "))?;
    let mut keys = BTreeMap::new();
    for (i, k) in raw.key.into_iter().enumerate() {
        let at = |what: String| format!("key[{i}] ({}): {what}", k.name);
        if !valid_key_name(&k.name) {
            return Err(at(
                "a key name is a letter, then letters, digits, `_` or `-`, at most 48 characters"
                    .into(),
            ));
        }
        let role = Role::parse(&k.role).ok_or_else(|| {
            at(format!(
                "role \"{}\" is not sensor, actuator or node",
                k.role
            ))
        })?;
        let secret = Secret::from_hex(&k.secret).map_err(|e| at(e.to_string()))?;
        if keys.contains_key(&k.name) {
            return Err(at("a key of that name is already defined".into()));
        }
        keys.insert(
            k.name.clone(),
            Key {
                name: k.name,
                role,
                secret,
            },
        );
    }
    Ok(keys)
}

/// The keys file's text for `keys`.
pub fn encode(keys: &BTreeMap<String, Key>) -> String {
    let mut out = String::from(
        "# sited's hub keys: one [[key]] per client. Written by `sitectl key add` and\n\
         # `sitectl key remove`; keep it readable by sited's user only (mode 0600).\n",
    );
    for key in keys.values() {
        out.push_str(&format!(
            "\n[[key]]\nname = \"{}\"\nrole = \"{}\"\nsecret = \"{}\"\n",
            key.name,
            key.role,
            key.secret.to_hex()
        ));
    }
    out
}

/// The daemon's own key, from `<state-dir>/own.secret`, made there at the first start.
pub fn own_key(state_dir: &Path) -> Result<Key, String> {
    std::fs::create_dir_all(state_dir).map_err(|e| {
        format!(
            "cannot create the state directory {}: {e}",
            state_dir.display()
        )
    })?;
    let path = state_dir.join(OWN_SECRET_FILE);
    let secret = if check_private(&path, "the daemon's own secret")? {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        Secret::from_hex(&text).map_err(|e| format!("{}: {e}", path.display()))?
    } else {
        let secret = Secret::generate().map_err(|e| format!("making a secret: {e}"))?;
        let hex = format!("{}\n", secret.to_hex());
        match crate::store::write_atomic_mode(&path, hex.as_bytes(), 0o600) {
            Ok(()) => log::info!("hub: made this daemon's own key in {}", path.display()),
            // Only this process uses it, so a read-only state directory (reported by the
            // store) costs nothing but a new key at the next start.
            Err(e) => log::warn!(
                "hub: cannot keep this daemon's own key in {} ({e}); using one for this run only",
                path.display()
            ),
        }
        secret
    };
    Ok(Key {
        name: OWN_KEY_NAME.to_string(),
        role: Role::Node,
        secret,
    })
}

/// Reads a secret file (`[link] secret-file`): refused if group or others may read it.
pub fn read_secret_file(path: &Path) -> Result<Secret, String> {
    if !check_private(path, "secret file")? {
        return Err(format!("secret file {} does not exist", path.display()));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("secret file {}: cannot read: {e}", path.display()))?;
    Secret::from_hex(&text).map_err(|e| format!("secret file {}: {e}", path.display()))
}

/// The keys now on disk after a write, or why the write failed.
pub type WriteResult = Result<BTreeMap<String, Key>, String>;

/// A keys-file write that finished: its id, and its result.
pub type KeysWritten = (u64, WriteResult);

/// The keys file as the daemon keeps it: what is on disk, and at most one change being
/// written (with `T`, what to do when it is), so that each change builds on the one before.
pub struct KeyBook<T> {
    pub path: PathBuf,
    /// The keys on disk.
    pub keys: BTreeMap<String, Key>,
    writer: KeyWriter,
    writing: Option<(u64, T)>,
}

impl<T> KeyBook<T> {
    pub fn start(
        path: PathBuf,
        keys: BTreeMap<String, Key>,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> io::Result<KeyBook<T>> {
        Ok(KeyBook {
            writer: KeyWriter::start(path.clone(), wake)?,
            path,
            keys,
            writing: None,
        })
    }

    /// Is a change being written?
    pub fn busy(&self) -> bool {
        self.writing.is_some()
    }

    /// Writes `keys` in place of the file's; `then` comes back with the result.
    pub fn change(&mut self, keys: BTreeMap<String, Key>, then: T) {
        let id = self.writer.write(keys);
        self.writing = Some((id, then));
    }

    /// The change that finished writing, if one did: `Ok` with the keys now on disk (kept
    /// here too), or why it failed (the file is as it was).
    pub fn finished(&mut self) -> Option<(T, WriteResult)> {
        let mut out = None;
        for (id, result) in self.writer.take_done() {
            if let Some((want, _)) = &self.writing
                && *want == id
                && let Some((_, then)) = self.writing.take()
            {
                if let Ok(keys) = &result {
                    self.keys = keys.clone();
                }
                out = Some((then, result));
            }
        }
        out
    }
}

/// Writes the keys file on its own thread, one version at a time, and wakes the loop when
/// each is on disk (or failed).
pub struct KeyWriter {
    jobs: Option<Sender<(u64, BTreeMap<String, Key>)>>,
    done: Receiver<KeysWritten>,
    next_id: u64,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KeyWriter {
    pub fn start(path: PathBuf, wake: Arc<dyn Fn() + Send + Sync>) -> io::Result<KeyWriter> {
        let (jobs, job_rx) = mpsc::channel::<(u64, BTreeMap<String, Key>)>();
        let (done_tx, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("sited-keys".into())
            .spawn(move || {
                for (id, keys) in job_rx {
                    let result =
                        crate::store::write_atomic_mode(&path, encode(&keys).as_bytes(), 0o600)
                            .map(|()| keys)
                            .map_err(|e| {
                                format!("cannot write the keys file {}: {e}", path.display())
                            });
                    if done_tx.send((id, result)).is_err() {
                        return;
                    }
                    wake();
                }
            })?;
        Ok(KeyWriter {
            jobs: Some(jobs),
            done,
            next_id: 0,
            thread: Some(thread),
        })
    }

    /// Queues `keys` to be written; the id comes back with the result.
    pub fn write(&mut self, keys: BTreeMap<String, Key>) -> u64 {
        self.next_id += 1;
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send((self.next_id, keys));
        }
        self.next_id
    }

    /// Writes that finished since the last look.
    pub fn take_done(&mut self) -> Vec<KeysWritten> {
        self.done.try_iter().collect()
    }
}

impl Drop for KeyWriter {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, role: Role) -> Key {
        Key {
            name: name.into(),
            role,
            secret: Secret([7; 32]),
        }
    }

    #[test]
    fn names_belong_to_their_keys() {
        let mut keys = BTreeMap::new();
        for k in [
            key("front", Role::Node),
            key("plug", Role::Actuator),
            key("t1", Role::Sensor),
        ] {
            keys.insert(k.name.clone(), k);
        }
        let own = key(OWN_KEY_NAME, Role::Node);
        let set = KeySet::new(keys, Some(own.clone()));
        let front = set.get("front").cloned();
        let plug = set.get("plug").cloned();
        assert_eq!(
            set.owner_of("front-access").map(|k| k.name.as_str()),
            Some("front")
        );
        assert_eq!(set.owner_of("plug").map(|k| k.name.as_str()), Some("plug"));
        // Only a node key owns the names that start with it.
        assert!(set.owner_of("plug-2").is_none());
        assert!(set.owner_of("frontdoor").is_none());
        assert!(set.may_use_name(front.as_ref(), "front-access").is_ok());
        assert!(set.may_use_name(front.as_ref(), "front").is_ok());
        assert!(set.may_use_name(front.as_ref(), "back-access").is_err());
        assert!(set.may_use_name(plug.as_ref(), "plug").is_ok());
        assert!(set.may_use_name(plug.as_ref(), "plug2").is_err());
        assert!(set.may_use_name(None, "front-emergency").is_err());
        assert!(set.may_use_name(None, "t1").is_err());
        assert!(set.may_use_name(None, "Sensor01").is_ok());
        assert!(set.may_use_name(Some(&own), "pi-access").is_ok());
        assert!(set.may_use_name(Some(&own), "front-access").is_err());
        assert_eq!(set.get(OWN_KEY_NAME), Some(&own));
    }

    #[test]
    fn secrets_are_64_lowercase_hex_and_never_shown() {
        let s = Secret::generate().expect("random");
        assert_eq!(s.to_hex().len(), 64);
        assert_eq!(
            Secret::from_hex(&format!("{}\n", s.to_hex())),
            Ok(s.clone())
        );
        assert!(Secret::from_hex(&s.to_hex().to_uppercase()).is_err());
        assert!(Secret::from_hex(&s.to_hex()[2..]).is_err());
        assert!(Secret::from_hex(&"g".repeat(64)).is_err());
        assert_eq!(format!("{s:?}"), "Secret(..)");
        assert!(!format!("{:?}", key("a", Role::Node)).contains(&"07".repeat(32)));
    }

    #[test]
    fn a_keys_file_round_trips_and_bad_ones_say_which_key() {
        let mut keys = BTreeMap::new();
        keys.insert("front".to_string(), key("front", Role::Node));
        assert_eq!(parse(&encode(&keys)), Ok(keys));
        let bad = "[[key]]\nname = \"a\"\nrole = \"admin\"\nsecret = \"00\"\n";
        let err = parse(bad).unwrap_err();
        assert!(err.contains("key[0] (a): role \"admin\""), "{err}");
        let bad = format!(
            "[[key]]\nname = \"a\"\nrole = \"node\"\nsecret = \"{}\"\n",
            "A".repeat(64)
        );
        assert!(parse(&bad).unwrap_err().contains("64 lowercase hex"));
        let twice = format!(
            "[[key]]\nname = \"a\"\nrole = \"node\"\nsecret = \"{0}\"\n[[key]]\nname = \"a\"\nrole = \"node\"\nsecret = \"{0}\"\n",
            "a".repeat(64)
        );
        assert!(parse(&twice).unwrap_err().contains("already defined"));
        assert!(parse("[[key]]\nname = \"a.b\"\nrole = \"node\"\nsecret = \"x\"\n").is_err());
    }

    #[test]
    fn a_keys_file_others_can_read_is_refused_with_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join(KEYS_FILE);
        assert_eq!(load(&path), Ok(BTreeMap::new()));
        std::fs::write(&path, "").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let err = load(&path).unwrap_err();
        assert!(err.contains("has mode 0640"), "{err}");
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(load(&path), Ok(BTreeMap::new()));
    }

    #[test]
    fn the_own_key_is_made_once_and_kept_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("dir");
        let first = own_key(dir.path()).expect("made");
        let again = own_key(dir.path()).expect("read");
        assert_eq!(first, again);
        let mode = std::fs::metadata(dir.path().join(OWN_SECRET_FILE))
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(first.role, Role::Node);
    }

    /// PROTOCOL.md's worked example, byte for byte (its values were computed with Python's
    /// `hmac`, independently of this code).
    #[test]
    fn protocol_md_worked_example() {
        let hex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
        let secret = Secret::parse_hex(hex).expect("hex");
        let nonce = "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f";
        let auth = "0f50d7a281f69f0384235fc1134191977151e0f2809fe421f672ea16fa87cf4d";
        assert_eq!(auth_mac(&secret, "front", nonce), auth);
        assert!(verify_auth(&secret, "front", nonce, auth));
        let payload = b"t1,2026-01-01 00:00:00,temperature,21.5,SEQ:1";
        let dnonce = "404142434445464748494a4b4c4d4e4f";
        let dmac = "1ac8d743b75edf3bb31123515dee7369d552b7d001c6d1ec335b2e761e1cf803";
        assert_eq!(
            datagram_mac(&secret, "t1", "1767225600", dnonce, payload),
            dmac
        );
        // The document's text agrees with the values checked here.
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../PROTOCOL.md"))
            .expect("PROTOCOL.md");
        for value in [hex, nonce, auth, dnonce, dmac, "1767225600"] {
            assert!(doc.contains(value), "PROTOCOL.md lacks {value}");
        }
        assert!(doc.contains(&format!(
            "SIG1 t1 1767225600 {dnonce} {dmac}\n{}",
            String::from_utf8_lossy(payload)
        )));
        // Published, so refused as a key.
        let err = Secret::from_hex(hex).unwrap_err();
        assert!(err.contains("test vector"), "{err}");
    }

    #[test]
    fn macs_verify_and_a_changed_byte_does_not() {
        let s = Secret([1; 32]);
        let nonce = "ab".repeat(32);
        let mac = auth_mac(&s, "front", &nonce);
        assert!(verify_auth(&s, "front", &nonce, &mac));
        assert!(!verify_auth(&s, "back", &nonce, &mac));
        assert!(!verify_auth(&s, "front", &nonce, &mac.to_uppercase()));
        assert!(!verify_auth(&Secret([2; 32]), "front", &nonce, &mac));
        let d = datagram_mac(
            &s,
            "t1",
            "1700000000",
            &"cd".repeat(16),
            b"Sensor01,t,temperature,21.5",
        );
        assert!(verify_datagram(
            &s,
            "t1",
            "1700000000",
            &"cd".repeat(16),
            b"Sensor01,t,temperature,21.5",
            &d
        ));
        assert!(!verify_datagram(
            &s,
            "t1",
            "1700000001",
            &"cd".repeat(16),
            b"Sensor01,t,temperature,21.5",
            &d
        ));
    }
}
