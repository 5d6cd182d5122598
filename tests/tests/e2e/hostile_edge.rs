//! Issue 14, stage 4: bad input at the edge. A garbage TLS client hello, plain HTTP to a TLS
//! port, a client hello cut short; HTTP/2 protocol errors (DATA on stream 0, a header block
//! that does not decode, an oversized frame) and floods (CONTINUATION frames, streams reset as
//! soon as opened): each gets a clear close (a TLS alert, a GOAWAY with its error code) and is
//! counted, the process keeps serving, and a client on another connection sees nothing. A
//! flood of SETTINGS or PING frames (no protocol error: each is a valid frame the server must
//! ACK) is cut by Berth's control-frame budget and counted as `control_flood`, whether or not
//! the client reads its ACKs.
use berth_tests::h2::{runtime, H2};
use berth_tests::tls::{self, TestCa};
use berth_tests::{config, free_addr, sessions, Backend, Gateway};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What is sent, and the GOAWAY error code and counted reason it must get (`None`: any error).
type Case = (&'static str, Vec<u8>, Option<(u32, &'static str)>);

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let n = payload.len();
    let mut f = vec![(n >> 16) as u8, (n >> 8) as u8, n as u8, kind, flags];
    f.extend(stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HEADERS (END_STREAM | END_HEADERS) for `GET /` as HPACK indexed fields + authority literal.
fn get(stream: u32) -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x84, 0x41, 0x01, b'x'];
    block.shrink_to_fit();
    frame(0x1, 0x5, stream, &block)
}

fn rst(stream: u32) -> Vec<u8> {
    frame(0x3, 0, stream, &8u32.to_be_bytes())
}

/// A raw h2c connection: the preface and an empty SETTINGS sent.
fn h2c_raw(addr: SocketAddr) -> TcpStream {
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    c.write_all(PREFACE).expect("preface");
    c.write_all(&frame(0x4, 0, 0, &[])).expect("settings");
    c
}

/// Read frames until a GOAWAY (its error code) or the end of the connection (`None`).
fn goaway(c: &mut TcpStream) -> Option<u32> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        while buf.len() >= 9 {
            let len = usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            if buf[3] == 0x7 && len >= 8 {
                return Some(u32::from_be_bytes([buf[13], buf[14], buf[15], buf[16]]));
            }
            buf.drain(..9 + len);
        }
        match c.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Read frames until one that `wanted(type, flags)`: its payload; `None` when the connection
/// ends first or sends a GOAWAY.
fn next_frame(c: &mut TcpStream, wanted: impl Fn(u8, u8) -> bool) -> Option<Vec<u8>> {
    loop {
        let mut head = [0u8; 9];
        c.read_exact(&mut head).ok()?;
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        c.read_exact(&mut payload).ok()?;
        if head[3] == 0x7 {
            return None;
        }
        if wanted(head[3], head[4]) {
            return Some(payload);
        }
    }
}

struct Edge {
    gw: Gateway,
    tls_addr: SocketAddr,
    ca: TestCa,
    _dir: tempfile::TempDir,
}

fn edge(backends: &[Backend]) -> Edge {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new("berth hostile test CA");
    let cert = ca.leaf(&["edge.test"]).write(dir.path(), "edge");
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let tls_addr = free_addr();
    let yaml = config::header_app(
        &specs,
        &[
            ("limits.header_timeout", "1s"),
            ("limits.keepalive_timeout", "3s"),
        ],
    );
    let yaml = tls::with_listeners(&yaml, &[tls::listener(tls_addr, &[&cert], "")]);
    let yaml = config::set(&yaml, "listeners.0.h2c", "true");
    Edge {
        gw: Gateway::start(&yaml),
        tls_addr,
        ca,
        _dir: dir,
    }
}

/// A client on its own connection, which must see nothing of the abuse: 20 requests over h2
/// (TLS) and 20 over h2c, all 200.
fn bystander(e: &Edge) {
    runtime().block_on(async {
        let tls = H2::tls(e.tls_addr, "edge.test", &e.ca.pem)
            .await
            .expect("h2 over TLS");
        let h2c = H2::h2c(e.gw.addr).await.expect("h2c");
        for i in 0..20 {
            for h2 in [&tls, &h2c] {
                let r = h2
                    .get("/", &[(sessions::HEADER, &format!("calm{i}"))])
                    .await;
                assert_eq!(r.map(|r| r.status), Ok(200), "a bystander's request {i}");
            }
        }
    });
}

