//! `berth-demo-backend <name> <listen-addr>` — a tiny HTTP/1.1 backend for `make run` and the
//! end-to-end tests.
//!
//! Prints `READY <bound-addr>` once listening (the address may use port 0). Every response is
//! `200` with body `<name>\n` and headers that echo what Berth sent upstream:
//! `X-Backend`, `X-Seen-Affinity` (`X-Berth-Affinity`), `X-Seen-Forwarded-For`,
//! `X-Seen-Previous-Backend` (`X-Berth-Previous-Backend`), `X-Seen-Backup` (`X-Berth-Backup`),
//! `X-Seen-Forwarded-Proto`, `X-Seen-Forwarded-Host`, `X-Seen-Peer` (the TCP peer),
//! `X-Seen-Idempotency-Key`, `X-Seen-Conn` (the TCP peer's ip:port: one value per upstream
//! connection) and `X-Seen-Body-Length` (request body bytes received; bodies
//! may be `Content-Length` or chunked); a missing header reads `-`. Connections are kept alive.
//!
//! Special paths (answered here, for tests and health checkers):
//! * `GET /__count` — requests received so far, not counting the special paths below;
//!   `GET /__count?method=POST` — of those, the ones with that method;
//!   `GET /__count?path=/x` — requests received for path `/x` (any path, `/__health` too);
//!   `GET /__count?connections` — connections that carried at least one counted request;
//!   `GET /__count?bad` — requests refused with 400 (a malformed request line or framing);
//!   `GET /__count?max_in_flight` — the most counted requests it was answering at once.
//! * `/__slow?ms=N` (counted) answers after N milliseconds (at most 60 s).
//! * `GET /__health` — `200 ok` while healthy, `503 failing` after `POST /__health/fail`;
//!   `POST /__health/slow?ms=N` makes it answer only after N ms (default 1,000, at most 60 s);
//!   `POST /__health/ok` makes it
//!   healthy and prompt again (the toggles answer `204`).
//! * `/__drop`, or any request with `X-Demo-Drop: 1` or `X-Demo-Drop: <list naming this
//!   backend>` (e.g. `b1,b3`): the request (and its body) is read and counted, then the
//!   connection is closed without any response.
//! * `/set-cookie?name=N&value=V` adds `Set-Cookie: N=V; Path=/`.
//! * `/__echo` (counted like any request) answers with the request head exactly as received
//!   (request line, then one `name: value` line per field, in order) as its body.
//! * `GET /ws` with `Upgrade: websocket` (counted): a WebSocket echo that sends the backend's
//!   name first (`berth_tests::websocket::serve_echo`); its `101` carries `X-Backend` and
//!   `X-Seen-*` headers of the request. `/ws?flood` floods the client instead.
//!   `GET /__count?ws` — sockets accepted so far; `GET /__count?ws_open` — open now.
//!   An upgrade request to any other path is answered as a plain request (refused: no `101`).
//! * A connection that opens with the HTTP/2 preface (h2c with prior knowledge) is a gRPC
//!   echo (`berth_tests::grpc`): unary and server-streaming calls, trailers; counted once per
//!   connection.
//! * `/__unasked101` (counted only by path) answers `101 Switching Protocols` to any request,
//!   then closes.
use berth_tests::http::{self, Head};
use std::collections::HashMap;
use std::io::{self, BufReader, BufWriter, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

struct State {
    name: String,
    /// Requests counted by plain `/__count`.
    requests: AtomicU64,
    /// Connections that carried at least one of those.
    connections: AtomicU64,
    /// Of those, per method (upper case).
    by_method: Mutex<HashMap<String, u64>>,
    /// Every request except `/__count` and the health toggles, per path (no query).
    by_path: Mutex<HashMap<String, u64>>,
    healthy: AtomicBool,
    /// Milliseconds a health check waits before its answer (0: none).
    slow_health: AtomicU64,
    /// Counted requests being answered now, and the most at once.
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    /// Requests refused with 400 (a malformed request line or framing).
    bad: AtomicU64,
    /// WebSockets accepted so far, and open now.
    ws_total: AtomicU64,
    ws_open: AtomicU64,
}

fn bump(map: &Mutex<HashMap<String, u64>>, key: &str) {
    let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
    *m.entry(key.to_string()).or_insert(0) += 1;
}

fn get(map: &Mutex<HashMap<String, u64>>, key: &str) -> u64 {
    let m = map.lock().unwrap_or_else(|p| p.into_inner());
    m.get(key).copied().unwrap_or(0)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: berth-demo-backend <name> <listen-addr>   (e.g. demo1 127.0.0.1:9001)");
        return ExitCode::from(2);
    }
    // std's TcpListener sets SO_REUSEADDR on Unix, so a backend can be restarted on the address
    // of one that just died.
    let listener = match TcpListener::bind(&args[2]) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("berth-demo-backend: cannot listen on {}: {e}", args[2]);
            return ExitCode::FAILURE;
        }
    };
    let bound = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("berth-demo-backend: local_addr: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = io::stdout().lock();
    if writeln!(out, "READY {bound}")
        .and_then(|_| out.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    drop(out);
    let state = Arc::new(State {
        name: args[1].clone(),
        requests: AtomicU64::new(0),
        connections: AtomicU64::new(0),
        by_method: Mutex::new(HashMap::new()),
        by_path: Mutex::new(HashMap::new()),
        healthy: AtomicBool::new(true),
        slow_health: AtomicU64::new(0),
        in_flight: AtomicU64::new(0),
        max_in_flight: AtomicU64::new(0),
        bad: AtomicU64::new(0),
        ws_total: AtomicU64::new(0),
        ws_open: AtomicU64::new(0),
    });
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let state = Arc::clone(&state);
        std::thread::spawn(move || {
            // A client that goes away mid-request is not this server's problem.
            let _ = serve(stream, &state);
        });
    }
    ExitCode::SUCCESS
}

