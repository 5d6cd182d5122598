//! One shard of the overlay: an open-addressing table of inline slots (see `table.rs`) plus
//! per-backend counts, guarded by the shard's mutex in [`super::Overlay`]. Every method here
//! runs under that lock.
use super::snapshot::Journal;
use super::table::{Slot, Table, PLACED, VACANT};
use super::{Lookup, OverlayStats, Pin, PinInfo, PinOutcome};
use crate::{BackendId, SessionKey};

/// `backup` value meaning "no backup" (the same reserved id as a vacant slot's backend).
pub(super) const NO_BACKUP: u32 = VACANT;

/// How many pins eviction looks at (Redis' default `maxmemory-samples`).
const EVICTION_SAMPLES: usize = 5;

impl Slot {
    pub(super) fn pin(&self) -> Pin {
        Pin {
            backend: BackendId(self.backend),
            backup: (self.backup != NO_BACKUP).then_some(BackendId(self.backup)),
        }
    }
}

/// Expiry rule shared by every path: idle for at least `ttl_s` whole seconds (0 = never).
pub(super) fn is_expired(last_seen_s: u32, now_s: u32, ttl_s: u32) -> bool {
    ttl_s != 0 && now_s.saturating_sub(last_seen_s) >= ttl_s
}

#[derive(Debug)]
pub(super) struct Shard {
    pub(super) table: Table,
    /// Sessions per `BackendId.0` in this shard, grown on demand.
    counts: Vec<u32>,
    /// Most pins this shard holds.
    pub(super) cap: usize,
    pub(super) stats: OverlayStats,
    /// Keys whose pin changed, while a hand-over streams changes (see `snapshot.rs`).
    pub(super) journal: Option<Journal>,
}

