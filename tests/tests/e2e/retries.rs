//! Issue #3, must-show 2: which requests are retried on another backend.
//!
//! The demo backend drops a request listed in `X-Demo-Drop` (reads and counts it, then closes
//! the connection without a byte of response): a failure "before a response starts". Idempotent
//! requests (GET, HEAD, OPTIONS, PUT, DELETE, or anything carrying `Idempotency-Key`) are then
//! retried on the next node — the session's backup; other requests are not replayed anywhere
//! and get a clear 502/503. A connect failure (nothing was sent) is retried whatever the method.
use berth_tests::config::{self, UPSTREAM};
use berth_tests::sessions::{self, Placed, HEADER};
use berth_tests::{Backend, Client, Gateway, Request, Response};
use std::collections::BTreeMap;

fn start() -> (Vec<Backend>, Gateway) {
    let backends = Backend::start_many(3);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let gw = Gateway::start(&config::header_app(&specs, &[]));
    (backends, gw)
}

/// Open session `id` with a GET: where it lives and its backup.
fn open(client: &mut Client, id: &str) -> Placed {
    let r = client.send(&sessions::request(id, "/open"));
    assert_eq!(
        (r.status, r.affinity()),
        (200, "new"),
        "{id}: {}",
        r.summary()
    );
    let p = Placed {
        id: id.to_string(),
        home: r.backend().to_string(),
        backup: r.seen_backup().to_string(),
    };
    assert!(
        p.backup != "-" && p.backup != p.home,
        "{id}: on {} the backend was told backup {:?}",
        p.home,
        p.backup
    );
    p
}

/// `method` count of every backend, by name.
fn counts(backends: &[Backend], method: &str) -> BTreeMap<String, u64> {
    backends
        .iter()
        .map(|b| (b.name.clone(), b.count_method(method)))
        .collect()
}

fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .collect()
}

fn expect(pairs: &[(&str, u64)], names: &[Backend]) -> BTreeMap<String, u64> {
    names
        .iter()
        .map(|b| {
            let n = pairs
                .iter()
                .find(|(k, _)| *k == b.name)
                .map_or(0, |(_, n)| *n);
            (b.name.clone(), n)
        })
        .collect()
}

/// A request in session `p` that its home backend drops.
fn dropped_on_home(p: &Placed, method: &str) -> Request {
    Request::new(method, "/op")
        .header(HEADER, &p.id)
        .header("X-Demo-Drop", &p.home)
        .body(b"{\"amount\":1}".to_vec())
}

fn describe(r: &std::io::Result<Response>) -> String {
    match r {
        Ok(r) => r.summary(),
        Err(e) => format!("no response: {e}"),
    }
}

#[test]
fn a_non_idempotent_request_that_fails_after_sending_is_not_replayed() {
    let (backends, gw) = start();
    let mut client = gw.client();
    for (i, method) in ["POST", "PATCH"].into_iter().enumerate() {
        let p = open(&mut client, &sessions::id(100 + i));
        let before = counts(&backends, method);
        let r = client.try_send(&dropped_on_home(&p, method));
        client.close();
        assert!(
            matches!(&r, Ok(r) if r.status == 502 && r.text().contains("not idempotent")),
            "{method} without Idempotency-Key dropped by {}: want a 502 saying it was not \
             retried because it is not idempotent, got {}",
            p.home,
            describe(&r)
        );
        let got = delta(&before, &counts(&backends, method));
        assert_eq!(
            got,
            expect(&[(p.home.as_str(), 1)], &backends),
            "{method} without Idempotency-Key: received once by {} and by nobody else",
            p.home
        );
    }
    assert_eq!(
        gw.metric("berth_retries_total", &[("upstream", UPSTREAM)]),
        0.0,
        "nothing was retried"
    );
}

