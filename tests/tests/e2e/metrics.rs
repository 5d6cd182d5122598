//! Issue #5, must-show 3: `/metrics` after scripted scenarios with real backends — each metric
//! with its exact value — and `promtool check metrics` clean on every real scrape.
//!
//! Every metric family is asserted here with a value from a scenario, and
//! [`every_family_is_documented_and_asserted`] holds the README's metric table, the families a
//! running Berth exposes and the families this file asserts to each other: a family added to
//! the gateway without a row and an assertion here fails it. Metrics are read with
//! `berth_tests::metrics::sum`, which fails on a series that does not exist.
use berth_tests::config::{self, COOKIE_NAME, UPSTREAM};
use berth_tests::metrics::{families, promtool_check, sum, zero_or_unborn, BORN_ON_FIRST_USE};
use berth_tests::{sessions, tally, Backend, ClosedPort, Gateway, Request};
use std::collections::BTreeSet;
use std::time::Duration;

/// The DNS discovery families (an upstream with `discovery:`).
mod discovery;
/// The shared registry's families (an upstream on Redis).
mod registry;
/// The TLS families (a gateway with a TLS listener).
mod tls;
/// The upgrade hand-over's families.
mod upgrade;
/// The WebSocket families.
mod websocket;

/// Scrape `/metrics` and require `promtool check metrics` to pass on it.
fn scrape(gw: &Gateway) -> String {
    let text = gw.metrics();
    if let Err(e) = promtool_check(&text) {
        panic!("{e}\n--- scrape ---\n{text}");
    }
    text
}

/// `(metric, labels it must have, expected sum)`.
pub(crate) type Want<'a> = (&'a str, &'a [(&'a str, &'a str)], f64);

