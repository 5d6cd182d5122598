use crate::config;
use crate::gateway::Gateway;
use crate::metrics::Metrics;
use berth_plugins::Registry;
use std::sync::Arc;

fn gateway(extra: &str) -> Gateway {
    let yaml = format!(
        "upstreams:\n  app:\n{extra}    backends:\n      - {{ id: a, addr: 127.0.0.1:1 }}\n      - {{ id: b, addr: 127.0.0.1:2 }}\n"
    );
    let cfg = config::parse(&yaml, &Registry::builtin()).expect("valid test config");
    Gateway::new(cfg, Arc::new(Metrics::new()))
}

fn health(gw: &Gateway, id: &str) -> &'static str {
    gw.upstreams[0].view_of(id).expect("backend exists").health
}

#[test]
fn passive_marking_repeats_after_each_recovery() {
    let gw = gateway("    passive: { fall: 3, cooldown: 1s }\n");
    let up = &gw.upstreams[0];
    for round in 0..3u64 {
        let now = round * 10_000;
        let table = up.current.load_full();
        for _ in 0..2 {
            up.connect_failed(&table, 0, now);
        }
        assert_eq!(
            health(&gw, "a"),
            "up",
            "round {round}: 2 failures are not enough"
        );
        up.connect_failed(&table, 0, now);
        assert_eq!(
            health(&gw, "a"),
            "down",
            "round {round}: the 3rd failure marks it down"
        );
        assert!(!up.current.load().router.is_up(0));
        up.tick(now + 999);
        assert_eq!(
            health(&gw, "a"),
            "down",
            "round {round}: still cooling down"
        );
        up.tick(now + 1_000);
        assert_eq!(
            health(&gw, "a"),
            "up",
            "round {round}: tried again after the cooldown"
        );
    }
    assert_eq!(health(&gw, "b"), "up");
}

#[test]
fn a_successful_connect_ends_the_streak() {
    let gw = gateway("    passive: { fall: 2 }\n");
    let up = &gw.upstreams[0];
    let table = up.current.load_full();
    up.connect_failed(&table, 1, 0);
    up.connection_succeeded(&table, 1);
    up.connect_failed(&table, 1, 0);
    assert_eq!(health(&gw, "b"), "up");
    up.connect_failed(&table, 1, 0);
    assert_eq!(health(&gw, "b"), "down");
}

#[test]
fn drain_completes_when_no_session_is_left_or_at_the_deadline() {
    use super::AdminState;
    use berth_routing::SessionKey;
    let gw = gateway("");
    let up = &gw.upstreams[0];
    let table = up.current.load_full();
    let key = SessionKey::new(b"t", b"s1");
    table.router.pin(key, 0, 0);
    up.set_state(
        "a",
        AdminState::Draining {
            deadline: Some(5_000),
        },
    )
    .expect("a exists");
    up.tick(1_000);
    assert_eq!(up.view_of("a").map(|v| v.state), Some("draining"));
    up.tick(5_000);
    assert_eq!(up.view_of("a").map(|v| v.state), Some("drained"));
    assert!(
        !up.current.load().router.is_up(0),
        "a drained backend serves nothing"
    );
    up.set_state("b", AdminState::Draining { deadline: None })
        .expect("b exists");
    up.tick(6_000);
    assert_eq!(
        up.view_of("b").map(|v| v.state),
        Some("drained"),
        "b had no sessions"
    );
}
