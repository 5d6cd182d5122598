//! Issue #5, item 4: the JSON-lines access log, read back from the file Berth wrote — one line
//! per request with upstream, backend id (never its address), reason, status, duration and
//! bytes; the query string only when asked; lines that cannot be written are counted; SIGHUP
//! reopens the file.
use berth_tests::config::{self, UPSTREAM};
use berth_tests::{sessions, wait_for, Backend, ClosedPort, Gateway, Request};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

const HOST: &str = "app.test";

/// The lines of `path` once there are `n` of them (panics with what is there after 10 s).
fn wait_lines(path: &Path, n: usize) -> Vec<Value> {
    let read = || std::fs::read_to_string(path).unwrap_or_default();
    wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
        let text = read();
        (text.lines().count() >= n).then_some(text)
    })
    .unwrap_or_else(|| panic!("{} has not {n} lines:\n{}", path.display(), read()))
    .lines()
    .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
    .collect()
}

fn by_path<'a>(lines: &'a [Value], path: &str) -> &'a Value {
    let found: Vec<&Value> = lines.iter().filter(|l| l["path"] == path).collect();
    assert_eq!(found.len(), 1, "lines for {path}: {found:?}");
    found[0]
}

#[test]
fn every_request_is_one_line_with_its_routing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("access.log");
    let backends = Backend::start_many(2);
    let dead = ClosedPort::new();
    let mut specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    specs.push(("b3".into(), dead.addr));
    let access = format!("{{path: {}}}", log.display());
    let gw = Gateway::start(&config::header_app(
        &specs,
        &[
            ("upstreams.app.passive", "{fall: 0}"),
            ("routes.0.host", HOST),
            ("access_log", &access),
        ],
    ));
    let mut client = gw.client();
    let mut sent = Vec::new();
    for i in 0..20 {
        let path = format!("/page/{i}");
        let req = sessions::request(&sessions::id(i), &format!("{path}?token=secret-{i}"))
            .header("Host", HOST);
        sent.push((path, client.send(&req)));
    }
    for i in 0..5 {
        let path = format!("/submit/{i}");
        let req = Request::new("POST", &path)
            .header("Host", HOST)
            .header(sessions::HEADER, &sessions::id(i))
            .body("hello");
        sent.push((path, client.send(&req)));
    }
    let unrouted = client.send(&Request::get("/nowhere"));
    assert_eq!(unrouted.status, 404, "{}", unrouted.summary());

    let lines = wait_lines(&log, sent.len() + 1);
    assert_eq!(lines.len(), sent.len() + 1, "one line per request");
    let mut reasons = BTreeSet::new();
    for (path, r) in &sent {
        assert_eq!(r.status, 200, "{path}: {}", r.summary());
        let l = by_path(&lines, path);
        let keys: BTreeSet<&str> = l
            .as_object()
            .expect("object")
            .keys()
            .map(|k| k.as_str())
            .collect();
        let want: BTreeSet<&str> = [
            "time",
            "client",
            "method",
            "path",
            "upstream",
            "backend",
            "reason",
            "status",
            "duration_ms",
            "bytes",
        ]
        .into();
        assert_eq!(keys, want, "{l}");
        let reason = match r.affinity() {
            "reassigned" => "failover",
            other => other,
        };
        reasons.insert(reason.to_string());
        let method = if path.starts_with("/submit") {
            "POST"
        } else {
            "GET"
        };
        assert!(
            l["time"]
                .as_str()
                .is_some_and(|t| t.len() == 24 && t.ends_with('Z'))
                && l["client"] == "127.0.0.1"
                && l["method"] == method
                && l["upstream"] == UPSTREAM
                && l["backend"] == r.backend()
                && l["reason"] == reason
                && l["status"] == 200
                && l["bytes"] == r.body.len()
                && l["duration_ms"].as_f64().is_some_and(|d| d > 0.0),
            "{path}: line {l} does not match the response {}",
            r.summary()
        );
    }
    assert!(
        reasons.contains("new") && reasons.contains("sticky") && reasons.contains("failover"),
        "the script covers new, sticky and failover: {reasons:?}"
    );
    let l = by_path(&lines, "/nowhere");
    assert!(
        l["upstream"].is_null()
            && l["backend"].is_null()
            && l["reason"].is_null()
            && l["status"] == 404
            && l["bytes"] == unrouted.body.len(),
        "unrouted request: {l}"
    );
    let text = std::fs::read_to_string(&log).expect("the log");
    assert!(!text.contains("secret"), "query strings are not logged");
    for (id, addr) in &specs {
        assert!(
            !text.contains(&addr.to_string()),
            "{id}'s address is in the log"
        );
    }
    let dropped = gw.metric("berth_access_log_dropped_total", &[]);
    assert_eq!(dropped, 0.0);

    // Rotation: move the file away, SIGHUP, and the next line goes to a new file.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).expect("rotate");
    gw.sighup();
    let ok = wait_for(Duration::from_secs(10), Duration::from_millis(50), || {
        let r = client.send(&Request::get("/after-rotation").header("Host", HOST));
        assert_eq!(r.status, 200);
        log.exists().then_some(())
    });
    assert!(
        ok.is_some(),
        "no new file after SIGHUP:\n{}",
        gw.log_tail(20)
    );
    let after = wait_lines(&log, 1);
    assert!(
        after.iter().all(|l| l["path"] == "/after-rotation"),
        "{after:?}"
    );
    // Requests sent before the reopen took effect still went to the old (rotated) file.
    let old = std::fs::read_to_string(&rotated).expect("rotated");
    let before: Vec<&str> = old
        .lines()
        .filter(|l| !l.contains("\"/after-rotation\""))
        .collect();
    assert_eq!(before.len(), lines.len(), "the rotated file kept its lines");
}

