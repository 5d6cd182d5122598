//! What a client can and cannot do with Berth's cookie token: editing it never selects a
//! backend (draining, removed, active or made up); a token of one upstream selects nothing in
//! another, even where the backend ids are the same; key rotation keeps old tokens working
//! until their key is removed; and no response, cookie, error page or log line reveals a
//! backend's address.
use berth_tests::config::{self, COOKIE_KID, COOKIE_NAME, COOKIE_SECRET, COOKIE_TTL_SECS};
use berth_tests::token::{self, Token};
use berth_tests::{Backend, ClosedPort, Gateway, Request, Response};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A request with `cookie` as the Berth cookie, on a fresh connection.
fn with_cookie(gw: &Gateway, path: &str, cookie: &str) -> Response {
    gw.client()
        .fresh_connections()
        .send(&Request::get(path).header("Cookie", &format!("{COOKIE_NAME}={cookie}")))
}

/// The Berth cookie a response sets, if any.
fn issued(r: &Response) -> Option<String> {
    r.set_cookie(COOKIE_NAME).map(|c| c.value)
}

#[test]
fn an_edited_token_never_selects_a_backend() {
    let backends = Backend::start_many(4);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let gw = Gateway::start_with_admin(&config::app_config(&[config::cookie_plugin()], &specs));
    // b3 drains, b4 is removed: neither takes new sessions.
    assert_eq!(
        gw.admin("POST", "/admin/backends/b3/drain", None).status,
        200
    );
    assert_eq!(gw.admin("DELETE", "/admin/backends/b4", None).status, 200);

    let first = gw.client().fresh_connections().send(&Request::get("/"));
    let valid = issued(&first).expect("a new session gets a cookie");
    let home = first.backend().to_string();
    assert!(home == "b1" || home == "b2", "placed on {home}");
    let tok = Token::parse(&valid).expect("a v1 token");
    let other_active = if home == "b1" { "b2" } else { "b1" };
    let far = token::now_unix() + 10 * 365 * 86_400;
    let cases = [
        (
            "the draining backend",
            Token {
                backend: "b3".into(),
                ..tok.clone()
            },
        ),
        (
            "the removed backend",
            Token {
                backend: "b4".into(),
                ..tok.clone()
            },
        ),
        (
            "another active backend",
            Token {
                backend: other_active.into(),
                ..tok.clone()
            },
        ),
        (
            "a made-up backend",
            Token {
                backend: "admin".into(),
                ..tok.clone()
            },
        ),
        (
            "a later expiry",
            Token {
                expiry: far,
                ..tok.clone()
            },
        ),
        (
            "another key id",
            Token {
                kid: "k0".into(),
                ..tok.clone()
            },
        ),
    ];
    for (what, edited) in &cases {
        for _ in 0..5 {
            let r = with_cookie(&gw, "/", &edited.encode());
            assert_eq!(r.status, 200, "{what}: {}", r.summary());
            assert!(
                r.backend() == "b1" || r.backend() == "b2",
                "{what}: served by {} (draining b3 and removed b4 take no new session)",
                r.backend()
            );
            assert_eq!(r.affinity(), "new", "{what}: the edited token was honoured");
            let fresh = issued(&r).unwrap_or_else(|| panic!("{what}: no new cookie"));
            let fresh = Token::parse(&fresh).expect("a v1 token");
            assert_eq!(fresh.backend, r.backend(), "{what}");
            assert_ne!(
                fresh.sid, tok.sid,
                "{what}: the edited token's session was kept"
            );
        }
    }
    let bad = gw.metric("berth_affinity_invalid_total", &[("why", "bad_signature")]);
    let unknown = gw.metric("berth_affinity_invalid_total", &[("why", "unknown_key")]);
    assert_eq!((bad, unknown), (25.0, 5.0));
    // The untouched token still works.
    let r = with_cookie(&gw, "/", &valid);
    assert_eq!((r.backend(), r.affinity()), (home.as_str(), "sticky"));
    drop(backends);
}

