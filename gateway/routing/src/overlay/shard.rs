//! One shard of the overlay: an open-addressing table of inline slots (see `table.rs`) plus
//! per-backend counts, guarded by the shard's mutex in [`super::Overlay`]. Every method here
//! runs under that lock.
//!
//! Besides where each session is pinned, a slot says how it is used:
//! * **in flight** — requests of the session being served now (acquired by the request's
//!   selection, released when it ends). A session with a request in flight never expires, is
//!   evicted only when every sampled pin is in flight, and is never moved by rebalancing.
//! * **last seen** — refreshed by every use; a session is *active* while it has a request in
//!   flight or was seen within the active window. Active sessions per backend are counted
//!   exactly here (`active`), mirrored in the lock-free [`Loads`], and recounted against a new
//!   window cut-off by [`Shard::recount`] (the sweeper, every second): between recounts a
//!   session that goes idle is still counted, so the count lags by at most one sweep.
//! * **frequency** — an 8-bit logarithmic access counter with decay, as Redis' LFU policy
//!   (`LFU_LOG_FACTOR` 10, one step of decay per idle minute): ~10 after 100 requests, ~18 after
//!   1,000, 255 beyond ~1M; it tells a busy session from one that is merely recent.
use super::loads::Loads;
use super::snapshot::Journal;
use super::table::{Slot, Table, ID_MASK, PLACED, VACANT};
use super::{Lookup, OverlayStats, Pin, PinInfo, PinOutcome};
use crate::{BackendId, SessionKey};
use std::sync::Arc;

/// `backup` id meaning "no backup" (the same reserved id as a vacant slot's backend).
pub(super) const NO_BACKUP: u32 = VACANT;

/// How many pins eviction looks at (Redis' default `maxmemory-samples`).
const EVICTION_SAMPLES: usize = 5;

/// Frequency of a new session (Redis' `LFU_INIT_VAL`), so it is not the first to go.
const LFU_INIT: u32 = 5;
/// Redis' `lfu-log-factor`.
const LFU_LOG_FACTOR: u32 = 10;
/// Seconds of idleness per step of frequency decay (Redis' `lfu-decay-time`, one minute).
const LFU_DECAY_S: u32 = 60;

impl Slot {
    pub(super) fn pin(&self) -> Pin {
        Pin {
            backend: BackendId(self.id()),
            backup: (self.backup_id() != NO_BACKUP).then_some(BackendId(self.backup_id())),
        }
    }
}

/// Expiry rule shared by every path: idle for at least `ttl_s` whole seconds (0 = never), and
/// no request in flight.
pub(super) fn is_expired(s: &Slot, now_s: u32, ttl_s: u32) -> bool {
    ttl_s != 0 && s.in_flight() == 0 && now_s.saturating_sub(s.last_seen_s) >= ttl_s
}

#[derive(Debug)]
pub(super) struct Shard {
    pub(super) table: Table,
    /// Sessions per `BackendId.0` in this shard, grown on demand.
    counts: Vec<u32>,
    /// Active sessions per `BackendId.0` in this shard (see the module docs).
    active: Vec<u32>,
    /// A pin seen at or after this second counts as active (set by `recount`).
    cutoff_s: u32,
    loads: Arc<Loads>,
    /// Most pins this shard holds.
    pub(super) cap: usize,
    /// xorshift64 state for the frequency counter's coin flips.
    rng: u64,
    pub(super) stats: OverlayStats,
    /// Keys whose pin changed, while a hand-over streams changes (see `snapshot.rs`).
    pub(super) journal: Option<Journal>,
}

fn bump(v: &mut Vec<u32>, id: u32, delta: i32) {
    let i = id as usize;
    if i >= v.len() {
        v.resize(i + 1, 0);
    }
    v[i] = v[i].wrapping_add_signed(delta);
}

impl Shard {
    /// A shard of at most `cap` pins; `mult` is its table's key multiplier (random).
    pub(super) fn new(cap: usize, mult: u64, loads: Arc<Loads>) -> Self {
        Shard {
            table: Table::new(cap, mult),
            counts: Vec::new(),
            active: Vec::new(),
            cutoff_s: 0,
            loads,
            cap: cap.max(1),
            rng: mult | 1,
            stats: OverlayStats::default(),
            journal: None,
        }
    }

