//! The plugin SDK end to end: a binary of its own built with `berth::Berth::builder()`
//! (`berth-test-plugins`) serves a config that uses its plugin, and a plugin that panics on a
//! request costs that request nothing but the plugin's key: it is served by the next plugin
//! of the chain, the panic is counted, and the next 1,000 requests are served normally.
use berth_tests::config::{self, UPSTREAM};
use berth_tests::{Backend, Gateway, Request};

const PANICS: &str = "berth_plugin_panics_total";

#[test]
fn a_panicking_plugin_is_caught_counted_and_the_next_requests_are_served() {
    let backends = Backend::start_many(3);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let plugins = [
        "type: panic_on\nheader: X-Panic\n".to_string(),
        config::header_plugin("X-Session-Id"),
    ];
    let bin = berth_tests::test_plugins_bin();
    let gw = Gateway::start_binary(&bin, &config::app_config(&plugins, &specs), &[]);
    let labels = [("upstream", UPSTREAM), ("plugin", "panic_on")];
    assert_eq!(gw.metric(PANICS, &labels), 0.0);

    // The session's home, then a request of it that makes the first plugin panic: the header
    // plugin (the fallback) still routes it home.
    let mut c = gw.client();
    let home = c.send(&Request::get("/").header("X-Session-Id", "s1"));
    assert_eq!(home.status, 200, "{}", home.summary());
    let req = Request::get("/boom")
        .header("X-Session-Id", "s1")
        .header("X-Panic", "1");
    let r = c.send(&req);
    assert_eq!(
        (r.status, r.backend(), r.affinity()),
        (200, home.backend(), "sticky"),
        "{}",
        r.summary()
    );
    assert_eq!(gw.wait_metric(PANICS, &labels, |v| v == 1.0), 1.0);
    // Without a key from another plugin: served by the ring.
    let r = gw
        .client()
        .send(&Request::get("/boom").header("X-Panic", "1"));
    assert_eq!((r.status, r.affinity()), (200, "ring"), "{}", r.summary());
    assert_eq!(gw.wait_metric(PANICS, &labels, |v| v == 2.0), 2.0);

    // The worker is alive and the plugin keeps being asked: 1,000 requests on one connection.
    for i in 0..1000 {
        let r = c.send(&Request::get(&format!("/n/{i}")).header("X-Session-Id", "s1"));
        assert_eq!(
            (r.status, r.backend()),
            (200, home.backend()),
            "request {i}: {}",
            r.summary()
        );
    }
    assert_eq!(c.connections_opened(), 1, "the connection survived");
    assert_eq!(gw.metric(PANICS, &labels), 2.0);
    let log = gw.log();
    assert!(
        log.contains("panic_on: the request carries x-panic"),
        "the panic is logged:\n{log}"
    );
}

#[test]
fn a_custom_binary_checks_its_plugins_settings_like_the_rest() {
    let backends = Backend::start_many(1);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let plugins = ["type: panic_on\n".to_string()];
    let dir = tempfile::tempdir().expect("temp dir");
    let addr = berth_tests::free_addr();
    let yaml = config::complete(
        &config::app_config(&plugins, &specs),
        addr,
        berth_tests::free_addr(),
        dir.path(),
    );
    let path = dir.path().join("berth.yaml");
    std::fs::write(&path, yaml).expect("write config");
    let out = std::process::Command::new(berth_tests::test_plugins_bin())
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("run berth-test-plugins -t");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("upstreams.app.affinity[0].header: is required"),
        "{stderr}"
    );
}
