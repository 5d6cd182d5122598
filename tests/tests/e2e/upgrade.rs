//! Issue #5, item 1: zero-downtime upgrade with state hand-over (`berth -u`, SIGQUIT).
//!
//! Under continuous load — 50 header sessions (X-Session-Id) and 50 learned-cookie sessions
//! (JSESSIONID, learn mode) whose pins live only in the overlay, 50 cookie sessions (Berth's
//! signed token), plus header sessions opened during the load, over keep-alive and new
//! connections — Berth is upgraded twice: no request fails, no session changes backend, a
//! drained backend stays drained, a backend added through the admin API stays, and each old
//! process exits after its grace period. The setup makes pins and ring disagree (a backend
//! added at runtime, one draining, one drained, learned sessions placed by the app), so
//! without the hand-over sessions would move.

pub(crate) mod scenario;
use berth_tests::config;
use berth_tests::{first_n, Backend, Gateway, Request};
use scenario::*;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[test]
fn upgrading_twice_under_load_fails_no_request_and_moves_no_session() {
    let backends = Backend::start_many(5);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let app: Vec<_> = specs[..4].to_vec();
    let learn_specs: Vec<_> = [0, 1, 3].iter().map(|&i| specs[i].clone()).collect();
    let mut gw = Gateway::start_with_admin(&config(&app, &learn_specs));
    let mut sessions = open_sessions(&gw);

    // Runtime changes the file does not know about: b5 added, b2 draining, b3 drained.
    let body = format!(
        "{{\"upstream\":\"app\",\"id\":\"b5\",\"addr\":\"{}\"}}",
        backends[4].addr
    );
    assert_eq!(gw.admin("POST", "/admin/backends", Some(&body)).status, 201);
    let r = gw.admin("POST", "/admin/backends/b2/drain?upstream=app", None);
    assert_eq!(r.status, 200, "{}", r.summary());
    let r = gw.admin(
        "POST",
        "/admin/backends/b3/drain",
        Some("{\"deadline\":\"1ms\"}"),
    );
    assert_eq!(r.status, 200, "{}", r.summary());
    gw.wait_backend("b3", "drained", Duration::from_secs(5), |b| {
        b.state == "drained"
    });
    // b3's sessions move now (before the upgrades), once.
    let mut client = gw.client();
    let mut moved_off_b3 = 0;
    for s in sessions.iter_mut() {
        let r = client.send(&s.request("/settle"));
        assert_eq!(r.status, 200, "{}: {}", s.name(), r.summary());
        if s.home == "b3" {
            assert_eq!(r.affinity(), "reassigned", "{}: {}", s.name(), r.summary());
            s.home = r.backend().to_string();
            moved_off_b3 += 1;
        } else {
            assert_eq!(
                (r.backend(), r.affinity()),
                (s.home.as_str(), "sticky"),
                "{}",
                s.name()
            );
        }
        s.store(&r);
    }
    let on_draining = sessions
        .iter()
        .filter(|s| matches!(s.kind, Kind::Header(_)) && s.home == "b2")
        .count();
    // Without the overlay these could not stay: no new placement goes to a draining backend.
    assert!(on_draining >= 3, "only {on_draining} header sessions on b2");
    assert!(
        moved_off_b3 >= 3,
        "only {moved_off_b3} sessions moved off b3"
    );
    let b3_before = backends[2].count();

    // A keep-alive connection to the first process, for sessions it learns after the snapshot.
    let mut to_old = gw.client();
    assert_eq!(
        to_old
            .send(&Request::get("/open").header("Host", LEARN_HOST))
            .status,
        200
    );

    // Phases: 0 before the first upgrade, 1 during it (until the old process exited), 2
    // between, 3 during the second, 4 after.
    let load = Load::default();
    let mut parts: Vec<Vec<Session>> = vec![Vec::new(); THREADS];
    for (i, s) in sessions.iter().enumerate() {
        parts[i % THREADS].push(s.clone());
    }
    let mut late: Vec<Session> = Vec::new();
    let mut exits = Vec::new();
    let connections: Vec<u64> = std::thread::scope(|scope| {
        let _stop = StopOnDrop(&load.stop);
        let addr = gw.addr;
        let handles: Vec<_> = parts
            .into_iter()
            .enumerate()
            .map(|(t, mine)| {
                let load = &load;
                scope.spawn(move || run_load(addr, load, t, mine, &TAKES_NEW).connections)
            })
            .collect();
        std::thread::sleep(Duration::from_secs(1));

        // Upgrade 1.
        load.phase.store(1, Ordering::SeqCst);
        let mut old = gw.upgrade();
        let new_pid = gw.pid().expect("running");
        // The old process still serves this connection: what it learns now is not in the
        // snapshot the new process took, only in the changes that follow it.
        for i in 0..10 {
            late.push(learn(&mut to_old, &format!("late-{i}")));
        }
        assert_eq!(to_old.connections_opened(), 1, "served by the old process");
        for s in &late {
            let Kind::Learn(v) = &s.kind else {
                unreachable!()
            };
            let path = format!("/admin/sessions/{v}?upstream=learn");
            let arrived =
                berth_tests::wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
                    let r = gw.admin_on(new_pid, "GET", &path, None);
                    (r.status == 200).then(|| r.json().expect("JSON"))
                });
            let info = arrived.unwrap_or_else(|| {
                panic!(
                    "{v}, learned by the old process after the snapshot, never reached the new one"
                )
            });
            assert_eq!(info["backend"], s.home.as_str(), "{v}: {info}");
        }
        check_membership(&gw, new_pid, "after upgrade 1");
        let (status, took) = old.wait_exit(EXIT_TIMEOUT);
        exits.push((status, took));
        load.phase.store(2, Ordering::SeqCst);
        std::thread::sleep(Duration::from_secs(1));

        // Upgrade 2.
        load.phase.store(3, Ordering::SeqCst);
        let mut old = gw.upgrade();
        check_membership(&gw, gw.pid().expect("running"), "after upgrade 2");
        let (status, took) = old.wait_exit(EXIT_TIMEOUT);
        exits.push((status, took));
        load.phase.store(4, Ordering::SeqCst);
        std::thread::sleep(Duration::from_secs(1));
        load.stop.store(true, Ordering::SeqCst);
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });

    let sent: Vec<u64> = load
        .sent
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .collect();
    let failures = load
        .failures
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    println!(
        "requests per phase (before, upgrade 1, between, upgrade 2, after): {sent:?}; sessions \
         opened during the load: {} ({} later requests answered `new` again, same backend); \
         connections per thread: {connections:?}; old processes exited after {:?}",
        load.opened.load(Ordering::Relaxed),
        load.raced.load(Ordering::Relaxed),
        exits.iter().map(|(_, t)| *t).collect::<Vec<_>>()
    );
    assert!(
        failures.is_empty(),
        "{} of {} requests failed or changed backend:\n  {}",
        failures.len(),
        sent.iter().sum::<u64>(),
        first_n(&failures, 15)
    );
    assert!(sent.iter().all(|n| *n > 0), "load in every phase: {sent:?}");
    assert!(
        connections.iter().step_by(2).all(|c| *c >= 2),
        "each keep-alive client was moved to a new process: {connections:?}"
    );
    for (status, took) in &exits {
        assert!(
            status.is_some_and(|s| s.success()),
            "the old process exits cleanly: {status:?}"
        );
        assert!(
            *took >= Duration::from_secs(1),
            "not before its grace period: {took:?}"
        );
    }
    assert_eq!(
        backends[2].count(),
        b3_before,
        "the drained b3 got requests"
    );

    // The sessions learned by the first process in its last seconds, after both upgrades.
    let mut fresh = gw.client().fresh_connections();
    for s in late.iter_mut() {
        let r = fresh.try_send(&s.request("/after"));
        s.check(r).unwrap_or_else(|e| panic!("late session: {e}"));
    }
    let received = gw.metric(
        "berth_upgrade_sessions_received_total",
        &[("upstream", "learn")],
    );
    assert!(
        received >= (PER_KIND + late.len()) as f64,
        "learn sessions handed over: {received}"
    );
}

