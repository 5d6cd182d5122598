//! Issue #3, must-show 5: membership changes without a restart — through the admin API
//! (`POST /admin/backends`, `DELETE /admin/backends/{id}`) and through a config reload
//! (rewrite the file, SIGHUP). Adding moves no pinned session and the new backend takes new
//! sessions; removing moves only the removed backend's sessions (told `reassigned`). A reload
//! with an invalid config changes nothing and logs the errors.
use berth_tests::admin::BackendInfo;
use berth_tests::sessions::{self, Placed};
use berth_tests::{config, first_n, tally, Backend, Gateway};
use std::net::SocketAddr;
use std::time::Duration;

const SESSIONS: usize = 300;
const THREADS: usize = 6;

fn specs(backends: &[&Backend]) -> Vec<(String, SocketAddr)> {
    backends.iter().map(|b| b.spec()).collect()
}

/// Visit every session once: those on `removed` must be reassigned away from it, the others
/// sticky. Updates homes; `Err` lists what went wrong.
fn visit_all(gw: &Gateway, placed: &mut [Placed], removed: Option<&str>) -> Result<usize, String> {
    let ids: Vec<String> = placed.iter().map(|p| p.id.clone()).collect();
    let results = sessions::visit(gw, &ids, THREADS, "/visit");
    let mut bad = Vec::new();
    let mut moved = 0;
    for (p, r) in placed.iter_mut().zip(&results) {
        let check = match removed {
            Some(gone) if p.home == gone => sessions::check_reassigned(r, gone).map(|to| {
                moved += 1;
                p.home = to;
            }),
            _ => sessions::check_sticky(r, &p.home),
        };
        if let Err(e) = check {
            bad.push(format!("{}: {e}", p.id));
        }
    }
    if bad.is_empty() {
        Ok(moved)
    } else {
        Err(format!(
            "{} of {} sessions:\n  {}",
            bad.len(),
            placed.len(),
            first_n(&bad, 10)
        ))
    }
}

fn new_homes(gw: &Gateway, from: usize, n: usize) -> std::collections::BTreeMap<String, usize> {
    let placed = sessions::open(gw, &sessions::ids(from, n), THREADS);
    tally(placed.iter().map(|p| p.home.as_str()))
}

