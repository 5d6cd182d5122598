//! One routing table of an upstream: backends + ring, sharing the overlay with other tables.
//!
//! Eligibility: a backend serves its *existing* sessions (overlay hits, tokens) while it is up;
//! it takes *new* placements while it is up, not draining and has weight > 0 — and, when the
//! upstream limits load, while its active sessions are below its `max_sessions` cap and below
//! the bounded-load cap `ceil((1+ε) · (A+1) · w / W)` (Mirrokni, Thorup, Zadimoghaddam,
//! "Consistent Hashing with Bounded Loads"; A = active sessions on backends taking new
//! sessions, W = their total weight, w = this backend's weight). A new session walks the ring
//! from its point and takes the first backend that fits.
use crate::{
    BackendId, BackendIdx, Decision, Hashing, Interner, Lookup, Millis, Overlay, Pin, PinOutcome,
    Reason, Refusal, Ring, SessionKey,
};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

mod keyless;
#[cfg(test)]
mod keyless_tests;
mod load;
#[cfg(test)]
mod load_tests;
#[cfg(test)]
mod tests;
mod unpinned;
mod walk;

pub use load::Move;

/// A backend as the routing core sees it: a stable name and a weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    /// Stable name (e.g. `host:port`); hashed onto the ring and interned to a [`BackendId`].
    pub name: String,
    /// Share of new sessions; 0 = no new sessions (existing pins still served).
    pub weight: u32,
    /// Hard cap on active sessions; at the cap the backend takes no new session.
    pub max_sessions: Option<u32>,
}

impl BackendSpec {
    /// A backend called `name` with `weight`, no cap.
    pub fn new(name: &str, weight: u32) -> Self {
        BackendSpec {
            name: name.to_string(),
            weight,
            max_sessions: None,
        }
    }

    /// The same backend with a cap on active sessions.
    pub fn with_max_sessions(mut self, max: u32) -> Self {
        self.max_sessions = Some(max);
        self
    }
}

/// How an upstream hashes and places.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouterConfig {
    /// Ketama or modulo.
    pub hashing: Hashing,
    /// Ketama points per unit of weight (default 160, as nginx/pingora-ketama).
    pub points_per_weight: u32,
    /// Bounded-load ε in thousandths (250 = 0.25): a new session goes to the first ring node
    /// whose active sessions are below `ceil((1+ε)·(A+1)·w/W)`. `None` = plain ring.
    pub bound_milli: Option<u32>,
    /// A pinned session whose backend is over its `max_sessions` (after the cap was lowered,
    /// or by concurrent placements) moves to the next node that fits (reason `Spill`).
    pub spill_pinned: bool,
    /// `select`/`select_named` count the request in flight on the session (the caller ends
    /// it with [`Overlay::release`]); sessions in flight never expire and never rebalance.
    pub track_in_flight: bool,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            hashing: Hashing::Ketama,
            points_per_weight: crate::DEFAULT_POINTS_PER_WEIGHT,
            bound_milli: None,
            spill_pinned: false,
            track_in_flight: false,
        }
    }
}

#[derive(Debug)]
struct Backend {
    name: Arc<str>,
    id: BackendId,
    weight: u32,
    /// Cap on active sessions (`u32::MAX` = none).
    max_sessions: u32,
    up: AtomicBool,
    draining: AtomicBool,
}

/// `by_id` value for ids not in this table.
const ABSENT: u32 = u32::MAX;

/// An immutable routing table (backends + ring) sharing a mutable [`Overlay`] with the tables
/// before and after it. Backend health is an atomic flag per backend, settable by the gateway.
///
/// Backend names must be unique (config validation's job): of duplicates, the first is the one
/// found by name and id and the later ones get no ring points.
#[derive(Debug)]
pub struct Router {
    backends: Box<[Backend]>,
    ring: Ring,
    /// Backends without ring points (weight 0, duplicates), for the last-resort failover.
    off_ring: Box<[usize]>,
    by_name: HashMap<Arc<str>, BackendIdx>,
    /// `BackendId.0` → index, [`ABSENT`] when not in this table. Dense: O(1) per hit.
    by_id: Box<[u32]>,
    /// How many backends take new placements; kept by the setters under `flags`, so an
    /// all-down table answers at once and a single eligible backend needs no backup walk.
    takes_new: AtomicUsize,
    /// Total weight of the backends taking new placements (kept with `takes_new`).
    eligible_weight: AtomicU64,
    /// Backends with ring points that take no new placement, for the bounded-load mean
    /// (kept with `takes_new`; see `load.rs`).
    ineligible: load::Ineligible,
    /// Whether placement checks loads at all (a bound or a cap is configured).
    limited: bool,
    /// Cumulative ring weights by index, for sampling backends ∝ weight in keyless placement
    /// over large tables (empty for small ones, which are scanned; see `keyless.rs`).
    cum_weight: Box<[u64]>,
    cfg: RouterConfig,
    flags: Mutex<()>,
    overlay: Arc<Overlay>,
    names: Interner,
}

