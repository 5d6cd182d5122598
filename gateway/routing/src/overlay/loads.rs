//! Active sessions per backend, readable without locks: what bounded-load placement, hard caps,
//! rebalancing and the `berth_sessions_active` gauge read.
//!
//! Each shard keeps its own exact counts under its lock and mirrors every change here with one
//! atomic add, so a backend's count here is always the sum of the shards' counts (each shard's
//! contribution is exact at every instant; a reader sees each shard at some instant).
use crate::BackendId;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;

/// Ids per lazily allocated chunk.
const CHUNK: usize = 4096;

/// Lock-free per-backend counters indexed by [`BackendId`], plus their total.
#[derive(Debug)]
pub struct Loads {
    chunks: Box<[OnceLock<Box<[AtomicU32]>>]>,
    total: AtomicU64,
}

impl Default for Loads {
    fn default() -> Self {
        Loads {
            chunks: (0..crate::MAX_BACKEND_IDS.div_ceil(CHUNK as u32))
                .map(|_| OnceLock::new())
                .collect(),
            total: AtomicU64::new(0),
        }
    }
}

impl Loads {
    /// Active sessions on `id`.
    #[inline]
    pub fn get(&self, id: BackendId) -> u32 {
        let i = id.0 as usize;
        self.chunks
            .get(i / CHUNK)
            .and_then(OnceLock::get)
            .map_or(0, |c| c[i % CHUNK].load(Ordering::Relaxed))
    }

    /// Active sessions on all backends.
    #[inline]
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Adds `delta` to `id` (the shards never take a backend below zero).
    pub(super) fn add(&self, id: u32, delta: i32) {
        let i = id as usize;
        let Some(chunk) = self.chunks.get(i / CHUNK) else {
            return;
        };
        let c = chunk.get_or_init(|| (0..CHUNK).map(|_| AtomicU32::new(0)).collect());
        c[i % CHUNK].fetch_add(delta as u32, Ordering::Relaxed);
        self.total
            .fetch_add(i64::from(delta) as u64, Ordering::Relaxed);
    }

    /// Takes one from `id` unless it is at zero; true when it took one.
    pub(super) fn take_one(&self, id: BackendId) -> bool {
        let i = id.0 as usize;
        let Some(c) = self.chunks.get(i / CHUNK).and_then(OnceLock::get) else {
            return false;
        };
        let took = c[i % CHUNK]
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1))
            .is_ok();
        if took {
            self.total.fetch_sub(1, Ordering::Relaxed);
        }
        took
    }

    /// Sets every counter and the total to zero (chunks stay allocated).
    pub(super) fn clear(&self) {
        for c in self.chunks.iter().filter_map(OnceLock::get) {
            for a in c.iter() {
                a.store(0, Ordering::Relaxed);
            }
        }
        self.total.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_id_and_total() {
        let l = Loads::default();
        assert_eq!(l.get(BackendId(5)), 0);
        l.add(5, 3);
        l.add(70_000, 2);
        l.add(5, -1);
        assert_eq!(l.get(BackendId(5)), 2);
        assert_eq!(l.get(BackendId(70_000)), 2);
        assert_eq!(l.get(BackendId(6)), 0);
        assert_eq!(l.total(), 4);
        // Ids beyond the limit are ignored rather than panicking.
        l.add(u32::MAX, 1);
        assert_eq!(l.get(BackendId(u32::MAX)), 0);
        assert_eq!(l.total(), 4);
    }

    #[test]
    fn take_one_stops_at_zero_and_clear_resets() {
        let l = Loads::default();
        assert!(!l.take_one(BackendId(3)), "nothing allocated yet");
        l.add(3, 2);
        l.add(9_000, 1);
        assert!(l.take_one(BackendId(3)));
        assert!(l.take_one(BackendId(3)));
        assert!(!l.take_one(BackendId(3)));
        assert_eq!((l.get(BackendId(3)), l.total()), (0, 1));
        l.clear();
        assert_eq!((l.get(BackendId(9_000)), l.total()), (0, 0));
        l.add(9_000, 1);
        assert_eq!((l.get(BackendId(9_000)), l.total()), (1, 1));
    }
}
