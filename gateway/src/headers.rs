//! Header handling at the proxy edge: forwarding headers and Berth's signals to the backend,
//! and the small responses Berth writes itself.
use crate::upstreams::Signal;
use crate::views::client_ip;
use bytes::Bytes;
use pingora_error::Result;
use pingora_error::{Error, ErrorSource, ErrorType};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;
use std::fmt::Write;

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
pub fn to_upstream(session: &Session, req: &mut RequestHeader, signal: &Signal<'_>) -> Result<()> {
    for name in [AFFINITY, PREVIOUS, BACKUP] {
        req.remove_header(name);
    }
    req.insert_header(AFFINITY, signal.affinity)?;
    if let Some(p) = &signal.previous {
        req.insert_header(PREVIOUS, &**p)?;
    }
    if let Some(b) = signal.backup {
        req.insert_header(BACKUP, b)?;
    }
    if let Some(ip) = client_ip(session) {
        let mut xff = String::with_capacity(64);
        for v in req.headers.get_all("x-forwarded-for") {
            if let Ok(s) = v.to_str() {
                xff.push_str(s);
                xff.push_str(", ");
            }
        }
        // Writing to a String cannot fail.
        let _ = write!(xff, "{ip}");
        req.insert_header("x-forwarded-for", xff)?;
    }
    req.insert_header("x-forwarded-proto", "http")?;
    if let Some(h) = host(session.req_header()).map(str::to_owned) {
        req.insert_header("x-forwarded-host", h)?;
    }
    Ok(())
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

/// The status a failed request is answered with (as Pingora's default `fail_to_proxy`).
pub fn error_status(e: &Error) -> u16 {
    match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}
