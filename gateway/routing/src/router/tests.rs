use super::*;
use crate::OverlayConfig;

fn key(i: u64) -> SessionKey {
    SessionKey::new(b"t", &i.to_le_bytes())
}

fn specs(weights: &[u32]) -> Vec<BackendSpec> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| BackendSpec::new(&format!("10.0.0.{i}:80"), w))
        .collect()
}

fn router(weights: &[u32]) -> Router {
    let overlay = Arc::new(Overlay::new(OverlayConfig::default()));
    Router::new(
        RouterConfig::default(),
        &specs(weights),
        overlay,
        &Interner::default(),
    )
}

fn next_table(prev: &Router, names: &Interner, backends: &[BackendSpec]) -> Router {
    Router::new(
        RouterConfig::default(),
        backends,
        prev.overlay().clone(),
        names,
    )
}

#[test]
fn new_then_sticky_with_stored_backup() {
    let r = router(&[1, 1, 1]);
    let d = r.select(key(1), 0).expect("eligible");
    assert_eq!(d.reason, Reason::New);
    assert!(d.backup.is_some() && d.backup != Some(d.backend));
    let pin = r.overlay().get(key(1), 0).expect("pinned");
    assert_eq!(pin.backend, r.id(d.backend));
    assert_eq!(pin.backup, d.backup.map(|b| r.id(b)));
    let again = r.select(key(1), 1000).expect("eligible");
    assert_eq!((again.backend, again.backup), (d.backend, d.backup));
    assert_eq!((again.reason, again.previous), (Reason::Sticky, None));
}

#[test]
fn lookups_by_name_and_id() {
    let names = Interner::default();
    names.intern("unrelated");
    let overlay = Arc::new(Overlay::new(OverlayConfig::default()));
    let r = Router::new(RouterConfig::default(), &specs(&[1, 2]), overlay, &names);
    assert_eq!(r.len(), 2);
    assert_eq!(r.name(1), "10.0.0.1:80");
    assert_eq!(r.index_of("10.0.0.1:80"), Some(1));
    assert_eq!(r.index_of_id(r.id(1)), Some(1));
    assert_eq!(
        r.index_of_id(BackendId(0)),
        None,
        "interned but not in this table"
    );
    assert_eq!(r.index_of_id(BackendId(999)), None);
    assert_eq!(r.weight(1), 2);
}

#[test]
fn weight_zero_never_placed_but_served_when_pinned() {
    let r = router(&[0, 1]);
    for i in 0..500 {
        let d = r.select(key(i), 0).expect("one eligible");
        assert_eq!(d.backend, 1);
        assert_eq!(d.backup, None, "the weight-0 backend is no backup");
    }
    r.overlay().pin(key(9999), r.id(0), None, 0);
    let d = r.select(key(9999), 0).expect("pinned");
    assert_eq!((d.backend, d.reason), (0, Reason::Sticky));
    assert_eq!(d.backup, Some(1));
}

#[test]
fn empty_table_and_all_down_give_none_and_pin_nothing() {
    let empty = router(&[]);
    assert!(empty.is_empty());
    assert_eq!(empty.select(key(1), 0), Err(Refusal::NoBackend));
    assert_eq!(empty.select_unpinned(5, false), Err(Refusal::NoBackend));
    let r = router(&[1, 1]);
    let d = r.select(key(1), 0).expect("up");
    r.set_up(0, false);
    r.set_up(1, false);
    assert_eq!(r.select(key(1), 0), Err(Refusal::NoBackend));
    assert_eq!(r.select(key(2), 0), Err(Refusal::NoBackend));
    assert_eq!(r.select_unpinned(7, true), Err(Refusal::NoBackend));
    assert_eq!(r.failover(7, Some(key(1)), &[d.backend], 0), None);
    assert_eq!(
        r.overlay().get(key(1), 0).map(|p| p.backend),
        Some(r.id(d.backend))
    );
    assert_eq!(r.overlay().get(key(2), 0), None);
}

#[test]
fn down_backend_fails_over_to_stored_backup_and_repins() {
    let r = router(&[1, 1, 1, 1]);
    let d = r.select(key(5), 0).expect("up");
    let backup = d.backup.expect("four backends");
    r.set_up(d.backend, false);
    let f = r.select(key(5), 10).expect("others up");
    assert_eq!((f.backend, f.reason), (backup, Reason::Failover));
    assert_eq!(f.previous, Some(r.id(d.backend)));
    assert!(f.backup.is_some_and(|b| b != backup && b != d.backend));
    assert_eq!(r.overlay().count(r.id(d.backend)), 0);
    assert_eq!(r.overlay().count(r.id(backup)), 1);
    // Coming back up does not move the session back.
    r.set_up(d.backend, true);
    let s = r.select(key(5), 20).expect("up");
    assert_eq!((s.backend, s.reason), (backup, Reason::Sticky));
}

