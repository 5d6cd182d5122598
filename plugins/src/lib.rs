//! # berth-plugins — affinity plugins
//!
//! An affinity plugin looks at a request and says which session it belongs to. Berth runs the
//! plugins of an upstream in their configured order; the first that yields a key decides.
//!
//! * [`AffinityPlugin`] — the trait a plugin implements, over a [`RequestView`] (read-only view
//!   of the request) and a [`ResponseView`] (the response on its way to the client).
//! * [`Registry`] — name → factory. [`Registry::builtin`] knows `cookie`, `header` and `ip`;
//!   plugin authors add theirs with [`Registry::register`] and build their own `berth` binary.
//! * [`Chain`] — the ordered plugins of one upstream.
//! * [`params`] — the error-collecting YAML reader plugin factories use for their settings.
//!
//! ```
//! use berth_plugins::{Chain, Registry, RequestView, KeyOutcome, Affinity};
//! use berth_plugins::testing::FakeRequest;
//! let registry = Registry::builtin();
//! let yaml: serde_yaml::Value = serde_yaml::from_str("type: header\nname: X-Session-Id").unwrap();
//! let plugin = registry.build_one(&yaml, "upstreams.app.affinity[0]", "app").unwrap();
//! let chain = Chain::new(vec![plugin]);
//! let req = FakeRequest::new().header("x-session-id", "abc");
//! let found = chain.key(&req);
//! assert!(matches!(found.affinity, Some(Affinity::Session(_))));
//! ```
#![forbid(unsafe_code)]

pub mod cookie;
pub mod header;
pub mod ip;
pub mod params;
mod registry;
pub mod testing;
pub mod token;

pub use registry::{Factory, PluginContext, Registry};

use berth_routing::{Reason, SessionKey};
use std::net::IpAddr;

/// Read-only view of a request, as the gateway sees it.
pub trait RequestView {
    /// The first value of a header (`name` is matched case-insensitively).
    fn header(&self, name: &str) -> Option<&[u8]>;
    /// Every value of a header, in order (HTTP/2 clients send several `cookie` fields).
    fn for_each_header(&self, name: &str, f: &mut dyn FnMut(&[u8]));
    /// The TCP peer's address (not X-Forwarded-For).
    fn client_ip(&self) -> Option<IpAddr>;
    /// Wall-clock time in seconds since the Unix epoch, read once per request by the gateway.
    fn now_unix(&self) -> u64;
}

/// The response on its way to the client.
pub trait ResponseView {
    /// Every value of a response header from the backend (for learn-mode cookies).
    fn for_each_header(&self, name: &str, f: &mut dyn FnMut(&[u8]));
    /// Append a header to the response sent to the client (e.g. `Set-Cookie`).
    fn append_header(&mut self, name: &'static str, value: String);
}

/// What a plugin found in a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Affinity<'r> {
    /// A session key for the sticky overlay (header value, app cookie, client IP, ...).
    Session(SessionKey),
    /// A verified token that names a backend directly (cookie insert mode). `key` is the
    /// session's identity, used for the ring walk when that backend is not eligible.
    Backend { name: &'r str, key: SessionKey },
}

/// Why a plugin rejected what the client sent. Counted by the gateway, never an error response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Invalid {
    /// Not in the token format at all (garbage, truncated, wrong version).
    Malformed,
    /// The signature does not verify (forged or edited).
    BadSignature,
    /// Signed with a key id that is not configured.
    UnknownKey,
    /// Past its expiry.
    Expired,
    /// Signed for another upstream.
    WrongUpstream,
}

impl Invalid {
    pub const ALL: [Invalid; 5] = [
        Invalid::Malformed,
        Invalid::BadSignature,
        Invalid::UnknownKey,
        Invalid::Expired,
        Invalid::WrongUpstream,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Invalid::Malformed => "malformed",
            Invalid::BadSignature => "bad_signature",
            Invalid::UnknownKey => "unknown_key",
            Invalid::Expired => "expired",
            Invalid::WrongUpstream => "wrong_upstream",
        }
    }
}

