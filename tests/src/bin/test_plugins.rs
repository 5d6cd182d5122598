//! `berth-test-plugins`: `berth` with plugins for the end-to-end tests, put together with
//! `berth::Berth::builder()` as a plugin author's binary is.
//!
//! * `panic_on` — panics, on the request path, on every request carrying header `header`
//!   (setting, required); otherwise finds nothing. For `tests/tests/e2e/plugin_sdk.rs`: a
//!   plugin that panics must cost its request nothing but the plugin's key, and be counted.
use berth_plugins::{AffinityPlugin, KeyOutcome, Params, Rejected, RequestView};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct PanicOn {
    header: String,
}

impl AffinityPlugin for PanicOn {
    fn name(&self) -> &str {
        "panic_on"
    }

    fn sees_responses(&self) -> bool {
        false
    }

    fn key<'r>(&self, req: &'r dyn RequestView) -> KeyOutcome<'r> {
        if req.header(&self.header).is_some() {
            panic!("panic_on: the request carries {}", self.header);
        }
        KeyOutcome::Skip
    }
}

fn panic_on(p: &mut Params<'_>) -> Result<Box<dyn AffinityPlugin>, Rejected> {
    let header: String = p.req("header")?;
    Ok(Box::new(PanicOn {
        header: header.to_ascii_lowercase(),
    }))
}

fn main() {
    std::process::exit(berth::Berth::builder().plugin("panic_on", panic_on).run());
}
