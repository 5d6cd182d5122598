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
use std::sync::{Arc, OnceLock};

mod fresh;
mod loads;
mod shard;
mod snapshot;
mod table;
#[cfg(test)]
mod tests;

pub use fresh::PENDING_SPAN;
pub use loads::Loads;
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
    /// A session is *active* while a request of it is in flight or for this long after its
    /// last use; active sessions are what placement, caps and rebalancing count. Second
    /// granularity; at least one second.
    pub active_window: Millis,
}

impl Default for OverlayConfig {
    fn default() -> Self {
        OverlayConfig {
            max_entries: 1_000_000,
            idle_ttl: 30 * 60 * 1000,
            active_window: 5 * 60 * 1000,
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
    /// Its requests being served now (255 = at least 255, no longer tracked).
    pub in_flight: u32,
    /// Logarithmic access frequency, 0–255 (see the overlay's module docs: ~10 after 100
    /// requests, ~18 after 1,000; decays by one per idle minute).
    pub frequency: u32,
}

/// Monotonic counters since start. Each is a plain integer kept under its shard's lock, which
/// the operation holds anyway: counting costs no atomic operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OverlayStats {
    /// Pins created (new sessions, including re-creation after expiry).
    pub created: u64,
    /// Pins dropped because they were idle for the TTL (on access, sweep or eviction).
    pub expired: u64,
    /// Live pins dropped to make room (the overlay was full).
    pub evicted: u64,
    /// Lookups: [`Overlay::get`] and [`Overlay::get_or_pin`] calls.
    pub gets: u64,
    /// Pins written: [`Overlay::pin`] calls and [`Overlay::get_or_pin`] calls that placed one.
    pub pins: u64,
    /// [`Overlay::remove`] calls.
    pub removes: u64,
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
    window_s: u32,
    loads: Arc<Loads>,
    /// Keyless placements not yet come back (allocated by the first one).
    fresh: OnceLock<fresh::Fresh>,
    /// How long they count (see [`Overlay::with_pending_span`]).
    pending_span: Millis,
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
        let loads = Arc::new(Loads::default());
        let shards = (0..n)
            .map(|i| {
                let shard = Shard::new(shard_cap, random_mult(i), loads.clone());
                Padded(Mutex::new(shard))
            })
            .collect();
        Overlay {
            shards,
            mask: n - 1,
            shard_cap,
            ttl_s: u32::try_from(cfg.idle_ttl.div_ceil(1000)).unwrap_or(u32::MAX),
            window_s: u32::try_from(cfg.active_window.div_ceil(1000))
                .unwrap_or(u32::MAX)
                .max(1),
            loads,
            fresh: OnceLock::new(),
            pending_span: fresh::PENDING_SPAN,
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
            .get(key.0, Self::secs(now), self.ttl_s, false)
    }

    /// [`Overlay::get`] for a request that is about to be served: the session also counts one
    /// more request in flight (until [`Overlay::release`]) and one more use in its frequency.
    #[inline]
    pub fn acquire(&self, key: SessionKey, now: Millis) -> Option<Pin> {
        self.shard(key)
            .lock()
            .get(key.0, Self::secs(now), self.ttl_s, true)
    }

    /// Ends a request of `key` started by an acquiring lookup: one less in flight, last-seen
    /// refreshed. Returns `false` when `key` is not pinned. (If the pin was removed and
    /// re-created while the request ran, the new pin's count may drop early: in-flight counts
    /// are exact only while pins stay.)
    pub fn release(&self, key: SessionKey, now: Millis) -> bool {
        self.shard(key).lock().release(key.0, Self::secs(now))
    }

    /// [`Overlay::get`], and when the key has no live pin, pin it where `place` chooses (when it
    /// chooses), all under one lock acquisition and one probe: the miss path of selection.
    /// `place` runs under the shard's lock, so it must not call back into this overlay (it
    /// would deadlock); a ring walk is fine. A new pin is counted as created, like
    /// [`Overlay::pin`] of an absent key. With `acquire`, the found or new pin also counts a
    /// request in flight, as [`Overlay::acquire`].
    #[inline]
    pub fn get_or_pin(
        &self,
        key: SessionKey,
        now: Millis,
        acquire: bool,
        place: impl FnOnce() -> Option<Pin>,
    ) -> Lookup {
        self.shard(key)
            .lock()
            .get_or_pin(key.0, Self::secs(now), self.ttl_s, acquire, place)
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
    /// Counted in [`OverlayStats::removes`], not as expired or evicted.
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
            s.0.lock().add_counts(&mut out, false);
        }
        out
    }

    /// Active sessions per backend (see [`OverlayConfig::active_window`]), indexed by
    /// `BackendId.0`; one pass over the shards, for metrics.
    pub fn active_counts(&self) -> Vec<u64> {
        let mut out = Vec::new();
        for s in self.shards.iter() {
            s.0.lock().add_counts(&mut out, true);
        }
        out
    }

    /// Active sessions on `backend`, lock-free (what placement reads). Lags a session going
    /// idle by up to one [`Overlay::sweep`].
    #[inline]
    pub fn active(&self, backend: BackendId) -> u32 {
        self.loads.get(backend)
    }

    /// The lock-free active-session counters (per backend and total).
    pub fn loads(&self) -> &Loads {
        &self.loads
    }

    /// The same overlay with keyless placements counting as pending for `span` to `2·span`
    /// (default [`PENDING_SPAN`], one second; a knob for experiments such as `make sim`'s
    /// `--pending-span`). At least 1 ms.
    pub fn with_pending_span(mut self, span: Millis) -> Self {
        self.pending_span = span.max(1);
        self
    }

