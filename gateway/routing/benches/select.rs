//! Selection cost with a realistic overlay: 1,000,000 pinned sessions, keys visited in hash
//! (i.e. random) order. `cargo bench -p berth-routing` runs in about two minutes.
//!
//! `select/sticky_hit_10k` is the same hit with a cache-resident overlay (the algorithmic
//! cost); `floor/*` is what one random access to a 64 MB array costs on this machine, the
//! physical lower bound of a hit in a 1M-session overlay (which does at least one such access).
//! For transparent huge pages (THP in `madvise` mode), run with
//! `GLIBC_TUNABLES=glibc.malloc.hugetlb=1`: glibc then madvises its large allocations.
#[path = "../examples/common/mod.rs"]
mod common;

use berth_routing::*;
use common::{backends, key};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;

const PINNED: u64 = 1_000_000;

/// A router over `n` backends with `pinned` sessions pinned and a bound of `max_entries`, which
/// needs headroom so that no shard evicts while populating (10% at 1M: a shard is within ±0.8%
/// of the mean at 64 shards).
fn populated(n: usize, pinned: u64, max_entries: usize) -> (Router, Vec<SessionKey>) {
    let overlay = Arc::new(Overlay::new(OverlayConfig {
        max_entries,
        idle_ttl: 30 * 60 * 1000,
        ..OverlayConfig::default()
    }));
    let router = Router::new(
        RouterConfig::default(),
        &backends(n),
        overlay,
        &Interner::default(),
    );
    let keys: Vec<SessionKey> = (0..pinned).map(key).collect();
    for k in &keys {
        router.select(*k, 0).expect("placed");
    }
    assert_eq!(router.overlay().len(), pinned as usize);
    (router, keys)
}

fn select(c: &mut Criterion) {
    let mut g = c.benchmark_group("select");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for n in [10usize, 1000] {
        let (router, keys) = populated(n, 10_000, 20_000);
        g.bench_with_input(BenchmarkId::new("sticky_hit_10k", n), &n, |b, _| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % keys.len();
                black_box(router.select(keys[i], 1000))
            })
        });
        drop((router, keys));
        let (router, keys) = populated(n, PINNED, PINNED as usize * 11 / 10);
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
            router.select(key(i), 1000).expect("placed");
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

/// The memory floor: one random access into 64 MB (the size of a 1M-session overlay).
/// `chase_64MB` is a dependent chain (pure latency: cache miss + TLB walk); `locked_read_64MB`
/// takes an uncontended `parking_lot` mutex then reads a random slot, like a hit does (the
/// locked instruction keeps consecutive accesses from overlapping).
fn floor(c: &mut Criterion) {
    let mut g = c.benchmark_group("floor");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    const WORDS: usize = 64 << 20 >> 3;
    // Sattolo's shuffle: one cycle through every word.
    let mut next: Vec<u64> = (0..WORDS as u64).collect();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in (1..WORDS).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        next.swap(i, (x % i as u64) as usize);
    }
    g.bench_function("chase_64MB", |b| {
        let mut p = 0usize;
        b.iter(|| {
            p = next[p] as usize;
            black_box(p)
        })
    });
    let lock = Mutex::new(());
    g.bench_function("locked_read_64MB", |b| {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        b.iter(|| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let _g = lock.lock();
            black_box(next[(x % WORDS as u64) as usize])
        })
    });
    g.finish();
}

/// Placement of a new session at 1,000 backends holding 100,000 active sessions: the plain
/// ring walk (primary + backup) against the same walk under the bounded-load rule (ε = 0.25;
/// each candidate's active count read lock-free and compared with its cap). Nothing is pinned,
/// so the loads stay put while measuring.
fn place(c: &mut Criterion) {
    let mut g = c.benchmark_group("place");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let n = 1000;
    let points: Vec<u32> = (0..1 << 16).map(|i| key(i).ring_point()).collect();
    for (name, bound_milli) in [("plain", None), ("bounded", Some(250))] {
        let overlay = Arc::new(Overlay::new(OverlayConfig::default()));
        let cfg = RouterConfig {
            bound_milli,
            ..RouterConfig::default()
        };
        let router = Router::new(cfg, &backends(n), overlay, &Interner::default());
        for i in 0..100_000 {
            router.select(key(1 << 40 | i), 0).expect("placed");
        }
        g.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & (points.len() - 1);
                black_box(router.select_unpinned(points[i], true))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, select, ring, place, floor);
criterion_main!(benches);
