//! # berth-plugins — the SDK for Berth affinity plugins
//!
//! An affinity plugin looks at a request and says which session it belongs to. Berth runs the
//! plugins of an upstream in their configured order; the first that yields a key decides.
//! This crate is the one a plugin author depends on: everything a plugin needs is here
//! (`plugins/README.md` is the guide).
//!
//! * [`AffinityPlugin`] — the trait a plugin implements, over a [`RequestView`] (read-only view
//!   of the request: method, path, [`Query`], headers, client address, [`ConnectionContext`])
//!   and a [`ResponseView`] (the response on its way to the client). It answers a
//!   [`KeyOutcome`]: an [`Affinity`] (a [`SessionKey`]), nothing, or [`Invalid`].
//! * [`Registry`] — plugin type name → [`Factory`], a closure that builds a plugin from its
//!   settings ([`Params`]) and may capture state (a key set, a client, a counter).
//!   [`Registry::builtin`] knows `cookie`, `header`, `ip`, `query`, `path` and `connection`.
//! * [`testing`] — fake requests and responses to unit-test a plugin without a gateway.
//! * [`Chain`] — the ordered plugins of one upstream (what the gateway runs).
//!
//! ```
//! use berth_plugins::{Affinity, AffinityPlugin, KeyOutcome, Params, Registry, Rejected};
//! use berth_plugins::{RequestView, SessionKey};
//! use berth_plugins::testing::FakeRequest;
//!
//! /// The tenant named in a header is the session.
//! struct Tenant { header: String }
//!
//! impl AffinityPlugin for Tenant {
//!     fn name(&self) -> &str { "tenant" }
//!     fn key<'r>(&self, req: &'r dyn RequestView) -> KeyOutcome<'r> {
//!         match req.header(&self.header) {
//!             Some(v) => KeyOutcome::Key(Affinity::Session(SessionKey::new(b"tenant", v))),
//!             None => KeyOutcome::Skip,
//!         }
//!     }
//! }
//!
//! let mut registry = Registry::builtin();
//! registry.register("tenant", |p: &mut Params<'_>| {
//!     let header: String = p.opt("header")?.unwrap_or_else(|| "x-tenant".into());
//!     Ok(Box::new(Tenant { header }) as Box<dyn AffinityPlugin>)
//! });
//! let plugin = registry.build_str("type: tenant", "app").unwrap();
//! let req = FakeRequest::new().header("X-Tenant", "acme");
//! assert!(matches!(plugin.key(&req), KeyOutcome::Key(Affinity::Session(_))));
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod chain;
pub mod connection;
mod context;
pub mod cookie;
pub mod header;
pub mod ip;
pub mod params;
mod registry;
pub mod testing;
pub mod token;
pub mod url;
mod view;

pub use berth_routing::{Reason, SessionKey};
pub use chain::{Chain, ChainResult};
pub use context::{ConnectionContext, Slot, SLOTS_PER_CONNECTION};
pub use http::HeaderName;
pub use params::{ConfError, Params, Rejected};
pub use registry::{Factory, PluginContext, Registry};
pub use view::{Query, RequestView, ResponseView};

/// What a plugin found in a request.
///
/// ```
/// use berth_plugins::{Affinity, SessionKey};
/// let by_header = Affinity::Session(SessionKey::new(b"header:x-session-id", b"abc"));
/// assert_eq!(by_header.session_key(), Some(SessionKey::new(b"header:x-session-id", b"abc")));
/// assert_eq!(by_header.expires(), None);
/// ```
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
        /// The backend the token names.
        name: &'r str,
        /// The session's identity.
        key: SessionKey,
        /// The token's expiry, Unix seconds.
        expires: u64,
    },
    /// Go to backend `name` while it serves, with no session in the overlay: nothing is
    /// pinned, counted as a session or handed over in an upgrade (the `connection` plugin:
    /// every request of a client connection follows the first). When `name` is down or gone,
    /// the ring from `point` decides, the same node every time.
    Bound {
        /// The backend to go to.
        name: &'r str,
        /// Where on the ring to look when `name` cannot serve.
        point: u32,
    },
}

impl Affinity<'_> {
    /// The session key: the overlay key, or the token's identity for a backend token;
    /// `None` for [`Affinity::Bound`] (no session).
    pub fn session_key(&self) -> Option<SessionKey> {
        match *self {
            Affinity::Session(k) => Some(k),
            Affinity::Backend { key, .. } => Some(key),
            Affinity::Bound { .. } => None,
        }
    }

    /// The expiry of the token behind this key, when it has one (what the gateway passes back
    /// as [`DecisionView::key_expires`]).
    pub fn expires(&self) -> Option<u64> {
        match *self {
            Affinity::Session(_) | Affinity::Bound { .. } => None,
            Affinity::Backend { expires, .. } => Some(expires),
        }
    }
}

