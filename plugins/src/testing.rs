//! In-memory [`RequestView`]/[`ResponseView`] for plugin tests (yours and ours).
use crate::{Affinity, AffinityPlugin, Invalid, KeyOutcome, RequestView, ResponseView};
use berth_routing::SessionKey;
use std::net::IpAddr;

/// A request made of a header list and a client address.
#[derive(Debug, Clone, Default)]
pub struct FakeRequest {
    pub headers: Vec<(String, Vec<u8>)>,
    pub client: Option<IpAddr>,
    pub now: u64,
}

impl FakeRequest {
    pub fn new() -> Self {
        FakeRequest {
            now: 1_700_000_000,
            ..Default::default()
        }
    }
    /// Add a header (several calls with one name make several fields).
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.as_ref().to_vec()));
        self
    }
    pub fn client(mut self, ip: &str) -> Self {
        self.client = Some(ip.parse().expect("test IP address"));
        self
    }
    pub fn at(mut self, now_unix: u64) -> Self {
        self.now = now_unix;
        self
    }
}

impl RequestView for FakeRequest {
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
    pub upstream_headers: Vec<(String, Vec<u8>)>,
    pub added: Vec<(&'static str, String)>,
}

impl FakeResponse {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.upstream_headers
            .push((name.to_ascii_lowercase(), value.as_ref().to_vec()));
        self
    }
    /// Values added under `name`.
    pub fn added(&self, name: &str) -> Vec<&str> {
        self.added
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
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
    fn append_header(&mut self, name: &'static str, value: String) {
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
        name: String,
        key: SessionKey,
        expires: u64,
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
            KeyOutcome::Skip => Outcome::Skip,
            KeyOutcome::Invalid(why) => Outcome::Invalid(why),
        }
    }
}

impl Outcome {
    /// True for a key (session or backend).
    pub fn is_key(&self) -> bool {
        matches!(self, Outcome::Session(_) | Outcome::Backend { .. })
    }
}

/// `plugin.key(req)`, owned.
pub fn outcome(plugin: &dyn AffinityPlugin, req: &dyn RequestView) -> Outcome {
    plugin.key(req).into()
}