#[test]
fn idempotent_requests_that_fail_after_sending_are_retried_on_the_backup() {
    let (backends, gw) = start();
    let mut client = gw.client();
    let cases: [(&str, Option<&str>); 6] = [
        ("GET", None),
        ("HEAD", None),
        ("OPTIONS", None),
        ("PUT", None),
        ("DELETE", None),
        ("POST", Some("key-7f3a")),
    ];
    // Every case is tried; the failures are reported together.
    let mut failures = Vec::new();
    for (i, (method, key)) in cases.into_iter().enumerate() {
        let p = open(&mut client, &sessions::id(200 + i));
        let before = counts(&backends, method);
        let mut req = dropped_on_home(&p, method);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        let r = client.try_send(&req);
        client.close();
        let got = delta(&before, &counts(&backends, method));
        let what = format!(
            "{method} (Idempotency-Key {key:?}) dropped by {} (backup {}), received {got:?}",
            p.home, p.backup
        );
        match &r {
            Ok(r) if r.status == 200 && r.backend() == p.backup => {}
            _ => failures.push(format!(
                "{what}: want 200 from the backup, got {}",
                describe(&r)
            )),
        }
        if let (Some(k), Ok(r)) = (key, &r) {
            if r.header("x-seen-idempotency-key") != Some(k) {
                failures.push(format!("{what}: the key did not reach the backend"));
            }
        }
        // The request went out on a pooled keep-alive connection: Berth first retries it once
        // on a fresh connection to the same backend (a pooled connection the backend closed
        // must not move the session), then on the backup.
        if got != expect(&[(p.home.as_str(), 2), (p.backup.as_str(), 1)], &backends) {
            failures.push(format!(
                "{what}: want twice on the home (pooled, then fresh connection), once on the \
                 backup, nowhere else"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n  {}",
        failures.len(),
        cases.len(),
        failures.join("\n  ")
    );
    let retried = gw.wait_metric(
        "berth_retries_total",
        &[("upstream", UPSTREAM), ("why", "idempotent")],
        |v| v >= cases.len() as f64,
    );
    assert_eq!(
        retried,
        cases.len() as f64,
        "berth_retries_total{{why=\"idempotent\"}}"
    );
    assert_eq!(
        gw.metric(
            "berth_retries_total",
            &[("upstream", UPSTREAM), ("why", "connect")]
        ),
        0.0,
        "no connect failure happened"
    );
}

#[test]
fn retries_are_bounded_when_every_backend_drops() {
    let (backends, gw) = start();
    let mut client = gw.client();
    let p = open(&mut client, &sessions::id(300));
    let r = client.try_send(
        &Request::get("/op")
            .header(HEADER, &p.id)
            .header("X-Demo-Drop", "1"),
    );
    assert!(
        matches!(&r, Ok(r) if r.status == 502),
        "a GET every backend drops: want a 502 once retries are exhausted, got {}",
        describe(&r)
    );
    let per_backend: BTreeMap<String, u64> = backends
        .iter()
        .map(|b| (b.name.clone(), b.count_path("/op")))
        .collect();
    let tried: u64 = per_backend.values().sum();
    let others_once = per_backend
        .iter()
        .all(|(name, &n)| n <= if *name == p.home { 2 } else { 1 });
    assert!(
        (2..=4).contains(&tried) && others_once,
        "tried {tried} times {per_backend:?} (home {}): want the home (once on the pooled \
         connection, once on a fresh one), then at most connect_retries = 2 other backends, \
         each once",
        p.home
    );
}

#[test]
fn a_connect_failure_is_retried_whatever_the_method() {
    let (mut backends, gw) = start();
    let mut client = gw.client();
    // Sessions until one lives on b3, then b3 dies: nothing can be sent to it.
    let p = (400..460)
        .map(|i| open(&mut client, &sessions::id(i)))
        .find(|p| p.home == "b3")
        .expect("one of 60 sessions lands on b3");
    backends[2].kill();
    let before = counts(&backends[..2], "POST");
    let r = client.send(
        &Request::new("POST", "/pay")
            .header(HEADER, &p.id)
            .body(b"{}".to_vec()),
    );
    assert_eq!(
        (r.status, r.backend(), r.affinity(), r.previous()),
        (200, p.backup.as_str(), "reassigned", "b3"),
        "a POST whose backend refuses connections goes to the backup: {}",
        r.summary()
    );
    let got = delta(&before, &counts(&backends[..2], "POST"));
    assert_eq!(got, expect(&[(p.backup.as_str(), 1)], &backends[..2]));
    let retried = gw.wait_metric(
        "berth_retries_total",
        &[("upstream", UPSTREAM), ("why", "connect")],
        |v| v >= 1.0,
    );
    assert_eq!(retried, 1.0, "berth_retries_total{{why=\"connect\"}}");
}
