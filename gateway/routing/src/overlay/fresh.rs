//! New sessions placed without a key that have not come back yet, per backend.
//!
//! A session issued by cookie insert is placed before it has a key (its token is made for the
//! backend chosen) and is pinned only when the client returns the token (README, "Sessions and
//! cookie affinity"), so until then it is in no active-session count. Keyless placement
//! ([`crate::Router::select_keyless`]) adds these counts to the active ones, so that a burst of
//! new sessions — sequential or concurrent, none of which has come back yet — spreads by
//! placement instead of piling onto whichever backend the active counts show as emptiest.
//!
//! A placement counts one on its backend; the session's return (the first request that shows
//! its token: [`crate::Router::select_named`] finding no pin) takes one off the backend its
//! token names; a placement that has not come back stops counting after one to two spans
//! ([`PENDING_SPAN`] by default). Two generations of counters: placements go to the current
//! one; at each span boundary the older one is cleared and becomes current; a return takes one
//! from the current generation, else from the previous one. All of it is approximate in ways
//! that favour no backend: a return after its placement expired takes one from a newer
//! placement on the same backend, a session issued by another gateway or before an upgrade
//! takes nothing (counts never go below zero), and a placement racing the clearing of its
//! generation may be lost. Every placement also counts, come back or not, over 60 spans
//! ([`Fresh::recent`]): the tie-break between backends of equal load.
//!
//! Why the span is short: while a placement counts it stands in for a session that may never
//! exist (most clients that keep no cookie never return), and since placement equalizes
//! active + pending, pending counts hide that much imbalance of the active ones. One to two
//! seconds covers a first answer and the browser's next request (the page's resources), while
//! requests that never come back hide almost nothing: `make sim` at 1,000 backends with one
//! such request per session keeps active sessions within 1.074 × the mean with this span,
//! 1.127 × with 10 s and 1.192 × with 60 s (`--pending-span`, SIMULATION.md). A session whose
//! second request comes later is invisible until it comes back; when most come back minutes
//! later, no span makes placement by load even (SIMULATION.md, "Keyless sessions").
use super::loads::Loads;
use crate::{BackendId, Millis};
use std::sync::atomic::{AtomicU64, Ordering};

/// How long a keyless placement counts at least (at most twice that) unless its session comes
/// back first.
pub const PENDING_SPAN: Millis = 1_000;

/// How many pending spans the placement counts that break ties cover (one to two minutes).
const RECENT_SPANS: Millis = 60;

/// Keyless placements per [`BackendId`]: not yet come back (`pending`), and all of them over a
/// longer window (`recent`), which breaks ties between backends of equal load.
#[derive(Debug)]
pub(super) struct Fresh {
    pending: Window,
    recent: Window,
}

impl Fresh {
    pub(super) fn new(span: Millis, now: Millis) -> Self {
        let span = span.max(1);
        Fresh {
            pending: Window::new(span, now),
            recent: Window::new(span.saturating_mul(RECENT_SPANS), now),
        }
    }

    /// Moves both windows to `now` (clearing what expired).
    pub(super) fn roll(&self, now: Millis) {
        self.pending.roll(now);
        self.recent.roll(now);
    }

    /// Placements on `id` not yet come back (as of the last roll).
    #[inline]
    pub(super) fn get(&self, id: BackendId) -> u32 {
        self.pending.get(id)
    }

    /// [`Fresh::get`] over all backends.
    pub(super) fn total(&self) -> u64 {
        self.pending.total()
    }

    /// Placements on `id` over the last one to two minutes, come back or not (as of the last
    /// roll): the tie-break between backends of equal load.
    #[inline]
    pub(super) fn recent(&self, id: BackendId) -> u32 {
        self.recent.get(id)
    }

    /// A keyless placement on `id` at `now`.
    pub(super) fn placed(&self, id: BackendId, now: Millis) {
        self.pending.add(id, now);
        self.recent.add(id, now);
    }

