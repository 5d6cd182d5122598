//! Hand-over of the overlay to another process (zero-downtime upgrade): export every live pin
//! with its age and idle time relative to `now`, import pins exported by another overlay, and
//! a journal of the keys whose pin changed, so the changes made after the export can follow.
//!
//! Times cross as *durations* (age, idle), so the two processes need not share a clock; they
//! keep the overlay's second granularity. Backends cross as [`BackendId`]s of the caller's
//! [`crate::Interner`]: the caller maps them to names and back (ids are per process).
//!
//! The journal records keys, not values: [`Overlay::journal_take`] reads each noted key's pin
//! *now*, so a key changed ten times is sent once, as it is. An optional [`Wake`] callback
//! tells the reader that a journal has something (once per take), so changes can leave at once
//! instead of at the next poll. What it notes: new pins (also
//! imported ones, so a process can pass on what it is still receiving), re-pins (backend or
//! backup changed) and explicit removals. Not noted: idle expiry and eviction (each process
//! applies its own TTL and bound) and last-seen refreshes. A journal that outgrows its bound
//! is dropped and its shard is sent whole instead (removals made meanwhile are then not sent;
//! those pins idle out on the other side).
//!
//! ```
//! use berth_routing::{BackendId, Change, Overlay, OverlayConfig, SessionKey};
//! let old = Overlay::new(OverlayConfig::default());
//! let key = SessionKey::new(b"header", b"s1");
//! old.pin(key, BackendId(3), None, 10_000);
//! old.journal_start(None);
//! let mut pins = Vec::new();
//! old.export(70_000, &mut pins); // a minute later
//! assert_eq!((pins[0].key, pins[0].idle), (key, 60_000));
//!
//! let new = Overlay::new(OverlayConfig::default());
//! for rec in &pins {
//!     new.import(rec, 5_000); // its own clock
//! }
//! assert_eq!(new.get(key, 5_000).map(|p| p.backend), Some(BackendId(3)));
//!
//! old.pin(key, BackendId(4), None, 71_000); // re-pinned after the export
//! let mut changes = Vec::new();
//! old.journal_take(71_000, &mut changes);
//! assert!(matches!(changes.as_slice(), [Change::Pinned(r)] if r.pin.backend == BackendId(4)));
//! ```
use super::shard::{is_expired, Shard, NO_BACKUP};
use super::table::{Slot, ID_MASK, PLACED};
use super::{Overlay, Pin};
use crate::{Millis, SessionKey};
use std::sync::Arc;

/// Called when a journal notes its first change since it was last taken. It runs under a
/// shard lock on the request path: it must be quick and must not call into the overlay.
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// One pin as exported: where `key` lives, how long ago it was pinned (`age`) and last used
/// (`idle`), in milliseconds (whole seconds: the overlay's granularity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinRecord {
    pub key: SessionKey,
    pub pin: Pin,
    pub age: Millis,
    pub idle: Millis,
    /// Made by a lookup that missed (a ring pick for a key the overlay did not know), not by an
    /// explicit pin (learned id, failover, migration). See [`Overlay::import`].
    pub placed: bool,
}

/// A change read from the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The key's pin as it is now (new or re-pinned).
    Pinned(PinRecord),
    /// The key is no longer pinned.
    Removed(SessionKey),
}

/// What [`Overlay::import`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imported {
    /// The key was not pinned here: it is now (not counted as created).
    Added,
    /// The key was pinned here: it now points where the record says.
    Updated,
    /// The key is pinned here explicitly to another backend and the record is only a
    /// placement: the pin here stays.
    Kept,
    /// The record was idle for this overlay's TTL: ignored.
    Expired,
}

/// What [`Overlay::journal_take`] read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Taken {
    /// Shards whose journal had overflowed: sent whole instead.
    pub overflowed_shards: usize,
}

