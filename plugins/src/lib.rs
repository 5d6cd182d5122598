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
    /// The `n`-th value (0-based, in order) of a header, borrowed from the request; `None` past
    /// the last. Plugins use it when what they return must borrow from a field other than the
    /// first (the cookie plugin's [`Affinity::Backend`] name): the slices passed by
    /// [`RequestView::for_each_header`] cannot outlive the callback.
    ///
    /// The default only knows the first value ([`RequestView::header`]). A view over requests
    /// that may carry several fields of one header (HTTP/2 `cookie` crumbs) should override it,
    /// e.g. `headers.get_all(name).iter().nth(n)`.
    fn header_nth(&self, name: &str, n: usize) -> Option<&[u8]> {
        if n == 0 {
            self.header(name)
        } else {
            None
        }
    }
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
    /// `expires` is the token's own expiry (Unix seconds): the gateway hands it back to the
    /// plugin as [`DecisionView::key_expires`] so the plugin can refresh a token past half its
    /// life.
    Backend {
        name: &'r str,
        key: SessionKey,
        expires: u64,
    },
}

impl Affinity<'_> {
    /// The session key: the overlay key, or the token's identity for a backend token.
    pub fn session_key(&self) -> SessionKey {
        match *self {
            Affinity::Session(k) => k,
            Affinity::Backend { key, .. } => key,
        }
    }

    /// The expiry of the token behind this key, when it has one (what the gateway passes back
    /// as [`DecisionView::key_expires`]).
    pub fn expires(&self) -> Option<u64> {
        match *self {
            Affinity::Session(_) => None,
            Affinity::Backend { expires, .. } => Some(expires),
        }
    }
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
    /// Signed for another upstream. Not produced by the built-in cookie plugin: the upstream
    /// is bound into the MAC but not written in the token, so a token from another upstream is
    /// indistinguishable from a forgery and reported as [`Invalid::BadSignature`].
    WrongUpstream,
}

impl Invalid {
    /// Every variant, in a fixed order (for pre-registering metric labels).
    pub const ALL: [Invalid; 5] = [
        Invalid::Malformed,
        Invalid::BadSignature,
        Invalid::UnknownKey,
        Invalid::Expired,
        Invalid::WrongUpstream,
    ];
    /// Lower-case name used in metric labels and logs.
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
    /// The expiry of the token that decided the request ([`Affinity::expires`] of the chain's
    /// key), filled by the gateway. [`Chain::on_response`] shows it only to the plugin that
    /// decided (`decided_by_me`); others see `None`. `None` with `decided_by_me` means
    /// "unknown": the cookie plugin then re-issues its token.
    pub key_expires: Option<u64>,
    /// The overlay session key the request was routed with (whichever plugin produced it), so
    /// a re-issued token keeps its session id, and a token issued for a session another plugin
    /// found (e.g. a header) names that same session instead of starting a second one.
    pub session: Option<SessionKey>,
    /// The client's connection is TLS: cookies issued on it are marked `Secure`.
    pub tls: bool,
}

/// An affinity plugin. Implementations must be cheap: `key` runs on every request.
pub trait AffinityPlugin: Send + Sync {
    /// The plugin's type name (`cookie`, `header`, ...), used in metrics labels and logs.
    fn name(&self) -> &str;

    /// Find the session this request belongs to.
    fn key<'r>(&self, req: &'r dyn RequestView) -> KeyOutcome<'r>;

    /// The overlay key this plugin derives from a raw affinity value (the header value, the
    /// app's cookie value, a client address), for admin look-ups such as
    /// `GET /admin/sessions/{value}`. `None` when the plugin keeps no overlay sessions.
    fn session_key(&self, _value: &[u8]) -> Option<SessionKey> {
        None
    }

    /// True when this plugin hands out sessions itself (cookie insert mode): a request with no
    /// key at all is then a *new session* (reason `new`), placed by load
    /// (`Router::select_keyless`), rather than a plain ring-routed request.
    fn issues_sessions(&self) -> bool {
        false
    }

    /// False when [`AffinityPlugin::on_response`] never does anything: a chain of such plugins
    /// lets the gateway skip the response hook (and its clock reads) on every response. The
    /// default is true, so a plugin that implements `on_response` is always called.
    fn sees_responses(&self) -> bool {
        true
    }

    /// Called with the backend's response header before it goes to the client. May add headers
    /// (a `Set-Cookie` for a new session or a changed pin) and may return a session key that
    /// the gateway then pins to `d.backend` (learn mode: the app just issued its own session
    /// cookie). A plugin that issues a session the client may never use (insert mode's token
    /// for a request without a session) returns `None` for it, so that nothing is pinned until
    /// the client comes back with it.
    fn on_response(
        &self,
        _d: &DecisionView<'_>,
        _resp: &mut dyn ResponseView,
    ) -> Option<SessionKey> {
        None
    }
}

