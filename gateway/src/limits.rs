//! Client-side limits (`limits:` in the configuration): how long a client may take to send a
//! request, how big its head may be, and the checks every request passes before it is routed.
//!
//! | key | default | what |
//! |---|---|---|
//! | `header_timeout` | 10s | a request head must arrive whole within this of its first byte ([`crate::guard`]) |
//! | `keepalive_timeout` | 60s | a connection idle this long between requests (or before its first) is closed |
//! | `body_timeout` | 60s | the longest pause between two reads of a request body |
//! | `max_header_bytes` | 65536 | request line + header fields, in bytes → 431 |
//! | `max_headers` | 100 | header fields → 431 |
//! | `max_uri_bytes` | 8192 | request target → 414 |
//!
//! Pingora refuses on its own (400) heads over 1 MiB or over 256 fields, invalid bytes,
//! differing duplicate `Content-Length`s and a `Transfer-Encoding` whose last coding is not
//! `chunked`. It accepts a request with both `Transfer-Encoding` and `Content-Length`
//! (dropping the length, as RFC 9112 §6.3 allows); Berth refuses it (400), since such a
//! request is the shape of a smuggling attempt and no legitimate client sends it.
use crate::guard::Deadlines;
use berth_plugins::params::Obj;
use pingora_proxy::Session;
use std::time::Duration;

/// Why a request was refused by [`ClientLimits::check`] (the `why` label of
/// `berth_requests_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    UriTooLong,
    TooManyHeaders,
    HeadersTooLarge,
    AmbiguousLength,
}

impl Refused {
    pub const ALL: [Refused; 4] = [
        Refused::UriTooLong,
        Refused::TooManyHeaders,
        Refused::HeadersTooLarge,
        Refused::AmbiguousLength,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refused::UriTooLong => "uri_too_long",
            Refused::TooManyHeaders => "too_many_headers",
            Refused::HeadersTooLarge => "headers_too_large",
            Refused::AmbiguousLength => "te_and_cl",
        }
    }

    /// The status and body of the answer.
    pub fn response(self) -> (u16, &'static str) {
        match self {
            Refused::UriTooLong => (414, "request target too long\n"),
            Refused::TooManyHeaders => (431, "too many request header fields\n"),
            Refused::HeadersTooLarge => (431, "request header fields too large\n"),
            Refused::AmbiguousLength => (
                400,
                "a request may not carry both Transfer-Encoding and Content-Length\n",
            ),
        }
    }
}

/// Checked `limits:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    pub header_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub body_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_uri_bytes: usize,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_uri_bytes: 8 * 1024,
        }
    }
}

/// Pingora's own ceilings: a head over 1 MiB or with more than 256 fields is refused (400)
/// before Berth sees it, so Berth's limits must stay below.
const PINGORA_MAX_HEAD: usize = 1_048_575;
const PINGORA_MAX_HEADERS: usize = 256;

/// Read `limits:` (all keys optional).
pub fn read_conf(top: &mut Obj<'_, '_>) -> ClientLimits {
    let mut l = ClientLimits::default();
    let Some(v) = top.raw("limits") else {
        return l;
    };
    let path = top.path_of("limits");
    let Some(mut o) = Obj::new(v, path, top.errors()) else {
        return l;
    };
    for (key, slot) in [
        ("header_timeout", &mut l.header_timeout),
        ("keepalive_timeout", &mut l.keepalive_timeout),
        ("body_timeout", &mut l.body_timeout),
    ] {
        if let Some(d) = o.duration(key) {
            if d < Duration::from_millis(100) {
                o.error(key, "must be at least 100ms");
            }
            *slot = d;
        }
    }
    if l.keepalive_timeout.subsec_millis() != 0 {
        // Pingora keeps keep-alive timeouts in whole seconds.
        o.error("keepalive_timeout", "must be a whole number of seconds");
    }
    for (key, slot, lo, hi) in [
        (
            "max_header_bytes",
            &mut l.max_header_bytes,
            1024,
            PINGORA_MAX_HEAD,
        ),
        ("max_headers", &mut l.max_headers, 8, PINGORA_MAX_HEADERS),
        ("max_uri_bytes", &mut l.max_uri_bytes, 64, PINGORA_MAX_HEAD),
    ] {
        if let Some(n) = o.opt::<usize>(key) {
            if !(lo..=hi).contains(&n) {
                o.error(key, format!("{n} is out of range {lo}..={hi}"));
            }
            *slot = n;
        }
    }
    o.finish();
    l
}

