//! The four policies, one routing table of a policy, and what a run of a policy measured.
use crate::rng;
use crate::stats::{Batches, Ratio};
use berth_routing::{BackendSpec, Interner, Overlay, Router, RouterConfig, SessionKey};
use std::sync::Arc;
use std::time::Duration;

/// How sessions are placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// (a) No overlay: a session is wherever its ring primary among the table's backends is.
    Ketama,
    /// (b) Ketama + overlay: pinned where first placed; moved only when its backend leaves.
    Overlay,
    /// (c) (b) + bounded-load placement.
    Bounded,
    /// (d) (c) + periodic rebalancing of idle sessions.
    Rebalanced,
    /// (e) Sessions without a key (cookie insert): placed by load (`select_keyless`), pinned
    /// when they come back with their token (`select_named`), bounded as (c).
    Keyless,
}

impl Policy {
    pub const ALL: [Policy; 5] = [
        Policy::Ketama,
        Policy::Overlay,
        Policy::Bounded,
        Policy::Rebalanced,
        Policy::Keyless,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Policy::Ketama => "(a) Ketama alone",
            Policy::Overlay => "(b) Ketama + overlay",
            Policy::Bounded => "(c) + bounded load",
            Policy::Rebalanced => "(d) + idle rebalancing",
            Policy::Keyless => "(e) keyless (cookie insert) by load",
        }
    }

    /// The letter used on the command line (`--policies abcd`).
    pub fn letter(self) -> char {
        match self {
            Policy::Ketama => 'a',
            Policy::Overlay => 'b',
            Policy::Bounded => 'c',
            Policy::Rebalanced => 'd',
            Policy::Keyless => 'e',
        }
    }

    pub fn pins(self) -> bool {
        self != Policy::Ketama
    }

    pub fn bounded(self) -> bool {
        matches!(self, Policy::Bounded | Policy::Rebalanced | Policy::Keyless)
    }

    /// Sessions arrive without a key: placed by `select_keyless`, pinned when they come back.
    pub fn keyless(self) -> bool {
        self == Policy::Keyless
    }
}

/// Knobs of a run that are not the trace.
#[derive(Debug, Clone)]
pub struct SimParams {
    pub backends: usize,
    /// ε in thousandths (the bound of (c)/(d), and the bound (a)/(b) are checked against).
    pub eps_milli: u32,
    /// The overlay's active window, seconds.
    pub window_s: u32,
    /// (d): a session unused this long (and with nothing in flight) may be moved.
    pub idle_for_s: u32,
    /// (d): sessions moved per simulated second at most.
    pub budget_per_s: usize,
    /// (d): `rebalance` runs every this many seconds (with `budget_per_s` × this budget).
    pub rebalance_every_s: u32,
    /// Ratios are reported from this second on (the overlay fills up before).
    pub warmup_s: u32,
    /// Placements per timed batch.
    pub batch: u32,
    /// (e): the token comes back right after the first request (a browser fetching the page's
    /// resources); otherwise with the session's second request of the trace.
    pub back_at_once: bool,
    /// (e): keyless requests that never come back (crawlers), per session arrival.
    pub crawlers: f64,
    /// (e): how long a keyless placement counts as pending (ms; `Overlay::with_pending_span`).
    pub pending_span_ms: u64,
}

/// The key of session `id`: bits 0..32 are the id (so a key handed back by `rebalance` names its
/// session), the other 96 bits a hash of it, as uniform as the gateway's xxh3 keys — bits 64..
/// pick the overlay shard, bits 96.. the ring point, bits 32..64 spread the table home.
pub fn key(id: u32) -> SessionKey {
    let hi = rng::mix64(u64::from(id) ^ 0x5EED_0F5E_5510_4500);
    let mid = rng::mix64(u64::from(id) ^ 0x0B1D_C0DE) as u32;
    SessionKey((u128::from(hi) << 64) | (u128::from(mid) << 32) | u128::from(id))
}

/// The session a [`key`] belongs to.
pub fn session_of(key: SessionKey) -> u32 {
    key.0 as u32
}

/// The name of backend number `n` (the n-th ever added).
pub fn backend_name(n: usize) -> String {
    format!("10.{}.{}.{}:8080", n >> 16, (n >> 8) & 255, n & 255)
}

/// One routing table of a policy and what the measurement needs of it.
pub struct Table {
    pub router: Router,
    /// `BackendId.0` per index.
    pub ids: Vec<u32>,
    /// Total weight of the backends taking new sessions (the router's `W`).
    pub weight: u64,
    /// Backends that take no new session (their loads are not in the router's `A`).
    pub ineligible: Vec<usize>,
}

impl Table {
    pub fn new(
        policy: Policy,
        eps_milli: u32,
        specs: &[BackendSpec],
        overlay: &Arc<Overlay>,
        names: &Interner,
    ) -> Self {
        let cfg = RouterConfig {
            bound_milli: policy.bounded().then_some(eps_milli),
            track_in_flight: policy.pins(),
            ..RouterConfig::default()
        };
        let router = Router::new(cfg, specs, overlay.clone(), names);
        let ids = (0..router.len()).map(|i| router.id(i).0).collect();
        let weight = (0..router.len())
            .filter(|&i| router.takes_new(i))
            .map(|i| u64::from(router.weight(i)))
            .sum();
        let ineligible = (0..router.len())
            .filter(|&i| !router.takes_new(i))
            .collect();
        Table {
            router,
            ids,
            weight,
            ineligible,
        }
    }
}