    /// Records that `key`'s pin changed, when a journal is on (only during a hand-over).
    #[inline]
    pub(super) fn note(&mut self, key: u128) {
        if let Some(j) = self.journal.as_mut() {
            j.note(key);
        }
    }

    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    #[inline]
    fn counted(&self, s: &Slot) -> bool {
        s.in_flight() > 0 || s.last_seen_s >= self.cutoff_s
    }

    /// Follows a slot's change from `before` to `after` (either may be absent) in the
    /// per-backend counts and active counts.
    #[inline]
    pub(super) fn account(&mut self, before: Option<&Slot>, after: Option<&Slot>) {
        let (b, a) = (before.map(Slot::id), after.map(Slot::id));
        if b != a {
            if let Some(id) = b {
                bump(&mut self.counts, id, -1);
            }
            if let Some(id) = a {
                bump(&mut self.counts, id, 1);
            }
        }
        let b = before.filter(|s| self.counted(s)).map(Slot::id);
        let a = after.filter(|s| self.counted(s)).map(Slot::id);
        if b != a {
            if let Some(id) = b {
                bump(&mut self.active, id, -1);
                self.loads.add(id, -1);
            }
            if let Some(id) = a {
                bump(&mut self.active, id, 1);
                self.loads.add(id, 1);
            }
        }
    }

    fn coin(&mut self) -> u32 {
        // xorshift64
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        (x >> 32) as u32
    }

    /// The frequency after one more use, `idle_s` seconds after the last one.
    fn next_freq(&mut self, freq: u32, idle_s: u32) -> u32 {
        let f = freq.saturating_sub(idle_s / LFU_DECAY_S);
        if f >= 255 {
            return 255;
        }
        let base = f.saturating_sub(LFU_INIT);
        if self.coin().is_multiple_of(base * LFU_LOG_FACTOR + 1) {
            f + 1
        } else {
            f
        }
    }

    /// Refreshes the live pin at `pos` (never moves last-seen backwards); `acquire` also counts
    /// a request in flight and a use in the frequency.
    #[inline]
    fn touch(&mut self, pos: usize, now_s: u32, acquire: bool) -> Pin {
        let before = *self.table.slot(pos);
        if !acquire {
            // Only write when it changes: a hit within the same second leaves the line clean.
            if before.last_seen_s < now_s {
                self.table.slot_mut(pos).last_seen_s = now_s;
                if !self.counted(&before) {
                    let after = *self.table.slot(pos);
                    self.account(Some(&before), Some(&after));
                }
            }
            return before.pin();
        }
        let freq = self.next_freq(before.freq(), now_s.saturating_sub(before.last_seen_s));
        let slot = self.table.slot_mut(pos);
        slot.last_seen_s = slot.last_seen_s.max(now_s);
        if before.in_flight() < 255 {
            slot.backend += 1 << 24;
        }
        slot.backup = (slot.backup & ID_MASK) | (freq << 24);
        let after = *slot;
        if !self.counted(&before) {
            self.account(Some(&before), Some(&after));
        }
        before.pin()
    }

    #[inline]
    pub(super) fn get(&mut self, key: u128, now_s: u32, ttl_s: u32, acquire: bool) -> Option<Pin> {
        self.stats.gets += 1;
        let pos = self.table.find(key).ok()?;
        if is_expired(self.table.slot(pos), now_s, ttl_s) {
            self.remove_at(pos);
            self.stats.expired += 1;
            return None;
        }
        Some(self.touch(pos, now_s, acquire))
    }

    /// `get`, and on a miss (absent or idle-expired) pin what `place` chooses, if anything.
    #[inline]
    pub(super) fn get_or_pin(
        &mut self,
        key: u128,
        now_s: u32,
        ttl_s: u32,
        acquire: bool,
        place: impl FnOnce() -> Option<Pin>,
    ) -> Lookup {
        self.stats.gets += 1;
        match self.table.find(key) {
            Ok(pos) if !is_expired(self.table.slot(pos), now_s, ttl_s) => {
                Lookup::Found(self.touch(pos, now_s, acquire))
            }
            Ok(pos) => {
                self.stats.expired += 1;
                match place() {
                    Some(to) => {
                        self.stats.pins += 1;
                        self.reuse_expired(pos, to, now_s, acquire, PLACED);
                        Lookup::Pinned(to)
                    }
                    None => {
                        self.remove_at(pos);
                        Lookup::Unplaced
                    }
                }
            }
            Err(vacant) => match place() {
                Some(to) => {
                    self.stats.pins += 1;
                    self.insert(key, to, now_s, ttl_s, vacant, acquire, PLACED);
                    Lookup::Pinned(to)
                }
                None => Lookup::Unplaced,
            },
        }
    }

