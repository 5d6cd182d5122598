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
use berth_tests::config::{self, COOKIE_NAME};
use berth_tests::sessions::HEADER;
use berth_tests::{first_n, Backend, Client, Gateway, Request, Response};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Duration;

const PER_KIND: usize = 50;
const THREADS: usize = 6;
/// Host routed to the `learn` upstream.
const LEARN_HOST: &str = "learn.test";
/// The application's own session cookie (learn mode).
const APP_COOKIE: &str = "JSESSIONID";
/// Backends that take new sessions of `app` after the setup (b2 draining, b3 drained).
const TAKES_NEW: [&str; 3] = ["b1", "b4", "b5"];
/// Old processes must be gone within this after SIGQUIT (Pingora waits 5 s, then the grace
/// period, then the shutdown timeout: 1 s each here).
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
enum Kind {
    Header(String),
    /// Berth's token (re-issued tokens replace it).
    Cookie(String),
    /// The app's cookie value (learn mode).
    Learn(String),
}

#[derive(Debug, Clone)]
struct Session {
    kind: Kind,
    home: String,
    /// Opened during the load: its second request may reach the other process before the
    /// pin does (see `check`).
    during_load: bool,
}

impl Session {
    fn name(&self) -> String {
        match &self.kind {
            Kind::Header(id) => format!("header {id}"),
            Kind::Cookie(t) => format!("cookie {}", &t[..t.len().min(24)]),
            Kind::Learn(v) => format!("learned {v}"),
        }
    }

    fn request(&self, path: &str) -> Request {
        match &self.kind {
            Kind::Header(id) => Request::get(path).header(HEADER, id),
            Kind::Cookie(t) => Request::get(path).header("Cookie", &format!("{COOKIE_NAME}={t}")),
            Kind::Learn(v) => Request::get(path)
                .header("Host", LEARN_HOST)
                .header("Cookie", &format!("{APP_COOKIE}={v}")),
        }
    }

    /// A re-issued token replaces the one held.
    fn store(&mut self, r: &Response) {
        if let (Kind::Cookie(t), Some(c)) = (&mut self.kind, r.set_cookie(COOKIE_NAME)) {
            *t = c.value;
        }
    }

    /// `Ok(false)` for a 200 from its home saying `sticky`. `Ok(true)` for a session opened
    /// during the load answered by its home as `new`: its first request pinned it in one
    /// process and this one reached the other before the change did (header sessions are
    /// placed by the ring, so both processes pick the same backend).
    fn check(&mut self, r: std::io::Result<Response>) -> Result<bool, String> {
        match r {
            Ok(r) if r.status == 200 && r.backend() == self.home && r.affinity() == "sticky" => {
                self.store(&r);
                Ok(false)
            }
            Ok(r)
                if self.during_load
                    && r.status == 200
                    && r.backend() == self.home
                    && r.affinity() == "new" =>
            {
                Ok(true)
            }
            Ok(r) => Err(format!(
                "{} (home {}): {}",
                self.name(),
                self.home,
                r.summary()
            )),
            Err(e) => Err(format!("{} (home {}): {e}", self.name(), self.home)),
        }
    }
}

fn config(app: &[(String, SocketAddr)], learn: &[(String, SocketAddr)]) -> String {
    let yaml = config::app_config(
        &[config::cookie_plugin(), config::header_plugin(HEADER)],
        app,
    );
    let backends: Vec<String> = learn
        .iter()
        .map(|(id, addr)| format!("{{id: {id}, addr: \"{addr}\"}}"))
        .collect();
    let learn_up = format!(
        "{{affinity: [{{type: cookie, mode: learn, name: {APP_COOKIE}}}], \
         sessions: {{idle_ttl: 30m, max: 100000}}, connect_timeout: 1s, read_timeout: 10s, \
         backends: [{}]}}",
        backends.join(", ")
    );
    let yaml = config::set(&yaml, "upstreams.learn", &learn_up);
    config::set(
        &yaml,
        "routes",
        &format!(
            "[{{host: {LEARN_HOST}, path_prefix: /, upstream: learn}}, \
             {{host: \"*\", path_prefix: /, upstream: app}}]"
        ),
    )
}

/// Open one session of each kind per index; their homes.
fn open_sessions(gw: &Gateway) -> Vec<Session> {
    let mut client = gw.client();
    let mut out = Vec::new();
    for i in 0..PER_KIND {
        let id = berth_tests::sessions::id(i);
        let r = client.send(&Request::get("/open").header(HEADER, &id));
        assert_eq!((r.status, r.affinity()), (200, "new"), "{}", r.summary());
        out.push(Session {
            kind: Kind::Header(id),
            home: r.backend().to_string(),
            during_load: false,
        });

        let r = client.get("/open");
        let token = r
            .set_cookie(COOKIE_NAME)
            .unwrap_or_else(|| panic!("no token issued: {}", r.summary()));
        out.push(Session {
            kind: Kind::Cookie(token.value),
            home: r.backend().to_string(),
            during_load: false,
        });

        let value = format!("app-{i:03}-{:08x}", (i as u32).wrapping_mul(2_654_435_761));
        out.push(learn(&mut client, &value));
    }
    out
}