/// Keys noted in one shard while a journal is on.
pub(super) struct Journal {
    keys: Vec<u128>,
    overflowed: bool,
    cap: usize,
    wake: Option<Wake>,
    /// `wake` was called since the last take.
    woken: bool,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("keys", &self.keys.len())
            .field("overflowed", &self.overflowed)
            .field("cap", &self.cap)
            .finish()
    }
}

/// Fewest keys a shard's journal holds before it overflows.
const JOURNAL_MIN: usize = 1024;
/// Most keys a shard's journal holds (16 bytes each) before it overflows.
const JOURNAL_MAX: usize = 1 << 16;

impl Journal {
    fn new(shard_cap: usize, wake: Option<Wake>) -> Journal {
        Journal {
            keys: Vec::new(),
            overflowed: false,
            cap: shard_cap.clamp(JOURNAL_MIN, JOURNAL_MAX),
            wake,
            woken: false,
        }
    }

    #[inline]
    pub(super) fn note(&mut self, key: u128) {
        if !self.woken {
            self.woken = true;
            if let Some(wake) = &self.wake {
                wake();
            }
        }
        if self.overflowed {
            return;
        }
        if self.keys.len() >= self.cap {
            self.overflowed = true;
            self.keys = Vec::new();
        } else {
            self.keys.push(key);
        }
    }
}

fn secs_to_millis(s: u32) -> Millis {
    Millis::from(s) * 1000
}

impl Shard {
    fn record(slot: &Slot, now_s: u32) -> PinRecord {
        PinRecord {
            key: SessionKey(slot.key),
            pin: slot.pin(),
            age: secs_to_millis(now_s.saturating_sub(slot.created())),
            idle: secs_to_millis(now_s.saturating_sub(slot.last_seen_s)),
            placed: slot.placed(),
        }
    }

    fn export(&self, now_s: u32, ttl_s: u32, out: &mut Vec<PinRecord>) {
        out.extend(
            self.table
                .iter()
                .filter(|s| !is_expired(s, now_s, ttl_s))
                .map(|s| Self::record(s, now_s)),
        );
    }

    pub(super) fn import(&mut self, rec: &PinRecord, now_s: u32, ttl_s: u32) -> Imported {
        let age_s = u32::try_from(rec.age / 1000).unwrap_or(u32::MAX);
        let idle_s = u32::try_from(rec.idle / 1000).unwrap_or(u32::MAX);
        if ttl_s != 0 && idle_s >= ttl_s {
            return Imported::Expired;
        }
        let last_seen_s = now_s.saturating_sub(idle_s);
        let created_s = now_s.saturating_sub(age_s).min(last_seen_s);
        let placed = if rec.placed { PLACED } else { 0 };
        match self.table.find(rec.key.0) {
            Ok(pos) => {
                let before = *self.table.slot(pos);
                let live = !is_expired(&before, now_s, ttl_s);
                let moved = before.id() != rec.pin.backend.0;
                if live && moved && rec.placed && !before.placed() {
                    // Two processes placed the key differently at once (during an upgrade):
                    // a ring pick does not override an explicit pin (e.g. a learned id).
                    return Imported::Kept;
                }
                // Ids change; this process's in-flight count and frequency stay.
                let mut after = before;
                after.backend = rec.pin.backend.0 | (before.backend & !ID_MASK);
                after.backup =
                    rec.pin.backup.map_or(NO_BACKUP, |b| b.0) | (before.backup & !ID_MASK);
                if moved || !live {
                    // Another session than the one held here: take its times.
                    after.created_s = created_s | placed;
                    after.last_seen_s = last_seen_s;
                } else {
                    // The same session: explicit if either side pinned it explicitly.
                    let flags = before.created_s & PLACED & placed;
                    after.created_s = before.created().min(created_s) | flags;
                    after.last_seen_s = before.last_seen_s.max(last_seen_s);
                }
                *self.table.slot_mut(pos) = after;
                self.account(Some(&before), Some(&after));
                if before.id() != after.id() || before.backup_id() != after.backup_id() {
                    self.note(before.key);
                }
                Imported::Updated
            }
            Err(vacant) => {
                let mut slot = Shard::fresh(rec.key.0, rec.pin, now_s, false);
                slot.created_s = created_s | placed;
                slot.last_seen_s = last_seen_s;
                self.insert_slot(slot, now_s, ttl_s, vacant);
                Imported::Added
            }
        }
    }

