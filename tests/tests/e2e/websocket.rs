//! Issue 15: WebSockets through Berth, with a real client (tokio-tungstenite) against the demo
//! backends' `/ws` echo (which names its backend first).
//!
//! * 100 sockets, 50 of cookie sessions and 50 of header sessions, each reach the backend their
//!   session's HTTP requests reach; `berth_websockets_open` goes to 100 and back to 0; while
//!   open they are the active sessions of `/admin/backends` (with a 1 s active window, nothing
//!   else keeps a session active).
//! * A socket idle far longer than the upstream's `read_timeout` (and the client limits) stays
//!   open; one idle for `websocket.idle_timeout` is closed and counted.
//! * Draining a backend with a deadline keeps its sockets open until the deadline, then closes
//!   them; the client's reconnect lands on another backend with `reassigned`. Removing a
//!   backend closes its sockets. Over TLS (`wss://`) the same.
//! * Bad input: an upgrade the backend refuses (no 101), a 101 nobody asked for (502), a client
//!   that never reads (closed after `websocket.send_timeout`), a frame after the close: each
//!   ends with an answer or a close and is counted; no other backend sees a byte.
use berth_tests::client::Request;
use berth_tests::h2::runtime;
use berth_tests::tls::{self, TestCa};
use berth_tests::websocket::{self as ws, Read2, Ws};
use berth_tests::{config, free_addr, sessions, wait_for, Backend, Gateway};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

const UP: (&str, &str) = ("upstream", "app");
/// How long a test waits for something that must happen.
const WAIT: Duration = Duration::from_secs(30);

/// Cookie (insert) then `X-Session-Id` affinity over `backends`, with `patches`.
fn gateway(backends: &[Backend], patches: &[(&str, &str)]) -> Gateway {
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let mut yaml = config::app_config(
        &[
            config::cookie_plugin(),
            config::header_plugin(sessions::HEADER),
        ],
        &specs,
    );
    for (path, value) in patches {
        yaml = config::set(&yaml, path, value);
    }
    Gateway::start_with_admin(&yaml)
}

fn open_sockets(gw: &Gateway) -> f64 {
    gw.metric("berth_websockets_open", &[UP])
}

fn closed(gw: &Gateway, why: &str) -> f64 {
    gw.metric("berth_websockets_closed_total", &[UP, ("why", why)])
}

/// `/admin/backends` rows as (id, field) for a numeric `field`.
fn admin_numbers(gw: &Gateway, field: &str) -> Vec<(String, u64)> {
    let v = gw.backends_json();
    let rows = v
        .get("backends")
        .and_then(|b| b.as_array())
        .cloned()
        .unwrap_or_else(|| panic!("GET /admin/backends: no list in {v}"));
    rows.iter()
        .map(|r| {
            let id = r["id"].as_str().unwrap_or("").to_string();
            let n = r[field]
                .as_u64()
                .unwrap_or_else(|| panic!("no {field} in {r}"));
            (id, n)
        })
        .collect()
}

fn sum(rows: &[(String, u64)]) -> u64 {
    rows.iter().map(|(_, n)| n).sum()
}

/// A cookie session: its token and the backend its HTTP requests reach.
fn cookie_session(gw: &Gateway) -> (String, String) {
    let mut c = gw.client();
    let first = c.send(&Request::get("/"));
    let token = first
        .set_cookie(config::COOKIE_NAME)
        .unwrap_or_else(|| panic!("no cookie issued: {}", first.summary()))
        .value;
    let cookie = format!("{}={token}", config::COOKIE_NAME);
    let again = c.send(&Request::get("/").header("Cookie", &cookie));
    assert_eq!(again.affinity(), "sticky", "{}", again.summary());
    assert_eq!(again.backend(), first.backend(), "{}", again.summary());
    (cookie, first.backend().to_string())
}

/// A header session's backend (its first request).
fn header_session(gw: &Gateway, id: &str) -> String {
    let r = gw.client().send(&sessions::request(id, "/"));
    assert_eq!(r.status, 200, "{}", r.summary());
    r.backend().to_string()
}

