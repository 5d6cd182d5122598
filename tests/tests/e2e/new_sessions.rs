//! Issue 19, parts 3 and 4. New cookie-insert sessions (no key yet) are placed by load, so they
//! spread evenly over the backends — by weight, not by the ring's uneven shares — whether the
//! browsers come back at once or only after the whole burst; and a client that never sends its
//! cookie back pins nothing: a flood of them evicts no real session and counts in no session
//! gauge.
//!
//! The flood's size is `BERTH_CRAWL_REQUESTS` (default 100,000).
use berth_tests::config::{self, COOKIE_NAME};
use berth_tests::sessions::{self, HEADER};
use berth_tests::{check_spread, first_n, par_map, tally, Backend, Client, Gateway, Request};
use std::time::Instant;

/// Client threads (each its own keep-alive connection).
const THREADS: usize = 6;

/// A gateway with cookie insert in front of `weights.len()` backends `b1, b2, …`.
fn cookie_gateway(weights: &[u32]) -> (Vec<Backend>, Gateway) {
    let backends = Backend::start_many(weights.len());
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let mut yaml = config::app_config(&[config::cookie_plugin()], &specs);
    for (i, w) in weights.iter().enumerate() {
        yaml = config::set(
            &yaml,
            &format!("upstreams.app.backends.{i}.weight"),
            &w.to_string(),
        );
    }
    (backends, Gateway::start_with_admin(&yaml))
}

/// A browser's first request: routed `new`, given a token naming the backend that answered.
/// Returns (backend, token).
fn first_visit(client: &mut Client, i: usize) -> Result<(String, String), String> {
    let r = client
        .try_send(&Request::get("/"))
        .map_err(|e| format!("browser {i}: first request: {e}"))?;
    let token = r.set_cookie(COOKIE_NAME).map(|c| c.value);
    match token {
        Some(t) if r.status == 200 && r.affinity() == "new" => Ok((r.backend().to_string(), t)),
        _ => Err(format!(
            "browser {i}: want 200, new, a cookie: {}",
            r.summary()
        )),
    }
}

/// The browser comes back with its token: the session is sticky where it was placed.
fn come_back(client: &mut Client, i: usize, home: &str, token: &str) -> Result<(), String> {
    let req = Request::get("/again").header("Cookie", &format!("{COOKIE_NAME}={token}"));
    let r = client
        .try_send(&req)
        .map_err(|e| format!("browser {i}: second request: {e}"))?;
    if r.status == 200 && r.backend() == home && r.affinity() == "sticky" {
        Ok(())
    } else {
        Err(format!(
            "browser {i}: want sticky on {home}: {}",
            r.summary()
        ))
    }
}

/// `n` browsers from `THREADS` threads at once; each comes back right after its first request
/// (`at_once`), or only once every browser of the burst has had its first answer. Their
/// backends.
fn browsers(gw: &Gateway, n: usize, at_once: bool) -> Vec<String> {
    let firsts = par_map(n, THREADS, |i| {
        let mut client = gw.client();
        let (home, token) = first_visit(&mut client, i)?;
        if at_once {
            come_back(&mut client, i, &home, &token)?;
        }
        Ok::<_, String>((home, token))
    });
    let failures: Vec<String> = firsts.iter().filter_map(|r| r.clone().err()).collect();
    assert!(failures.is_empty(), "{}", first_n(&failures, 10));
    let firsts: Vec<(String, String)> = firsts.into_iter().filter_map(Result::ok).collect();
    if !at_once {
        let back = par_map(n, THREADS, |i| {
            come_back(&mut gw.client(), i, &firsts[i].0, &firsts[i].1)
        });
        let failures: Vec<String> = back.into_iter().filter_map(Result::err).collect();
        assert!(failures.is_empty(), "{}", first_n(&failures, 10));
    }
    firsts.into_iter().map(|(home, _)| home).collect()
}

/// `(lo, hi)`: within ±5% of `share` of `n`, rounded inwards.
fn within_5_percent(n: usize, share: f64) -> (usize, usize) {
    let want = n as f64 * share;
    (
        (want * 0.95).ceil() as usize,
        (want * 1.05).floor() as usize,
    )
}

/// Sessions pinned and active, summed over backends.
fn session_gauges(gw: &Gateway) -> (f64, f64) {
    let labels = [("upstream", config::UPSTREAM)];
    (
        gw.metric("berth_sessions", &labels),
        gw.metric("berth_sessions_active", &labels),
    )
}

#[test]
fn three_hundred_cookie_sessions_on_three_equal_backends_spread_evenly() {
    let (_backends, gw) = cookie_gateway(&[1, 1, 1]);
    let names = ["b1", "b2", "b3"];
    let (lo, hi) = within_5_percent(300, 1.0 / 3.0);
    // Browsers that come back at once.
    let homes = browsers(&gw, 300, true);
    let spread = tally(homes.iter().map(String::as_str));
    eprintln!("300 sessions, back at once: {spread:?} (allowed {lo}..={hi} each)");
    check_spread(&spread, &names, lo, hi).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        session_gauges(&gw),
        (300.0, 300.0),
        "(berth_sessions, _active)"
    );
    // A burst: 300 more whose first requests are all answered before any comes back.
    let homes = browsers(&gw, 300, false);
    let spread = tally(homes.iter().map(String::as_str));
    eprintln!("300 more, back after the burst: {spread:?} (allowed {lo}..={hi} each)");
    check_spread(&spread, &names, lo, hi).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        session_gauges(&gw),
        (600.0, 600.0),
        "(berth_sessions, _active)"
    );
    // The ring itself is uneven here; new sessions do not follow it.
    let ring = gw.admin("GET", "/admin/ring", None).text();
    eprintln!("ring: {ring}");
}