/// Assert that each `(metric, labels, value)` holds in `text`.
fn expect(text: &str, want: &[Want<'_>]) {
    let wrong: Vec<String> = want
        .iter()
        .filter_map(|(name, labels, v)| {
            let got = sum(text, name, labels);
            (got != *v).then(|| format!("{name}{labels:?} = {got}, want {v}"))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "wrong values:\n  {}\n--- scrape ---\n{text}",
        wrong.join("\n  ")
    );
}

#[test]
fn promtool_rejects_a_bad_exposition() {
    // The check the tests rely on is a real one: a counter without `_total` fails it.
    let bad = "# HELP berth_x Things.\n# TYPE berth_x counter\nberth_x 1\n";
    assert!(promtool_check(bad).is_err(), "promtool accepted {bad:?}");
}

/// Ten sessions whose ring node is a dead backend fail over once each: 10 failovers, exactly.
/// Every other request metric follows from the script.
#[test]
fn ten_failovers_from_a_dead_backend_and_every_request_counted() {
    let backends = Backend::start_many(2);
    let dead = ClosedPort::new();
    let mut specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    specs.push(("b3".into(), dead.addr));
    // Passive marking off: b3 stays "up", so every session placed on it fails over.
    let gw = Gateway::start(&config::header_app(
        &specs,
        &[("upstreams.app.passive", "{fall: 0}")],
    ));
    let mut client = gw.client();
    let mut opened = Vec::new();
    let mut failed_over = 0;
    let mut i = 0;
    while failed_over < 10 {
        assert!(
            i < 500,
            "only {failed_over} of {i} sessions were placed on b3"
        );
        let id = sessions::id(i);
        let r = client.send(&sessions::request(&id, "/first"));
        assert_eq!(r.status, 200, "{id}: {}", r.summary());
        match (r.affinity(), r.previous()) {
            ("new", "-") => {}
            ("reassigned", "b3") => failed_over += 1,
            _ => panic!("{id}: expected new, or reassigned from b3: {}", r.summary()),
        }
        opened.push((id, r.backend().to_string()));
        i += 1;
    }
    let k = opened.len() as f64;
    for (id, home) in &opened {
        let r = client.send(&sessions::request(id, "/again"));
        assert!(
            r.status == 200 && r.backend() == home && r.affinity() == "sticky",
            "{id} not sticky on {home}: {}",
            r.summary()
        );
    }
    let requests = 2.0 * k;
    gw.wait_metric("berth_request_duration_seconds_count", &[], |v| {
        v >= requests
    });
    let text = scrape(&gw);
    let app = ("upstream", UPSTREAM);
    expect(
        &text,
        &[
            ("berth_failovers_total", &[], 10.0),
            ("berth_failovers_total", &[app, ("backend", "b3")], 10.0),
            ("berth_retries_total", &[("why", "connect")], 10.0),
            (
                "berth_upstream_connect_failures_total",
                &[("backend", "b3")],
                10.0,
            ),
            ("berth_requests_total", &[], requests),
            ("berth_requests_total", &[("class", "2xx")], requests),
            ("berth_requests_total", &[("reason", "failover")], 10.0),
            ("berth_requests_total", &[("reason", "new")], k - 10.0),
            ("berth_requests_total", &[("reason", "sticky")], k),
            ("berth_requests_total", &[("backend", "b3")], 0.0),
            ("berth_request_duration_seconds_count", &[app], requests),
            (
                "berth_request_duration_seconds_count",
                &[("reason", "failover")],
                10.0,
            ),
            (
                "berth_request_duration_seconds_count",
                &[("reason", "sticky")],
                k,
            ),
            (
                "berth_request_duration_seconds_bucket",
                &[("le", "+Inf")],
                requests,
            ),
            ("berth_affinity_total", &[app, ("outcome", "hit")], k),
            ("berth_affinity_total", &[("outcome", "miss")], k - 10.0),
            ("berth_affinity_total", &[("outcome", "reassigned")], 10.0),
            ("berth_affinity_total", &[("outcome", "invalid_token")], 0.0),
            ("berth_pins_total", &[app, ("event", "created")], k),
            ("berth_pins_total", &[("event", "expired")], 0.0),
            ("berth_pins_total", &[("event", "evicted")], 0.0),
            ("berth_sessions", &[app], k),
            // One lookup per request, plus one per failover (its stored backup); one pin per
            // new session, plus the re-pin of each failover.
            (
                "berth_registry_operations_total",
                &[("op", "get")],
                requests + 10.0,
            ),
            (
                "berth_registry_operations_total",
                &[("op", "pin")],
                k + 10.0,
            ),
            ("berth_registry_operations_total", &[("op", "remove")], 0.0),
            ("berth_upstream_connections_total", &[], requests),
            // Every request was written on a connection: one queueing time each.
            ("berth_request_queueing_seconds_count", &[app], requests),
            (
                "berth_request_queueing_seconds_bucket",
                &[("le", "+Inf")],
                requests,
            ),
            ("berth_drain_remaining_sessions", &[], 0.0),
            // Every session was used within the active window (default 5 m).
            ("berth_sessions_active", &[app], k),
            ("berth_sessions_active", &[("backend", "b3")], 0.0),
            // The harness's sessions.max 100,000, rounded up to 64 shards of 1,563.
            ("berth_session_table_capacity", &[app], 100_032.0),
            // Nothing was refused, unrouted, rebalanced, migrated or dropped from a log.
            ("berth_requests_unrouted_total", &[], 0.0),
            ("berth_requests_refused_total", &[], 0.0),
            ("berth_sessions_rebalanced_total", &[app], 0.0),
            ("berth_sessions_migrated_total", &[app], 0.0),
            ("berth_access_log_dropped_total", &[], 0.0),
            ("berth_admin_denied_total", &[], 0.0),
            ("berth_backend_up", &[app], 3.0),
            ("berth_affinity_invalid_total", &[], 0.0),
            // Counted above zero in plugin_sdk.rs (a plugin that panics).
            ("berth_plugin_panics_total", &[app], 0.0),
            ("berth_retries_total", &[("why", "idempotent")], 0.0),
        ],
    );
    zero_or_unborn(&text, "berth_health_transitions_total", &[]).unwrap_or_else(|e| panic!("{e}"));
    // The duration histogram is cumulative and its sum is the time spent.
    let secs = sum(&text, "berth_request_duration_seconds_sum", &[]);
    assert!(secs > 0.0, "duration sum {secs}");
    // The queueing histogram splits them as the connection counter does.
    for (reused, connection) in [("true", "reused"), ("false", "new")] {
        assert_eq!(
            sum(
                &text,
                "berth_request_queueing_seconds_count",
                &[("connection", connection)]
            ),
            sum(
                &text,
                "berth_upstream_connections_total",
                &[("reused", reused)]
            ),
            "queueing times on {connection} connections"
        );
    }
    assert!(sum(&text, "berth_request_queueing_seconds_sum", &[]) > 0.0);
    // New connections are exactly the connections the backends saw.
    for b in &backends {
        let new = sum(
            &text,
            "berth_upstream_connections_total",
            &[("backend", &b.name), ("reused", "false")],
        );
        assert_eq!(new, b.connections() as f64, "new connections to {}", b.name);
        assert!(new >= 1.0, "{} got no connection", b.name);
    }
    assert!(
        sum(
            &text,
            "berth_upstream_connections_total",
            &[("reused", "true")]
        ) >= 1.0,
        "one keep-alive client, {requests} requests, and no pooled connection was reused"
    );
}

/// Forged cookies are counted as `invalid_token` (and only there); real sessions as miss then
/// hit.
#[test]
fn invalid_tokens_and_cookie_sessions() {
    let backends = Backend::start_many(2);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let gw = Gateway::start(&config::app_config(&[config::cookie_plugin()], &specs));
    let forged = [
        "v1.k1.b1.9999999999.AAAAAAAAAAAAAAAAAAAAAA.not-a-mac",
        "garbage",
        "v1..",
    ];
    for (i, value) in forged.iter().cycle().take(7).enumerate() {
        let r = gw
            .client()
            .send(&Request::get("/").header("Cookie", &format!("{COOKIE_NAME}={value}")));
        assert!(
            r.status == 200 && r.affinity() == "new" && r.set_cookie(COOKIE_NAME).is_some(),
            "forged cookie {i}: routed as new with a fresh cookie: {}",
            r.summary()
        );
    }
    for i in 0..5 {
        let mut user = gw.user();
        let first = user.get("/").expect("first request");
        let second = user.get("/").expect("second request");
        assert_eq!(
            (first.affinity(), second.affinity()),
            ("new", "sticky"),
            "user {i}"
        );
    }
    gw.wait_metric("berth_requests_total", &[], |v| v >= 17.0);
    let text = scrape(&gw);
    expect(
        &text,
        &[
            ("berth_affinity_total", &[("outcome", "invalid_token")], 7.0),
            ("berth_affinity_invalid_total", &[], 7.0),
            ("berth_affinity_total", &[("outcome", "miss")], 5.0),
            ("berth_affinity_total", &[("outcome", "hit")], 5.0),
            ("berth_affinity_total", &[("outcome", "reassigned")], 0.0),
            ("berth_requests_total", &[("reason", "new")], 12.0),
            ("berth_failovers_total", &[], 0.0),
        ],
    );
}

/// Draining a backend shows its sessions as remaining; migrating them brings it to 0.
#[test]
fn drain_remaining_falls_to_zero_after_migrate() {
    let backends = Backend::start_many(3);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let gw = Gateway::start_with_admin(&config::header_app(&specs, &[]));
    let placed = sessions::open(&gw, &sessions::ids(0, 90), 4);
    let (x, n) = tally(placed.iter().map(|p| p.home.as_str()))
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .expect("sessions were placed");
    let text = scrape(&gw);
    expect(&text, &[("berth_drain_remaining_sessions", &[], 0.0)]);

    let r = gw.admin("POST", &format!("/admin/backends/{x}/drain"), None);
    assert_eq!(r.status, 200, "drain {x}: {}", r.summary());
    let text = scrape(&gw);
    let on_x = [("upstream", UPSTREAM), ("backend", x.as_str())];
    expect(
        &text,
        &[
            ("berth_drain_remaining_sessions", &on_x, n as f64),
            ("berth_drain_remaining_sessions", &[], n as f64),
            ("berth_sessions", &on_x, n as f64),
        ],
    );

    let body = r#"{"rate":10000}"#;
    let r = gw.admin("POST", &format!("/admin/backends/{x}/migrate"), Some(body));
    assert_eq!(r.status, 202, "migrate {x}: {}", r.summary());
    let left = gw.wait_metric("berth_drain_remaining_sessions", &on_x, |v| v == 0.0);
    assert_eq!(left, 0.0, "sessions left on {x} after the migration");
    let text = scrape(&gw);
    expect(
        &text,
        &[
            ("berth_drain_remaining_sessions", &[], 0.0),
            ("berth_sessions_migrated_total", &[], n as f64),
            ("berth_sessions", &[], 90.0),
        ],
    );
}

/// Active checks mark a backend down then up: one transition each way.
#[test]
fn health_transitions_are_counted() {
    let backends = Backend::start_many(2);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    // A timeout no loaded machine reaches: a healthy backend never fails a check here.
    let health = "{type: http, path: /__health, interval: 100ms, timeout: 5s, rise: 1, fall: 1}";
    let gw = Gateway::start(&config::header_app(
        &specs,
        &[("upstreams.app.health", health)],
    ));
    let b1 = [("backend", "b1")];
    backends[0].set_healthy(false);
    let down = gw.wait_metric(
        "berth_health_transitions_total",
        &[b1[0], ("to", "down")],
        |v| v >= 1.0,
    );
    assert_eq!(down, 1.0);
    expect(&scrape(&gw), &[("berth_backend_up", &b1, 0.0)]);
    backends[0].set_healthy(true);
    let up = gw.wait_metric(
        "berth_health_transitions_total",
        &[b1[0], ("to", "up")],
        |v| v >= 1.0,
    );
    assert_eq!(up, 1.0);
    let text = scrape(&gw);
    expect(
        &text,
        &[
            ("berth_health_transitions_total", &[], 2.0),
            ("berth_backend_up", &b1, 1.0),
        ],
    );
    // The failed checks: each answered 503, none of another reason; b2 never failed one.
    assert!(
        sum(
            &text,
            "berth_health_check_failures_total",
            &[b1[0], ("reason", "status")]
        ) >= 1.0
    );
    assert_eq!(
        sum(&text, "berth_health_check_failures_total", &[b1[0]]),
        sum(
            &text,
            "berth_health_check_failures_total",
            &[b1[0], ("reason", "status")]
        )
    );
    zero_or_unborn(
        &text,
        "berth_health_check_failures_total",
        &[("backend", "b2")],
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

/// A table of 5 pins: 8 sessions evict 3; after the idle TTL the sweeper expires the other 5.
/// The TTL (4 s) is long enough that none expires while the 8 are opened, even on a loaded
/// machine (with 1 s, a loop under load saw the first ones expire before the last were
/// opened: 0 evictions).
#[test]
fn pins_created_evicted_and_expired() {
    let backends = Backend::start_many(2);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let gw = Gateway::start(&config::header_app(
        &specs,
        &[("upstreams.app.sessions", "{max: 5, idle_ttl: 4s}")],
    ));
    sessions::open(&gw, &sessions::ids(0, 8), 1);
    let text = scrape(&gw);
    expect(
        &text,
        &[
            ("berth_pins_total", &[("event", "created")], 8.0),
            ("berth_pins_total", &[("event", "evicted")], 3.0),
            ("berth_sessions", &[], 5.0),
            // max 5 is one shard of 5.
            (
                "berth_session_table_capacity",
                &[("upstream", UPSTREAM)],
                5.0,
            ),
        ],
    );
    let expired = gw.wait_metric("berth_pins_total", &[("event", "expired")], |v| v >= 5.0);
    assert_eq!(expired, 5.0);
    std::thread::sleep(Duration::from_millis(100));
    let text = scrape(&gw);
    expect(
        &text,
        &[
            ("berth_pins_total", &[("event", "created")], 8.0),
            ("berth_pins_total", &[("event", "evicted")], 3.0),
            ("berth_sessions", &[], 0.0),
        ],
    );
}

#[test]
fn registry_latency_is_sampled_from_real_selections() {
    let backends = Backend::start_many(2);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let yaml = config::set(&config::header_app(&specs, &[]), "server.threads", "1");
    let gw = Gateway::start(&yaml);
    let count = |gw: &Gateway| {
        sum(
            &scrape(gw),
            "berth_registry_operation_duration_seconds_count",
            &[("upstream", UPSTREAM), ("registry", "memory")],
        )
    };
    assert_eq!(count(&gw), 0.0);
    // One worker thread: every 256th selection on it is timed.
    let mut client = gw.client();
    for i in 0..1024 {
        let r = client.send(&Request::get("/").header(sessions::HEADER, &format!("s{}", i % 100)));
        assert_eq!(r.status, 200);
    }
    // Requests without a session key select nothing in the registry and are not timed.
    for _ in 0..512 {
        assert_eq!(client.send(&Request::get("/")).status, 200);
    }
    assert_eq!(count(&gw), 4.0, "1,024 selections / 256");
    let total = sum(
        &scrape(&gw),
        "berth_registry_operation_duration_seconds_sum",
        &[("upstream", UPSTREAM)],
    );
    assert!(total > 0.0, "4 selections took {total} s");
}

/// What Berth itself answers and refuses: no route (404), a request over the limits (414), an
/// admin request with a wrong token; each counted once.
#[test]
fn unrouted_refused_and_denied_requests() {
    let backends = Backend::start_many(1);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let yaml = config::set(
        &config::header_app(&specs, &[]),
        "routes.0.host",
        "app.test",
    );
    let gw = Gateway::start_with_admin(&yaml);
    let mut client = gw.client();
    let r = client.send(&Request::get("/").header("Host", "elsewhere.test"));
    assert_eq!(r.status, 404, "{}", r.summary());
    let r =
        client.send(&Request::get(&format!("/{}", "u".repeat(20_000))).header("Host", "app.test"));
    assert_eq!(r.status, 414, "{}", r.summary());
    client.close();
    let r = client.send(&Request::get("/").header("Host", "app.test"));
    assert_eq!(r.status, 200, "{}", r.summary());
    let r = gw.admin_send("GET", "/admin/backends", None, Some("Bearer wrong"));
    assert_eq!(r.status, 401, "{}", r.summary());
    gw.wait_metric("berth_requests_total", &[], |v| v >= 1.0);
    let text = scrape(&gw);
    expect(
        &text,
        &[
            ("berth_requests_unrouted_total", &[("why", "no_route")], 1.0),
            ("berth_requests_unrouted_total", &[], 1.0),
            (
                "berth_requests_refused_total",
                &[("why", "uri_too_long")],
                1.0,
            ),
            ("berth_requests_refused_total", &[], 1.0),
            ("berth_admin_denied_total", &[], 1.0),
            ("berth_requests_total", &[], 1.0),
        ],
    );
}

/// The README's metric table, the families a running Berth exposes, and the families this
/// file asserts are the same set. A fresh gateway exposes every family except those created on
/// first use ([`BORN_ON_FIRST_USE`], which must then be absent: once the gateway registers one
/// up front, it leaves that list and is read with `sum` like the others). The other tests in
/// this file produce those and assert them; this file names every family in an assertion, and
/// `sum` fails on a name that does not exist.
#[test]
fn every_family_is_documented_and_asserted() {
    let readme = std::fs::read_to_string(berth_tests::workspace_root().join("README.md"))
        .expect("read README.md");
    let documented: BTreeSet<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `berth_"))
        .filter_map(|l| l.split('`').next())
        .map(|rest| format!("berth_{rest}"))
        .collect();
    assert!(
        documented.len() >= 20,
        "README metric table: {documented:?}"
    );

    let backends = Backend::start_many(2);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    // With a TLS listener: the TLS families exist only then.
    let dir = tempfile::tempdir().expect("temp dir");
    let cert = berth_tests::tls::self_signed(&["families.test"]).write(dir.path(), "f");
    let tls = berth_tests::tls::listener(berth_tests::free_addr(), &[&cert], "");
    let yaml = berth_tests::tls::with_listeners(&config::header_app(&specs, &[]), &[tls]);
    // With discovery (the DNS families exist only then), from a resolver that never answers.
    let silent = ClosedPort::new();
    let discovery = format!(
        "{{dns: families.test., port: 80, resolver: \"{}\"}}",
        silent.addr
    );
    let yaml = config::set(&yaml, "upstreams.app.discovery", &discovery);
    // With a Redis session registry: its families exist only then.
    let redis = berth_tests::redis::Redis::start();
    let registry = format!("{{type: redis, url: {}}}", redis.url());
    let yaml = config::set(&yaml, "upstreams.app.registry", &registry);
    let gw = Gateway::start(&yaml);
    let r = gw.client().send(&sessions::request("s1", "/"));
    assert_eq!(r.status, 200, "{}", r.summary());
    let text = scrape(&gw);
    let exposed: BTreeSet<String> = families(&text).into_iter().collect();
    let born: BTreeSet<String> = BORN_ON_FIRST_USE
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    let pre_registered: Vec<&String> = exposed.intersection(&born).collect();
    assert!(
        pre_registered.is_empty(),
        "{pre_registered:?} now exist(s) from the start: remove from BORN_ON_FIRST_USE \
         (tests/src/metrics.rs) and read with metrics::sum where zero_or_unborn is used"
    );
    let all: BTreeSet<String> = exposed.union(&born).cloned().collect();
    assert_eq!(
        all.iter()
            .filter(|f| !documented.contains(*f))
            .collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "families Berth has but the README's metric table lacks"
    );
    assert_eq!(
        documented
            .iter()
            .filter(|f| !all.contains(*f))
            .collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "families in the README's metric table that Berth does not have"
    );

    // Named in this file outside this test: in an `expect` table, `sum`, `wait_metric` or
    // `zero_or_unborn` of a scenario above.
    // The files of `metrics/` first: only the text of this file before this test counts.
    let source = [
        include_str!("metrics/tls.rs"),
        include_str!("metrics/discovery.rs"),
        include_str!("metrics/registry.rs"),
        include_str!("metrics/upgrade.rs"),
        include_str!("metrics/websocket.rs"),
        include_str!("metrics.rs"),
    ]
    .concat();
    let others = &source[..source
        .find("fn every_family_is_documented_and_asserted")
        .expect("this test is in metrics.rs")];
    let unasserted: Vec<&String> = documented
        .iter()
        .filter(|f| !others.contains(&format!("\"{f}\"")) && !others.contains(&format!("\"{f}_")))
        .collect();
    assert!(
        unasserted.is_empty(),
        "families no scenario in tests/tests/e2e/metrics.rs asserts: {unasserted:?}"
    );
}
