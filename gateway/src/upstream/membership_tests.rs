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

#[test]
fn a_removed_backend_leaves_metrics() {
    let metrics = Arc::new(Metrics::new());
    let yaml = "upstreams:\n  app:\n    backends:\n      - { id: a, addr: 127.0.0.1:1 }\n      - { id: b, addr: 127.0.0.1:2 }\n      - { id: c, addr: 127.0.0.1:3 }\n";
    let cfg = config::parse(yaml, &Registry::builtin()).expect("valid test config");
    let gw = Gateway::new(cfg, metrics.clone());
    let up = &gw.upstreams[0];
    let touch = |id: &str| {
        let set = up.current.load();
        let b = &set.backends[set.router.index_of(id).expect("in the table")];
        b.metrics.request(berth_routing::Reason::New, Some(200));
        b.metrics.connected(true);
        b.metrics.failovers.inc();
        up.metrics
            .health_check_failed("app", id, crate::metrics::CheckFailure::Timeout);
        up.metrics.health_transition("app", id, false);
    };
    let series = |id: &str| {
        let text = String::from_utf8(metrics.render()).expect("UTF-8");
        let label = format!("backend=\"{id}\"");
        text.lines().filter(|l| l.contains(&label)).count()
    };
    for id in ["a", "b", "c"] {
        touch(id);
    }
    let before = series("a");
    assert!(before >= 6, "{before} series of a");
    assert_eq!(series("b"), before);

    // Through the admin API.
    up.remove_backend("b").expect("removable");
    assert_eq!(series("b"), 0, "b removed: its series are gone");
    assert_eq!(series("a"), before, "a untouched");
    // Through a reload that drops c from the file.
    up.reload_backends(&cfg_backends("a"));
    assert_eq!(series("c"), 0, "c removed by reload");
    assert_eq!(series("a"), before);
    // Added again: series start anew.
    up.add_backend(crate::config::BackendConf {
        id: "b".into(),
        addr: "127.0.0.1:2".parse().unwrap(),
        weight: 1,
        max_sessions: None,
        drain: false,
        max_connections: None,
    })
    .expect("added");
    assert!(
        series("b") > 0,
        "b exported again (backend_up, requests at 0)"
    );
}

fn cfg_backends(ids: &str) -> Vec<crate::config::BackendConf> {
    let list: String = ids
        .split(',')
        .enumerate()
        .map(|(i, id)| format!("      - {{ id: {id}, addr: 127.0.0.1:{} }}\n", i + 1))
        .collect();
    let yaml = format!("upstreams:\n  app:\n    backends:\n{list}");
    let cfg = config::parse(&yaml, &Registry::builtin()).expect("valid test config");
    cfg.upstreams[0].backends.clone()
}