    /// New sessions placed on `backend` without a key ([`crate::Router::select_keyless`])
    /// that have not come back yet, as of the last keyless placement or return: they count in
    /// keyless placement's load, not in [`Overlay::active`]. A placement stops counting when its
    /// session comes back (and is pinned) or after one to two [`PENDING_SPAN`]s.
    #[inline]
    pub fn pending(&self, backend: BackendId) -> u32 {
        self.fresh.get().map_or(0, |f| f.get(backend))
    }

    /// Keyless placements on `backend` over the last one to two minutes (60 pending spans),
    /// come back or not, as of the last keyless placement or return: what breaks ties between
    /// backends of equal keyless placement load.
    #[inline]
    pub fn recent_placements(&self, backend: BackendId) -> u32 {
        self.fresh.get().map_or(0, |f| f.recent(backend))
    }

    /// [`Overlay::pending`] over all backends.
    pub fn pending_total(&self) -> u64 {
        self.fresh.get().map_or(0, fresh::Fresh::total)
    }

    /// Expires pending placements as of `now` (keyless placement does it before reading
    /// [`Overlay::pending`]; other readers may, to see the counts as of `now`).
    #[inline]
    pub fn roll_pending(&self, now: Millis) {
        if let Some(f) = self.fresh.get() {
            f.roll(now);
        }
    }

    /// A keyless placement on `backend` at `now` (see [`Overlay::pending`]).
    pub(crate) fn placed_pending(&self, backend: BackendId, now: Millis) {
        self.fresh
            .get_or_init(|| fresh::Fresh::new(self.pending_span, now))
            .placed(backend, now);
    }

    /// A session placed without a key on `backend` came back (its first request with a key).
    #[inline]
    pub(crate) fn returned_pending(&self, backend: BackendId, now: Millis) {
        if let Some(f) = self.fresh.get() {
            f.returned(backend, now);
        }
    }

    /// Number of pins (including idle-expired ones not yet swept).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.lock().len()).sum()
    }

    /// True when nothing is pinned.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Remove every idle-expired pin and recount active sessions against the window ending
    /// at `now`; returns how many pins expired. Locks one shard at a time.
    pub fn sweep(&self, now: Millis) -> usize {
        let now_s = Self::secs(now);
        // Active = seen within the last `window_s` whole seconds: last_seen > now - window.
        let cutoff = now_s.saturating_add(1).saturating_sub(self.window_s);
        self.shards
            .iter()
            .map(|s| {
                let mut s = s.0.lock();
                let n = s.sweep(now_s, self.ttl_s);
                s.recount(cutoff);
                n
            })
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
            total.gets += st.gets;
            total.pins += st.pins;
            total.removes += st.removes;
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

    /// Every key used at or after `since` (second granularity: the whole second of `since`
    /// counts) or with a request in flight: what a shared registry renews the TTL of in one
    /// batch. Visits every shard under its lock, one at a time (a scan of the tables: run it
    /// every few seconds at most, not per request).
    pub fn seen_since(&self, since: Millis) -> Vec<SessionKey> {
        let since_s = Self::secs(since);
        let mut out = Vec::new();
        for s in self.shards.iter() {
            s.0.lock().seen_since(since_s, &mut out);
        }
        out
    }

    /// Up to `limit` keys pinned to `backend` that are idle: no request in flight and unused
    /// for at least `idle_for` (whole seconds, rounded up) at `now`. Least recently used first
    /// within each shard; shards are visited in order.
    pub fn idle_keys_on(
        &self,
        backend: BackendId,
        idle_for: Millis,
        now: Millis,
        limit: usize,
    ) -> Vec<SessionKey> {
        self.idle_keys(backend, idle_for, now, false, limit)
    }

    /// [`Overlay::idle_keys_on`] restricted to sessions that still count as active (used
    /// within the active window as of the last [`Overlay::sweep`]): the idle sessions whose
    /// move lowers `backend`'s active count, which is what rebalancing needs.
    pub fn idle_active_keys_on(
        &self,
        backend: BackendId,
        idle_for: Millis,
        now: Millis,
        limit: usize,
    ) -> Vec<SessionKey> {
        self.idle_keys(backend, idle_for, now, true, limit)
    }

    /// The second before which a pin's last use makes it idle for `idle_for` at `now`
    /// (`idle_for` in whole seconds, rounded up).
    fn idle_before(idle_for: Millis, now: Millis) -> u32 {
        let idle_s = u32::try_from(idle_for.div_ceil(1000)).unwrap_or(u32::MAX);
        Self::secs(now).saturating_add(1).saturating_sub(idle_s)
    }

    fn idle_keys(
        &self,
        backend: BackendId,
        idle_for: Millis,
        now: Millis,
        counted_only: bool,
        limit: usize,
    ) -> Vec<SessionKey> {
        let before = Self::idle_before(idle_for, now);
        let mut out = Vec::new();
        for s in self.shards.iter() {
            if out.len() >= limit {
                break;
            }
            s.0.lock()
                .idle_keys_on(backend, before, counted_only, limit, &mut out);
        }
        out
    }

    /// Moves `key` from `from` to `to` only if it is still pinned to `from` and idle (as in
    /// [`Overlay::idle_keys_on`]) — checked and done under one lock, so a session whose
    /// request started meanwhile never moves. Last-seen is kept. Returns whether it moved.
    pub fn move_if_idle(
        &self,
        key: SessionKey,
        from: BackendId,
        to: Pin,
        idle_for: Millis,
        now: Millis,
    ) -> bool {
        let before = Self::idle_before(idle_for, now);
        self.shard(key).lock().move_if_idle(key.0, from, to, before)
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