    /// Ends one request of the session `key` (see [`Shard::touch`]): one less in flight (a
    /// saturated count stays), last seen refreshed. `false` when the key is not pinned.
    pub(super) fn release(&mut self, key: u128, now_s: u32) -> bool {
        let Ok(pos) = self.table.find(key) else {
            return false;
        };
        let before = *self.table.slot(pos);
        let slot = self.table.slot_mut(pos);
        slot.last_seen_s = slot.last_seen_s.max(now_s);
        if (1..255).contains(&before.in_flight()) {
            slot.backend -= 1 << 24;
        }
        let after = *slot;
        self.account(Some(&before), Some(&after));
        true
    }

    pub(super) fn pin(&mut self, key: u128, to: Pin, now_s: u32, ttl_s: u32) -> PinOutcome {
        self.stats.pins += 1;
        let pos = match self.table.find(key) {
            Ok(pos) => pos,
            Err(vacant) => {
                self.insert(key, to, now_s, ttl_s, vacant, false, 0);
                return PinOutcome::Created;
            }
        };
        let slot = *self.table.slot(pos);
        if is_expired(&slot, now_s, ttl_s) {
            // The old pin expired: this is a new session, in the same slot.
            self.stats.expired += 1;
            self.reuse_expired(pos, to, now_s, false, 0);
            return PinOutcome::Created;
        }
        self.set(pos, to, now_s);
        // An explicit pin: no longer a mere placement (see `PLACED`).
        self.table.slot_mut(pos).created_s &= !PLACED;
        if slot.id() == to.backend.0 {
            PinOutcome::Unchanged
        } else {
            PinOutcome::Changed {
                previous: BackendId(slot.id()),
            }
        }
    }

    /// Points the pin at `pos` to `to` (counts follow; in-flight and frequency stay) and
    /// refreshes it to `now_s` (0 leaves last-seen alone).
    pub(super) fn set(&mut self, pos: usize, to: Pin, now_s: u32) {
        let before = *self.table.slot(pos);
        let s = self.table.slot_mut(pos);
        s.backend = to.backend.0 | (before.backend & !ID_MASK);
        s.backup = to.backup.map_or(NO_BACKUP, |b| b.0) | (before.backup & !ID_MASK);
        s.last_seen_s = s.last_seen_s.max(now_s);
        let after = *s;
        self.account(Some(&before), Some(&after));
        if before.id() != after.id() || before.backup_id() != after.backup_id() {
            self.note(before.key);
        }
    }

    /// A fresh slot for `key` pinned to `to` at `now_s`.
    pub(super) fn fresh(key: u128, to: Pin, now_s: u32, acquire: bool) -> Slot {
        let slot = Slot {
            key,
            backend: to.backend.0 | (u32::from(acquire) << 24),
            backup: to.backup.map_or(NO_BACKUP, |b| b.0) | (LFU_INIT << 24),
            created_s: now_s,
            last_seen_s: now_s,
        };
        debug_assert!(!slot.is_vacant(), "backend id {VACANT:#x} is reserved");
        slot
    }

    /// Re-creates the idle-expired pin at `pos` as a new session on `to` (the caller counted
    /// the expiry); `placed` is [`PLACED`] or 0.
    fn reuse_expired(&mut self, pos: usize, to: Pin, now_s: u32, acquire: bool, placed: u32) {
        self.stats.created += 1;
        let before = *self.table.slot(pos);
        let mut after = Self::fresh(before.key, to, now_s, acquire);
        after.created_s |= placed;
        *self.table.slot_mut(pos) = after;
        self.account(Some(&before), Some(&after));
        self.note(before.key);
    }

