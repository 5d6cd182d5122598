//! Per-backend connection limits (`max_connections`, `queue_timeout`): the backend never sees
//! more requests at once than its limit; requests over it wait for a slot, and past
//! `queue_timeout` get a 503 that says why (counted as `why="busy"`).
use berth_tests::{config, par_map, Backend, Client, Gateway, Request};
use std::time::Duration;

fn start(max: u32, queue_timeout: &str) -> (Backend, Gateway) {
    let b = Backend::start("b1");
    let yaml = config::app_config(&[], &[b.spec()]);
    let yaml = config::set(
        &yaml,
        "upstreams.app.backends.0.max_connections",
        &max.to_string(),
    );
    let yaml = config::set(&yaml, "upstreams.app.queue_timeout", queue_timeout);
    (b, Gateway::start(&yaml))
}

fn slow(gw: &Gateway, ms: u64) -> berth_tests::Response {
    Client::new(gw.addr)
        .fresh_connections()
        .timeout(Duration::from_secs(30))
        .send(&Request::get(&format!("/__slow?ms={ms}")))
}

#[test]
fn requests_over_the_limit_wait_for_a_slot() {
    let (b, gw) = start(3, "20s");
    let statuses = par_map(12, 12, |_| slow(&gw, 300).status);
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    let most = b.max_in_flight();
    assert!(
        most <= 3,
        "the backend saw {most} requests at once (limit 3)"
    );
    assert!(
        most >= 2,
        "the requests never overlapped ({most}): the test proves nothing"
    );
    assert_eq!(
        gw.metric("berth_requests_unrouted_total", &[("why", "busy")]),
        0.0
    );
}

#[test]
fn past_the_queue_timeout_a_request_gets_503_busy() {
    let (b, gw) = start(2, "100ms");
    let answers = par_map(8, 8, |_| slow(&gw, 2000));
    let ok = answers.iter().filter(|r| r.status == 200).count();
    let busy: Vec<_> = answers.iter().filter(|r| r.status == 503).collect();
    assert_eq!(
        ok + busy.len(),
        8,
        "{:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(
        (1..=2).contains(&ok),
        "{ok} served at once with a limit of 2"
    );
    for r in &busy {
        assert!(r.text().contains("connection limit"), "{}", r.text());
        assert_eq!(r.header("retry-after"), Some("1"));
    }
    assert!(b.max_in_flight() <= 2);
    let counted = gw.wait_metric("berth_requests_unrouted_total", &[("why", "busy")], |v| {
        v == busy.len() as f64
    });
    assert_eq!(counted, busy.len() as f64);
    // Slots come back: once the slow ones are done, requests are served again.
    assert_eq!(slow(&gw, 0).status, 200);
    assert_eq!(
        b.count(),
        ok as u64 + 1,
        "a refused request reached the backend"
    );
}
