//! Cookie insert mode: 1,000 browsers stick to the backend of their first request, new sessions
//! spread evenly, and every kind of bad cookie is re-issued (counted), never a 5xx.
use berth_tests::config::{
    self, COOKIE_KID, COOKIE_NAME, COOKIE_SECRET, COOKIE_TTL_SECS, UPSTREAM,
};
use berth_tests::token::{self, Token};
use berth_tests::{check_spread, first_n, par_map, tally, Backend, Gateway, Response, User};

const USERS: usize = 1000;
const FOLLOW_UPS: usize = 2;
const THREADS: usize = 8;

fn start() -> (Vec<Backend>, Gateway) {
    let backends = Backend::start_many(3);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let gw = Gateway::start(&config::app_config(&[config::cookie_plugin()], &specs));
    (backends, gw)
}

/// Check an issued `Set-Cookie`: attributes, a token that verifies under the test secret and
/// names `backend`, and no backend address or port anywhere in it.
fn check_issued(resp: &Response, backends: &[Backend]) -> Result<String, String> {
    let c = resp
        .set_cookie(COOKIE_NAME)
        .ok_or_else(|| format!("no Set-Cookie {COOKIE_NAME}: {}", resp.summary()))?;
    let tok = Token::parse(&c.value).ok_or_else(|| format!("not a v1 token: {}", c.raw))?;
    let now = token::now_unix();
    let problems: Vec<String> = [
        (tok.kid == COOKIE_KID, "key id is not k1"),
        (
            tok.backend == resp.backend(),
            "token names another backend than the one that answered",
        ),
        (
            token::verify(COOKIE_SECRET.as_bytes(), &c.value, UPSTREAM),
            "MAC does not verify",
        ),
        (
            tok.expiry + 5 >= now + COOKIE_TTL_SECS && tok.expiry <= now + COOKIE_TTL_SECS + 5,
            "expiry is not now + ttl",
        ),
        (
            c.attr("max-age") == Some(&COOKIE_TTL_SECS.to_string()),
            "Max-Age is not the ttl",
        ),
        (c.attr("path") == Some("/"), "Path is not /"),
        (c.attr("httponly").is_some(), "no HttpOnly"),
        (
            c.attr("samesite")
                .is_some_and(|v| v.eq_ignore_ascii_case("lax")),
            "SameSite is not Lax",
        ),
        (!c.raw.contains("127.0.0.1"), "the backend IP leaks"),
    ]
    .into_iter()
    .filter(|(ok, _)| !ok)
    .map(|(_, why)| why.to_string())
    .chain(backends.iter().filter_map(|b| {
        let port = b.addr.port().to_string();
        // Only the kid and backend fields are free text (expiry is checked above, the MAC is
        // a fixed-size base64 HMAC).
        (tok.kid.contains(&port)
            || tok.backend.contains(&port)
            || c.raw.contains(&format!(":{port}")))
        .then(|| format!("port {port} of {} leaks", b.name))
    }))
    .collect();
    if problems.is_empty() {
        Ok(c.value)
    } else {
        Err(format!("{}: {}", problems.join(", "), c.raw))
    }
}

/// One user's first request and its follow-ups, checked; the backend of the first request.
fn run_user(gw: &Gateway, backends: &[Backend], i: usize) -> Result<String, String> {
    let mut user = gw.user();
    let first = user
        .get("/")
        .map_err(|e| format!("user {i}: first request: {e}"))?;
    if first.status != 200 || first.affinity() != "new" {
        return Err(format!(
            "user {i}: first response not 200/new: {}",
            first.summary()
        ));
    }
    check_issued(&first, backends).map_err(|e| format!("user {i}: {e}"))?;
    let backup = first.header("x-seen-backup").unwrap_or("-");
    let forwarded = (
        first.header("x-seen-forwarded-for"),
        first.header("x-seen-forwarded-proto"),
        first.header("x-seen-forwarded-host"),
    );
    // Host reaches the backend unchanged, so there is no X-Forwarded-Host ("-").
    if forwarded != (Some("127.0.0.1"), Some("http"), Some("-"))
        || backup == first.backend()
        || !["b1", "b2", "b3"].contains(&backup)
    {
        return Err(format!(
            "user {i}: expected X-Forwarded-For/Proto 127.0.0.1/http, no X-Forwarded-Host and a backup \
             other than the backend: {}",
            first.summary()
        ));
    }
    for n in 1..=FOLLOW_UPS {
        let r = user
            .get(&format!("/page/{n}"))
            .map_err(|e| format!("user {i}: follow-up {n}: {e}"))?;
        if r.status != 200 || r.backend() != first.backend() || r.affinity() != "sticky" {
            return Err(format!(
                "user {i}: follow-up {n} not sticky on {}: {}",
                first.backend(),
                r.summary()
            ));
        }
        if r.set_cookie(COOKIE_NAME).is_some() {
            return Err(format!(
                "user {i}: follow-up {n} re-issued the cookie: {}",
                r.summary()
            ));
        }
    }
    Ok(first.backend().to_string())
}