    /// Pins the absent `key`; `vacant` is where `find` said it goes; `placed` is [`PLACED`]
    /// or 0. A full shard first evicts the least recently seen of the few pins at and after
    /// the key's home.
    #[allow(clippy::too_many_arguments)]
    fn insert(
        &mut self,
        key: u128,
        to: Pin,
        now_s: u32,
        ttl_s: u32,
        vacant: usize,
        acquire: bool,
        placed: u32,
    ) {
        let mut slot = Self::fresh(key, to, now_s, acquire);
        slot.created_s |= placed;
        self.insert_slot(slot, now_s, ttl_s, vacant);
        self.stats.created += 1;
    }

    /// Stores `slot`, whose key is absent (`vacant` is where `find` said it goes), evicting
    /// first when the shard is full. Not counted as created.
    pub(super) fn insert_slot(&mut self, slot: Slot, now_s: u32, ttl_s: u32, vacant: usize) {
        let victim = if self.table.len() >= self.cap {
            self.table.oldest_near(slot.key, EVICTION_SAMPLES)
        } else {
            None
        };
        match victim {
            Some(victim) => self.evict(victim, slot, vacant, now_s, ttl_s),
            None => {
                self.table.insert(slot, Some(vacant));
            }
        }
        self.account(None, Some(&slot));
        self.note(slot.key);
    }

    /// Replaces the pin at `victim` by `slot` to make room, counting the dropped pin as
    /// expired when it already was, else as evicted.
    fn evict(&mut self, victim: usize, slot: Slot, vacant: usize, now_s: u32, ttl_s: u32) {
        let old = self.table.replace(victim, slot, vacant);
        self.account(Some(&old), None);
        if is_expired(&old, now_s, ttl_s) {
            self.stats.expired += 1;
        } else {
            self.stats.evicted += 1;
        }
    }

    /// Removes the pin at `pos` and uncounts it.
    fn remove_at(&mut self, pos: usize) -> Slot {
        let removed = self.table.remove_at(pos);
        self.account(Some(&removed), None);
        removed
    }

    pub(super) fn remove(&mut self, key: u128) -> Option<BackendId> {
        self.stats.removes += 1;
        let pos = self.table.find(key).ok()?;
        self.note(key);
        Some(BackendId(self.remove_at(pos).id()))
    }

    pub(super) fn info(&self, key: u128) -> Option<PinInfo> {
        let s = self.table.slot(self.table.find(key).ok()?);
        Some(PinInfo {
            backend: BackendId(s.id()),
            backup: s.pin().backup,
            created: u64::from(s.created()) * 1000,
            last_seen: u64::from(s.last_seen_s) * 1000,
            in_flight: s.in_flight(),
            frequency: s.freq(),
        })
    }

    pub(super) fn count(&self, backend: BackendId) -> u32 {
        self.counts.get(backend.0 as usize).copied().unwrap_or(0)
    }

    pub(super) fn add_counts(&self, into: &mut Vec<u64>, active: bool) {
        let mine = if active { &self.active } else { &self.counts };
        if into.len() < mine.len() {
            into.resize(mine.len(), 0);
        }
        for (sum, c) in into.iter_mut().zip(mine) {
            *sum += u64::from(*c);
        }
    }

    /// Removes every pin matching `doomed`; returns how many. Journaled when `journal` (an
    /// explicit removal, not an expiry).
    fn remove_where(&mut self, mut doomed: impl FnMut(&Slot) -> bool, journal: bool) -> usize {
        let mut gone = Vec::new();
        self.table.remove_where(&mut doomed, |s| gone.push(*s));
        for s in &gone {
            self.account(Some(s), None);
            if journal {
                self.note(s.key);
            }
        }
        gone.len()
    }

    pub(super) fn sweep(&mut self, now_s: u32, ttl_s: u32) -> usize {
        if ttl_s == 0 {
            return 0;
        }
        let n = self.remove_where(|s| is_expired(s, now_s, ttl_s), false);
        self.stats.expired += n as u64;
        n
    }

