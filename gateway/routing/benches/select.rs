//! Selection cost with a realistic overlay: 1,000,000 pinned sessions, keys visited in hash
//! (i.e. random) order. `cargo bench -p berth-routing` runs in about a minute.
use berth_routing::*;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use std::sync::Arc;
use std::time::Duration;

const PINNED: u64 = 1_000_000;

fn key(i: u64) -> SessionKey {
    SessionKey::new(b"bench", &i.to_le_bytes())
}

fn backends(n: usize) -> Vec<BackendSpec> {
    (0..n)
        .map(|i| BackendSpec::new(&format!("10.0.{}.{}:8080", i / 256, i % 256), 1))
        .collect()
}

/// A router over `n` backends with `PINNED` sessions pinned. The bound has 10% headroom so
/// that no shard (±0.8% around the mean at 64 shards) evicts while populating.
fn populated(n: usize) -> (Router, Vec<SessionKey>) {
    let overlay = Arc::new(Overlay::new(OverlayConfig {
        max_entries: PINNED as usize * 11 / 10,
        idle_ttl: 30 * 60 * 1000,
    }));
    let router = Router::new(
        RouterConfig::default(),
        &backends(n),
        overlay,
        &Interner::default(),
    );
    let keys: Vec<SessionKey> = (0..PINNED).map(key).collect();
    for k in &keys {
        router.select(*k, 0);
    }
    (router, keys)
}

fn select(c: &mut Criterion) {
    let mut g = c.benchmark_group("select");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for n in [10usize, 1000] {
        let (router, keys) = populated(n);
        assert_eq!(router.overlay().len(), PINNED as usize);
        g.bench_with_input(BenchmarkId::new("sticky_hit_1M", n), &n, |b, _| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % keys.len();
                black_box(router.select(keys[i], 1000))
            })
        });
        g.bench_with_input(BenchmarkId::new("unpinned", n), &n, |b, _| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % keys.len();
                black_box(router.select_unpinned(keys[i].ring_point(), false))
            })
        });
        // Fill the overlay to its bound so every miss also evicts one pin: the steady state of
        // a busy gateway (~1.1M pins). Fresh keys are hashed inline (~10 ns of the figure).
        let mut i = PINNED;
        while router.overlay().stats().evicted == 0
            || router.overlay().len() < PINNED as usize * 11 / 10 - 200
        {
            i += 1;
            router.select(key(i), 1000);
        }
        g.bench_with_input(BenchmarkId::new("miss_pin_evict_full", n), &n, |b, _| {
            b.iter(|| {
                i += 1;
                black_box(router.select(key(i), 2000))
            })
        });
    }
    g.finish();
}

fn ring(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let points: Vec<u32> = (0..1 << 16).map(|i| key(i).ring_point()).collect();
    for n in [10usize, 1000] {
        let spec = backends(n);
        let pairs: Vec<(&str, u32)> = spec.iter().map(|b| (b.name.as_str(), b.weight)).collect();
        let ring = Ring::new(Hashing::Ketama, 160, &pairs);
        g.bench_with_input(BenchmarkId::new("primary", n), &n, |b, _| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & (points.len() - 1);
                black_box(ring.primary(points[i]))
            })
        });
        g.bench_with_input(BenchmarkId::new("walk_first_two", n), &n, |b, _| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & (points.len() - 1);
                let mut w = ring.walk(points[i]);
                black_box((w.next(), w.next()))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, select, ring);
criterion_main!(benches);