/// Send `bytes` to the TLS port; what the server sent back before closing (`Ok`), or the
/// read error.
fn to_tls_port(addr: SocketAddr, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut c = TcpStream::connect(addr)?;
    c.set_read_timeout(Some(Duration::from_secs(30)))?;
    c.write_all(bytes)?;
    let mut got = Vec::new();
    c.read_to_end(&mut got).map(|_| got)
}

#[test]
fn bad_tls_input_is_closed_and_counted() {
    let backends = Backend::start_many(1);
    let e = edge(&backends);
    let listener = e.tls_addr.to_string();
    let failures = |reason: &str| {
        e.gw.metric(
            "berth_tls_handshake_failures_total",
            &[("listener", listener.as_str()), ("reason", reason)],
        )
    };
    let garbage: Vec<u8> = (0..2000u32).map(|i| (i * 7919 % 251) as u8).collect();
    let got = to_tls_port(e.tls_addr, &garbage);
    assert!(got.is_ok(), "garbage: not closed cleanly: {got:?}");
    let got = to_tls_port(e.tls_addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        got.as_ref().is_ok_and(|b| !b.starts_with(b"HTTP/")),
        "plain HTTP: {got:?}"
    );
    // A client hello cut short, then silence: the handshake deadline (header_timeout, 1 s).
    let hello_start = [
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    assert!(to_tls_port(e.tls_addr, &hello_start).is_ok(), "a cut hello");
    e.gw.wait_metric(
        "berth_tls_handshake_failures_total",
        &[("listener", listener.as_str()), ("reason", "timeout")],
        |v| v >= 1.0,
    );
    assert_eq!(failures("not_tls"), 2.0);
    bystander(&e);
}

#[test]
fn http2_protocol_errors_get_a_goaway_and_are_counted() {
    let backends = Backend::start_many(1);
    let e = edge(&backends);
    let errors = |reason: &str| {
        e.gw.metric("berth_http2_errors_total", &[("reason", reason)])
    };
    // A CONTINUATION flood: a header block that never ends, past the header list limit.
    let mut continuation = frame(0x1, 0x1, 1, &[0x82]);
    for _ in 0..8 {
        continuation.extend(frame(0x9, 0, 1, &[0x40; 16_000]));
    }
    let cases: [Case; 4] = [
        (
            "DATA on stream 0",
            frame(0x0, 0, 0, b"x"),
            Some((1, "protocol_error")),
        ),
        // (h2 answers an undecodable HPACK block with PROTOCOL_ERROR.)
        (
            "a header block that does not decode",
            frame(0x1, 0x5, 1, &[0xbe]),
            Some((1, "protocol_error")),
        ),
        (
            "a frame over the maximum size",
            frame(0x0, 0, 1, &vec![0u8; 20_000]),
            Some((6, "frame_size_error")),
        ),
        // Any error code (h2 decides which), counted under it.
        ("a CONTINUATION flood", continuation, None),
    ];
    let all = || e.gw.metric("berth_http2_errors_total", &[]);
    for (what, bytes, want) in cases {
        let before = all();
        let mut c = h2c_raw(e.gw.addr);
        let _ = c.write_all(&bytes);
        let code = goaway(&mut c);
        match want {
            Some((want, reason)) => {
                assert_eq!(code, Some(want), "{what}");
                e.gw.wait_metric("berth_http2_errors_total", &[("reason", reason)], |v| {
                    v >= 1.0
                });
            }
            None => assert!(code.is_some_and(|c| c != 0), "{what}: {code:?}"),
        }
        e.gw.wait_metric("berth_http2_errors_total", &[], |v| v >= before + 1.0);
    }
    assert_eq!(errors("other"), 0.0);
    bystander(&e);
}

#[test]
fn reset_settings_and_ping_floods_are_cut_and_counted() {
    let backends = Backend::start_many(1);
    let e = edge(&backends);
    // Rapid reset: 2,000 streams opened and reset at once, in one write.
    let mut c = h2c_raw(e.gw.addr);
    let mut flood = Vec::new();
    for i in 0..2000u32 {
        flood.extend(get(2 * i + 1));
        flood.extend(rst(2 * i + 1));
    }
    let _ = c.write_all(&flood);
    assert_eq!(goaway(&mut c), Some(11), "rapid reset: ENHANCE_YOUR_CALM");
    e.gw.wait_metric(
        "berth_http2_errors_total",
        &[("reason", "enhance_your_calm")],
        |v| v >= 1.0,
    );
    let floods = |e: &Edge| {
        e.gw.metric("berth_http2_errors_total", &[("reason", "control_flood")])
    };
    assert_eq!(floods(&e), 0.0);
    // A SETTINGS flood from a client that reads no ACK: cut once over the budget (a burst of
    // 100, then 10 per second), long before 10,000 frames.
    let mut c = h2c_raw(e.gw.addr);
    c.set_write_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let settings = frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100]).repeat(1000);
    let mut sent = 0usize;
    while sent < 10_000_000 && c.write_all(&settings).is_ok() {
        sent += 1000;
    }
    assert!(
        sent < 10_000_000,
        "10M SETTINGS frames taken in without closing"
    );
    e.gw.wait_metric(
        "berth_http2_errors_total",
        &[("reason", "control_flood")],
        |v| v == 1.0,
    );
    // A PING flood from a client that reads every ACK: cut and counted the same.
    let mut c = h2c_raw(e.gw.addr);
    let reader = {
        let mut r = c.try_clone().expect("clone");
        std::thread::spawn(move || std::io::copy(&mut r, &mut std::io::sink()))
    };
    let pings = frame(0x6, 0, 0, &[1; 8]).repeat(50);
    let mut sent = 0usize;
    while sent < 1_000_000 && c.write_all(&pings).is_ok() {
        sent += 50;
    }
    assert!(sent < 1_000_000, "1M PINGs answered without closing");
    let _ = reader.join();
    e.gw.wait_metric(
        "berth_http2_errors_total",
        &[("reason", "control_flood")],
        |v| v == 2.0,
    );
    // A client that pings now and then is not cut: 30 PINGs, each after its ACK.
    let mut c = h2c_raw(e.gw.addr);
    for i in 0..30u8 {
        c.write_all(&frame(0x6, 0, 0, &[i; 8])).expect("ping");
        assert_eq!(
            next_frame(&mut c, |kind, flags| kind == 0x6 && flags & 1 == 1),
            Some(vec![i; 8]),
            "the ACK of ping {i}"
        );
    }
    c.write_all(&get(1)).expect("a request");
    assert!(
        next_frame(&mut c, |kind, _| kind == 0x1).is_some(),
        "the pinger's request is answered"
    );
    assert_eq!(floods(&e), 2.0);
    bystander(&e);
}

