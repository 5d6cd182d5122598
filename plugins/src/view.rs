//! What a plugin sees of a request ([`RequestView`]) and of the response on its way back
//! ([`ResponseView`]), and the on-demand query-string reader ([`Query`]).
use crate::context::ConnectionContext;
use http::HeaderName;
use std::borrow::Cow;
use std::net::IpAddr;

/// Read-only view of a request, as the gateway sees it. Every accessor borrows from the
/// request: nothing is copied or parsed until a plugin asks.
///
/// ```
/// use berth_plugins::testing::FakeRequest;
/// use berth_plugins::RequestView;
/// let req = FakeRequest::new()
///     .method("POST")
///     .uri("/doc/42/edit?room=blue&x=1")
///     .header("X-Tenant", "acme")
///     .client("10.1.2.3");
/// let req: &dyn RequestView = &req; // what a plugin is given
/// assert_eq!(req.method(), "POST");
/// assert_eq!(req.path(), "/doc/42/edit");
/// assert_eq!(req.query(), Some("room=blue&x=1"));
/// assert_eq!(req.query_param("room").as_deref(), Some(&b"blue"[..]));
/// assert_eq!(req.header("x-tenant"), Some(&b"acme"[..]));
/// assert_eq!(req.client_ip(), "10.1.2.3".parse().ok());
/// assert!(req.connection().is_none()); // a fake request has none unless given one
/// ```
pub trait RequestView {
    /// The request method (`GET`, `POST`, ...).
    fn method(&self) -> &str;
    /// The path of the request target, without the query (`/doc/42`), as the client sent it
    /// (not percent-decoded).
    fn path(&self) -> &str;
    /// The query string without the `?` (`room=blue&x=1`), as sent; `None` without one.
    /// [`RequestView::query_param`] reads one parameter out of it.
    fn query(&self) -> Option<&str>;
    /// The first value of a header (`name` is matched case-insensitively; a
    /// [`HeaderName`] works through [`HeaderName::as_str`]).
    fn header(&self, name: &str) -> Option<&[u8]>;
    /// Every value of a header, in order (HTTP/2 clients send several `cookie` fields).
    fn for_each_header(&self, name: &str, f: &mut dyn FnMut(&[u8]));
    /// The `n`-th value (0-based, in order) of a header, borrowed from the request; `None` past
    /// the last. Plugins use it when what they return must borrow from a field other than the
    /// first (the cookie plugin's [`crate::Affinity::Backend`] name): the slices passed by
    /// [`RequestView::for_each_header`] cannot outlive the callback.
    ///
    /// The default only knows the first value ([`RequestView::header`]). A view over requests
    /// that may carry several fields of one header (HTTP/2 `cookie` crumbs) should override it,
    /// e.g. `headers.get_all(name).iter().nth(n)`.
    fn header_nth(&self, name: &str, n: usize) -> Option<&[u8]> {
        if n == 0 {
            self.header(name)
        } else {
            None
        }
    }
    /// The TCP peer's address (not X-Forwarded-For).
    fn client_ip(&self) -> Option<IpAddr>;
    /// Wall-clock time in seconds since the Unix epoch, read once per request by the gateway.
    fn now_unix(&self) -> u64;
    /// The client connection this request came on: its id and the values plugins keep for
    /// it ([`ConnectionContext`]). `None` where the gateway has no such context: HTTP/2
    /// streams (each stream is routed on its own) and views that do not provide one.
    fn connection(&self) -> Option<&ConnectionContext> {
        None
    }
    /// The first value of query parameter `name`, percent-decoded (`+` is a space). Borrowed
    /// when there is nothing to decode, so a plugin that reads one parameter allocates only
    /// for an encoded value. `None` when the request has no such parameter.
    fn query_param(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        Query::new(self.query()?).get(name)
    }
}

/// A query string read pair by pair, on demand: no map is built and nothing is allocated to
/// find a parameter.
///
/// ```
/// use berth_plugins::Query;
/// let q = Query::new("a=1&room=blue%20sky&flag&room=second");
/// assert_eq!(q.get("room").as_deref(), Some(&b"blue sky"[..])); // the first one, decoded
/// assert_eq!(q.get_raw("room"), Some("blue%20sky"));
/// assert_eq!(q.get("flag").as_deref(), Some(&b""[..]));
/// assert_eq!(q.get("missing"), None);
/// assert_eq!(q.pairs().count(), 4);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Query<'q>(&'q str);

impl<'q> Query<'q> {
    /// Read `raw` (without the leading `?`).
    pub fn new(raw: &'q str) -> Self {
        Query(raw)
    }

    /// Every `name=value` pair, raw (still percent-encoded), in order; a pair without `=` has
    /// an empty value; empty pairs (`a=1&&b=2`) are skipped.
    pub fn pairs(&self) -> impl Iterator<Item = (&'q str, &'q str)> + 'q {
        self.0
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| p.split_once('=').unwrap_or((p, "")))
    }

    /// The raw value of the first parameter named `name` (names compared as sent).
    pub fn get_raw(&self, name: &str) -> Option<&'q str> {
        self.pairs().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The first value of `name`, percent-decoded, `+` read as a space; borrowed when there
    /// is nothing to decode.
    pub fn get(&self, name: &str) -> Option<Cow<'q, [u8]>> {
        self.get_raw(name).map(decode)
    }
}

/// Percent-decode a query value (`+` is a space); borrowed when nothing needs decoding.
fn decode(raw: &str) -> Cow<'_, [u8]> {
    if !raw.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(raw.as_bytes());
    }
    let plus_free: Cow<'_, str> = if raw.contains('+') {
        Cow::Owned(raw.replace('+', " "))
    } else {
        Cow::Borrowed(raw)
    };
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(&plus_free).collect();
    Cow::Owned(decoded)
}

/// The response on its way to the client.
///
/// ```
/// use berth_plugins::testing::FakeResponse;
/// use berth_plugins::{HeaderName, ResponseView};
/// let mut resp = FakeResponse::new().header("set-cookie", "app=1");
/// let mut seen = Vec::new();
/// resp.for_each_header("set-cookie", &mut |v| seen.push(v.to_vec()));
/// assert_eq!(seen, [b"app=1".to_vec()]);
/// resp.append_header(HeaderName::from_static("x-tenant"), "acme".into());
/// let name = HeaderName::try_from(format!("x-{}", "dynamic")).unwrap(); // any valid name
/// resp.append_header(name, "1".into());
/// assert_eq!(resp.added("x-tenant"), ["acme"]);
/// assert_eq!(resp.added("x-dynamic"), ["1"]);
/// ```
pub trait ResponseView {
    /// Every value of a response header from the backend (for learn-mode cookies).
    fn for_each_header(&self, name: &str, f: &mut dyn FnMut(&[u8]));
    /// Append a header to the response sent to the client (e.g. `Set-Cookie`). Names are
    /// [`HeaderName`]s: `HeaderName::from_static("x-a")` for a constant,
    /// `HeaderName::try_from(string)` for one read from the settings (check it when the
    /// plugin is built, not per request).
    fn append_header(&mut self, name: HeaderName, value: String);
}
