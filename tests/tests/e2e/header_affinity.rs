//! Header affinity: `X-Session-Id` is the session key; 1,000 sessions stick and spread evenly.
use berth_tests::config::{self, UPSTREAM};
use berth_tests::{check_spread, first_n, par_map, tally, Backend, Gateway, Request};

const USERS: usize = 1000;
const FOLLOW_UPS: usize = 2;
const THREADS: usize = 8;
const HEADER: &str = "X-Session-Id";

fn start() -> (Vec<Backend>, Gateway) {
    let backends = Backend::start_many(3);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let gw = Gateway::start(&config::app_config(
        &[config::header_plugin(HEADER)],
        &specs,
    ));
    (backends, gw)
}

/// A session id that looks like an application's (not sequential).
fn session_id(i: usize) -> String {
    let mixed = (i as u64 + 1)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(17);
    format!("sess-{mixed:016x}")
}

fn run_session(gw: &Gateway, i: usize) -> Result<String, String> {
    let id = session_id(i);
    let mut client = gw.client();
    let mut home = String::new();
    for n in 0..=FOLLOW_UPS {
        let req = Request::get(&format!("/item/{n}")).header(HEADER, &id);
        let r = client
            .try_send(&req)
            .map_err(|e| format!("session {id} request {n}: {e}"))?;
        let expected = if n == 0 { "new" } else { "sticky" };
        if r.status != 200 || r.affinity() != expected || r.header("set-cookie").is_some() {
            return Err(format!(
                "session {id} request {n}: expected 200/{expected}, no Set-Cookie: {}",
                r.summary()
            ));
        }
        if n == 0 {
            home = r.backend().to_string();
        } else if r.backend() != home {
            return Err(format!(
                "session {id} request {n}: moved from {home} to {}",
                r.backend()
            ));
        }
    }
    Ok(home)
}

#[test]
fn thousand_header_sessions_stick_and_spread_evenly() {
    let (backends, gw) = start();
    let results = par_map(USERS, THREADS, |i| run_session(&gw, i));
    let failures: Vec<String> = results.iter().filter_map(|r| r.clone().err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {USERS} sessions failed:\n  {}",
        failures.len(),
        first_n(&failures, 10)
    );
    let homes = tally(results.iter().filter_map(|r| r.as_deref().ok()));
    check_spread(&homes, &["b1", "b2", "b3"], 267, 400).unwrap_or_else(|e| panic!("{e}"));
    for b in &backends {
        assert_eq!(
            b.count(),
            homes[&b.name] as u64 * 3,
            "requests served by {}",
            b.name
        );
    }
    // A second pass over fresh connections: the pins hold across connections.
    let moved: Vec<String> = par_map(USERS, THREADS, |i| {
        let r = gw
            .client()
            .fresh_connections()
            .try_send(&Request::get("/").header(HEADER, &session_id(i)));
        match (r, &results[i]) {
            (Ok(r), Ok(home)) if r.backend() == home && r.affinity() == "sticky" => None,
            (r, home) => Some(format!(
                "session {}: home {home:?}, got {r:?}",
                session_id(i)
            )),
        }
    })
    .into_iter()
    .flatten()
    .collect();
    assert!(
        moved.is_empty(),
        "{} sessions moved:\n  {}",
        moved.len(),
        first_n(&moved, 10)
    );
    let sticky = gw.wait_metric(
        "berth_requests_total",
        &[("upstream", UPSTREAM), ("reason", "sticky")],
        |v| v >= (USERS * 3) as f64,
    );
    assert_eq!(sticky, (USERS * 3) as f64, "sticky requests");
}

#[test]
fn no_header_goes_by_the_ring_and_an_oversized_one_is_counted() {
    let (_backends, gw) = start();
    let mut c = gw.client();
    let r = c.get("/");
    assert_eq!(
        (r.status, r.affinity()),
        (200, "ring"),
        "no key → ring: {}",
        r.summary()
    );
    let r = c.send(&Request::get("/").header(HEADER, ""));
    assert_eq!(
        (r.status, r.affinity()),
        (200, "ring"),
        "empty key → ring: {}",
        r.summary()
    );
    let long = "x".repeat(300);
    let r = c.send(&Request::get("/").header(HEADER, &long));
    assert_eq!(
        (r.status, r.affinity()),
        (200, "ring"),
        "over max_len → ring: {}",
        r.summary()
    );
    let labels = [
        ("upstream", UPSTREAM),
        ("plugin", "header"),
        ("why", "malformed"),
    ];
    assert_eq!(
        gw.wait_metric("berth_affinity_invalid_total", &labels, |v| v >= 1.0),
        1.0
    );
}