impl std::fmt::Debug for dyn AffinityPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AffinityPlugin({})", self.name())
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

impl ChainResult<'_> {
    /// The expiry of the deciding token, for [`DecisionView::key_expires`].
    pub fn key_expires(&self) -> Option<u64> {
        self.affinity.as_ref().and_then(Affinity::expires)
    }
}

/// The ordered affinity plugins of one upstream.
#[derive(Debug)]
pub struct Chain {
    plugins: Vec<Box<dyn AffinityPlugin>>,
    /// Some plugin's [`AffinityPlugin::sees_responses`].
    sees_responses: bool,
}

impl Chain {
    /// A chain asking `plugins` in this order.
    pub fn new(plugins: Vec<Box<dyn AffinityPlugin>>) -> Self {
        let sees_responses = plugins.iter().any(|p| p.sees_responses());
        Chain {
            plugins,
            sees_responses,
        }
    }

    /// Whether [`Chain::on_response`] can do anything: false when no plugin has a response
    /// hook (e.g. only `header` and `ip` plugins), so the gateway can skip it.
    pub fn sees_responses(&self) -> bool {
        self.sees_responses
    }

    /// The plugins, in order.
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

    /// Let every plugin see the response; calls `pin` with the session keys to pin to
    /// `d.backend` (learn mode). `d.decided_by_me` is ignored and set per plugin from
    /// `decided_by`; `d.key_expires` is shown to the deciding plugin only.
    pub fn on_response(
        &self,
        d: &DecisionView<'_>,
        decided_by: Option<usize>,
        resp: &mut dyn ResponseView,
        mut pin: impl FnMut(SessionKey, bool),
    ) {
        for (i, p) in self.plugins.iter().enumerate() {
            let mine = decided_by == Some(i);
            let view = DecisionView {
                decided_by_me: mine,
                key_expires: if mine { d.key_expires } else { None },
                session: d.session,
                ..*d
            };
            if let Some(k) = p.on_response(&view, resp) {
                pin(k, mine);
            }
        }
    }
}