impl Router {
    /// A table over `backends` (index i = `backends[i]`), all up and not draining, sharing
    /// `overlay`. Ids come from `names`, which the router keeps (a shared clone) to name
    /// backends that are no longer in the table.
    pub fn new(
        cfg: RouterConfig,
        backends: &[BackendSpec],
        overlay: Arc<Overlay>,
        names: &Interner,
    ) -> Router {
        let mut by_name = HashMap::with_capacity(backends.len());
        let mut table = Vec::with_capacity(backends.len());
        let mut ring_spec = Vec::with_capacity(backends.len());
        for (i, spec) in backends.iter().enumerate() {
            let name: Arc<str> = Arc::from(spec.name.as_str());
            let first = !by_name.contains_key(&name);
            if first {
                by_name.insert(name.clone(), i);
            }
            ring_spec.push((spec.name.as_str(), if first { spec.weight } else { 0 }));
            table.push(Backend {
                id: names.intern(&spec.name),
                name,
                weight: spec.weight,
                max_sessions: spec.max_sessions.unwrap_or(u32::MAX),
                up: AtomicBool::new(true),
                draining: AtomicBool::new(false),
            });
        }
        let ring = Ring::new(cfg.hashing, cfg.points_per_weight, &ring_spec);
        let off_ring = (0..backends.len())
            .filter(|&i| ring_spec[i].1 == 0)
            .collect();
        let limited =
            cfg.bound_milli.is_some() || backends.iter().any(|b| b.max_sessions.is_some());
        let cum_weight = keyless::cumulative(&ring_spec);
        let router = Router {
            by_id: dense_ids(&table, &by_name),
            backends: table.into_boxed_slice(),
            ring,
            off_ring,
            by_name,
            takes_new: AtomicUsize::new(0),
            eligible_weight: AtomicU64::new(0),
            ineligible: load::Ineligible::default(),
            limited,
            cum_weight,
            cfg,
            flags: Mutex::new(()),
            overlay,
            names: names.clone(),
        };
        router.recount();
        router
    }

    /// Number of backends.
    pub fn len(&self) -> usize {
        self.backends.len()
    }

    /// True when the table has no backend.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Name of backend `idx`. Panics if `idx >= len()`, like slice indexing.
    pub fn name(&self, idx: BackendIdx) -> &str {
        &self.backends[idx].name
    }

    /// Stable id of backend `idx`. Panics if `idx >= len()`.
    pub fn id(&self, idx: BackendIdx) -> BackendId {
        self.backends[idx].id
    }

    /// Configured weight of backend `idx`. Panics if `idx >= len()`.
    pub fn weight(&self, idx: BackendIdx) -> u32 {
        self.backends[idx].weight
    }

    /// Index of the backend called `name` in this table.
    pub fn index_of(&self, name: &str) -> Option<BackendIdx> {
        self.by_name.get(name).copied()
    }

    /// Index of the backend with id `id` in this table (O(1)).
    pub fn index_of_id(&self, id: BackendId) -> Option<BackendIdx> {
        match self.by_id.get(id.0 as usize) {
            Some(&i) if i != ABSENT => Some(i as usize),
            _ => None,
        }
    }

    /// The overlay this table shares.
    pub fn overlay(&self) -> &Arc<Overlay> {
        &self.overlay
    }

    /// The ring (for diagnostics and tests).
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Marks backend `idx` healthy or not. Panics if `idx >= len()`.
    pub fn set_up(&self, idx: BackendIdx, up: bool) {
        let _g = self.flags.lock();
        self.backends[idx].up.store(up, Ordering::Release);
        self.recount();
    }

