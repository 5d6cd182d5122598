//! The hand-over between two gateways in one process, over a real Unix socket: snapshot
//! before serving, changes after it, the end of the stream when the old one exits.
use super::*;
use crate::config;
use crate::metrics::Metrics;
use crate::upstream::AdminState;
use berth_plugins::Registry;
use berth_routing::SessionKey;
use std::time::Duration;

fn gateway() -> Gateway {
    let yaml = "upstreams:\n  app:\n    affinity:\n      - { type: header, name: X-Session-Id }\n    backends:\n      - { id: a, addr: 127.0.0.1:1 }\n      - { id: b, addr: 127.0.0.1:2 }\n      - { id: c, addr: 127.0.0.1:3 }\n";
    let cfg = config::parse(yaml, &Registry::builtin()).expect("valid test config");
    Gateway::new(cfg, Arc::new(Metrics::new()))
}

fn key(i: u32) -> SessionKey {
    SessionKey::new(b"header:x-session-id", &i.to_be_bytes())
}

/// Where `key` is pinned in `gw`, by backend name.
fn home(gw: &Gateway, key: SessionKey) -> Option<String> {
    let up = &gw.upstreams[0];
    let pin = up.overlay.info(key)?;
    up.names.name(pin.backend).map(|n| n.to_string())
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

struct Sock(PathBuf);

impl Drop for Sock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn temp_sock(name: &str) -> Sock {
    Sock(std::env::temp_dir().join(format!("berth-{name}-{}.state", std::process::id())))
}

#[test]
fn snapshot_then_changes_then_bye() {
    let sock = temp_sock("handover");
    let old = Arc::new(gateway());
    let table = old.upstreams[0].current.load_full();
    let now = old.clock.now();
    for i in 0..1_000 {
        table.router.select(key(i), now).expect("placed");
    }
    // A pin the ring would not choose: only the hand-over can tell the new process.
    let b = table.router.index_of("b").expect("b");
    let ring_says = table
        .router
        .select(key(5_000), now)
        .expect("placed")
        .backend;
    let odd = (ring_says + 1) % 3;
    table.router.pin(key(5_000), odd, now);
    old.upstreams[0]
        .set_state("c", AdminState::Draining { deadline: None })
        .expect("c");

    let exit = Arc::new(Exit::default());
    let listener = bind(&sock.0).expect("bind");
    {
        let (gw, exit) = (old.clone(), exit.clone());
        std::thread::spawn(move || stream::accept_loop(listener, gw, exit));
    }

    let mut new = gateway();
    let pred = inherit(&sock.0, &mut new)
        .expect("not refused")
        .expect("handed over");
    assert!(
        new.clock.now() >= now,
        "the new clock continues the old one"
    );
    let new = Arc::new(new);
    for i in (0..1_000).chain([5_000]) {
        assert_eq!(home(&new, key(i)), home(&old, key(i)), "session {i}");
    }
    assert_eq!(
        new.upstreams[0].view_of("c").map(|v| v.state),
        Some("draining")
    );

    // A second successor is refused while the first is followed.
    let refused = Predecessor::connect(&sock.0).err().expect("refused");
    assert!(
        refused.to_string().contains("already taking over"),
        "{refused}"
    );

    let follower = {
        let new = new.clone();
        std::thread::spawn(move || pred.follow(&new))
    };
    // Changes after the snapshot: new pins, a re-pin, a removal, a drain.
    let now = old.clock.now();
    for i in 1_000..1_100 {
        table.router.select(key(i), now).expect("placed");
    }
    table.router.pin(key(7), b, now);
    old.upstreams[0].overlay.remove(key(8));
    old.upstreams[0]
        .set_state("a", AdminState::Drained)
        .expect("a");
    wait_until("the changes arrived", || {
        (1_000..1_100).all(|i| home(&new, key(i)).is_some())
            && home(&new, key(7)).as_deref() == Some("b")
            && home(&new, key(8)).is_none()
            && new.upstreams[0].view_of("a").map(|v| v.state) == Some("drained")
    });
    for i in 1_000..1_100 {
        assert_eq!(home(&new, key(i)), home(&old, key(i)), "session {i}");
    }

    // A session id the new process learned, which the old one (not knowing it) places by its
    // ring elsewhere: the ring pick does not override the learned pin.
    // (a is drained and c draining: the old process can only place it on b.)
    let learned = key(6_000);
    let new_table = new.upstreams[0].current.load_full();
    let c = new_table.router.index_of("c").expect("c");
    new_table.router.pin(learned, c, new.clock.now());
    let placed = table
        .router
        .select(learned, old.clock.now())
        .expect("placed");
    assert_eq!(placed.backend, b);
    table.router.pin(key(6_001), b, old.clock.now()); // a marker sent after it
    wait_until("the marker arrived", || home(&new, key(6_001)).is_some());
    assert_eq!(
        home(&new, learned).as_deref(),
        Some("c"),
        "the ring pick was not applied"
    );

    // The old process exits: its last change still arrives, then the follower stops.
    table.router.pin(key(9), b, old.clock.now());
    assert!(exit.finish(Duration::from_secs(5)), "BYE sent");
    follower.join().expect("the follower ends after BYE");
    assert_eq!(home(&new, key(9)).as_deref(), Some("b"));
    let received = new
        .metrics
        .upgrade_received
        .with_label_values(&["app"])
        .get();
    assert!(received >= 1_101, "{received}");
}

#[test]
fn without_a_running_berth_the_new_process_starts_from_its_configuration() {
    let sock = temp_sock("nobody");
    let mut new = gateway();
    assert!(inherit(&sock.0, &mut new).expect("not refused").is_none());
    assert!(new.upstreams[0].overlay.is_empty());
}

#[test]
fn a_non_socket_at_the_state_path_is_left_alone() {
    let sock = temp_sock("file");
    std::fs::write(&sock.0, b"not a socket").expect("write");
    let err = bind(&sock.0).expect_err("refused");
    assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
    assert_eq!(
        std::fs::read(&sock.0).expect("still there"),
        b"not a socket"
    );
}