#[test]
fn weights_one_one_two_get_a_quarter_a_quarter_and_a_half_of_new_sessions() {
    let (_backends, gw) = cookie_gateway(&[1, 1, 2]);
    let homes = browsers(&gw, 300, true);
    let spread = tally(homes.iter().map(String::as_str));
    let quarter = within_5_percent(300, 0.25);
    let half = within_5_percent(300, 0.5);
    eprintln!("300 sessions on weights 1:1:2: {spread:?} (allowed {quarter:?}, {half:?})");
    check_spread(&spread, &["b1", "b2", "b3"], quarter.0, half.1).unwrap_or_else(|e| panic!("{e}"));
    for (name, (lo, hi)) in [("b1", quarter), ("b2", quarter), ("b3", half)] {
        let got = spread.get(name).copied().unwrap_or(0);
        assert!(
            (lo..=hi).contains(&got),
            "{name}: {got} sessions, want {lo}..={hi}: {spread:?}"
        );
    }
}

/// The `make run` chain (cookie insert, then `X-Session-Id`) with `sessions.max: 1000`: 500
/// header sessions, then a flood of requests with neither (crawlers, health checkers, curl),
/// of which 100 do come back with their cookie. No header session loses its pin; only the
/// sessions that exist are counted.
#[test]
fn clients_that_never_return_their_cookie_evict_no_session_and_count_nowhere() {
    let crawl: usize = std::env::var("BERTH_CRAWL_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let backends = Backend::start_many(3);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let yaml = config::app_config(
        &[config::cookie_plugin(), config::header_plugin(HEADER)],
        &specs,
    );
    let yaml = config::set(&yaml, "upstreams.app.sessions.max", "1000");
    let gw = Gateway::start_with_admin(&yaml);

    let ids = sessions::ids(0, 500);
    let opened = sessions::visit_with(&gw, &ids, THREADS, |_, id| sessions::request(id, "/"));
    let homes: Vec<String> = opened
        .iter()
        .zip(&ids)
        .map(|(r, id)| match r {
            Ok(r) if r.status == 200 && r.affinity() == "new" => r.backend().to_string(),
            other => panic!("session {id}: {:?}", other.as_ref().map(|r| r.summary())),
        })
        .collect();
    assert_eq!(
        session_gauges(&gw),
        (500.0, 500.0),
        "(berth_sessions, _active)"
    );

    // The flood, over keep-alive connections: every request a new session by its answer.
    let conns = 2 * THREADS;
    let per = crawl.div_ceil(conns);
    let started = Instant::now();
    let results = par_map(conns, conns, |c| {
        let mut client = gw.client();
        let mut kept = Vec::new();
        let mut bad = Vec::new();
        for n in 0..per.min(crawl.saturating_sub(c * per)) {
            match client.try_send(&Request::get("/crawl")) {
                Ok(r) if r.status == 200 && r.affinity() == "new" => {
                    if kept.len() < 100 / conns + 1 {
                        if let Some(t) = r.set_cookie(COOKIE_NAME) {
                            kept.push((r.backend().to_string(), t.value));
                        }
                    }
                }
                other => bad.push(format!(
                    "conn {c}, request {n}: {:?}",
                    other.map(|r| r.summary())
                )),
            }
        }
        (kept, bad)
    });
    let took = started.elapsed();
    let bad: Vec<String> = results.iter().flat_map(|(_, b)| b.clone()).collect();
    assert!(bad.is_empty(), "{} failed: {}", bad.len(), first_n(&bad, 5));
    eprintln!(
        "{crawl} cookieless requests over {conns} connections in {:.1} s",
        took.as_secs_f64()
    );
    let evicted = gw.metric("berth_pins_total", &[("event", "evicted")]);
    assert_eq!(evicted, 0.0, "berth_pins_total{{event=evicted}}");
    assert_eq!(
        session_gauges(&gw),
        (500.0, 500.0),
        "(berth_sessions, _active)"
    );

    // 100 of those clients did keep their cookie: they come back, and now they exist.
    let kept: Vec<(String, String)> = results.into_iter().flat_map(|(k, _)| k).take(100).collect();
    assert_eq!(kept.len(), 100);
    let back = par_map(kept.len(), THREADS, |i| {
        come_back(&mut gw.client(), i, &kept[i].0, &kept[i].1)
    });
    let failures: Vec<String> = back.into_iter().filter_map(Result::err).collect();
    assert!(failures.is_empty(), "{}", first_n(&failures, 10));
    assert_eq!(
        session_gauges(&gw),
        (600.0, 600.0),
        "(berth_sessions, _active)"
    );
    let created = gw.metric("berth_pins_total", &[("event", "created")]);
    assert_eq!(created, 600.0, "berth_pins_total{{event=created}}");

    // Every header session is still where it was.
    let again = sessions::visit_with(&gw, &ids, THREADS, |_, id| sessions::request(id, "/after"));
    let moved: Vec<String> = again
        .iter()
        .zip(ids.iter().zip(&homes))
        .filter_map(|(r, (id, home))| match r {
            Ok(r) if r.status == 200 && r.backend() == home && r.affinity() == "sticky" => None,
            other => Some(format!(
                "{id} (home {home}): {:?}",
                other.as_ref().map(|r| r.summary())
            )),
        })
        .collect();
    assert!(
        moved.is_empty(),
        "{} of 500 header sessions lost their pin: {}",
        moved.len(),
        first_n(&moved, 5)
    );
    assert_eq!(gw.metric("berth_pins_total", &[("event", "evicted")]), 0.0);
}