/// Two upstreams with the same signing key and the same backend ids, on different processes.
fn two_upstreams(a: &[Backend], b: &[Backend]) -> String {
    let backends = |list: &[Backend]| -> String {
        list.iter()
            .enumerate()
            .map(|(i, x)| format!("      - {{id: b{}, addr: \"{}\"}}\n", i + 1, x.addr))
            .collect()
    };
    let plugin = format!(
        "      - {{type: cookie, ttl: {COOKIE_TTL_SECS}s, keys: [{{id: {COOKIE_KID}, secret: \"{COOKIE_SECRET}\"}}]}}\n"
    );
    format!(
        "routes:\n  - {{path_prefix: /a, upstream: a}}\n  - {{path_prefix: /b, upstream: b}}\n\
         upstreams:\n  a:\n    affinity:\n{plugin}    backends:\n{}  b:\n    affinity:\n{plugin}    backends:\n{}",
        backends(a),
        backends(b)
    )
}

#[test]
fn a_token_of_one_upstream_selects_nothing_in_another() {
    let a: Vec<Backend> = (1..=2).map(|i| Backend::start(&format!("a{i}"))).collect();
    let b: Vec<Backend> = (1..=2).map(|i| Backend::start(&format!("x{i}"))).collect();
    let gw = Gateway::start(&two_upstreams(&a, &b));
    for _ in 0..10 {
        let first = gw.client().fresh_connections().send(&Request::get("/a"));
        let tok = issued(&first).expect("a cookie from upstream a");
        let id = Token::parse(&tok).expect("a v1 token").backend;
        let r = with_cookie(&gw, "/b", &tok);
        assert_eq!(r.status, 200, "{}", r.summary());
        assert_eq!(
            r.affinity(),
            "new",
            "a token of upstream a was honoured by b"
        );
        let fresh = Token::parse(&issued(&r).expect("b issues its own")).expect("v1");
        assert_ne!(fresh.sid, Token::parse(&tok).unwrap().sid);
        // Its id in `a` (b1/b2) exists in `b` too; the token still decides nothing there.
        assert!(id == "b1" || id == "b2");
        assert!(token::verify(COOKIE_SECRET.as_bytes(), &tok, "a"));
        assert!(!token::verify(COOKIE_SECRET.as_bytes(), &tok, "b"));
    }
    assert_eq!(
        gw.metric(
            "berth_affinity_invalid_total",
            &[("upstream", "b"), ("why", "bad_signature")]
        ),
        10.0
    );
}

fn keyed_plugin(keys: &[(&str, &str)]) -> String {
    let keys: Vec<String> = keys
        .iter()
        .map(|(id, secret)| format!("{{id: {id}, secret: \"{secret}\"}}"))
        .collect();
    format!(
        "type: cookie\nttl: {COOKIE_TTL_SECS}s\nkeys: [{}]\n",
        keys.join(", ")
    )
}

#[test]
fn rotated_keys_verify_old_tokens_until_removed() {
    let backends = Backend::start_many(3);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let old = ("k1", "old-secret-0123456789abcdef0123456789");
    let new = ("k2", "new-secret-0123456789abcdef0123456789");

    let mut gw = Gateway::start(&config::app_config(&[keyed_plugin(&[old])], &specs));
    let mut sessions = Vec::new();
    for _ in 0..20 {
        let r = gw.client().fresh_connections().send(&Request::get("/"));
        sessions.push((issued(&r).expect("cookie"), r.backend().to_string()));
    }
    gw.stop();

    // Rotation step 1: the new key signs, the old one still verifies.
    let mut gw = Gateway::start(&config::app_config(&[keyed_plugin(&[new, old])], &specs));
    for (tok, home) in &sessions {
        assert_eq!(Token::parse(tok).unwrap().kid, "k1");
        let r = with_cookie(&gw, "/", tok);
        assert_eq!((r.backend(), r.affinity()), (home.as_str(), "sticky"));
    }
    let r = gw.client().fresh_connections().send(&Request::get("/"));
    let signed = Token::parse(&issued(&r).expect("cookie")).expect("v1");
    assert_eq!(signed.kid, "k2", "new tokens are signed with the first key");
    assert_eq!(gw.metric("berth_affinity_invalid_total", &[]), 0.0);
    gw.stop();

    // Step 2: the old key is removed; its tokens are refused and replaced.
    let gw = Gateway::start(&config::app_config(&[keyed_plugin(&[new])], &specs));
    for (tok, _) in &sessions {
        let r = with_cookie(&gw, "/", tok);
        assert_eq!(r.status, 200);
        assert_eq!(r.affinity(), "new");
        let fresh = Token::parse(&issued(&r).expect("a replacement cookie")).expect("v1");
        assert_eq!(fresh.kid, "k2");
    }
    assert_eq!(
        gw.metric("berth_affinity_invalid_total", &[("why", "unknown_key")]),
        20.0
    );
}

