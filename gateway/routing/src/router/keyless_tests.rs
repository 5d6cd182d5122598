//! Keyless placement: even spread by load per unit of weight, pending placements, eligibility.
use super::keyless::EXACT_MAX;
use super::*;
use crate::OverlayConfig;

/// Active window of the test overlays (pending placements count for one to two of these).
const WINDOW: Millis = 60_000;

fn overlay() -> Arc<Overlay> {
    Arc::new(Overlay::new(OverlayConfig {
        max_entries: 1_000_000,
        idle_ttl: 0,
        active_window: WINDOW,
    }))
}

fn specs(weights: &[u32]) -> Vec<BackendSpec> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| BackendSpec::new(&format!("b{i}"), w))
        .collect()
}

fn router_with(cfg: RouterConfig, specs: &[BackendSpec], o: &Arc<Overlay>) -> Router {
    Router::new(cfg, specs, o.clone(), &Interner::default())
}

/// A table tracking requests in flight, with the bound ε = 0.25.
fn router(weights: &[u32], o: &Arc<Overlay>) -> Router {
    let cfg = RouterConfig {
        bound_milli: Some(250),
        track_in_flight: true,
        ..RouterConfig::default()
    };
    router_with(cfg, &specs(weights), o)
}

/// The same without a bound (so that no backend is skipped for its active count while the
/// even-spread invariant is checked).
fn unbounded(weights: &[u32], o: &Arc<Overlay>) -> Router {
    let cfg = RouterConfig {
        track_in_flight: true,
        ..RouterConfig::default()
    };
    router_with(cfg, &specs(weights), o)
}

/// A deterministic stream of random words (SplitMix64) from `seed`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The token-session key of keyless session `i` (what the cookie plugin would mint).
fn sid(i: u64) -> SessionKey {
    SessionKey::new(b"sid", &i.to_le_bytes())
}

fn keyless_loads(r: &Router) -> Vec<u64> {
    (0..r.len()).map(|i| r.keyless_load(i)).collect()
}

fn active(r: &Router) -> Vec<u32> {
    (0..r.len()).map(|i| r.load(i)).collect()
}

/// `load_i / w_i ≤ (load_j + 1) / w_j` for every pair of backends taking new sessions.
fn check_even(r: &Router, what: &str) {
    let l = keyless_loads(r);
    for i in (0..r.len()).filter(|&i| r.takes_new(i)) {
        for j in (0..r.len()).filter(|&j| r.takes_new(j)) {
            let (wi, wj) = (u64::from(r.weight(i)), u64::from(r.weight(j)));
            assert!(
                l[i] * wj <= (l[j] + 1) * wi,
                "{what}: backend {i} at {} (w {wi}) vs {j} at {} (w {wj}): {l:?}",
                l[i],
                l[j]
            );
        }
    }
}

/// Places `n` keyless sessions; each comes back (its token, select_named) right away when
/// `back_at_once`, else not; checks the even-spread invariant after each when `check`.
/// Returns the sessions per backend.
fn place_checked(
    r: &Router,
    rng: &mut Rng,
    n: u64,
    back_at_once: bool,
    now: Millis,
    check: bool,
) -> Vec<u64> {
    let mut count = vec![0u64; r.len()];
    for i in 0..n {
        let d = r.select_keyless(rng.next(), now).expect("eligible");
        assert_eq!((d.reason, d.previous), (Reason::New, None));
        assert_ne!(d.backup, Some(d.backend));
        count[d.backend] += 1;
        if back_at_once {
            let back = r.select_named(r.name(d.backend), sid(i), now).expect("up");
            assert_eq!((back.backend, back.reason), (d.backend, Reason::Sticky));
            r.overlay().release(sid(i), now);
        }
        if check {
            check_even(r, &format!("after session {i}"));
        }
    }
    count
}

/// [`place_checked`], checking the invariant after each placement.
fn place(r: &Router, rng: &mut Rng, n: u64, back_at_once: bool, now: Millis) -> Vec<u64> {
    place_checked(r, rng, n, back_at_once, now, true)
}

