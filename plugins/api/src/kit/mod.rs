//! Building blocks the device plugins share, so each behaviour is written once: a debounced
//! binary input (button, reed, switch) and an on/off output (led, relay, siren). A plugin names
//! its kind, its words and its defaults; the block claims the pin, debounces or drives it, and
//! publishes the state.

mod input;
mod output;

pub use input::{
    BinaryInput, DebouncedInput, InputConfig, InputKind, InputWords, MAX_DEBOUNCE_MS, Pull,
    check_debounce_ms,
};
pub use output::{
    ON_OFF_ACCEPTS, OnOffConfig, OnOffOutput, OnOffPin, OutputKind, Safe, on_off_or_toggle,
};

/// The one-line error for a `sitectl set` or `sitectl sim` value a device does not know; it
/// names what the device does accept (`a_kind` is "a relay", "an led").
pub fn unknown_value(value: &str, a_kind: &str, accepts: &str) -> String {
    format!("unknown value \"{value}\": {a_kind} accepts {accepts}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_value_quotes_the_value_and_names_what_is_accepted() {
        let text = unknown_value("blink", "an led", "on or off");

        assert_eq!(text, "unknown value \"blink\": an led accepts on or off");
    }
}
