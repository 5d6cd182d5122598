//! A minimal blocking HTTP/1.1 client: keep-alive reuse, arbitrary headers, multi-valued
//! response headers, `Content-Length`/chunked/until-close bodies, an optional source address
//! (127.0.0.X) — and a [`CookieJar`] plus [`User`] to simulate one browser.
use crate::http::{self, Head};
use std::collections::BTreeMap;
use std::io::{self, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

/// One request to send.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn new(method: &str, path: &str) -> Request {
        Request {
            method: method.to_string(),
            path: path.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
    pub fn get(path: &str) -> Request {
        Request::new("GET", path)
    }
    /// Add a header field (several calls with one name send several fields).
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
    /// Set the body. `Content-Length` is added unless a `Transfer-Encoding` or `Content-Length`
    /// header was given (then the body bytes are sent exactly as they are).
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of a header (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        http::header(&self.headers, name)
    }
    /// Every value of a header, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        http::header_all(&self.headers, name)
    }
    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// Every `Set-Cookie`, parsed.
    pub fn set_cookies(&self) -> Vec<SetCookie> {
        self.header_all("set-cookie")
            .into_iter()
            .filter_map(SetCookie::parse)
            .collect()
    }
    /// The `Set-Cookie` for cookie `name`, if any.
    pub fn set_cookie(&self, name: &str) -> Option<SetCookie> {
        self.set_cookies().into_iter().find(|c| c.name == name)
    }
    /// Which demo backend answered (`X-Backend`), `""` when the header is missing.
    pub fn backend(&self) -> &str {
        self.header("x-backend").unwrap_or("")
    }
    /// The `X-Berth-Affinity` the demo backend saw (`X-Seen-Affinity`), `""` when missing.
    pub fn affinity(&self) -> &str {
        self.header("x-seen-affinity").unwrap_or("")
    }
    /// The `X-Berth-Previous-Backend` the demo backend saw, `"-"` when it got none (`""`
    /// when the echo header is missing, e.g. the gateway answered itself).
    pub fn previous(&self) -> &str {
        self.header("x-seen-previous-backend").unwrap_or("")
    }
    /// The `X-Berth-Backup` the demo backend saw, `"-"` when it got none.
    pub fn seen_backup(&self) -> &str {
        self.header("x-seen-backup").unwrap_or("")
    }
    /// True for 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body)
            .map_err(|e| format!("body is not JSON ({e}): {}", self.summary()))
    }
    /// One-line summary for assertion messages.
    pub fn summary(&self) -> String {
        let mut s = format!("{} {:?}", self.status, self.headers);
        let body = self.text();
        s.push_str(&format!(" body={:?}", &body[..body.len().min(200)]));
        s
    }
}

/// A parsed `Set-Cookie` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetCookie {
    pub name: String,
    pub value: String,
    /// Attributes in order, names as sent; flags (e.g. `HttpOnly`) have no value.
    pub attrs: Vec<(String, Option<String>)>,
    /// The header value as received.
    pub raw: String,
}

impl SetCookie {
    pub fn parse(raw: &str) -> Option<SetCookie> {
        let mut parts = raw.split(';');
        let (name, value) = parts.next()?.split_once('=')?;
        let attrs = parts
            .map(|a| match a.split_once('=') {
                Some((k, v)) => (k.trim().to_string(), Some(v.trim().to_string())),
                None => (a.trim().to_string(), None),
            })
            .collect();
        Some(SetCookie {
            name: name.trim().to_string(),
            value: value.trim().to_string(),
            attrs,
            raw: raw.to_string(),
        })
    }
    /// `Some(value)` for an attribute (flags give `Some("")`), case-insensitive.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref().unwrap_or(""))
    }
}

/// A blocking HTTP/1.1 client for one server address.
#[derive(Debug)]
pub struct Client {
    addr: SocketAddr,
    source: Option<IpAddr>,
    keep_alive: bool,
    timeout: Duration,
    /// Pause between opening a connection and writing its first request.
    first_write_after: Duration,
    conn: Option<BufReader<TcpStream>>,
    connections: u64,
}

