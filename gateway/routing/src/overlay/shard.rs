//! One shard of the overlay: a slab of fixed-size slots plus a hash index into it, guarded by
//! the shard's mutex in [`super::Overlay`]. Every method here runs under that lock.
use super::{OverlayStats, Pin, PinInfo, PinOutcome};
use crate::{BackendId, SessionKey};
use hashbrown::HashTable;

/// `backup` value meaning "no backup". `BackendId(u32::MAX)` is never handed out in practice
/// (the interner would need 2^32 distinct names first).
const NO_BACKUP: u32 = u32::MAX;

/// How many random slots eviction looks at (Redis' default `maxmemory-samples`).
const EVICTION_SAMPLES: usize = 5;

/// One pinned session: 32 bytes.
#[derive(Debug, Clone, Copy)]
struct Slot {
    key: u128,
    backend: u32,
    backup: u32,
    created_s: u32,
    last_seen_s: u32,
}

impl Slot {
    fn pin(&self) -> Pin {
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
    /// Dense slots; removal is `swap_remove`, so random sampling is an index draw.
    slab: Vec<Slot>,
    /// Slab positions, hashed by the key's low 64 bits (the key already is a hash).
    index: HashTable<u32>,
    /// Sessions per `BackendId.0` in this shard, grown on demand.
    counts: Vec<u32>,
    /// xorshift64 state for eviction sampling; never 0.
    rng: u64,
    /// Most slots this shard holds.
    cap: usize,
    pub(super) stats: OverlayStats,
}

fn hash(key: u128) -> u64 {
    key as u64
}

impl Shard {
    pub(super) fn new(cap: usize, seed: u64) -> Self {
        Shard {
            slab: Vec::new(),
            index: HashTable::new(),
            counts: Vec::new(),
            rng: seed | 1,
            cap,
            stats: OverlayStats::default(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.slab.len()
    }

    fn find(&self, key: u128) -> Option<usize> {
        let slab = &self.slab;
        let pos = self
            .index
            .find(hash(key), |&i| slab[i as usize].key == key)?;
        Some(*pos as usize)
    }

    pub(super) fn get(&mut self, key: u128, now_s: u32, ttl_s: u32) -> Option<Pin> {
        let pos = self.find(key)?;
        if is_expired(self.slab[pos].last_seen_s, now_s, ttl_s) {
            self.remove_at(pos);
            self.stats.expired += 1;
            return None;
        }
        let slot = &mut self.slab[pos];
        slot.last_seen_s = slot.last_seen_s.max(now_s);
        Some(slot.pin())
    }

    pub(super) fn pin(&mut self, key: u128, to: Pin, now_s: u32, ttl_s: u32) -> PinOutcome {
        let backup = to.backup.map_or(NO_BACKUP, |b| b.0);
        let Some(pos) = self.find(key) else {
            self.insert(key, to.backend.0, backup, now_s, ttl_s);
            return PinOutcome::Created;
        };
        let slot = self.slab[pos];
        let outcome = if is_expired(slot.last_seen_s, now_s, ttl_s) {
            // Reuse the slot in place: the old pin expired, this is a new session.
            self.stats.expired += 1;
            self.stats.created += 1;
            self.slab[pos].created_s = now_s;
            PinOutcome::Created
        } else if slot.backend == to.backend.0 {
            PinOutcome::Unchanged
        } else {
            PinOutcome::Changed {
                previous: BackendId(slot.backend),
            }
        };
        if slot.backend != to.backend.0 {
            self.counts[slot.backend as usize] -= 1;
            self.count_up(to.backend.0);
        }
        let s = &mut self.slab[pos];
        s.backend = to.backend.0;
        s.backup = backup;
        s.last_seen_s = s.last_seen_s.max(now_s);
        outcome
    }

    fn insert(&mut self, key: u128, backend: u32, backup: u32, now_s: u32, ttl_s: u32) {
        let slot = Slot {
            key,
            backend,
            backup,
            created_s: now_s,
            last_seen_s: now_s,
        };
        let pos = if self.slab.len() >= self.cap && !self.slab.is_empty() {
            // Full: the new pin takes the victim's slot in place (no slab move to fix up).
            let victim = self.pick_victim();
            self.evict_at(victim, now_s, ttl_s);
            self.slab[victim] = slot;
            victim
        } else {
            self.grow_slab();
            self.slab.push(slot);
            self.slab.len() - 1
        };
        let slab = &self.slab;
        // Cannot truncate: `cap` is at most ceil(max_entries / shards), and a shard of 2^32
        // 32-byte slots (128 GiB) cannot be allocated.
        self.index
            .insert_unique(hash(key), pos as u32, |&i| hash(slab[i as usize].key));
        self.count_up(backend);
        self.stats.created += 1;
    }

    /// Doubles the slab like `Vec` would, but never beyond `cap`, so a full shard holds exactly
    /// `cap` slots of capacity.
    fn grow_slab(&mut self) {
        let len = self.slab.len();
        if len < self.slab.capacity() {
            return;
        }
        let target = (len * 2).max(16).min(self.cap).max(len + 1);
        self.slab.reserve_exact(target - len);
    }

    fn count_up(&mut self, backend: u32) {
        let b = backend as usize;
        if b >= self.counts.len() {
            self.counts.resize(b + 1, 0);
        }
        self.counts[b] += 1;
    }

    /// Drops the index entry of the slot at `pos`.
    fn unindex(&mut self, pos: usize) {
        let key = self.slab[pos].key;
        if let Ok(entry) = self.index.find_entry(hash(key), |&i| i as usize == pos) {
            entry.remove();
        }
    }

    /// Removes the slot at `pos` (the last slot moves into its place) and updates counts.
    fn remove_at(&mut self, pos: usize) -> Slot {
        self.unindex(pos);
        let removed = self.slab.swap_remove(pos);
        if pos < self.slab.len() {
            let moved_from = self.slab.len();
            let moved_key = self.slab[pos].key;
            if let Some(i) = self
                .index
                .find_mut(hash(moved_key), |&i| i as usize == moved_from)
            {
                *i = pos as u32;
            }
        }
        self.counts[removed.backend as usize] -= 1;
        removed
    }

    /// Approximate LRU: of a few random slots, the least recently seen. Slab must be non-empty.
    fn pick_victim(&mut self) -> usize {
        let len = self.slab.len();
        let mut victim = self.random_below(len);
        for _ in 1..EVICTION_SAMPLES {
            let i = self.random_below(len);
            if self.slab[i].last_seen_s < self.slab[victim].last_seen_s {
                victim = i;
            }
        }
        victim
    }

    /// Unindexes and uncounts the slot at `pos`, to be overwritten. Counted as expired when it
    /// already was, else as evicted.
    fn evict_at(&mut self, pos: usize, now_s: u32, ttl_s: u32) {
        self.unindex(pos);
        let old = self.slab[pos];
        self.counts[old.backend as usize] -= 1;
        if is_expired(old.last_seen_s, now_s, ttl_s) {
            self.stats.expired += 1;
        } else {
            self.stats.evicted += 1;
        }
    }

    fn random_below(&mut self, n: usize) -> usize {
        // xorshift64 (Marsaglia): plenty for picking eviction candidates.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        (x % n as u64) as usize
    }

    pub(super) fn remove(&mut self, key: u128) -> Option<BackendId> {
        let pos = self.find(key)?;
        Some(BackendId(self.remove_at(pos).backend))
    }

    pub(super) fn info(&self, key: u128) -> Option<PinInfo> {
        let s = &self.slab[self.find(key)?];
        Some(PinInfo {
            backend: BackendId(s.backend),
            backup: s.pin().backup,
            created: u64::from(s.created_s) * 1000,
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

    /// Removes every slot matching `doomed`; returns how many.
    fn remove_where(&mut self, mut doomed: impl FnMut(&Slot) -> bool) -> usize {
        let mut removed = 0;
        // Backwards: the slot that swap_remove moves into `pos` was already looked at.
        for pos in (0..self.slab.len()).rev() {
            if doomed(&self.slab[pos]) {
                self.remove_at(pos);
                removed += 1;
            }
        }
        removed
    }

    pub(super) fn sweep(&mut self, now_s: u32, ttl_s: u32) -> usize {
        let n = self.remove_where(|s| is_expired(s.last_seen_s, now_s, ttl_s));
        self.stats.expired += n as u64;
        n
    }

    pub(super) fn remove_backend(&mut self, backend: BackendId) -> usize {
        if self.count(backend) == 0 {
            return 0;
        }
        self.remove_where(|s| s.backend == backend.0)
    }

    pub(super) fn keys_on(&self, backend: BackendId, limit: usize, out: &mut Vec<SessionKey>) {
        if self.count(backend) == 0 {
            return;
        }
        let keys = self.slab.iter().filter(|s| s.backend == backend.0);
        out.extend(
            keys.map(|s| SessionKey(s.key))
                .take(limit.saturating_sub(out.len())),
        );
    }

    /// Bytes allocated by this shard's slab, index and counts (capacity, not length).
    pub(super) fn memory_bytes(&self) -> usize {
        self.slab.capacity() * std::mem::size_of::<Slot>()
            + self.index.allocation_size()
            + self.counts.capacity() * std::mem::size_of::<u32>()
    }

    #[cfg(test)]
    pub(super) fn check_invariants(&self) {
        assert_eq!(self.slab.len(), self.index.len());
        assert!(self.slab.len() <= self.cap);
        for (pos, s) in self.slab.iter().enumerate() {
            assert_eq!(self.find(s.key), Some(pos));
        }
        let mut counts = vec![0u32; self.counts.len()];
        for s in &self.slab {
            counts[s.backend as usize] += 1;
        }
        assert_eq!(counts, self.counts);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn slot_is_32_bytes() {
        assert_eq!(std::mem::size_of::<super::Slot>(), 32);
    }
}
