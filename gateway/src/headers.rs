//! Header handling at the proxy edge: forwarding headers and Berth's signals to the backend,
//! and the small responses Berth writes itself.
use crate::views::client_ip;
use bytes::Bytes;
use http::HeaderValue;
use pingora_error::Result;
use pingora_error::{Error, ErrorSource, ErrorType, OrErr};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;
use std::fmt::Write;
use std::net::IpAddr;

/// Header telling the backend why the request came to it.
pub const AFFINITY: &str = "x-berth-affinity";
/// Header naming the backend a session was moved away from.
pub const PREVIOUS: &str = "x-berth-previous-backend";
/// Header naming the session's backup backend.
pub const BACKUP: &str = "x-berth-backup";

/// What the backend is told about a request: the `X-Berth-*` headers.
#[derive(Debug, Default, Clone)]
pub struct AffinityHeaders<'s> {
    /// `sticky | new | ring | reassigned`.
    pub affinity: &'static str,
    /// Where the session was before, when it moved.
    pub previous: Option<std::sync::Arc<str>>,
    /// The session's backup backend (its id).
    pub backup: Option<&'s HeaderValue>,
}

/// The status code of an HTTP/1.x status line (`HTTP/1.1 200 OK` → 200).
pub fn status_of(line: &[u8]) -> Option<u16> {
    match line.strip_prefix(b"HTTP/1.")?.get(2..5)? {
        &[a, b, c] if [a, b, c].iter().all(u8::is_ascii_digit) => {
            Some(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
        }
        _ => None,
    }
}

/// The request's host: the `Host` header, else the URI authority (HTTP/2).
pub fn host(req: &RequestHeader) -> Option<&str> {
    req.headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.host())
}

/// Set the headers the backend receives. Client-sent `X-Berth-*` headers are removed first, so
/// a client cannot fake Berth's signals.
///
/// `forwarded`: also set `X-Forwarded-For`/`-Proto` (the upstream's `forward_headers`);
/// `tls`: the client's connection is TLS (`X-Forwarded-Proto: https`).
pub fn to_upstream(
    session: &Session,
    req: &mut RequestHeader,
    signal: &AffinityHeaders<'_>,
    forwarded: bool,
    tls: bool,
) -> Result<()> {
    let client = if forwarded { client_ip(session) } else { None };
    forward(req, signal, forwarded, client, tls)
}

/// [`to_upstream`] without the session. `forwarding` off: the client's own `X-Forwarded-*`
/// pass through unchanged. `client`: the peer's address, if it has one. Berth forwards `Host`
/// unchanged, so it sends no `X-Forwarded-Host` (and, when forwarding, removes one a client
/// sent).
///
/// Runs on every request, and each header Pingora inserts costs a name parse, two
/// allocations and two hash-map inserts (its case-preserving map and the value map), and the
/// maps regrow once the request's own headers fill them: so only the headers that carry
/// something are inserted, and removals are skipped unless a client sent such a header
/// (one scan of the request's header names).
pub fn forward(
    req: &mut RequestHeader,
    signal: &AffinityHeaders<'_>,
    forwarding: bool,
    client: Option<IpAddr>,
    tls: bool,
) -> Result<()> {
    let mut sent_xff = false;
    let mut strip = false;
    for name in req.headers.keys() {
        let n = name.as_str();
        if n.starts_with("x-berth-") || (forwarding && (n == XF_HOST || n == XF_PROTO)) {
            strip = true;
        } else if n == XFF {
            sent_xff = true;
        }
    }
    if strip {
        for name in [AFFINITY, PREVIOUS, BACKUP] {
            req.remove_header(name);
        }
        if forwarding {
            req.remove_header(XF_HOST);
            req.remove_header(XF_PROTO);
        }
    }
    req.append_header(AFFINITY, HeaderValue::from_static(signal.affinity))?;
    if let Some(p) = &signal.previous {
        req.append_header(PREVIOUS, &**p)?;
    }
    if let Some(b) = signal.backup {
        req.append_header(BACKUP, b.clone())?;
    }
    if !forwarding {
        return Ok(());
    }
    if let Some(ip) = client {
        if sent_xff {
            let xff = forwarded_for(req, ip)?;
            req.insert_header(XFF, xff)?;
        } else {
            req.append_header(XFF, ip_value(ip))?;
        }
    }
    let proto = if tls { "https" } else { "http" };
    req.append_header(XF_PROTO, HeaderValue::from_static(proto))?;
    Ok(())
}

