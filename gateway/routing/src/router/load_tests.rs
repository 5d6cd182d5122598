//! Caps, bounded load, spill and rebalancing.
use super::*;
use crate::OverlayConfig;

fn key(i: u64) -> SessionKey {
    SessionKey::new(b"load", &i.to_le_bytes())
}

fn overlay() -> Arc<Overlay> {
    Arc::new(Overlay::new(OverlayConfig {
        max_entries: 1_000_000,
        idle_ttl: 0,
        active_window: 3_600_000,
    }))
}

fn router(specs: &[BackendSpec], bound_milli: Option<u32>, o: &Arc<Overlay>) -> Router {
    let cfg = RouterConfig {
        bound_milli,
        ..RouterConfig::default()
    };
    Router::new(cfg, specs, o.clone(), &Interner::default())
}

fn even(n: usize) -> Vec<BackendSpec> {
    (0..n)
        .map(|i| BackendSpec::new(&format!("b{i}"), 1))
        .collect()
}

fn loads(r: &Router) -> Vec<u32> {
    (0..r.len()).map(|i| r.load(i)).collect()
}

#[test]
fn caps_refuse_new_sessions_only() {
    let specs: Vec<_> = even(3)
        .into_iter()
        .map(|b| b.with_max_sessions(2))
        .collect();
    let o = overlay();
    let r = router(&specs, None, &o);
    for i in 0..6 {
        assert_eq!(r.select(key(i), 0).map(|d| d.reason), Ok(Reason::New));
    }
    assert_eq!(loads(&r), vec![2, 2, 2]);
    assert_eq!(r.select(key(6), 0), Err(Refusal::Full));
    assert_eq!(r.select_unpinned(1, true), Err(Refusal::Full));
    assert!(r.select_unpinned(1, false).is_ok(), "no session, no cap");
    assert!(
        o.info(key(6)).is_none(),
        "nothing pinned for a refused session"
    );
    for i in 0..6 {
        assert_eq!(r.select(key(i), 1).map(|d| d.reason), Ok(Reason::Sticky));
    }
    // A backend going down: its sessions are not refused — they go over the caps.
    let victim = r.select(key(0), 2).map(|d| d.backend).expect("sticky");
    r.set_up(victim, false);
    let moved = r.select(key(0), 3).expect("an existing session is served");
    assert_eq!(moved.reason, Reason::Failover);
    // One session leaves: a new one fits again.
    o.remove(key(1));
    o.remove(key(0));
    assert!(r.select(key(7), 4).is_ok());
}

/// Every placement lands on a backend below `ceil((1+ε)·(A+1)·w/W)` measured just before it.
fn check_bounded(weights: &[u32], eps_milli: u32, sessions: u64) {
    let specs: Vec<_> = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| BackendSpec::new(&format!("w{i}"), w))
        .collect();
    let o = overlay();
    let r = router(&specs, Some(eps_milli), &o);
    let w_total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    for s in 0..sessions {
        let before = loads(&r);
        let a: u64 = before.iter().map(|&l| u64::from(l)).sum();
        let d = r.select(key(s), 0).expect("placed");
        let i = d.backend;
        let cap = (u128::from(1000 + eps_milli) * u128::from(a + 1) * u128::from(weights[i]))
            .div_ceil(1000 * u128::from(w_total));
        assert!(
            u128::from(before[i]) < cap,
            "session {s} went to {i} at load {} with cap {cap}",
            before[i]
        );
    }
}

#[test]
fn bounded_load_never_places_at_or_above_the_bound() {
    check_bounded(&[1, 1, 1, 1, 1], 250, 3000);
    check_bounded(&[1, 1, 2], 250, 2000);
    check_bounded(&[5, 1, 1, 1, 1, 1, 1, 1], 100, 3000);
}

#[test]
fn bounded_load_evens_out_a_lopsided_ring() {
    // Two backends where one owns most of the ring: a few points versus many.
    let specs = vec![BackendSpec::new("small", 1), BackendSpec::new("big", 1)];
    let o = overlay();
    let cfg = RouterConfig {
        points_per_weight: 2,
        bound_milli: Some(250),
        ..RouterConfig::default()
    };
    let r = Router::new(cfg, &specs, o.clone(), &Interner::default());
    for s in 0..1000 {
        r.select(key(s), 0).expect("placed");
    }
    let l = loads(&r);
    let max = l.iter().copied().max().unwrap_or(0);
    assert!(max <= 625 + 1, "bound 1.25 × 500: {l:?}");
}

#[test]
fn weights_share_new_sessions_under_the_bound() {
    let specs = vec![
        BackendSpec::new("a", 1),
        BackendSpec::new("b", 1),
        BackendSpec::new("c", 2),
    ];
    let o = overlay();
    let r = router(&specs, Some(250), &o);
    for s in 0..4000 {
        r.select(key(s), 0).expect("placed");
    }
    let l = loads(&r);
    for (i, want) in [(0, 1000.0), (1, 1000.0), (2, 2000.0)] {
        let got = f64::from(l[i]);
        assert!((got - want).abs() <= want * 0.25 + 1.0, "{l:?}");
    }
}

