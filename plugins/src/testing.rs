//! In-memory [`RequestView`]/[`ResponseView`] for plugin tests (yours and ours): build a
//! request, ask the plugin, compare what it answers.
//!
//! ```
//! use berth_plugins::testing::{outcome, FakeRequest, Outcome};
//! use berth_plugins::{Registry, SessionKey};
//! let plugin = Registry::builtin().build_str("type: query\nname: room", "app").unwrap();
//! let req = FakeRequest::new().uri("/chat?room=blue");
//! assert_eq!(outcome(&*plugin, &req), Outcome::Session(SessionKey::new(b"query:room", b"blue")));
//! assert_eq!(outcome(&*plugin, &FakeRequest::new().uri("/chat")), Outcome::Skip);
//! ```
use crate::{Affinity, AffinityPlugin, ConnectionContext, HeaderName, Invalid, KeyOutcome};
use crate::{RequestView, ResponseView, SessionKey};
use std::net::IpAddr;
use std::sync::Arc;

/// A request made of a method, a target, a header list, a client address, a time and
/// optionally a connection. [`FakeRequest::new`]: `GET /`, no headers, no client, at
/// 1,700,000,000 s.
///
/// Its builder methods share names with [`RequestView`]'s (`method`, `header`): call the
/// view's through `&dyn RequestView`, as a plugin does.
#[derive(Debug, Clone, Default)]
pub struct FakeRequest {
    /// The method.
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query, without `?`.
    pub query: Option<String>,
    /// Header fields in order, names lower-cased.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The TCP peer.
    pub client: Option<IpAddr>,
    /// [`RequestView::now_unix`].
    pub now: u64,
    /// [`RequestView::connection`].
    pub conn: Option<Arc<ConnectionContext>>,
}

impl FakeRequest {
    /// `GET /` at 1,700,000,000 s, nothing else.
    pub fn new() -> Self {
        FakeRequest {
            method: "GET".into(),
            path: "/".into(),
            now: 1_700_000_000,
            ..Default::default()
        }
    }
    /// The method.
    pub fn method(mut self, method: &str) -> Self {
        self.method = method.into();
        self
    }
    /// The request target: a path with an optional `?query`.
    pub fn uri(mut self, target: &str) -> Self {
        match target.split_once('?') {
            Some((path, query)) => {
                self.path = path.into();
                self.query = Some(query.into());
            }
            None => {
                self.path = target.into();
                self.query = None;
            }
        }
        self
    }
    /// On connection `conn` (share one between requests of one connection).
    pub fn on(mut self, conn: &Arc<ConnectionContext>) -> Self {
        self.conn = Some(conn.clone());
        self
    }
    /// Add a header (several calls with one name make several fields).
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.as_ref().to_vec()));
        self
    }
    /// The client address (panics when `ip` is not one).
    pub fn client(mut self, ip: &str) -> Self {
        self.client = Some(ip.parse().expect("test IP address"));
        self
    }
    /// The time, in Unix seconds.
    pub fn at(mut self, now_unix: u64) -> Self {
        self.now = now_unix;
        self
    }
}

impl RequestView for FakeRequest {
    fn method(&self) -> &str {
        &self.method
    }
    fn path(&self) -> &str {
        &self.path
    }
    fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }
    fn connection(&self) -> Option<&ConnectionContext> {
        self.conn.as_deref()
    }
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
    fn for_each_header(&self, name: &str, f: &mut dyn FnMut(&[u8])) {
        for (n, v) in &self.headers {
            if n.eq_ignore_ascii_case(name) {
                f(v)
            }
        }
    }
    fn header_nth(&self, name: &str, n: usize) -> Option<&[u8]> {
        self.headers
            .iter()
            .filter(|(h, _)| h.eq_ignore_ascii_case(name))
            .nth(n)
            .map(|(_, v)| v.as_slice())
    }
    fn client_ip(&self) -> Option<IpAddr> {
        self.client
    }
    fn now_unix(&self) -> u64 {
        self.now
    }
}

/// A response: headers from the backend, and the headers plugins added.
#[derive(Debug, Clone, Default)]
pub struct FakeResponse {
    /// The backend's header fields, names lower-cased.
    pub upstream_headers: Vec<(String, Vec<u8>)>,
    /// What plugins appended.
    pub added: Vec<(HeaderName, String)>,
}

impl FakeResponse {
    /// No headers.
    pub fn new() -> Self {
        Self::default()
    }
    /// A header from the backend.
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.upstream_headers
            .push((name.to_ascii_lowercase(), value.as_ref().to_vec()));
        self
    }
    /// Values added under `name`.
    pub fn added(&self, name: &str) -> Vec<&str> {
        self.added
            .iter()
            .filter(|(n, _)| n.as_str().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

impl ResponseView for FakeResponse {
    fn for_each_header(&self, name: &str, f: &mut dyn FnMut(&[u8])) {
        for (n, v) in &self.upstream_headers {
            if n.eq_ignore_ascii_case(name) {
                f(v)
            }
        }
    }
    fn append_header(&mut self, name: HeaderName, value: String) {
        self.added.push((name, value));
    }
}

/// An owned copy of a [`KeyOutcome`], so outcomes of requests that are gone can be compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// [`Affinity::Session`].
    Session(SessionKey),
    /// [`Affinity::Backend`].
    Backend {
        /// The backend named.
        name: String,
        /// The session.
        key: SessionKey,
        /// The token's expiry.
        expires: u64,
    },
    /// [`Affinity::Bound`].
    Bound {
        /// The backend.
        name: String,
        /// The ring point.
        point: u32,
    },
    /// [`KeyOutcome::Skip`].
    Skip,
    /// [`KeyOutcome::Invalid`].
    Invalid(Invalid),
}

impl From<KeyOutcome<'_>> for Outcome {
    fn from(o: KeyOutcome<'_>) -> Self {
        match o {
            KeyOutcome::Key(Affinity::Session(k)) => Outcome::Session(k),
            KeyOutcome::Key(Affinity::Backend { name, key, expires }) => Outcome::Backend {
                name: name.to_string(),
                key,
                expires,
            },
            KeyOutcome::Key(Affinity::Bound { name, point }) => Outcome::Bound {
                name: name.to_string(),
                point,
            },
            KeyOutcome::Skip => Outcome::Skip,
            KeyOutcome::Invalid(why) => Outcome::Invalid(why),
        }
    }
}

impl Outcome {
    /// True for a key (session or backend).
    pub fn is_key(&self) -> bool {
        !matches!(self, Outcome::Skip | Outcome::Invalid(_))
    }
}

/// `plugin.key(req)`, owned.
pub fn outcome(plugin: &dyn AffinityPlugin, req: &dyn RequestView) -> Outcome {
    plugin.key(req).into()
}