/// True when `s` is an RFC 9110 token (`1*tchar`): a valid header name or cookie name.
pub(crate) fn is_token(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter().all(|&c| {
            c.is_ascii_alphanumeric()
                || matches!(
                    c,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FakeRequest, FakeResponse};
    use std::sync::{Arc, Mutex};

    type Log = Arc<Mutex<Vec<(usize, bool, Option<u64>)>>>;

    /// A built-in plugin from its YAML settings.
    fn build(yaml: &str) -> Box<dyn AffinityPlugin> {
        let v: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
        Registry::builtin().build_one(&v, "p", "app").unwrap()
    }

    /// `session_key(value)` (admin look-ups) must equal the key the request path derives.
    #[test]
    fn session_key_matches_the_request_key() {
        let session = |p: &dyn AffinityPlugin, req: &FakeRequest| match p.key(req) {
            KeyOutcome::Key(Affinity::Session(k)) => k,
            other => panic!("expected a session key, got {other:?}"),
        };
        let header = build("type: header\nname: X-Session-Id");
        let req = FakeRequest::new().header("x-session-id", "abc");
        assert_eq!(header.session_key(b"abc"), Some(session(&*header, &req)));
        assert_eq!(header.session_key(b""), None);

        let learn = build("type: cookie\nmode: learn\nname: JSESSIONID");
        let req = FakeRequest::new().header("cookie", "a=1; JSESSIONID=s42");
        assert_eq!(learn.session_key(b"s42"), Some(session(&*learn, &req)));

        let ip = build("type: ip\nipv4_prefix: 24");
        let req = FakeRequest::new().client("10.1.2.3");
        assert_eq!(ip.session_key(b"10.1.2.200"), Some(session(&*ip, &req)));
        assert_eq!(ip.session_key(b"not an ip"), None);

        let insert =
            build("type: cookie\nkeys: [{id: k1, secret: 0123456789abcdef0123456789abcdef}]");
        assert_eq!(insert.session_key(b"v1.k1.b1.1.x"), None);
    }

    /// A chain may skip the response hook only when no plugin has one: `header` and `ip`
    /// have none (their `on_response` adds nothing and pins nothing, even for the session
    /// they decided), a cookie plugin and any plugin that does not say otherwise do.
    #[test]
    fn only_chains_without_response_hooks_skip_responses() {
        let header = || build("type: header\nname: X-Session-Id");
        let ip = || build("type: ip");
        let cookie = || build("type: cookie\nmode: learn\nname: JSESSIONID");
        let d = DecisionView {
            upstream: "app",
            backend: "b1",
            reason: Reason::New,
            decided_by_me: true,
            now_unix: 50,
            key_expires: None,
            session: Some(SessionKey(7)),
            tls: false,
        };
        for quiet in [header(), ip()] {
            assert!(!quiet.sees_responses(), "{}", quiet.name());
            let mut resp = FakeResponse::new().header("set-cookie", "JSESSIONID=s1");
            assert_eq!(quiet.on_response(&d, &mut resp), None, "{}", quiet.name());
            assert!(resp.added.is_empty(), "{}", quiet.name());
        }
        assert!(!Chain::new(vec![header(), ip()]).sees_responses());
        assert!(Chain::new(vec![header(), cookie()]).sees_responses());
        let log = Log::default();
        assert!(chain(&[KeyOutcome::Skip], &log).sees_responses());
    }

    /// Answers with a fixed outcome and logs what `on_response` shows it.
    struct Probe {
        id: usize,
        outcome: KeyOutcome<'static>,
        log: Log,
    }

    impl AffinityPlugin for Probe {
        fn name(&self) -> &str {
            "probe"
        }
        fn key<'r>(&self, _req: &'r dyn RequestView) -> KeyOutcome<'r> {
            self.outcome
        }
        fn on_response(
            &self,
            d: &DecisionView<'_>,
            _: &mut dyn ResponseView,
        ) -> Option<SessionKey> {
            let entry = (self.id, d.decided_by_me, d.key_expires);
            self.log.lock().expect("test lock").push(entry);
            d.decided_by_me.then_some(SessionKey(self.id as u128))
        }
    }

    fn chain(outcomes: &[KeyOutcome<'static>], log: &Log) -> Chain {
        let probes = outcomes.iter().enumerate().map(|(id, &outcome)| {
            let log = log.clone();
            Box::new(Probe { id, outcome, log }) as Box<dyn AffinityPlugin>
        });
        Chain::new(probes.collect())
    }

    const TOKEN: Affinity<'static> = Affinity::Backend {
        name: "b1",
        key: SessionKey(1),
        expires: 99,
    };

    #[test]
    fn first_key_wins_and_invalids_are_reported() {
        let log = Log::default();
        let c = chain(
            &[
                KeyOutcome::Skip,
                KeyOutcome::Invalid(Invalid::Expired),
                KeyOutcome::Key(TOKEN),
                KeyOutcome::Key(Affinity::Session(SessionKey(2))),
            ],
            &log,
        );
        let req = FakeRequest::new();
        let r = c.key(&req);
        assert_eq!(r.affinity, Some(TOKEN));
        assert_eq!(r.decided_by, Some(2));
        assert_eq!(r.invalid, Some((1, Invalid::Expired)));
        assert_eq!(r.key_expires(), Some(99));
        assert_eq!(TOKEN.session_key(), SessionKey(1));
        let none = chain(&[KeyOutcome::Skip], &log).key(&req);
        assert_eq!((none.affinity, none.key_expires()), (None, None));
        assert_eq!(format!("{c:?}"), "Chain { plugins: [AffinityPlugin(probe), AffinityPlugin(probe), AffinityPlugin(probe), AffinityPlugin(probe)], sees_responses: true }");
    }

    #[test]
    fn key_expires_is_shown_to_the_decider_only() {
        let log = Log::default();
        let c = chain(
            &[KeyOutcome::Skip, KeyOutcome::Key(TOKEN), KeyOutcome::Skip],
            &log,
        );
        let d = DecisionView {
            upstream: "app",
            backend: "b1",
            reason: Reason::Sticky,
            decided_by_me: true,
            now_unix: 50,
            key_expires: Some(99),
            session: None,
            tls: false,
        };
        let mut pinned = Vec::new();
        c.on_response(&d, Some(1), &mut FakeResponse::new(), |k, _| pinned.push(k));
        let log = log.lock().expect("test lock").clone();
        assert_eq!(
            log,
            [(0, false, None), (1, true, Some(99)), (2, false, None)]
        );
        assert_eq!(pinned, [SessionKey(1)]);
    }
}
