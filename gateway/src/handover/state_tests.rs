use super::*;
use crate::config::{self, BackendConf};
use crate::metrics::Metrics;
use berth_plugins::Registry;
use std::sync::Arc;

fn gateway(backends: &[(&str, u16)]) -> Gateway {
    let list: Vec<String> = backends
        .iter()
        .map(|(id, port)| format!("      - {{ id: {id}, addr: 127.0.0.1:{port} }}\n"))
        .collect();
    let yaml = format!(
        "upstreams:\n  app:\n    affinity:\n      - {{ type: header, name: X-Session-Id }}\n    backends:\n{}",
        list.concat()
    );
    let cfg = config::parse(&yaml, &Registry::builtin()).expect("valid test config");
    Gateway::new(cfg, Arc::new(Metrics::new()))
}

fn conf(id: &str, port: u16) -> BackendConf {
    BackendConf {
        id: id.into(),
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        weight: 1,
        max_sessions: None,
        max_connections: None,
        drain: false,
    }
}

fn states(gw: &Gateway) -> Vec<(String, &'static str, &'static str)> {
    gw.upstreams[0]
        .views()
        .into_iter()
        .map(|v| (v.id, v.state, v.health))
        .collect()
}

fn key(i: u32) -> SessionKey {
    SessionKey::new(b"header:x-session-id", &i.to_be_bytes())
}

/// Pins of `gw` as frames, like the snapshot sends them.
fn pin_frames(gw: &Gateway, now: Millis) -> Vec<Pins> {
    let up = &gw.upstreams[0];
    let mut records = Vec::new();
    up.overlay.export(now, &mut records);
    let mut packer = Packer::new(up);
    let mut out = Vec::new();
    let mut emit = |f: wire::Frame| match f {
        wire::Frame::Pins(p) => out.push(p),
        other => panic!("unexpected {other:?}"),
    };
    for r in &records {
        packer.pin(r, &mut emit);
    }
    packer.finish(&mut emit);
    out
}

#[test]
fn membership_is_merged_like_a_reload_over_the_old_live_list() {
    // Old: file [a, b, x]; through the API: c added, x removed, b draining (5 s left), a down.
    let old = gateway(&[("a", 1), ("b", 2), ("x", 9)]);
    let up = &old.upstreams[0];
    up.add_backend(conf("c", 3)).expect("added");
    up.remove_backend("x").expect("removed");
    up.set_state(
        "b",
        AdminState::Draining {
            deadline: Some(15_000),
        },
    )
    .expect("b exists");
    up.members_mut().list[0].health = HealthState::down();
    let table = up.current.load();
    let on_b = table.router.index_of("b").expect("b");
    for i in 0..5 {
        table.router.pin(key(i), on_b, 10_000);
    }
    assert_eq!(up.migrate("b", Some(3), Some(10), 10_000), Ok(3));
    let sent = members_of(up, 10_000);

    // New file: [a, b, x, d] — d is new in the file, x is unchanged in the file.
    let new = gateway(&[("a", 1), ("b", 2), ("x", 9), ("d", 4)]);
    let mut applier = Applier::default();
    applier.members(&new, sent, true, 1_000);
    assert_eq!(
        states(&new),
        [
            ("a".into(), "active", "down"),
            ("b".into(), "draining", "up"),
            ("c".into(), "active", "up"),
            ("d".into(), "active", "up"),
        ],
        "x stays removed (the file did not change it), d comes from the new file"
    );
    let b = new.upstreams[0].view_of("b").expect("b");
    assert_eq!(
        b.drain_deadline_ms,
        Some(6_000),
        "5 s left on the new clock"
    );
    let table = new.upstreams[0].current.load();
    let idx = |n: &str| table.router.index_of(n).expect("in the table");
    assert!(!table.router.is_up(idx("a")));
    assert!(table.router.is_draining(idx("b")) && !table.router.takes_new(idx("b")));
    assert!(table.router.takes_new(idx("c")) && table.router.takes_new(idx("d")));
    assert_eq!(applier.tally.upstreams, 1);
    let m = new.upstreams[0].members_mut();
    let g = &m.migrations[..];
    assert_eq!(g.len(), 1, "the migration in progress goes on");
    assert_eq!((g[0].remaining, g[0].rate), (3, 10));
    assert_eq!(
        new.upstreams[0].names.name(g[0].backend).as_deref(),
        Some("b")
    );
}

