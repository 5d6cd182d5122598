//! Issue 14, stage 2: HTTP/2 to clients, over TLS (ALPN `h2`) and h2c with prior knowledge.
//! Affinity per request on a connection that carries many sessions (100 concurrent streams,
//! 100 sessions, each on its pinned backend); cookie crumbs (several `cookie` fields) read as
//! one; an h2 request body to an HTTP/1.1 backend leaves its pooled connection clean (Pingora
//! issue #935); limits and the slow-client guard on h2 connections.
use berth_tests::h2::{runtime, H2Response, H2};
use berth_tests::tls::{self, TestCa};
use berth_tests::{config, free_addr, sessions, Backend, Gateway, Request};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Cookie then header affinity over `backends`; the harness's listener speaks h2c, a TLS
/// listener (certificate for `h2.test` from `ca`) is returned beside it.
struct Setup {
    gw: Gateway,
    tls_addr: SocketAddr,
    ca: TestCa,
    _dir: tempfile::TempDir,
}

fn setup(backends: &[Backend], patches: &[(&str, &str)]) -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new("berth h2 test CA");
    let cert = ca.leaf(&["h2.test"]).write(dir.path(), "h2");
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let tls_addr = free_addr();
    let yaml = config::app_config(
        &[
            config::cookie_plugin(),
            config::header_plugin(sessions::HEADER),
        ],
        &specs,
    );
    let mut yaml = tls::with_listeners(&yaml, &[tls::listener(tls_addr, &[&cert], "")]);
    yaml = config::set(&yaml, "listeners.0.h2c", "true");
    for (path, value) in patches {
        yaml = config::set(&yaml, path, value);
    }
    Setup {
        gw: Gateway::start(&yaml),
        tls_addr,
        ca,
        _dir: dir,
    }
}

impl Setup {
    async fn tls(&self) -> H2 {
        H2::tls(self.tls_addr, "h2.test", &self.ca.pem)
            .await
            .unwrap_or_else(|e| panic!("h2 over TLS: {e}"))
    }
    async fn h2c(&self) -> H2 {
        H2::h2c(self.gw.addr)
            .await
            .unwrap_or_else(|e| panic!("h2c: {e}"))
    }
}

/// `n` sessions at once on `h2`, one stream each: session id → response.
async fn round(h2: &H2, n: usize, path: &str) -> BTreeMap<String, H2Response> {
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let (h2, id, path) = (h2.clone(), sessions::id(i), path.to_string());
        set.spawn(async move {
            let r = h2.get(&path, &[(sessions::HEADER, &id)]).await;
            (id, r)
        });
    }
    let mut out = BTreeMap::new();
    while let Some(done) = set.join_next().await {
        let (id, r) = done.expect("a request task");
        let r = r.unwrap_or_else(|e| panic!("session {id}: {e}"));
        assert_eq!(r.status, 200, "session {id}: {r:?}");
        out.insert(id, r);
    }
    out
}

#[test]
fn a_hundred_streams_on_one_connection_each_reach_their_sessions_backend() {
    let backends = Backend::start_many(3);
    let s = setup(&backends, &[]);
    let homes: BTreeMap<String, String> = runtime().block_on(async {
        // Placed over h2c: 100 streams at once on one connection, each held 300 ms by the
        // backend so they are in flight together.
        let h2c = s.h2c().await;
        let first = round(&h2c, 100, "/__slow?ms=300").await;
        let homes: BTreeMap<String, String> = first
            .iter()
            .map(|(id, r)| (id.clone(), r.backend().to_string()))
            .collect();
        assert!(first.values().all(|r| r.header("x-seen-affinity") == "new"));
        let used = berth_tests::tally(homes.values().map(String::as_str));
        assert_eq!(used.len(), 3, "100 sessions on {used:?}");
        let together: u64 = backends.iter().map(Backend::max_in_flight).sum();
        assert!(
            together >= 10,
            "the streams were not concurrent: {together}"
        );
        // Again over h2 on TLS (another connection) and on the same h2c connection: every
        // session on its backend.
        let tls = s.tls().await;
        for (conn, proto, again) in [
            ("tls", "https", round(&tls, 100, "/").await),
            ("h2c", "http", round(&h2c, 100, "/").await),
        ] {
            for (id, r) in &again {
                assert_eq!(r.backend(), homes[id], "{conn}: session {id} moved");
                assert_eq!(r.header("x-seen-affinity"), "sticky", "{conn}: {id}");
                assert_eq!(r.header("x-seen-forwarded-proto"), proto, "{conn}: {id}");
            }
        }
        homes
    });
    // And over HTTP/1.1 on the h2c listener.
    let mut client = s.gw.client();
    for i in [0, 42, 99] {
        let id = sessions::id(i);
        let r = client.send(&sessions::request(&id, "/"));
        assert_eq!(r.status, 200);
        assert_eq!(r.backend(), homes[&id], "HTTP/1.1: session {id} moved");
        assert_eq!(r.header("x-seen-affinity"), Some("sticky"));
    }
}

