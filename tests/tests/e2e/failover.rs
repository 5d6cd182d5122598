//! Failover: a backend that refuses connections from the start, and a backend killed while its
//! sessions are live. Sessions move to another backend with 2xx, are told so
//! (`X-Berth-Affinity: reassigned`, `X-Berth-Previous-Backend`), then stick to the new one.
use berth_tests::config::{self, COOKIE_NAME, UPSTREAM};
use berth_tests::token::Token;
use berth_tests::{first_n, par_map, tally, Backend, ClosedPort, Gateway, Request, Response, User};

const THREADS: usize = 4;

/// b1, b2 live; b3 configured on a port that refuses connections.
fn start_with_dead_b3(plugin: String) -> (Vec<Backend>, ClosedPort, Gateway) {
    let backends = Backend::start_many(2);
    let dead = ClosedPort::new();
    let mut specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    specs.push(("b3".to_string(), dead.addr));
    let gw = Gateway::start(&config::app_config(&[plugin], &specs));
    (backends, dead, gw)
}

/// The first response of a session on a gateway whose b3 is dead: 200 from b1/b2, `new`, or
/// `reassigned` from b3 when its ring node was b3.
fn check_first(r: &Response) -> Result<(), String> {
    let ok = r.status == 200
        && ["b1", "b2"].contains(&r.backend())
        && match r.affinity() {
            "new" => r.header("x-seen-previous-backend") == Some("-"),
            "reassigned" => r.header("x-seen-previous-backend") == Some("b3"),
            _ => false,
        };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "expected 200 from b1/b2 as new, or reassigned from b3: {}",
            r.summary()
        ))
    }
}

fn cookie_backend(r: &Response) -> Option<String> {
    r.set_cookie(COOKIE_NAME)
        .and_then(|c| Token::parse(&c.value))
        .map(|t| t.backend)
}

#[test]
fn sessions_of_a_dead_backend_fail_over_then_stick_cookie() {
    let (_backends, _dead, gw) = start_with_dead_b3(config::cookie_plugin());
    let users = 300;
    let results = par_map(users, THREADS, |i| -> Result<String, String> {
        let mut u = gw.user();
        let first = u.get("/").map_err(|e| format!("user {i}: {e}"))?;
        check_first(&first).map_err(|e| format!("user {i}: {e}"))?;
        if cookie_backend(&first).as_deref() != Some(first.backend()) {
            return Err(format!(
                "user {i}: the cookie must name the backend that answered: {}",
                first.summary()
            ));
        }
        for n in 0..2 {
            let r = u.get("/next").map_err(|e| format!("user {i}: {e}"))?;
            if r.status != 200
                || r.backend() != first.backend()
                || r.affinity() != "sticky"
                || cookie_backend(&r).is_some()
            {
                return Err(format!(
                    "user {i} follow-up {n}: not sticky on {}: {}",
                    first.backend(),
                    r.summary()
                ));
            }
        }
        Ok(first.affinity().to_string())
    });
    let failures: Vec<String> = results.iter().filter_map(|r| r.clone().err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {users} sessions failed:\n  {}",
        failures.len(),
        first_n(&failures, 10)
    );
    let reasons = tally(results.iter().filter_map(|r| r.as_deref().ok()));
    let failovers = reasons.get("reassigned").copied().unwrap_or(0);
    assert!(
        failovers >= 1,
        "no session's first request skipped the dead b3 as failover: {reasons:?}"
    );
    let counted = gw.wait_metric(
        "berth_requests_total",
        &[("upstream", UPSTREAM), ("reason", "failover")],
        |v| v >= failovers as f64,
    );
    assert_eq!(
        counted, failovers as f64,
        "failover requests counted ({reasons:?})"
    );
    assert_eq!(
        gw.metric("berth_requests_total", &[("backend", "b3")]),
        0.0,
        "nothing served by b3"
    );
    let served = gw.wait_metric("berth_requests_total", &[("class", "2xx")], |v| {
        v >= (users * 3) as f64
    });
    assert_eq!(served, (users * 3) as f64, "2xx responses");
    assert_eq!(
        gw.metric("berth_requests_total", &[("class", "5xx")]),
        0.0,
        "no 5xx"
    );
}