impl Client {
    /// A keep-alive client (connections are reused until the server closes them).
    pub fn new(addr: SocketAddr) -> Client {
        Client {
            addr,
            source: None,
            keep_alive: true,
            timeout: Duration::from_secs(15),
            first_write_after: Duration::ZERO,
            conn: None,
            connections: 0,
        }
    }
    /// Connect from this local address (e.g. 127.0.0.7), port chosen by the OS.
    pub fn source(mut self, ip: IpAddr) -> Client {
        self.source = Some(ip);
        self
    }
    /// Open a new connection for every request and send `Connection: close`.
    pub fn fresh_connections(mut self) -> Client {
        self.keep_alive = false;
        self
    }
    /// Wait `pause` after opening a connection before writing its first request, as a client
    /// that opens connections ahead of its requests (a browser's preconnect) or is slow to
    /// write does. Default: none.
    pub fn first_write_after(mut self, pause: Duration) -> Client {
        self.first_write_after = pause;
        self
    }
    /// Connect/read/write timeout (default 15 s).
    pub fn timeout(mut self, t: Duration) -> Client {
        self.timeout = t;
        self
    }
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// How many TCP connections this client has opened.
    pub fn connections_opened(&self) -> u64 {
        self.connections
    }
    /// Open a connection now; the next request is written on it (when it is still open).
    pub fn connect_now(&mut self) -> io::Result<()> {
        if self.conn.is_none() {
            self.conn = Some(self.connect()?);
        }
        Ok(())
    }
    /// Drop the current connection (the next request opens a new one).
    pub fn close(&mut self) {
        self.conn = None;
    }

    /// `GET path`, panicking with the address and error when the exchange fails.
    pub fn get(&mut self, path: &str) -> Response {
        self.send(&Request::get(path))
    }

    /// Send a request, panicking with the address and error when the exchange fails.
    pub fn send(&mut self, req: &Request) -> Response {
        match self.try_send(req) {
            Ok(r) => r,
            Err(e) => panic!("{} {} to {}: {e}", req.method, req.path, self.addr),
        }
    }

    /// Send a request. A reused keep-alive connection that turns out to be closed is replaced
    /// once by a new one (as browsers do).
    pub fn try_send(&mut self, req: &Request) -> io::Result<Response> {
        let reused = self.conn.is_some();
        match self.exchange(req) {
            Err(e) if reused && stale_connection(&e) => {
                self.conn = None;
                self.exchange(req)
            }
            other => other,
        }
    }

    fn connect(&mut self) -> io::Result<BufReader<TcpStream>> {
        let stream = match self.source {
            None => TcpStream::connect_timeout(&self.addr, self.timeout)?,
            Some(ip) => connect_from(ip, self.addr, self.timeout)?,
        };
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_write_timeout(Some(self.timeout))?;
        self.connections += 1;
        Ok(BufReader::new(stream))
    }

    fn exchange(&mut self, req: &Request) -> io::Result<Response> {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => {
                let c = self.connect()?;
                if !self.first_write_after.is_zero() {
                    std::thread::sleep(self.first_write_after);
                }
                c
            }
        };
        conn.get_mut().write_all(&self.encode(req))?;
        let (head, status) = loop {
            let head = http::read_head(&mut conn)?.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "connection closed before a response",
                )
            })?;
            let status = parse_status(&head)?;
            // Interim responses (100 Continue, 103 Early Hints) precede the real one.
            if !(100..200).contains(&status) || status == 101 {
                break (head, status);
            }
        };
        let kind = http::response_body_kind(&req.method, status, &head.headers)?;
        let body = http::read_body(&mut conn, kind)?;
        let server_closes = http::has_token(&head.headers, "connection", "close")
            || kind == http::BodyKind::UntilEof
            || head.start_line.starts_with("HTTP/1.0");
        if self.keep_alive && !server_closes {
            self.conn = Some(conn);
        }
        Ok(Response {
            status,
            headers: head.headers,
            body,
        })
    }

    fn encode(&self, req: &Request) -> Vec<u8> {
        let has = |n: &str| req.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
        let mut out = format!("{} {} HTTP/1.1\r\n", req.method, req.path);
        if !has("host") {
            out.push_str(&format!("Host: {}\r\n", self.addr));
        }
        for (k, v) in &req.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        let sized = has("content-length") || has("transfer-encoding");
        if !sized && (!req.body.is_empty() || matches!(req.method.as_str(), "POST" | "PUT")) {
            out.push_str(&format!("Content-Length: {}\r\n", req.body.len()));
        }
        if !self.keep_alive && !has("connection") {
            out.push_str("Connection: close\r\n");
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&req.body);
        bytes
    }
}

fn parse_status(head: &Head) -> io::Result<u16> {
    let mut parts = head.start_line.split_whitespace();
    let version = parts.next().unwrap_or("");
    let status = parts.next().and_then(|s| s.parse().ok());
    match status {
        Some(s) if version.starts_with("HTTP/1.") => Ok(s),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad status line {:?}", head.start_line),
        )),
    }
}

