//! The admin listener (bound to 127.0.0.1 by default, `admin.listen`):
//! `/healthz` (the process serves), `/readyz` (every upstream has a backend that takes new
//! sessions), `/metrics` (Prometheus text format) and `/` (the dashboard page, which asks for
//! the token in the browser) — open — and the `/admin/*` API, which needs
//! `Authorization: Bearer <token>` with the token from the environment variable named by
//! `admin.token_env`. Without that variable the API answers 403 and changes nothing.
// The admin API is a cold path; returning ready-made error responses keeps handlers short.
#![allow(clippy::result_large_err)]

mod api;
mod status;

use crate::gateway::Gateway;
use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, Response};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use std::sync::Arc;

/// The dashboard: one self-contained page (no external resources), polling `/admin/backends`.
const DASHBOARD: &str = include_str!("dashboard.html");

/// The dashboard may run its own inline script and style and talk to this listener only.
const DASHBOARD_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; \
    style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// Largest request body the admin API reads.
const MAX_BODY: usize = 64 * 1024;

/// The admin HTTP app.
pub struct AdminApp {
    pub gw: Arc<Gateway>,
    /// The bearer token; `None` disables `/admin/*`.
    pub token: Option<String>,
    /// Name of the variable it came from (for messages).
    pub token_env: String,
}

/// A request to the API, read in full.
pub(crate) struct Req {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub body: Bytes,
}

pub(crate) fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        // Which process answered (two serve the admin socket during an upgrade).
        .header("x-berth-pid", std::process::id())
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

/// `{"error": message}` with `status`.
pub(crate) fn error(status: u16, message: &str) -> Response<Vec<u8>> {
    let body = serde_json::json!({ "error": message }).to_string();
    let mut r = reply(status, "application/json", body.into_bytes());
    if status == 401 {
        r.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer realm=\"berth-admin\""),
        );
    }
    r
}

/// Constant-time comparison of what a client sent with the token (`subtle`): the time does
/// not depend on where the two differ.
fn same(given: &[u8], token: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    !token.is_empty() && bool::from(given.ct_eq(token))
}

impl AdminApp {
    fn authorized(&self, session: &ServerSession) -> Result<(), Response<Vec<u8>>> {
        let Some(token) = &self.token else {
            let msg = format!("admin API disabled: set {} to enable it", self.token_env);
            return Err(error(403, &msg));
        };
        let given = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        match given {
            Some(g) if same(g, token.as_bytes()) => Ok(()),
            Some(_) => {
                self.gw.metrics.admin_denied.inc();
                Err(error(401, "invalid bearer token"))
            }
            None => {
                self.gw.metrics.admin_denied.inc();
                Err(error(401, "missing Authorization: Bearer <token>"))
            }
        }
    }

    async fn read(session: &mut ServerSession) -> Result<Req, Response<Vec<u8>>> {
        let mut body = Vec::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_BODY {
                        return Err(error(413, "request body over 64 KiB"));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(_) => return Err(error(400, "could not read the request body")),
            }
        }
        let h = session.req_header();
        Ok(Req {
            method: h.method.clone(),
            path: h.uri.path().to_string(),
            query: h.uri.query().map(str::to_string),
            body: Bytes::from(body),
        })
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let get = req.method == Method::GET || req.method == Method::HEAD;
        match (get, req.uri.path()) {
            (true, "/healthz") => return reply(200, "text/plain", b"ok\n".to_vec()),
            (true, "/readyz") => return status::readiness(&self.gw),
            (true, "/") => return dashboard(),
            (true, "/metrics") => {
                let text = self.gw.metrics.render();
                return reply(200, "text/plain; version=0.0.4", text);
            }
            (false, "/healthz" | "/readyz" | "/metrics" | "/") => {
                return error(405, "method not allowed")
            }
            (_, p) if p == "/admin" || p.starts_with("/admin/") => {}
            _ => return error(404, "not found"),
        }
        if let Err(denied) = self.authorized(session) {
            return denied;
        }
        match Self::read(session).await {
            Ok(req) => api::handle(&self.gw, &req).await,
            Err(resp) => resp,
        }
    }
}

fn dashboard() -> Response<Vec<u8>> {
    let mut r = reply(
        200,
        "text/html; charset=utf-8",
        DASHBOARD.as_bytes().to_vec(),
    );
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_SECURITY_POLICY,
        http::HeaderValue::from_static(DASHBOARD_CSP),
    );
    h.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
    h.insert(
        http::header::REFERRER_POLICY,
        http::HeaderValue::from_static("no-referrer"),
    );
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn constant_time_compare() {
        assert!(super::same(b"token", b"token"));
        assert!(!super::same(b"token", b"tokem"));
        assert!(!super::same(b"token", b"token2"));
        assert!(!super::same(b"", b"x"));
        assert!(!super::same(b"x", b""));
        assert!(!super::same(b"", b""));
        // A prefix or a repetition of the token is not the token.
        assert!(!super::same(b"tok", b"token"));
        assert!(!super::same(b"tokentoken", b"token"));
    }
}
