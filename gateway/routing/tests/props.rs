//! Properties of the ring and the router: what a membership change may move, weight shares,
//! modulo hashing and list-order independence.
use berth_routing::*;
use proptest::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;

fn names(salt: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{salt}-{i}.svc:8080")).collect()
}

fn specs(names: &[String], weight: u32) -> Vec<BackendSpec> {
    names.iter().map(|n| BackendSpec::new(n, weight)).collect()
}

fn key(i: u64) -> SessionKey {
    SessionKey::new(b"props", &i.to_le_bytes())
}

/// Ring points spread evenly over the u32 space, offset by `seed`.
fn points(seed: u32, n: u32) -> impl Iterator<Item = u32> {
    let step = u32::MAX / n;
    (0..n).map(move |i| seed.wrapping_add(i.wrapping_mul(step)))
}

struct World {
    names: Interner,
    overlay: Arc<Overlay>,
}

impl World {
    fn new() -> Self {
        World {
            names: Interner::default(),
            overlay: Arc::new(Overlay::new(OverlayConfig::default())),
        }
    }

    fn router(&self, backends: &[BackendSpec]) -> Router {
        Router::new(
            RouterConfig::default(),
            backends,
            self.overlay.clone(),
            &self.names,
        )
    }
}

/// The name of the ring primary of `point`, through `select_unpinned`.
fn primary_name(r: &Router, point: u32) -> Option<String> {
    let d = r.select_unpinned(point, false).ok()?;
    assert_eq!(Some(d.backend), r.ring().primary(point));
    Some(r.name(d.backend).to_string())
}

const PINNED: u64 = 300;
const RING_KEYS: u32 = 2000;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Adding a backend moves no pinned session and ~1/(N+1) of unpinned keys, all of them
    /// to the new backend.
    #[test]
    fn adding_a_backend_moves_no_pin_and_few_ring_keys(
        n in 2usize..50, salt in "[a-z]{1,8}", at in any::<prop::sample::Index>(), seed: u32,
    ) {
        let w = World::new();
        let before = specs(&names(&salt, n), 1);
        let r1 = w.router(&before);
        let pinned: Vec<String> = (0..PINNED)
            .map(|i| r1.name(r1.select(key(i), 0).expect("up").backend).to_string())
            .collect();
        let mut after = before.clone();
        let new_name = format!("{salt}-new.svc:8080");
        after.insert(at.index(n + 1), BackendSpec::new(&new_name, 1));
        let r2 = w.router(&after);
        for (i, name) in pinned.iter().enumerate() {
            let d = r2.select(key(i as u64), 1).expect("up");
            prop_assert_eq!((r2.name(d.backend), d.reason), (name.as_str(), Reason::Sticky));
        }
        let mut moved = 0;
        for p in points(seed, RING_KEYS) {
            let (a, b) = (primary_name(&r1, p), primary_name(&r2, p));
            if a != b {
                moved += 1;
                prop_assert_eq!(b.as_deref(), Some(new_name.as_str()));
            }
        }
        let bound = 1.5 / (n + 1) as f64 + 0.02;
        prop_assert!(f64::from(moved) / f64::from(RING_KEYS) <= bound, "moved {moved}");
    }

    /// Removing a backend moves only the keys that were on it; pins elsewhere stay sticky and
    /// pins on it fail over.
    #[test]
    fn removing_a_backend_moves_only_its_keys(
        n in 3usize..50, salt in "[a-z]{1,8}", gone in any::<prop::sample::Index>(), seed: u32,
    ) {
        let w = World::new();
        let before = specs(&names(&salt, n), 1);
        let r1 = w.router(&before);
        let pinned: Vec<String> = (0..PINNED)
            .map(|i| r1.name(r1.select(key(i), 0).expect("up").backend).to_string())
            .collect();
        let mut after = before.clone();
        let removed = after.remove(gone.index(n)).name;
        let r2 = w.router(&after);
        for (i, name) in pinned.iter().enumerate() {
            let d = r2.select(key(i as u64), 1).expect("up");
            if *name == removed {
                prop_assert_eq!(d.reason, Reason::Failover);
                prop_assert_eq!(d.previous, w.names.get(&removed));
            } else {
                prop_assert_eq!((r2.name(d.backend), d.reason), (name.as_str(), Reason::Sticky));
            }
        }
        for p in points(seed, RING_KEYS) {
            let (a, b) = (primary_name(&r1, p), primary_name(&r2, p));
            prop_assert!(a == b || a.as_deref() == Some(removed.as_str()));
        }
    }

    /// Shares follow weights (loose bound: 160 points per weight unit give a standard
    /// deviation of ~8% for a weight-1 backend, so a random name set may sit 20% off).
    #[test]
    fn weights_give_proportional_shares(
        weights in prop::collection::vec(0u32..5, 2..8), salt in "[a-z]{1,8}", seed: u32,
    ) {
        prop_assume!(weights.iter().any(|&w| w > 0));
        let ns = names(&salt, weights.len());
        let spec: Vec<(&str, u32)> = ns.iter().map(|n| n.as_str()).zip(weights.iter().copied()).collect();
        let ring = Ring::new(Hashing::Ketama, 160, &spec);
        let shares = shares(&ring, weights.len(), seed, 20_000);
        let total: u32 = weights.iter().sum();
        for (i, &w) in weights.iter().enumerate() {
            let want = f64::from(w) / f64::from(total);
            prop_assert!((shares[i] - want).abs() <= 0.4 * want + 0.01, "{i}: {} vs {want}", shares[i]);
        }
    }

    /// Modulo: slot p % Σw, the walk yields each weighted backend exactly once, and over one
    /// full cycle of points every backend gets exactly its weight.
    #[test]
    fn modulo_hashing(weights in prop::collection::vec(0u32..6, 1..12), start: u32) {
        let ns = names("m", weights.len());
        let spec: Vec<(&str, u32)> = ns.iter().map(|n| n.as_str()).zip(weights.iter().copied()).collect();
        let ring = Ring::new(Hashing::Modulo, 160, &spec);
        let weighted: Vec<usize> = (0..weights.len()).filter(|&i| weights[i] > 0).collect();
        let total: u32 = weights.iter().sum();
        let mut got = vec![0u32; weights.len()];
        for k in 0..total {
            let p = start.wrapping_add(k);
            let mut walk: Vec<usize> = ring.walk(p).collect();
            got[walk[0]] += 1;
            walk.sort_unstable();
            prop_assert_eq!(&walk, &weighted);
        }
        if total > 0 && start.checked_add(total).is_some() {
            prop_assert_eq!(got, weights);
        }
        if total == 0 {
            prop_assert_eq!(ring.walk(start).count(), 0);
        }
    }

    /// Ketama: the walk yields each weighted backend exactly once.
    #[test]
    fn ketama_walk_yields_each_weighted_backend_once(
        weights in prop::collection::vec(0u32..3, 1..40), p: u32,
    ) {
        let ns = names("k", weights.len());
        let spec: Vec<(&str, u32)> = ns.iter().map(|n| n.as_str()).zip(weights.iter().copied()).collect();
        let ring = Ring::new(Hashing::Ketama, 40, &spec);
        let mut walk: Vec<usize> = ring.walk(p).collect();
        prop_assert_eq!(walk.first().copied(), ring.primary(p));
        walk.sort_unstable();
        let weighted: Vec<usize> = (0..weights.len()).filter(|&i| weights[i] > 0).collect();
        prop_assert_eq!(walk, weighted);
    }

    /// The same backend set in another order gives the same mapping (names, full walk).
    #[test]
    fn list_order_does_not_matter(
        weights in prop::collection::vec(0u32..4, 1..30), salt in "[a-z]{1,8}",
        perm_seed: u64, seed: u32,
    ) {
        let ns = names(&salt, weights.len());
        let a: Vec<BackendSpec> = ns.iter().zip(&weights).map(|(n, &w)| BackendSpec::new(n, w)).collect();
        let mut b = a.clone();
        shuffle(&mut b, perm_seed);
        let w = World::new();
        let (ra, rb) = (w.router(&a), w.router(&b));
        for p in points(seed, 500) {
            let wa: Vec<&str> = ra.ring().walk(p).map(|i| ra.name(i)).collect();
            let wb: Vec<&str> = rb.ring().walk(p).map(|i| rb.name(i)).collect();
            prop_assert_eq!(wa, wb);
        }
    }
}