#[test]
fn thousand_cookie_sessions_stick_and_spread_evenly() {
    let (backends, gw) = start();
    let results = par_map(USERS, THREADS, |i| run_user(&gw, &backends, i));
    let failures: Vec<String> = results.iter().filter_map(|r| r.clone().err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {USERS} sessions failed:\n  {}",
        failures.len(),
        first_n(&failures, 10)
    );
    let homes = tally(results.iter().filter_map(|r| r.as_deref().ok()));
    // New cookie sessions are placed by load (fewest sessions per unit of weight, counting
    // those on their way back), not by the ring's shares: even up to the placements the
    // THREADS concurrent browsers make on the same loads (tests/tests/new_sessions.rs checks
    // ±5%).
    let (lo, hi) = (USERS / 3 - THREADS, USERS / 3 + 1 + THREADS);
    check_spread(&homes, &["b1", "b2", "b3"], lo, hi).unwrap_or_else(|e| panic!("{e}"));
    for b in &backends {
        let expected = homes[&b.name] as u64 * (1 + FOLLOW_UPS as u64);
        assert_eq!(
            b.count(),
            expected,
            "requests served by {} (its sessions × 3)",
            b.name
        );
    }
    let total = (USERS * (1 + FOLLOW_UPS)) as f64;
    let requests = gw.wait_metric("berth_requests_total", &[("upstream", UPSTREAM)], |v| {
        v >= total
    });
    assert_eq!(requests, total, "berth_requests_total{{upstream=app}}");
    let new = gw.metric("berth_requests_total", &[("reason", "new")]);
    let sticky = gw.metric("berth_requests_total", &[("reason", "sticky")]);
    assert_eq!(
        (new, sticky),
        (USERS as f64, total - USERS as f64),
        "requests by reason (new, sticky)"
    );
    assert_eq!(gw.metric("berth_affinity_invalid_total", &[]), 0.0);
}

/// A valid token from the gateway, and the backend it names.
fn valid_token(gw: &Gateway) -> (String, String) {
    let mut u = gw.user();
    let r = u.get("/").expect("first request");
    let value = u
        .jar
        .get(COOKIE_NAME)
        .unwrap_or_else(|| panic!("no cookie: {}", r.summary()));
    (value.to_string(), r.backend().to_string())
}