#[test]
fn spill_moves_pinned_sessions_off_a_backend_over_its_cap() {
    let o = overlay();
    let names = Interner::default();
    let cfg = RouterConfig {
        spill_pinned: true,
        ..RouterConfig::default()
    };
    let r = Router::new(cfg, &even(3), o.clone(), &names);
    for s in 0..300 {
        r.select(key(s), 0).expect("placed");
    }
    let hot = (0..3).max_by_key(|&i| r.load(i)).expect("3 backends");
    let before = r.load(hot);
    // The operator lowers the hot backend's cap to 50: a new table over the same overlay.
    let specs: Vec<_> = (0..3)
        .map(|i| {
            let b = BackendSpec::new(&format!("b{i}"), 1);
            if i == hot {
                b.with_max_sessions(50)
            } else {
                b
            }
        })
        .collect();
    let r2 = Router::new(cfg, &specs, o.clone(), &names);
    let mut spilled = 0;
    for s in 0..300 {
        let d = r2.select(key(s), 1).expect("served");
        if d.reason == Reason::Spill {
            spilled += 1;
            assert_eq!(d.previous, Some(r2.id(hot)));
            assert_ne!(d.backend, hot);
        }
    }
    assert_eq!(r2.load(hot), 50, "exactly down to the cap");
    assert_eq!(spilled, before - 50);
    // Without spill_pinned they would all have stayed.
    let keep = Router::new(RouterConfig::default(), &specs, o.clone(), &names);
    r2.set_up(hot, true);
    for s in 0..300 {
        assert_eq!(keep.select(key(s), 2).map(|d| d.reason), Ok(Reason::Sticky));
    }
}

#[test]
fn rebalance_moves_only_idle_sessions_down_to_the_bound() {
    let o = Arc::new(Overlay::new(OverlayConfig {
        max_entries: 100_000,
        idle_ttl: 0,
        active_window: 600_000,
    }));
    let names = Interner::default();
    let cfg = RouterConfig {
        bound_milli: Some(250),
        track_in_flight: true,
        ..RouterConfig::default()
    };
    // 3 backends get 300 sessions with no bound; then 3 empty backends join.
    let plain = Router::new(
        RouterConfig {
            track_in_flight: true,
            ..RouterConfig::default()
        },
        &even(3),
        o.clone(),
        &names,
    );
    for s in 0..300 {
        plain.select(key(s), 0).expect("placed");
        o.release(key(s), 0);
    }
    let r = Router::new(cfg, &even(6), o.clone(), &names);
    // Session 0 is in use (a request in flight); session 1 was used a second ago.
    let busy = r.select(key(0), 100_000).expect("sticky").backend;
    r.select(key(1), 99_000).expect("sticky");
    o.release(key(1), 99_000);
    let moves = r.rebalance(30_000, 100_000, 1_000);
    assert!(!moves.is_empty());
    assert!(moves.iter().all(|m| m.key != key(0) && m.key != key(1)));
    assert_eq!(
        o.info(key(0)).map(|i| i.backend),
        Some(r.id(busy)),
        "in flight: stays"
    );
    for m in &moves {
        assert_eq!(o.info(m.key).map(|i| i.backend), Some(r.id(m.to)));
        assert_ne!(r.id(m.to), m.from);
    }
    // Every backend now within the bound: floor((1 + 0.25) × 300 / 6) = 62.
    let l = loads(&r);
    assert!(l.iter().all(|&x| x <= 62), "{l:?}");
    assert_eq!(l.iter().sum::<u32>(), 300);
    // A second pass finds nothing more to do.
    assert!(r.rebalance(30_000, 100_000, 1_000).is_empty());
}

#[test]
fn rebalance_respects_its_budget_and_needs_a_bound() {
    let o = overlay();
    let names = Interner::default();
    let plain = Router::new(RouterConfig::default(), &even(2), o.clone(), &names);
    for s in 0..200 {
        plain.select(key(s), 0).expect("placed");
    }
    assert!(
        plain.rebalance(0, 100_000, 100).is_empty(),
        "no bound, no moves"
    );
    let r = Router::new(
        RouterConfig {
            bound_milli: Some(100),
            ..RouterConfig::default()
        },
        &even(4),
        o.clone(),
        &names,
    );
    assert_eq!(r.rebalance(1_000, 100_000, 7).len(), 7);
}

/// Rebalancing exists to bring a backend's *active* sessions down to the bound, so it must
/// move sessions that count in that load: idle for `idle_for` but still within the active
/// window. Sessions past the window count nowhere; moving them leaves the donor above the
/// bound (and piles them, uncounted, onto the first target).
#[test]
fn rebalance_moves_sessions_that_count_in_the_load() {
    let o = Arc::new(Overlay::new(OverlayConfig {
        max_entries: 10_000,
        idle_ttl: 0,
        active_window: 60_000,
    }));
    let r = router(&even(3), Some(250), &o);
    // 100 sessions on b0 last used at t = 0 s: no longer active at t = 200 s.
    for s in 0..100 {
        r.pin(key(s), 0, 0);
    }
    // 100 more on b0 and 30 on each of b1, b2, used at t = 170 s: active, idle for 30 s.
    for s in 100..260 {
        let idx = match s {
            100..=199 => 0,
            200..=229 => 1,
            _ => 2,
        };
        r.pin(key(s), idx, 170_000);
    }
    o.sweep(200_000);
    assert_eq!(loads(&r), vec![100, 30, 30]);
    // Bound: floor(1.25 × 160 / 3) = 66; b0 is 34 above it.
    let moves = r.rebalance(20_000, 200_000, 1_000);
    assert_eq!(moves.len(), 34, "exactly the excess");
    assert_eq!(loads(&r)[0], 66, "each move lowered b0's active sessions");
    assert!(moves.iter().all(|m| (100..200).any(|s| key(s) == m.key)));
    assert!(loads(&r).iter().all(|&l| l <= 66), "{:?}", loads(&r));
    assert_eq!(loads(&r).iter().sum::<u32>(), 160);
    assert!(r.rebalance(20_000, 200_000, 1_000).is_empty(), "done");
    // The sessions past the window stayed where they were.
    assert!((0..100).all(|s| o.info(key(s)).map(|i| i.backend) == Some(r.id(0))));
}
