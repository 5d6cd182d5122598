//! Placement of new sessions that have no key yet (cookie insert: the token is made for the
//! backend chosen here, so the session's key cannot pick the backend).
//!
//! Nothing ties such a session to a ring point, and every gateway agrees on it anyway (its
//! token names the backend), so it does not follow the ring: it goes to the eligible backend
//! with the lowest load per unit of weight once it has it, `(load + 1) / w`, where
//! **load = active sessions + [`Overlay::pending`]** — the backend's sessions plus the keyless
//! placements made on it that have not come back yet. Eligible = the same rules as any new
//! session: takes new sessions (up, not draining, weight > 0), under its `max_sessions` cap and
//! under the bounded-load cap (both counted in active sessions, as for every placement); when
//! none is under the bound, the lowest of those under their caps; when all are at their caps,
//! [`Refusal::Full`].
//!
//! * Tables of up to [`EXACT_MAX`] backends are scanned whole, starting at a random index.
//!   Placing by `(load + 1)/w` keeps `load_i / w_i ≤ (load_j + 1) / w_j` for every pair: equal
//!   backends never differ by more than one session. Ties go to the backend with the fewest
//!   keyless placements per unit of weight over the last minute or two
//!   ([`Overlay::recent_placements`]), then to the first from the random start (so concurrent
//!   threads do not all pick the same).
//! * Larger tables take the better of two backends drawn with probability ∝ weight ("the power
//!   of two choices", Mitzenmacher; Azar et al.): two loads read instead of N, and the most
//!   loaded backend stays within O(log log N) sessions of the mean. If fewer than two eligible
//!   backends come up in a few draws (most are full or down), the whole table is scanned.
//!
//! The random bits come from the caller (`rnd`), so the core stays deterministic under test.
//!
//! **Why pending placements count.** A session placed here is not pinned, and so not active,
//! until its client comes back with the token (usually its next request). Active counts alone
//! would not see a burst: 300 new sessions arriving before any of them returns would all see the
//! same loads and go to the same backend (or, with ties broken by round robin, spread evenly
//! only while nothing returns, and pile onto whichever backend's clients return last — a slow
//! backend looks emptiest and attracts more). Counting each placement from the moment it is made
//! until it becomes a pin makes the signal `placements not yet returned + sessions`, which a
//! return leaves unchanged (one pending becomes one active) and a concurrent placement changes
//! at once: 300 placements on three equal backends land 100/100/100 whether they come back
//! immediately, all at the end, or never; threads racing on the same reads can overshoot by at
//! most one each. A placement counts until its session comes back or for one to two seconds
//! ([`crate::PENDING_SPAN`]): enough for a first answer and the browser's next request, and
//! short, because a placement that never turns into a session (a client without cookies)
//! hides imbalance of the active counts while it counts (see `overlay/fresh.rs`). A burst that
//! outlasts the span, nobody coming back, would then drift like a random walk (the expired
//! generations' small differences add up); the tie-break by recent placements keeps it within
//! three sessions of even (`keyless_tests::a_burst_longer_than_the_span_stays_even`).
use super::load::Totals;
use super::Router;
use crate::{BackendIdx, Decision, Millis, Reason, Refusal};
use std::sync::atomic::Ordering;

/// Tables up to this many backends are scanned whole; larger ones take the better of two
/// random choices.
pub(super) const EXACT_MAX: usize = 32;

/// Weighted draws tried for two eligible candidates before scanning instead.
const DRAWS: usize = 8;

/// Cumulative weights by index for sampling ∝ weight (empty for tables that are scanned).
pub(super) fn cumulative(ring_spec: &[(&str, u32)]) -> Box<[u64]> {
    if ring_spec.len() <= EXACT_MAX {
        return Box::new([]);
    }
    let mut acc = 0u64;
    ring_spec
        .iter()
        .map(|&(_, w)| {
            acc += u64::from(w);
            acc
        })
        .collect()
}

/// A candidate: how well it fits (0 = under every cap, 1 = over the bound but under its cap),
/// its load after placement, its recent placements (the tie-break), its weight, its index.
#[derive(Clone, Copy)]
struct Cand {
    tier: u8,
    load1: u64,
    recent: u64,
    weight: u64,
    idx: BackendIdx,
}

impl Cand {
    /// Strictly better: a better tier; in the same tier a lower `(load + 1) / w`; at equal
    /// loads, fewer recent placements per unit of weight.
    fn beats(&self, other: &Cand) -> bool {
        let per_weight = |a: u64, b: u64| {
            (u128::from(a) * u128::from(other.weight))
                .cmp(&(u128::from(b) * u128::from(self.weight)))
        };
        self.tier
            .cmp(&other.tier)
            .then_with(|| per_weight(self.load1, other.load1))
            .then_with(|| per_weight(self.recent, other.recent))
            .is_lt()
    }
}