#[test]
fn include_query_logs_the_query() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("a.log");
    let backends = Backend::start_many(1);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let access = format!("{{path: {}, include_query: true}}", log.display());
    let gw = Gateway::start(&config::header_app(&specs, &[("access_log", &access)]));
    let r = gw.client().send(&Request::get("/q?x=1&y=2"));
    assert_eq!(r.status, 200);
    let lines = wait_lines(&log, 1);
    assert_eq!(lines[0]["path"], "/q?x=1&y=2", "{:?}", lines[0]);
}

#[test]
fn lines_that_cannot_be_written_are_counted_and_requests_still_served() {
    let backends = Backend::start_many(1);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    // Every write to /dev/full fails with ENOSPC.
    let gw = Gateway::start(&config::header_app(
        &specs,
        &[("access_log", "{path: /dev/full}")],
    ));
    let mut client = gw.client();
    for i in 0..6 {
        let r = client.send(&Request::get(&format!("/{i}")));
        assert_eq!(r.status, 200, "request {i}: {}", r.summary());
    }
    let lost = gw.wait_metric(
        "berth_access_log_dropped_total",
        &[("why", "write_error")],
        |v| v >= 6.0,
    );
    assert_eq!(lost, 6.0);
    assert_eq!(
        gw.metric("berth_access_log_dropped_total", &[("why", "queue_full")]),
        0.0
    );
    assert!(
        gw.log().contains("access log: write failed"),
        "{}",
        gw.log_tail(20)
    );
}

#[test]
fn off_unless_configured() {
    let backends = Backend::start_many(1);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("never.log");
    let access = format!("{{path: {}, enabled: false}}", log.display());
    let gw = Gateway::start(&config::header_app(&specs, &[("access_log", &access)]));
    let r = gw.client().send(&Request::get("/"));
    assert_eq!(r.status, 200);
    std::thread::sleep(Duration::from_millis(200));
    assert!(!log.exists(), "enabled: false wrote {}", log.display());
    // Nothing on stdout either (the default target): the gateway's output has no JSON line.
    assert!(!gw.log().lines().any(|l| l.starts_with("{\"time\"")));
}
