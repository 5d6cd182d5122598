//! The harness against itself: the demo backend and the HTTP client, no gateway involved.
use berth_tests::{http, Backend, Client, ClosedPort, Request, User};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, TcpListener, TcpStream};

#[test]
fn demo_backend_echoes_and_keeps_connections_alive() {
    let b = Backend::start("alpha");
    assert_eq!(b.addr.ip().to_string(), "127.0.0.1");
    assert_ne!(b.addr.port(), 0);
    let mut c = Client::new(b.addr);
    for i in 0..5 {
        let r = c.send(
            &Request::get(&format!("/x/{i}"))
                .header("X-Berth-Affinity", "sticky")
                .header("X-Forwarded-For", "10.1.2.3"),
        );
        assert_eq!(r.status, 200, "{}", r.summary());
        assert_eq!(r.text(), "alpha\n");
        assert_eq!(r.backend(), "alpha");
        assert_eq!(r.affinity(), "sticky");
        assert_eq!(r.header("x-seen-forwarded-for"), Some("10.1.2.3"));
        assert_eq!(r.header("x-seen-previous-backend"), Some("-"));
        assert_eq!(r.header("x-seen-backup"), Some("-"));
        assert_eq!(r.header("content-length"), Some("6"));
    }
    assert_eq!(c.connections_opened(), 1, "five requests on one connection");
    let r = c.get("/plain");
    assert_eq!(r.affinity(), "-");
    assert_eq!(b.count(), 6, "/__count excludes itself");
    assert_eq!(b.count(), 6);
}

#[test]
fn fresh_connections_and_request_bodies() {
    let b = Backend::start("beta");
    let mut c = Client::new(b.addr).fresh_connections();
    let r = c.send(&Request::new("POST", "/upload").body(vec![b'x'; 10_000]));
    assert_eq!(r.header("x-seen-body-length"), Some("10000"));
    let chunked = http::encode_chunked(&[b'y'; 5000], 777);
    let r = c.send(
        &Request::new("POST", "/chunked")
            .header("Transfer-Encoding", "chunked")
            .body(chunked),
    );
    assert_eq!(r.header("x-seen-body-length"), Some("5000"));
    assert_eq!(r.header("connection"), Some("close"));
    let r = c.send(&Request::new("HEAD", "/"));
    assert!(r.body.is_empty());
    assert_eq!(c.connections_opened(), 3);
    assert_eq!(b.count(), 3);
}

#[test]
fn cookie_jar_round_trip() {
    let b = Backend::start("gamma");
    let mut u = User::new(Client::new(b.addr));
    let r = u.get("/set-cookie?name=sid&value=abc").unwrap();
    assert_eq!(r.header("set-cookie"), Some("sid=abc; Path=/"));
    assert_eq!(u.jar.get("sid"), Some("abc"));
    u.get("/set-cookie?name=other&value=1").unwrap();
    assert_eq!(u.jar.header().as_deref(), Some("other=1; sid=abc"));
}

#[test]
fn client_binds_source_addresses() {
    let b = Backend::start("delta");
    for last in [2u8, 3, 77] {
        let ip = IpAddr::from([127, 0, 0, last]);
        let r = Client::new(b.addr).source(ip).get("/");
        assert_eq!(r.header("x-seen-peer"), Some(ip.to_string().as_str()));
    }
}

#[test]
fn client_replaces_a_connection_the_server_closed() {
    // A server that answers one request per connection "keep-alive" and then hangs up silently,
    // as servers do with idle connections.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for (i, stream) in listener.incoming().take(2).enumerate() {
            let mut stream = stream.unwrap();
            let mut r = BufReader::new(stream.try_clone().unwrap());
            http::read_head(&mut r).unwrap().unwrap();
            let body = format!("conn{i}");
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
        }
    });
    let mut c = Client::new(addr);
    assert_eq!(c.get("/").text(), "conn0");
    let r = c.get("/again");
    assert_eq!(
        r.text(),
        "conn1",
        "the request was retried on a new connection"
    );
    assert_eq!(c.connections_opened(), 2);
}