/// Everything the gateway sends back to a raw request, bytes as received.
fn raw(addr: SocketAddr, req: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(req.as_bytes()).expect("send");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn no_response_cookie_error_page_or_log_line_reveals_a_backend_address() {
    let live = Backend::start_many(2);
    let dead = ClosedPort::new();
    let dead2 = ClosedPort::new();
    let mut addrs: Vec<SocketAddr> = live.iter().map(|b| b.addr).collect();
    addrs.extend([dead.addr, dead2.addr]);
    let specs = vec![
        ("b1".to_string(), live[0].addr),
        ("b2".to_string(), live[1].addr),
        ("b3".to_string(), dead.addr),
    ];
    let mut yaml = config::app_config(&[config::cookie_plugin()], &specs);
    yaml = config::set(&yaml, "upstreams.app.passive", "{fall: 1000}");
    let gone = format!(
        "{{connect_retries: 0, backends: [{{id: g1, addr: \"{}\"}}]}}",
        dead2.addr
    );
    yaml = config::set(&yaml, "upstreams.gone", &gone);
    yaml = config::set(
        &yaml,
        "routes",
        "[{path_prefix: /gone, upstream: gone}, {path_prefix: /, upstream: app}]",
    );
    let gw = Gateway::start_with_admin(&yaml);
    let mut seen = String::new();
    // New sessions (some placed on the dead b3 first: connect failure, failover), sticky
    // ones, forged cookies, a dead upstream (502), an unknown route is impossible here, an
    // oversized head (431), garbage (400), a drained-then-removed backend.
    for i in 0..30 {
        seen += &raw(
            gw.addr,
            &format!("GET /s{i} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
        );
    }
    let first = with_cookie(&gw, "/", "x");
    let tok = issued(&first).expect("cookie");
    for _ in 0..3 {
        seen += &raw(
            gw.addr,
            &format!("GET / HTTP/1.1\r\nHost: t\r\nCookie: {COOKIE_NAME}={tok}\r\nConnection: close\r\n\r\n"),
        );
    }
    let forged = Token {
        backend: "b3".into(),
        ..Token::parse(&tok).unwrap()
    }
    .encode();
    seen += &raw(
        gw.addr,
        &format!("GET / HTTP/1.1\r\nHost: t\r\nCookie: {COOKIE_NAME}={forged}\r\nConnection: close\r\n\r\n"),
    );
    let dead_answer = raw(
        gw.addr,
        "GET /gone HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    // Its only backend refuses the connection and connect_retries is 0: 502.
    assert!(dead_answer.starts_with("HTTP/1.1 502"), "{dead_answer}");
    seen += &dead_answer;
    seen += &raw(
        gw.addr,
        &format!(
            "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
            "h".repeat(70_000)
        ),
    );
    seen += &raw(gw.addr, "BREW /\r\n\r\n");
    assert_eq!(
        gw.admin("POST", "/admin/backends/b2/drain", None).status,
        200
    );
    assert_eq!(gw.admin("DELETE", "/admin/backends/b2", None).status, 200);
    for _ in 0..3 {
        seen += &raw(
            gw.addr,
            "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        );
    }
    assert!(
        gw.metric("berth_upstream_connect_failures_total", &[]) > 0.0,
        "no connect failure was exercised"
    );
    let log = gw.log();
    for addr in &addrs {
        for needle in [addr.to_string(), format!(":{}", addr.port())] {
            assert!(
                !seen.contains(&needle),
                "a response shows {needle}:\n{seen}"
            );
            let lines: Vec<&str> = log.lines().filter(|l| l.contains(&needle)).collect();
            assert!(
                lines.is_empty(),
                "the log shows backend address {needle}:\n{}",
                lines.join("\n")
            );
        }
    }
}
