//! The `cookie` plugin: sticky sessions by cookie, in two modes.
//!
//! * **insert** — Berth issues its own signed cookie ([`crate::token`]) naming the backend. A
//!   request carrying a valid token yields [`Affinity::Backend`]; an invalid one is reported
//!   ([`KeyOutcome::Invalid`]) and the request routed as new. On the response, a `Set-Cookie`
//!   is added unless the request was routed `sticky` by this plugin's own token and that token
//!   still has at least half its TTL left (its expiry comes back as
//!   [`DecisionView::key_expires`]; when unknown, the token is re-issued). A token issued to a
//!   request without a session is not handed to the gateway to pin: the session exists once
//!   the client sends the token back.
//! * **learn** — the application's own session cookie (e.g. `JSESSIONID`) is the session key,
//!   in namespace `cookie:<name>`. When a backend response sets that cookie, the new value is
//!   returned from [`AffinityPlugin::on_response`] for the gateway to pin to that backend.
//!
//! Cookies are read from every `Cookie` field (HTTP/2 splits them); the first cookie with the
//! configured name wins; surrounding double quotes are stripped. Settings: see [`factory`] and
//! `conf/berth.yaml`.
mod config;
mod parse;

pub use config::factory;

use crate::token::{self, Keys};
use crate::{Affinity, AffinityPlugin, DecisionView, KeyOutcome, RequestView, ResponseView};
use berth_routing::{Reason, SessionKey};
use parse::SetCookie;

/// The `SameSite` attribute of an issued cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// `SameSite=Lax` (the default).
    Lax,
    /// `SameSite=Strict`.
    Strict,
    /// `SameSite=None` (requires `Secure`).
    None,
}

impl SameSite {
    fn as_str(self) -> &'static str {
        match self {
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
            SameSite::None => "None",
        }
    }
}

/// Attributes of an insert-mode cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    /// Lifetime in seconds: `Max-Age`, and `now + ttl` is the token's expiry. At least 1.
    pub ttl_secs: u64,
    /// `HttpOnly`.
    pub http_only: bool,
    /// `Secure`.
    pub secure: bool,
    /// `SameSite`.
    pub same_site: SameSite,
    /// `Path`.
    pub path: String,
    /// `Domain`, when set.
    pub domain: Option<String>,
}

impl Attributes {
    /// `; Max-Age=..; Path=..[; Domain=..][; Secure][; HttpOnly]; SameSite=..`.
    fn render(&self) -> String {
        let mut s = format!("; Max-Age={}; Path={}", self.ttl_secs, self.path);
        if let Some(d) = &self.domain {
            s.push_str("; Domain=");
            s.push_str(d);
        }
        if self.secure {
            s.push_str("; Secure");
        }
        if self.http_only {
            s.push_str("; HttpOnly");
        }
        s.push_str("; SameSite=");
        s.push_str(self.same_site.as_str());
        s
    }
}

struct Insert {
    keys: Keys,
    /// The upstream tokens are bound to.
    upstream: String,
    ttl_secs: u64,
    /// Pre-rendered attributes appended after `name=token`.
    attrs: String,
    /// The same with `Secure`, for cookies issued over TLS.
    attrs_tls: String,
}

enum Mode {
    Insert(Insert),
    Learn {
        /// `cookie:<name>`.
        namespace: Vec<u8>,
    },
}

/// The `cookie` plugin (built by [`factory`] from its settings).
pub struct CookiePlugin {
    name: String,
    mode: Mode,
}

impl std::fmt::Debug for CookiePlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match &self.mode {
            Mode::Insert(i) => format!("insert, keys {:?}, attrs {:?}", i.keys, i.attrs),
            Mode::Learn { .. } => "learn".to_string(),
        };
        write!(f, "CookiePlugin({:?}, {mode})", self.name)
    }
}

impl CookiePlugin {
    /// Insert mode: issue and verify tokens signed with `keys`, bound to `upstream`.
    /// `name` must be a valid cookie name and `attrs` valid (the factory checks both).
    pub(crate) fn insert(name: String, keys: Keys, upstream: &str, attrs: &Attributes) -> Self {
        let secure = Attributes {
            secure: true,
            ..attrs.clone()
        };
        let insert = Insert {
            keys,
            upstream: upstream.to_string(),
            ttl_secs: attrs.ttl_secs,
            attrs: attrs.render(),
            attrs_tls: secure.render(),
        };
        CookiePlugin {
            name,
            mode: Mode::Insert(insert),
        }
    }

    /// Learn mode: the application's cookie `name` is the session key.
    pub(crate) fn learn(name: String) -> Self {
        let namespace = [b"cookie:", name.as_bytes()].concat();
        CookiePlugin {
            name,
            mode: Mode::Learn { namespace },
        }
    }