/// SplitMix64: the next random word of the stream seeded by the caller's bits.
fn next(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Router {
    /// A new session without a key (the caller issues its key for the backend chosen, e.g. a
    /// cookie token): placed on the eligible backend with the lowest `(active + pending + 1) /
    /// weight` (see the module docs of `router/keyless.rs`), counted as pending there until it
    /// comes back ([`Router::select_named`]). Nothing is pinned. `rnd`: random bits from the
    /// caller (tie-breaks and the two choices); its low 32 bits are also the ring point of the
    /// backup (the next distinct ring node taking new sessions). Reason `New`. Refused like any
    /// new session: [`Refusal::NoBackend`] when no backend takes new sessions,
    /// [`Refusal::Full`] when every one that does is at its cap.
    pub fn select_keyless(&self, rnd: u64, now: Millis) -> Result<Decision, Refusal> {
        if self.takes_new.load(Ordering::Acquire) == 0 {
            return Err(Refusal::NoBackend);
        }
        self.overlay.roll_pending(now);
        let totals = self.limited.then(|| self.totals());
        let backend = match self.two_choices(rnd, totals) {
            Some(b) => b,
            None => self.least_loaded(rnd, totals)?,
        };
        self.overlay.placed_pending(self.id(backend), now);
        Ok(Decision {
            backend,
            backup: self.backup_after(rnd as u32, backend, &[]),
            reason: Reason::New,
            previous: None,
        })
    }

    /// The keyless placement load of backend `idx`: active sessions + pending placements.
    /// Panics if `idx >= len()`.
    pub fn keyless_load(&self, idx: BackendIdx) -> u64 {
        let id = self.backends[idx].id;
        u64::from(self.overlay.active(id)) + u64::from(self.overlay.pending(id))
    }

    /// Backend `i` as a candidate, or `None` when it takes no new session or is at its cap.
    #[inline]
    fn candidate(&self, i: BackendIdx, totals: Option<Totals>) -> Option<Cand> {
        if !self.takes_new(i) {
            return None;
        }
        let tier = match totals {
            None => 0,
            Some(t) if self.fits(i, t) => 0,
            Some(_) if self.under_cap(i) => 1,
            Some(_) => return None,
        };
        Some(Cand {
            tier,
            load1: self.keyless_load(i) + 1,
            recent: u64::from(self.overlay.recent_placements(self.backends[i].id)),
            weight: u64::from(self.backends[i].weight),
            idx: i,
        })
    }

    /// Every backend, from a random start: the best candidate.
    fn least_loaded(&self, rnd: u64, totals: Option<Totals>) -> Result<BackendIdx, Refusal> {
        let n = self.len();
        if n == 0 {
            return Err(Refusal::NoBackend);
        }
        let start = (rnd % n as u64) as usize;
        let mut best: Option<Cand> = None;
        let mut takes_new = false;
        for k in 0..n {
            let i = if start + k < n {
                start + k
            } else {
                start + k - n
            };
            takes_new |= self.takes_new(i);
            if let Some(c) = self.candidate(i, totals) {
                if best.is_none_or(|b| c.beats(&b)) {
                    best = Some(c);
                }
            }
        }
        match best {
            Some(c) => Ok(c.idx),
            None if takes_new => Err(Refusal::Full),
            None => Err(Refusal::NoBackend),
        }
    }

    /// Large tables: the better of the first two distinct backends drawn ∝ weight that fit
    /// under every cap; `None` for small tables or when a few draws do not find two.
    fn two_choices(&self, rnd: u64, totals: Option<Totals>) -> Option<BackendIdx> {
        let total = *self.cum_weight.last()?;
        if total == 0 {
            return None;
        }
        let mut s = rnd;
        let mut first: Option<Cand> = None;
        for _ in 0..DRAWS {
            let x = ((u128::from(next(&mut s)) * u128::from(total)) >> 64) as u64;
            let i = self.cum_weight.partition_point(|&c| c <= x);
            let Some(c) = self.candidate(i, totals).filter(|c| c.tier == 0) else {
                continue;
            };
            match first {
                None => first = Some(c),
                Some(f) if f.idx == i => {}
                Some(f) => return Some(if c.beats(&f) { c.idx } else { f.idx }),
            }
        }
        None
    }
}
