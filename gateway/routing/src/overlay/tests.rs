use super::*;
use std::collections::HashMap;

/// A test key (also used by `snapshot_tests`).
pub(super) fn key(i: u64) -> SessionKey {
    SessionKey::new(b"t", &i.to_le_bytes())
}

/// An overlay with `max_entries` and `idle_ttl`, defaults otherwise (also for `snapshot_tests`).
pub(super) fn overlay(max_entries: usize, idle_ttl: Millis) -> Overlay {
    Overlay::new(OverlayConfig {
        max_entries,
        idle_ttl,
        ..OverlayConfig::default()
    })
}

const A: BackendId = BackendId(0);
const B: BackendId = BackendId(1);
const C: BackendId = BackendId(7);

#[test]
fn pin_get_and_outcomes() {
    let o = overlay(1000, 60_000);
    assert_eq!(o.get(key(1), 0), None);
    assert_eq!(o.pin(key(1), A, Some(B), 0), PinOutcome::Created);
    let pin = Pin {
        backend: A,
        backup: Some(B),
    };
    assert_eq!(o.get(key(1), 10), Some(pin));
    assert_eq!(o.pin(key(1), A, None, 20), PinOutcome::Unchanged);
    assert_eq!(o.get(key(1), 30).map(|p| p.backup), Some(None));
    assert_eq!(
        o.pin(key(1), B, Some(A), 40),
        PinOutcome::Changed { previous: A }
    );
    assert_eq!(o.remove(key(1)), Some(B));
    assert_eq!(o.remove(key(1)), None);
    assert!(o.is_empty());
    o.check_invariants();
}

#[test]
fn expiry_exactly_at_ttl_boundary() {
    let o = overlay(1000, 1000);
    o.pin(key(1), A, None, 0);
    assert!(o.get(key(1), 999).is_some(), "idle 999 ms < 1 s TTL");
    // last_seen is still second 0: at 1000 ms the pin has been idle for the whole TTL.
    assert_eq!(o.get(key(1), 1000), None);
    assert_eq!(o.stats().expired, 1);
    assert_eq!(o.count(A), 0);
    assert!(o.is_empty(), "an expired pin is removed on access");
}

#[test]
fn ttl_rounds_up_to_whole_seconds() {
    let o = overlay(1000, 1500); // ceil → 2 s
    o.pin(key(1), A, None, 0);
    assert!(o.get(key(1), 1999).is_some());
    assert!(
        o.get(key(1), 2999).is_some(),
        "the get at 1999 refreshed last_seen to second 1"
    );
    assert_eq!(o.get(key(1), 5000), None);
}

#[test]
fn get_refreshes_last_seen() {
    let o = overlay(1000, 10_000);
    o.pin(key(1), A, None, 0);
    for t in (5_000..60_000).step_by(5_000) {
        assert!(
            o.get(key(1), t).is_some(),
            "refreshed every 5 s, alive at {t}"
        );
    }
    let info = o.info(key(1)).expect("pinned");
    assert_eq!((info.created, info.last_seen), (0, 55_000));
}

#[test]
fn zero_ttl_never_expires() {
    let o = overlay(1000, 0);
    o.pin(key(1), A, None, 0);
    assert!(o.get(key(1), u64::MAX).is_some());
    assert_eq!(o.sweep(u64::MAX), 0);
}

#[test]
fn pin_over_expired_entry_is_a_new_session() {
    let o = overlay(1000, 1000);
    o.pin(key(1), A, None, 0);
    assert_eq!(o.pin(key(1), B, None, 5000), PinOutcome::Created);
    assert_eq!((o.count(A), o.count(B)), (0, 1));
    let st = o.stats();
    assert_eq!((st.created, st.expired), (2, 1));
    assert_eq!(o.info(key(1)).map(|i| i.created), Some(5000));
    o.check_invariants();
}