#[test]
fn removed_backend_fails_over_with_previous_id() {
    let names = Interner::default();
    let overlay = Arc::new(Overlay::new(OverlayConfig::default()));
    let all = specs(&[1, 1, 1]);
    let r1 = Router::new(RouterConfig::default(), &all, overlay, &names);
    let d = r1.select(key(3), 0).expect("up");
    let gone = r1.id(d.backend);
    let rest: Vec<BackendSpec> = all
        .iter()
        .filter(|s| s.name != r1.name(d.backend))
        .cloned()
        .collect();
    let r2 = next_table(&r1, &names, &rest);
    let f = r2.select(key(3), 0).expect("two left");
    assert_eq!((f.reason, f.previous), (Reason::Failover, Some(gone)));
    assert_eq!(r2.id(f.backend), r1.id(d.backup.expect("backup")));
}

#[test]
fn stale_backup_is_recomputed_and_stored() {
    let r = router(&[1, 1, 1]);
    let d = r.select(key(8), 0).expect("up");
    let old_backup = d.backup.expect("three");
    r.set_up(old_backup, false);
    let s = r.select(key(8), 0).expect("up");
    assert_eq!(s.reason, Reason::Sticky);
    let new_backup = s.backup.expect("third backend");
    assert!(new_backup != old_backup && new_backup != d.backend);
    let pin = r.overlay().get(key(8), 0).expect("pinned");
    assert_eq!(pin.backup, Some(r.id(new_backup)));
}

#[test]
fn draining_takes_no_new_sessions_but_keeps_existing() {
    let r = router(&[1, 1]);
    let pinned: Vec<_> = (0..200)
        .map(|i| (i, r.select(key(i), 0).expect("up").backend))
        .collect();
    r.set_draining(0, true);
    assert!(r.is_draining(0) && !r.takes_new(0));
    for &(i, b) in &pinned {
        let d = r.select(key(i), 0).expect("up");
        assert_eq!((d.backend, d.reason), (b, Reason::Sticky));
        if b == 1 {
            assert_eq!(d.backup, None, "a draining backend is nobody's backup");
        }
    }
    for i in 1000..1200 {
        assert_eq!(r.select(key(i), 0).expect("one takes new").backend, 1);
    }
    assert_eq!(r.select_unpinned(3, false).map(|d| d.backend), Ok(1));
}

#[test]
fn unpinned_pins_nothing_and_follows_the_ring() {
    let r = router(&[1, 1, 1]);
    for p in [0u32, 1 << 30, u32::MAX] {
        let d = r.select_unpinned(p, false).expect("up");
        assert_eq!(Some(d.backend), r.ring().primary(p));
        assert_eq!(d.reason, Reason::Ring);
        assert_eq!(
            r.select_unpinned(p, true).map(|d| d.reason),
            Ok(Reason::New)
        );
    }
    assert!(r.overlay().is_empty());
}

#[test]
fn failover_excludes_failed_and_repins() {
    let r = router(&[1, 1, 1, 1, 1]);
    let k = key(11);
    let point = k.ring_point();
    let walk: Vec<usize> = r.ring().walk(point).collect();
    let f = r
        .failover(point, None, &[walk[0], walk[1]], 0)
        .expect("three left");
    assert_eq!((f.backend, f.backup), (walk[2], Some(walk[3])));
    assert_eq!(
        (f.reason, f.previous),
        (Reason::Failover, Some(r.id(walk[0])))
    );
    assert!(r.overlay().is_empty(), "no key, no pin");

    let d = r.select(k, 0).expect("up");
    let f = r.failover(point, Some(k), &[d.backend], 0).expect("others");
    assert_eq!(Some(f.backend), d.backup, "stored backup first");
    assert_eq!(
        r.overlay().get(k, 0).map(|p| p.backend),
        Some(r.id(f.backend))
    );
}

#[test]
fn failover_falls_back_to_merely_up() {
    let r = router(&[1, 0, 1]);
    r.set_draining(2, true);
    let f = r
        .failover(9, None, &[0], 0)
        .expect("draining one is still up");
    assert_eq!(f.backend, 2);
    r.set_up(2, false);
    let f = r.failover(9, None, &[0], 0).expect("weight-0 one is up");
    assert_eq!((f.backend, f.backup), (1, None));
    assert_eq!(r.failover(9, None, &[0, 1, 2], 0), None);
}

