//! The sticky overlay: `SessionKey → (backend, backup)` with idle TTL, a bound on entries and
//! exact per-backend counts.
//!
//! Sharded (up to 64 shards chosen by key bits 64.., each behind a `parking_lot::Mutex`), so
//! `get` and `pin` never take a global lock. Each shard keeps its pins inline in an
//! open-addressing table of 32-byte slots indexed by key bits 0..64 (~46 bytes per pin when
//! full, one cache miss per hit); see `table.rs`.
//!
//! Times are kept in whole seconds (`now / 1000`), so an idle pin expires once
//! `now_s - last_seen_s >= ceil(idle_ttl / 1000)`: within a second of the configured TTL.
use crate::{BackendId, Millis, SessionKey};
use parking_lot::Mutex;
use std::hash::{BuildHasher, RandomState};

mod shard;
mod snapshot;
mod table;
#[cfg(test)]
mod tests;

use shard::Shard;
pub use snapshot::{Change, Imported, PinRecord, Taken, Wake};

/// Overlay limits.
#[derive(Debug, Clone, Copy)]
pub struct OverlayConfig {
    /// Maximum number of pinned sessions; beyond it the least recently used are evicted
    /// (approximately, by sampling; counted). The bound is enforced per shard as
    /// `ceil(max_entries / shards)`, so [`Overlay::len`] stays at or below
    /// [`Overlay::capacity`], which exceeds `max_entries` by less than the shard count (≤ 64).
    /// A value of 0 is treated as 1.
    pub max_entries: usize,
    /// A pin unused for this long expires (counted). Second granularity: see the module docs.
    /// 0 disables idle expiry.
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

/// Where a session is pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pin {
    /// The backend serving the session.
    pub backend: BackendId,
    /// The backend it fails over to first (told to `backend` so the app can replicate state).
    pub backup: Option<BackendId>,
}

/// What `pin` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinOutcome {
    /// The key had no live pin (absent or idle-expired): a new session.
    Created,
    /// The key was pinned to another backend, now moved.
    Changed {
        /// The backend it was pinned to.
        previous: BackendId,
    },
    /// Already pinned to this backend (its backup and last-seen time were updated).
    Unchanged,
}

/// What [`Overlay::get_or_pin`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The key had a live pin (now refreshed); nothing else changed.
    Found(Pin),
    /// The key had no live pin (absent or idle-expired): it is now pinned where `place` chose,
    /// a new session.
    Pinned(Pin),
    /// The key had no live pin and `place` chose nothing: nothing is pinned (an idle-expired
    /// pin was removed).
    Unplaced,
}

/// One pin as seen by admin paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinInfo {
    /// The pinned backend.
    pub backend: BackendId,
    /// Its backup, if any.
    pub backup: Option<BackendId>,
    /// When the session was first pinned (second granularity, in caller-clock milliseconds).
    pub created: Millis,
    /// When it was last used (second granularity, in caller-clock milliseconds).
    pub last_seen: Millis,
}

/// Monotonic counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OverlayStats {
    /// Pins created (new sessions, including re-creation after expiry).
    pub created: u64,
    /// Pins dropped because they were idle for the TTL (on access, sweep or eviction).
    pub expired: u64,
    /// Live pins dropped to make room (the overlay was full).
    pub evicted: u64,
}

/// A shard on its own cache lines, so neighbouring locks do not false-share.
#[derive(Debug)]
#[repr(align(128))]
struct Padded(Mutex<Shard>);

/// `SessionKey → (BackendId, backup)` with idle TTL, bounded size and exact per-backend counts.
#[derive(Debug)]
pub struct Overlay {
    shards: Box<[Padded]>,
    /// `shards.len() - 1`; the shard count is a power of two.
    mask: usize,
    shard_cap: usize,
    ttl_s: u32,
    cfg: OverlayConfig,
}

/// A random odd multiplier for shard `i`'s table (std's per-process random SipHash keys).
fn random_mult(i: usize) -> u64 {
    RandomState::new().hash_one(i) | 1
}

/// Most shards an overlay uses.
const MAX_SHARDS: usize = 64;
/// Small overlays get fewer shards (about one per this many entries) so that their bound is
/// close to `max_entries` and eviction sees the whole overlay.
const ENTRIES_PER_SHARD_MIN: usize = 256;

impl Overlay {
    /// An empty overlay. The shard count is a power of two: 1 below 512 entries, about one per
    /// 256 entries above, and 64 from 8,448 entries on.
    pub fn new(cfg: OverlayConfig) -> Self {
        let max = cfg.max_entries.max(1);
        let n = (max / ENTRIES_PER_SHARD_MIN)
            .next_power_of_two()
            .clamp(1, MAX_SHARDS);
        let shard_cap = max.div_ceil(n);
        let shards = (0..n)
            .map(|i| Padded(Mutex::new(Shard::new(shard_cap, random_mult(i)))))
            .collect();
        Overlay {
            shards,
            mask: n - 1,
            shard_cap,
            ttl_s: u32::try_from(cfg.idle_ttl.div_ceil(1000)).unwrap_or(u32::MAX),
            cfg,
        }
    }

    /// The configuration it was built with.
    pub fn config(&self) -> OverlayConfig {
        self.cfg
    }

