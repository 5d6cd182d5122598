//! `berth-demo-backend <name> <listen-addr>` — a tiny HTTP/1.1 backend for `make run` and the
//! end-to-end tests.
//!
//! Prints `READY <bound-addr>` once listening (the address may use port 0). Every response is
//! `200` with body `<name>\n` and headers that echo what Berth sent upstream:
//! `X-Backend`, `X-Seen-Affinity` (`X-Berth-Affinity`), `X-Seen-Forwarded-For`,
//! `X-Seen-Previous-Backend` (`X-Berth-Previous-Backend`), `X-Seen-Backup` (`X-Berth-Backup`),
//! `X-Seen-Forwarded-Proto`, `X-Seen-Forwarded-Host`, `X-Seen-Peer` (the TCP peer) and
//! `X-Seen-Body-Length` (request body bytes received; bodies
//! may be `Content-Length` or chunked); a missing header reads `-`. Connections are kept alive.
//!
//! Special paths: `GET /__count` answers the number of requests received so far (not counting
//! `/__count` itself); `/set-cookie?name=N&value=V` adds `Set-Cookie: N=V; Path=/`.
use berth_tests::http::{self, Head};
use std::io::{self, BufReader, BufWriter, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

struct State {
    name: String,
    requests: AtomicU64,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: berth-demo-backend <name> <listen-addr>   (e.g. demo1 127.0.0.1:9001)");
        return ExitCode::from(2);
    }
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

/// Serve one connection until the client closes it or asks to.
fn serve(stream: TcpStream, state: &State) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let peer = stream.peer_addr()?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = BufWriter::new(stream);
    loop {
        let Some(head) = http::read_head(&mut reader)? else {
            return Ok(());
        };
        let mut parts = head.start_line.split_whitespace();
        let (Some(method), Some(target), Some(version)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return bad_request(&mut writer, "bad request line");
        };
        let kind = match http::request_body_kind(&head.headers) {
            Ok(k) => k,
            Err(e) => return bad_request(&mut writer, &e.to_string()),
        };
        let body = http::read_body(&mut reader, kind)?;
        let keep_alive = if version.eq_ignore_ascii_case("HTTP/1.0") {
            http::has_token(&head.headers, "connection", "keep-alive")
        } else {
            !http::has_token(&head.headers, "connection", "close")
        };
        let response = respond(state, method, target, &head, body.len(), peer, keep_alive);
        writer.write_all(&response)?;
        writer.flush()?;
        if !keep_alive {
            return Ok(());
        }
    }
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

fn respond(
    state: &State,
    method: &str,
    target: &str,
    head: &Head,
    body_len: usize,
    peer: SocketAddr,
    keep_alive: bool,
) -> Vec<u8> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let body = if path == "/__count" {
        format!("{}\n", state.requests.load(Ordering::SeqCst))
    } else {
        state.requests.fetch_add(1, Ordering::SeqCst);
        format!("{}\n", state.name)
    };
    let seen = |name: &str| head.header(name).unwrap_or("-").to_string();
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nX-Backend: {}\r\nX-Seen-Affinity: {}\r\nX-Seen-Forwarded-For: {}\r\n\
         X-Seen-Previous-Backend: {}\r\nX-Seen-Backup: {}\r\nX-Seen-Forwarded-Proto: {}\r\n\
         X-Seen-Forwarded-Host: {}\r\nX-Seen-Peer: {}\r\n\
         X-Seen-Body-Length: {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n",
        state.name,
        seen("x-berth-affinity"),
        seen("x-forwarded-for"),
        seen("x-berth-previous-backend"),
        seen("x-berth-backup"),
        seen("x-forwarded-proto"),
        seen("x-forwarded-host"),
        peer.ip(),
        body_len,
        body.len(),
    );
    if path == "/set-cookie" {
        let param = |key: &str| {
            query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v)
        };
        if let (Some(n), Some(v)) = (param("name"), param("value")) {
            out.push_str(&format!("Set-Cookie: {n}={v}; Path=/\r\n"));
        }
    }
    if !keep_alive {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !method.eq_ignore_ascii_case("HEAD") {
        bytes.extend_from_slice(body.as_bytes());
    }
    bytes
}