/// A plugin's answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOutcome<'r> {
    /// This plugin decides.
    Key(Affinity<'r>),
    /// Nothing for this plugin here; ask the next one.
    Skip,
    /// The client sent something for this plugin but it is not valid; counted, next plugin asked.
    Invalid(Invalid),
}

/// The routing decision, as shown to plugins when the response is on its way.
#[derive(Debug, Clone, Copy)]
pub struct DecisionView<'a> {
    /// Upstream name.
    pub upstream: &'a str,
    /// Stable id of the backend that served the request.
    pub backend: &'a str,
    /// Why it was chosen.
    pub reason: Reason,
    /// True when this plugin produced the key that decided the request.
    pub decided_by_me: bool,
    /// Wall-clock seconds since the Unix epoch.
    pub now_unix: u64,
}

/// An affinity plugin. Implementations must be cheap: `key` runs on every request.
pub trait AffinityPlugin: Send + Sync {
    /// The plugin's type name (`cookie`, `header`, ...), used in metrics labels and logs.
    fn name(&self) -> &str;

    /// Find the session this request belongs to.
    fn key<'r>(&self, req: &'r dyn RequestView) -> KeyOutcome<'r>;

    /// True when this plugin hands out sessions itself (cookie insert mode): a request with no
    /// key at all is then a *new session* (reason `new`) rather than a plain ring-routed request.
    fn issues_sessions(&self) -> bool {
        false
    }

    /// Called with the backend's response header before it goes to the client. May add headers
    /// (a `Set-Cookie` for a new or changed pin) and may return a session key that the gateway
    /// then pins to `d.backend` (learn mode: the app just issued its own session cookie).
    fn on_response(&self, _d: &DecisionView<'_>, _resp: &mut dyn ResponseView) -> Option<SessionKey> {
        None
    }
}

/// The result of running a chain on one request.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChainResult<'r> {
    /// The key, when a plugin found one.
    pub affinity: Option<Affinity<'r>>,
    /// Index of the plugin that found it.
    pub decided_by: Option<usize>,
    /// The last rejection seen on the way (plugin index, why), for counting.
    pub invalid: Option<(usize, Invalid)>,
}

/// The ordered affinity plugins of one upstream.
pub struct Chain {
    plugins: Vec<Box<dyn AffinityPlugin>>,
}

impl Chain {
    pub fn new(plugins: Vec<Box<dyn AffinityPlugin>>) -> Self {
        Chain { plugins }
    }

    pub fn plugins(&self) -> &[Box<dyn AffinityPlugin>] {
        &self.plugins
    }

    /// True when a plugin of the chain issues sessions itself (see
    /// [`AffinityPlugin::issues_sessions`]).
    pub fn issues_sessions(&self) -> bool {
        self.plugins.iter().any(|p| p.issues_sessions())
    }

    /// Ask each plugin in order; the first key wins.
    pub fn key<'r>(&self, req: &'r dyn RequestView) -> ChainResult<'r> {
        let mut out = ChainResult::default();
        for (i, p) in self.plugins.iter().enumerate() {
            match p.key(req) {
                KeyOutcome::Key(a) => {
                    out.affinity = Some(a);
                    out.decided_by = Some(i);
                    return out;
                }
                KeyOutcome::Skip => {}
                KeyOutcome::Invalid(why) => out.invalid = Some((i, why)),
            }
        }
        out
    }

    /// Let every plugin see the response; returns the session keys to pin (learn mode).
    pub fn on_response(
        &self,
        d: &DecisionView<'_>,
        decided_by: Option<usize>,
        resp: &mut dyn ResponseView,
        mut pin: impl FnMut(SessionKey),
    ) {
        for (i, p) in self.plugins.iter().enumerate() {
            let view = DecisionView {
                decided_by_me: decided_by == Some(i),
                ..*d
            };
            if let Some(k) = p.on_response(&view, resp) {
                pin(k);
            }
        }
    }
}
