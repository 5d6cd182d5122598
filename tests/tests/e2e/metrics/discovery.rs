//! `/metrics` of an upstream with DNS discovery: resolutions by result, the addresses in use
//! and the membership changes discovery made. Part of `metrics.rs` (its coverage test reads
//! this file too).
use super::{expect, scrape};
use berth_tests::dns::DnsServer;
use berth_tests::{config, Backend, Gateway};
use std::net::SocketAddr;

/// Two records, then one (it drains for 1 s and is removed), then none (empty: kept), then
/// the DNS server stops (error: kept). Resolution counts grow with time, so only they are
/// read as "at least"; every other value is exact.
#[test]
fn discovery_resolutions_addresses_and_changes() {
    let b1 = Backend::start_on("b1", SocketAddr::from(([127, 0, 0, 2], 0)));
    let b2 = Backend::start_on("b2", SocketAddr::from(([127, 0, 0, 3], b1.addr.port())));
    let mut dns = DnsServer::start("m.berth.test.", &[b1.addr.ip(), b2.addr.ip()]);
    let discovery = format!(
        "{{dns: m.berth.test., port: {}, interval: 200ms, resolver: \"{}\", drain_deadline: 1s}}",
        b1.addr.port(),
        dns.addr
    );
    let gw = Gateway::start(&config::header_app(
        &[],
        &[("upstreams.app.discovery", &discovery)],
    ));
    let app = ("upstream", config::UPSTREAM);
    let change = |c| [app, ("change", c)];
    let result = |r| [app, ("result", r)];
    gw.wait_metric("berth_discovery_changes_total", &change("added"), |v| {
        v == 2.0
    });
    let text = scrape(&gw);
    expect(
        &text,
        &[
            ("berth_discovery_addresses", &[app], 2.0),
            ("berth_discovery_changes_total", &change("added"), 2.0),
            ("berth_discovery_changes_total", &change("draining"), 0.0),
            ("berth_discovery_changes_total", &change("restored"), 0.0),
            ("berth_discovery_changes_total", &change("removed"), 0.0),
            ("berth_discovery_resolutions_total", &result("empty"), 0.0),
            ("berth_discovery_resolutions_total", &result("error"), 0.0),
        ],
    );
    let ok = berth_tests::metrics::sum(&text, "berth_discovery_resolutions_total", &result("ok"));
    assert!(ok >= 1.0, "ok resolutions: {ok}");
    assert_eq!(backends_in(&text).len(), 2, "{:?}", backends_in(&text));

    dns.set(&[b1.addr.ip()]);
    gw.wait_metric("berth_discovery_changes_total", &change("removed"), |v| {
        v == 1.0
    });
    expect(
        &scrape(&gw),
        &[
            ("berth_discovery_addresses", &[app], 1.0),
            ("berth_discovery_changes_total", &change("added"), 2.0),
            ("berth_discovery_changes_total", &change("draining"), 1.0),
            ("berth_discovery_changes_total", &change("removed"), 1.0),
            ("berth_discovery_resolutions_total", &result("error"), 0.0),
        ],
    );
    // The removed backend's per-backend series are gone from /metrics.
    let left = backends_in(&scrape(&gw));
    assert_eq!(
        left.len(),
        1,
        "series of a removed backend remain: {left:?}"
    );

    dns.set(&[]);
    gw.wait_metric("berth_discovery_resolutions_total", &result("empty"), |v| {
        v >= 1.0
    });
    expect(&scrape(&gw), &[("berth_discovery_addresses", &[app], 1.0)]);
    dns.stop();
    gw.wait_metric("berth_discovery_resolutions_total", &result("error"), |v| {
        v >= 1.0
    });
    expect(
        &scrape(&gw),
        &[
            ("berth_discovery_addresses", &[app], 1.0),
            ("berth_discovery_changes_total", &[app], 4.0),
        ],
    );
}

/// The distinct `backend` label values in a scrape.
fn backends_in(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split("backend=\"").nth(1)?.split('"').next())
        .map(str::to_string)
        .collect()
}
