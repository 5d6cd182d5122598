//! Issue #19, part 2: what an old process does with the connections it holds once it has
//! stopped accepting (`berth -u`, SIGQUIT: Pingora hands the listening sockets over, serves 5 s
//! more, then stops its accept loops). A connection it accepted whose request comes only now —
//! the first request of a client that connected ahead of it, or the next one on a keep-alive
//! connection — is answered (with `Connection: close`), not closed unanswered; a connection
//! that stays silent is closed at the end of the drain window (half the grace period).
use berth_tests::{config, Backend, Client, Gateway, Request};
use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

/// The old process's grace period here: its drain window is half of it, the time this test
/// has to send its requests once the old process stopped accepting.
const GRACE_SECONDS: u64 = 10;

#[test]
fn the_old_process_answers_requests_on_connections_it_accepted_before_it_stopped_accepting() {
    let backends = Backend::start_many(2);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let yaml = config::header_app(
        &specs,
        &[("server.grace_period_seconds", &GRACE_SECONDS.to_string())],
    );
    let mut gw = Gateway::start(&yaml);

    // Three connections to the first process (the only one accepting now): one that has not
    // sent its first request, one kept alive after a request, one that never sends anything.
    let mut first = Client::new(gw.addr);
    first.connect_now().expect("connect");
    let mut kept = Client::new(gw.addr);
    let r = kept.send(&Request::get("/before").header("X-Session-Id", "s-kept"));
    assert_eq!(r.status, 200, "{}", r.summary());
    assert_ne!(r.header("connection"), Some("close"), "{}", r.summary());
    let mut silent = TcpStream::connect(gw.addr).expect("connect");

    let mut old = gw.upgrade();
    // Logged by the cleanup Pingora calls once the accept loops have ended: the moment at
    // which Pingora on its own closes every connection still waiting for a request. (Waiting
    // for Pingora's "Shutting down <addr>" instead, the first request below fails without the
    // drain window — not always: the cleanup can come some time after that line.)
    berth_tests::wait_for(Duration::from_secs(30), Duration::from_millis(5), || {
        old.log().contains("no longer accepting").then_some(())
    })
    .unwrap_or_else(|| panic!("the old process never started draining:\n{}", old.log()));

    for (what, client, id) in [
        ("a first request", &mut first, "s-first"),
        (
            "the next request on a keep-alive connection",
            &mut kept,
            "s-kept",
        ),
    ] {
        let r = client
            .try_send(&Request::get("/after-stop").header("X-Session-Id", id))
            .unwrap_or_else(|e| panic!("{what}: {e}\n--- old log ---\n{}", old.log()));
        assert_eq!(r.status, 200, "{what}: {}", r.summary());
        assert_eq!(
            client.connections_opened(),
            1,
            "{what}: answered on the connection the old process accepted, not on a new one \
             (the old process closed it)\n--- old log ---\n{}",
            old.log()
        );
        assert_eq!(
            r.header("connection"),
            Some("close"),
            "{what}: the old process tells the client to move on: {}",
            r.summary()
        );
    }

    // The silent one is closed once the drain window is over, before the process exits.
    silent
        .set_read_timeout(Some(Duration::from_secs(4 * GRACE_SECONDS)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    let n = silent.read(&mut buf).expect("closed, not timed out");
    assert_eq!(n, 0, "closed without an answer (nothing was asked)");
    let log = old.log();
    assert!(log.contains("drain window over"), "{log}");
    let (status, _) = old.wait_exit(Duration::from_secs(6 * GRACE_SECONDS));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}