    /// The most pins it holds: shards × `ceil(max_entries / shards)`.
    pub fn capacity(&self) -> usize {
        self.shard_cap * self.shards.len()
    }

    fn shard(&self, key: SessionKey) -> &Mutex<Shard> {
        // Bits 64.. pick the shard; the shard's table uses bits 0..64.
        &self.shards[(key.0 >> 64) as usize & self.mask].0
    }

    fn secs(now: Millis) -> u32 {
        u32::try_from(now / 1000).unwrap_or(u32::MAX)
    }

    /// The pin of `key`, refreshing last-seen; an idle-expired pin counts as absent (and is
    /// removed, counted as expired).
    #[inline]
    pub fn get(&self, key: SessionKey, now: Millis) -> Option<Pin> {
        self.shard(key)
            .lock()
            .get(key.0, Self::secs(now), self.ttl_s)
    }

    /// [`Overlay::get`], and when the key has no live pin, pin it where `place` chooses (when it
    /// chooses), all under one lock acquisition and one probe: the miss path of selection.
    /// `place` runs under the shard's lock, so it must not call back into this overlay (it
    /// would deadlock); a ring walk is fine. A new pin is counted as created, like
    /// [`Overlay::pin`] of an absent key.
    #[inline]
    pub fn get_or_pin(
        &self,
        key: SessionKey,
        now: Millis,
        place: impl FnOnce() -> Option<Pin>,
    ) -> Lookup {
        self.shard(key)
            .lock()
            .get_or_pin(key.0, Self::secs(now), self.ttl_s, place)
    }

    /// Pin (or re-pin) `key` to `backend` with `backup`, refreshing last-seen. A new key in a
    /// full shard evicts the least recently seen of a few pins sampled near it.
    pub fn pin(
        &self,
        key: SessionKey,
        backend: BackendId,
        backup: Option<BackendId>,
        now: Millis,
    ) -> PinOutcome {
        let to = Pin { backend, backup };
        self.shard(key)
            .lock()
            .pin(key.0, to, Self::secs(now), self.ttl_s)
    }

    /// Drops the pin of `key` (expired or not); returns the backend it was pinned to.
    /// Not counted in [`OverlayStats`].
    pub fn remove(&self, key: SessionKey) -> Option<BackendId> {
        self.shard(key).lock().remove(key.0)
    }

    /// The pin of `key` without refreshing it. May show a pin that is idle-expired but not yet
    /// swept (compare `last_seen` with the TTL).
    pub fn info(&self, key: SessionKey) -> Option<PinInfo> {
        self.shard(key).lock().info(key.0)
    }

    /// Sessions pinned to `backend` (exact: each shard's count is kept under its lock; the sum
    /// visits shards one at a time). Includes idle-expired pins not yet swept.
    pub fn count(&self, backend: BackendId) -> u64 {
        self.shards
            .iter()
            .map(|s| u64::from(s.0.lock().count(backend)))
            .sum()
    }

    /// Sessions per backend, indexed by `BackendId.0` (one pass over the shards; for metrics).
    pub fn counts(&self) -> Vec<u64> {
        let mut out = Vec::new();
        for s in self.shards.iter() {
            s.0.lock().add_counts(&mut out);
        }
        out
    }

    /// Number of pins (including idle-expired ones not yet swept).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.lock().len()).sum()
    }

    /// True when nothing is pinned.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Remove every idle-expired pin; returns how many. Locks one shard at a time.
    pub fn sweep(&self, now: Millis) -> usize {
        let now_s = Self::secs(now);
        self.shards
            .iter()
            .map(|s| s.0.lock().sweep(now_s, self.ttl_s))
            .sum()
    }

    /// Counters since start.
    pub fn stats(&self) -> OverlayStats {
        let mut total = OverlayStats::default();
        for s in self.shards.iter() {
            let st = s.0.lock().stats;
            total.created += st.created;
            total.expired += st.expired;
            total.evicted += st.evicted;
        }
        total
    }

    /// Up to `limit` keys pinned to `backend` (for migrating sessions off it). Shards without
    /// such pins are skipped from their counts; others are scanned under their lock.
    pub fn keys_on(&self, backend: BackendId, limit: usize) -> Vec<SessionKey> {
        let mut out = Vec::new();
        for s in self.shards.iter() {
            if out.len() >= limit {
                break;
            }
            s.0.lock().keys_on(backend, limit, &mut out);
        }
        out
    }

    /// Drops every pin on `backend` (e.g. after it left the upstream for good); returns how
    /// many. Not counted in [`OverlayStats`].
    pub fn remove_backend(&self, backend: BackendId) -> usize {
        self.shards
            .iter()
            .map(|s| s.0.lock().remove_backend(backend))
            .sum()
    }

    /// Bytes allocated for pins (tables, counts; capacity, not length), for metrics and sizing.
    /// Excludes the fixed per-shard overhead.
    pub fn memory_bytes(&self) -> usize {
        self.shards.iter().map(|s| s.0.lock().memory_bytes()).sum()
    }

    /// Number of shards (a power of two, 1..=64).
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    #[cfg(test)]
    fn check_invariants(&self) {
        for s in self.shards.iter() {
            s.0.lock().check_invariants();
        }
    }
}
