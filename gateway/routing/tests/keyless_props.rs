//! Properties of keyless placement (`Router::select_keyless`) under random interleavings of
//! keyless placements, returns, keyed sessions, departures and flag changes, on small tables
//! (scanned whole) with random weights, caps and bounds: every placement is eligible, takes the
//! lowest `(active + pending + 1) / weight` among the backends that fit best, refuses exactly
//! when it must, and counts as pending until its session comes back.
use berth_routing::*;
use proptest::prelude::*;
use std::sync::Arc;

#[derive(Debug, Clone)]
enum Op {
    /// A new session without a key, with these random bits.
    Keyless(u64),
    /// The n-th waiting keyless session comes back with its token.
    Return(usize),
    /// A keyed (header) session's request.
    Keyed(u16),
    /// A pinned session leaves.
    Leave(u16),
    /// Backend toggles draining.
    Drain(usize),
    /// Backend toggles up/down.
    Health(usize),
    /// The clock moves on (ms).
    Wait(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => any::<u64>().prop_map(Op::Keyless),
        3 => any::<usize>().prop_map(Op::Return),
        2 => (0u16..200).prop_map(Op::Keyed),
        1 => (0u16..200).prop_map(Op::Leave),
        1 => any::<usize>().prop_map(Op::Drain),
        1 => any::<usize>().prop_map(Op::Health),
        1 => (0u32..40_000).prop_map(Op::Wait),
    ]
}

fn token_key(n: u64) -> SessionKey {
    SessionKey::new(b"token", &n.to_le_bytes())
}

fn header_key(n: u16) -> SessionKey {
    SessionKey::new(b"header", &n.to_le_bytes())
}

/// Whether backend `i` takes one more new session under its cap and the bound (as placement
/// measures it: active sessions).
fn fits(r: &Router, i: usize) -> bool {
    let load = u64::from(r.load(i));
    r.takes_new(i)
        && r.max_sessions(i).is_none_or(|m| load < u64::from(m))
        && r.bound(i).is_none_or(|b| load < b)
}

fn under_cap(r: &Router, i: usize) -> bool {
    r.takes_new(i) && r.max_sessions(i).is_none_or(|m| r.load(i) < m)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn keyless_placement_is_eligible_and_least_loaded(
        backends in prop::collection::vec((0u32..4, prop::option::of(1u32..30)), 1..8),
        bound in prop::option::of(0u32..1000),
        ops in prop::collection::vec(op(), 1..300),
    ) {
        let specs: Vec<BackendSpec> = backends
            .iter()
            .enumerate()
            .map(|(i, &(w, cap))| {
                let b = BackendSpec::new(&format!("b{i}"), w);
                match cap {
                    Some(c) => b.with_max_sessions(c),
                    None => b,
                }
            })
            .collect();
        let overlay = Arc::new(Overlay::new(OverlayConfig {
            max_entries: 10_000,
            idle_ttl: 0,
            active_window: 60_000,
        }));
        let cfg = RouterConfig {
            bound_milli: bound,
            track_in_flight: false,
            ..RouterConfig::default()
        };
        let r = Router::new(cfg, &specs, overlay.clone(), &Interner::default());
        let n = r.len();
        let mut now: Millis = 0;
        let mut waiting: Vec<(u64, usize)> = Vec::new();
        let mut minted = 0u64;
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Keyless(bits) => {
                    let fit: Vec<usize> = (0..n).filter(|&i| fits(&r, i)).collect();
                    let room: Vec<usize> = (0..n).filter(|&i| under_cap(&r, i)).collect();
                    let loads: Vec<u64> = (0..n).map(|i| r.keyless_load(i)).collect();
                    let pending = overlay.pending_total();
                    match r.select_keyless(bits, now) {
                        Ok(d) => {
                            let b = d.backend;
                            prop_assert_eq!(d.reason, Reason::New);
                            prop_assert!(r.takes_new(b), "step {}: {} takes no new session", step, b);
                            let tier = if fit.is_empty() { &room } else { &fit };
                            prop_assert!(tier.contains(&b), "step {}: {} not in {:?}", step, b, tier);
                            let w = |i: usize| u64::from(r.weight(i));
                            for &j in tier {
                                prop_assert!(
                                    (loads[b] + 1) * w(j) <= (loads[j] + 1) * w(b),
                                    "step {}: chose {} at {:?} over {}", step, b, loads, j
                                );
                            }
                            prop_assert_eq!(overlay.pending_total(), pending + 1);
                            prop_assert_eq!(r.keyless_load(b), loads[b] + 1);
                            waiting.push((minted, b));
                            minted += 1;
                        }
                        Err(Refusal::Full) => {
                            prop_assert!(room.is_empty(), "step {}: refused with room on {:?}", step, room);
                            prop_assert!((0..n).any(|i| r.takes_new(i)));
                        }
                        Err(Refusal::NoBackend) => {
                            prop_assert!((0..n).all(|i| !r.takes_new(i)), "step {}", step);
                        }
                    }
                }
                Op::Return(k) if !waiting.is_empty() => {
                    let (tok, b) = waiting.swap_remove(k % waiting.len());
                    let before = r.keyless_load(b);
                    let expired = overlay.pending(r.id(b)) == 0;
                    let pending = overlay.pending_total();
                    let d = r.select_named(r.name(b), token_key(tok), now);
                    if r.is_up(b) {
                        let d = d.expect("the named backend is up");
                        prop_assert_eq!((d.backend, d.reason), (b, Reason::Sticky));
                        // One pending placement became one pinned, active session (or, when
                        // its placement had expired, the session counts again).
                        prop_assert_eq!(r.keyless_load(b), before + u64::from(expired));
                    }
                    prop_assert!(overlay.pending_total() + 1 >= pending);
                    prop_assert!(overlay.pending_total() <= pending);
                }
                Op::Return(_) => {}
                Op::Keyed(k) => {
                    let pending = overlay.pending_total();
                    let _ = r.select(header_key(k), now);
                    prop_assert_eq!(overlay.pending_total(), pending, "keyed sessions leave pending alone");
                }
                Op::Leave(k) => {
                    overlay.remove(header_key(k));
                }
                Op::Drain(i) => r.set_draining(i % n, !r.is_draining(i % n)),
                Op::Health(i) => r.set_up(i % n, !r.is_up(i % n)),
                Op::Wait(ms) => {
                    now += u64::from(ms);
                    overlay.sweep(now);
                    overlay.roll_pending(now);
                }
            }
        }
    }
}
