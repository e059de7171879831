//! The `relay` device kind: a relay (lock, light, fan) on one output pin, driven `on`/`off` by
//! site logic and `sitectl set`. It starts, faults and stops at its `safe` level, so a lock can
//! be made fail-open by leaving `safe = "off"`. Many relay boards (most opto-isolated modules)
//! are active-low: IN low = relay on.
//!
//! All of it is the kit's on/off output; this crate gives it its name.

use site_plugin_api::kit::{OnOffOutput, OutputKind};

pub enum RelayKind {}

impl OutputKind for RelayKind {
    const KIND: &'static str = "relay";
    const A_KIND: &'static str = "a relay";
    const DESCRIPTION: &'static str = "relay: a lock, light or fan, on or off";
}

pub type Relay = OnOffOutput<RelayKind>;

pub type Config = site_plugin_api::kit::OnOffConfig;

site_plugin_api::export_plugin!(Relay);

#[cfg(test)]
mod tests {
    use super::*;
    use site_plugin_api::{Claim, Device, FakeHost, Level};

    const PIN: u32 = 23;

    /// A relay on an active-low board, the usual opto-isolated module.
    fn board_relay(safe: &str) -> (FakeHost, Relay) {
        let mut host = FakeHost::with_pins(&[PIN]);
        let json = format!(r#"{{"pin": {PIN}, "active-low": true, "safe": "{safe}"}}"#);
        let relay = host.create(&json).unwrap();
        (host, relay)
    }

    #[test]
    fn default_lock_relay_is_fail_open_claimed_low() {
        let mut host = FakeHost::with_pins(&[PIN]);

        let _relay: Relay = host.create(r#"{"pin": 23}"#).unwrap();

        assert_eq!(
            host.claims.get(&PIN),
            Some(&Claim::Output { safe: Level::Low })
        );
        assert_eq!(host.state_word(), Some("off"));
    }

    #[test]
    fn active_low_board_is_claimed_high_so_it_starts_released() {
        let (host, _relay) = board_relay("off");

        assert_eq!(
            host.claims.get(&PIN),
            Some(&Claim::Output { safe: Level::High })
        );
    }

    #[test]
    fn active_low_board_energises_with_the_pin_low() {
        let (mut host, mut relay) = board_relay("off");

        relay.command(&mut host, "on").unwrap();

        assert_eq!(host.outputs.get(&PIN), Some(&Level::Low));
    }

    #[test]
    fn safe_on_board_starts_energised_and_returns_there() {
        let (mut host, mut relay) = board_relay("on");
        relay.command(&mut host, "off").unwrap();

        relay.safe_state(&mut host).unwrap();

        assert_eq!(host.outputs.get(&PIN), Some(&Level::Low));
        assert_eq!(host.state_word(), Some("on"));
    }

    #[test]
    fn unknown_safe_word_is_rejected_naming_it() {
        let mut host = FakeHost::with_pins(&[PIN]);

        let err = host
            .create::<Relay>(r#"{"pin": 23, "safe": "closed"}"#)
            .unwrap_err();

        assert!(err.contains("closed"), "{err}");
    }

    #[test]
    fn unknown_command_names_a_relay_and_what_it_accepts() {
        let (mut host, mut relay) = board_relay("off");

        let err = relay.command(&mut host, "latch").unwrap_err();

        assert_eq!(
            err,
            "unknown value \"latch\": a relay accepts on, off or toggle (also 1/0, active/inactive)"
        );
    }

    #[test]
    fn kind_is_relay_and_it_rejects_simulate() {
        let (_host, mut relay) = board_relay("off");

        assert_eq!(Relay::KIND, "relay");
        assert!(relay.simulate("on").is_err());
    }
}