fn stale_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

/// Connect to `to` from local address `from` (port chosen by the OS). Any 127.0.0.X works on
/// Linux's loopback without configuration.
pub fn connect_from(from: IpAddr, to: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))?;
    socket.bind(&SocketAddr::new(from, 0).into())?;
    socket.connect_timeout(&to.into(), timeout)?;
    Ok(socket.into())
}

/// Cookies of one simulated user: `name → value` from `Set-Cookie`, sent back as `Cookie:`.
/// Domain and path are ignored (every test talks to one gateway at `/`).
#[derive(Debug, Clone, Default)]
pub struct CookieJar {
    cookies: BTreeMap<String, String>,
}

impl CookieJar {
    pub fn new() -> CookieJar {
        CookieJar::default()
    }
    /// Take every `Set-Cookie` of a response (`Max-Age` ≤ 0 deletes).
    pub fn store(&mut self, resp: &Response) {
        for c in resp.set_cookies() {
            let expired = c
                .attr("max-age")
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|age| age <= 0);
            if expired {
                self.cookies.remove(&c.name);
            } else {
                self.cookies.insert(c.name, c.value);
            }
        }
    }
    pub fn get(&self, name: &str) -> Option<&str> {
        self.cookies.get(name).map(String::as_str)
    }
    pub fn set(&mut self, name: &str, value: &str) {
        self.cookies.insert(name.to_string(), value.to_string());
    }
    pub fn remove(&mut self, name: &str) {
        self.cookies.remove(name);
    }
    /// The `Cookie:` header value, `None` when the jar is empty.
    pub fn header(&self) -> Option<String> {
        if self.cookies.is_empty() {
            return None;
        }
        let pairs: Vec<String> = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        Some(pairs.join("; "))
    }
}

/// One simulated browser: a client plus its own cookie jar.
#[derive(Debug)]
pub struct User {
    pub client: Client,
    pub jar: CookieJar,
}

impl User {
    pub fn new(client: Client) -> User {
        User {
            client,
            jar: CookieJar::new(),
        }
    }
    /// Send `req` with the jar's cookies; store the response's cookies.
    pub fn send(&mut self, req: Request) -> io::Result<Response> {
        let req = match self.jar.header() {
            Some(c) => req.header("Cookie", &c),
            None => req,
        };
        let resp = self.client.try_send(&req)?;
        self.jar.store(&resp);
        Ok(resp)
    }
    /// `GET path` with the jar's cookies.
    pub fn get(&mut self, path: &str) -> io::Result<Response> {
        self.send(Request::get(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(headers: &[(&str, &str)]) -> Response {
        Response {
            status: 200,
            headers: headers
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            body: Vec::new(),
        }
    }

    #[test]
    fn set_cookie_parsing() {
        let c = SetCookie::parse(
            "berth=v1.k1.b1.123.abc; Max-Age=86400; Path=/; HttpOnly; SameSite=Lax",
        )
        .unwrap();
        assert_eq!(
            (c.name.as_str(), c.value.as_str()),
            ("berth", "v1.k1.b1.123.abc")
        );
        assert_eq!(c.attr("max-age"), Some("86400"));
        assert_eq!(c.attr("httponly"), Some(""));
        assert_eq!(c.attr("samesite"), Some("Lax"));
        assert_eq!(c.attr("secure"), None);
    }

    #[test]
    fn jar_stores_replaces_and_deletes() {
        let mut jar = CookieJar::new();
        assert_eq!(jar.header(), None);
        jar.store(&resp(&[
            ("Set-Cookie", "a=1; Path=/"),
            ("set-cookie", "b=2"),
        ]));
        assert_eq!(jar.header().as_deref(), Some("a=1; b=2"));
        jar.store(&resp(&[
            ("Set-Cookie", "a=3"),
            ("Set-Cookie", "b=; Max-Age=0"),
        ]));
        assert_eq!(jar.header().as_deref(), Some("a=3"));
    }

    #[test]
    fn request_encoding() {
        let c = Client::new("127.0.0.1:1".parse().unwrap()).fresh_connections();
        let raw = c.encode(&Request::new("POST", "/x").header("X-A", "1").body("hi"));
        assert_eq!(
            String::from_utf8(raw).unwrap(),
            "POST /x HTTP/1.1\r\nHost: 127.0.0.1:1\r\nX-A: 1\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
        );
    }
}
