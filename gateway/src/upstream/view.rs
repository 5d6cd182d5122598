//! Backends as the admin API (and the dashboard, and the drain gauges) show them.
use super::{AdminState, BackendSet, Member, Upstream};

/// A backend as the admin API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackendView {
    pub upstream: String,
    pub id: String,
    pub addr: String,
    pub weight: u32,
    pub health: &'static str,
    pub state: &'static str,
    /// Sessions pinned to it.
    pub sessions: u64,
    /// Of those, the active ones (in use now or within `sessions.active_window`).
    pub active_sessions: u64,
    /// WebSockets open to it now (their sessions are among the active ones).
    pub websockets: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_sessions: Option<u32>,
    /// Bounded-load cap for its next new session (when `load.bound` is set and it takes new
    /// sessions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bound: Option<u64>,
    /// Fraction of the hash space this backend owns on the ring (Ketama arcs; modulo: its
    /// weight share). Static: a down or draining backend keeps its share, the walk skips it.
    pub ring_share: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_deadline_ms: Option<u64>,
}

impl Upstream {
    /// Every backend as the admin API shows it.
    pub fn views(&self) -> Vec<BackendView> {
        let m = self.members.lock();
        let set = self.current.load();
        let shares = set.router.ring().shares();
        m.list
            .iter()
            .map(|b| self.view_in(b, &set, &shares))
            .collect()
    }

    /// One backend, by id.
    pub fn view_of(&self, id: &str) -> Option<BackendView> {
        let m = self.members.lock();
        m.list
            .iter()
            .find(|b| b.conf.id == id)
            .map(|b| self.view(b))
    }

    /// Backend `b` (a member of the current table) as the admin API shows it.
    pub(super) fn view(&self, b: &Member) -> BackendView {
        let set = self.current.load();
        self.view_in(b, &set, &set.router.ring().shares())
    }

    /// `b` as seen in `set`, whose ring shares are `shares` (computed once per listing).
    fn view_in(&self, b: &Member, set: &BackendSet, shares: &[f64]) -> BackendView {
        let id = self.names.get(&b.conf.id);
        let sessions = id.map_or(0, |id| self.overlay.count(id));
        let active_sessions = id.map_or(0, |id| u64::from(self.overlay.active(id)));
        let idx = set.router.index_of(&b.conf.id);
        let ring_share = idx.and_then(|i| shares.get(i).copied()).unwrap_or(0.0);
        let bound = idx.and_then(|i| set.router.bound(i));
        BackendView {
            upstream: self.name.to_string(),
            id: b.conf.id.clone(),
            addr: b.conf.addr.to_string(),
            weight: b.conf.weight,
            health: if b.health.is_up() { "up" } else { "down" },
            state: b.state.as_str(),
            sessions,
            active_sessions,
            websockets: self.sockets.open_on(&b.conf.id) as u64,
            max_sessions: b.conf.max_sessions,
            bound,
            ring_share,
            drain_deadline_ms: match b.state {
                AdminState::Draining { deadline } => deadline,
                _ => None,
            },
        }
    }
}
