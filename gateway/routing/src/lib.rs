//! # berth-routing — Berth's routing core
//!
//! Pure data structures and decisions: no Pingora, no tokio, no I/O. Time is passed in as
//! [`Millis`] from a clock the caller owns, so every rule is testable without sockets or sleeps.
//!
//! * [`Ring`] — Ketama consistent hashing keyed by stable backend names (points ∝ weight,
//!   weight 0 = no points, no panic), or simple modulo hashing.
//! * [`Overlay`] — the sticky overlay: `SessionKey → (BackendId, backup)` ([`Pin`]) with idle
//!   TTL, a bound on entries (approximate-LRU eviction, counted) and exact per-backend session
//!   counts; sharded, ~46 bytes per pin when full, one cache miss per hit. Exported and
//!   imported whole, plus a journal of changes, for zero-downtime upgrades ([`PinRecord`]).
//! * [`Router`] — one immutable routing table of an upstream (backends + ring + up/draining
//!   flags) sharing an [`Overlay`] with older and newer tables; `select*` return a [`Decision`].
//!
//! ```
//! use std::sync::Arc;
//! use berth_routing::*;
//! let names = Arc::new(Interner::default());
//! let overlay = Arc::new(Overlay::new(OverlayConfig::default()));
//! let backends = vec![BackendSpec::new("b1", 1), BackendSpec::new("b2", 1)];
//! let router = Router::new(RouterConfig::default(), &backends, overlay, &names);
//! let key = SessionKey::new(b"header", b"session-42");
//! let first = router.select(key, 0).expect("two healthy backends");
//! assert_eq!(first.reason, Reason::New);
//! let again = router.select(key, 1_000).expect("still there");
//! assert_eq!((again.backend, again.reason), (first.backend, Reason::Sticky));
//! assert_eq!(again.backup, first.backup); // the other backend, stored with the pin
//!
//! // The pinned backend goes down: the session moves to its backup and is re-pinned there.
//! router.set_up(first.backend, false);
//! let moved = router.select(key, 2_000).expect("b2 or b1 is up");
//! assert_eq!((Some(moved.backend), moved.reason), (first.backup, Reason::Failover));
//! assert_eq!(moved.previous, Some(router.id(first.backend)));
//! ```
#![forbid(unsafe_code)]

mod health;
mod interner;
mod overlay;
mod ring;
mod router;

pub use health::{HealthState, Thresholds};
pub use interner::Interner;
pub use overlay::{
    Change, Imported, Loads, Lookup, Overlay, OverlayConfig, OverlayStats, Pin, PinInfo,
    PinOutcome, PinRecord, Taken, Wake, PENDING_SPAN,
};
pub use ring::{Hashing, Ring, DEFAULT_POINTS_PER_WEIGHT, MAX_POINTS_PER_BACKEND};
pub use router::{BackendSpec, Move, Router, RouterConfig};

/// Milliseconds on the caller's monotonic clock. Only differences matter.
pub type Millis = u64;

/// Index of a backend inside one [`Router`] (one routing-table version). Not stable across
/// tables: use [`BackendId`] to name a backend over time.
pub type BackendIdx = usize;

/// Distinct backend names one upstream can see over a process's life (ids are 24-bit in the
/// overlay's slots; an upgrade hands pins over by name, so a new process starts from 0 again).
pub const MAX_BACKEND_IDS: u32 = (1 << 24) - 2;

/// Stable, process-wide handle of a backend name within one upstream, handed out by an
/// [`Interner`]. Never reused, so a pin made under an old table still means the same backend.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId(pub u32);

/// A session's identity in the overlay: a 128-bit hash of the affinity value (plus a namespace,
/// so the same string from two different plugins are two sessions). Storing the hash and not the
/// value keeps overlay entries small and fixed-size.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct SessionKey(pub u128);

impl SessionKey {
    /// Hash `value` in `namespace` (e.g. the plugin name).
    pub fn new(namespace: &[u8], value: &[u8]) -> Self {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(namespace);
        h.update(&[0xff]);
        h.update(value);
        SessionKey(h.digest128())
    }

    /// The key's position on a 32-bit hash ring.
    pub fn ring_point(self) -> u32 {
        (self.0 >> 96) as u32
    }
}

/// Why a request went where it went. The label behind metrics, the access log and the
/// `X-Berth-Affinity` header sent upstream.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The session's pin (overlay entry or signed token) named an eligible backend.
    Sticky,
    /// No affinity key: routed by the ring only, nothing pinned.
    Ring,
    /// The pinned backend is ineligible (down, removed, failed to connect): moved to the next
    /// ring node and re-pinned there.
    Failover,
    /// Moved off an over-loaded backend (bounded load / hard cap).
    Spill,
    /// First request of a session: placed by the ring and pinned.
    New,
}

impl Reason {
    /// Every reason, in a fixed order (index = [`Reason::index`]).
    pub const ALL: [Reason; 5] = [
        Reason::Sticky,
        Reason::Ring,
        Reason::Failover,
        Reason::Spill,
        Reason::New,
    ];

    /// Lower-case name used in headers, logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Sticky => "sticky",
            Reason::Ring => "ring",
            Reason::Failover => "failover",
            Reason::Spill => "spill",
            Reason::New => "new",
        }
    }

    /// Position in [`Reason::ALL`], for arrays of pre-resolved metric handles.
    pub fn index(self) -> usize {
        self as usize
    }

    /// True when the session changed backend (the app must rebuild its state).
    pub fn is_reassignment(self) -> bool {
        matches!(self, Reason::Failover | Reason::Spill)
    }
}

/// Why no backend was chosen.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No backend takes new sessions (all down, draining or weight 0).
    NoBackend,
    /// Every backend that takes new sessions is at its `max_sessions` cap: a new session
    /// must wait (the gateway answers 503 with `Retry-After`); existing sessions are served.
    Full,
}

/// The outcome of a selection.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Where to send the request (index into the [`Router`] that decided).
    pub backend: BackendIdx,
    /// Where the session goes if `backend` fails: on a sticky hit, the backup stored with the
    /// pin while it still takes new sessions; otherwise the next distinct ring node after
    /// `backend` that takes new sessions (up, not draining, weight > 0). `None` when there is
    /// no such other backend.
    pub backup: Option<BackendIdx>,
    /// Why.
    pub reason: Reason,
    /// The backend the session was pinned to before, when this decision moved it.
    pub previous: Option<BackendId>,
}
