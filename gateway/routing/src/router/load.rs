//! Load limits of a table: hard caps, the bounded-load cap, and rebalancing of idle sessions.
//!
//! Loads are the overlay's lock-free active-session counts ([`crate::Overlay::active`]). The
//! mean is over the backends taking new sessions: `A` = their active sessions (the overlay's
//! total minus the other backends of the table; pins left on backends no longer in the table
//! count until they move or expire), `W` = their total weight.
use super::Router;
use crate::{BackendId, BackendIdx, Millis, Pin, SessionKey};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

/// How many ineligible backends are tracked by index; beyond that the mean is summed over the
/// eligible backends instead (slower, only while many backends are down or draining).
const TRACKED: usize = 16;

/// The backends of a table that take no new sessions, written by `recount` under the flags
/// lock, read without locks (a reader racing a flag change may see a mix of old and new
/// entries: the mean is then briefly approximate).
#[derive(Debug, Default)]
pub(super) struct Ineligible {
    n: AtomicUsize,
    idx: [AtomicU32; TRACKED],
}

impl Ineligible {
    pub(super) fn set(&self, it: impl Iterator<Item = usize>) {
        let mut n = 0;
        for i in it {
            if n < TRACKED {
                self.idx[n].store(i as u32, Ordering::Relaxed);
            }
            n += 1;
        }
        self.n.store(n, Ordering::Release);
    }
}

/// One session moved by [`Router::rebalance`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Move {
    /// The session.
    pub key: SessionKey,
    /// Where it was.
    pub from: BackendId,
    /// Where it is now (index in the table that moved it).
    pub to: BackendIdx,
}

/// `(A, W)`: active sessions and total weight of the backends taking new sessions.
#[derive(Debug, Clone, Copy)]
pub(super) struct Totals {
    active: u64,
    weight: u64,
}

impl Router {
    pub(super) fn totals(&self) -> Totals {
        let weight = self.eligible_weight.load(Ordering::Acquire);
        let n = self.ineligible.n.load(Ordering::Acquire);
        let active = if n <= TRACKED {
            let others: u64 = self.ineligible.idx[..n]
                .iter()
                .map(|i| i.load(Ordering::Relaxed) as usize)
                .filter(|&i| i < self.len())
                .map(|i| u64::from(self.load(i)))
                .sum();
            self.overlay.loads().total().saturating_sub(others)
        } else {
            (0..self.len())
                .filter(|&i| self.takes_new(i))
                .map(|i| u64::from(self.load(i)))
                .sum()
        };
        Totals { active, weight }
    }

    /// Below its cap on active sessions.
    #[inline]
    pub(super) fn under_cap(&self, i: BackendIdx) -> bool {
        self.load(i) < self.backends[i].max_sessions
    }

    /// Takes one more new session under its cap and the load bound: `load < cap` and
    /// `load < ceil((1+ε)·(A+1)·w/W)`, i.e. `load·W·1000 < (1000+ε‰)·(A+1)·w` in integers.
    #[inline]
    pub(super) fn fits(&self, i: BackendIdx, t: Totals) -> bool {
        let b = &self.backends[i];
        let load = self.overlay.active(b.id);
        if load >= b.max_sessions {
            return false;
        }
        match self.cfg.bound_milli {
            None => true,
            Some(e) => {
                t.weight == 0
                    || u128::from(load) * u128::from(t.weight) * 1000
                        < u128::from(1000 + e) * u128::from(t.active + 1) * u128::from(b.weight)
            }
        }
    }

    /// [`Router::fits`] with fresh totals, or true when the table limits nothing.
    pub(super) fn fits_now(&self, i: BackendIdx) -> bool {
        !self.limited || self.fits(i, self.totals())
    }

    /// The bounded-load cap of backend `idx` for the next new session,
    /// `ceil((1+ε)·(A+1)·w/W)`, when a bound is configured and `idx` takes new sessions.
    /// Panics if `idx >= len()`.
    pub fn bound(&self, idx: BackendIdx) -> Option<u64> {
        let e = self.cfg.bound_milli?;
        if !self.takes_new(idx) {
            return None;
        }
        let t = self.totals();
        let num = u128::from(1000 + e) * u128::from(t.active + 1) * u128::from(self.weight(idx));
        let den = 1000 * u128::from(t.weight.max(1));
        Some(u64::try_from(num.div_ceil(den)).unwrap_or(u64::MAX))
    }

    /// Moves idle sessions off backends above the load bound, at most `budget` of them: for
    /// each backend taking new sessions whose active sessions exceed `(1+ε)·A·w/W` (most
    /// loaded first), up to its excess of sessions with no request in flight and unused for
    /// `idle_for`, but still counted as active (so each move lowers the excess: sessions past
    /// the active window count nowhere and stay), go to the first node from their ring point
    /// that stays at or below its own `(1+ε)·A·w/W` (and under its cap) with them; each move
    /// is checked and done under the session's shard lock, so a session in use never moves.
    /// Their backups are recomputed. Nothing happens without a bound. `idle_for` should be
    /// shorter than the active window, or nothing qualifies.
    pub fn rebalance(&self, idle_for: Millis, now: Millis, budget: usize) -> Vec<Move> {
        let mut moves = Vec::new();
        let Some(e) = self.cfg.bound_milli else {
            return moves;
        };
        let t = self.totals();
        if t.weight == 0 || budget == 0 {
            return moves;
        }
        // B_i = floor((1+ε)·A·w_i/W): donors are above it, targets stay at or below it, so a
        // move never makes a new donor and repeated passes converge.
        let bound = |i: BackendIdx| {
            u128::from(1000 + e) * u128::from(t.active) * u128::from(self.weight(i))
                / (1000 * u128::from(t.weight))
        };
        let mut donors: Vec<(u64, BackendIdx)> = (0..self.len())
            .filter(|&i| self.takes_new(i))
            .filter_map(|i| {
                let load = u128::from(self.load(i));
                (load > bound(i)).then(|| ((load - bound(i)) as u64, i))
            })
            .collect();
        donors.sort_unstable_by(|a, b| b.cmp(a));
        for (excess, i) in donors {
            let left = budget - moves.len();
            if left == 0 {
                break;
            }
            let from = self.id(i);
            let want = usize::try_from(excess).unwrap_or(usize::MAX).min(left);
            for key in self.overlay.idle_active_keys_on(from, idle_for, now, want) {
                let point = key.ring_point();
                let target = self.ring.walk(point).find(|&to| {
                    to != i
                        && self.takes_new(to)
                        && self.under_cap(to)
                        && u128::from(self.load(to)) < bound(to)
                });
                let Some(to) = target else { continue };
                let pin = Pin {
                    backend: self.id(to),
                    backup: self.backup_after(point, to, &[]).map(|b| self.id(b)),
                };
                if self.overlay.move_if_idle(key, from, pin, idle_for, now) {
                    moves.push(Move { key, from, to });
                }
            }
        }
        moves
    }
}