#[test]
fn sessions_of_a_dead_backend_fail_over_then_stick_header() {
    let (_backends, _dead, gw) = start_with_dead_b3(config::header_plugin("X-Session-Id"));
    let sessions = 300;
    let results = par_map(sessions, THREADS, |i| -> Result<String, String> {
        let id = format!("session-{i}");
        let req = Request::get("/").header("X-Session-Id", &id);
        let mut c = gw.client();
        let first = c.try_send(&req).map_err(|e| format!("{id}: {e}"))?;
        check_first(&first).map_err(|e| format!("{id}: {e}"))?;
        for n in 0..2 {
            let r = c.try_send(&req).map_err(|e| format!("{id}: {e}"))?;
            if r.status != 200 || r.backend() != first.backend() || r.affinity() != "sticky" {
                return Err(format!(
                    "{id} follow-up {n}: not sticky on {}: {}",
                    first.backend(),
                    r.summary()
                ));
            }
        }
        Ok(first.affinity().to_string())
    });
    let failures: Vec<String> = results.iter().filter_map(|r| r.clone().err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {sessions} sessions failed:\n  {}",
        failures.len(),
        first_n(&failures, 10)
    );
    let reasons = tally(results.iter().filter_map(|r| r.as_deref().ok()));
    assert!(
        reasons.get("reassigned").copied().unwrap_or(0) >= 1,
        "no failover at all: {reasons:?}"
    );
}

#[test]
fn sessions_of_a_killed_backend_move_on_their_next_request() {
    let mut backends = Backend::start_many(3);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let gw = Gateway::start(&config::app_config(&[config::cookie_plugin()], &specs));
    let users = 150;
    let mut people: Vec<(User, String)> = (0..users)
        .map(|i| {
            let mut u = gw.user();
            let r = u.get("/").unwrap_or_else(|e| panic!("user {i}: {e}"));
            assert_eq!(
                (r.status, r.affinity()),
                (200, "new"),
                "user {i}: {}",
                r.summary()
            );
            let home = r.backend().to_string();
            (u, home)
        })
        .collect();
    let on_b2 = people.iter().filter(|(_, h)| h == "b2").count();
    assert!(on_b2 > 0, "no session on b2 among {users}");
    backends[1].kill();

    let mut failures = Vec::new();
    let mut moved_to = Vec::new();
    for (i, (u, home)) in people.iter_mut().enumerate() {
        let r = match u.get("/after-kill") {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("user {i} (on {home}): {e}"));
                continue;
            }
        };
        if home == "b2" {
            let ok = r.status == 200
                && ["b1", "b3"].contains(&r.backend())
                && r.affinity() == "reassigned"
                && r.header("x-seen-previous-backend") == Some("b2")
                && cookie_backend(&r).as_deref() == Some(r.backend());
            if !ok {
                failures.push(format!(
                    "user {i}: expected reassigned from b2 with a new cookie: {}",
                    r.summary()
                ));
                continue;
            }
            moved_to.push(r.backend().to_string());
            *home = r.backend().to_string();
        } else if r.status != 200
            || r.backend() != home
            || r.affinity() != "sticky"
            || cookie_backend(&r).is_some()
        {
            failures.push(format!(
                "user {i}: expected sticky on {home}: {}",
                r.summary()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {users} users failed after b2 died:\n  {}",
        failures.len(),
        first_n(&failures, 10)
    );
    assert_eq!(moved_to.len(), on_b2);
    // Moved sessions now stick to their new backend.
    for (i, (u, home)) in people.iter_mut().enumerate() {
        let r = u
            .get("/settled")
            .unwrap_or_else(|e| panic!("user {i}: {e}"));
        assert_eq!(
            (r.status, r.backend(), r.affinity()),
            (200, home.as_str(), "sticky"),
            "user {i}: {}",
            r.summary()
        );
    }
    let served = gw.wait_metric("berth_requests_total", &[("class", "2xx")], |v| {
        v >= (users * 3) as f64
    });
    assert_eq!(served, (users * 3) as f64, "2xx responses");
    assert_eq!(
        gw.metric("berth_requests_total", &[("class", "5xx")]),
        0.0,
        "no 5xx"
    );
}