    /// The cookie's value in the first field that has it, borrowed from the request.
    fn find<'r>(&self, req: &'r dyn RequestView) -> Option<&'r [u8]> {
        let name = self.name.as_bytes();
        (0..)
            .map_while(|n| req.header_nth("cookie", n))
            .find_map(|field| parse::find_in_field(field, name))
    }

    /// Learn mode: the session key of the request's cookie, over every `Cookie` field.
    fn learned_key(&self, namespace: &[u8], req: &dyn RequestView) -> Option<SessionKey> {
        let name = self.name.as_bytes();
        // `Some(None)`: the first cookie with the name was empty.
        let mut found: Option<Option<SessionKey>> = None;
        req.for_each_header("cookie", &mut |field| {
            if found.is_none() {
                found = parse::find_in_field(field, name)
                    .map(|v| (!v.is_empty()).then(|| SessionKey::new(namespace, v)));
            }
        });
        found.flatten()
    }

    fn insert_key<'r>(&self, ins: &Insert, req: &'r dyn RequestView) -> KeyOutcome<'r> {
        let Some(value) = self.find(req).filter(|v| !v.is_empty()) else {
            return KeyOutcome::Skip;
        };
        match ins.keys.verify(value, &ins.upstream, req.now_unix()) {
            Ok(v) => KeyOutcome::Key(Affinity::Backend {
                name: v.backend,
                key: SessionKey(v.sid),
                expires: v.expiry,
            }),
            Err(why) => KeyOutcome::Invalid(why),
        }
    }

    /// Insert mode: add a `Set-Cookie` for `d.backend` unless the request's own token is fresh.
    /// Returns the token's session key when the request already belonged to a session (a
    /// re-issued token, or a cookie for a session another plugin found, e.g. a header), so the
    /// gateway keeps tracking it under that key; `None` for a brand-new session: it exists
    /// (is pinned, counts as active) only once the client shows it kept the cookie, by sending
    /// the token back ([`Affinity::Backend`], pinned by the gateway on first sight). A client
    /// that never keeps cookies (a crawler, a health checker) then costs no pin.
    fn issue(
        &self,
        ins: &Insert,
        d: &DecisionView<'_>,
        resp: &mut dyn ResponseView,
    ) -> Option<SessionKey> {
        if d.decided_by_me && d.reason == Reason::Sticky {
            if let Some(expires) = d.key_expires {
                let left = expires.saturating_sub(d.now_unix);
                if left.saturating_mul(2) >= ins.ttl_secs {
                    return None;
                }
            }
        }
        if !token::valid_id(d.backend.as_bytes()) {
            // Backend ids are validated by the gateway's config; a token for anything else
            // would never verify, so none is issued.
            return None;
        }
        let expiry = d.now_unix.saturating_add(ins.ttl_secs);
        // A session keeps its id across re-issued tokens; a new one gets a random id.
        let sid = d.session.map_or_else(rand::random, |k| k.0);
        let tok = ins.keys.sign_session(&ins.upstream, d.backend, expiry, sid);
        // Over TLS the cookie is always Secure: it never leaves the encrypted channel.
        let attrs = if d.tls { &ins.attrs_tls } else { &ins.attrs };
        let mut value = String::with_capacity(self.name.len() + 1 + tok.len() + attrs.len());
        value.push_str(&self.name);
        value.push('=');
        value.push_str(&tok);
        value.push_str(attrs);
        resp.append_header(http::header::SET_COOKIE, value);
        d.session.map(|_| SessionKey(sid))
    }

    /// Learn mode: the value the backend's last `Set-Cookie` for our cookie sets, if any.
    fn learn_from(
        &self,
        namespace: &[u8],
        d: &DecisionView<'_>,
        resp: &dyn ResponseView,
    ) -> Option<SessionKey> {
        let name = self.name.as_bytes();
        let mut learned = None;
        resp.for_each_header("set-cookie", &mut |field| match parse::set_cookie(
            field, name, d.now_unix,
        ) {
            Some(SetCookie::Set(v)) => learned = Some(SessionKey::new(namespace, v)),
            Some(SetCookie::Delete) => learned = None,
            None => {}
        });
        learned
    }
}

impl AffinityPlugin for CookiePlugin {
    fn name(&self) -> &str {
        "cookie"
    }

    fn key<'r>(&self, req: &'r dyn RequestView) -> KeyOutcome<'r> {
        match &self.mode {
            Mode::Insert(ins) => self.insert_key(ins, req),
            Mode::Learn { namespace } => match self.learned_key(namespace, req) {
                Some(k) => KeyOutcome::Key(Affinity::Session(k)),
                None => KeyOutcome::Skip,
            },
        }
    }

    fn issues_sessions(&self) -> bool {
        matches!(self.mode, Mode::Insert(_))
    }

    fn session_key(&self, value: &[u8]) -> Option<SessionKey> {
        match &self.mode {
            Mode::Learn { namespace } if !value.is_empty() => {
                Some(SessionKey::new(namespace, value))
            }
            _ => None,
        }
    }

    fn on_response(&self, d: &DecisionView<'_>, resp: &mut dyn ResponseView) -> Option<SessionKey> {
        match &self.mode {
            Mode::Insert(ins) => self.issue(ins, d, resp),
            Mode::Learn { namespace } => self.learn_from(namespace, d, resp),
        }
    }
}

#[cfg(test)]
mod tests;