#[test]
fn three_hundred_sessions_on_three_equal_backends_land_100_each() {
    for seed in 0..20 {
        let mut rng = Rng(seed);
        // Nobody comes back before all are placed (a burst): the pending counts spread it.
        let o = overlay();
        let r = unbounded(&[1, 1, 1], &o);
        assert_eq!(
            place(&r, &mut rng, 300, false, 1_000),
            vec![100; 3],
            "seed {seed}"
        );
        assert_eq!(
            active(&r),
            vec![0; 3],
            "seed {seed}: nothing pinned, nothing active"
        );
        assert_eq!(o.len(), 0, "seed {seed}");
        assert_eq!(o.pending_total(), 300, "seed {seed}");
        // Everyone comes back right away: the pins take over from the pending counts.
        let o = overlay();
        let r = unbounded(&[1, 1, 1], &o);
        assert_eq!(
            place(&r, &mut rng, 300, true, 1_000),
            vec![100; 3],
            "seed {seed}"
        );
        assert_eq!(active(&r), vec![100; 3], "seed {seed}");
        assert_eq!(o.pending_total(), 0, "seed {seed}");
    }
}

#[test]
fn weights_one_one_two_take_a_quarter_a_quarter_and_half() {
    for seed in 0..20 {
        let o = overlay();
        let r = unbounded(&[1, 1, 2], &o);
        let got = place(&r, &mut Rng(seed), 400, seed % 2 == 0, 0);
        assert_eq!(got, vec![100, 100, 200], "seed {seed}");
    }
}

/// Sessions come back in a random order, some never (clients without cookies): the spread of
/// placements stays exact, and of the sessions that came back, even up to chance.
#[test]
fn returns_in_any_order_keep_the_spread() {
    for seed in 0..50 {
        let mut rng = Rng(seed);
        let o = overlay();
        let r = unbounded(&[1, 1, 1, 1, 1], &o);
        let mut waiting: Vec<(u64, usize)> = Vec::new();
        let mut count = [0u64; 5];
        for i in 0..1_000 {
            let d = r.select_keyless(rng.next(), 5).expect("eligible");
            count[d.backend] += 1;
            waiting.push((i, d.backend));
            // A random waiting session comes back, or never will.
            if rng.below(3) > 0 {
                let (s, b) = waiting.swap_remove(rng.below(waiting.len() as u64) as usize);
                if rng.below(4) > 0 {
                    r.select_named(r.name(b), sid(s), 5).expect("up");
                }
            }
            check_even(&r, &format!("seed {seed}, session {i}"));
        }
        assert_eq!(count, [200; 5], "seed {seed}");
    }
}

/// Keyed sessions already there count: new keyless sessions fill the emptier backends first.
#[test]
fn keyless_sessions_fill_in_around_keyed_ones() {
    let o = overlay();
    let r = router(&[1, 1, 1], &o);
    for k in 0..30 {
        r.pin(SessionKey::new(b"header", &[k]), 0, 0);
    }
    let got = place_checked(&r, &mut Rng(7), 60, false, 0, false);
    assert_eq!(got, vec![0, 30, 30]);
    assert_eq!(keyless_loads(&r), vec![30, 30, 30]);
}

#[test]
fn pending_placements_expire_after_one_to_two_spans() {
    const S: Millis = crate::PENDING_SPAN;
    let o = overlay();
    let r = router(&[1, 1], &o);
    assert_eq!(o.pending_total(), 0);
    place(&r, &mut Rng(1), 10, false, S / 2);
    assert_eq!(keyless_loads(&r), vec![5, 5]);
    // Still counted within the next span; one that comes back late takes one off.
    r.select_keyless(3, S + S / 2).expect("eligible");
    let back = r
        .select_named(r.name(0), sid(99), S + S * 6 / 10)
        .expect("up");
    assert_eq!(back.reason, Reason::Sticky);
    assert_eq!(o.pending_total(), 10);
    assert_eq!(r.load(0), 1);
    // Two spans on, the first span's placements have expired; so has the second's at three,
    // the third's at four.
    r.select_keyless(4, 2 * S).expect("eligible");
    assert_eq!(o.pending_total(), 2);
    o.roll_pending(3 * S);
    assert_eq!(o.pending_total(), 1);
    o.roll_pending(4 * S);
    assert_eq!(o.pending_total(), 0);
}

/// A burst that lasts many spans with nobody coming back: the pending counts cover only the
/// last one to two spans, and the tie-break by recent placements keeps the whole burst within
/// three sessions of even (without it, the spread drifts like a random walk: 7 after 3,000
/// placements, 18 after 30,000 in these seeds).
#[test]
fn a_burst_longer_than_the_span_stays_even() {
    for seed in 0..10 {
        let o = overlay();
        let r = unbounded(&[1, 1, 1], &o);
        let mut rng = Rng(seed);
        let mut count = [0u64; 3];
        for i in 0..30_000u64 {
            // 100 placements per span, at uneven moments, over 300 spans (5 recent windows).
            let now = i * crate::PENDING_SPAN / 100 + rng.below(50);
            count[r.select_keyless(rng.next(), now).expect("eligible").backend] += 1;
            let (lo, hi) = (count.iter().min().unwrap(), count.iter().max().unwrap());
            assert!(hi - lo <= 3, "seed {seed}, placement {i}: {count:?}");
        }
    }
}

