//! Signed datagrams (issue 12, PROTOCOL.md): a keyed sensor puts one header line before its
//! unchanged seed-001 or seed-002 payload,
//!
//! ```text
//! SIG1 <name> <unix-seconds> <nonce> <mac>\n<payload>
//! ```
//!
//! with a 32-hex nonce and `mac = HMAC-SHA256(secret, "sited-datagram-v1\n" + name + "\n" +
//! unix-seconds + "\n" + nonce + "\n" + payload)`. The hub takes the payload only if the mac
//! is right for a known key, the time is within the window of its clock, and that key has
//! not used the nonce within the window ([`Replays`]).

use crate::keys::{self, Key, KeySet, Role};
use std::collections::{BTreeSet, HashMap};

/// What starts a signed datagram.
pub const MAGIC: &[u8] = b"SIG1 ";
/// The longest `SIG1` header, newline included: `SIG1 `, a 64-character name, 20 digits, the
/// nonce, the mac and their spaces.
pub const MAX_HEADER_BYTES: usize = 5 + 64 + 1 + 20 + 1 + NONCE_HEX + 1 + 64 + 1;
/// A nonce is 16 bytes, as 32 lowercase hex characters.
pub const NONCE_HEX: usize = 32;
/// Nonces remembered per key, at most; past it the oldest go, and nothing at or before
/// their time is taken any more (see [`Replays`]).
pub const NONCES_PER_KEY: usize = 65_536;

/// A signed datagram's parts, borrowed from it.
#[derive(Debug, PartialEq, Eq)]
pub struct Envelope<'a> {
    pub name: &'a str,
    pub secs: &'a str,
    pub nonce: &'a str,
    pub mac: &'a str,
    pub payload: &'a [u8],
}

/// Why a datagram was dropped: the counts `sitectl devices --json` shows per source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// A wrong mac, an unknown name, or a header that is not one.
    BadMac,
    /// A time outside the window.
    Stale,
    /// A nonce the key used within the window.
    Replayed,
    /// A role or a name the sender may not use (unsigned where `anonymous-role` says
    /// `none`, a name another key owns).
    Forbidden,
}

/// Splits a signed datagram: `Ok(None)` if it is not one (no `SIG1 `), `Err` if its header
/// is malformed.
pub fn parse(bytes: &[u8]) -> Result<Option<Envelope<'_>>, String> {
    let Some(rest) = bytes.strip_prefix(MAGIC) else {
        return Ok(None);
    };
    let end = rest
        .iter()
        .take(MAX_HEADER_BYTES)
        .position(|&b| b == b'\n')
        .ok_or_else(|| format!("a SIG1 header is one line of at most {MAX_HEADER_BYTES} bytes"))?;
    let header = std::str::from_utf8(&rest[..end]).map_err(|_| "a SIG1 header is not UTF-8")?;
    let words: Vec<&str> = header.split(' ').collect();
    let [name, secs, nonce, mac] = words[..] else {
        return Err("expected SIG1 <name> <unix-seconds> <nonce> <mac>".into());
    };
    let lower_hex = |w: &str, len: usize| {
        w.len() == len
            && w.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if name.is_empty() || name.len() > 64 {
        return Err("a SIG1 name is 1-64 characters".into());
    }
    if secs.is_empty() || secs.len() > 20 || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return Err("SIG1 seconds are a decimal number".into());
    }
    if !lower_hex(nonce, NONCE_HEX) {
        return Err("a SIG1 nonce is 32 lowercase hex characters".into());
    }
    if !lower_hex(mac, 64) {
        return Err("a SIG1 mac is 64 lowercase hex characters".into());
    }
    Ok(Some(Envelope {
        name,
        secs,
        nonce,
        mac,
        payload: &rest[end + 1..],
    }))
}

/// The nonces each key used within the window. Bounded: at most [`NONCES_PER_KEY`] a key
/// (and only keys that proved themselves get an entry). When one must go to make room, it is
/// the one stamped earliest, and its time becomes the key's floor: a datagram stamped at or
/// before the floor is no longer taken, so a replay can never slip through a forgotten
/// nonce, and a datagram stamped in the future cannot raise the floor over the present.
#[derive(Default)]
pub struct Replays {
    by_key: HashMap<String, Seen>,
}

#[derive(Default)]
struct Seen {
    /// Each nonce with its datagram's time.
    nonces: HashMap<u128, u64>,
    /// The same, by time, for expiry and eviction.
    by_time: BTreeSet<(u64, u128)>,
    floor: Option<u64>,
}

impl Replays {
    /// Records `nonce` for `key` at `secs`; false if it was seen within the window (or is at
    /// or before the floor). Forgets what is older than `now - window`.
    fn fresh(&mut self, key: &str, nonce: u128, secs: u64, now: u64, window: u64) -> bool {
        let seen = match self.by_key.get_mut(key) {
            Some(seen) => seen,
            None => self.by_key.entry(key.to_string()).or_default(),
        };
        // What is stamped before the window is stale anyway: forgotten.
        let oldest = now.saturating_sub(window);
        while let Some(&(at, n)) = seen.by_time.first() {
            if at >= oldest {
                break;
            }
            seen.by_time.pop_first();
            seen.nonces.remove(&n);
        }
        if seen.floor.is_some_and(|f| secs <= f) || seen.nonces.contains_key(&nonce) {
            return false;
        }
        if seen.nonces.len() >= NONCES_PER_KEY
            && let Some((at, n)) = seen.by_time.pop_first()
        {
            seen.nonces.remove(&n);
            seen.floor = Some(seen.floor.map_or(at, |f| f.max(at)));
        }
        seen.nonces.insert(nonce, secs);
        seen.by_time.insert((secs, nonce));
        true
    }

