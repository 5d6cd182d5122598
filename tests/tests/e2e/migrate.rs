//! Issue #3, must-show 4: `POST /admin/backends/{id}/migrate` moves sessions off a backend at a
//! bounded rate; each moved session's next request — and only that one — carries
//! `X-Berth-Affinity: reassigned` and `X-Berth-Previous-Backend`; no other session moves.
//! `GET /admin/sessions/{key}` shows a session's backend, backup, age and idle time.
use berth_tests::config::{self, UPSTREAM};
use berth_tests::sessions::{self, Placed};
use berth_tests::token::Token;
use berth_tests::{first_n, par_map, tally, Backend, Gateway, Request, User};
use std::time::{Duration, Instant};

const THREADS: usize = 4;

fn start(n: usize) -> (Vec<Backend>, Gateway) {
    let backends = Backend::start_many(n);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let gw = Gateway::start_with_admin(&config::header_app(&specs, &[]));
    (backends, gw)
}

fn busiest(placed: &[Placed]) -> (String, usize) {
    tally(placed.iter().map(|p| p.home.as_str()))
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .expect("sessions were placed")
}

/// POST migrate and check the 202 answer; the number scheduled.
fn migrate(gw: &Gateway, id: &str, body: Option<&str>) -> u64 {
    let path = format!("/admin/backends/{id}/migrate");
    let r = gw.admin("POST", &path, body);
    assert_eq!(r.status, 202, "POST {path} {body:?}: {}", r.summary());
    let v = r.json().unwrap_or_else(|e| panic!("POST {path}: {e}"));
    assert_eq!(v["backend"].as_str(), Some(id), "POST {path}: {v}");
    v["scheduled"]
        .as_u64()
        .unwrap_or_else(|| panic!("POST {path}: no numeric \"scheduled\" in {v}"))
}

