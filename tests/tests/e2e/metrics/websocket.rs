//! `/metrics` for WebSockets: sockets open and opened per backend, sockets ended by why, upgrade
//! requests that did not become a socket. Part of `metrics.rs` (its coverage test reads this
//! file too).
use super::{expect, scrape, Want};
use berth_tests::h2::runtime;
use berth_tests::websocket::{self as ws, Read2};
use berth_tests::{config, sessions, Backend, Gateway};
use std::time::Duration;

/// Two sockets of one session on one backend and one socket on the other: open 2/1, then one
/// closed by its client, one cut by the backend's removal; a refused upgrade and a 101 nobody
/// asked for.
#[test]
fn websocket_families() {
    let backends = Backend::start_many(2);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let gw = Gateway::start_with_admin(&config::header_app(&specs, &[]));
    let rt = runtime();
    let up = ("upstream", "app");
    let zero_closes: Vec<_> = [
        "closed",
        "idle_timeout",
        "send_timeout",
        "drain_deadline",
        "backend_removed",
        "error",
    ]
    .map(|why| [up, ("why", why)])
    .to_vec();
    let text = scrape(&gw);
    let upstream = [up];
    let mut want: Vec<Want<'_>> = vec![
        ("berth_websockets_open", &upstream, 0.0),
        ("berth_websockets_total", &upstream, 0.0),
        ("berth_websocket_upgrades_failed_total", &upstream, 0.0),
    ];
    for labels in &zero_closes {
        want.push(("berth_websockets_closed_total", labels, 0.0));
    }
    expect(&text, &want);

    rt.block_on(async {
        // Sessions until two backends are used: a, a2 on one backend, b on the other.
        let a = ws::connect(gw.addr, "/ws", &[(sessions::HEADER, "s-a")])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let a2 = ws::connect(gw.addr, "/ws", &[(sessions::HEADER, "s-a")])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut b = None;
        let mut closed_before = 0.0;
        for id in sessions::ids(0, 64) {
            let s = ws::connect(gw.addr, "/ws", &[(sessions::HEADER, &id)])
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            if s.backend != a.backend {
                b = Some(s);
                break;
            }
            s.close().await;
            closed_before += 1.0;
        }
        let mut b = b.expect("a session on the other backend");
        let closed = [up, ("why", "closed")];
        gw.wait_metric("berth_websockets_closed_total", &closed, |v| {
            v == closed_before
        });
        gw.wait_metric("berth_websockets_open", &[up], |v| v == 3.0);
        let (ba, bb) = (a.backend.clone(), b.backend.clone());
        expect(
            &scrape(&gw),
            &[
                ("berth_websockets_open", &[up, ("backend", &ba)], 2.0),
                ("berth_websockets_open", &[up, ("backend", &bb)], 1.0),
                ("berth_websockets_total", &[up], 3.0 + closed_before),
                (
                    "berth_websockets_closed_total",
                    &[up, ("why", "closed")],
                    closed_before,
                ),
            ],
        );
        // One closed by its client; the other backend removed: its socket is cut.
        a2.close().await;
        let r = gw.admin("DELETE", &format!("/admin/backends/{bb}"), None);
        assert_eq!(r.status, 200, "{}", r.summary());
        assert!(matches!(
            b.read(Duration::from_secs(30)).await,
            Read2::Closed(_)
        ));
        gw.wait_metric("berth_websockets_open", &[up], |v| v == 1.0);
        let text = scrape(&gw);
        // The removed backend's series are gone (not left at 0).
        for name in ["berth_websockets_open", "berth_websockets_total"] {
            let v = berth_tests::metrics::value(&text, name, &[up, ("backend", &bb)]);
            assert_eq!(v, None, "{name} of removed {bb}");
        }
        expect(
            &text,
            &[
                ("berth_websockets_open", &[up, ("backend", &ba)], 1.0),
                (
                    "berth_websockets_closed_total",
                    &[up, ("why", "closed")],
                    closed_before + 1.0,
                ),
                (
                    "berth_websockets_closed_total",
                    &[up, ("why", "backend_removed")],
                    1.0,
                ),
            ],
        );
        a.close().await;
    });
    // A refused upgrade (a plain answer) and a 101 nobody asked for (502).
    let mut c = gw.client();
    let r = c.send(
        &sessions::request("s-a", "/plain")
            .header("Upgrade", "websocket")
            .header("Connection", "Upgrade"),
    );
    assert_eq!(r.status, 200, "{}", r.summary());
    let r = gw.client().send(&sessions::request("s-a", "/__unasked101"));
    assert_eq!(r.status, 502, "{}", r.summary());
    gw.wait_metric("berth_websockets_open", &[up], |v| v == 0.0);
    expect(
        &scrape(&gw),
        &[
            ("berth_websockets_open", &[up], 0.0),
            (
                "berth_websocket_upgrades_failed_total",
                &[up, ("why", "refused")],
                1.0,
            ),
            (
                "berth_websocket_upgrades_failed_total",
                &[up, ("why", "unasked_101")],
                1.0,
            ),
            (
                "berth_websockets_closed_total",
                &[up, ("why", "error")],
                0.0,
            ),
        ],
    );
}