#[test]
fn adding_and_removing_backends_through_the_admin_api() {
    let backends = Backend::start_many(4);
    let three: Vec<&Backend> = backends[..3].iter().collect();
    let gw = Gateway::start_with_admin(&config::header_app(&specs(&three), &[]));
    let mut placed = sessions::open(&gw, &sessions::ids(0, SESSIONS), THREADS);
    let first_on_b2 = placed.iter().filter(|p| p.home == "b2").count() as u64;

    let body = format!(r#"{{"id":"b4","addr":"{}","weight":1}}"#, backends[3].addr);
    let r = gw.admin("POST", "/admin/backends", Some(&body));
    assert_eq!(
        r.status,
        201,
        "POST /admin/backends {body}: {}",
        r.summary()
    );
    let added = r
        .json()
        .and_then(|v| BackendInfo::from_json(&v))
        .unwrap_or_else(|e| panic!("POST /admin/backends: {e}"));
    assert_eq!(
        (
            added.upstream.as_str(),
            added.id.as_str(),
            added.addr.clone(),
            added.weight
        ),
        ("app", "b4", backends[3].addr.to_string(), 1),
        "{added:?}"
    );
    assert_eq!(
        (added.state.as_str(), added.sessions),
        ("active", 0),
        "{added:?}"
    );
    let ids: Vec<String> = gw.backends().into_iter().map(|b| b.id).collect();
    assert_eq!(
        ids,
        ["b1", "b2", "b3", "b4"],
        "GET /admin/backends after the add"
    );

    visit_all(&gw, &mut placed, None).unwrap_or_else(|e| panic!("after adding b4: {e}"));
    let homes = new_homes(&gw, 1000, SESSIONS);
    let on_b4 = homes.get("b4").copied().unwrap_or(0);
    assert!(
        on_b4 >= SESSIONS / 10,
        "b4 got {on_b4} of {SESSIONS} new sessions: {homes:?}"
    );
    placed.extend(sessions::ids(1000, SESSIONS).into_iter().map(|id| {
        let info = gw.session_info(&id).expect("just opened");
        Placed {
            id,
            home: info.backend,
            backup: info.backup.unwrap_or_default(),
        }
    }));

    let on_b2 = gw.backend_info("b2").sessions;
    let expected = placed.iter().filter(|p| p.home == "b2").count() as u64;
    assert_eq!(on_b2, expected, "sessions pinned to b2");
    let r = gw.admin("DELETE", "/admin/backends/b2", None);
    assert_eq!(r.status, 200, "DELETE /admin/backends/b2: {}", r.summary());
    let v = r.json().unwrap_or_else(|e| panic!("DELETE: {e}"));
    assert_eq!(
        (v["removed"].as_str(), v["sessions"].as_u64()),
        (Some("b2"), Some(on_b2)),
        "DELETE answer {v}"
    );
    let ids: Vec<String> = gw.backends().into_iter().map(|b| b.id).collect();
    assert_eq!(
        ids,
        ["b1", "b3", "b4"],
        "GET /admin/backends after the delete"
    );
    let moved = visit_all(&gw, &mut placed, Some("b2"))
        .unwrap_or_else(|e| panic!("after removing b2: {e}"));
    assert_eq!(moved as u64, on_b2);
    visit_all(&gw, &mut placed, None).unwrap_or_else(|e| panic!("the moved sessions stick: {e}"));
    // b2 served one visit per first-batch session of its own (after the add), none since.
    assert_eq!(backends[1].count_path("/visit"), first_on_b2);
    let r = gw.admin("GET", "/admin/backends/b2", None);
    assert_eq!(r.status, 404, "a removed backend: {}", r.summary());
    let r = gw.admin("DELETE", "/admin/backends/b2", None);
    assert_eq!(r.status, 404, "removing twice: {}", r.summary());

    // Back under the same id and address: nothing moves back to it, new sessions reach it.
    let body = format!(r#"{{"id":"b2","addr":"{}"}}"#, backends[1].addr);
    let r = gw.admin("POST", "/admin/backends", Some(&body));
    assert_eq!(r.status, 201, "re-adding b2: {}", r.summary());
    visit_all(&gw, &mut placed, None).unwrap_or_else(|e| panic!("after re-adding b2: {e}"));
    assert_eq!(
        backends[1].count_path("/visit"),
        first_on_b2,
        "a session moved back to b2"
    );
    let homes = new_homes(&gw, 5000, SESSIONS);
    assert!(
        homes.get("b2").copied().unwrap_or(0) >= SESSIONS / 10,
        "the re-added b2 takes new sessions: {homes:?}"
    );
}

#[test]
fn adding_and_removing_backends_through_a_config_reload() {
    let backends = Backend::start_many(4);
    let three: Vec<&Backend> = backends[..3].iter().collect();
    let gw = Gateway::start_with_admin(&config::header_app(&specs(&three), &[]));
    let mut placed = sessions::open(&gw, &sessions::ids(0, SESSIONS), THREADS);
    let pid = gw.pid();

    let all: Vec<&Backend> = backends.iter().collect();
    gw.rewrite_config(&config::header_app(&specs(&all), &[]));
    gw.sighup();
    gw.wait_backends(Duration::from_secs(15), |rows| {
        rows.iter().any(|b| b.id == "b4")
    })
    .unwrap_or_else(|rows| panic!("b4 not listed 15 s after SIGHUP: {rows:?}"));
    assert_eq!(gw.pid(), pid, "reloaded in place");
    visit_all(&gw, &mut placed, None).unwrap_or_else(|e| panic!("after adding b4 by SIGHUP: {e}"));
    let homes = new_homes(&gw, 1000, SESSIONS);
    assert!(
        homes.get("b4").copied().unwrap_or(0) >= SESSIONS / 10,
        "b4 takes new sessions after the reload: {homes:?}"
    );

    let without_b2: Vec<&Backend> = backends.iter().filter(|b| b.name != "b2").collect();
    gw.rewrite_config(&config::header_app(&specs(&without_b2), &[]));
    gw.sighup();
    gw.wait_backends(Duration::from_secs(15), |rows| {
        rows.iter().all(|b| b.id != "b2")
    })
    .unwrap_or_else(|rows| panic!("b2 still listed 15 s after SIGHUP: {rows:?}"));
    let on_b2 = placed.iter().filter(|p| p.home == "b2").count();
    let moved = visit_all(&gw, &mut placed, Some("b2"))
        .unwrap_or_else(|e| panic!("after removing b2 by SIGHUP: {e}"));
    assert_eq!(moved, on_b2);
}

/// A SIGHUP that comes while Berth is still starting (systemd's `ExecReload` or a deploy tool
/// right after a start) is a reload applied once Berth runs — not SIGHUP's default action,
/// which ended the process before it listened for the signal.
#[test]
fn a_sighup_while_starting_is_applied_once_berth_runs() {
    let backends = Backend::start_many(2);
    let one: Vec<&Backend> = backends[..1].iter().collect();
    let both: Vec<&Backend> = backends.iter().collect();
    let mut gw = Gateway::start_with_early_sighup(
        &config::header_app(&specs(&one), &[]),
        &config::header_app(&specs(&both), &[]),
        &[(berth_tests::admin::TOKEN_ENV, berth_tests::admin::TOKEN)],
    );
    gw.wait_backends(Duration::from_secs(15), |rows| {
        rows.iter().any(|b| b.id == "b2")
    })
    .unwrap_or_else(|rows| panic!("b2 (added by the early SIGHUP) not listed: {rows:?}"));
    assert!(gw.is_running());
    let homes = new_homes(&gw, 0, 100);
    assert_eq!(homes.len(), 2, "both backends take sessions: {homes:?}");
}

#[test]
fn a_reload_with_an_invalid_config_changes_nothing_and_logs_the_errors() {
    let backends = Backend::start_many(3);
    let all: Vec<&Backend> = backends.iter().collect();
    let mut gw = Gateway::start_with_admin(&config::header_app(&specs(&all), &[]));
    let mut placed = sessions::open(&gw, &sessions::ids(0, 150), THREADS);
    let before = gw.backends_json();

    // Drop b3 (a change that must NOT happen), break b2's address, add an unknown key.
    let mut yaml = config::header_app(&specs(&all[..2]), &[]);
    yaml = config::set(&yaml, "upstreams.app.backends.1.addr", "not-an-address");
    yaml = config::set(&yaml, "upstreams.app.bogus_key", "1");
    gw.rewrite_config(&yaml);
    gw.sighup();
    let logged = berth_tests::wait_for(Duration::from_secs(15), Duration::from_millis(100), || {
        let log = gw.log();
        (log.contains("upstreams.app.backends[1].addr") && log.contains("bogus_key")).then_some(())
    });
    assert!(
        gw.is_running(),
        "the gateway died on SIGHUP with an invalid config"
    );
    assert!(
        logged.is_some(),
        "the reload errors (upstreams.app.backends[1].addr, bogus_key) are not in the log:\n{}",
        gw.log_tail(30)
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(gw.backends_json(), before, "GET /admin/backends changed");
    visit_all(&gw, &mut placed, None).unwrap_or_else(|e| panic!("after the refused reload: {e}"));
    assert!(gw.is_running());
}

#[test]
fn a_reload_can_start_and_end_a_drain() {
    let backends = Backend::start_many(3);
    let all: Vec<&Backend> = backends.iter().collect();
    let gw = Gateway::start_with_admin(&config::header_app(&specs(&all), &[]));
    let mut placed = sessions::open(&gw, &sessions::ids(0, 150), THREADS);
    let drained = config::header_app(&specs(&all), &[("upstreams.app.backends.0.drain", "true")]);
    gw.rewrite_config(&drained);
    gw.sighup();
    gw.wait_backend("b1", "draining", Duration::from_secs(15), |b| {
        b.state == "draining"
    });
    visit_all(&gw, &mut placed, None).unwrap_or_else(|e| panic!("b1 draining by reload: {e}"));
    let homes = new_homes(&gw, 1000, 150);
    assert!(
        !homes.contains_key("b1"),
        "new sessions reached the draining b1: {homes:?}"
    );

    gw.rewrite_config(&config::header_app(&specs(&all), &[]));
    gw.sighup();
    gw.wait_backend("b1", "active", Duration::from_secs(15), |b| {
        b.state == "active"
    });
    let homes = new_homes(&gw, 2000, 150);
    assert!(
        homes.get("b1").copied().unwrap_or(0) >= 10,
        "b1 takes new sessions after the drain was removed from the config: {homes:?}"
    );
}
