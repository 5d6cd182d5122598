//! Header handling at the proxy edge: forwarding headers and Berth's signals to the backend,
//! and the small responses Berth writes itself.
use crate::upstreams::Signal;
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
/// Runs on every request: values are static, pre-built per backend ([`Signal::backup`]) or
/// shared with the request (`Host`), so the only allocations left are the ones Pingora makes
/// for each inserted header name.
pub fn to_upstream(session: &Session, req: &mut RequestHeader, signal: &Signal<'_>) -> Result<()> {
    for name in [AFFINITY, PREVIOUS, BACKUP] {
        req.remove_header(name);
    }
    req.insert_header(AFFINITY, HeaderValue::from_static(signal.affinity))?;
    if let Some(p) = &signal.previous {
        req.insert_header(PREVIOUS, &**p)?;
    }
    if let Some(b) = signal.backup {
        req.insert_header(BACKUP, b.clone())?;
    }
    if let Some(ip) = client_ip(session) {
        let xff = forwarded_for(req, ip)?;
        req.insert_header(XFF, xff)?;
    }
    req.insert_header(XF_PROTO, HeaderValue::from_static("http"))?;
    let down = session.req_header();
    match down.headers.get(http::header::HOST) {
        // The same bytes `host()` returns, shared rather than copied.
        Some(h) if h.to_str().is_ok() => req.insert_header(XF_HOST, h.clone())?,
        _ => {
            if let Some(h) = host(down).map(str::to_owned) {
                req.insert_header(XF_HOST, h)?;
            }
        }
    }
    Ok(())
}

const XFF: &str = "x-forwarded-for";
const XF_PROTO: &str = "x-forwarded-proto";
const XF_HOST: &str = "x-forwarded-host";

/// `X-Forwarded-For`: the values the client sent (each followed by `, `), then the peer's IP.
fn forwarded_for(req: &RequestHeader, ip: IpAddr) -> Result<HeaderValue> {
    let mut sent = req.headers.get_all(XFF).iter().peekable();
    if sent.peek().is_none() {
        // The common case: just the address, formatted on the stack.
        let mut buf = [0u8; 64];
        let mut w = std::io::Cursor::new(&mut buf[..]);
        // An IPv6 address is at most 45 bytes: cannot fail.
        let _ = std::io::Write::write_fmt(&mut w, format_args!("{ip}"));
        let n = w.position() as usize;
        if let Ok(v) = HeaderValue::from_bytes(&buf[..n]) {
            return Ok(v);
        }
    }
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
