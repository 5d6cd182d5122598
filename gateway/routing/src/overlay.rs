//! The sticky overlay. SKELETON — the routing helper replaces the bodies.
use crate::{BackendId, Millis, SessionKey};

/// Overlay limits.
#[derive(Debug, Clone, Copy)]
pub struct OverlayConfig {
    /// Maximum number of pinned sessions; beyond it the least recently used are evicted (counted).
    pub max_entries: usize,
    /// A pin unused for this long expires (counted).
    pub idle_ttl: Millis,
}

impl Default for OverlayConfig {
    fn default() -> Self {
        OverlayConfig {
            max_entries: 1_000_000,
            idle_ttl: 30 * 60 * 1000,
        }
    }
}

/// What `pin` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinOutcome {
    Created,
    Changed { previous: BackendId },
    Unchanged,
}

/// One pin as seen by admin paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinInfo {
    pub backend: BackendId,
    pub created: Millis,
    pub last_seen: Millis,
}

/// Monotonic counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OverlayStats {
    pub created: u64,
    pub expired: u64,
    pub evicted: u64,
}

/// `SessionKey → BackendId` with idle TTL, bounded size and exact per-backend counts.
#[derive(Debug)]
pub struct Overlay {
    _private: (),
}

impl Overlay {
    pub fn new(_cfg: OverlayConfig) -> Self {
        unimplemented!("routing helper")
    }
    /// The pinned backend, refreshing last-seen; an idle-expired pin counts as absent (and is
    /// removed, counted as expired).
    pub fn get(&self, _key: SessionKey, _now: Millis) -> Option<BackendId> {
        unimplemented!()
    }
    /// Pin (or re-pin) `key` to `backend`.
    pub fn pin(&self, _key: SessionKey, _backend: BackendId, _now: Millis) -> PinOutcome {
        unimplemented!()
    }
    pub fn remove(&self, _key: SessionKey) -> Option<BackendId> {
        unimplemented!()
    }
    pub fn info(&self, _key: SessionKey) -> Option<PinInfo> {
        unimplemented!()
    }
    /// Sessions pinned to `backend` (exact).
    pub fn count(&self, _backend: BackendId) -> u64 {
        unimplemented!()
    }
    pub fn len(&self) -> usize {
        unimplemented!()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Remove every idle-expired pin; returns how many.
    pub fn sweep(&self, _now: Millis) -> usize {
        unimplemented!()
    }
    pub fn stats(&self) -> OverlayStats {
        unimplemented!()
    }
}