const XFF: &str = "x-forwarded-for";
const XF_PROTO: &str = "x-forwarded-proto";
const XF_HOST: &str = "x-forwarded-host";

/// An address as a header value; IPv4 (the common case) without the formatting machinery.
fn ip_value(ip: IpAddr) -> HeaderValue {
    let mut buf = [0u8; 64];
    let n = match ip {
        IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    buf[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    buf[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + octet % 10;
                n += 1;
            }
            n
        }
        IpAddr::V6(_) => {
            let mut w = std::io::Cursor::new(&mut buf[..]);
            // An IPv6 address is at most 45 bytes: cannot fail.
            let _ = std::io::Write::write_fmt(&mut w, format_args!("{ip}"));
            w.position() as usize
        }
    };
    HeaderValue::from_bytes(&buf[..n]).expect("an address is a valid header value")
}

/// `X-Forwarded-For` when the client sent one: its values (each followed by `, `), then the
/// peer's IP.
fn forwarded_for(req: &RequestHeader, ip: IpAddr) -> Result<HeaderValue> {
    let mut xff = String::with_capacity(64);
    for v in req.headers.get_all(XFF) {
        if let Ok(s) = v.to_str() {
            xff.push_str(s);
            xff.push_str(", ");
        }
    }
    // Writing to a String cannot fail.
    let _ = write!(xff, "{ip}");
    HeaderValue::try_from(xff).or_err(ErrorType::InvalidHTTPHeader, "invalid value while insert")
}

/// Answer the client directly with a short plain-text body.
pub async fn respond(
    session: &mut Session,
    status: u16,
    retry_after: Option<u32>,
    body: &'static str,
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(4))?;
    resp.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    if let Some(secs) = retry_after {
        resp.insert_header(http::header::RETRY_AFTER, secs.to_string())?;
    }
    session.set_keepalive(None);
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(Bytes::from_static(body.as_bytes())), true)
        .await
}

/// A request body's last piece when it is empty becomes no piece. Pingora 0.9.1 writes an
/// empty piece to an HTTP/1.1 backend as a chunk of size 0 — the chunked terminator — and then
/// the terminator again when the body ends (issue #935): an HTTP/2 client that ends its body
/// with an empty DATA frame (streaming clients, `curl -T -`) would leave a stray `0\r\n\r\n`
/// on the pooled connection, which the backend reads as a bad request and answers on the next
/// request that reuses the connection.
pub fn drop_empty_last_chunk(body: &mut Option<Bytes>, end_of_stream: bool) {
    if end_of_stream && body.as_ref().is_some_and(Bytes::is_empty) {
        *body = None;
    }
}

/// Safe to send twice: idempotent methods (RFC 9110), or any request carrying an
/// `Idempotency-Key` header (the application deduplicates).
pub fn is_idempotent(req: &RequestHeader) -> bool {
    use http::Method;
    matches!(
        req.method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    ) || req.headers.contains_key("idempotency-key")
}

/// Replace the backend's address in an upstream error (its context and cause chain) with the
/// backend's id, so the error Pingora logs ("Fail to proxy: ...") names the backend without
/// revealing where it is. Runs only on failed requests.
pub fn conceal_peer(
    e: &mut Error,
    addr: &pingora_core::protocols::l4::socket::SocketAddr,
    id: &str,
) {
    let ip = addr.as_inet().map(|a| a.ip().to_string());
    let conceal = |s: &str| {
        let s = s.replace(&addr.to_string(), id);
        match &ip {
            Some(ip) => s.replace(ip.as_str(), id),
            None => s,
        }
    };
    if let Some(c) = e.context.take() {
        e.context = Some(conceal(c.as_str()).into());
    }
    if let Some(cause) = e.cause.take() {
        e.cause = Some(conceal(&cause.to_string()).into());
    }
}