#[test]
fn cookie_crumbs_are_read_as_one_cookie() {
    let backends = Backend::start_many(3);
    let s = setup(&backends, &[]);
    runtime().block_on(async {
        let h2 = s.tls().await;
        for n in 0..20 {
            let first = h2.get("/", &[]).await.expect("first request");
            let set = first.header("set-cookie").to_string();
            assert!(set.contains("; Secure"), "{set}");
            let cookie = set.split(';').next().expect("name=value").to_string();
            let other = format!("crumb{n}=x");
            let again = h2
                .get(
                    "/",
                    &[("cookie", "a=1"), ("cookie", &cookie), ("cookie", &other)],
                )
                .await
                .expect("second request");
            assert_eq!(again.backend(), first.backend(), "crumbs {n}");
            assert_eq!(again.header("x-seen-affinity"), "sticky", "crumbs {n}");
        }
    });
}

/// Pingora issue #935: an HTTP/2 request body without a content-length that ends with an empty
/// DATA frame (END_STREAM) is sent to an HTTP/1.1 backend chunked, with its terminator twice
/// in Pingora 0.9.1; the backend reads the second one as a bad request on the pooled
/// connection, and answers the next request that reuses it with a 400. POSTs with a
/// content-length, without, and ending in an empty frame, each followed by 50 requests on the
/// same pool.
#[test]
fn an_h2_body_to_an_http1_backend_leaves_the_pooled_connection_clean() {
    let backends = Backend::start_many(1);
    let s = setup(&backends, &[]);
    let body = Bytes::from(vec![b'x'; 10_000]);
    runtime().block_on(async {
        for h2 in [s.tls().await, s.h2c().await] {
            let len = body.len().to_string();
            let half = body.slice(..5_000);
            let cases = [
                (Some(len.as_str()), vec![body.clone()]),
                (None, vec![body.clone()]),
                (None, vec![half.clone(), half.clone(), Bytes::new()]),
                (Some(len.as_str()), vec![body.clone(), Bytes::new()]),
            ];
            for (i, (len, frames)) in cases.into_iter().enumerate() {
                let mut headers = vec![(sessions::HEADER, "post")];
                if let Some(len) = len {
                    headers.push(("content-length", len));
                }
                let r = h2
                    .send_frames("POST", "/upload", &headers, frames)
                    .await
                    .expect("POST");
                assert_eq!(r.status, 200, "POST {i}: {r:?}");
                assert_eq!(r.header("x-seen-body-length"), "10000", "POST {i}");
                for n in 0..50 {
                    let r = h2
                        .get("/after", &[(sessions::HEADER, "post")])
                        .await
                        .expect("GET");
                    assert_eq!(r.status, 200, "GET {n} after POST {i}: {r:?}");
                    assert_eq!(r.header("x-seen-body-length"), "0");
                }
            }
        }
    });
    // Every request reached the backend as one request, on pooled connections, and nothing
    // after a request's end (a second chunked terminator reads as a bad request line).
    assert_eq!(backends[0].bad_requests(), 0, "bytes after a request's end");
    assert_eq!(backends[0].count_method("POST"), 8);
    assert_eq!(backends[0].count_path("/after"), 400);
    let conns = backends[0].connections();
    assert!(
        conns < 20,
        "{conns} upstream connections: the pool was not reused"
    );
    let reused =
        s.gw.metric("berth_upstream_connections_total", &[("reused", "true")]);
    assert!(reused >= 300.0, "reused {reused}");
}

#[test]
fn limits_and_the_idle_timeout_apply_to_h2() {
    let backends = Backend::start_many(1);
    let s = setup(
        &backends,
        &[
            ("limits.max_headers", "20"),
            ("limits.max_uri_bytes", "256"),
            ("limits.keepalive_timeout", "2s"),
            ("limits.header_timeout", "1s"),
        ],
    );
    runtime().block_on(async {
        let h2 = s.tls().await;
        let many: Vec<(String, String)> =
            (0..30).map(|i| (format!("x-h{i}"), "v".into())).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let r = h2.get("/", &many).await.expect("a response");
        assert_eq!(r.status, 431, "{r:?}");
        let r = h2
            .get(&format!("/{}", "u".repeat(300)), &[])
            .await
            .expect("a response");
        assert_eq!(r.status, 414, "{r:?}");
        // Idle with no stream in flight: closed by the h2 idle timeout (2 s here).
        let h2c = s.h2c().await;
        assert_eq!(h2c.get("/", &[]).await.expect("GET").status, 200);
        let closed = tokio::time::timeout(Duration::from_secs(30), async {
            while !h2c.conn.is_finished() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(closed.is_ok(), "the idle h2c connection stayed open");
    });
    // A preface that stops halfway is cut by the head deadline; a connection that sends
    // nothing by the idle one; a short HTTP/1.0 request on the h2c listener is answered.
    for (what, bytes) in [
        ("half a preface", &b"PRI * HTTP/2.0\r\n"[..]),
        ("nothing", b""),
    ] {
        let mut c = TcpStream::connect(s.gw.addr).expect("connect");
        c.write_all(bytes).expect("write");
        c.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut buf = [0u8; 64];
        match c.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("{what}: the connection was not closed: {other:?}"),
        }
    }
    let mut c = TcpStream::connect(s.gw.addr).expect("connect");
    c.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("write");
    c.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    assert!(
        got.starts_with(b"HTTP/1.1 200") || got.starts_with(b"HTTP/1.0 200"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    // HTTP/1.1 still works on the h2c listener.
    assert_eq!(s.gw.client().send(&Request::get("/")).status, 200);
}