impl Shard {
    /// A shard of at most `cap` pins; `mult` is its table's key multiplier (random).
    pub(super) fn new(cap: usize, mult: u64) -> Self {
        Shard {
            table: Table::new(cap, mult),
            counts: Vec::new(),
            cap: cap.max(1),
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

    /// Refreshes the live pin at `pos` (never moves last-seen backwards).
    #[inline]
    fn touch(&mut self, pos: usize, now_s: u32) -> Pin {
        let slot = self.table.slot_mut(pos);
        // Only write when it changes: a hit within the same second leaves the line clean.
        if slot.last_seen_s < now_s {
            slot.last_seen_s = now_s;
        }
        slot.pin()
    }

    #[inline]
    pub(super) fn get(&mut self, key: u128, now_s: u32, ttl_s: u32) -> Option<Pin> {
        let pos = self.table.find(key).ok()?;
        if is_expired(self.table.slot(pos).last_seen_s, now_s, ttl_s) {
            self.remove_at(pos);
            self.stats.expired += 1;
            return None;
        }
        Some(self.touch(pos, now_s))
    }

    /// `get`, and on a miss (absent or idle-expired) pin what `place` chooses, if anything.
    #[inline]
    pub(super) fn get_or_pin(
        &mut self,
        key: u128,
        now_s: u32,
        ttl_s: u32,
        place: impl FnOnce() -> Option<Pin>,
    ) -> Lookup {
        match self.table.find(key) {
            Ok(pos) if !is_expired(self.table.slot(pos).last_seen_s, now_s, ttl_s) => {
                Lookup::Found(self.touch(pos, now_s))
            }
            Ok(pos) => {
                self.stats.expired += 1;
                match place() {
                    Some(to) => {
                        self.reuse_expired(pos, to, now_s, PLACED);
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
                    self.insert(key, to, now_s, ttl_s, vacant, PLACED);
                    Lookup::Pinned(to)
                }
                None => Lookup::Unplaced,
            },
        }
    }

    pub(super) fn pin(&mut self, key: u128, to: Pin, now_s: u32, ttl_s: u32) -> PinOutcome {
        let pos = match self.table.find(key) {
            Ok(pos) => pos,
            Err(vacant) => {
                self.insert(key, to, now_s, ttl_s, vacant, 0);
                return PinOutcome::Created;
            }
        };
        let slot = *self.table.slot(pos);
        if is_expired(slot.last_seen_s, now_s, ttl_s) {
            // The old pin expired: this is a new session, in the same slot.
            self.stats.expired += 1;
            self.reuse_expired(pos, to, now_s, 0);
            return PinOutcome::Created;
        }
        self.set(pos, to, now_s);
        self.table.slot_mut(pos).created_s &= !PLACED;
        if slot.backend == to.backend.0 {
            PinOutcome::Unchanged
        } else {
            PinOutcome::Changed {
                previous: BackendId(slot.backend),
            }
        }
    }

    /// Points the pin at `pos` to `to` (counts follow) and refreshes it.
    pub(super) fn set(&mut self, pos: usize, to: Pin, now_s: u32) {
        let old = *self.table.slot(pos);
        if old.backend != to.backend.0 {
            self.counts[old.backend as usize] -= 1;
            self.count_up(to.backend.0);
        }
        let backup = to.backup.map_or(NO_BACKUP, |b| b.0);
        if old.backend != to.backend.0 || old.backup != backup {
            self.note(old.key);
        }
        let s = self.table.slot_mut(pos);
        s.backend = to.backend.0;
        s.backup = backup;
        s.last_seen_s = s.last_seen_s.max(now_s);
    }

    /// Re-creates the idle-expired pin at `pos` as a new session on `to` (the caller counted
    /// the expiry); `placed` is [`PLACED`] or 0.
    fn reuse_expired(&mut self, pos: usize, to: Pin, now_s: u32, placed: u32) {
        self.stats.created += 1;
        self.set(pos, to, now_s);
        let s = self.table.slot_mut(pos);
        s.created_s = now_s | placed;
        let key = s.key;
        self.note(key);
    }

    /// Pins the absent `key`; `vacant` is where `find` said it goes; `placed` is [`PLACED`]
    /// or 0. A full shard first evicts the least recently seen of the few pins at and after
    /// the key's home.
    fn insert(&mut self, key: u128, to: Pin, now_s: u32, ttl_s: u32, vacant: usize, placed: u32) {
        let slot = Slot {
            key,
            backend: to.backend.0,
            backup: to.backup.map_or(NO_BACKUP, |b| b.0),
            created_s: now_s | placed,
            last_seen_s: now_s,
        };
        self.insert_slot(slot, now_s, ttl_s, vacant);
        self.stats.created += 1;
    }

    /// Stores `slot`, whose key is absent (`vacant` is where `find` said it goes), evicting
    /// first when the shard is full. Not counted as created.
    pub(super) fn insert_slot(&mut self, slot: Slot, now_s: u32, ttl_s: u32, vacant: usize) {
        debug_assert!(slot.backend != VACANT, "BackendId(u32::MAX) is reserved");
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
        self.count_up(slot.backend);
        self.note(slot.key);
    }

    /// Replaces the pin at `victim` by `slot` to make room, counting the dropped pin as
    /// expired when it already was, else as evicted.
    fn evict(&mut self, victim: usize, slot: Slot, vacant: usize, now_s: u32, ttl_s: u32) {
        let old = self.table.replace(victim, slot, vacant);
        self.counts[old.backend as usize] -= 1;
        if is_expired(old.last_seen_s, now_s, ttl_s) {
            self.stats.expired += 1;
        } else {
            self.stats.evicted += 1;
        }
    }

    fn count_up(&mut self, backend: u32) {
        let b = backend as usize;
        if b >= self.counts.len() {
            self.counts.resize(b + 1, 0);
        }
        self.counts[b] += 1;
    }

    /// Removes the pin at `pos` and uncounts it.
    fn remove_at(&mut self, pos: usize) -> Slot {
        let removed = self.table.remove_at(pos);
        self.counts[removed.backend as usize] -= 1;
        removed
    }

    pub(super) fn remove(&mut self, key: u128) -> Option<BackendId> {
        let pos = self.table.find(key).ok()?;
        self.note(key);
        Some(BackendId(self.remove_at(pos).backend))
    }

    pub(super) fn info(&self, key: u128) -> Option<PinInfo> {
        let s = self.table.slot(self.table.find(key).ok()?);
        Some(PinInfo {
            backend: BackendId(s.backend),
            backup: s.pin().backup,
            created: u64::from(s.created()) * 1000,
            last_seen: u64::from(s.last_seen_s) * 1000,
        })
    }

    pub(super) fn count(&self, backend: BackendId) -> u32 {
        self.counts.get(backend.0 as usize).copied().unwrap_or(0)
    }

    pub(super) fn add_counts(&self, into: &mut Vec<u64>) {
        if into.len() < self.counts.len() {
            into.resize(self.counts.len(), 0);
        }
        for (sum, c) in into.iter_mut().zip(&self.counts) {
            *sum += u64::from(*c);
        }
    }

    /// Removes every pin matching `doomed`; returns how many. Journaled when `journal` (an
    /// explicit removal, not an expiry).
    fn remove_where(&mut self, doomed: impl FnMut(&Slot) -> bool, journal: bool) -> usize {
        let mut removed = 0;
        let counts = &mut self.counts;
        let mut notes = self.journal.as_mut().filter(|_| journal);
        self.table.remove_where(doomed, |s| {
            counts[s.backend as usize] -= 1;
            removed += 1;
            if let Some(j) = notes.as_mut() {
                j.note(s.key);
            }
        });
        removed
    }

    pub(super) fn sweep(&mut self, now_s: u32, ttl_s: u32) -> usize {
        if ttl_s == 0 {
            return 0;
        }
        let n = self.remove_where(|s| is_expired(s.last_seen_s, now_s, ttl_s), false);
        self.stats.expired += n as u64;
        n
    }

    pub(super) fn remove_backend(&mut self, backend: BackendId) -> usize {
        if self.count(backend) == 0 {
            return 0;
        }
        self.remove_where(|s| s.backend == backend.0, true)
    }

    pub(super) fn keys_on(&self, backend: BackendId, limit: usize, out: &mut Vec<SessionKey>) {
        if self.count(backend) == 0 {
            return;
        }
        let keys = self.table.iter().filter(|s| s.backend == backend.0);
        out.extend(
            keys.map(|s| SessionKey(s.key))
                .take(limit.saturating_sub(out.len())),
        );
    }

    /// Bytes allocated by this shard's table and counts.
    pub(super) fn memory_bytes(&self) -> usize {
        self.table.memory_bytes() + self.counts.capacity() * std::mem::size_of::<u32>()
    }

    #[cfg(test)]
    pub(super) fn check_invariants(&self) {
        self.table.check_invariants();
        assert!(self.table.len() <= self.cap);
        let mut counts = vec![0u32; self.counts.len()];
        for s in self.table.iter() {
            counts[s.backend as usize] += 1;
        }
        assert_eq!(counts, self.counts);
    }
}
