//! Instructions per sticky hit and per miss (place + pin + evict) on a full 1.1M-pin overlay at
//! 1,000 backends — the `select/sticky_hit_1M` and `select/miss_pin_evict_full` benchmarks,
//! counted by `valgrind --tool=callgrind` instead of timed:
//!
//! ```text
//! cargo build --release -p berth-routing --example miss_cost
//! for mode in hit miss; do for n in 0 200000; do
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/miss_cost $mode $n 2>&1 | grep 'Collected'
//! done; done
//! ```
//! (instructions at n = 200,000 minus at n = 0) / 200,000 = instructions per operation.
mod common;

use berth_routing::*;
use common::{backends, key};
use std::hint::black_box;
use std::sync::Arc;

const PINNED: u64 = 1_000_000;

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "miss".into());
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let specs = backends(1000);
    let overlay = Arc::new(Overlay::new(OverlayConfig {
        max_entries: PINNED as usize * 11 / 10,
        idle_ttl: 30 * 60 * 1000,
        ..OverlayConfig::default()
    }));
    let router = Router::new(
        RouterConfig::default(),
        &specs,
        overlay,
        &Interner::default(),
    );
    let mut i = 0;
    while router.overlay().stats().evicted == 0 {
        i += 1;
        router.select(key(i), 1000).expect("placed");
    }
    match mode.as_str() {
        "hit" => {
            for j in 0..n {
                black_box(router.select(key(i - (j % PINNED)), 2000).ok());
            }
        }
        _ => {
            for _ in 0..n {
                i += 1;
                black_box(router.select(key(i), 2000).ok());
            }
        }
    }
    println!("{mode} {n}: {} pins", router.overlay().len());
}
