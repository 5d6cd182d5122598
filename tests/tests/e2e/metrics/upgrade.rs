//! `/metrics` across an upgrade: the sessions handed over and those dropped with a backend the
//! new file no longer has. Part of `metrics.rs` (its coverage test reads this file too).
use super::{expect, scrape};
use berth_tests::config::{self, UPSTREAM};
use berth_tests::metrics::{promtool_check, zero_or_unborn, BORN_ON_FIRST_USE};
use berth_tests::{sessions, Backend, Gateway};

/// An upgrade hands the sessions of the backends the new file keeps over, and counts those of
/// the backend it dropped.
#[test]
fn upgrade_sessions_received_and_dropped() {
    let backends = Backend::start_many(3);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let mut gw = Gateway::start_with_admin(&config::header_app(&specs, &[]));
    let placed = sessions::open(&gw, &sessions::ids(0, 60), 4);
    let on_b3 = placed.iter().filter(|p| p.home == "b3").count();
    assert!(on_b3 > 0, "no session on b3");
    let fresh = scrape(&gw);
    for (name, _) in BORN_ON_FIRST_USE
        .iter()
        .filter(|(n, _)| n.contains("upgrade"))
    {
        zero_or_unborn(&fresh, name, &[]).unwrap_or_else(|e| panic!("{e}"));
    }
    gw.rewrite_config(&config::header_app(&specs[..2], &[]));
    let _old = gw.upgrade();
    // Until the old process exits both answer on the admin listener: ask the new one.
    let new = gw.pid().expect("the new process runs");
    let text = gw.admin_on(new, "GET", "/metrics", None).text();
    promtool_check(&text).unwrap_or_else(|e| panic!("{e}\n--- scrape ---\n{text}"));
    let app = ("upstream", UPSTREAM);
    expect(
        &text,
        &[
            (
                "berth_upgrade_sessions_received_total",
                &[app],
                (placed.len() - on_b3) as f64,
            ),
            (
                "berth_upgrade_sessions_dropped_total",
                &[app, ("why", "backend_gone")],
                on_b3 as f64,
            ),
            ("berth_upgrade_sessions_dropped_total", &[app], on_b3 as f64),
            ("berth_sessions", &[app], (placed.len() - on_b3) as f64),
        ],
    );
}
