//! The configuration reader on arbitrary text: `berth -t` and start-up must answer every
//! input with a config or a list of errors — never a panic, never an empty error list.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn registry() -> &'static berth_plugins::Registry {
    static R: OnceLock<berth_plugins::Registry> = OnceLock::new();
    R.get_or_init(berth_plugins::Registry::builtin)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(errors) = berth::config::parse(text, registry()) {
        assert!(!errors.is_empty(), "refused without saying why");
        for e in &errors {
            assert!(!e.message.is_empty());
        }
    }
});
