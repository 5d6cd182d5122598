//! Issue 14, stage 3: TLS to the backends. The TLS backend is a second Berth with a TLS
//! listener (certificate for `backend.test` from a test CA) in front of a demo backend. With
//! the right CA and name requests are verified and proxied and HTTP health probes speak TLS; a
//! wrong CA or name is a clear 502 and a failed health check counted as `tls`; pooled
//! connections verified for one upstream are never reused by an upstream that trusts another
//! CA, even in the same pool group; `verify: false` skips the checks.
use berth_tests::tls::{self, TestCa};
use berth_tests::{free_addr, wait_for, Backend, Gateway, Request};
use std::net::SocketAddr;
use std::time::Duration;

/// The TLS backend: a Berth terminating TLS for `backend.test` (signed by `ca`) in front of a
/// demo backend named `d1`.
fn tls_backend(demo: &Backend, ca: &TestCa, dir: &std::path::Path) -> (Gateway, SocketAddr) {
    let cert = ca.leaf(&["backend.test"]).write(dir, "backend");
    let addr = free_addr();
    let yaml = berth_tests::config::app_config(&[], &[demo.spec()]);
    let yaml = tls::with_listeners(&yaml, &[tls::listener(addr, &[&cert], "")]);
    (Gateway::start(&yaml), addr)
}

fn upstream(name: &str, backend: SocketAddr, tls: &str, extra: &str) -> String {
    format!(
        "  {name}:\n    tls: {tls}\n    passive: {{fall: 0}}\n    connect_retries: 0\n{extra}    \
         backends:\n      - {{id: {name}1, addr: \"{backend}\"}}\n"
    )
}

#[test]
fn backends_over_tls_are_verified_pooled_apart_and_probed_over_tls() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new("berth backend CA");
    let other_ca = TestCa::new("another CA");
    let ca_file = dir.path().join("ca.pem");
    let other_ca_file = dir.path().join("other-ca.pem");
    ca.write(&ca_file);
    other_ca.write(&other_ca_file);
    let demo = Backend::start("d1");
    let (backend, backend_addr) = tls_backend(&demo, &ca, dir.path());

    let good = format!("{{sni: backend.test, ca_file: {ca_file:?}}}");
    // Probes of a backend that works: they must not take it down on a loaded machine.
    let probe =
        "    health: {type: http, path: /__health, interval: 300ms, timeout: 5s, rise: 1, fall: 1000}\n";
    let upstreams = [
        upstream(
            "good",
            backend_addr,
            &good,
            &format!("{probe}    pool: {{group: shared}}\n"),
        ),
        // Same name and pool group as `good`, another CA: must not reuse good's connections.
        upstream(
            "badca",
            backend_addr,
            &format!("{{sni: backend.test, ca_file: {other_ca_file:?}}}"),
            "    pool: {group: shared}\n",
        ),
        upstream(
            "badname",
            backend_addr,
            &format!("{{sni: other.test, ca_file: {ca_file:?}}}"),
            "",
        ),
        upstream(
            "badhealth",
            backend_addr,
            &format!("{{sni: other.test, ca_file: {ca_file:?}}}"),
            "    health: {type: tcp, interval: 300ms, timeout: 5s, rise: 1, fall: 1}\n",
        ),
        upstream("insecure", backend_addr, "{verify: false}", ""),
    ];
    let routes: Vec<String> = ["good", "badca", "badname", "badhealth", "insecure"]
        .iter()
        .map(|u| format!("  - {{path_prefix: /{u}, upstream: {u}}}\n"))
        .collect();
    let yaml = format!(
        "routes:\n{}upstreams:\n{}",
        routes.concat(),
        upstreams.concat()
    );
    let gw = Gateway::start_with_admin(&yaml);
    let mut client = gw.client();

    for _ in 0..5 {
        let r = client.send(&Request::get("/good"));
        assert_eq!(r.status, 200, "{}", r.summary());
        assert_eq!(r.backend(), "d1");
    }
    let reused = gw.metric(
        "berth_upstream_connections_total",
        &[("upstream", "good"), ("reused", "true")],
    );
    assert!(
        reused >= 1.0,
        "the good upstream's connections were not pooled"
    );
    for (path, what) in [("/badca", "another CA"), ("/badname", "another name")] {
        let r = client.send(&Request::get(path));
        assert_eq!(r.status, 502, "{what}: {}", r.summary());
        assert!(
            r.text().contains("no TLS connection to the backend"),
            "{what}: {}",
            r.text()
        );
        let upstream = &path[1..];
        assert_eq!(
            gw.metric(
                "berth_upstream_connect_failures_total",
                &[("upstream", upstream)]
            ),
            1.0,
            "{what}"
        );
    }
    let r = client.send(&Request::get("/insecure"));
    assert_eq!(r.status, 200, "verify: false: {}", r.summary());

    // Health probes: the good upstream's over TLS (the TLS backend counts their handshakes
    // while no request is sent), the wrong name's counted as tls failures, its backend down.
    let listener = backend_addr.to_string();
    let handshakes = || {
        backend.metric(
            "berth_tls_handshakes_total",
            &[("listener", listener.as_str())],
        )
    };
    let before = handshakes();
    wait_for(Duration::from_secs(30), Duration::from_millis(100), || {
        (handshakes() >= before + 3.0).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "no TLS health probes reached the backend\n{}",
            gw.log_tail(20)
        )
    });
    gw.wait_metric(
        "berth_health_check_failures_total",
        &[("upstream", "badhealth"), ("reason", "tls")],
        |v| v >= 1.0,
    );
    gw.wait_backend("badhealth1", "down", Duration::from_secs(30), |b| {
        b.health == "down"
    });
    assert_eq!(gw.backend_info("good1").health, "up");
    let r = client.send(&Request::get("/good"));
    assert_eq!(r.status, 200, "{}", r.summary());
}

#[test]
fn upstream_tls_mistakes_are_config_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").expect("write");
    let missing = dir.path().join("missing.pem");
    let yaml = format!(
        "upstreams:\n  a:\n    tls: {{ca_file: {missing:?}, sni: \"bad name!\", verify: maybe}}\n    \
         backends: [{{id: a1, addr: \"127.0.0.1:9\"}}]\n  b:\n    tls: {{ca_file: {empty:?}}}\n    \
         backends: [{{id: b1, addr: \"127.0.0.1:9\"}}]\nroutes:\n  - {{upstream: a}}\n"
    );
    let path = dir.path().join("berth.yaml");
    std::fs::write(&path, yaml).expect("write");
    let (code, stderr) = berth_tests::berth_check(&path);
    assert_eq!(code, 2, "{stderr}");
    for want in [
        format!("upstreams.a.tls.ca_file: cannot read {missing:?}"),
        "upstreams.a.tls.sni: \"bad name!\" is not a DNS name or an IP address".to_string(),
        "upstreams.a.tls.verify:".to_string(),
        format!("upstreams.b.tls.ca_file: {empty:?} holds no certificate"),
    ] {
        assert!(stderr.contains(&want), "want {want:?} in:\n{stderr}");
    }
}