#[test]
fn an_upgrade_with_a_broken_config_exits_2_and_leaves_the_old_process_serving() {
    let backends = Backend::start_many(3);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let mut gw = Gateway::start_with_admin(&config::header_app(&specs, &[]));
    let ids = berth_tests::sessions::ids(0, 30);
    let placed = berth_tests::sessions::open(&gw, &ids, 3);
    let old_pid = gw.pid().expect("running");
    let broken = gw.dir().join("broken.yaml");
    let text = std::fs::read_to_string(gw.config_path())
        .expect("config")
        .replace("weight: 1", "weight: -1");
    std::fs::write(&broken, format!("{text}\nthreads: 4\n")).expect("write");

    let (code, output) = gw.try_upgrade(&broken);
    assert_eq!(code, 2, "exit code; output:\n{output}");
    assert!(
        output.contains("upstreams.app.backends[0].weight"),
        "{output}"
    );
    assert!(
        output.contains("threads"),
        "every error is printed: {output}"
    );
    assert!(
        output.contains("the running Berth was not touched"),
        "{output}"
    );
    assert!(
        !gw.upgrade_sock().exists(),
        "Pingora's upgrade socket was not opened"
    );
    assert!(gw.is_running());
    assert!(
        !gw.log().contains("upgrade: sent"),
        "no state was handed out:\n{}",
        gw.log_tail(20)
    );
    let after = berth_tests::sessions::visit(&gw, &ids, 3, "/still");
    for (p, r) in placed.iter().zip(&after) {
        berth_tests::sessions::check_sticky(r, &p.home).unwrap_or_else(|e| panic!("{}: {e}", p.id));
    }
    let rows = gw.admin_on(old_pid, "GET", "/admin/backends", None);
    assert_eq!(rows.status, 200);

    // And it can still be upgraded with a valid file, sessions included.
    let mut old = gw.upgrade();
    let after = berth_tests::sessions::visit(&gw, &ids, 3, "/upgraded");
    for (p, r) in placed.iter().zip(&after) {
        berth_tests::sessions::check_sticky(r, &p.home).unwrap_or_else(|e| panic!("{}: {e}", p.id));
    }
    old.wait_exit(EXIT_TIMEOUT);
}