#[test]
fn operations_are_counted() {
    let o = overlay(1000, 0);
    o.pin(key(1), A, None, 0);
    o.get(key(1), 0);
    o.get(key(2), 0);
    assert_eq!(o.get_or_pin(key(3), 0, false, || None), Lookup::Unplaced);
    let pin = Pin {
        backend: B,
        backup: None,
    };
    assert_eq!(
        o.get_or_pin(key(3), 0, false, || Some(pin)),
        Lookup::Pinned(pin)
    );
    assert_eq!(o.get_or_pin(key(3), 0, false, || None), Lookup::Found(pin));
    o.remove(key(1));
    o.remove(key(9));
    let st = o.stats();
    assert_eq!((st.gets, st.pins, st.removes), (5, 2, 2));
    assert_eq!(st.created, 2);
}

#[test]
fn sweep_removes_only_expired() {
    let o = overlay(10_000, 2000);
    for i in 0..1000 {
        o.pin(key(i), if i % 2 == 0 { A } else { B }, None, 0);
    }
    for i in (0..1000).step_by(3) {
        o.get(key(i), 1000);
    }
    assert_eq!(o.sweep(2000), 1000 - 334);
    assert_eq!(o.len(), 334);
    assert_eq!(o.count(A) + o.count(B), 334);
    assert_eq!(o.stats().expired, 666);
    o.check_invariants();
}

#[test]
fn eviction_keeps_the_bound_and_counts() {
    let o = overlay(100, 60_000);
    assert_eq!(o.shards(), 1);
    for i in 0..1000 {
        o.pin(key(i), if i % 3 == 0 { A } else { B }, None, i * 10);
        assert!(o.len() <= 100);
    }
    assert_eq!(o.len(), 100);
    let st = o.stats();
    assert_eq!((st.created, st.evicted, st.expired), (1000, 900, 0));
    assert_eq!(o.count(A) + o.count(B), 100);
    o.check_invariants();
}

#[test]
fn bound_holds_with_many_shards() {
    let o = overlay(20_000, 60_000);
    assert_eq!(o.shards(), 64);
    assert!(o.capacity() >= 20_000 && o.capacity() < 20_000 + 64);
    for i in 0..50_000 {
        o.pin(key(i), A, None, 0);
    }
    assert!(o.len() <= o.capacity());
    assert!(o.len() > 19_000, "shards fill up: {}", o.len());
    assert_eq!(o.stats().evicted as usize, 50_000 - o.len());
    assert_eq!(o.count(A) as usize, o.len());
    o.check_invariants();
}

#[test]
fn eviction_prefers_least_recently_seen() {
    let o = overlay(100, 3_600_000);
    for i in 0..100 {
        o.pin(key(i), A, None, 0);
    }
    for i in 0..20 {
        o.get(key(i), 10_000); // recently used
    }
    for i in 100..120 {
        o.pin(key(i), A, None, 10_000);
    }
    let survivors = (0..20).filter(|&i| o.info(key(i)).is_some()).count();
    assert!(
        survivors >= 18,
        "only {survivors}/20 recently used pins survived"
    );
}

#[test]
fn eviction_of_an_expired_pin_counts_as_expired() {
    let o = overlay(1, 1000);
    o.pin(key(1), A, None, 0);
    o.pin(key(2), B, None, 5000);
    let st = o.stats();
    assert_eq!((st.expired, st.evicted), (1, 0));
    o.pin(key(3), B, None, 5000);
    assert_eq!(o.stats().evicted, 1);
    assert_eq!((o.count(A), o.count(B)), (0, 1));
}

#[test]
fn counts_exact_against_a_model() {
    let o = overlay(100_000, 0);
    let mut model: HashMap<SessionKey, BackendId> = HashMap::new();
    let mut x = 12345u64;
    for step in 0..20_000u64 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let k = key((x >> 33) % 3000);
        let b = BackendId(((x >> 20) % 5) as u32);
        match (x >> 10) % 4 {
            0 => assert_eq!(o.remove(k), model.remove(&k)),
            1 => assert_eq!(o.get(k, step).map(|p| p.backend), model.get(&k).copied()),
            _ => {
                let expect = match model.insert(k, b) {
                    None => PinOutcome::Created,
                    Some(p) if p == b => PinOutcome::Unchanged,
                    Some(previous) => PinOutcome::Changed { previous },
                };
                assert_eq!(o.pin(k, b, None, step), expect);
            }
        }
    }
    let counts = o.counts();
    for b in 0..5 {
        let want = model.values().filter(|v| v.0 == b).count() as u64;
        assert_eq!(o.count(BackendId(b)), want);
        assert_eq!(counts[b as usize], want);
    }
    assert_eq!(o.len(), model.len());
    o.check_invariants();
}