#[test]
fn invalid_cookies_are_counted_and_reissued_never_5xx() {
    let (backends, gw) = start();
    let (valid, home) = valid_token(&gw);
    let tok = Token::parse(&valid).expect("a v1 token");
    let other = ["b1", "b2", "b3"]
        .into_iter()
        .find(|b| *b != home)
        .expect("3 backends");
    let now = token::now_unix();
    let secret = COOKIE_SECRET.as_bytes();
    let cases: Vec<(&str, String, Option<&str>)> = vec![
        (
            "forged backend id",
            Token {
                backend: other.into(),
                ..tok.clone()
            }
            .encode(),
            Some("bad_signature"),
        ),
        (
            "truncated",
            valid[..valid.len() - 10].to_string(),
            Some("malformed"),
        ),
        (
            "last field cut",
            valid[..valid.rfind('.').expect("dots")].to_string(),
            Some("malformed"),
        ),
        (
            "expired",
            token::sign(secret, COOKIE_KID, &home, now - 60, UPSTREAM),
            Some("expired"),
        ),
        (
            "unknown key id",
            token::sign(secret, "k9", &home, now + 600, UPSTREAM),
            Some("unknown_key"),
        ),
        (
            "signed for another upstream",
            token::sign(secret, COOKIE_KID, &home, now + 600, "other"),
            Some("bad_signature"),
        ),
        (
            "wrong secret",
            token::sign(&[7u8; 32], COOKIE_KID, &home, now + 600, UPSTREAM),
            Some("bad_signature"),
        ),
        ("garbage", "not-a-token".to_string(), Some("malformed")),
        (
            "oversized",
            format!("v1.{}", "a".repeat(600)),
            Some("malformed"),
        ),
        (
            "v2 prefix",
            valid.replacen("v1.", "v2.", 1),
            Some("malformed"),
        ),
        ("empty", String::new(), None),
    ];
    let mut failures = Vec::new();
    for (what, value, _) in &cases {
        let mut u = gw.user();
        u.jar.set(COOKIE_NAME, value);
        let r = match u.get("/") {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{what} ({value:?}): {e}"));
                continue;
            }
        };
        if !(200..300).contains(&r.status) || r.affinity() != "new" {
            failures.push(format!(
                "{what} ({value:?}): expected 2xx routed as new: {}",
                r.summary()
            ));
            continue;
        }
        if let Err(e) = check_issued(&r, &backends) {
            failures.push(format!("{what} ({value:?}): no fresh cookie: {e}"));
            continue;
        }
        match u.get("/again") {
            Ok(again) if again.backend() == r.backend() && again.affinity() == "sticky" => {}
            other => failures.push(format!(
                "{what}: the re-issued cookie does not stick: {other:?}"
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "bad cookies mishandled:\n  {}",
        failures.join("\n  ")
    );
    for why in [
        "malformed",
        "bad_signature",
        "unknown_key",
        "expired",
        "wrong_upstream",
    ] {
        let expected = cases.iter().filter(|c| c.2 == Some(why)).count() as f64;
        let labels = [("upstream", UPSTREAM), ("plugin", "cookie"), ("why", why)];
        let got = gw.wait_metric("berth_affinity_invalid_total", &labels, |v| v >= expected);
        assert_eq!(
            got, expected,
            "berth_affinity_invalid_total{{why=\"{why}\"}}"
        );
    }
}

#[test]
fn self_signed_tokens_are_honoured_and_refreshed_past_half_life() {
    let (_backends, gw) = start();
    let now = token::now_unix();
    let secret = COOKIE_SECRET.as_bytes();
    let fresh = token::sign(secret, COOKIE_KID, "b2", now + COOKIE_TTL_SECS, UPSTREAM);
    let mut u = gw.user();
    u.jar.set(COOKIE_NAME, &fresh);
    let r = u.get("/").expect("request");
    assert_eq!(
        (r.status, r.backend(), r.affinity()),
        (200, "b2", "sticky"),
        "{}",
        r.summary()
    );
    assert!(
        r.set_cookie(COOKIE_NAME).is_none(),
        "a fresh token is not re-issued: {}",
        r.summary()
    );

    let old = token::sign(
        secret,
        COOKIE_KID,
        "b3",
        now + COOKIE_TTL_SECS / 4,
        UPSTREAM,
    );
    let mut u = gw.user();
    u.jar.set(COOKIE_NAME, &old);
    let r = u.get("/").expect("request");
    assert_eq!(
        (r.status, r.backend(), r.affinity()),
        (200, "b3", "sticky"),
        "{}",
        r.summary()
    );
    let renewed = r
        .set_cookie(COOKIE_NAME)
        .unwrap_or_else(|| panic!("a token past half its life is re-issued: {}", r.summary()));
    let t = Token::parse(&renewed.value).expect("v1 token");
    assert_eq!(t.backend, "b3");
    assert!(
        t.expiry + 5 >= now + COOKIE_TTL_SECS,
        "renewed expiry {} too early",
        t.expiry
    );
}

#[test]
fn token_for_a_backend_not_in_the_upstream_fails_over_with_a_new_cookie() {
    let (backends, gw) = start();
    let now = token::now_unix();
    let gone = token::sign(
        COOKIE_SECRET.as_bytes(),
        COOKIE_KID,
        "b9",
        now + 600,
        UPSTREAM,
    );
    let mut u = gw.user();
    u.jar.set(COOKIE_NAME, &gone);
    let r = u.get("/").expect("request");
    assert_eq!(r.status, 200, "{}", r.summary());
    assert_eq!(
        r.affinity(),
        "reassigned",
        "the session's backend is gone: {}",
        r.summary()
    );
    check_issued(&r, &backends).unwrap_or_else(|e| panic!("{e}"));
    let again = u.get("/").expect("request");
    assert_eq!(
        (again.backend(), again.affinity()),
        (r.backend(), "sticky"),
        "{}",
        again.summary()
    );
}

#[test]
fn cookie_alongside_other_cookies_and_quoted() {
    let (_backends, gw) = start();
    let (valid, home) = valid_token(&gw);
    for header in [
        format!("a=1; {COOKIE_NAME}={valid}; z=2"),
        format!("{COOKIE_NAME}=\"{valid}\""),
        format!("other=x;{COOKIE_NAME}={valid}"),
    ] {
        let mut u = User::new(gw.client());
        let r = u
            .send(berth_tests::Request::get("/").header("Cookie", &header))
            .expect("request");
        assert_eq!(
            (r.backend(), r.affinity()),
            (home.as_str(), "sticky"),
            "Cookie: {header}\n{}",
            r.summary()
        );
    }
    // Two Cookie fields (as HTTP/2 clients send them): the token in the second.
    let req = berth_tests::Request::get("/")
        .header("Cookie", "a=1")
        .header("Cookie", &format!("{COOKIE_NAME}={valid}"));
    let r = gw.client().send(&req);
    assert_eq!(
        (r.backend(), r.affinity()),
        (home.as_str(), "sticky"),
        "two Cookie fields\n{}",
        r.summary()
    );
}

#[test]
fn clients_cannot_fake_berths_signals_to_the_backend() {
    let (_backends, gw) = start();
    let req = berth_tests::Request::get("/")
        .header("X-Berth-Affinity", "sticky")
        .header("X-Berth-Previous-Backend", "evil")
        .header("X-Berth-Backup", "evil")
        .header("X-Forwarded-For", "203.0.113.9");
    let r = gw.client().send(&req);
    assert_eq!(r.status, 200, "{}", r.summary());
    assert_eq!(r.affinity(), "new", "{}", r.summary());
    assert_eq!(
        r.header("x-seen-previous-backend"),
        Some("-"),
        "{}",
        r.summary()
    );
    assert_ne!(r.header("x-seen-backup"), Some("evil"), "{}", r.summary());
    assert_eq!(
        r.header("x-seen-forwarded-for"),
        Some("203.0.113.9, 127.0.0.1"),
        "the peer is appended to X-Forwarded-For: {}",
        r.summary()
    );
}

/// A chain of cookie (insert) then header: a session first seen by its header gets a cookie
/// naming the same session, so it is one session (counted once against caps and loads), and
/// either handle alone reaches its backend.
#[test]
fn a_cookie_issued_to_a_header_session_is_the_same_session() {
    let backends = Backend::start_many(3);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let gw = Gateway::start_with_admin(&config::app_config(
        &[
            config::cookie_plugin(),
            config::header_plugin("X-Session-Id"),
        ],
        &specs,
    ));
    let mut issued = Vec::new();
    for i in 0..30 {
        let r = gw
            .client()
            .send(&berth_tests::Request::get("/").header("X-Session-Id", &format!("h{i}")));
        assert_eq!((r.status, r.affinity()), (200, "new"), "{}", r.summary());
        let c = r.set_cookie(COOKIE_NAME).expect("a cookie is issued");
        issued.push((c.value, r.backend().to_string()));
    }
    let pinned: u64 = gw.backends().iter().map(|b| b.sessions).sum();
    assert_eq!(pinned, 30, "one session per client, not one per handle");
    for (i, (cookie, home)) in issued.iter().enumerate() {
        let by_cookie = gw.client().send(
            &berth_tests::Request::get("/").header("Cookie", &format!("{COOKIE_NAME}={cookie}")),
        );
        assert_eq!(
            (by_cookie.backend(), by_cookie.affinity()),
            (home.as_str(), "sticky")
        );
        let by_header = gw
            .client()
            .send(&berth_tests::Request::get("/").header("X-Session-Id", &format!("h{i}")));
        assert_eq!(
            (by_header.backend(), by_header.affinity()),
            (home.as_str(), "sticky")
        );
    }
    let pinned: u64 = gw.backends().iter().map(|b| b.sessions).sum();
    assert_eq!(pinned, 30);
}