/// The unit's command lines (`Exec<what>=`), with the installed paths replaced by the test's.
fn unit_commands(what: &str, config_path: &std::path::Path) -> Vec<String> {
    let unit = berth_tests::workspace_root().join("deploy/systemd/berth.service");
    let text = std::fs::read_to_string(&unit).expect("read the unit");
    let berth = berth_tests::berth_bin();
    text.lines()
        .filter_map(|l| l.strip_prefix(&format!("Exec{what}=")))
        .map(|cmd| {
            cmd.replace("/usr/local/bin/berth", &berth.display().to_string())
                .replace("/etc/berth/berth.yaml", &config_path.display().to_string())
        })
        .collect()
}

#[test]
fn the_systemd_units_reload_is_an_upgrade_with_state() {
    let backends = Backend::start_many(3);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let yaml = config::set(
        &config::header_app(&specs, &[]),
        "server.daemon_wait_for_ready",
        "true",
    );
    let token = [(berth_tests::admin::TOKEN_ENV, berth_tests::admin::TOKEN)];
    let mut gw = Gateway::start_daemon(&yaml, &token);
    let start = unit_commands("Start", gw.config_path());
    assert!(
        start.len() == 1 && start[0].contains(" -d -c "),
        "the unit starts a daemon: {start:?}"
    );
    let first = gw.pid().expect("daemon");
    assert_eq!(
        berth_tests::process::read_pid_file(&gw.pid_file()),
        Some(first)
    );
    let ids = berth_tests::sessions::ids(0, 40);
    let placed = berth_tests::sessions::open(&gw, &ids, 4);
    let r = gw.admin("POST", "/admin/backends/b1/drain", None);
    assert_eq!(r.status, 200, "{}", r.summary());

    let reload = unit_commands("Reload", gw.config_path());
    assert_eq!(reload.len(), 2, "{reload:?}");
    let mut old = gw.reload_like_systemd(&reload);
    let second = gw.pid().expect("daemon");
    assert_ne!(second, first);
    assert_eq!(
        berth_tests::process::read_pid_file(&gw.pid_file()),
        Some(second)
    );
    let after = berth_tests::sessions::visit(&gw, &ids, 4, "/after");
    for (p, r) in placed.iter().zip(&after) {
        berth_tests::sessions::check_sticky(r, &p.home).unwrap_or_else(|e| panic!("{}: {e}", p.id));
    }
    let rows = gw
        .admin_on(second, "GET", "/admin/backends", None)
        .json()
        .expect("JSON");
    assert_eq!(
        state_of(&rows, "app", "b1").as_deref(),
        Some("draining"),
        "{rows}"
    );
    old.wait_exit(EXIT_TIMEOUT);
    assert!(!berth_tests::process::alive(first));

    // A reload with a broken file fails at its first command and leaves the daemon serving.
    std::fs::write(gw.config_path(), "upstreams: {}\n").expect("break the config");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(&reload[0])
        .env("MAINPID", second.to_string())
        .output()
        .expect("run the first ExecReload");
    assert_eq!(status.status.code(), Some(2), "{status:?}");
    assert!(gw.is_running());
    let again = berth_tests::sessions::visit(&gw, &ids, 4, "/still");
    for (p, r) in placed.iter().zip(&again) {
        berth_tests::sessions::check_sticky(r, &p.home).unwrap_or_else(|e| panic!("{}: {e}", p.id));
    }
}