#[test]
fn keys_on_and_remove_backend() {
    let o = overlay(10_000, 60_000);
    for i in 0..300 {
        o.pin(key(i), if i < 100 { C } else { A }, None, 0);
    }
    let keys = o.keys_on(C, 1000);
    assert_eq!(keys.len(), 100);
    assert!(keys
        .iter()
        .all(|k| o.info(*k).map(|i| i.backend) == Some(C)));
    assert_eq!(o.keys_on(C, 7).len(), 7);
    assert!(o.keys_on(B, 10).is_empty());
    assert_eq!(o.remove_backend(C), 100);
    assert_eq!((o.count(C), o.count(A), o.len()), (0, 200, 200));
    o.check_invariants();
}

#[test]
fn concurrent_pins_keep_counts_exact() {
    let o = overlay(100_000, 60_000);
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let o = &o;
            s.spawn(move || {
                for i in 0..5_000u64 {
                    let k = key(i);
                    o.pin(k, BackendId(t), None, 0);
                    o.get(k, 0);
                }
            });
        }
    });
    assert_eq!(o.len(), 5_000);
    assert_eq!((0..4).map(|t| o.count(BackendId(t))).sum::<u64>(), 5_000);
    o.check_invariants();
}

#[test]
fn full_overlay_memory_is_compact() {
    let o = overlay(200_000, 60_000);
    for i in 0..200_000 {
        o.pin(key(i), BackendId((i % 10) as u32), None, 0);
    }
    let per_entry = o.memory_bytes() as f64 / o.len() as f64;
    assert!(per_entry <= 64.0, "{per_entry} bytes per pin");
}

fn windowed(max_entries: usize, idle_ttl: Millis, active_window: Millis) -> Overlay {
    Overlay::new(OverlayConfig {
        max_entries,
        idle_ttl,
        active_window,
    })
}

#[test]
fn active_sessions_follow_use_and_the_window() {
    let o = windowed(1000, 3_600_000, 10_000);
    for i in 0..3 {
        o.pin(key(i), A, None, 0);
    }
    o.pin(key(9), B, None, 0);
    assert_eq!((o.active(A), o.active(B), o.loads().total()), (3, 1, 4));
    // Seen at second 0; at 9.999 s still within the 10 s window.
    o.sweep(9_999);
    assert_eq!(o.active(A), 3);
    o.sweep(10_000);
    assert_eq!((o.active(A), o.active(B), o.loads().total()), (0, 0, 0));
    assert_eq!(o.count(A), 3, "idle sessions stay pinned");
    // A use makes it active again at once, before any sweep.
    o.get(key(1), 11_000);
    assert_eq!(o.active(A), 1);
    // Moving an active session moves its activity.
    o.pin(key(1), B, None, 11_000);
    assert_eq!((o.active(A), o.active(B)), (0, 1));
    assert_eq!(o.active_counts(), vec![0, 1]);
    o.remove(key(1));
    assert_eq!((o.active(B), o.loads().total()), (0, 0));
    o.check_invariants();
}