/// The status a failed request is answered with (as Pingora's default `fail_to_proxy`).
pub fn error_status(e: &Error) -> u16 {
    match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                // The client paused longer than `limits.body_timeout` while sending a body.
                ErrorType::ReadTimedout => 408,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn parsed(headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/", Some(headers.len())).unwrap();
        for (n, v) in headers {
            req.append_header(n.to_string(), *v).unwrap();
        }
        req
    }

    fn values(req: &RequestHeader, name: &str) -> Vec<String> {
        req.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn an_empty_last_body_piece_is_dropped() {
        let mut b = Some(Bytes::new());
        drop_empty_last_chunk(&mut b, false);
        assert_eq!(
            b,
            Some(Bytes::new()),
            "not the end: left to Pingora, which skips it"
        );
        drop_empty_last_chunk(&mut b, true);
        assert_eq!(b, None);
        let mut b = Some(Bytes::from_static(b"x"));
        drop_empty_last_chunk(&mut b, true);
        assert_eq!(b.as_deref(), Some(&b"x"[..]));
    }

    #[test]
    fn addresses_format_as_display_does() {
        for ip in [
            IpAddr::V4(Ipv4Addr::new(0, 0, 0, 0)),
            IpAddr::V4(Ipv4Addr::new(255, 255, 255, 255)),
            IpAddr::V4(Ipv4Addr::new(10, 1, 20, 100)),
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
            IpAddr::V4(Ipv4Addr::new(9, 99, 199, 200)),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V6("2001:db8::ff00:42:8329".parse().unwrap()),
            IpAddr::V6(
                "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
                    .parse()
                    .unwrap(),
            ),
        ] {
            assert_eq!(ip_value(ip).to_str().unwrap(), ip.to_string());
        }
    }

    #[test]
    fn forwarding_headers_are_berths_and_the_case_of_others_is_kept() {
        let signal = AffinityHeaders {
            affinity: "sticky",
            previous: None,
            backup: None,
        };
        let ip = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)));
        // Nothing to strip: the common case.
        let mut req = parsed(&[("Host", "app.example"), ("X-Session-Id", "s1")]);
        forward(&mut req, &signal, true, ip, false).unwrap();
        assert_eq!(values(&req, AFFINITY), ["sticky"]);
        assert_eq!(values(&req, XFF), ["192.0.2.7"]);
        assert_eq!(values(&req, XF_PROTO), ["http"]);
        assert!(values(&req, XF_HOST).is_empty());
        assert!(values(&req, PREVIOUS).is_empty() && values(&req, BACKUP).is_empty());
        let mut wire = bytes::BytesMut::new();
        req.header_to_h1_wire(&mut wire);
        let wire = String::from_utf8(wire.to_vec()).unwrap();
        assert!(wire.contains("X-Session-Id: s1\r\n"), "{wire}");

        // A client faking every signal: replaced or removed; its X-Forwarded-For is kept first.
        let mut req = parsed(&[
            ("Host", "app.example"),
            ("X-Berth-Affinity", "sticky"),
            ("X-Berth-Previous-Backend", "b9"),
            ("X-Berth-Backup", "b8"),
            ("X-Forwarded-Host", "evil.example"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Forwarded-For", "7.7.7.7"),
        ]);
        let backup = HeaderValue::from_static("b2");
        let moved = AffinityHeaders {
            affinity: "reassigned",
            previous: Some("b1".into()),
            backup: Some(&backup),
        };
        forward(&mut req, &moved, true, ip, false).unwrap();
        assert_eq!(values(&req, AFFINITY), ["reassigned"]);
        assert_eq!(values(&req, PREVIOUS), ["b1"]);
        assert_eq!(values(&req, BACKUP), ["b2"]);
        assert_eq!(values(&req, XFF), ["6.6.6.6, 7.7.7.7, 192.0.2.7"]);
        assert_eq!(values(&req, XF_PROTO), ["http"]);
        assert!(values(&req, XF_HOST).is_empty());
        assert_eq!(values(&req, "host"), ["app.example"]);

        // No peer address (a Unix socket): no X-Forwarded-For of Berth's. Over TLS: https, in
        // place of what the client claimed.
        let mut req = parsed(&[("Host", "app.example"), ("X-Forwarded-Proto", "http")]);
        forward(&mut req, &signal, true, None, true).unwrap();
        assert!(values(&req, XFF).is_empty());
        assert_eq!(values(&req, XF_PROTO), ["https"]);

        // forward_headers off: the client's X-Forwarded-* pass through, X-Berth-* are still ours.
        let mut req = parsed(&[
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "a.example"),
            ("X-Berth-Affinity", "fake"),
        ]);
        forward(&mut req, &signal, false, ip, false).unwrap();
        assert_eq!(values(&req, XFF), ["6.6.6.6"]);
        assert_eq!(values(&req, XF_PROTO), ["https"]);
        assert_eq!(values(&req, XF_HOST), ["a.example"]);
        assert_eq!(values(&req, AFFINITY), ["sticky"]);
    }
}
