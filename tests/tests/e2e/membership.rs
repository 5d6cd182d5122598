//! Membership changes across a gateway restart: cookie sessions name their backend, so adding
//! a backend moves none of them and removing one moves only its own sessions.
use berth_tests::config::{self, COOKIE_NAME};
use berth_tests::token::Token;
use berth_tests::{check_spread, first_n, par_map, tally, Backend, CookieJar, Gateway, User};

const SESSIONS: usize = 300;
const THREADS: usize = 8;

fn config_for(backends: &[&Backend]) -> String {
    let specs: Vec<_> = backends.iter().map(|b| b.spec()).collect();
    config::app_config(&[config::cookie_plugin()], &specs)
}

/// `n` new cookie sessions: each user's cookie jar and home backend.
fn new_sessions(gw: &Gateway, n: usize) -> Vec<(CookieJar, String)> {
    par_map(n, THREADS, |i| {
        let mut u = gw.user();
        let r = u
            .get("/")
            .unwrap_or_else(|e| panic!("new session {i}: {e}"));
        assert_eq!(
            (r.status, r.affinity()),
            (200, "new"),
            "new session {i}: {}",
            r.summary()
        );
        assert!(
            u.jar.get(COOKIE_NAME).is_some(),
            "new session {i}: no cookie: {}",
            r.summary()
        );
        let home = r.backend().to_string();
        (u.jar, home)
    })
}

#[test]
fn adding_a_backend_moves_no_existing_session() {
    let backends = Backend::start_many(4);
    let three: Vec<&Backend> = backends[..3].iter().collect();
    let mut gw = Gateway::start(&config_for(&three));
    let users = new_sessions(&gw, SESSIONS);
    let before = tally(users.iter().map(|(_, h)| h.as_str()));
    check_spread(&before, &["b1", "b2", "b3"], 1, SESSIONS).unwrap_or_else(|e| panic!("{e}"));
    gw.stop();

    let all: Vec<&Backend> = backends.iter().collect();
    let gw = Gateway::start(&config_for(&all));
    let moved: Vec<String> = par_map(users.len(), THREADS, |i| {
        let (jar, home) = &users[i];
        let mut u = User {
            client: gw.client(),
            jar: jar.clone(),
        };
        match u.get("/after-restart") {
            Ok(r) if r.status == 200 && r.backend() == home && r.affinity() == "sticky" => None,
            Ok(r) => Some(format!("session {i} (home {home}): {}", r.summary())),
            Err(e) => Some(format!("session {i} (home {home}): {e}")),
        }
    })
    .into_iter()
    .flatten()
    .collect();
    assert!(
        moved.is_empty(),
        "{} of {SESSIONS} existing sessions moved after adding b4:\n  {}",
        moved.len(),
        first_n(&moved, 10)
    );

    let fresh = new_sessions(&gw, SESSIONS);
    let after = tally(fresh.iter().map(|(_, h)| h.as_str()));
    let b4 = after.get("b4").copied().unwrap_or(0);
    assert!(
        b4 >= SESSIONS / 10,
        "b4 got {b4} of {SESSIONS} new sessions (want ≥ 10%): {after:?}"
    );
    check_spread(&after, &["b1", "b2", "b3", "b4"], 1, SESSIONS).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn removing_a_backend_moves_only_its_sessions() {
    let backends = Backend::start_many(3);
    let all: Vec<&Backend> = backends.iter().collect();
    let mut gw = Gateway::start(&config_for(&all));
    let users = new_sessions(&gw, SESSIONS);
    let on_b3 = users.iter().filter(|(_, h)| h == "b3").count();
    assert!(on_b3 > 0, "no session on b3");
    gw.stop();

    let two: Vec<&Backend> = backends[..2].iter().collect();
    let gw = Gateway::start(&config_for(&two));
    let failures: Vec<String> = par_map(users.len(), THREADS, |i| {
        let (jar, home) = &users[i];
        let mut u = User {
            client: gw.client(),
            jar: jar.clone(),
        };
        let r = match u.get("/after-restart") {
            Ok(r) => r,
            Err(e) => return Some(format!("session {i} (home {home}): {e}")),
        };
        let cookie = r
            .set_cookie(COOKIE_NAME)
            .and_then(|c| Token::parse(&c.value))
            .map(|t| t.backend);
        let ok = if home == "b3" {
            r.status == 200
                && ["b1", "b2"].contains(&r.backend())
                && r.affinity() == "reassigned"
                && cookie.as_deref() == Some(r.backend())
        } else {
            r.status == 200 && r.backend() == home && r.affinity() == "sticky" && cookie.is_none()
        };
        (!ok).then(|| format!("session {i} (home {home}): {}", r.summary()))
    })
    .into_iter()
    .flatten()
    .collect();
    assert!(
        failures.is_empty(),
        "{} of {SESSIONS} sessions mishandled after removing b3 ({on_b3} were on it):\n  {}",
        failures.len(),
        first_n(&failures, 10)
    );
}
