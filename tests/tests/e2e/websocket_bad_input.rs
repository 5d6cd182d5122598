//! Issue 15, bad input around WebSockets: each case ends with an answer or a close, is counted,
//! and no other backend sees a byte of it.
//!
//! * an upgrade request the backend refuses (it answers 200, no 101): the client gets the 200,
//!   `berth_websocket_upgrades_failed_total{why="refused"}`; WebSocket frames sent after it
//!   anyway are not HTTP and are refused by Berth (400), reaching no backend;
//! * a backend that answers 101 to a request that asked for no upgrade: 502,
//!   `why="unasked_101"`;
//! * a client that never reads while its backend floods it: closed after
//!   `websocket.send_timeout`, `berth_websockets_closed_total{why="send_timeout"}`, and the
//!   backend's socket ends;
//! * a frame after the close frame: the backend ends the socket, the client gets the close
//!   frame and the end of the connection, `why="closed"`.
use berth_tests::websocket::{raw_upgrade_request, read_until};
use berth_tests::{config, sessions, wait_for, Backend, Gateway};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const UP: (&str, &str) = ("upstream", "app");
const WAIT: Duration = Duration::from_secs(30);

/// One backend that gets session `s-bad`, two bystanders; every request counted per backend.
fn setup(patches: &[(&str, &str)]) -> (Vec<Backend>, Gateway) {
    let backends = Backend::start_many(3);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let gw = Gateway::start(&config::header_app(&specs, patches));
    (backends, gw)
}

fn connect(gw: &Gateway) -> TcpStream {
    let s = TcpStream::connect(gw.addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s
}

/// Requests each backend served so far.
fn counts(backends: &[Backend]) -> Vec<u64> {
    backends.iter().map(Backend::count).collect()
}

/// Which backend a session's requests reach, and that only it saw `extra` more requests.
fn only_home_grew(backends: &[Backend], before: &[u64], home: &str, extra: u64) {
    for (b, n) in backends.iter().zip(before) {
        let want = if b.name == home { n + extra } else { *n };
        assert_eq!(b.count(), want, "requests at {}", b.name);
    }
}

fn home_of(gw: &Gateway, id: &str) -> String {
    let r = gw.client().send(&sessions::request(id, "/"));
    assert_eq!(r.status, 200, "{}", r.summary());
    r.backend().to_string()
}

/// A masked client frame (mask 0) of `opcode` with `payload`.
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    f.extend_from_slice(payload);
    f
}

#[test]
fn an_upgrade_the_backend_refuses_is_answered_and_counted() {
    let (backends, gw) = setup(&[]);
    let home = home_of(&gw, "s-bad");
    let before = counts(&backends);
    let mut s = connect(&gw);
    let head = format!("{}: s-bad\r\n", sessions::HEADER);
    s.write_all(&raw_upgrade_request("/not-a-socket", "bad.test", &head))
        .expect("write");
    // The backend's plain answer: its head, then its body (the backend's name).
    let answer =
        read_until(&mut s, format!("\r\n\r\n{home}\n").as_bytes(), 64 * 1024).expect("read");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with(&format!("{home}\n")), "{text}");
    let failed = &[UP, ("why", "refused")];
    gw.wait_metric("berth_websocket_upgrades_failed_total", failed, |v| {
        v == 1.0
    });
    // WebSocket frames sent anyway are no HTTP request: refused, sent nowhere.
    s.write_all(&frame(0x1, b"hello")).expect("write");
    let rest = read_until(&mut s, b"\r\n\r\n", 64 * 1024).unwrap_or_default();
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.is_empty() || rest.starts_with("HTTP/1.1 400"),
        "after the refused upgrade: {rest:?}"
    );
    only_home_grew(&backends, &before, &home, 1);
    assert_eq!(gw.metric("berth_websockets_total", &[UP]), 0.0);
}

#[test]
fn a_101_nobody_asked_for_is_a_502_and_counted() {
    let (backends, gw) = setup(&[]);
    let home = home_of(&gw, "s-bad");
    let before = counts(&backends);
    let r = gw
        .client()
        .send(&sessions::request("s-bad", "/__unasked101"));
    assert_eq!(r.status, 502, "{}", r.summary());
    let failed = &[UP, ("why", "unasked_101")];
    gw.wait_metric("berth_websocket_upgrades_failed_total", failed, |v| {
        v == 1.0
    });
    // Only the session's backend saw it: it is not retried on another backend.
    only_home_grew(&backends, &before, &home, 0);
    for b in &backends {
        let want = u64::from(b.name == home);
        assert_eq!(b.count_path("/__unasked101"), want, "at {}", b.name);
    }
    assert_eq!(gw.metric("berth_websockets_total", &[UP]), 0.0);
}

#[test]
fn a_client_that_never_reads_is_closed_at_the_send_timeout() {
    let (backends, gw) = setup(&[("upstreams.app.websocket.send_timeout", "2s")]);
    let home = home_of(&gw, "s-bad");
    let mut s = connect(&gw);
    let head = format!("{}: s-bad\r\n", sessions::HEADER);
    s.write_all(&raw_upgrade_request("/ws?flood", "bad.test", &head))
        .expect("write");
    let answer = read_until(&mut s, b"\r\n\r\n", 64 * 1024).expect("read");
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // Never read again: the backend fills every buffer on the way, then Berth gives up.
    let closed = &[UP, ("why", "send_timeout")];
    let n = gw.wait_metric("berth_websockets_closed_total", closed, |v| v == 1.0);
    assert_eq!(n, 1.0, "{}", gw.log_tail(30));
    assert_eq!(gw.metric("berth_websockets_open", &[UP]), 0.0);
    let home = backends.iter().find(|b| b.name == home).expect("home");
    let ended = wait_for(WAIT, Duration::from_millis(100), || {
        (home.ws_open() == 0).then_some(())
    });
    assert!(ended.is_some(), "the backend's socket never ended");
    drop(s);
}

#[test]
fn a_frame_after_the_close_ends_the_socket_at_its_own_backend() {
    let (backends, gw) = setup(&[]);
    let home = home_of(&gw, "s-bad");
    let before = counts(&backends);
    let mut s = connect(&gw);
    let head = format!("{}: s-bad\r\n", sessions::HEADER);
    s.write_all(&raw_upgrade_request("/ws", "bad.test", &head))
        .expect("write");
    let answer = read_until(&mut s, b"\r\n\r\n", 64 * 1024).expect("read");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 101"));
    // A close frame, then a text frame after it.
    let mut bytes = frame(0x8, &[0x03, 0xe8]);
    bytes.extend(frame(0x1, b"after close"));
    s.write_all(&bytes).expect("write");
    // The backend's name, its close frame, then the end of the connection.
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let close = rest.windows(2).any(|w| w == [0x88, 0x02]);
    assert!(close, "no close frame in {rest:?}");
    let closed = &[UP, ("why", "closed")];
    gw.wait_metric("berth_websockets_closed_total", closed, |v| v == 1.0);
    assert_eq!(gw.metric("berth_websockets_open", &[UP]), 0.0);
    only_home_grew(&backends, &before, &home, 1);
}