    fn take(&mut self, now_s: u32, ttl_s: u32, out: &mut Vec<Change>) -> bool {
        let Some(j) = self.journal.as_mut() else {
            return false;
        };
        j.woken = false;
        if std::mem::take(&mut j.overflowed) {
            let mut all = Vec::new();
            self.export(now_s, ttl_s, &mut all);
            out.extend(all.into_iter().map(Change::Pinned));
            return true;
        }
        let mut keys = std::mem::take(&mut j.keys);
        keys.sort_unstable();
        keys.dedup();
        for key in keys {
            let live = self
                .table
                .find(key)
                .ok()
                .map(|pos| self.table.slot(pos))
                .filter(|s| !is_expired(s, now_s, ttl_s));
            out.push(match live {
                Some(s) => Change::Pinned(Self::record(s, now_s)),
                None => Change::Removed(SessionKey(key)),
            });
        }
        false
    }
}

impl Overlay {
    /// Every live pin of shard `shard` (`0..shards()`), appended to `out`. One shard at a
    /// time keeps each lock short and lets a caller send an overlay in bounded pieces.
    /// Panics if `shard >= shards()`.
    pub fn export_shard(&self, shard: usize, now: Millis, out: &mut Vec<PinRecord>) {
        self.shards[shard]
            .0
            .lock()
            .export(Self::secs(now), self.ttl_s, out);
    }

    /// Every live pin (idle-expired ones are left out), appended to `out`.
    pub fn export(&self, now: Millis, out: &mut Vec<PinRecord>) {
        for shard in 0..self.shards() {
            self.export_shard(shard, now, out);
        }
    }

    /// Pin `rec.key` as `rec` says, with its age and idle time counted back from `now`
    /// (this overlay's clock). A key pinned here already is re-pointed (counts follow), unless
    /// it is pinned here explicitly and the record is a placement ([`Imported::Kept`]: during
    /// an upgrade both processes serve for a few seconds, and a session id learned by one must
    /// not be overridden by the other's ring pick for it). Imports are not counted as created;
    /// a full shard evicts as [`Overlay::pin`] does. A record idle for this overlay's TTL is
    /// ignored.
    pub fn import(&self, rec: &PinRecord, now: Millis) -> Imported {
        self.shard(rec.key)
            .lock()
            .import(rec, Self::secs(now), self.ttl_s)
    }

    /// Start noting changed keys (a fresh, empty journal in every shard). Until
    /// [`Overlay::journal_stop`], pins, re-pins, imports and removals note their key, and
    /// `wake` (if any) is called at a shard's first change after each take.
    pub fn journal_start(&self, wake: Option<Wake>) {
        for s in self.shards.iter() {
            let mut shard = s.0.lock();
            shard.journal = Some(Journal::new(shard.cap, wake.clone()));
        }
    }

    /// Stop noting changes and drop what was noted.
    pub fn journal_stop(&self) {
        for s in self.shards.iter() {
            s.0.lock().journal = None;
        }
    }

    /// The changes noted since the journal started or was last taken, appended to `out`: each
    /// noted key once, as it is at `now` (pinned → [`Change::Pinned`]; gone or idle-expired →
    /// [`Change::Removed`]). A shard whose journal overflowed is sent whole instead. Nothing
    /// when the journal is off.
    pub fn journal_take(&self, now: Millis, out: &mut Vec<Change>) -> Taken {
        let now_s = Self::secs(now);
        let mut taken = Taken::default();
        for s in self.shards.iter() {
            if s.0.lock().take(now_s, self.ttl_s, out) {
                taken.overflowed_shards += 1;
            }
        }
        taken
    }
}

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod tests;
