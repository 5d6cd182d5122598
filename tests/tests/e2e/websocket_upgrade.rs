//! Issue 15: WebSockets across `berth -u` + SIGQUIT. The old process hands its listening
//! sockets over and keeps the sockets it holds: they stay open (and keep echoing) through
//! Pingora's 5 s of accepting and the whole grace period, and are closed only when the old
//! process shuts its runtimes down after the grace period ends (README, "WebSockets"). Sockets
//! opened once the old process stopped accepting go to the new process, which counts them and
//! keeps them when the old one exits.
use berth_tests::h2::runtime;
use berth_tests::upgrade::Retired;
use berth_tests::websocket::{self as ws, Read2, Ws};
use berth_tests::{config, sessions, Backend, Gateway};
use std::time::Duration;
use tokio::net::TcpStream;

const OLD_SOCKETS: usize = 50;
const NEW_SOCKETS: usize = 10;
/// The grace period of the old process: its sockets are echoed on during it.
const GRACE_SECONDS: u64 = 6;

/// Echo once on every socket; the ones that fail, with why.
async fn echo_every(sockets: &mut [(String, Ws<TcpStream>)], text: &str) -> Vec<String> {
    let mut failed = Vec::new();
    for (id, s) in sockets.iter_mut() {
        if let Err(e) = s.echo(text).await {
            failed.push(format!("{id}: {e}"));
        }
    }
    failed
}

fn has(old: &Retired, line: &str) -> bool {
    old.log().contains(line)
}

#[test]
fn sockets_stay_on_the_old_process_until_it_exits_and_new_ones_go_to_the_new_process() {
    let backends = Backend::start_many(3);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let yaml = config::header_app(
        &specs,
        &[("server.grace_period_seconds", &GRACE_SECONDS.to_string())],
    );
    let mut gw = Gateway::start_with_admin(&yaml);
    let rt = runtime();
    let addr = gw.addr;
    let mut old_sockets = rt.block_on(async {
        let mut all = Vec::new();
        for id in sessions::ids(0, OLD_SOCKETS) {
            let s = ws::connect(addr, "/ws", &[(sessions::HEADER, &id)])
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            all.push((id, s));
        }
        all
    });
    gw.wait_metric("berth_websockets_open", &[("upstream", "app")], |v| {
        v == OLD_SOCKETS as f64
    });

    let mut old = gw.upgrade();
    // Handed over: the old process still holds every socket.
    let failed = rt.block_on(echo_every(&mut old_sockets, "after the hand-over"));
    assert!(failed.is_empty(), "cut at the hand-over: {failed:?}");

    // Once the old process stopped accepting (the grace period began), its sockets still work.
    let began = berth_tests::wait_for(Duration::from_secs(60), Duration::from_millis(50), || {
        has(&old, "grace period").then_some(())
    });
    assert!(
        began.is_some(),
        "no grace period in the old log:\n{}",
        old.log()
    );
    let failed = rt.block_on(echo_every(&mut old_sockets, "in the grace period"));
    assert!(failed.is_empty(), "cut during the grace period: {failed:?}");

    // Sockets opened from now on go to the new process (its metrics count them; the old one's are not
    // reachable any more: the admin listener was handed over too).
    let mut new_sockets = rt.block_on(async {
        let mut all = Vec::new();
        for id in sessions::ids(1000, NEW_SOCKETS) {
            let s = ws::connect(addr, "/ws", &[(sessions::HEADER, &id)])
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            all.push((id, s));
        }
        all
    });
    assert_eq!(
        gw.wait_metric("berth_websockets_open", &[("upstream", "app")], |v| {
            v == NEW_SOCKETS as f64
        }),
        NEW_SOCKETS as f64,
        "the new process holds exactly the sockets opened after the hand-over"
    );

    // Then each one ends — never before the grace period ended.
    rt.block_on(async {
        for (id, s) in old_sockets.iter_mut() {
            let end = s.read(Duration::from_secs(120)).await;
            assert!(matches!(end, Read2::Closed(_)), "{id}: {end:?}");
            assert!(
                has(&old, "grace period ends"),
                "{id} was closed before the old process's grace period ended:\n{}",
                old.log()
            );
        }
    });
    old.wait_exit(Duration::from_secs(60));

    // The new process's sockets outlive the old process.
    let failed = rt.block_on(echo_every(&mut new_sockets, "after the old process exited"));
    assert!(failed.is_empty(), "{failed:?}");
    rt.block_on(async {
        for (_, s) in new_sockets {
            s.close().await;
        }
    });
    gw.wait_metric("berth_websockets_open", &[("upstream", "app")], |v| {
        v == 0.0
    });
}