#[test]
fn pins_on_backends_the_new_process_lacks_are_dropped_and_counted() {
    let old = gateway(&[("a", 1), ("b", 2), ("c", 3)]);
    let table = old.upstreams[0].current.load();
    for i in 0..300 {
        table.router.select(key(i), 5_000).expect("placed");
    }
    let on_c = old.upstreams[0].overlay.count(table.router.id(2));
    assert!(on_c > 0);

    let new = gateway(&[("a", 1), ("b", 2)]); // c is gone from the file
    let mut applier = Applier::default();
    applier.members(&new, members_of(&old.upstreams[0], 5_000), true, 0);
    for p in pin_frames(&old, 5_000) {
        applier.pins(&new, &p, 0);
    }
    assert_eq!(applier.tally.sessions, 300 - on_c);
    assert_eq!(applier.tally.dropped, vec![("backend_gone", on_c)]);
    let new_table = new.upstreams[0].current.load();
    for i in 0..300 {
        let was = old.upstreams[0]
            .overlay
            .info(key(i))
            .expect("pinned")
            .backend;
        let name = old.upstreams[0].names.name(was).expect("named");
        match new.upstreams[0].overlay.info(key(i)) {
            Some(p) => assert_eq!(
                new_table
                    .router
                    .name(new_table.router.index_of_id(p.backend).unwrap()),
                &*name
            ),
            None => assert_eq!(&*name, "c"),
        }
    }
    let metrics = String::from_utf8(new.metrics.render()).expect("utf-8");
    assert!(metrics.contains(&format!(
        "berth_upgrade_sessions_dropped_total{{upstream=\"app\",why=\"backend_gone\"}} {on_c}"
    )));
    assert!(metrics.contains(&format!(
        "berth_upgrade_sessions_received_total{{upstream=\"app\"}} {}",
        300 - on_c
    )));
    // An upstream the new configuration lacks: everything dropped, counted.
    let mut p = pin_frames(&old, 5_000).remove(0);
    p.upstream = "gone".into();
    applier.pins(&new, &p, 0);
    assert!(applier
        .tally
        .dropped
        .contains(&("upstream_gone", p.records.len() as u64)));
}

#[test]
fn after_the_snapshot_membership_changes_follow_as_differences() {
    let old = gateway(&[("a", 1), ("b", 2)]);
    let new = gateway(&[("a", 1), ("b", 2)]);
    let mut applier = Applier::default();
    applier.members(&new, members_of(&old.upstreams[0], 0), true, 0);
    // The new process drains a on its own; the old one drains b and adds c meanwhile.
    new.upstreams[0]
        .set_state("a", AdminState::Draining { deadline: None })
        .expect("a");
    let up = &old.upstreams[0];
    up.set_state("b", AdminState::Drained).expect("b");
    up.add_backend(conf("c", 3)).expect("c");
    applier.members(&new, members_of(up, 0), false, 0);
    assert_eq!(
        states(&new),
        [
            ("a".into(), "draining", "up"),
            ("b".into(), "drained", "up"),
            ("c".into(), "active", "up"),
        ],
        "a keeps the new process's own change"
    );
    up.remove_backend("c").expect("c");
    up.set_state("b", AdminState::Active).expect("b");
    applier.members(&new, members_of(up, 0), false, 0);
    assert_eq!(
        states(&new),
        [("a".into(), "draining", "up"), ("b".into(), "active", "up")]
    );
}

#[test]
fn the_signature_ignores_health_and_the_passing_of_time() {
    let gw = gateway(&[("a", 1)]);
    let up = &gw.upstreams[0];
    up.set_state(
        "a",
        AdminState::Draining {
            deadline: Some(9_000),
        },
    )
    .expect("a");
    let before = members_signature(up);
    up.members_mut().list[0].health = HealthState::down();
    assert_eq!(members_signature(up), before);
    up.set_state("a", AdminState::Drained).expect("a");
    assert_ne!(members_signature(up), before);
}