#[test]
fn demo_backend_pipelined_requests_and_count() {
    let b = Backend::start("zeta");
    let mut s = TcpStream::connect(b.addr).unwrap();
    s.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut r = BufReader::new(s);
    let mut statuses = 0;
    while let Some(head) = http::read_head(&mut r).unwrap() {
        assert!(head.start_line.starts_with("HTTP/1.1 200"));
        let kind = http::response_body_kind("GET", 200, &head.headers).unwrap();
        assert_eq!(http::read_body(&mut r, kind).unwrap(), b"zeta\n");
        statuses += 1;
    }
    assert_eq!(statuses, 2);
    assert!(r.fill_buf().unwrap().is_empty());
    assert_eq!(b.count(), 2);
}

#[test]
fn killed_backend_refuses_connections() {
    let mut b = Backend::start("eta");
    let addr = b.addr;
    assert!(b.pid().is_some());
    b.kill();
    assert!(b.pid().is_none());
    assert!(TcpStream::connect(addr).is_err(), "port {addr} still open");
}

#[test]
fn closed_port_refuses_and_stays_reserved() {
    let closed = ClosedPort::new();
    let err = TcpStream::connect(closed.addr).expect_err("nothing listens");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(
        TcpListener::bind(closed.addr).is_err(),
        "the port stays taken"
    );
}

#[test]
fn demo_backend_health_endpoint_and_toggle() {
    let b = Backend::start("theta");
    let mut c = Client::new(b.addr);
    let r = c.get("/__health");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "ok\n"),
        "{}",
        r.summary()
    );
    b.set_healthy(false);
    let r = c.get("/__health");
    assert_eq!(r.status, 503, "{}", r.summary());
    b.set_healthy(true);
    assert_eq!(c.get("/__health").status, 200);
    // Slow: the answer cannot come before the delay (a lower bound, which load cannot break).
    b.set_health_slow(std::time::Duration::from_millis(300));
    let t = std::time::Instant::now();
    assert_eq!(c.get("/__health").status, 200);
    assert!(t.elapsed() >= std::time::Duration::from_millis(300), "slow");
    b.set_healthy(true);
    assert_eq!(c.get("/__health").status, 200, "prompt again");
    assert_eq!(b.health_checks(), 5);
    assert_eq!(b.count(), 0, "health checks and toggles are not requests");
    c.get("/x");
    assert_eq!((b.count(), b.count_path("/x")), (1, 1));
}

#[test]
fn demo_backend_counts_methods_and_drops() {
    let b = Backend::start("iota");
    let mut c = Client::new(b.addr);
    c.send(&Request::new("POST", "/a").body("x"));
    c.send(&Request::new("PUT", "/a").body("x"));
    c.get("/a");
    // Dropped: counted, then the connection closes without a response.
    for req in [
        Request::new("POST", "/b")
            .header("X-Demo-Drop", "1")
            .body("y"),
        Request::new("POST", "/b").header("X-Demo-Drop", "other, iota"),
        Request::new("GET", "/__drop"),
    ] {
        let err = Client::new(b.addr)
            .try_send(&req)
            .expect_err("dropped without a response");
        assert!(
            matches!(
                err.kind(),
                std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::UnexpectedEof
            ),
            "{err:?}"
        );
    }
    // Another backend's name in the list: answered.
    let r = c.send(&Request::new("POST", "/b").header("X-Demo-Drop", "b1,b2"));
    assert_eq!(r.status, 200);
    assert_eq!(b.count_method("POST"), 4);
    assert_eq!(b.count_method("put"), 1);
    assert_eq!(b.count_method("GET"), 2);
    assert_eq!(b.count_method("DELETE"), 0);
    assert_eq!(b.count(), 7);
    let r = c.send(&Request::new("POST", "/k").header("Idempotency-Key", "abc"));
    assert_eq!(r.header("x-seen-idempotency-key"), Some("abc"));
}

#[test]
fn demo_backend_restarts_on_the_same_address() {
    let mut b = Backend::start("kappa");
    let addr = b.addr;
    let mut c = Client::new(addr);
    c.get("/");
    b.restart();
    assert_eq!(b.addr, addr);
    assert_eq!(b.count(), 0, "a fresh process");
    // The client's kept-alive connection died with the old process; a new one works.
    assert_eq!(c.get("/").backend(), "kappa");
    b.kill();
    let again = Backend::start_on("kappa2", addr);
    assert_eq!(Client::new(addr).get("/").backend(), "kappa2");
    drop(again);
}
