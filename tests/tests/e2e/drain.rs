//! Issue #3, must-show 3: draining a backend.
//!
//! * `POST /admin/backends/{id}/drain`: no new session reaches it, every existing session keeps
//!   reaching it, `GET /admin/backends` shows `draining` and the remaining sessions, which fall
//!   to 0 as they expire (idle TTL 10 s); then the state is `drained`. `undrain` makes it
//!   `active` again and it takes new sessions.
//! * With a deadline: at the deadline the state is `drained` and its still-active sessions are
//!   reassigned (told once) to other backends.
//! * `drain: true` in the config starts the backend draining.
use berth_tests::admin::BackendInfo;
use berth_tests::sessions::{self, Placed};
use berth_tests::{config, first_n, tally, Backend, Gateway};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const SESSIONS: usize = 200;
const THREADS: usize = 4;

fn start(patches: &[(&str, &str)]) -> (Vec<Backend>, Gateway) {
    let backends = Backend::start_many(4);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let gw = Gateway::start_with_admin(&config::header_app(&specs, patches));
    (backends, gw)
}

/// The backend with the most sessions and how many it has.
fn busiest(placed: &[Placed]) -> (String, usize) {
    tally(placed.iter().map(|p| p.home.as_str()))
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .expect("sessions were placed")
}

/// POST an admin action and expect 200 with the backend object in `state`.
fn act(gw: &Gateway, path: &str, body: Option<&str>, state: &str) -> BackendInfo {
    let r = gw.admin("POST", path, body);
    assert_eq!(r.status, 200, "POST {path} {body:?}: {}", r.summary());
    let info = r
        .json()
        .and_then(|v| BackendInfo::from_json(&v))
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    assert_eq!(info.state, state, "POST {path}: {info:?}");
    info
}

/// Visit every session once; every one must stick to its home (`Err` lists the others).
fn all_sticky(gw: &Gateway, placed: &[Placed]) -> Result<(), String> {
    let ids: Vec<String> = placed.iter().map(|p| p.id.clone()).collect();
    let results = sessions::visit(gw, &ids, THREADS, "/active");
    let bad: Vec<String> = placed
        .iter()
        .zip(&results)
        .filter_map(|(p, r)| {
            sessions::check_sticky(r, &p.home)
                .err()
                .map(|e| format!("{}: {e}", p.id))
        })
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} sessions:\n  {}",
            bad.len(),
            placed.len(),
            first_n(&bad, 10)
        ))
    }
}

/// New sessions `from..from+n`: their homes.
fn new_homes(gw: &Gateway, from: usize, n: usize) -> BTreeMap<String, usize> {
    let placed = sessions::open(gw, &sessions::ids(from, n), THREADS);
    tally(placed.iter().map(|p| p.home.as_str()))
}

