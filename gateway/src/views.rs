//! Adapters from Pingora's request/response types to the plugin views.
use berth_plugins::{ConnectionContext, HeaderName, RequestView, ResponseView};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// A Pingora session seen through [`RequestView`].
pub struct ReqView<'a>(pub &'a Session);

impl RequestView for ReqView<'_> {
    fn method(&self) -> &str {
        self.0.req_header().method.as_str()
    }

    fn path(&self) -> &str {
        self.0.req_header().uri.path()
    }

    fn query(&self) -> Option<&str> {
        self.0.req_header().uri.query()
    }

    fn connection(&self) -> Option<&ConnectionContext> {
        connection(self.0)
    }

    fn header(&self, name: &str) -> Option<&[u8]> {
        self.0.req_header().headers.get(name).map(|v| v.as_bytes())
    }

    fn header_nth(&self, name: &str, n: usize) -> Option<&[u8]> {
        self.0
            .req_header()
            .headers
            .get_all(name)
            .iter()
            .nth(n)
            .map(|v| v.as_bytes())
    }

    fn for_each_header(&self, name: &str, f: &mut dyn FnMut(&[u8])) {
        for v in self.0.req_header().headers.get_all(name) {
            f(v.as_bytes())
        }
    }

    fn client_ip(&self) -> Option<IpAddr> {
        client_ip(self.0)
    }

    fn now_unix(&self) -> u64 {
        now_unix()
    }
}

/// The plugins' context of the session's client connection (HTTP/1.x; `None` on HTTP/2).
pub fn connection(s: &Session) -> Option<&ConnectionContext> {
    crate::client_deadlines::connection_of(s.as_ref().stream()?)
}

/// The TCP peer's IP address.
pub fn client_ip(s: &Session) -> Option<IpAddr> {
    s.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip())
}

/// Wall-clock seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A response header on its way to the client, seen through [`ResponseView`].
pub struct RespView<'a>(pub &'a mut ResponseHeader);

impl ResponseView for RespView<'_> {
    fn for_each_header(&self, name: &str, f: &mut dyn FnMut(&[u8])) {
        for v in self.0.headers.get_all(name) {
            f(v.as_bytes())
        }
    }

    fn append_header(&mut self, name: HeaderName, value: String) {
        if let Err(e) = self.0.append_header(name, value) {
            log::warn!("plugin header not added: {e}");
        }
    }
}
