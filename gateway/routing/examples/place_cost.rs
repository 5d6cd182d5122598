//! Instructions per placement, for `valgrind --tool=callgrind` (which counts instructions, not
//! seconds, so the figure does not depend on what else the machine is doing):
//!
//! ```text
//! cargo build --release -p berth-routing --example place_cost
//! for mode in primary walk2 plain bounded; do for n in 0 200000; do
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/place_cost $mode $n 2>&1 | grep 'Collected'
//! done; done
//! ```
//! (instructions at n = 200,000 minus at n = 0) / 200,000 = instructions per operation. The
//! set-up (1,000 backends, 100,000 active sessions placed with the same policy) is identical
//! for both runs of a mode. Modes: `primary` (`Ring::primary`), `walk2` (the first two ring
//! nodes: primary + backup), `plain` (`select_unpinned(point, true)` without a bound),
//! `bounded` (the same with ε = 0.25).
mod common;

use berth_routing::*;
use common::{backends, key};
use std::hint::black_box;
use std::sync::Arc;

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "bounded".into());
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let specs = backends(1000);
    let cfg = RouterConfig {
        bound_milli: (mode == "bounded").then_some(250),
        ..RouterConfig::default()
    };
    let overlay = Arc::new(Overlay::new(OverlayConfig::default()));
    let router = Router::new(cfg, &specs, overlay, &Interner::default());
    for i in 0..100_000 {
        router.select(key(1 << 40 | i), 0).expect("placed");
    }
    let points: Vec<u32> = (0..1u64 << 16).map(|i| key(i).ring_point()).collect();
    let mut acc = 0usize;
    for i in 0..n {
        let p = points[(i as usize) & (points.len() - 1)];
        acc += match mode.as_str() {
            "primary" => router.ring().primary(p).unwrap_or(0),
            "walk2" => {
                let mut w = router.ring().walk(p);
                w.next().unwrap_or(0) + w.next().unwrap_or(0)
            }
            _ => router
                .select_unpinned(p, true)
                .map_or(0, |d| d.backend + d.backup.unwrap_or(0)),
        };
    }
    black_box(acc);
}