/// True when the connection opens with the HTTP/2 preface (waits for its first 24 bytes, or
/// for the first one that departs from it).
fn opens_with_h2_preface(stream: &TcpStream) -> io::Result<bool> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut buf = [0u8; 24];
    loop {
        let n = stream.peek(&mut buf)?;
        if n == 0 || buf[..n] != PREFACE[..n] {
            return Ok(false);
        }
        if n == PREFACE.len() {
            return Ok(true);
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Serve one connection until the client closes it or asks to.
fn serve(stream: TcpStream, state: &State) -> io::Result<()> {
    stream.set_nodelay(true)?;
    if opens_with_h2_preface(&stream)? {
        state.requests.fetch_add(1, Ordering::SeqCst);
        berth_tests::grpc::serve_h2c(stream, state.name.clone());
        return Ok(());
    }
    let peer = stream.peer_addr()?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = BufWriter::new(stream);
    let conn_counted = std::cell::Cell::new(false);
    loop {
        let Some(head) = http::read_head(&mut reader)? else {
            return Ok(());
        };
        let mut parts = head.start_line.split_whitespace();
        let (Some(method), Some(target), Some(version)) =
            (parts.next(), parts.next(), parts.next())
        else {
            state.bad.fetch_add(1, Ordering::SeqCst);
            return bad_request(&mut writer, "bad request line");
        };
        let kind = match http::request_body_kind(&head.headers) {
            Ok(k) => k,
            Err(e) => {
                state.bad.fetch_add(1, Ordering::SeqCst);
                return bad_request(&mut writer, &e.to_string());
            }
        };
        let body = http::read_body(&mut reader, kind)?;
        let keep_alive = if version.eq_ignore_ascii_case("HTTP/1.0") {
            http::has_token(&head.headers, "connection", "keep-alive")
        } else {
            !http::has_token(&head.headers, "connection", "close")
        };
        let req = Req {
            method,
            target,
            head: &head,
            body_len: body.len(),
            peer,
            keep_alive,
            conn_counted: &conn_counted,
        };
        let path = target.split('?').next().unwrap_or(target);
        if path == "/ws" && http::has_token(&head.headers, "upgrade", "websocket") {
            state.requests.fetch_add(1, Ordering::SeqCst);
            bump(&state.by_path, path);
            let early = reader.buffer().to_vec();
            let stream = writer.into_inner().map_err(|e| e.into_error())?;
            return websocket(stream, early, state, &head, target.ends_with("?flood"));
        }
        if path == "/__unasked101" {
            bump(&state.by_path, path);
            writer.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            )?;
            return writer.flush();
        }
        match respond(state, &req) {
            Some(response) => {
                writer.write_all(&response)?;
                writer.flush()?;
            }
            // Drop: close without a byte of response (RST or FIN, whichever the OS sends).
            None => return Ok(()),
        }
        if !keep_alive {
            return Ok(());
        }
    }
}

/// Accept a WebSocket on `stream` and echo on it until it ends.
fn websocket(
    mut stream: TcpStream,
    early: Vec<u8>,
    state: &State,
    head: &Head,
    flood: bool,
) -> io::Result<()> {
    let key = head.header("sec-websocket-key").unwrap_or("");
    let seen = |name: &str| head.header(name).unwrap_or("-").to_string();
    let extra = format!(
        "X-Backend: {}\r\nX-Seen-Affinity: {}\r\nX-Seen-Previous-Backend: {}\r\n\
         X-Seen-Forwarded-Proto: {}\r\n",
        state.name,
        seen("x-berth-affinity"),
        seen("x-berth-previous-backend"),
        seen("x-forwarded-proto"),
    );
    stream.write_all(berth_tests::websocket::switching_protocols(key, &extra).as_bytes())?;
    state.ws_total.fetch_add(1, Ordering::SeqCst);
    state.ws_open.fetch_add(1, Ordering::SeqCst);
    berth_tests::websocket::serve_echo(&mut stream, early, &state.name, flood);
    state.ws_open.fetch_sub(1, Ordering::SeqCst);
    Ok(())
}

fn bad_request(w: &mut impl Write, why: &str) -> io::Result<()> {
    let body = format!("{why}\n");
    write!(
        w,
        "HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    w.flush()
}

struct Req<'a> {
    method: &'a str,
    target: &'a str,
    head: &'a Head,
    body_len: usize,
    peer: SocketAddr,
    keep_alive: bool,
    /// Set once this connection carried a counted request.
    conn_counted: &'a std::cell::Cell<bool>,
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// A small response of the backend's own (no echo headers).
fn plain(status: &str, body: &str, keep_alive: bool) -> Vec<u8> {
    let close = if keep_alive {
        ""
    } else {
        "Connection: close\r\n"
    };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{close}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The response bytes, or `None` to drop the connection without answering.
fn respond(state: &State, req: &Req<'_>) -> Option<Vec<u8>> {
    let (path, query) = req.target.split_once('?').unwrap_or((req.target, ""));
    let method = req.method.to_ascii_uppercase();
    match path {
        "/__count" => {
            let n = if let Some(m) = query_param(query, "method") {
                get(&state.by_method, &m.to_ascii_uppercase())
            } else if let Some(p) = query_param(query, "path") {
                get(&state.by_path, p)
            } else if query == "connections" {
                state.connections.load(Ordering::SeqCst)
            } else if query == "max_in_flight" {
                state.max_in_flight.load(Ordering::SeqCst)
            } else if query == "bad" {
                state.bad.load(Ordering::SeqCst)
            } else if query == "ws" {
                state.ws_total.load(Ordering::SeqCst)
            } else if query == "ws_open" {
                state.ws_open.load(Ordering::SeqCst)
            } else {
                state.requests.load(Ordering::SeqCst)
            };
            return Some(plain("200 OK", &format!("{n}\n"), req.keep_alive));
        }
        "/__health/fail" | "/__health/ok" | "/__health/slow" if method == "POST" => {
            state
                .healthy
                .store(path != "/__health/fail", Ordering::SeqCst);
            let slow = if path == "/__health/slow" {
                query_param(query, "ms")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1000u64)
                    .min(60_000)
            } else {
                0
            };
            state.slow_health.store(slow, Ordering::SeqCst);
            return Some(plain("204 No Content", "", req.keep_alive));
        }
        "/__health" => {
            bump(&state.by_path, path);
            let slow = state.slow_health.load(Ordering::SeqCst);
            if slow > 0 {
                std::thread::sleep(std::time::Duration::from_millis(slow));
            }
            return Some(if state.healthy.load(Ordering::SeqCst) {
                plain("200 OK", "ok\n", req.keep_alive)
            } else {
                plain("503 Service Unavailable", "failing\n", req.keep_alive)
            });
        }
        _ => {}
    }
    state.requests.fetch_add(1, Ordering::SeqCst);
    if !req.conn_counted.replace(true) {
        state.connections.fetch_add(1, Ordering::SeqCst);
    }
    bump(&state.by_method, &method);
    bump(&state.by_path, path);
    let drop_listed = req.head.header("x-demo-drop").is_some_and(|v| {
        v.split(',')
            .map(str::trim)
            .any(|n| n == "1" || n == state.name)
    });
    if path == "/__drop" || drop_listed {
        return None;
    }
    if path == "/__slow" {
        let ms: u64 = query_param(query, "ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(ms.min(60_000)));
        state.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
    let head = req.head;
    let body = if path == "/__echo" {
        let mut b = format!("{}\n", head.start_line);
        for (n, v) in &head.headers {
            b.push_str(&format!("{n}: {v}\n"));
        }
        b
    } else {
        format!("{}\n", state.name)
    };
    let seen = |name: &str| head.header(name).unwrap_or("-").to_string();
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nX-Backend: {}\r\nX-Seen-Affinity: {}\r\nX-Seen-Forwarded-For: {}\r\n\
         X-Seen-Previous-Backend: {}\r\nX-Seen-Backup: {}\r\nX-Seen-Forwarded-Proto: {}\r\n\
         X-Seen-Forwarded-Host: {}\r\nX-Seen-Peer: {}\r\nX-Seen-Idempotency-Key: {}\r\n\
         X-Seen-Body-Length: {}\r\nX-Seen-Conn: {}\r\nContent-Type: text/plain\r\n\
         Content-Length: {}\r\n",
        state.name,
        seen("x-berth-affinity"),
        seen("x-forwarded-for"),
        seen("x-berth-previous-backend"),
        seen("x-berth-backup"),
        seen("x-forwarded-proto"),
        seen("x-forwarded-host"),
        req.peer.ip(),
        seen("idempotency-key"),
        req.body_len,
        req.peer,
        body.len(),
    );
    if path == "/set-cookie" {
        if let (Some(n), Some(v)) = (query_param(query, "name"), query_param(query, "value")) {
            out.push_str(&format!("Set-Cookie: {n}={v}; Path=/\r\n"));
        }
    }
    if !req.keep_alive {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if method != "HEAD" {
        bytes.extend_from_slice(body.as_bytes());
    }
    Some(bytes)
}