/// The slow-client guard on TLS connections: it sees the decrypted bytes, so a head trickled
/// after the handshake is cut by `limits.header_timeout` (1 s here) and a connection that
/// sends no request by `limits.keepalive_timeout` (3 s), as on a plain connection; a complete
/// request is answered.
#[test]
fn slow_clients_are_cut_on_tls_connections_too() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backends = Backend::start_many(1);
    let e = edge(&backends);
    runtime().block_on(async {
        for (what, bytes) in [
            ("a trickled head", &b"GET / HTTP/1.1\r\nHost: x\r\n"[..]),
            ("no request", b""),
        ] {
            let tcp = tokio::net::TcpStream::connect(e.tls_addr)
                .await
                .expect("connect");
            let mut tls = berth_tests::h2::tls_connect(tcp, "edge.test", &e.ca.pem, &[b"http/1.1"])
                .await
                .expect("handshake");
            tls.write_all(bytes).await.expect("write");
            let mut buf = [0u8; 256];
            let r = tokio::time::timeout(Duration::from_secs(30), tls.read(&mut buf)).await;
            match r {
                Ok(Ok(0)) | Ok(Err(_)) => {}
                other => panic!("{what}: the TLS connection was not closed: {other:?}"),
            }
        }
        let tcp = tokio::net::TcpStream::connect(e.tls_addr)
            .await
            .expect("connect");
        let mut tls = berth_tests::h2::tls_connect(tcp, "edge.test", &e.ca.pem, &[b"http/1.1"])
            .await
            .expect("handshake");
        tls.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(30), tls.read_to_end(&mut got)).await;
        assert!(
            got.starts_with(b"HTTP/1.1 200"),
            "{:?}",
            String::from_utf8_lossy(&got)
        );
    });
}
