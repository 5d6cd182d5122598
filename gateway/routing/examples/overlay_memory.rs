//! Bytes per pinned session at 1,000,000 pins, two ways: the overlay's own allocation count
//! (`Overlay::memory_bytes`) and the process RSS delta (Linux `/proc/self/statm`).
//!
//! `cargo run --release -p berth-routing --example overlay_memory [entries]`
use berth_routing::{BackendId, Overlay, OverlayConfig, SessionKey};

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let resident: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(resident * 4096)
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let before = rss_bytes();
    let overlay = Overlay::new(OverlayConfig {
        max_entries: n,
        idle_ttl: 30 * 60 * 1000,
        ..OverlayConfig::default()
    });
    for i in 0..n as u64 {
        let key = SessionKey::new(b"mem", &i.to_le_bytes());
        let backend = BackendId((i % 100) as u32);
        overlay.pin(key, backend, Some(BackendId(((i + 1) % 100) as u32)), 0);
    }
    let after = rss_bytes();
    let len = overlay.len();
    println!(
        "pinned sessions:  {len} (max {n}, {} shards)",
        overlay.shards()
    );
    println!(
        "allocated:        {} bytes = {:.1} bytes/session",
        overlay.memory_bytes(),
        overlay.memory_bytes() as f64 / len as f64
    );
    if let (Some(b), Some(a)) = (before, after) {
        let delta = a.saturating_sub(b);
        println!(
            "RSS delta:        {delta} bytes = {:.1} bytes/session",
            delta as f64 / len as f64
        );
    }
}