/// Weights 1:2:3 over 30k keys, within ±15% relative (fixed names: deterministic).
#[test]
fn weights_one_two_three() {
    let ring = Ring::new(
        Hashing::Ketama,
        160,
        &[("app-a:8080", 1), ("app-b:8080", 2), ("app-c:8080", 3)],
    );
    let shares = shares(&ring, 3, 0, 30_000);
    for (i, want) in [1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0].into_iter().enumerate() {
        let rel = (shares[i] - want).abs() / want;
        assert!(rel <= 0.15, "backend {i}: share {} vs {want}", shares[i]);
    }
}

/// Keys placed through the router (and pinned) follow the same weights.
#[test]
fn router_placements_follow_weights() {
    let w = World::new();
    let r = w.router(&[
        BackendSpec::new("app-a:8080", 1),
        BackendSpec::new("app-b:8080", 2),
        BackendSpec::new("app-c:8080", 3),
    ]);
    let mut got: HashMap<usize, u32> = HashMap::new();
    for i in 0..30_000 {
        *got.entry(r.select(key(i), 0).expect("up").backend)
            .or_default() += 1;
    }
    for (i, want) in [5_000.0, 10_000.0, 15_000.0].into_iter().enumerate() {
        let rel = (f64::from(got[&i]) - want).abs() / want;
        assert!(rel <= 0.15, "backend {i}: {} vs {want}", got[&i]);
    }
    assert_eq!(w.overlay.len(), 30_000);
}

fn shares(ring: &Ring, n: usize, seed: u32, keys: u64) -> Vec<f64> {
    let mut got = vec![0u32; n];
    for i in 0..keys {
        let p = key(i ^ u64::from(seed) << 32).ring_point();
        got[ring.primary(p).expect("weighted")] += 1;
    }
    got.iter().map(|&c| f64::from(c) / keys as f64).collect()
}

fn shuffle<T>(v: &mut [T], mut seed: u64) {
    for i in (1..v.len()).rev() {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        v.swap(i, (seed >> 33) as usize % (i + 1));
    }
}
