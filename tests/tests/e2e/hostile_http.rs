//! Hostile HTTP at the front door, sent as raw bytes over TCP: malformed framing, invalid
//! bytes, oversized heads, hop-by-hop headers, spoofed forwarding headers and slow clients.
//! Every refusal is a 4xx written by the gateway, and nothing refused reaches a backend.
use berth_tests::{config, Backend, Gateway};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn start(limits: Option<&str>) -> (Vec<Backend>, Gateway) {
    let backends = Backend::start_many(2);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let mut yaml = config::app_config(&[config::header_plugin("X-Session-Id")], &specs);
    if let Some(l) = limits {
        yaml = config::set(&yaml, "limits", l);
    }
    (backends, Gateway::start(&yaml))
}

/// Send `bytes` on a fresh connection and read until the gateway closes it (or 10 s pass).
fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect to the gateway");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The gateway may answer and close before reading everything: ignore write errors.
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// The status code of the first response in `raw`.
fn status(raw: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(raw);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

fn total_count(backends: &[Backend]) -> u64 {
    backends.iter().map(Backend::count).sum()
}

/// A request the gateway must serve (so a test can tell it is still healthy).
fn still_serves(gw: &Gateway) {
    let raw = exchange(
        gw.addr,
        b"GET /ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status(&raw), Some(200), "{}", String::from_utf8_lossy(&raw));
}

#[test]
fn malformed_requests_get_a_4xx_and_never_reach_a_backend() {
    let (backends, gw) = start(None);
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(20_000));
    let huge_target = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(1_100_000));
    let many = |n: usize| {
        let fields: String = (0..n).map(|i| format!("X-F{i}: v\r\n")).collect();
        format!("GET / HTTP/1.1\r\nHost: t\r\n{fields}\r\n")
    };
    let big_cookie = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nCookie: a={}\r\n\r\n",
        "c".repeat(100_000)
    );
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "Transfer-Encoding and Content-Length",
            b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n".to_vec(),
            400,
        ),
        (
            "Content-Length then Transfer-Encoding",
            b"POST / HTTP/1.1\r\nHost: t\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            400,
        ),
        (
            "two different Content-Lengths",
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde".to_vec(),
            400,
        ),
        (
            "a Content-Length list that disagrees",
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4, 5\r\n\r\nabcde".to_vec(),
            400,
        ),
        (
            "a non-numeric Content-Length",
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4x\r\n\r\nabcd".to_vec(),
            400,
        ),
        (
            "chunked is not the last coding",
            b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n".to_vec(),
            400,
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            b"POST / HTTP/1.0\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            400,
        ),
        (
            "a NUL byte in a header value",
            b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n".to_vec(),
            400,
        ),
        (
            "a control byte in a header value",
            b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x01b\r\n\r\n".to_vec(),
            400,
        ),
        (
            "a space in a header name",
            b"GET / HTTP/1.1\r\nHost: t\r\nBad Name: x\r\n\r\n".to_vec(),
            400,
        ),
        (
            "a header line without a colon",
            b"GET / HTTP/1.1\r\nHost: t\r\nnocolon\r\n\r\n".to_vec(),
            400,
        ),
        (
            "whitespace before the colon",
            b"GET / HTTP/1.1\r\nHost : t\r\n\r\n".to_vec(),
            400,
        ),
        (
            "a bare CR inside a value",
            b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\rb\r\n\r\n".to_vec(),
            400,
        ),
        (
            "two different Host headers",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(),
            400,
        ),
        (
            "a garbage request line",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(),
            400,
        ),
        (
            "Connection nominating X-Forwarded-For",
            b"GET / HTTP/1.1\r\nHost: t\r\nConnection: X-Forwarded-For\r\n\r\n".to_vec(),
            400,
        ),
        ("a 20 kB request target", long_target.into_bytes(), 414),
        ("a 1.1 MB request target", huge_target.into_bytes(), 400),
        ("150 header fields", many(150).into_bytes(), 431),
        ("300 header fields", many(300).into_bytes(), 400),
        ("a 100 kB cookie", big_cookie.into_bytes(), 431),
    ];
    let mut failures = Vec::new();
    for (what, bytes, want) in &cases {
        let raw = exchange(gw.addr, bytes);
        let got = status(&raw);
        if got != Some(*want) {
            let head: String = String::from_utf8_lossy(&raw).chars().take(200).collect();
            failures.push(format!("{what}: want {want}, got {got:?}: {head:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n--- log ---\n{}",
        failures.join("\n"),
        gw.log_tail(40)
    );
    assert_eq!(
        total_count(&backends),
        0,
        "a refused request reached a backend"
    );
    let refused = |why: &str| gw.metric("berth_requests_refused_total", &[("why", why)]);
    assert_eq!(refused("te_and_cl"), 2.0);
    assert_eq!(refused("uri_too_long"), 1.0);
    assert_eq!(refused("too_many_headers"), 1.0);
    assert_eq!(refused("headers_too_large"), 1.0);
    still_serves(&gw);
    assert!(!gw.log().contains("panicked"), "{}", gw.log_tail(40));
}

#[test]
fn berths_own_limits_answer_431_and_414_with_a_reason() {
    let limits = "{max_header_bytes: 4096, max_headers: 20, max_uri_bytes: 1024}";
    let (backends, gw) = start(Some(limits));
    let get = |target: &str, extra: &str| {
        let req = format!("GET {target} HTTP/1.1\r\nHost: t\r\n{extra}Connection: close\r\n\r\n");
        exchange(gw.addr, req.as_bytes())
    };
    let text = |raw: &[u8]| String::from_utf8_lossy(raw).into_owned();
    // Just under each limit: served.
    let ok_target = format!("/{}", "u".repeat(1000));
    assert_eq!(status(&get(&ok_target, "")), Some(200));
    let fields: String = (0..17).map(|i| format!("X-F{i}: v\r\n")).collect();
    assert_eq!(status(&get("/", &fields)), Some(200));
    let cookie = format!("Cookie: a={}\r\n", "c".repeat(3500));
    assert_eq!(status(&get("/", &cookie)), Some(200));
    let served = total_count(&backends);
    assert_eq!(served, 3);

    let raw = get(&format!("/{}", "u".repeat(1100)), "");
    assert_eq!(status(&raw), Some(414), "{}", text(&raw));
    assert!(text(&raw).contains("request target too long"));
    let fields: String = (0..25).map(|i| format!("X-F{i}: v\r\n")).collect();
    let raw = get("/", &fields);
    assert_eq!(status(&raw), Some(431), "{}", text(&raw));
    assert!(text(&raw).contains("too many request header fields"));
    let cookie = format!("Cookie: a={}\r\n", "c".repeat(5000));
    let raw = get("/", &cookie);
    assert_eq!(status(&raw), Some(431), "{}", text(&raw));
    assert!(text(&raw).contains("request header fields too large"));
    let many_cookies: String = (0..8)
        .map(|i| format!("Cookie: c{i}={}\r\n", "x".repeat(600)))
        .collect();
    assert_eq!(status(&get("/", &many_cookies)), Some(431));
    assert_eq!(
        total_count(&backends),
        served,
        "a refused request reached a backend"
    );
    let refused = |why: &str| gw.metric("berth_requests_refused_total", &[("why", why)]);
    assert_eq!(refused("uri_too_long"), 1.0);
    assert_eq!(refused("too_many_headers"), 1.0);
    assert_eq!(refused("headers_too_large"), 2.0);
}

#[test]
fn hop_by_hop_headers_are_stripped_and_forwarding_headers_are_berths() {
    let (backends, gw) = start(None);
    let req = b"GET /__echo HTTP/1.1\r\nHost: app.example\r\n\
        Connection: close, X-Private-Hop\r\nX-Private-Hop: secret\r\n\
        Keep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: X-T\r\nUpgrade: h2c\r\n\
        Proxy-Connection: keep-alive\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\n\
        HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\
        X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\n\
        X-Berth-Affinity: sticky\r\nX-Berth-Previous-Backend: b9\r\nX-End-To-End: kept\r\n\r\n";
    let raw = exchange(gw.addr, req);
    let text = String::from_utf8_lossy(&raw).into_owned();
    assert_eq!(status(&raw), Some(200), "{text}");
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .to_ascii_lowercase();
    let seen = |name: &str| -> Vec<String> {
        body.lines()
            .filter_map(|l| l.strip_prefix(&format!("{name}: ")))
            .map(str::to_string)
            .collect()
    };
    for hop in [
        "x-private-hop",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-connection",
        "proxy-authorization",
        "http2-settings",
    ] {
        assert!(seen(hop).is_empty(), "{hop} reached the backend:\n{body}");
    }
    assert!(
        seen("connection")
            .iter()
            .all(|v| !v.contains("x-private-hop")),
        "{body}"
    );
    assert_eq!(seen("x-end-to-end"), vec!["kept"], "{body}");
    // Appended: the client's value, then the address Berth saw.
    assert_eq!(
        seen("x-forwarded-for"),
        vec!["6.6.6.6, 127.0.0.1"],
        "{body}"
    );
    assert_eq!(seen("x-forwarded-proto"), vec!["http"], "{body}");
    // Host goes through unchanged, so Berth sends no X-Forwarded-Host and drops the client's.
    assert!(seen("x-forwarded-host").is_empty(), "{body}");
    assert_eq!(seen("host"), vec!["app.example"], "{body}");
    assert_eq!(seen("x-berth-affinity"), vec!["ring"], "{body}");
    assert!(seen("x-berth-previous-backend").is_empty(), "{body}");

    // A WebSocket handshake keeps its upgrade fields (normalised), nothing else.
    let ws = b"GET /__echo HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, X-Private-Hop\r\n\
        X-Private-Hop: s\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";
    let raw = exchange(gw.addr, ws);
    let body = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    assert!(body.contains("\nupgrade: websocket\n"), "{body}");
    assert!(body.contains("\nconnection: upgrade\n"), "{body}");
    assert!(!body.contains("x-private-hop"), "{body}");
    assert_eq!(total_count(&backends), 2);
}

/// Read from `s` until the peer closes it (EOF or reset); the bytes and how long it took, or
/// `None` when it is still open after `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> Option<(Vec<u8>, Duration)> {
    let start = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while start.elapsed() < within {
        match s.read(&mut buf) {
            Ok(0) => return Some((out, start.elapsed())),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return Some((out, start.elapsed())),
        }
    }
    None
}

#[test]
fn slow_clients_are_cut_by_the_header_body_and_idle_timeouts() {
    let limits = "{header_timeout: 1s, body_timeout: 1s, keepalive_timeout: 2s}";
    let (backends, gw) = start(Some(limits));
    let bound = Duration::from_secs(15);

    // Slowloris: a head trickled one field every 200 ms never completes.
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").unwrap();
    let mut w = s.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for i in 0..100 {
            std::thread::sleep(Duration::from_millis(200));
            if w.write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
                .is_err()
            {
                return i;
            }
        }
        100
    });
    let cut = closed_within(&mut s, bound);
    let sent = trickle.join().unwrap();
    assert!(
        cut.is_some(),
        "a trickled head was not cut within {bound:?}"
    );
    assert!(sent < 100, "the trickle was never refused");

    // A trickled body: the head, 10 of 100 bytes, then silence.
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.write_all(b"POST /slow-body HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789")
        .unwrap();
    let (raw, _) = closed_within(&mut s, bound).expect("a stalled body was not cut");
    assert_eq!(status(&raw), Some(408), "{}", String::from_utf8_lossy(&raw));

    // Idle keep-alive: one request, then silence, whatever Keep-Alive the client asked for.
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.write_all(b"GET /idle HTTP/1.1\r\nHost: t\r\nKeep-Alive: timeout=3600\r\n\r\n")
        .unwrap();
    let (raw, took) = closed_within(&mut s, bound).expect("an idle keep-alive connection stayed");
    assert_eq!(status(&raw), Some(200), "{}", String::from_utf8_lossy(&raw));
    assert!(
        took >= Duration::from_secs(1),
        "closed after {took:?}: too early"
    );

    // A connection that never sends a byte.
    let mut s = TcpStream::connect(gw.addr).unwrap();
    assert!(
        closed_within(&mut s, bound).is_some(),
        "a silent connection stayed"
    );

    // None of the slow heads reached a backend (the body and idle requests did).
    assert_eq!(backends.iter().map(|b| b.count_path("/")).sum::<u64>(), 0);
    assert_eq!(
        backends.iter().map(|b| b.count_path("/idle")).sum::<u64>(),
        1
    );
    still_serves(&gw);
}
