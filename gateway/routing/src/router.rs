//! One routing table of an upstream. SKELETON — the routing helper replaces the bodies.
use crate::{BackendId, BackendIdx, Decision, Hashing, Interner, Millis, Overlay, SessionKey};
use std::sync::Arc;

/// A backend as the routing core sees it: a stable name and a weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    pub name: String,
    /// Share of new sessions; 0 = no new sessions (existing pins still served).
    pub weight: u32,
}

impl BackendSpec {
    pub fn new(name: &str, weight: u32) -> Self {
        BackendSpec {
            name: name.to_string(),
            weight,
        }
    }
}

/// How an upstream hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouterConfig {
    pub hashing: Hashing,
    /// Ketama points per unit of weight (default 160, as nginx/pingora-ketama).
    pub points_per_weight: u32,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            hashing: Hashing::Ketama,
            points_per_weight: 160,
        }
    }
}

/// An immutable routing table (backends + ring) sharing a mutable [`Overlay`] with the tables
/// before and after it. Backend health is an atomic flag per backend, settable by the gateway.
#[derive(Debug)]
pub struct Router {
    _overlay: Arc<Overlay>,
}

impl Router {
    pub fn new(
        _cfg: RouterConfig,
        _backends: &[BackendSpec],
        _overlay: Arc<Overlay>,
        _names: &Interner,
    ) -> Router {
        unimplemented!("routing helper")
    }
    pub fn len(&self) -> usize {
        unimplemented!()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn name(&self, _idx: BackendIdx) -> &str {
        unimplemented!()
    }
    pub fn id(&self, _idx: BackendIdx) -> BackendId {
        unimplemented!()
    }
    pub fn index_of(&self, _name: &str) -> Option<BackendIdx> {
        unimplemented!()
    }
    pub fn index_of_id(&self, _id: BackendId) -> Option<BackendIdx> {
        unimplemented!()
    }
    pub fn overlay(&self) -> &Arc<Overlay> {
        unimplemented!()
    }
    pub fn set_up(&self, _idx: BackendIdx, _up: bool) {
        unimplemented!()
    }
    pub fn is_up(&self, _idx: BackendIdx) -> bool {
        unimplemented!()
    }
    /// Overlay key: pinned & eligible → Sticky; no pin → ring walk, pin, New; pin on an
    /// ineligible/removed backend → next eligible ring node, re-pin, Failover (previous set).
    /// `None` when no backend is eligible.
    pub fn select(&self, _key: SessionKey, _now: Millis) -> Option<Decision> {
        unimplemented!()
    }
    /// A verified token names backend `name`: Sticky when eligible, else walk the ring from
    /// `key` (Failover, previous set). Nothing is pinned in the overlay.
    pub fn select_named(&self, _name: &str, _key: SessionKey, _now: Millis) -> Option<Decision> {
        unimplemented!()
    }
    /// No key: walk the ring from `point`, pin nothing; reason `Ring` (or `New` when the caller
    /// will issue a session for it, e.g. a cookie token).
    pub fn select_unpinned(&self, _point: u32, _new_session: bool) -> Option<Decision> {
        unimplemented!()
    }
    /// After `failed` backends failed for this request: the next eligible ring node from `point`
    /// not in `failed`; re-pins `key` there when given. Reason Failover, previous = failed[0].
    pub fn failover(
        &self,
        _point: u32,
        _key: Option<SessionKey>,
        _failed: &[BackendIdx],
        _now: Millis,
    ) -> Option<Decision> {
        unimplemented!()
    }
}