#[test]
fn a_session_in_flight_is_active_and_never_expires() {
    let o = windowed(1000, 2_000, 1_000);
    assert!(o.acquire(key(1), 0).is_none(), "acquire does not pin");
    o.pin(key(1), A, None, 0);
    assert!(o.acquire(key(1), 0).is_some());
    assert_eq!(o.info(key(1)).map(|i| i.in_flight), Some(1));
    // A long request (a WebSocket): far past the TTL and the window.
    assert_eq!(o.sweep(60_000), 0);
    assert_eq!(o.active(A), 1, "in flight counts as active");
    assert!(
        o.get(key(1), 60_000).is_some(),
        "not expired on access either"
    );
    assert!(o.release(key(1), 60_000));
    assert_eq!(o.info(key(1)).map(|i| i.in_flight), Some(0));
    assert_eq!(o.info(key(1)).map(|i| i.last_seen), Some(60_000));
    assert_eq!(
        o.sweep(61_000),
        0,
        "released at 60 s: active, not yet expired"
    );
    assert_eq!(o.active(A), 0, "idle for a whole 1 s window");
    assert_eq!(o.sweep(62_000), 1);
    assert!(!o.release(key(1), 62_000), "gone");
    o.check_invariants();
}

#[test]
fn in_flight_saturates_and_release_never_underflows() {
    let o = overlay(1000, 1000);
    o.pin(key(1), A, Some(B), 0);
    assert!(o.release(key(1), 0));
    assert_eq!(o.info(key(1)).map(|i| i.in_flight), Some(0));
    for _ in 0..300 {
        o.acquire(key(1), 0);
    }
    let info = o.info(key(1)).expect("pinned");
    assert_eq!(info.in_flight, 255);
    assert_eq!((info.backend, info.backup), (A, Some(B)), "ids intact");
    for _ in 0..300 {
        o.release(key(1), 0);
    }
    assert_eq!(
        o.info(key(1)).map(|i| i.in_flight),
        Some(255),
        "saturated stays"
    );
    // A re-pin keeps the in-flight count and frequency, changes only the ids.
    o.pin(key(1), C, None, 0);
    let moved = o.info(key(1)).expect("pinned");
    assert_eq!(
        (moved.backend, moved.backup, moved.in_flight),
        (C, None, 255)
    );
    assert_eq!(moved.frequency, info.frequency);
    o.check_invariants();
}

#[test]
fn frequency_grows_logarithmically_and_decays_when_idle() {
    let o = overlay(1000, 0);
    o.pin(key(1), A, None, 0);
    o.pin(key(2), A, None, 0);
    let f0 = o.info(key(1)).map(|i| i.frequency);
    for _ in 0..1000 {
        o.acquire(key(1), 0);
        o.release(key(1), 0);
    }
    for _ in 0..10 {
        o.acquire(key(2), 0);
    }
    let busy = o.info(key(1)).map_or(0, |i| i.frequency);
    let quiet = o.info(key(2)).map_or(0, |i| i.frequency);
    assert_eq!(f0, Some(5));
    assert!((12..40).contains(&busy), "1,000 uses: {busy}");
    assert!(quiet < busy && quiet >= 5, "10 uses: {quiet}");
    // Ten idle minutes take ten steps off at the next use (which may add one back).
    o.acquire(key(1), 600_000);
    let decayed = o.info(key(1)).map_or(0, |i| i.frequency);
    assert!(
        decayed + 9 <= busy && decayed + 11 >= busy,
        "{busy} → {decayed}"
    );
}

#[test]
fn eviction_spares_sessions_in_flight() {
    let o = overlay(4, 0);
    for i in 0..4 {
        o.pin(key(i), A, None, 0);
        o.acquire(key(i), 0);
    }
    o.release(key(2), 5_000);
    o.sweep(5_000);
    // key(2) is the only one not in flight, though the most recently seen.
    o.pin(key(10), A, None, 6_000);
    assert!(o.info(key(2)).is_none(), "the idle one went");
    assert!((0..4).filter(|&i| i != 2).all(|i| o.info(key(i)).is_some()));
    assert_eq!(o.stats().evicted, 1);
    o.check_invariants();
}

