//! Issue #5: the read-only status endpoints of the admin listener.
//!
//! * `/readyz` (no token): 200 while every upstream has a backend that takes new sessions
//!   (healthy, active); 503 with a JSON reason naming why each backend refuses when one has
//!   none — all drained, or all down by health checks — and 200 again when one comes back.
//! * `GET /admin/ring` and `ring_share` in `GET /admin/backends`: the hash-space shares of
//!   the Ketama ring, summing to 1, larger for a heavier backend, the same in both places.
//! * `/` serves the dashboard page self-contained (no external URL) with a restrictive CSP.
use berth_tests::{config, Backend, Gateway, Response};
use serde_json::Value;
use std::time::Duration;

fn readyz(gw: &Gateway) -> (u16, Value) {
    let r = gw.admin_send("GET", "/readyz", None, None);
    let v = r.json().unwrap_or_else(|e| panic!("GET /readyz: {e}"));
    (r.status, v)
}

fn post(gw: &Gateway, path: &str) -> Response {
    let r = gw.admin("POST", path, None);
    assert_eq!(r.status, 200, "POST {path}: {}", r.summary());
    r
}

#[test]
fn readyz_follows_whether_new_sessions_have_somewhere_to_go() {
    let mut backends = Backend::start_many(2);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let health = "{type: tcp, interval: 100ms, timeout: 500ms, rise: 1, fall: 1}";
    let gw = Gateway::start_with_admin(&config::header_app(
        &specs,
        &[("upstreams.app.health", health)],
    ));

    let (status, v) = readyz(&gw);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["ready"], Value::Bool(true), "{v}");
    assert_eq!(v["upstreams"][0]["taking_new"], 2, "{v}");

    // One of two draining: still ready.
    post(&gw, "/admin/backends/b1/drain");
    let (status, v) = readyz(&gw);
    assert_eq!(
        (status, v["upstreams"][0]["taking_new"].clone()),
        (200, 1.into()),
        "{v}"
    );

    // Both draining: not ready, and the reason says why for each backend.
    post(&gw, "/admin/backends/b2/drain");
    let (status, v) = readyz(&gw);
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["ready"], Value::Bool(false), "{v}");
    let reason = v["reason"].as_str().unwrap_or_default();
    // (A draining backend without sessions becomes `drained` within a sweep.)
    assert!(
        reason.contains("\"app\"") && reason.contains("b1: drain") && reason.contains("b2: drain"),
        "reason: {reason:?}"
    );
    // HEAD and a wrong method.
    assert_eq!(gw.admin_send("HEAD", "/readyz", None, None).status, 503);
    assert_eq!(gw.admin_send("POST", "/readyz", None, None).status, 405);

    // b2 back, then b2 dies: its health check marks it down → not ready, reason "down".
    post(&gw, "/admin/backends/b2/undrain");
    assert_eq!(readyz(&gw).0, 200);
    backends[1].kill();
    gw.wait_backend("b2", "down", Duration::from_secs(10), |b| {
        b.health == "down"
    });
    let (status, v) = readyz(&gw);
    assert_eq!(status, 503, "{v}");
    let reason = v["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("b1: drain") && reason.contains("b2: down"),
        "reason: {reason:?}"
    );

    // b2 restarted: its check brings it up and the gateway is ready again.
    backends[1].restart();
    gw.wait_backend("b2", "up", Duration::from_secs(10), |b| b.health == "up");
    let (status, v) = readyz(&gw);
    assert_eq!(status, 200, "{v}");
}

#[test]
fn readyz_and_the_dashboard_need_no_token_but_the_api_does() {
    let backends = Backend::start_many(1);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    // No admin token configured at all: /admin/* is 403, /readyz and / still answer.
    let gw = Gateway::start(&config::header_app(&specs, &[]));
    assert_eq!(readyz(&gw).0, 200);
    let page = gw.admin_send("GET", "/", None, None);
    assert_eq!(page.status, 200, "{}", page.summary());
    assert_eq!(gw.admin_send("GET", "/admin/ring", None, None).status, 403);

    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
        "CSP: {csp:?}"
    );
    // Self-contained: no external scripts, styles, fonts or images.
    let html = page.text();
    for external in ["http://", "https://", "//cdn", "src=", "<link"] {
        assert!(!html.contains(external), "the page contains {external:?}");
    }
    assert!(html.contains("/admin/backends") && html.contains("sessionStorage"));
    assert_eq!(gw.admin_send("POST", "/", None, None).status, 405);
    assert_eq!(gw.admin_send("GET", "/nope", None, None).status, 404);
}

#[test]
fn ring_shares_are_reported_per_backend() {
    let backends = Backend::start_many(3);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let gw = Gateway::start_with_admin(&config::header_app(
        &specs,
        &[("upstreams.app.backends.2.weight", "2")],
    ));
    let r = gw.admin("GET", "/admin/ring", None);
    assert_eq!(r.status, 200, "{}", r.summary());
    let v = r.json().unwrap_or_else(|e| panic!("{e}"));
    let up = &v["upstreams"][0];
    assert_eq!(up["upstream"], "app", "{v}");
    assert_eq!(up["hashing"], "ketama", "{v}");
    assert_eq!(up["points"], 160 * 4, "{v}");
    let rows = up["backends"].as_array().expect("backends array");
    let share = |id: &str| {
        rows.iter()
            .find(|b| b["id"] == id)
            .and_then(|b| b["share"].as_f64())
            .unwrap_or_else(|| panic!("no share for {id}: {v}"))
    };
    let total: f64 = ["b1", "b2", "b3"].iter().map(|id| share(id)).sum();
    assert!((total - 1.0).abs() < 1e-9, "shares sum to {total}: {v}");
    assert!(
        share("b3") > share("b1") && share("b3") > share("b2"),
        "{v}"
    );
    assert_eq!(
        rows.iter()
            .find(|b| b["id"] == "b3")
            .map(|b| b["points"].clone()),
        Some(320.into())
    );

    // The same shares in GET /admin/backends.
    let list = gw.backends_json();
    for b in list["backends"].as_array().expect("backends") {
        let id = b["id"].as_str().expect("id");
        assert_eq!(b["ring_share"].as_f64(), Some(share(id)), "{list}");
    }
    // ?upstream= selects; an unknown one is 404.
    assert_eq!(
        gw.admin("GET", "/admin/ring?upstream=app", None).status,
        200
    );
    assert_eq!(
        gw.admin("GET", "/admin/ring?upstream=zzz", None).status,
        404
    );
    assert_eq!(gw.admin("POST", "/admin/ring", None).status, 405);

    // A weight-0 backend added at runtime owns nothing; the others still sum to 1.
    let spare = Backend::start("b4");
    let add = format!(r#"{{"id":"b4","addr":"{}","weight":0}}"#, spare.addr);
    let r = gw.admin("POST", "/admin/backends", Some(&add));
    assert_eq!(r.status, 201, "{}", r.summary());
    let added = r.json().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(added["ring_share"].as_f64(), Some(0.0), "{added}");
}
