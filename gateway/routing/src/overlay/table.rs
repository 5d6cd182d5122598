//! One shard's pins: an open-addressing hash table of inline 32-byte slots.
//!
//! * The key is already a uniform 128-bit hash, so a slot's *home* is its low 64 bits scaled to
//!   the table size (`(lo64 × slots) >> 64`: any size, not only powers of two), after a multiply
//!   by a random odd per-table constant: keys are unseeded hashes of client-chosen values, and
//!   without it a client could grind values into one long probe cluster. The overlay picks
//!   shards from bits 64.. and the ring uses bits 96..128, so the three are independent.
//! * Linear probing; slots are 32-byte aligned, two per 64-byte cache line, so a hit usually
//!   costs one cache miss (the probe rarely leaves the home line or its neighbour).
//! * Deletion is backward-shift (Knuth's Algorithm R): no tombstones, so probe lengths depend
//!   only on the load, never on the history of deletions.
//! * The table grows by doubling up to a final size fixed by the shard's bound, where the load
//!   is at most [`MAX_LOAD_NUM`]/[`MAX_LOAD_DEN`] (32 / 0.7 ≈ 46 bytes per pin when full). At
//!   0.7 a hit probes ~2.2 slots and a miss ~6 on average; 0.8 (40 bytes) measured ~10% slower
//!   on hits and misses at 1M pins, 0.6 (53 bytes) no faster.
//! * Eviction samples the first few pins at and after the new key's home: a random sample with
//!   respect to recency (homes are uniform), and on the cache lines the insert touches anyway.
//!
//! Vacant slots have `backend & ID_MASK == VACANT`.
//!
//! The `backend` and `backup` words each hold a 24-bit backend id in their low bits; the top
//! byte of `backend` counts the session's requests in flight and the top byte of `backup` is its
//! access frequency (see `shard.rs`). The [`crate::Interner`] never hands out ids that do not fit.

/// Bit of `created_s` set while a pin is a *placement*: made by a lookup that missed
/// ([`super::Overlay::get_or_pin`]: a ring pick for an unknown key), not by an explicit pin
/// (a learned session id, a failover, an import of one). When two processes disagree about a
/// key during an upgrade, an explicit pin beats a placement. Creation times use the other 31
/// bits (seconds: 68 years of clock).
pub(super) const PLACED: u32 = 1 << 31;

/// Bits of a `backend`/`backup` word that hold the backend id.
pub(super) const ID_MASK: u32 = 0x00FF_FFFF;
/// Id bits of a vacant slot (and of "no backup"). [`crate::MAX_BACKEND_IDS`] keeps real ids below.
pub(super) const VACANT: u32 = ID_MASK;

/// Most pins per slot when the table has reached its final size: 7/10.
pub(super) const MAX_LOAD_NUM: usize = 7;
/// See [`MAX_LOAD_NUM`].
pub(super) const MAX_LOAD_DEN: usize = 10;

/// Slots of a table before its first growth (or its final size, if smaller).
const INITIAL_SLOTS: usize = 16;

/// One pinned session (or a vacant slot): 32 bytes, 32-byte aligned, so never split over two
/// cache lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, align(32))]
pub(super) struct Slot {
    pub(super) key: u128,
    pub(super) backend: u32,
    pub(super) backup: u32,
    pub(super) created_s: u32,
    pub(super) last_seen_s: u32,
}

impl Slot {
    const EMPTY: Slot = Slot {
        key: 0,
        backend: VACANT,
        backup: 0,
        created_s: 0,
        last_seen_s: 0,
    };

    #[inline]
    pub(super) fn is_vacant(&self) -> bool {
        self.backend & ID_MASK == VACANT
    }

    /// The pinned backend's id.
    #[inline]
    pub(super) fn id(&self) -> u32 {
        self.backend & ID_MASK
    }

    /// The backup's id ([`VACANT`] = none).
    #[inline]
    pub(super) fn backup_id(&self) -> u32 {
        self.backup & ID_MASK
    }

    /// Requests of this session in flight (saturates at 255).
    #[inline]
    pub(super) fn in_flight(&self) -> u32 {
        self.backend >> 24
    }

    /// Creation time, seconds.
    #[inline]
    pub(super) fn created(&self) -> u32 {
        self.created_s & !PLACED
    }

    /// Made by a missed lookup (see [`PLACED`]).
    #[inline]
    pub(super) fn placed(&self) -> bool {
        self.created_s & PLACED != 0
    }

