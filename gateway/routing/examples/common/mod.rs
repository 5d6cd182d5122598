//! The keys and backends of the routing benchmarks (`benches/select.rs`) and of the examples
//! that count the same operations under callgrind (`place_cost`, `miss_cost`): one definition,
//! so that they measure the same thing.
use berth_routing::{BackendSpec, SessionKey};

/// Session key number `i`.
pub fn key(i: u64) -> SessionKey {
    SessionKey::new(b"bench", &i.to_le_bytes())
}

/// `n` backends of weight 1, named by address (10.0.x.y:8080).
pub fn backends(n: usize) -> Vec<BackendSpec> {
    (0..n)
        .map(|i| BackendSpec::new(&format!("10.0.{}.{}:8080", i / 256, i % 256), 1))
        .collect()
}