    /// Keys that are gone leave nothing behind.
    pub fn retain_keys(&mut self, keys: &KeySet) {
        self.by_key.retain(|name, _| keys.get(name).is_some());
    }
}

/// Checks a signed datagram: the key it was signed with, or why it is dropped (with words
/// for the log).
pub fn verify<'k>(
    env: &Envelope<'_>,
    keys: &'k KeySet,
    replays: &mut Replays,
    now: u64,
    window: u64,
) -> Result<&'k Key, (Rejected, String)> {
    let key = keys
        .get(env.name)
        .filter(|k| k.name != keys::OWN_KEY_NAME)
        .ok_or_else(|| {
            (
                Rejected::BadMac,
                format!("no key named {}", crate::rate_limit::escape(env.name)),
            )
        })?;
    if !keys::verify_datagram(
        &key.secret,
        env.name,
        env.secs,
        env.nonce,
        env.payload,
        env.mac,
    ) {
        return Err((Rejected::BadMac, format!("wrong mac for key {}", key.name)));
    }
    // Only after the mac: a stranger cannot make the hub remember anything.
    let secs: u64 = env.secs.parse().map_err(|_| {
        (
            Rejected::Stale,
            format!("time {} is out of range", env.secs),
        )
    })?;
    if secs.abs_diff(now) > window {
        return Err((
            Rejected::Stale,
            format!(
                "key {}: time {secs} is {} s from the hub's clock (window {window} s)",
                key.name,
                secs.abs_diff(now)
            ),
        ));
    }
    let nonce = u128::from_str_radix(env.nonce, 16)
        .map_err(|_| (Rejected::BadMac, "a SIG1 nonce is hex".to_string()))?;
    if !replays.fresh(&key.name, nonce, secs, now, window) {
        return Err((
            Rejected::Replayed,
            format!("key {}: nonce {} used already", key.name, env.nonce),
        ));
    }
    if key.role < Role::Sensor {
        return Err((
            Rejected::Forbidden,
            format!("key {} may not send readings", key.name),
        ));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Secret;
    use std::collections::BTreeMap;

    fn keys() -> KeySet {
        let mut map = BTreeMap::new();
        map.insert(
            "t1".to_string(),
            Key {
                name: "t1".into(),
                role: Role::Sensor,
                secret: Secret::from_hex(&"11".repeat(32)).expect("secret"),
            },
        );
        KeySet::new(map, None)
    }

    fn signed(secs: u64, nonce: &str, payload: &str) -> Vec<u8> {
        let secret = Secret::from_hex(&"11".repeat(32)).expect("secret");
        let secs = secs.to_string();
        let mac = keys::datagram_mac(&secret, "t1", &secs, nonce, payload.as_bytes());
        format!("SIG1 t1 {secs} {nonce} {mac}\n{payload}").into_bytes()
    }

    #[test]
    fn a_signed_datagram_is_taken_once_within_its_window() {
        let keys = keys();
        let mut replays = Replays::default();
        let now = 1_800_000_000;
        let payload = "Sensor01,t,temperature,21.5,SEQ:1";
        let bytes = signed(now, &"ab".repeat(16), payload);
        let env = parse(&bytes).expect("parses").expect("signed");
        assert_eq!(env.payload, payload.as_bytes());
        assert_eq!(
            verify(&env, &keys, &mut replays, now, 30).map(|k| k.name.as_str()),
            Ok("t1")
        );
        let again = verify(&env, &keys, &mut replays, now + 1, 30).expect_err("replay");
        assert_eq!(again.0, Rejected::Replayed);
        // Once the window has passed, the nonce is forgotten, and the time is stale anyway.
        assert_eq!(
            verify(&env, &keys, &mut replays, now + 31, 30)
                .expect_err("old")
                .0,
            Rejected::Stale
        );
        let early = signed(now + 31, &"cd".repeat(16), payload);
        let env = parse(&early).expect("parses").expect("signed");
        assert_eq!(
            verify(&env, &keys, &mut replays, now, 30)
                .expect_err("early")
                .0,
            Rejected::Stale
        );
        let mut tampered = signed(now, &"ef".repeat(16), payload);
        let last = tampered.len() - 1;
        tampered[last] = b'9';
        let env = parse(&tampered).expect("parses").expect("signed");
        assert_eq!(
            verify(&env, &keys, &mut replays, now, 30)
                .expect_err("mac")
                .0,
            Rejected::BadMac
        );
        assert_eq!(parse(b"Sensor01,t,temperature,21.5"), Ok(None));
        assert!(parse(b"SIG1 t1 1 00\nx").is_err());
        assert!(parse(b"SIG1 t1 1 00 00").is_err());
    }

    #[test]
    fn the_replay_memory_is_bounded_and_never_lets_a_forgotten_nonce_back_in() {
        let mut replays = Replays::default();
        let now = 1000;
        for n in 0..NONCES_PER_KEY as u128 {
            assert!(replays.fresh("t1", n, now - 5, now, 30));
        }
        // Ten more, a second later: the ten oldest make room, and their time is the floor.
        for n in 0..10 {
            assert!(replays.fresh("t1", (1 << 64) + n, now - 4, now, 30));
        }
        let seen = &replays.by_key["t1"];
        assert_eq!(seen.nonces.len(), NONCES_PER_KEY);
        assert_eq!(seen.floor, Some(now - 5));
        // Nonce 0 was forgotten, but nothing at its time is taken any more.
        assert!(!replays.fresh("t1", 0, now - 5, now, 30));
        assert!(
            !replays.fresh("t1", (1 << 64) + 3, now - 4, now, 30),
            "remembered"
        );
        assert!(replays.fresh("t1", u128::MAX, now - 4, now, 30));
    }
}