/// A table whose overlay counts placements for a custom span.
#[test]
fn the_pending_span_is_configurable() {
    let o = Arc::new(
        Overlay::new(OverlayConfig {
            max_entries: 100,
            idle_ttl: 0,
            active_window: WINDOW,
        })
        .with_pending_span(10_000),
    );
    let r = router(&[1, 1], &o);
    r.select_keyless(1, 5_000).expect("eligible");
    o.roll_pending(19_999);
    assert_eq!(o.pending_total(), 1);
    o.roll_pending(20_000);
    assert_eq!(o.pending_total(), 0);
}

#[test]
fn only_eligible_backends_and_caps_hold() {
    let o = overlay();
    let weights = specs(&[1, 1, 1, 0]);
    let capped: Vec<_> = weights
        .into_iter()
        .enumerate()
        .map(|(i, b)| if i == 2 { b.with_max_sessions(2) } else { b })
        .collect();
    let cfg = RouterConfig {
        track_in_flight: true,
        ..RouterConfig::default()
    };
    let r = router_with(cfg, &capped, &o);
    r.set_draining(0, true);
    // b0 drains, b3 has weight 0: b1 and b2 only, b2 up to its cap of 2 active sessions.
    for i in 0..40 {
        let d = r.select_keyless(i * 7919, 0).expect("b1 or b2");
        assert!(d.backend == 1 || d.backend == 2, "{d:?}");
        r.select_named(r.name(d.backend), sid(i), 0).expect("up");
    }
    assert_eq!(active(&r), vec![0, 38, 2, 0]);
    r.set_up(1, false);
    assert_eq!(
        r.select_keyless(1, 0),
        Err(Refusal::Full),
        "b2 is at its cap"
    );
    r.set_draining(0, false);
    assert_eq!(r.select_keyless(1, 0).map(|d| d.backend), Ok(0));
    r.set_draining(0, true);
    r.set_up(2, false);
    assert_eq!(r.select_keyless(1, 0), Err(Refusal::NoBackend));
    let empty = router(&[], &o);
    assert_eq!(empty.select_keyless(1, 0), Err(Refusal::NoBackend));
}

/// With a bound, a keyless session never lands on a backend at or above it while another is
/// below it (the keyed sessions here make b0 heavy).
#[test]
fn the_bound_holds_for_keyless_sessions() {
    let o = overlay();
    let r = router(&[1, 1, 1], &o);
    for k in 0..60u64 {
        r.pin(SessionKey::new(b"h", &k.to_le_bytes()), 0, 0);
    }
    let mut rng = Rng(3);
    for i in 0..300 {
        let fits: Vec<bool> = (0..3)
            .map(|b| u64::from(r.load(b)) < r.bound(b).expect("bounded"))
            .collect();
        let d = r.select_keyless(rng.next(), 0).expect("eligible");
        assert!(
            fits[d.backend],
            "session {i} on {} over the bound: {fits:?}",
            d.backend
        );
        r.select_named(r.name(d.backend), sid(i), 0).expect("up");
    }
    check_even(&r, "end");
}

/// Pending keyless placements change nothing for keyed sessions: the same keys go to the same
/// backends with the same backups as on a table that never placed a keyless session.
#[test]
fn keyed_sessions_are_placed_as_before() {
    let (a, b) = (overlay(), overlay());
    let (ra, rb) = (router(&[1, 1, 2, 1], &a), router(&[1, 1, 2, 1], &b));
    place(&ra, &mut Rng(11), 500, false, 0);
    for k in 0..2_000u64 {
        let key = SessionKey::new(b"header", &k.to_le_bytes());
        assert_eq!(ra.select(key, 0), rb.select(key, 0), "key {k}");
    }
    assert_eq!(active(&ra), active(&rb));
}