#[test]
fn idle_keys_and_moves_skip_sessions_in_use() {
    let o = windowed(1000, 0, 600_000);
    for i in 0..6 {
        o.pin(key(i), A, None, 0);
    }
    o.acquire(key(0), 50_000); // in flight
    o.get(key(1), 45_000); // used recently
    let idle = o.idle_keys_on(A, 30_000, 50_000, 100);
    let mut want: Vec<_> = (2..6).map(key).collect();
    let mut got = idle.clone();
    got.sort_by_key(|k| k.0);
    want.sort_by_key(|k| k.0);
    assert_eq!(got, want);
    assert_eq!(o.idle_keys_on(A, 30_000, 50_000, 2).len(), 2, "limit");
    let to = Pin {
        backend: B,
        backup: None,
    };
    assert!(!o.move_if_idle(key(0), A, to, 30_000, 50_000), "in flight");
    assert!(
        !o.move_if_idle(key(1), A, to, 30_000, 50_000),
        "used 5 s ago"
    );
    assert!(!o.move_if_idle(key(2), B, to, 30_000, 50_000), "not on B");
    assert!(o.move_if_idle(key(2), A, to, 30_000, 50_000));
    assert_eq!((o.count(A), o.count(B)), (5, 1));
    assert_eq!((o.active(A), o.active(B)), (5, 1));
    assert_eq!(
        o.info(key(2)).map(|i| i.last_seen),
        Some(0),
        "a move is not a use"
    );
    o.check_invariants();
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// Whatever happens, per-shard counts match the pins and the lock-free loads match the
    /// per-shard active counts.
    #[test]
    fn loads_always_match_the_pins(ops in proptest::collection::vec((0u8..8, 0u64..40, 0u32..4), 1..300)) {
        let o = windowed(32, 20_000, 5_000);
        let mut now = 0;
        for (op, k, b) in ops {
            now += 700;
            let backend = BackendId(b);
            match op {
                0 | 1 => { o.pin(key(k), backend, None, now); }
                2 => { o.acquire(key(k), now); }
                3 => { o.release(key(k), now); }
                4 => { o.remove(key(k)); }
                5 => { o.sweep(now); }
                6 => { o.move_if_idle(key(k), backend, Pin { backend: BackendId((b + 1) % 4), backup: None }, 1_000, now); }
                _ => { o.get(key(k), now); }
            }
            o.check_invariants();
            let active = o.active_counts();
            for id in 0..4u32 {
                proptest::prop_assert_eq!(u64::from(o.active(BackendId(id))), active.get(id as usize).copied().unwrap_or(0));
            }
            proptest::prop_assert_eq!(o.loads().total(), active.iter().sum::<u64>());
        }
    }
}

#[test]
fn idle_active_keys_are_idle_sessions_still_in_the_window() {
    let o = windowed(1000, 0, 60_000);
    o.pin(key(0), A, None, 0); // past the window at 100 s
    o.pin(key(1), A, None, 70_000); // idle 30 s, still active
    o.pin(key(2), A, None, 95_000); // used 5 s ago
    o.pin(key(3), A, None, 10_000);
    o.acquire(key(3), 10_000); // in flight since 10 s: active, never idle
    o.pin(key(4), B, None, 70_000); // another backend
    o.sweep(100_000);
    assert_eq!(o.active(A), 3);
    let all = o.idle_keys_on(A, 20_000, 100_000, 100);
    assert_eq!(all.len(), 2, "key 0 and key 1");
    assert_eq!(o.idle_active_keys_on(A, 20_000, 100_000, 100), vec![key(1)]);
    assert!(o.idle_active_keys_on(A, 20_000, 100_000, 0).is_empty());
}

#[test]
fn seen_since_lists_the_sessions_used_since_a_time_and_those_in_flight() {
    let o = windowed(10_000, 0, 60_000);
    o.pin(key(0), A, None, 5_000);
    o.pin(key(1), A, None, 20_000);
    o.pin(key(2), B, None, 30_500); // within second 30: counts from 30_000 on
    o.pin(key(3), B, None, 1_000);
    o.acquire(key(3), 1_000); // in flight since 1 s: listed whatever `since`
    let mut seen = o.seen_since(20_000);
    seen.sort_by_key(|k| k.0);
    let mut want = vec![key(1), key(2), key(3)];
    want.sort_by_key(|k| k.0);
    assert_eq!(seen, want);
    assert_eq!(o.seen_since(31_000), vec![key(3)]);
    o.get(key(0), 40_000);
    assert!(o.seen_since(40_000).contains(&key(0)));
}
