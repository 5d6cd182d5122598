//! The upgrade tests' scenario: its configuration, sessions of three kinds (header, Berth's
//! cookie token, the app's learned cookie), the load threads that keep them busy across the
//! upgrades, and the admin-state check. Used by `upgrade.rs` and `upgrade_soak.rs`.
use berth_tests::config::{self, COOKIE_NAME};
use berth_tests::sessions::HEADER;
use berth_tests::{Client, Gateway, Request, Response};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Duration;

pub const PER_KIND: usize = 50;
pub const THREADS: usize = 6;
/// Host routed to the `learn` upstream.
pub const LEARN_HOST: &str = "learn.test";
/// The application's own session cookie (learn mode).
pub const APP_COOKIE: &str = "JSESSIONID";
/// Backends that take new sessions of `app` after the setup (b2 draining, b3 drained).
pub const TAKES_NEW: [&str; 3] = ["b1", "b4", "b5"];
/// Old processes must be gone within this after SIGQUIT (Pingora waits 5 s, then the grace
/// period, then the shutdown timeout: 1 s each here).
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub enum Kind {
    Header(String),
    /// Berth's token (re-issued tokens replace it).
    Cookie(String),
    /// The app's cookie value (learn mode).
    Learn(String),
}

#[derive(Debug, Clone)]
pub struct Session {
    pub kind: Kind,
    pub home: String,
    /// Opened during the load: its second request may reach the other process before the
    /// pin does (see `check`).
    pub during_load: bool,
}

impl Session {
    pub fn name(&self) -> String {
        match &self.kind {
            Kind::Header(id) => format!("header {id}"),
            Kind::Cookie(t) => format!("cookie {}", &t[..t.len().min(24)]),
            Kind::Learn(v) => format!("learned {v}"),
        }
    }

    pub fn request(&self, path: &str) -> Request {
        match &self.kind {
            Kind::Header(id) => Request::get(path).header(HEADER, id),
            Kind::Cookie(t) => Request::get(path).header("Cookie", &format!("{COOKIE_NAME}={t}")),
            Kind::Learn(v) => Request::get(path)
                .header("Host", LEARN_HOST)
                .header("Cookie", &format!("{APP_COOKIE}={v}")),
        }
    }

    /// A re-issued token replaces the one held.
    pub fn store(&mut self, r: &Response) {
        if let (Kind::Cookie(t), Some(c)) = (&mut self.kind, r.set_cookie(COOKIE_NAME)) {
            *t = c.value;
        }
    }

    /// `Ok(false)` for a 200 from its home saying `sticky`. `Ok(true)` for a session opened
    /// during the load answered by its home as `new`: its first request pinned it in one
    /// process and this one reached the other before the change did (header sessions are
    /// placed by the ring, so both processes pick the same backend).
    pub fn check(&mut self, r: std::io::Result<Response>) -> Result<bool, String> {
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

pub fn config(app: &[(String, SocketAddr)], learn: &[(String, SocketAddr)]) -> String {
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
pub fn open_sessions(gw: &Gateway) -> Vec<Session> {
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
pub fn learn(client: &mut Client, value: &str) -> Session {
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
#[derive(Default)]
pub struct Load {
    pub stop: AtomicBool,
    /// Which of `sent` counts the requests sent now (the tests give the phases their meaning,
    /// e.g. 0 before the first upgrade, 1 during it).
    pub phase: AtomicU8,
    pub sent: [AtomicU64; 5],
    /// Every request that failed or reached another backend than its session's, with why.
    pub failures: Mutex<Vec<String>>,
    /// Of `failures`: answered 200 by another backend than the session's (a moved session).
    pub moved: AtomicU64,
    pub opened: AtomicU64,
    /// Requests of sessions opened during the load that were answered `new` again.
    pub raced: AtomicU64,
    /// Every fourth thread (one of two that open a connection per request) waits this long
    /// between opening a connection and writing its request (see
    /// [`Client::first_write_after`]).
    pub first_write_after: Duration,
}

impl Load {
    /// Requests sent so far, all phases.
    pub fn total(&self) -> u64 {
        self.sent.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    pub fn fail(&self, why: String) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(why);
    }

    /// Failures so far.
    pub fn failed(&self) -> usize {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

/// What one load thread did.
#[derive(Debug, Clone, Copy)]
pub struct Ran {
    /// A new connection per request (else keep-alive).
    pub fresh: bool,
    pub requests: u64,
    pub connections: u64,
}

pub struct StopOnDrop<'a>(pub &'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// One load thread: its sessions in a loop, one new header session per round (for the first 60
/// rounds; each must land on one of `takes_new`), until stopped. Even threads keep their
/// connection alive, odd ones open one per request.
pub fn run_load(
    addr: SocketAddr,
    load: &Load,
    t: usize,
    mut mine: Vec<Session>,
    takes_new: &[&str],
) -> Ran {
    let fresh = !t.is_multiple_of(2);
    let mut client = if !fresh {
        Client::new(addr)
    } else if t % 4 == 3 {
        Client::new(addr)
            .fresh_connections()
            .first_write_after(load.first_write_after)
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
            let moved = matches!(&r, Ok(r) if r.status == 200 && r.backend() != s.home);
            match s.check(r) {
                Ok(false) => {}
                Ok(true) => {
                    load.raced.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    if moved {
                        load.moved.fetch_add(1, Ordering::Relaxed);
                    }
                    load.fail(format!("phase {phase}: {e}"));
                }
            }
        }
        round += 1;
        if round <= 60 {
            let id = format!("during-load-{t}-{round}");
            let phase = load.phase.load(Ordering::SeqCst) as usize;
            load.sent[phase].fetch_add(1, Ordering::Relaxed);
            n += 1;
            match client.try_send(&Request::get("/open").header(HEADER, &id)) {
                Ok(r)
                    if r.status == 200
                        && r.affinity() == "new"
                        && takes_new.contains(&r.backend()) =>
                {
                    load.opened.fetch_add(1, Ordering::Relaxed);
                    mine.push(Session {
                        kind: Kind::Header(id),
                        home: r.backend().to_string(),
                        during_load: true,
                    });
                }
                other => {
                    if other.is_err() {
                        client.close();
                    }
                    load.fail(format!(
                        "phase {phase}: new session {id} must land on one of {takes_new:?}: {:?}",
                        other.map(|r| r.summary())
                    ))
                }
            }
        }
    }
    Ran {
        fresh,
        requests: n,
        connections: client.connections_opened(),
    }
}

pub fn state_of(rows: &serde_json::Value, upstream: &str, id: &str) -> Option<String> {
    rows["backends"]
        .as_array()?
        .iter()
        .find(|b| b["upstream"] == upstream && b["id"] == id)
        .and_then(|b| b["state"].as_str().map(str::to_string))
}

/// The admin view of `pid`: b2 draining, b3 drained, b5 (added at runtime) active in `app`.
pub fn check_membership(gw: &Gateway, pid: u32, when: &str) {
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