/// Above `EXACT_MAX` backends: two random choices, reproducible from the caller's bits, and
/// within a few sessions of even.
#[test]
fn large_tables_take_the_better_of_two() {
    for n in [EXACT_MAX + 1, 200, 1_000] {
        let o = overlay();
        let r = router(&vec![1; n], &o);
        let twin = router(&vec![1; n], &overlay());
        let mut rng = Rng(n as u64);
        for i in 0..(100 * n as u64) {
            let bits = rng.next();
            let d = r.select_keyless(bits, 0).expect("eligible");
            assert_eq!(twin.select_keyless(bits, 0), Ok(d), "n {n}, session {i}");
        }
        let l = keyless_loads(&r);
        let (min, max) = (l.iter().min().copied(), l.iter().max().copied());
        assert!(
            min >= Some(95) && max <= Some(104),
            "n {n}: loads {min:?}..{max:?} around 100"
        );
    }
}

/// Weighted sampling over a large table: each backend's share follows its weight.
#[test]
fn large_weighted_tables_follow_weights() {
    let weights: Vec<u32> = (0..100).map(|i| 1 + (i % 4)).collect();
    let o = overlay();
    let r = router(&weights, &o);
    let mut rng = Rng(5);
    let total_w: u32 = weights.iter().sum();
    let n = 100 * u64::from(total_w);
    for _ in 0..n {
        r.select_keyless(rng.next(), 0).expect("eligible");
    }
    for (i, &w) in weights.iter().enumerate() {
        let l = r.keyless_load(i);
        let want = 100 * u64::from(w);
        assert!(
            l + 8 >= want && l <= want + 8,
            "backend {i} (weight {w}): {l}, want about {want}"
        );
    }
}

/// In a large table where most backends cannot take a session, the scan finds the others.
#[test]
fn large_tables_fall_back_to_a_scan() {
    let o = overlay();
    let r = router(&[1; 100], &o);
    for i in 0..98 {
        r.set_draining(i, true);
    }
    let mut rng = Rng(9);
    let mut count = [0u32; 2];
    for _ in 0..100 {
        let d = r.select_keyless(rng.next(), 0).expect("b98 or b99");
        count[d.backend - 98] += 1;
    }
    assert_eq!(count, [50, 50]);
}

/// Threads placing at once: each overshoot comes from threads reading the same loads, so the
/// spread stays within the number of threads of even.
#[test]
fn concurrent_bursts_stay_even() {
    const THREADS: u64 = 8;
    for round in 0..10u64 {
        let o = overlay();
        let r = router(&[1, 1, 1], &o);
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let r = &r;
                s.spawn(move || {
                    let mut rng = Rng(round * 100 + t);
                    for i in 0..300 / THREADS + 1 {
                        let d = r.select_keyless(rng.next(), 0).expect("eligible");
                        if i % 2 == 0 {
                            r.select_named(r.name(d.backend), sid(t * 1_000 + i), 0)
                                .expect("up");
                        }
                    }
                });
            }
        });
        let l = keyless_loads(&r);
        let total: u64 = l.iter().sum();
        let mean = total / 3;
        assert!(
            l.iter().all(|&x| x.abs_diff(mean) <= THREADS),
            "round {round}: {l:?}"
        );
    }
}

/// A session placed on a backend that then drains still reaches it when it comes back (an
/// existing session to the app); once the backend no longer serves (drained, down), a
/// returning token is reassigned and pinned elsewhere.
#[test]
fn tokens_of_a_draining_backend_still_reach_it() {
    let o = overlay();
    let r = router(&[1, 1, 1], &o);
    let mut rng = Rng(4);
    let placed: Vec<usize> = (0..30)
        .map(|_| r.select_keyless(rng.next(), 0).expect("eligible").backend)
        .collect();
    let b = placed[0];
    r.set_draining(b, true);
    let mut on_b = (0..30u64).filter(|&i| placed[i as usize] == b);
    let first = on_b.next().expect("one");
    let d = r.select_named(r.name(b), sid(first), 1).expect("up");
    assert_eq!((d.backend, d.reason), (b, Reason::Sticky));
    assert_eq!(o.get(sid(first), 1).map(|p| p.backend), Some(r.id(b)));
    assert!(
        (0..10).all(|i| r.select_keyless(i, 1).expect("others").backend != b),
        "no new session on a draining backend"
    );
    r.set_up(b, false);
    let later = on_b.next().expect("two");
    let d = r.select_named(r.name(b), sid(later), 2).expect("others up");
    assert_ne!(d.backend, b);
    assert_eq!((d.reason, d.previous), (Reason::Failover, Some(r.id(b))));
    assert_eq!(
        o.get(sid(later), 2).map(|p| p.backend),
        Some(r.id(d.backend))
    );
}
