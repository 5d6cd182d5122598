//! The admin listener: `/metrics` (Prometheus text format) and `/healthz`.
//! Bound to 127.0.0.1 by default (`admin.listen`).
use crate::upstreams::Gateway;
use async_trait::async_trait;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use std::sync::Arc;

/// The admin HTTP app.
pub struct AdminApp {
    pub gw: Arc<Gateway>,
}

fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let get = req.method == http::Method::GET || req.method == http::Method::HEAD;
        match (get, req.uri.path()) {
            (true, "/healthz") => reply(200, "text/plain", b"ok\n".to_vec()),
            (true, "/metrics") => reply(
                200,
                "text/plain; version=0.0.4",
                self.gw.metrics.render(&self.gw),
            ),
            (false, "/healthz" | "/metrics") => {
                reply(405, "text/plain", b"method not allowed\n".to_vec())
            }
            _ => reply(404, "text/plain", b"not found\n".to_vec()),
        }
    }
}