#[test]
fn select_named_sticky_or_failover() {
    let names = Interner::default();
    let overlay = Arc::new(Overlay::new(OverlayConfig::default()));
    names.intern("old:80");
    let r = Router::new(RouterConfig::default(), &specs(&[1, 1, 0]), overlay, &names);
    let d = r
        .select_named("10.0.0.2:80", key(1), 0)
        .expect("weight 0 but up");
    assert_eq!((d.backend, d.reason), (2, Reason::Sticky));
    assert!(d.backup.is_some());
    assert_eq!(r.overlay().count(r.id(2)), 1, "token sessions are tracked");
    r.set_up(0, false);
    let f = r.select_named("10.0.0.0:80", key(2), 0).expect("1 is up");
    assert_eq!(
        (f.backend, f.reason, f.previous),
        (1, Reason::Failover, Some(r.id(0)))
    );
    assert_eq!(r.overlay().get(key(2), 0).map(|p| p.backend), Some(r.id(1)));
    let f = r.select_named("old:80", key(3), 0).expect("1 is up");
    assert_eq!(
        (f.reason, f.previous),
        (Reason::Failover, names.get("old:80"))
    );
    let f = r.select_named("never-seen", key(4), 0).expect("1 is up");
    assert_eq!(f.reason, Reason::Failover);
    assert_eq!(f.previous, None);
}

#[test]
fn select_named_follows_a_moved_pin() {
    let r = router(&[1, 1, 1]);
    let k = key(7);
    let first = r.select_named("10.0.0.0:80", k, 0).expect("up");
    assert_eq!((first.backend, first.reason), (0, Reason::Sticky));
    // A migration re-pins the session to backend 2: the token still names 0.
    r.pin(k, 2, 1);
    let moved = r.select_named("10.0.0.0:80", k, 2).expect("up");
    assert_eq!(
        (moved.backend, moved.reason, moved.previous),
        (2, Reason::Failover, Some(r.id(0)))
    );
    // Once the client holds a token naming 2, it is sticky again.
    let again = r.select_named("10.0.0.2:80", k, 3).expect("up");
    assert_eq!((again.backend, again.reason), (2, Reason::Sticky));
    // The pinned backend goes down while the client still holds a token naming 0: back to 0,
    // told as a move away from 2.
    r.set_up(2, false);
    let back = r.select_named("10.0.0.0:80", k, 4).expect("0 is up");
    assert_eq!(
        (back.backend, back.reason, back.previous),
        (0, Reason::Failover, Some(r.id(2)))
    );
}

#[test]
fn duplicate_names_are_shadowed() {
    let r = router(&[]);
    let dup = vec![BackendSpec::new("a", 1), BackendSpec::new("a", 5)];
    let r = next_table(&r, &Interner::default(), &dup);
    assert_eq!(r.index_of("a"), Some(0));
    assert_eq!(r.ring().distinct(), 1);
    assert!((0..100).all(|i| r.select(key(i), 0).map(|d| d.backend) == Ok(0)));
}

#[test]
fn inherit_flags_by_name() {
    let names = Interner::default();
    let overlay = Arc::new(Overlay::new(OverlayConfig::default()));
    let r1 = Router::new(RouterConfig::default(), &specs(&[1, 1]), overlay, &names);
    r1.set_up(0, false);
    r1.set_draining(1, true);
    let mut more = specs(&[1, 1]);
    more.insert(0, BackendSpec::new("new:80", 1));
    let r2 = next_table(&r1, &names, &more);
    r2.inherit_flags(&r1);
    assert!(r2.is_up(0) && !r2.is_up(1) && r2.is_draining(2));
    assert!((0..50).all(|i| r2.select(key(i), 0).map(|d| d.backend) == Ok(0)));
}

#[test]
fn explicit_pin_with_backup() {
    let r = router(&[1, 1, 1]);
    assert_eq!(r.pin(key(4), 2, 0), PinOutcome::Created);
    let pin = r.overlay().get(key(4), 0).expect("pinned");
    assert_eq!(pin.backend, r.id(2));
    assert!(pin.backup.is_some_and(|b| b != r.id(2)));
    assert_eq!(
        r.pin(key(4), 1, 0),
        PinOutcome::Changed { previous: r.id(2) }
    );
    let d = r.select(key(4), 0).expect("up");
    assert_eq!((d.backend, d.reason), (1, Reason::Sticky));
}

#[test]
fn bound_requests_follow_their_backend_and_pin_nothing() {
    let r = router(&[1, 1, 1]);
    let name = r.name(1).to_string();
    for point in [0, 1 << 20, u32::MAX] {
        let d = r.select_bound(&name, point).expect("up");
        assert_eq!((d.backend, d.reason, d.previous), (1, Reason::Sticky, None));
        assert!(d.backup.is_some_and(|b| b != 1));
    }
    assert_eq!(r.overlay().len(), 0, "nothing pinned");
    assert_eq!(r.load(1), 0, "no session counted");
    // Down: the ring from the point, every time the same node.
    r.set_up(1, false);
    let d = r.select_bound(&name, 12345).expect("two others up");
    assert_ne!(d.backend, 1);
    assert_eq!((d.reason, d.previous), (Reason::Failover, Some(r.id(1))));
    assert_eq!(r.select_bound(&name, 12345).expect("up").backend, d.backend);
    // A name this table never had: the ring, previous unknown.
    let d = r.select_bound("gone", 7).expect("up");
    assert_eq!((d.reason, d.previous), (Reason::Failover, None));
    assert_eq!(r.overlay().len(), 0);
}
