//! `/metrics` of an upstream whose session registry is Redis: round trips, cache hits, errors,
//! degraded placements and write-backs, `berth_registry_up`. Part of `metrics.rs` (its
//! coverage test reads this file too).
use super::scrape;
use berth_tests::metrics::sum;
use berth_tests::redis::Redis;
use berth_tests::{config, sessions, Backend, Gateway};

/// 10 header sessions × 3 requests: 10 first pins (one round trip each), 20 cache hits. Redis
/// killed: 5 new sessions are degraded (and logged so), at least one call failed,
/// `berth_registry_up` 0.
/// Redis back: `berth_registry_up` 1 and the 5 pins written back.
#[test]
fn registry_round_trips_cache_hits_degraded_and_write_backs() {
    let mut redis = Redis::start();
    let backends = Backend::start_many(2);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let registry = format!(
        "{{type: redis, url: {}, timeouts: {{command: 2s}}}}",
        redis.url()
    );
    let logs = tempfile::tempdir().expect("temp dir");
    let log = logs.path().join("access.log");
    let access_log = format!("{{path: {}}}", log.display());
    let gw = Gateway::start(&config::header_app(
        &specs,
        &[
            ("upstreams.app.registry", &registry),
            ("access_log", &access_log),
        ],
    ));
    let up = [("upstream", "app")];
    assert_eq!(gw.wait_metric("berth_registry_up", &up, |v| v == 1.0), 1.0);
    let mut c = gw.client();
    for i in 0..10 {
        for _ in 0..3 {
            let r = c.send(&sessions::request(&sessions::id(i), "/"));
            assert_eq!(r.status, 200, "{}", r.summary());
        }
    }
    gw.wait_metric("berth_registry_cache_hits_total", &up, |v| v == 20.0);
    let text = scrape(&gw);
    let first_pin = [("upstream", "app"), ("op", "first_pin")];
    assert_eq!(
        sum(&text, "berth_registry_round_trips_total", &first_pin),
        10.0
    );
    assert_eq!(sum(&text, "berth_registry_cache_hits_total", &up), 20.0);
    assert_eq!(sum(&text, "berth_registry_degraded_total", &up), 0.0);
    assert_eq!(sum(&text, "berth_registry_errors_total", &up), 0.0);
    assert!(sum(&text, "berth_registry_round_trip_seconds_count", &up) >= 10.0);
    assert_eq!(sum(&text, "berth_registry_writebacks_total", &up), 0.0);

    redis.kill();
    assert_eq!(gw.wait_metric("berth_registry_up", &up, |v| v == 0.0), 0.0);
    for i in 100..105 {
        let r = c.send(&sessions::request(&sessions::id(i), "/"));
        assert_eq!(r.status, 200, "{}", r.summary());
    }
    let text = scrape(&gw);
    assert_eq!(sum(&text, "berth_registry_degraded_total", &up), 5.0);
    // The access log says so (the application still sees `new`).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let degraded_lines = || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines()
            .filter(|l| l.contains("\"reason\":\"degraded\""))
            .count()
    };
    while degraded_lines() < 5 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(degraded_lines(), 5, "access log lines with reason degraded");
    // The calls that found it gone: refused or reset (error), or unanswered (timeout).
    assert!(sum(&text, "berth_registry_errors_total", &up) >= 1.0);

    redis.restart();
    assert_eq!(gw.wait_metric("berth_registry_up", &up, |v| v == 1.0), 1.0);
    let written = [("upstream", "app"), ("result", "written")];
    assert_eq!(
        gw.wait_metric("berth_registry_writebacks_total", &written, |v| v == 5.0),
        5.0
    );
    let text = scrape(&gw);
    assert_eq!(
        sum(
            &text,
            "berth_registry_writebacks_total",
            &[("result", "conflict")]
        ),
        0.0
    );
}