    /// A session placed on `id` came back at `now`: one less pending, newest generation first.
    pub(super) fn returned(&self, id: BackendId, now: Millis) {
        self.pending.take_back(id, now);
    }
}

/// Counters per [`BackendId`] over the last one to two spans, in two generations.
#[derive(Debug)]
struct Window {
    /// Generation length (ms), at least 1.
    span: Millis,
    /// Current generation number (`now / span`); generation `e` counts in `gens[e % 2]`.
    epoch: AtomicU64,
    gens: [Loads; 2],
}

impl Window {
    fn new(span: Millis, now: Millis) -> Self {
        let span = span.max(1);
        Window {
            span,
            epoch: AtomicU64::new(now / span),
            gens: [Loads::default(), Loads::default()],
        }
    }

    /// Moves to the generation of `now` (clearing what expired); returns the current one. A
    /// `now` behind the current generation (another thread's clock read a moment earlier)
    /// changes nothing.
    fn roll(&self, now: Millis) -> u64 {
        let e = now / self.span;
        let mut cur = self.epoch.load(Ordering::Acquire);
        while e > cur {
            match self
                .epoch
                .compare_exchange_weak(cur, e, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    if e - cur >= 2 {
                        self.gens[0].clear();
                        self.gens[1].clear();
                    } else {
                        self.gens[(e % 2) as usize].clear();
                    }
                    return e;
                }
                Err(seen) => cur = seen,
            }
        }
        cur
    }

    #[inline]
    fn get(&self, id: BackendId) -> u32 {
        self.gens[0].get(id).saturating_add(self.gens[1].get(id))
    }

    fn total(&self) -> u64 {
        self.gens[0].total() + self.gens[1].total()
    }

    fn add(&self, id: BackendId, now: Millis) {
        let e = self.roll(now);
        self.gens[(e % 2) as usize].add(id.0, 1);
    }

    /// One less on `id`, newest generation first (never below zero).
    fn take_back(&self, id: BackendId, now: Millis) {
        let e = self.roll(now);
        let _ = self.gens[(e % 2) as usize].take_one(id)
            || self.gens[((e + 1) % 2) as usize].take_one(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: BackendId = BackendId(7);

    #[test]
    fn placements_count_until_they_return_or_expire() {
        let f = Fresh::new(1_000, 500);
        f.placed(B, 600);
        f.placed(B, 900);
        f.placed(BackendId(8), 900);
        assert_eq!((f.get(B), f.total()), (2, 3));
        f.returned(B, 950);
        assert_eq!(f.get(B), 1);
        // Next span: still counted (previous generation); a placement in the new one.
        f.placed(B, 1_100);
        assert_eq!(f.get(B), 2);
        // A return takes from the newest generation first.
        f.returned(B, 1_200);
        f.roll(2_000);
        assert_eq!(f.get(B), 0, "the 1st span's placement expired at 2,000");
        assert_eq!(f.get(BackendId(8)), 0);
        f.returned(B, 2_100);
        assert_eq!(f.get(B), 0, "never below zero");
    }

    #[test]
    fn a_late_clock_and_long_gaps() {
        let f = Fresh::new(1_000, 5_000);
        f.placed(B, 5_100);
        f.roll(4_900);
        assert_eq!(f.get(B), 1, "a clock read a moment earlier changes nothing");
        f.placed(B, 4_950);
        assert_eq!(f.get(B), 2);
        f.roll(9_000);
        assert_eq!((f.get(B), f.total()), (0, 0), "both generations expired");
        assert_eq!(f.recent(B), 2, "placements still count as recent");
        f.roll(5_000 + 2 * 60_000);
        assert_eq!(f.recent(B), 0);
    }

    #[test]
    fn a_zero_span_is_one_millisecond() {
        let f = Fresh::new(0, 0);
        f.placed(B, 0);
        assert_eq!(f.get(B), 1);
        f.roll(2);
        assert_eq!(f.get(B), 0);
    }
}