/// Why a plugin rejected what the client sent. Counted by the gateway
/// (`berth_affinity_invalid_total{why}`), never an error response: the next plugin is asked.
/// New reasons may be added in a minor release (`#[non_exhaustive]`).
///
/// ```
/// use berth_plugins::Invalid;
/// assert_eq!(Invalid::NotYetValid.as_str(), "not_yet_valid");
/// assert!(Invalid::ALL.contains(&Invalid::BadAlgorithm));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
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
    /// Not valid yet (a token's `nbf` in the future).
    NotYetValid,
    /// Issued for another audience (a token's `aud`).
    WrongAudience,
    /// Issued by another issuer (a token's `iss`).
    WrongIssuer,
    /// An algorithm the plugin refuses: `alg: none`, or one the key is not for (algorithm
    /// confusion, e.g. HS256 "signed" with an RSA public key).
    BadAlgorithm,
}

impl Invalid {
    /// Every variant, in a fixed order (for pre-registering metric labels).
    pub const ALL: [Invalid; 9] = [
        Invalid::Malformed,
        Invalid::BadSignature,
        Invalid::UnknownKey,
        Invalid::Expired,
        Invalid::WrongUpstream,
        Invalid::NotYetValid,
        Invalid::WrongAudience,
        Invalid::WrongIssuer,
        Invalid::BadAlgorithm,
    ];
    /// Lower-case name used in metric labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Invalid::Malformed => "malformed",
            Invalid::BadSignature => "bad_signature",
            Invalid::UnknownKey => "unknown_key",
            Invalid::Expired => "expired",
            Invalid::WrongUpstream => "wrong_upstream",
            Invalid::NotYetValid => "not_yet_valid",
            Invalid::WrongAudience => "wrong_audience",
            Invalid::WrongIssuer => "wrong_issuer",
            Invalid::BadAlgorithm => "bad_algorithm",
        }
    }
}

/// A plugin's answer for one request.
///
/// ```
/// use berth_plugins::{Affinity, Invalid, KeyOutcome, SessionKey};
/// let found = KeyOutcome::Key(Affinity::Session(SessionKey::new(b"room", b"blue")));
/// let nothing: KeyOutcome<'_> = KeyOutcome::Skip; // not for this plugin: ask the next one
/// let rejected: KeyOutcome<'_> = KeyOutcome::Invalid(Invalid::Expired); // counted, next one
/// assert_ne!(found, nothing);
/// assert_ne!(nothing, rejected);
/// ```
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
///
/// ```
/// use berth_plugins::{DecisionView, Reason};
/// let d = DecisionView::new("app", "b2", Reason::New, 1_700_000_000);
/// assert_eq!((d.backend, d.decided_by_me, d.connection.is_none()), ("b2", false, true));
/// ```
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
    /// The client connection's context (see [`RequestView::connection`]).
    pub connection: Option<&'a ConnectionContext>,
}

impl<'a> DecisionView<'a> {
    /// A decision with nothing but its upstream, backend, reason and time (for tests; the
    /// other fields are set with struct update syntax).
    pub fn new(upstream: &'a str, backend: &'a str, reason: Reason, now_unix: u64) -> Self {
        DecisionView {
            upstream,
            backend,
            reason,
            decided_by_me: false,
            now_unix,
            key_expires: None,
            session: None,
            tls: false,
            connection: None,
        }
    }
}

/// An affinity plugin. Implementations must be cheap: `key` runs on every request, on the
/// gateway's worker threads — no blocking, no I/O, no locks held for long (see
/// `plugins/README.md`). A plugin that panics is caught (in a build that unwinds: debug, and
/// Berth's `release` profile; not `release-abort`): the request goes on as if it had found
/// nothing, and the panic is counted (`berth_plugin_panics_total`).
///
/// ```
/// use berth_plugins::{Affinity, AffinityPlugin, KeyOutcome, RequestView, SessionKey};
/// use berth_plugins::testing::FakeRequest;
/// /// The first path segment is the session (`/acme/...` → `acme`).
/// struct FirstSegment;
/// impl AffinityPlugin for FirstSegment {
///     fn name(&self) -> &str { "first-segment" }
///     fn sees_responses(&self) -> bool { false }
///     fn key<'r>(&self, req: &'r dyn RequestView) -> KeyOutcome<'r> {
///         match req.path().split('/').nth(1).filter(|s| !s.is_empty()) {
///             Some(s) => KeyOutcome::Key(Affinity::Session(SessionKey::new(b"seg", s.as_bytes()))),
///             None => KeyOutcome::Skip,
///         }
///     }
/// }
/// let req = FakeRequest::new().uri("/acme/orders");
/// assert_eq!(FirstSegment.key(&req), KeyOutcome::Key(Affinity::Session(SessionKey::new(b"seg", b"acme"))));
/// assert_eq!(FirstSegment.key(&FakeRequest::new().uri("/")), KeyOutcome::Skip);
/// ```
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