    /// Access-frequency counter (0–255, logarithmic, decaying).
    #[inline]
    pub(super) fn freq(&self) -> u32 {
        self.backup >> 24
    }
}

/// Linear-probing table of [`Slot`]s holding at most `max_len` pins.
#[derive(Debug)]
pub(super) struct Table {
    slots: Box<[Slot]>,
    len: usize,
    /// Size the table grows to (and no further): room for `max_len` pins at the maximum load,
    /// and always at least one vacant slot, so every probe ends.
    final_slots: usize,
    /// Odd multiplier applied to the key before placing it (see the module docs).
    mult: u64,
}

/// The home slot of `key` in a table of `n` slots placing keys with multiplier `mult`.
#[inline]
fn home(key: u128, mult: u64, n: usize) -> usize {
    ((u128::from((key as u64).wrapping_mul(mult)) * n as u128) >> 64) as usize
}

/// How far `to` is after `from`, going forward and wrapping at `n`.
#[inline]
fn distance(from: usize, to: usize, n: usize) -> usize {
    if to >= from {
        to - from
    } else {
        to + n - from
    }
}

impl Table {
    /// An empty table for at most `max_len` (≥ 1) pins, placing keys with the multiplier
    /// `mult` (made odd; 1 places keys by their low bits alone).
    pub(super) fn new(max_len: usize, mult: u64) -> Self {
        let max_len = max_len.max(1);
        let final_slots = max_len
            .saturating_mul(MAX_LOAD_DEN)
            .div_ceil(MAX_LOAD_NUM)
            .max(max_len + 1);
        Table {
            slots: vec![Slot::EMPTY; INITIAL_SLOTS.min(final_slots)].into_boxed_slice(),
            len: 0,
            final_slots,
            mult: mult | 1,
        }
    }

    #[inline]
    fn home(&self, key: u128) -> usize {
        home(key, self.mult, self.slots.len())
    }

    /// Number of pins.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Number of slots (allocated).
    #[cfg(test)]
    pub(super) fn slots(&self) -> usize {
        self.slots.len()
    }

    #[inline]
    fn next(&self, i: usize) -> usize {
        if i + 1 == self.slots.len() {
            0
        } else {
            i + 1
        }
    }

    /// `Ok(position)` of `key`, or `Err(position)` of the vacant slot where it would go.
    #[inline]
    pub(super) fn find(&self, key: u128) -> Result<usize, usize> {
        let mut i = self.home(key);
        loop {
            let s = &self.slots[i];
            if s.is_vacant() {
                return Err(i);
            }
            if s.key == key {
                return Ok(i);
            }
            i = self.next(i);
        }
    }

    /// The slot at `pos` (vacant or not).
    #[inline]
    pub(super) fn slot(&self, pos: usize) -> &Slot {
        &self.slots[pos]
    }

    /// The slot at `pos`, to update in place (its key must not change).
    #[inline]
    pub(super) fn slot_mut(&mut self, pos: usize) -> &mut Slot {
        &mut self.slots[pos]
    }

    /// Whether inserting one more pin needs a bigger table first.
    fn needs_growth(&self) -> bool {
        self.slots.len() < self.final_slots
            && (self.len + 1) * MAX_LOAD_DEN > self.slots.len() * MAX_LOAD_NUM
    }

    /// Stores `slot`, whose key is absent, and returns its position. `vacant` is what `find`
    /// returned for the key if the table did not change since (else `None`). The caller keeps
    /// `len() < max_len` (evicting first when full).
    pub(super) fn insert(&mut self, slot: Slot, vacant: Option<usize>) -> usize {
        debug_assert!(!slot.is_vacant());
        let pos = match vacant {
            Some(pos) if !self.needs_growth() => pos,
            _ => {
                if self.needs_growth() {
                    self.grow();
                }
                match self.find(slot.key) {
                    Err(pos) => pos,
                    Ok(_) => unreachable!("insert of a key already present"),
                }
            }
        };
        debug_assert!(self.slots[pos].is_vacant());
        self.slots[pos] = slot;
        self.len += 1;
        pos
    }

    /// Doubles the slots (up to the final size) and re-inserts every pin.
    #[cold]
    fn grow(&mut self) {
        let n = (self.slots.len() * 2).min(self.final_slots);
        let old = std::mem::replace(&mut self.slots, vec![Slot::EMPTY; n].into_boxed_slice());
        for s in old.iter().filter(|s| !s.is_vacant()) {
            let mut i = home(s.key, self.mult, n);
            while !self.slots[i].is_vacant() {
                i = self.next(i);
            }
            self.slots[i] = *s;
        }
    }