/// Two visits of every session after `from` migrated: `moved` sessions (by where the admin API
/// says they are) are reassigned exactly once, on their first request; the rest stay sticky.
/// Returns how many moved.
fn check_after_migration(gw: &Gateway, placed: &[Placed], from: &str) -> usize {
    let now: Vec<String> = par_map(placed.len(), THREADS, |i| {
        gw.session_info(&placed[i].id)
            .unwrap_or_else(|| panic!("{}: no longer pinned", placed[i].id))
            .backend
    });
    let ids: Vec<String> = placed.iter().map(|p| p.id.clone()).collect();
    let mut failures = Vec::new();
    let mut moved = 0;
    for (visit, path) in ["/first-after", "/second-after"].into_iter().enumerate() {
        let results = sessions::visit(gw, &ids, THREADS, path);
        for ((p, r), now) in placed.iter().zip(&results).zip(&now) {
            let check = if p.home == *now {
                sessions::check_sticky(r, &p.home)
            } else if p.home != from {
                Err(format!(
                    "the admin API says it moved from {} to {now}",
                    p.home
                ))
            } else if visit == 0 {
                moved += 1;
                sessions::check_reassigned(r, from).and_then(|to| {
                    (to == *now)
                        .then_some(())
                        .ok_or(format!("went to {to}, the admin API says {now}"))
                })
            } else {
                sessions::check_sticky(r, now)
            };
            if let Err(e) = check {
                failures.push(format!("{path} {}: {e}", p.id));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} wrong responses after migrating from {from}:\n  {}",
        failures.len(),
        first_n(&failures, 12)
    );
    moved
}

#[test]
fn migrating_fifty_sessions_moves_exactly_fifty_once_at_a_bounded_rate() {
    let (_backends, gw) = start(4);
    let placed = sessions::open(&gw, &sessions::ids(0, 400), 8);
    let (m, on_m) = busiest(&placed);
    assert!(on_m > 60, "the busiest backend has only {on_m} of 400");
    let before = gw.backend_info(&m);
    assert_eq!(before.sessions, on_m as u64, "{before:?}");

    let t0 = Instant::now();
    let scheduled = migrate(&gw, &m, Some(r#"{"count":50,"rate":25}"#));
    assert_eq!(scheduled, 50);
    let target = on_m as u64 - 50;
    let mut seen = vec![on_m as u64];
    let took = loop {
        let n = gw.backend_info(&m).sessions;
        if seen.last() != Some(&n) {
            seen.push(n);
        }
        assert!(n >= target, "{m} lost more than 50 sessions: {seen:?}");
        if n == target {
            break t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "migration of 50 at 25/s not done in 30 s: {m}'s sessions went {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("{m}: sessions {seen:?} in {took:?}");
    // 50 at 25/s takes ~2 s; even a full second's burst up front leaves ≥ 1 s.
    assert!(
        took >= Duration::from_secs(1),
        "50 sessions at rate 25/s moved in {took:?} ({seen:?}): the rate is not bounded"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(gw.backend_info(&m).sessions, target, "no more than 50 move");
    let total: u64 = gw.backends().iter().map(|b| b.sessions).sum();
    assert_eq!(total, 400, "every session is still pinned somewhere");
    let counted = gw.wait_metric(
        "berth_sessions_migrated_total",
        &[("upstream", UPSTREAM)],
        |v| v >= 50.0,
    );
    assert_eq!(counted, 50.0, "berth_sessions_migrated_total");

    let moved = check_after_migration(&gw, &placed, &m);
    assert_eq!(moved, 50, "sessions that moved off {m}");
}

#[test]
fn migrating_without_a_count_empties_the_backend() {
    let (_backends, gw) = start(4);
    let placed = sessions::open(&gw, &sessions::ids(0, 200), THREADS);
    let (m, on_m) = busiest(&placed);
    let scheduled = migrate(&gw, &m, None);
    assert_eq!(
        scheduled, on_m as u64,
        "all of {m}'s sessions are scheduled"
    );
    let (row, took) = gw.wait_backend(&m, "empty", Duration::from_secs(30), |b| b.sessions == 0);
    eprintln!("{on_m} sessions off {m} at the default rate in {took:?}");
    assert_eq!(row.state, "active", "migrating is not draining: {row:?}");
    let moved = check_after_migration(&gw, &placed, &m);
    assert_eq!(moved, on_m);
    assert_eq!(
        migrate(&gw, &m, Some(r#"{"count":100000}"#)),
        0,
        "scheduled = min(count, its sessions)"
    );
}

#[test]
fn the_session_endpoint_shows_backend_backup_age_and_idle_time() {
    let (_backends, gw) = start(3);
    let odd = "user 42/å?&=";
    let mut client = gw.client();
    let mut placed = Vec::new();
    for id in ["plain-session", "user 42/x?y&z=1"] {
        let r = client.send(&sessions::request(id, "/"));
        assert_eq!((r.status, r.affinity()), (200, "new"), "{}", r.summary());
        placed.push((id, r.backend().to_string(), r.seen_backup().to_string()));
    }
    std::thread::sleep(Duration::from_millis(1200));
    for (id, home, backup) in &placed {
        let s = gw
            .session_info(id)
            .unwrap_or_else(|| panic!("GET /admin/sessions/{id:?}: not found"));
        assert_eq!(
            (s.upstream.as_str(), s.backend.as_str(), s.backup.as_deref()),
            (UPSTREAM, home.as_str(), Some(backup.as_str())),
            "{id:?}: {s:?}"
        );
        assert!(
            (1000..10_000).contains(&s.age_ms) && s.idle_ms >= 1000 && s.idle_ms <= s.age_ms,
            "{id:?}, idle for 1.2 s: {s:?}"
        );
    }
    let (id, home, _) = &placed[1];
    let before = gw.session_info(id).expect("pinned");
    let r = client.send(&sessions::request(id, "/again"));
    assert_eq!((r.backend(), r.affinity()), (home.as_str(), "sticky"));
    let after = gw.session_info(id).expect("pinned");
    assert!(
        after.idle_ms < 1000 && after.age_ms >= before.age_ms,
        "a request resets idle time, not age: before {before:?}, after {after:?}"
    );
    assert_eq!(gw.session_info("never-seen"), None);
    assert_eq!(gw.session_info(odd), None);
    // No affinity key: routed by the ring, nothing pinned.
    let r = client.send(&Request::get("/nokey"));
    assert_eq!((r.status, r.affinity()), (200, "ring"), "{}", r.summary());
}

#[test]
fn migrated_sessions_go_only_to_eligible_backends() {
    let (_backends, gw) = start(4);
    let placed = sessions::open(&gw, &sessions::ids(0, 200), THREADS);
    let homes = tally(placed.iter().map(|p| p.home.as_str()));
    let r = gw.admin("POST", "/admin/backends/b2/drain", None);
    assert_eq!(r.status, 200, "{}", r.summary());
    let on_b2 = gw.backend_info("b2").sessions;
    assert_eq!(on_b2, homes["b2"] as u64);
    let on_b1 = homes["b1"];
    assert_eq!(migrate(&gw, "b1", None), on_b1 as u64);
    gw.wait_backend("b1", "empty", Duration::from_secs(30), |b| b.sessions == 0);
    assert_eq!(
        gw.backend_info("b2").sessions,
        on_b2,
        "sessions migrated onto the draining b2"
    );
    let moved_to = tally(
        placed
            .iter()
            .filter(|p| p.home == "b1")
            .map(|p| gw.session_info(&p.id).expect("pinned").backend)
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str),
    );
    assert!(
        !moved_to.contains_key("b1") && !moved_to.contains_key("b2"),
        "b1's sessions went to {moved_to:?}"
    );
}

#[test]
fn migrated_cookie_sessions_get_a_cookie_for_their_new_backend() {
    let backends = Backend::start_many(3);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let gw = Gateway::start_with_admin(&config::app_config(&[config::cookie_plugin()], &specs));
    let cookie_backend = |r: &berth_tests::Response| {
        r.set_cookie(config::COOKIE_NAME)
            .and_then(|c| Token::parse(&c.value))
            .map(|t| t.backend)
    };
    let mut users: Vec<(User, String)> = (0..120)
        .map(|i| {
            let mut u = gw.user();
            let r = u.get("/").unwrap_or_else(|e| panic!("user {i}: {e}"));
            assert_eq!((r.status, r.affinity()), (200, "new"), "{}", r.summary());
            assert_eq!(cookie_backend(&r).as_deref(), Some(r.backend()));
            let home = r.backend().to_string();
            (u, home)
        })
        .collect();
    let (m, on_m) = tally(users.iter().map(|(_, h)| h.as_str()))
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .expect("users");
    // A cookie session exists (is pinned, can be migrated) once its token comes back.
    let row = gw.backend_info(&m);
    assert_eq!(
        row.sessions, 0,
        "no session before its token came back: {row:?}"
    );
    for (i, (u, home)) in users.iter_mut().enumerate() {
        let r = u.get("/again").unwrap_or_else(|e| panic!("user {i}: {e}"));
        assert_eq!(
            (r.status, r.backend(), r.affinity()),
            (200, home.as_str(), "sticky"),
            "user {i}: {}",
            r.summary()
        );
    }
    let row = gw.backend_info(&m);
    assert_eq!(
        row.sessions, on_m as u64,
        "cookie sessions are counted: {row:?}"
    );
    assert_eq!(migrate(&gw, &m, Some(r#"{"count":10}"#)), 10);
    gw.wait_backend(&m, "10 sessions fewer", Duration::from_secs(5), |b| {
        b.sessions == on_m as u64 - 10
    });
    let mut failures = Vec::new();
    let mut moved = 0;
    for (i, (u, home)) in users.iter_mut().enumerate() {
        let r = u.get("/after").unwrap_or_else(|e| panic!("user {i}: {e}"));
        if r.status == 200 && r.backend() == home.as_str() && r.affinity() == "sticky" {
            if cookie_backend(&r).is_some() {
                failures.push(format!("user {i}: sticky but re-issued: {}", r.summary()));
            }
            continue;
        }
        let ok = *home == m
            && r.status == 200
            && r.backend() != m
            && r.affinity() == "reassigned"
            && r.previous() == m
            && cookie_backend(&r).as_deref() == Some(r.backend());
        if ok {
            moved += 1;
            *home = r.backend().to_string();
        } else {
            failures.push(format!(
                "user {i} (home {home}): want sticky, or reassigned from {m} with a cookie for \
                 the new backend: {}",
                r.summary()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", first_n(&failures, 10));
    assert_eq!(moved, 10, "users moved off {m}");
    for (i, (u, home)) in users.iter_mut().enumerate() {
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
}

#[test]
fn the_configured_migrate_rate_is_the_default() {
    let backends = Backend::start_many(2);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let gw = Gateway::start_with_admin(&config::header_app(
        &specs,
        &[("upstreams.app.migrate_rate", "20")],
    ));
    let placed = sessions::open(&gw, &sessions::ids(0, 120), THREADS);
    let (m, on_m) = busiest(&placed);
    assert!(on_m >= 40, "{m} has {on_m} of 120");
    let t0 = Instant::now();
    assert_eq!(migrate(&gw, &m, Some(r#"{"count":40}"#)), 40);
    let target = on_m as u64 - 40;
    let (_, _) = gw.wait_backend(&m, "40 sessions fewer", Duration::from_secs(10), |b| {
        b.sessions == target
    });
    let took = t0.elapsed();
    eprintln!("40 sessions at migrate_rate 20/s in {took:?}");
    assert!(
        took >= Duration::from_secs(1),
        "40 sessions at the configured 20/s moved in {took:?}: migrate_rate is not applied"
    );
}