impl ClientLimits {
    /// What the connection wrapper enforces.
    pub fn deadlines(&self) -> Deadlines {
        Deadlines {
            header: self.header_timeout,
            idle: self.keepalive_timeout,
        }
    }

    /// The per-request timeout Pingora enforces: body reads. (The keep-alive idle timeout is
    /// the connection wrapper's, see `guard`; Pingora keeps its default of no timeout, which
    /// costs no timer per request.)
    pub fn apply(&self, session: &mut Session) {
        session.set_read_timeout(Some(self.body_timeout));
    }

    /// Check a request head: `Some(why)` when it must be refused.
    pub fn check(&self, session: &Session) -> Option<Refused> {
        let req = session.req_header();
        if req.raw_path().len() > self.max_uri_bytes {
            return Some(Refused::UriTooLong);
        }
        if req.headers.len() > self.max_headers {
            return Some(Refused::TooManyHeaders);
        }
        let raw = session
            .as_downstream()
            .as_http1()
            .map(|h1| h1.get_headers_raw_bytes());
        let head_len = match &raw {
            Some(raw) => raw.len(),
            None => req
                .headers
                .iter()
                .map(|(n, v)| n.as_str().len() + v.len() + 4)
                .sum(),
        };
        if head_len > self.max_header_bytes {
            return Some(Refused::HeadersTooLarge);
        }
        if req.headers.contains_key(http::header::TRANSFER_ENCODING)
            && raw.is_some_and(|raw| has_field(&raw, b"content-length"))
        {
            return Some(Refused::AmbiguousLength);
        }
        None
    }
}

/// True when the raw head `raw` has a header field called `name` (lower case): a line that
/// starts with it, case-insensitively, followed by optional whitespace and `:`.
fn has_field(raw: &[u8], name: &[u8]) -> bool {
    raw.split(|&b| b == b'\n').skip(1).any(|line| {
        line.len() > name.len()
            && line[..name.len()].eq_ignore_ascii_case(name)
            && line[name.len()..]
                .iter()
                .find(|&&b| b != b' ' && b != b'\t')
                .is_some_and(|&b| b == b':')
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_plugins::params::Errors;

    fn read(yaml: &str) -> (ClientLimits, Vec<String>) {
        let v: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
        let mut errors = Errors::default();
        let mut top = Obj::new(&v, String::new(), &mut errors).unwrap();
        let l = read_conf(&mut top);
        let _ = top.raw("other");
        top.finish();
        (l, errors.0.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn defaults_and_values() {
        assert_eq!(read("other: 1").0, ClientLimits::default());
        let (l, errs) = read(
            "limits: {header_timeout: 2s, keepalive_timeout: 5s, body_timeout: 500ms, \
             max_header_bytes: 4096, max_headers: 20, max_uri_bytes: 1024}",
        );
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(l.header_timeout, Duration::from_secs(2));
        assert_eq!(l.body_timeout, Duration::from_millis(500));
        assert_eq!(
            (l.max_header_bytes, l.max_headers, l.max_uri_bytes),
            (4096, 20, 1024)
        );
    }

    #[test]
    fn bad_values_are_reported() {
        let (_, errs) = read(
            "limits: {header_timeout: 0s, keepalive_timeout: 1500ms, max_headers: 1000, \
             max_header_bytes: 10, typo: 1}",
        );
        let all = errs.join("\n");
        for want in [
            "limits.header_timeout: must be at least 100ms",
            "limits.keepalive_timeout: must be a whole number of seconds",
            "limits.max_headers: 1000 is out of range 8..=256",
            "limits.max_header_bytes: 10 is out of range 1024..=1048575",
            "limits.typo",
        ] {
            assert!(all.contains(want), "{want:?} not in:\n{all}");
        }
    }

    #[test]
    fn raw_head_fields() {
        let head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length : 5\r\n\r\n";
        assert!(has_field(head, b"content-length"));
        assert!(has_field(head, b"transfer-encoding"));
        assert!(!has_field(
            b"GET /content-length: HTTP/1.1\r\nX: content-length:\r\n",
            b"content-length"
        ));
        assert!(!has_field(
            b"GET / HTTP/1.1\r\nContent-Lengthy: 1\r\n",
            b"content-length"
        ));
    }
}