/// Sessions moved by a membership change.
#[derive(Debug, Clone, Copy, Default)]
pub struct EventMoves {
    /// Live sessions at the event.
    pub live: u64,
    /// Failure: live sessions on the failed backend at the event.
    pub on_failed: u64,
    /// Sessions whose backend changed because of the event (at the event for (a); on their
    /// next request for the overlay policies).
    pub moved: u64,
    /// Of `moved`: those that were on the failed backend.
    pub from_failed: u64,
}

/// What rebalancing did (policy (d)).
#[derive(Debug, Clone, Copy, Default)]
pub struct Rebalancing {
    pub calls: u64,
    pub moved: u64,
    /// Of `moved`: sessions counted active when moved (the moves that change loads).
    pub moved_active: u64,
    /// Moves of a session with a request in flight or used within `idle_for` (must be 0).
    pub moved_busy: u64,
    pub total_time: Duration,
    pub max_time: Duration,
}

/// Everything a run of one policy measured.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// New sessions placed.
    pub placements: u64,
    /// Existing sessions re-placed (failover of the failed backend's sessions).
    pub replacements: u64,
    /// Placements onto a backend at or above `ceil((1+ε)(A+1)w/W)` measured just before.
    pub over_bound: u64,
    /// Of `over_bound`: after warm-up (early on, with fewer active sessions than backends,
    /// any backend holding one is at the bound).
    pub over_bound_late: u64,
    pub first_over_bound: Option<String>,
    /// Load of the chosen backend right after a placement / mean, after warm-up.
    pub placed: Ratio,
    /// The same with the mean over the table's backends only (the router's `A` also counts
    /// active pins left on the failed backend until they move or leave the window).
    pub placed_table: Ratio,
    /// Largest `load − (1+ε)·mean` of the chosen backend right after a placement, in sessions
    /// (below 1 when the bound held: the cap is a ceiling), after warm-up.
    pub placed_excess: f64,
    /// max/mean over the table's backends, sampled each second after warm-up.
    pub over_time: Ratio,
    /// (e): the same for the placement signal, active + pending keyless placements.
    pub over_time_signal: Ratio,
    /// (e): sessions that came back (were pinned) / placed.
    pub returned: u64,
    /// (e): keyless requests that never came back (crawlers).
    pub crawls: u64,
    pub scale_up: EventMoves,
    pub failure: EventMoves,
    /// Backend changes nothing explains (pin lost, sticky elsewhere): must be 0.
    pub unexpected: u64,
    pub first_unexpected: Option<String>,
    pub rebalancing: Rebalancing,
    /// Disagreements between the router's loads/pins and the simulator's own bookkeeping.
    pub mismatches: u64,
    pub first_mismatch: Option<String>,
    pub place_ns: Batches,
    pub hit_ns: Batches,
    pub peak_live: u64,
    pub peak_active: u64,
    /// Active sessions / live sessions, sampled each second after warm-up.
    pub active_share: Ratio,
    pub mean_active_per_backend: Ratio,
    pub evicted: u64,
    /// The trace as this run saw it (equal checksums = the same trace).
    pub trace: crate::trace::TraceCounts,
    pub wall: Duration,
}

impl Outcome {
    pub fn new(batch: u32) -> Self {
        Outcome {
            place_ns: Batches::new(batch),
            hit_ns: Batches::new(batch),
            placed_excess: f64::NEG_INFINITY,
            ..Outcome::default()
        }
    }

    pub fn mismatch(&mut self, what: impl FnOnce() -> String) {
        self.mismatches += 1;
        if self.first_mismatch.is_none() {
            self.first_mismatch = Some(what());
        }
    }

    pub fn unexpected_move(&mut self, what: impl FnOnce() -> String) {
        self.unexpected += 1;
        if self.first_unexpected.is_none() {
            self.first_unexpected = Some(what());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_session_and_spread() {
        for id in [0, 1, 77, u32::MAX] {
            assert_eq!(session_of(key(id)), id);
        }
        assert_ne!(key(1), key(2));
        // Ring points and shards (bits 64..70) of consecutive ids are spread out.
        let mut shards = [0u32; 64];
        let mut top = [0u32; 16];
        for id in 0..64_000 {
            let k = key(id);
            shards[((k.0 >> 64) & 63) as usize] += 1;
            top[(k.ring_point() >> 28) as usize] += 1;
        }
        assert!(
            shards.iter().all(|&n| (800..1200).contains(&n)),
            "{shards:?}"
        );
        assert!(top.iter().all(|&n| (3600..4400).contains(&n)), "{top:?}");
    }

    #[test]
    fn backend_names_are_distinct() {
        let names: std::collections::HashSet<_> = (0..70_000).map(backend_name).collect();
        assert_eq!(names.len(), 70_000);
    }
}