    /// Removes the pin at `pos` and returns it; later pins of its cluster shift back so that
    /// no probe crosses a hole.
    pub(super) fn remove_at(&mut self, pos: usize) -> Slot {
        let n = self.slots.len();
        let removed = self.slots[pos];
        debug_assert!(!removed.is_vacant());
        let mut hole = pos;
        let mut j = self.next(pos);
        while !self.slots[j].is_vacant() {
            // The pin at `j` may fill the hole if its probe passed the hole, i.e. the hole lies
            // in [home, j) going forward.
            let h = self.home(self.slots[j].key);
            if distance(h, j, n) >= distance(hole, j, n) {
                self.slots[hole] = self.slots[j];
                hole = j;
            }
            j = self.next(j);
        }
        self.slots[hole] = Slot::EMPTY;
        self.len -= 1;
        removed
    }

    /// Replaces the pin at `victim` by `slot` (whose key is absent) and returns the old pin;
    /// `vacant` is what `find` returned for the new key. When the victim lies on the new key's
    /// probe path (between its home and `vacant`) the new pin simply takes its slot. Otherwise
    /// the victim is removed and the new key's place is found again: the removal's backward
    /// shift can move the hole anywhere in the victim's cluster, and when that cluster wraps
    /// round into the new key's probe path, `vacant` is no longer the first vacant slot on it
    /// (a pin written there would sit behind a hole, unfindable).
    pub(super) fn replace(&mut self, victim: usize, slot: Slot, vacant: usize) -> Slot {
        let n = self.slots.len();
        let h = self.home(slot.key);
        if distance(h, victim, n) < distance(h, vacant, n) {
            std::mem::replace(&mut self.slots[victim], slot)
        } else {
            let old = self.remove_at(victim);
            self.insert(slot, None);
            old
        }
    }

    /// The least recently seen of the first `samples` pins at and after `key`'s home (fewer
    /// when the table holds fewer), preferring pins with no request in flight, as eviction
    /// candidate. `None` when the table is empty.
    pub(super) fn oldest_near(&self, key: u128, samples: usize) -> Option<usize> {
        let want = samples.min(self.len);
        let mut i = self.home(key);
        let mut best: Option<usize> = None;
        let mut seen = 0;
        while seen < want {
            let s = &self.slots[i];
            if !s.is_vacant() {
                seen += 1;
                let rank = |s: &Slot| (s.in_flight() > 0, s.last_seen_s);
                if best.is_none_or(|b| rank(s) < rank(&self.slots[b])) {
                    best = Some(i);
                }
            }
            i = self.next(i);
        }
        best
    }

    /// Every pin.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Slot> {
        self.slots.iter().filter(|s| !s.is_vacant())
    }

    /// Removes every pin matching `doomed`, passing each removed pin to `removed`.
    pub(super) fn remove_where(
        &mut self,
        mut doomed: impl FnMut(&Slot) -> bool,
        mut removed: impl FnMut(&Slot),
    ) {
        let mut i = 0;
        // A removal only moves pins backwards into the hole chain starting at `i`, or moves
        // pins already kept (wrapped around from the front), so re-checking position `i` after
        // a removal sees every pin exactly until it is kept or removed.
        while i < self.slots.len() {
            let s = self.slots[i];
            if !s.is_vacant() && doomed(&s) {
                removed(&s);
                self.remove_at(i);
            } else {
                i += 1;
            }
        }
    }

    /// Bytes allocated for slots.
    pub(super) fn memory_bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<Slot>()
    }

    /// Panics unless the table is consistent: `len` matches, every pin is found where it is,
    /// and no pin has a hole between its home and its position.
    #[cfg(test)]
    pub(super) fn check_invariants(&self) {
        let n = self.slots.len();
        assert!(n <= self.final_slots);
        assert_eq!(self.iter().count(), self.len);
        assert!(self.len < n, "at least one vacant slot");
        for (pos, s) in self.slots.iter().enumerate() {
            if s.is_vacant() {
                continue;
            }
            assert_eq!(self.find(s.key), Ok(pos));
            let h = self.home(s.key);
            let mut i = h;
            while i != pos {
                assert!(!self.slots[i].is_vacant(), "hole between home and pin");
                i = self.next(i);
            }
        }
    }
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