    /// Whether backend `idx` is up (serves its existing sessions). Panics if `idx >= len()`.
    pub fn is_up(&self, idx: BackendIdx) -> bool {
        self.backends[idx].up.load(Ordering::Acquire)
    }

    /// Marks backend `idx` draining: no new placements, existing sessions still served.
    /// Panics if `idx >= len()`.
    pub fn set_draining(&self, idx: BackendIdx, draining: bool) {
        let _g = self.flags.lock();
        self.backends[idx]
            .draining
            .store(draining, Ordering::Release);
        self.recount();
    }

    /// Whether backend `idx` is draining. Panics if `idx >= len()`.
    pub fn is_draining(&self, idx: BackendIdx) -> bool {
        self.backends[idx].draining.load(Ordering::Acquire)
    }

    /// Whether backend `idx` takes new placements: up, not draining, weight > 0.
    /// Panics if `idx >= len()`.
    pub fn takes_new(&self, idx: BackendIdx) -> bool {
        let b = &self.backends[idx];
        b.weight > 0 && b.up.load(Ordering::Acquire) && !b.draining.load(Ordering::Acquire)
    }

    /// Copies the up/draining flags of same-named backends from `prev` (the table this one
    /// replaces), so a reload does not forget health.
    pub fn inherit_flags(&self, prev: &Router) {
        let _g = self.flags.lock();
        for b in self.backends.iter() {
            if let Some(j) = prev.index_of(&b.name) {
                b.up.store(prev.is_up(j), Ordering::Release);
                b.draining.store(prev.is_draining(j), Ordering::Release);
            }
        }
        self.recount();
    }

    fn recount(&self) {
        let n = (0..self.len()).filter(|&i| self.takes_new(i)).count();
        let w = (0..self.len())
            .filter(|&i| self.takes_new(i))
            .map(|i| u64::from(self.backends[i].weight))
            .sum();
        self.eligible_weight.store(w, Ordering::Release);
        self.ineligible
            .set((0..self.len()).filter(|&i| !self.takes_new(i)));
        self.takes_new.store(n, Ordering::Release);
    }

    /// The configuration it was built with.
    pub fn config(&self) -> RouterConfig {
        self.cfg
    }

    /// Cap on active sessions of backend `idx`, if any. Panics if `idx >= len()`.
    pub fn max_sessions(&self, idx: BackendIdx) -> Option<u32> {
        let m = self.backends[idx].max_sessions;
        (m != u32::MAX).then_some(m)
    }

    /// Active sessions on backend `idx` (lock-free). Panics if `idx >= len()`.
    pub fn load(&self, idx: BackendIdx) -> u32 {
        self.overlay.active(self.backends[idx].id)
    }

    /// Overlay key: pinned & eligible → Sticky; no pin → ring walk (bounded), pin, New; pin on
    /// an ineligible/removed backend → its stored backup if it fits, else the next ring node
    /// that fits; re-pin, Failover (previous set); pin on a backend over its cap with
    /// `spill_pinned` → next node that fits, Spill. Refused (nothing pinned or changed) when no
    /// backend takes new sessions, or every one that does is at its cap.
    pub fn select(&self, key: SessionKey, now: Millis) -> Result<Decision, Refusal> {
        // A miss places and pins under the same shard lock as the lookup (one probe).
        let mut placed = Err(Refusal::NoBackend);
        let acquire = self.cfg.track_in_flight;
        let found = self.overlay.get_or_pin(key, now, acquire, || {
            placed = self.pick(key.ring_point(), &[], true);
            let (backend, backup) = placed.ok()?;
            Some(Pin {
                backend: self.id(backend),
                backup: backup.map(|b| self.id(b)),
            })
        });
        let pin = match found {
            Lookup::Found(pin) => pin,
            Lookup::Pinned(_) => {
                let (backend, backup) = placed?;
                return Ok(Decision {
                    backend,
                    backup,
                    reason: Reason::New,
                    previous: None,
                });
            }
            Lookup::Unplaced => return Err(placed.err().unwrap_or(Refusal::NoBackend)),
        };
        match self.index_of_id(pin.backend) {
            Some(i) if self.is_up(i) => {
                if let Some(d) = self.spill(key, i, now) {
                    return Ok(d);
                }
                Ok(self.sticky(key, i, pin.backup, now))
            }
            old => {
                let backup = pin.backup.and_then(|b| self.index_of_id(b));
                let d = self.moved(key.ring_point(), old, backup, pin.backend)?;
                self.repin(key, &d, now);
                Ok(d)
            }
        }
    }