#[test]
fn a_drained_backend_keeps_its_sessions_until_they_expire_then_undrain() {
    // Idle TTL 10 s: a session visited every round never goes idle that long, even when a
    // loaded machine makes a round take seconds.
    let (_backends, gw) = start(&[("upstreams.app.sessions.idle_ttl", "10s")]);
    let placed = sessions::open(&gw, &sessions::ids(0, SESSIONS), THREADS);
    let (d, on_d) = busiest(&placed);
    let row = gw.backend_info(&d);
    assert_eq!(
        (row.state.as_str(), row.health.as_str(), row.sessions),
        ("active", "up", on_d as u64),
        "{d} before the drain: {row:?}"
    );
    let info = act(&gw, &format!("/admin/backends/{d}/drain"), None, "draining");
    assert_eq!(
        (info.id.as_str(), info.sessions),
        (d.as_str(), on_d as u64),
        "{info:?}"
    );

    // Keep every session busy for longer than the idle TTL; meanwhile open new sessions.
    let start = Instant::now();
    let mut round = 0;
    while round < 3 || start.elapsed() < Duration::from_secs(11) {
        all_sticky(&gw, &placed).unwrap_or_else(|e| panic!("round {round} while {d} drains: {e}"));
        let homes = new_homes(&gw, 1000 + round * 40, 40);
        assert!(
            !homes.contains_key(&d),
            "round {round}: new sessions reached the draining {d}: {homes:?}"
        );
        round += 1;
    }
    let row = gw.backend_info(&d);
    assert_eq!(
        (row.state.as_str(), row.sessions),
        ("draining", on_d as u64),
        "{d} after {round} busy rounds: every session is still there: {row:?}"
    );

    // Now only the other backends' sessions stay busy; the drained one's expire.
    let others: Vec<Placed> = placed.iter().filter(|p| p.home != d).cloned().collect();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let last = loop {
        all_sticky(&gw, &others).unwrap_or_else(|e| panic!("while {d}'s sessions expire: {e}"));
        let row = gw.backend_info(&d);
        if seen.last() != Some(&(row.sessions, row.state.clone())) {
            seen.push((row.sessions, row.state.clone()));
        }
        assert!(
            row.sessions == 0 || row.state == "draining",
            "{d} is {:?} with {} sessions left (history {seen:?})",
            row.state,
            row.sessions
        );
        if row.sessions == 0 && row.state == "drained" {
            break row;
        }
        assert!(
            Instant::now() < deadline,
            "{d} not drained 60 s after its sessions went idle (idle TTL 10 s); history \
             (sessions, state) {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("{d}: (sessions, state) over time {seen:?}, last {last:?}");
    // Its old sessions come back as new ones, elsewhere.
    let ids: Vec<String> = placed
        .iter()
        .filter(|p| p.home == d)
        .map(|p| p.id.clone())
        .collect();
    for (id, r) in ids.iter().zip(sessions::visit(&gw, &ids, THREADS, "/back")) {
        let r = r.unwrap_or_else(|e| panic!("{id}: {e}"));
        assert!(
            r.status == 200 && r.backend() != d && !r.backend().is_empty(),
            "{id} (expired, was on the drained {d}): {}",
            r.summary()
        );
    }
    assert!(
        !new_homes(&gw, 2000, 40).contains_key(&d),
        "new sessions reached the drained {d}"
    );

    let info = act(&gw, &format!("/admin/backends/{d}/undrain"), None, "active");
    assert_eq!(info.id, d);
    let homes = new_homes(&gw, 3000, 160);
    let got = homes.get(&d).copied().unwrap_or(0);
    assert!(
        got >= 10,
        "{d} got {got} of 160 new sessions after undrain (≈40 expected): {homes:?}"
    );
}

#[test]
fn a_drain_deadline_reassigns_the_sessions_still_active() {
    let (_backends, gw) = start(&[]);
    let placed = sessions::open(&gw, &sessions::ids(0, SESSIONS), THREADS);
    let (d, on_d) = busiest(&placed);
    let deadline = Duration::from_secs(2);
    let t0 = Instant::now();
    act(
        &gw,
        &format!("/admin/backends/{d}/drain"),
        Some(r#"{"deadline":"2s"}"#),
        "draining",
    );

    let ids: Vec<String> = placed.iter().map(|p| p.id.clone()).collect();
    let mut current: Vec<String> = placed.iter().map(|p| p.home.clone()).collect();
    let mut moved_at: Vec<Option<Duration>> = vec![None; placed.len()];
    let mut failures = Vec::new();
    let mut rounds = 0;
    // Visit every session until all of d's have moved, and at least a little past the
    // deadline; a loaded machine only makes this take longer (up to a generous 60 s).
    let all_moved = |moved_at: &[Option<Duration>]| {
        placed
            .iter()
            .zip(moved_at)
            .all(|(p, m)| p.home != d || m.is_some())
    };
    while t0.elapsed() < deadline + Duration::from_millis(500)
        || (!all_moved(&moved_at) && t0.elapsed() < Duration::from_secs(60))
    {
        let results = sessions::visit(&gw, &ids, THREADS, "/busy");
        let at = t0.elapsed();
        for (i, r) in results.iter().enumerate() {
            if sessions::check_sticky(r, &current[i]).is_ok() {
                continue;
            }
            if placed[i].home == d && moved_at[i].is_none() {
                match sessions::check_reassigned(r, &d) {
                    Ok(to) => {
                        moved_at[i] = Some(at);
                        current[i] = to;
                    }
                    Err(e) => failures.push(format!("{} at {at:?}: {e}", ids[i])),
                }
            } else {
                let e = sessions::check_sticky(r, &current[i]).unwrap_err();
                failures.push(format!(
                    "{} (home {}) at {at:?}: {e}",
                    ids[i], placed[i].home
                ));
            }
        }
        rounds += 1;
    }
    assert!(
        failures.is_empty(),
        "{} wrong responses over {rounds} rounds:\n  {}",
        failures.len(),
        first_n(&failures, 10)
    );
    // Moved, and not before the deadline: `t0` was taken before the drain request, and a
    // visit's time is taken after its answer, so an early move shows as t < deadline (a lower
    // bound, which load cannot break). When after the deadline does not matter.
    let early_or_never: Vec<String> = placed
        .iter()
        .zip(&moved_at)
        .filter(|(p, _)| p.home == d)
        .filter(|(_, m)| m.is_none_or(|t| t < deadline))
        .map(|(p, m)| format!("{} moved at {m:?}", p.id))
        .collect();
    assert!(
        early_or_never.is_empty(),
        "{} of {on_d} sessions of {d} moved before the {deadline:?} deadline or never, over \
         {rounds} rounds:\n  {}",
        early_or_never.len(),
        first_n(&early_or_never, 10)
    );
    let (row, _) = gw.wait_backend(&d, "drained", Duration::from_secs(15), |b| {
        b.state == "drained"
    });
    assert_eq!(row.sessions, 0, "{d} after the deadline: {row:?}");

    let info = act(&gw, &format!("/admin/backends/{d}/undrain"), None, "active");
    assert_eq!(info.id, d);
    let homes = new_homes(&gw, 3000, 160);
    assert!(
        homes.get(&d).copied().unwrap_or(0) >= 10,
        "{d} takes new sessions again after undrain: {homes:?}"
    );
}

#[test]
fn drain_true_in_the_config_starts_the_backend_draining() {
    let (_backends, gw) = start(&[("upstreams.app.backends.0.drain", "true")]);
    // Draining from the start, with no session: drained at the sweeper's next pass (which
    // of the two a first look sees depends on when it looks, so wait for the second).
    gw.wait_backend("b1", "drained", Duration::from_secs(15), |b| {
        b.state == "drained"
    });
    let others = gw.backends().into_iter().filter(|b| b.id != "b1");
    for b in others {
        assert_eq!(b.state, "active", "{b:?}");
    }
    let homes = new_homes(&gw, 0, 160);
    assert!(
        !homes.contains_key("b1"),
        "new sessions reached the draining b1: {homes:?}"
    );

    act(&gw, "/admin/backends/b1/undrain", None, "active");
    let homes = new_homes(&gw, 1000, 160);
    assert!(
        homes.get("b1").copied().unwrap_or(0) >= 10,
        "b1 takes new sessions after undrain: {homes:?}"
    );
}

#[test]
fn a_draining_backend_is_nobody_s_failover_target() {
    let (mut backends, gw) = start(&[]);
    let placed = sessions::open(&gw, &sessions::ids(0, SESSIONS), THREADS);
    act(&gw, "/admin/backends/b2/drain", None, "draining");
    backends[0].kill();
    let ids: Vec<String> = placed.iter().map(|p| p.id.clone()).collect();
    let results = sessions::visit(&gw, &ids, THREADS, "/after-kill");
    let mut bad = Vec::new();
    let mut backed_by_b2 = 0;
    for (p, r) in placed.iter().zip(&results) {
        let check = if p.home == "b1" {
            if p.backup == "b2" {
                backed_by_b2 += 1;
            }
            sessions::check_reassigned(r, "b1").and_then(|to| {
                (to != "b2").then_some(()).ok_or(format!(
                    "failed over to the draining b2 (backup was {})",
                    p.backup
                ))
            })
        } else {
            sessions::check_sticky(r, &p.home)
        };
        if let Err(e) = check {
            bad.push(format!("{}: {e}", p.id));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {SESSIONS} sessions after b1 died while b2 drains:\n  {}",
        bad.len(),
        first_n(&bad, 10)
    );
    assert!(
        backed_by_b2 > 0,
        "no b1 session had b2 as its backup: the test proved nothing"
    );
}

#[test]
fn migrating_every_session_off_a_draining_backend_drains_it() {
    let (_backends, gw) = start(&[]);
    let placed = sessions::open(&gw, &sessions::ids(0, SESSIONS), THREADS);
    let (d, on_d) = busiest(&placed);
    act(&gw, &format!("/admin/backends/{d}/drain"), None, "draining");
    let r = gw.admin("POST", &format!("/admin/backends/{d}/migrate"), None);
    assert_eq!(r.status, 202, "{}", r.summary());
    let (row, took) = gw.wait_backend(&d, "drained", Duration::from_secs(10), |b| {
        b.state == "drained"
    });
    assert_eq!(row.sessions, 0, "{row:?}");
    eprintln!("{on_d} sessions migrated off the draining {d}: drained after {took:?}");
    // Each of its sessions is told once, on its next request; the rest never move.
    let ids: Vec<String> = placed.iter().map(|p| p.id.clone()).collect();
    let mut current: Vec<String> = placed.iter().map(|p| p.home.clone()).collect();
    for visit in 0..2 {
        let results = sessions::visit(&gw, &ids, THREADS, "/after");
        let mut bad = Vec::new();
        for (i, r) in results.iter().enumerate() {
            let check = if visit == 0 && placed[i].home == d {
                sessions::check_reassigned(r, &d).map(|to| current[i] = to)
            } else {
                sessions::check_sticky(r, &current[i])
            };
            if let Err(e) = check {
                bad.push(format!("visit {visit}, {}: {e}", ids[i]));
            }
        }
        assert!(bad.is_empty(), "{}", first_n(&bad, 10));
    }
}