/// A learn-mode session: the backend that answers sets the app cookie and Berth pins it there.
fn learn(client: &mut Client, value: &str) -> Session {
    let r = client.send(
        &Request::get(&format!("/set-cookie?name={APP_COOKIE}&value={value}"))
            .header("Host", LEARN_HOST),
    );
    assert!(
        r.status == 200 && r.set_cookie(APP_COOKIE).is_some(),
        "{}",
        r.summary()
    );
    Session {
        kind: Kind::Learn(value.to_string()),
        home: r.backend().to_string(),
        during_load: false,
    }
}

/// Everything the load threads share.
struct Load {
    stop: AtomicBool,
    /// 0 before the first upgrade, 1 during it (until the old process exited), 2 between,
    /// 3 during the second, 4 after.
    phase: AtomicU8,
    sent: [AtomicU64; 5],
    failures: Mutex<Vec<String>>,
    opened: AtomicU64,
    /// Requests of sessions opened during the load that were answered `new` again.
    raced: AtomicU64,
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// One load thread: its sessions in a loop, one new header session per round, until stopped.
/// Returns the connections it opened.
fn run_load(addr: SocketAddr, load: &Load, t: usize, mut mine: Vec<Session>) -> u64 {
    let mut client = if t.is_multiple_of(2) {
        Client::new(addr)
    } else {
        Client::new(addr).fresh_connections()
    };
    let mut n = 0u64;
    let mut round = 0;
    while !load.stop.load(Ordering::SeqCst) {
        for s in mine.iter_mut() {
            let phase = load.phase.load(Ordering::SeqCst) as usize;
            load.sent[phase].fetch_add(1, Ordering::Relaxed);
            n += 1;
            let r = client.try_send(&s.request(&format!("/load/{t}/{n}")));
            if r.is_err() {
                client.close();
            }
            match s.check(r) {
                Ok(false) => {}
                Ok(true) => {
                    load.raced.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => load
                    .failures
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(format!("phase {phase}: {e}")),
            }
        }
        round += 1;
        if round <= 60 {
            let id = format!("during-load-{t}-{round}");
            let phase = load.phase.load(Ordering::SeqCst) as usize;
            load.sent[phase].fetch_add(1, Ordering::Relaxed);
            match client.try_send(&Request::get("/open").header(HEADER, &id)) {
                Ok(r)
                    if r.status == 200
                        && r.affinity() == "new"
                        && TAKES_NEW.contains(&r.backend()) =>
                {
                    load.opened.fetch_add(1, Ordering::Relaxed);
                    mine.push(Session {
                        kind: Kind::Header(id),
                        home: r.backend().to_string(),
                        during_load: true,
                    });
                }
                other => load
                    .failures
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(format!(
                        "phase {phase}: new session {id} must land on one of {TAKES_NEW:?}: {:?}",
                        other.map(|r| r.summary())
                    )),
            }
        }
    }
    client.connections_opened()
}

fn state_of(rows: &serde_json::Value, upstream: &str, id: &str) -> Option<String> {
    rows["backends"]
        .as_array()?
        .iter()
        .find(|b| b["upstream"] == upstream && b["id"] == id)
        .and_then(|b| b["state"].as_str().map(str::to_string))
}

/// The admin view of `pid`: b2 draining, b3 drained, b5 (added at runtime) active in `app`.
fn check_membership(gw: &Gateway, pid: u32, when: &str) {
    let rows = gw
        .admin_on(pid, "GET", "/admin/backends", None)
        .json()
        .expect("JSON");
    let got: Vec<Option<String>> = ["b2", "b3", "b5"]
        .iter()
        .map(|id| state_of(&rows, "app", id))
        .collect();
    assert_eq!(
        got,
        [Some("draining"), Some("drained"), Some("active")].map(|s| s.map(String::from)),
        "{when}: the new process (pid {pid}) must keep the admin changes: {rows}"
    );
}

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

    let load = Load {
        stop: AtomicBool::new(false),
        phase: AtomicU8::new(0),
        sent: Default::default(),
        failures: Mutex::new(Vec::new()),
        opened: AtomicU64::new(0),
        raced: AtomicU64::new(0),
    };
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
                scope.spawn(move || run_load(addr, load, t, mine))
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