    /// Moves the active window: from now on a pin counts as active when it has a request in
    /// flight or was seen at or after `cutoff_s`; the counts are recomputed exactly.
    pub(super) fn recount(&mut self, cutoff_s: u32) {
        self.cutoff_s = cutoff_s;
        let mut fresh = vec![0u32; self.active.len()];
        for s in self.table.iter() {
            if s.in_flight() > 0 || s.last_seen_s >= cutoff_s {
                bump(&mut fresh, s.id(), 1);
            }
        }
        if fresh.len() < self.active.len() {
            fresh.resize(self.active.len(), 0);
        }
        for (id, (new, old)) in fresh.iter().zip(self.active.iter()).enumerate() {
            if new != old {
                self.loads.add(id as u32, new.wrapping_sub(*old) as i32);
            }
        }
        for (id, new) in fresh.iter().enumerate().skip(self.active.len()) {
            if *new != 0 {
                self.loads.add(id as u32, *new as i32);
            }
        }
        self.active = fresh;
    }

    pub(super) fn remove_backend(&mut self, backend: BackendId) -> usize {
        if self.count(backend) == 0 {
            return 0;
        }
        self.remove_where(|s| s.id() == backend.0, true)
    }

    pub(super) fn keys_on(&self, backend: BackendId, limit: usize, out: &mut Vec<SessionKey>) {
        if self.count(backend) == 0 {
            return;
        }
        let keys = self.table.iter().filter(|s| s.id() == backend.0);
        out.extend(
            keys.map(|s| SessionKey(s.key))
                .take(limit.saturating_sub(out.len())),
        );
    }

    /// The keys used at or after second `since_s` (or with a request in flight).
    pub(super) fn seen_since(&self, since_s: u32, out: &mut Vec<SessionKey>) {
        let seen = self
            .table
            .iter()
            .filter(|s| s.last_seen_s >= since_s || s.in_flight() > 0);
        out.extend(seen.map(|s| SessionKey(s.key)));
    }

    /// Up to `limit` keys pinned to `backend` with no request in flight and last seen before
    /// `idle_before_s` — with `counted_only`, only those still counted as active (seen within
    /// the window of the last recount) — least recently seen first within this shard.
    pub(super) fn idle_keys_on(
        &self,
        backend: BackendId,
        idle_before_s: u32,
        counted_only: bool,
        limit: usize,
        out: &mut Vec<SessionKey>,
    ) {
        if self.count(backend) == 0 || out.len() >= limit {
            return;
        }
        let mut idle: Vec<&Slot> = self
            .table
            .iter()
            .filter(|s| s.id() == backend.0 && s.in_flight() == 0 && s.last_seen_s < idle_before_s)
            .filter(|s| !counted_only || self.counted(s))
            .collect();
        idle.sort_unstable_by_key(|s| s.last_seen_s);
        let room = limit - out.len();
        out.extend(idle.iter().take(room).map(|s| SessionKey(s.key)));
    }

    /// Re-pins `key` from `from` to `to` if it is still pinned to `from`, has no request in
    /// flight and was last seen before `idle_before_s`; last-seen is not refreshed (a move is
    /// not a use). Returns whether it moved.
    pub(super) fn move_if_idle(
        &mut self,
        key: u128,
        from: BackendId,
        to: Pin,
        idle_before_s: u32,
    ) -> bool {
        let Ok(pos) = self.table.find(key) else {
            return false;
        };
        let s = self.table.slot(pos);
        if s.id() != from.0 || s.in_flight() != 0 || s.last_seen_s >= idle_before_s {
            return false;
        }
        self.set(pos, to, 0);
        true
    }

    /// Bytes allocated by this shard's table and counts.
    pub(super) fn memory_bytes(&self) -> usize {
        self.table.memory_bytes()
            + (self.counts.capacity() + self.active.capacity()) * std::mem::size_of::<u32>()
    }

    #[cfg(test)]
    pub(super) fn check_invariants(&self) {
        self.table.check_invariants();
        assert!(self.table.len() <= self.cap);
        let mut counts = vec![0u32; self.counts.len()];
        let mut active = vec![0u32; self.active.len()];
        for s in self.table.iter() {
            counts[s.id() as usize] += 1;
            if self.counted(s) {
                active[s.id() as usize] += 1;
            }
        }
        assert_eq!(counts, self.counts);
        assert_eq!(active, self.active);
    }
}

#[cfg(test)]
#[path = "shard_tests.rs"]
mod tests;