    /// With `spill_pinned`, a session on `i` while `i` is over its cap moves to the first ring
    /// node from its point that fits (re-pinned, reason Spill); `None` when it stays.
    fn spill(&self, key: SessionKey, i: BackendIdx, now: Millis) -> Option<Decision> {
        if !self.cfg.spill_pinned || self.load(i) <= self.backends[i].max_sessions {
            return None;
        }
        let (backend, backup) = self.pick(key.ring_point(), &[i], true).ok()?;
        let d = Decision {
            backend,
            backup,
            reason: Reason::Spill,
            previous: Some(self.id(i)),
        };
        self.repin(key, &d, now);
        Some(d)
    }

    /// A verified token names backend `name`. The session is also tracked in the overlay under
    /// `key` (so it counts towards its backend's sessions, and drains and migrations see it):
    /// * an overlay pin on an up backend wins — the named backend when they agree (Sticky),
    ///   otherwise the session was moved (migration, earlier failover) and follows its pin
    ///   (Failover, previous = the named backend), so the caller re-issues the token;
    /// * no usable pin: the named backend when up (Sticky, pinned now);
    /// * else the stored backup or the next ring node from `key` (Failover, re-pinned,
    ///   previous = the interned id of `name` if it was ever known).
    ///
    /// A token without a pin is a session seen for the first time: for one issued to a keyless
    /// placement ([`Router::select_keyless`]) that is its return, and the named backend's
    /// [`Overlay::pending`] count goes down by one as the pin takes over.
    pub fn select_named(
        &self,
        name: &str,
        key: SessionKey,
        now: Millis,
    ) -> Result<Decision, Refusal> {
        let named = self.index_of(name);
        let pin = if self.cfg.track_in_flight {
            self.overlay.acquire(key, now)
        } else {
            self.overlay.get(key, now)
        };
        if let (None, Some(i)) = (pin, named) {
            // First sight of this token: if it was issued for a keyless placement, that
            // session has come back and is pinned below (counted as active from now on).
            self.overlay.returned_pending(self.id(i), now);
        }
        if let Some(pin) = pin {
            if let Some(i) = self.index_of_id(pin.backend).filter(|&i| self.is_up(i)) {
                if let Some(mut d) = self.spill(key, i, now) {
                    if Some(i) != named {
                        d.previous = self.names.get(name);
                    }
                    return Ok(d);
                }
                let mut d = self.sticky(key, i, pin.backup, now);
                if Some(i) != named {
                    d.reason = Reason::Failover;
                    d.previous = self.names.get(name);
                }
                return Ok(d);
            }
        }
        if let Some(i) = named.filter(|&i| self.is_up(i)) {
            let stored = pin
                .filter(|p| p.backend == self.id(i))
                .and_then(|p| p.backup);
            let mut d = self.sticky_pinning(key, i, stored, now);
            if let Some(p) = pin.filter(|p| p.backend != self.id(i)) {
                // Its pinned backend is down or gone: back to the one its token names.
                d.reason = Reason::Failover;
                d.previous = Some(p.backend);
            }
            return Ok(d);
        }
        let backup = pin.and_then(|p| p.backup).and_then(|b| self.index_of_id(b));
        let previous = self.names.get(name);
        let mut d = self.moved(key.ring_point(), named, backup, BackendId(u32::MAX))?;
        d.previous = previous;
        self.repin(key, &d, now);
        Ok(d)
    }

    /// Sticky on `i`, making sure `key` is pinned there (first sight of a token session).
    fn sticky_pinning(
        &self,
        key: SessionKey,
        i: usize,
        stored: Option<BackendId>,
        now: Millis,
    ) -> Decision {
        let d = self.sticky(key, i, stored, now);
        self.repin(key, &d, now);
        d
    }

