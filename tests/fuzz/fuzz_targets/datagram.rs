//! Whatever arrives on the hub's UDP port: seed 001 datagrams and seed 002 JSON, plain or in a
//! `SIG1` envelope, through the envelope's parser and checks (mac, window, replay memory),
//! then the payload parser and a stream's cycle bookkeeping.
#![no_main]

use libfuzzer_sys::fuzz_target;
use site_daemon::hub::envelope::{self, Replays};
use site_daemon::hub::stream::{self, Stream};
use site_daemon::keys::{self, Key, KeySet, Role, Secret};
use std::time::Duration;

const NOW: u64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    let secret = Secret::from_hex(&"5a".repeat(32)).expect("secret");
    let mut map = std::collections::BTreeMap::new();
    map.insert(
        "t1".to_string(),
        Key {
            name: "t1".into(),
            role: Role::Sensor,
            secret: secret.clone(),
        },
    );
    let keys = KeySet::new(map, None);
    let mut replays = Replays::default();
    let mut s = Stream::default();
    let mut now = Duration::ZERO;
    // Several datagrams in one input, split at NUL, each through the same stream and the
    // same replay memory. A part starting with 0x01 is signed here with t1's key (its next
    // byte picks the time and nonce), so the checks past the mac are reached too.
    for (i, part) in data.split(|&b| b == 0).enumerate() {
        let signed;
        let datagram = match part.split_first() {
            Some((1, rest)) => {
                let (pick, payload) = rest.split_first().unwrap_or((&0, &[]));
                let secs = (NOW - 40 + u64::from(*pick % 80)).to_string();
                let nonce = format!("{:032x}", u128::from(*pick % 7) + i as u128);
                let mac = keys::datagram_mac(&secret, "t1", &secs, &nonce, payload);
                signed = [format!("SIG1 t1 {secs} {nonce} {mac}\n").as_bytes(), payload].concat();
                &signed[..]
            }
            _ => part,
        };
        let payload = match envelope::parse(datagram) {
            Ok(None) => datagram,
            Ok(Some(env)) => match envelope::verify(&env, &keys, &mut replays, NOW, 30) {
                Ok(key) => {
                    assert_eq!(key.name, "t1");
                    env.payload
                }
                Err(_) => continue,
            },
            Err(reason) => {
                assert!(!reason.is_empty());
                continue;
            }
        };
        if let Ok(reading) = stream::parse(payload) {
            assert!(reading.value.is_finite());
            assert!(!reading.device.is_empty() && !reading.quantity.is_empty());
            if let Some(seq) = reading.seq {
                let (closed, _fresh) = s.packet(seq, now);
                for cycle in closed {
                    assert!(cycle.status_line().starts_with("STATUS RECEIVED "));
                }
            }
        }
        now += Duration::from_millis(part.len() as u64);
        let _ = s.expire(now, Duration::from_millis(100));
    }
});
