//! Client-side limits at run time: the checks every request head passes before it is routed
//! (the `limits:` values are read by [`crate::config::limits`]).
//!
//! Pingora refuses on its own (400) heads over 1 MiB or over 256 fields, invalid bytes,
//! differing duplicate `Content-Length`s and a `Transfer-Encoding` whose last coding is not
//! `chunked`. It accepts a request with both `Transfer-Encoding` and `Content-Length`
//! (dropping the length, as RFC 9112 §6.3 allows); Berth refuses it (400), since such a
//! request is the shape of a smuggling attempt and no legitimate client sends it.
use crate::client_deadlines::Deadlines;
use crate::config::ClientLimits;
use crate::policy::Limit;
use pingora_proxy::Session;

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
    pub fn check(&self, session: &Session) -> Option<Limit> {
        let req = session.req_header();
        if req.raw_path().len() > self.max_uri_bytes {
            return Some(Limit::UriTooLong);
        }
        if req.headers.len() > self.max_headers {
            return Some(Limit::TooManyHeaders);
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
            return Some(Limit::HeadersTooLarge);
        }
        if req.headers.contains_key(http::header::TRANSFER_ENCODING)
            && raw.is_some_and(|raw| has_field(&raw, b"content-length"))
        {
            return Some(Limit::AmbiguousLength);
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