    /// After `failed` backends failed for this request: the key's stored backup when its
    /// pinned backend is among `failed` and the backup takes new sessions; else the first ring
    /// node from `point` not in `failed` that takes new sessions; else (last resort) one that
    /// is merely up. Re-pins `key` there when given. Reason Failover, previous = `failed[0]`.
    pub fn failover(
        &self,
        point: u32,
        key: Option<SessionKey>,
        failed: &[BackendIdx],
        now: Millis,
    ) -> Option<Decision> {
        let stored = key
            .and_then(|k| self.overlay.get(k, now))
            .filter(|p| {
                self.index_of_id(p.backend)
                    .is_some_and(|i| failed.contains(&i))
            })
            .and_then(|p| p.backup)
            .and_then(|b| self.index_of_id(b))
            .filter(|b| !failed.contains(b) && self.takes_new(*b));
        let backend = match stored {
            Some(b) => b,
            None => self
                .pick(point, failed, true)
                .ok()
                .map(|(b, _)| b)
                .or_else(|| self.any_up(point, failed))?,
        };
        let d = Decision {
            backend,
            backup: self.backup_after(point, backend, failed),
            reason: Reason::Failover,
            previous: failed
                .first()
                .and_then(|&i| self.backends.get(i))
                .map(|b| b.id),
        };
        if let Some(k) = key {
            self.repin(k, &d, now);
        }
        Some(d)
    }

    /// Pins `key` to backend `idx` (e.g. a session id learned from a response), with the first
    /// ring node from the key's point that takes new sessions as backup. Panics if
    /// `idx >= len()`.
    pub fn pin(&self, key: SessionKey, idx: BackendIdx, now: Millis) -> PinOutcome {
        let backup = self
            .backup_after(key.ring_point(), idx, &[])
            .map(|b| self.id(b));
        self.overlay.pin(key, self.id(idx), backup, now)
    }

    /// Hit on an up backend: the stored backup when it still takes new sessions, else a walk
    /// (and the fresh backup is stored, so the next hit is cheap again).
    fn sticky(
        &self,
        key: SessionKey,
        i: usize,
        stored: Option<BackendId>,
        now: Millis,
    ) -> Decision {
        let valid = stored
            .and_then(|b| self.index_of_id(b))
            .filter(|&b| b != i && self.takes_new(b));
        let backup = valid.or_else(|| {
            let fresh = self.backup_after(key.ring_point(), i, &[]);
            let fresh_id = fresh.map(|b| self.id(b));
            if fresh_id != stored {
                self.overlay.pin(key, self.id(i), fresh_id, now);
            }
            fresh
        });
        Decision {
            backend: i,
            backup,
            reason: Reason::Sticky,
            previous: None,
        }
    }

    /// Where a session pinned to an unusable (or removed) backend goes: its stored backup when
    /// that takes new sessions and fits, else the ring.
    fn moved(
        &self,
        point: u32,
        old: Option<usize>,
        backup: Option<usize>,
        old_id: BackendId,
    ) -> Result<Decision, Refusal> {
        let exclude: &[usize] = old.as_slice();
        let usable = |b: usize| Some(b) != old && self.takes_new(b) && self.fits_now(b);
        let (backend, backup) = match backup.filter(|&b| usable(b)) {
            Some(b) => (b, self.backup_after(point, b, exclude)),
            // An existing session is never refused for caps: over a cap beats no service.
            None => self
                .pick(point, exclude, true)
                .or_else(|_| self.pick(point, exclude, false))?,
        };
        Ok(Decision {
            backend,
            backup,
            reason: Reason::Failover,
            previous: Some(old_id),
        })
    }

    fn repin(&self, key: SessionKey, d: &Decision, now: Millis) {
        let backup = d.backup.map(|b| self.id(b));
        self.overlay.pin(key, self.id(d.backend), backup, now);
    }
}

/// `BackendId.0 → index` for the first backend of each name.
fn dense_ids(table: &[Backend], by_name: &HashMap<Arc<str>, BackendIdx>) -> Box<[u32]> {
    let max = table.iter().map(|b| b.id.0 as usize + 1).max().unwrap_or(0);
    let mut by_id = vec![ABSENT; max];
    for &i in by_name.values() {
        // Cannot truncate: a table of 2^32 backends cannot be built (see `Ring::new`).
        by_id[table[i].id.0 as usize] = i as u32;
    }
    by_id.into_boxed_slice()
}