async fn echo_all<S: AsyncRead + AsyncWrite + Unpin>(sockets: &mut [Ws<S>], text: &str) {
    for s in sockets.iter_mut() {
        s.echo(text).await.unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn sockets_follow_their_sessions_and_are_counted() {
    let backends = Backend::start_many(3);
    let gw = gateway(&backends, &[("upstreams.app.sessions.active_window", "1s")]);
    let rt = runtime();
    let mut sockets = Vec::new();
    // 50 cookie sessions and 50 header sessions, each first over HTTP.
    let mut homes = Vec::new();
    for _ in 0..50 {
        let (cookie, home) = cookie_session(&gw);
        homes.push((vec![("Cookie".to_string(), cookie)], home));
    }
    for id in sessions::ids(0, 50) {
        let home = header_session(&gw, &id);
        homes.push((vec![(sessions::HEADER.to_string(), id)], home));
    }
    rt.block_on(async {
        for (headers, home) in &homes {
            let h: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (&**n, &**v)).collect();
            let s = ws::connect(gw.addr, "/ws", &h)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(&s.backend, home, "socket of {h:?}: {:?}", s.headers);
            assert_eq!(s.header("x-seen-affinity"), "sticky", "{h:?}");
            sockets.push(s);
        }
        echo_all(&mut sockets, "hello").await;
    });
    assert_eq!(open_sockets(&gw), 100.0);
    for b in &backends {
        let on_b = homes.iter().filter(|(_, h)| *h == b.name).count() as f64;
        let labels = [UP, ("backend", b.name.as_str())];
        assert_eq!(
            gw.metric("berth_websockets_open", &labels),
            on_b,
            "{}",
            b.name
        );
        assert_eq!(b.ws_open() as f64, on_b, "{} sees its sockets", b.name);
    }
    // Long after the active window, the sockets' sessions are the active ones.
    let active = wait_for(WAIT, Duration::from_millis(200), || {
        std::thread::sleep(Duration::from_millis(1500));
        let rows = admin_numbers(&gw, "active_sessions");
        (sum(&rows) == 100).then_some(rows)
    })
    .unwrap_or_else(|| {
        panic!(
            "active sessions: {:?}",
            admin_numbers(&gw, "active_sessions")
        )
    });
    assert_eq!(
        active,
        admin_numbers(&gw, "websockets"),
        "active = open sockets"
    );
    rt.block_on(async {
        echo_all(&mut sockets, "still there").await;
        for s in sockets.drain(..) {
            s.close().await;
        }
    });
    gw.wait_metric("berth_websockets_open", &[UP], |v| v == 0.0);
    assert_eq!(open_sockets(&gw), 0.0);
    assert_eq!(gw.metric("berth_websockets_total", &[UP]), 100.0);
    assert_eq!(closed(&gw, "closed"), 100.0);
    let idle = wait_for(WAIT, Duration::from_millis(200), || {
        let rows = admin_numbers(&gw, "active_sessions");
        (sum(&rows) == 0).then_some(())
    });
    assert!(idle.is_some(), "closed sockets' sessions go idle");
}

#[test]
fn an_idle_socket_outlives_read_timeouts_until_its_idle_timeout() {
    let backends = Backend::start_many(1);
    let gw = gateway(
        &backends,
        &[
            ("upstreams.app.read_timeout", "1s"),
            ("limits.body_timeout", "1s"),
            ("limits.keepalive_timeout", "1s"),
            ("upstreams.app.websocket.idle_timeout", "6s"),
        ],
    );
    let rt = runtime();
    rt.block_on(async {
        let mut s = ws::connect(gw.addr, "/ws", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // Several read timeouts of silence in both directions.
        tokio::time::sleep(Duration::from_secs(3)).await;
        s.echo("after 3 s").await.unwrap_or_else(|e| panic!("{e}"));
        // Then silence past the idle timeout: Berth closes it.
        assert_eq!(s.read(WAIT + WAIT).await, Read2::Closed(0));
    });
    gw.wait_metric(
        "berth_websockets_closed_total",
        &[UP, ("why", "idle_timeout")],
        |v| v == 1.0,
    );
    assert_eq!(closed(&gw, "idle_timeout"), 1.0);
    assert!(
        wait_for(WAIT, Duration::from_millis(100), || (backends[0].ws_open()
            == 0)
            .then_some(()))
        .is_some()
    );
}

/// `n` header sessions' sockets (opened with `connect`) and the backend with the most.
async fn sockets_on<S, F, Fut>(n: usize, connect: F) -> (Vec<(String, Ws<S>)>, String)
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<Ws<S>, String>>,
{
    let mut all = Vec::new();
    for id in sessions::ids(1000, n) {
        let s = connect(id.clone()).await.unwrap_or_else(|e| panic!("{e}"));
        all.push((id, s));
    }
    let busiest = berth_tests::tally(all.iter().map(|(_, s)| s.backend.as_str()))
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(b, _)| b)
        .expect("sockets were opened");
    (all, busiest)
}

/// Drain `victim` with a deadline while `sockets` are open: they stay open (and echo) until
/// the deadline, then are closed; each reconnect lands elsewhere, `reassigned`.
async fn drain_scenario<S, F, Fut>(
    gw: &Gateway,
    sockets: Vec<(String, Ws<S>)>,
    victim: &str,
    reconnect: F,
) where
    S: AsyncRead + AsyncWrite + Unpin,
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<Ws<S>, String>>,
{
    let (mut on_victim, others): (Vec<_>, Vec<_>) =
        sockets.into_iter().partition(|(_, s)| s.backend == victim);
    assert!(!on_victim.is_empty());
    let r = gw.admin(
        "POST",
        &format!("/admin/backends/{victim}/drain"),
        Some(r#"{"deadline":"8s"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.summary());
    // Before the deadline: still open, still served.
    for (_, s) in on_victim.iter_mut() {
        s.echo("draining").await.unwrap_or_else(|e| panic!("{e}"));
    }
    let info = gw.backend_info(victim);
    assert_eq!(info.state, "draining", "{info:?}");
    // At the deadline: closed (TCP close), every one.
    for (id, s) in on_victim.iter_mut() {
        let end = s.read(WAIT + WAIT).await;
        assert!(matches!(end, Read2::Closed(_)), "{id}: {end:?}");
    }
    assert_eq!(gw.backend_info(victim).state, "drained");
    let n = on_victim.len() as f64;
    assert_eq!(closed(gw, "drain_deadline"), n);
    // Reconnects land on another backend, told the session moved.
    for (id, _) in on_victim {
        let s = reconnect(id.clone())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(s.backend, victim, "{id}");
        assert_eq!(s.header("x-seen-affinity"), "reassigned", "{id}");
        assert_eq!(s.header("x-seen-previous-backend"), victim, "{id}");
        s.close().await;
    }
    // The other sockets never noticed.
    for (_, mut s) in others {
        s.echo("unaffected").await.unwrap_or_else(|e| panic!("{e}"));
        s.close().await;
    }
}

#[test]
fn a_drain_deadline_closes_sockets_and_they_reconnect_elsewhere() {
    let backends = Backend::start_many(3);
    let gw = gateway(&backends, &[]);
    let addr = gw.addr;
    let connect =
        |id: String| async move { ws::connect(addr, "/ws", &[(sessions::HEADER, &id)]).await };
    let rt = runtime();
    rt.block_on(async {
        let (sockets, victim) = sockets_on(30, connect).await;
        drain_scenario(&gw, sockets, &victim, connect).await;
    });
    gw.wait_metric("berth_websockets_open", &[UP], |v| v == 0.0);
    assert_eq!(open_sockets(&gw), 0.0);
}

#[test]
fn removing_a_backend_closes_its_sockets() {
    let backends = Backend::start_many(3);
    let gw = gateway(&backends, &[]);
    let addr = gw.addr;
    let connect =
        |id: String| async move { ws::connect(addr, "/ws", &[(sessions::HEADER, &id)]).await };
    let rt = runtime();
    rt.block_on(async {
        let (sockets, victim) = sockets_on(20, connect).await;
        let r = gw.admin("DELETE", &format!("/admin/backends/{victim}"), None);
        assert_eq!(r.status, 200, "{}", r.summary());
        let mut n = 0;
        for (id, mut s) in sockets {
            if s.backend == victim {
                n += 1;
                let end = s.read(WAIT).await;
                assert!(matches!(end, Read2::Closed(_)), "{id}: {end:?}");
            } else {
                s.echo("unaffected").await.unwrap_or_else(|e| panic!("{e}"));
            }
        }
        assert_eq!(closed(&gw, "backend_removed"), f64::from(n));
    });
}

#[test]
fn wss_sockets_are_sticky_and_drain_the_same() {
    let backends = Backend::start_many(3);
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new("berth ws test CA");
    let cert = ca.leaf(&["ws.test"]).write(dir.path(), "ws");
    let tls_addr = free_addr();
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let yaml = config::app_config(&[config::header_plugin(sessions::HEADER)], &specs);
    let yaml = tls::with_listeners(&yaml, &[tls::listener(tls_addr, &[&cert], "")]);
    let gw = Gateway::start_with_admin(&yaml);
    let pem = ca.pem.clone();
    let connect = |id: String| {
        let pem = pem.clone();
        async move {
            ws::connect_tls(tls_addr, "ws.test", &pem, "/ws", &[(sessions::HEADER, &id)]).await
        }
    };
    let rt = runtime();
    rt.block_on(async {
        let (sockets, victim) = sockets_on(20, connect).await;
        for (id, s) in &sockets {
            // The same session over plain HTTP reaches the same backend.
            assert_eq!(header_session(&gw, id), s.backend, "{id}");
            assert_eq!(s.header("x-seen-forwarded-proto"), "https", "{id}");
        }
        drain_scenario(&gw, sockets, &victim, connect).await;
    });
}
