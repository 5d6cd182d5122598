//! Backend membership and lifecycle of one upstream: the authoritative backend list, admin
//! state (`active → draining → drained`), health (active checks and passive marking),
//! migrations, and the routing-table rebuilds that follow every change.
//!
//! Every change happens under the upstream's `members` mutex and ends by writing the routing
//! flags of the current table (or swapping in a new table), so changes never race each other.
//! The request path never takes this lock, except when a connect failure crosses the passive
//! threshold.
use super::{BackendSet, BackendView, Upstream};
use crate::config::{BackendConf, HealthConf};
use crate::metrics::CloseWhy;
use berth_routing::{BackendId, HealthState, Millis, SessionKey, Thresholds};
use std::collections::HashMap;
use std::time::Duration;

/// Admin state of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminState {
    /// Takes new sessions.
    Active,
    /// No new sessions; existing ones still served until none remain or `deadline`.
    Draining { deadline: Option<Millis> },
    /// Serves nothing; sessions still pinned to it are reassigned on their next request.
    Drained,
}

impl AdminState {
    /// The state a backend's `drain` flag in the file asks for.
    pub fn configured(drain: bool) -> AdminState {
        if drain {
            AdminState::Draining { deadline: None }
        } else {
            AdminState::Active
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Active => "active",
            AdminState::Draining { .. } => "draining",
            AdminState::Drained => "drained",
        }
    }
}

/// One backend of an upstream.
#[derive(Debug, Clone)]
pub struct Member {
    pub conf: BackendConf,
    pub state: AdminState,
    pub health: HealthState,
    /// Without active checks: when a passively-downed backend is tried again.
    pub retry_at: Option<Millis>,
}

/// The mutable side of an upstream.
#[derive(Debug, Default)]
pub struct Members {
    /// In table order: `list[i]` is backend index `i` of the current table.
    pub list: Vec<Member>,
    pub migrations: Vec<Migration>,
    /// Sessions moved by a migration whose next request must say so: key → old backend.
    pub moved: HashMap<SessionKey, BackendId>,
    /// The backend list of the configuration file last applied (reloads diff against it).
    pub file: Vec<BackendConf>,
    /// When rebalancing last ran.
    pub last_rebalance: Millis,
}

/// A migration in progress.
#[derive(Debug, Clone)]
pub struct Migration {
    pub backend: BackendId,
    pub remaining: usize,
    /// Sessions per second.
    pub rate: u32,
    /// Fractional budget carried between ticks.
    pub budget: f64,
    pub last: Millis,
}

/// Why an admin change was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    NotFound(String),
    Conflict(String),
    /// The change itself is malformed (a broadcast address that does not parse).
    Invalid(String),
}

impl Member {
    pub(crate) fn new(conf: BackendConf) -> Member {
        Member {
            state: AdminState::configured(conf.drain),
            conf,
            health: HealthState::up(),
            retry_at: None,
        }
    }

    /// Serves its existing sessions.
    fn serves(&self) -> bool {
        self.health.is_up() && self.state != AdminState::Drained
    }
}

impl Members {
    pub fn new(backends: &[BackendConf]) -> Members {
        Members {
            list: backends.iter().cloned().map(Member::new).collect(),
            file: backends.to_vec(),
            ..Members::default()
        }
    }

    pub fn position(&self, id: &str) -> Option<usize> {
        self.list.iter().position(|m| m.conf.id == id)
    }
}

impl Upstream {
    /// Read the membership (under its lock: keep `f` short). Every change goes through the
    /// methods of [`Upstream`].
    pub fn read_members<R>(&self, f: impl FnOnce(&Members) -> R) -> R {
        f(&self.members.lock())
    }

    /// The membership, to change it directly (tests only).
    #[cfg(test)]
    pub(crate) fn members_mut(&self) -> parking_lot::MutexGuard<'_, Members> {
        self.members.lock()
    }

    /// An upgrade's snapshot of the old process's membership replaces this one whole; returns
    /// the file backend list this process had, for the caller to re-apply as a reload would.
    pub(crate) fn adopt(
        &self,
        list: Vec<Member>,
        migrations: Vec<Migration>,
        moved: HashMap<SessionKey, BackendId>,
        file: Vec<BackendConf>,
    ) -> Vec<BackendConf> {
        let mut m = self.members.lock();
        m.list = list;
        m.migrations = migrations;
        m.moved = moved;
        self.moved_pending.store(m.moved.len(), RELAXED);
        std::mem::replace(&mut m.file, file)
    }

    /// A backend's address, weight or limits changed elsewhere (a reload in the old process
    /// during an upgrade): the new conf, in a new set.
    pub(crate) fn replace_conf(&self, conf: &BackendConf) {
        let mut m = self.members.lock();
        if let Some(pos) = m.position(&conf.id) {
            m.list[pos].conf = conf.clone();
            self.rebuild(&m);
        }
    }

    /// Write every member's state into the routing flags of `set`.
    pub(crate) fn apply_flags(&self, set: &BackendSet, m: &Members) {
        for (i, member) in m.list.iter().enumerate() {
            set.router.set_up(i, member.serves());
            set.router
                .set_draining(i, member.state != AdminState::Active);
            set.backends[i].metrics.up.set(i64::from(member.serves()));
        }
    }

    /// Build a new set from the member list, flag it and swap it in.
    pub(crate) fn rebuild(&self, m: &Members) {
        let set = BackendSet::new(self, &m.list);
        self.apply_flags(&set, m);
        let old = self.current.swap(std::sync::Arc::new(set));
        self.forget_removed(&old, m);
        // A removed backend's WebSockets are closed.
        let gone = |id: &str| m.position(id).is_none();
        self.sockets.close_where(gone, CloseWhy::BackendRemoved);
    }

    /// Add a backend at runtime. Pinned sessions do not move.
    pub fn add_backend(&self, conf: BackendConf) -> Result<BackendView, Refused> {
        let mut m = self.members.lock();
        if self.names.get(&conf.id).is_none() && self.names.room() == 0 {
            return Err(Refused::Conflict(
                "this process has seen the most distinct backend ids it can track; upgrade \
                 (berth -u) to start a fresh process"
                    .into(),
            ));
        }
        if m.position(&conf.id).is_some() {
            return Err(Refused::Conflict(format!(
                "backend {:?} already exists",
                conf.id
            )));
        }
        // Not its address: no log line at the default level shows one (SECURITY.md).
        log::info!("upstream {}: backend {} added", self.name, conf.id);
        m.list.push(Member::new(conf));
        self.rebuild(&m);
        Ok(self.view(m.list.last().expect("just pushed")))
    }

    /// Change a backend's weight and/or cap (`Some(None)` removes the cap) at runtime: a new
    /// table, so new sessions follow the new weight; pinned sessions do not move.
    pub fn update_backend(
        &self,
        id: &str,
        weight: Option<u32>,
        max_sessions: Option<Option<u32>>,
    ) -> Result<BackendView, Refused> {
        let mut m = self.members.lock();
        let pos = m
            .position(id)
            .ok_or_else(|| Refused::NotFound(format!("no backend {id:?}")))?;
        let others_weight: u64 = m
            .list
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != pos)
            .map(|(_, b)| u64::from(b.conf.weight))
            .sum();
        if weight == Some(0) && others_weight == 0 {
            return Err(Refused::Conflict(format!(
                "weight 0 for {id:?} would leave no backend with weight > 0"
            )));
        }
        let conf = &mut m.list[pos].conf;
        if let Some(w) = weight {
            conf.weight = w;
        }
        if let Some(cap) = max_sessions {
            conf.max_sessions = cap;
        }
        log::info!(
            "upstream {}: backend {id} now has weight {} and max_sessions {:?}",
            self.name,
            conf.weight,
            conf.max_sessions
        );
        self.rebuild(&m);
        Ok(self.view(&m.list[pos]))
    }

    /// Remove a backend at runtime; its sessions are reassigned on their next request.
    /// Returns how many sessions were pinned to it.
    pub fn remove_backend(&self, id: &str) -> Result<u64, Refused> {
        let mut m = self.members.lock();
        let pos = m
            .position(id)
            .ok_or_else(|| Refused::NotFound(format!("no backend {id:?}")))?;
        if m.list.len() == 1 {
            return Err(Refused::Conflict(format!(
                "{id:?} is the last backend of upstream {:?}",
                self.name
            )));
        }
        let sessions = self.names.get(id).map_or(0, |b| self.overlay.count(b));
        m.list.remove(pos);
        log::info!(
            "upstream {}: backend {id} removed ({sessions} sessions will move)",
            self.name
        );
        self.rebuild(&m);
        Ok(sessions)
    }

    /// Change one backend's admin state.
    pub fn set_state(&self, id: &str, state: AdminState) -> Result<BackendView, Refused> {
        let mut m = self.members.lock();
        let pos = m
            .position(id)
            .ok_or_else(|| Refused::NotFound(format!("no backend {id:?}")))?;
        m.list[pos].state = state;
        log::info!(
            "upstream {}: backend {id} is now {}",
            self.name,
            state.as_str()
        );
        self.apply_flags(&self.current.load(), &m);
        Ok(self.view(&m.list[pos]))
    }

    /// Result of one active health check.
    pub fn health_result(&self, id: &str, ok: bool, checks: &HealthConf) {
        let t = Thresholds {
            rise: checks.rise,
            fall: checks.fall,
        };
        let mut m = self.members.lock();
        let Some(pos) = m.position(id) else { return };
        if let Some(up) = m.list[pos].health.observe(ok, t) {
            self.health_changed(&m, pos, up, "active check");
        }
    }

    /// A request could not connect to backend `idx` of `set`; after `passive.fall`
    /// consecutive failures the backend is marked down.
    pub fn connect_failed(&self, set: &BackendSet, idx: usize, now: Millis) {
        let fall = self.settings.passive.fall;
        let failures = &set.backends[idx].connect_failures;
        let n = failures.fetch_add(1, RELAXED) + 1;
        if fall == 0 || n < fall {
            return;
        }
        // A new streak starts: after a cooldown or an active check brings the backend back,
        // another `fall` failures mark it down again.
        failures.store(0, RELAXED);
        let mut m = self.members.lock();
        let name = set.router.name(idx);
        let Some(pos) = m.position(name) else { return };
        if m.list[pos].health.set(false) {
            if self.settings.health.is_none() {
                m.list[pos].retry_at = Some(now + millis(self.settings.passive.cooldown));
            }
            self.health_changed(&m, pos, false, "connect failures");
        }
    }

    /// A request connected to backend `idx`: its passive failure streak ends.
    pub(super) fn connection_succeeded(&self, set: &BackendSet, idx: usize) {
        let c = &set.backends[idx].connect_failures;
        if c.load(RELAXED) != 0 {
            c.store(0, RELAXED);
        }
    }

    fn health_changed(&self, m: &Members, pos: usize, up: bool, why: &str) {
        let id = &m.list[pos].conf.id;
        let to = if up { "up" } else { "down" };
        log::warn!("upstream {}: backend {id} is {to} ({why})", self.name);
        self.metrics.health_transition(&self.name, id, up);
        self.apply_flags(&self.current.load(), m);
    }

    /// Periodic work: drain completion, passive cooldowns, migrations.
    pub fn tick(&self, now: Millis) {
        let mut m = self.members.lock();
        let mut changed = false;
        for b in m.list.iter_mut() {
            if let AdminState::Draining { deadline } = b.state {
                let left = self
                    .names
                    .get(&b.conf.id)
                    .map_or(0, |id| self.overlay.count(id));
                // Open WebSockets hold a drain like sessions, and are closed at its deadline.
                let sockets = self.sockets.open_on(&b.conf.id);
                if (left == 0 && sockets == 0) || deadline.is_some_and(|d| now >= d) {
                    let closed = self.sockets.close_on(&b.conf.id, CloseWhy::DrainDeadline);
                    log::info!(
                        "upstream {}: backend {} drained ({left} sessions left, {closed} \
                         WebSockets closed)",
                        self.name,
                        b.conf.id
                    );
                    b.state = AdminState::Drained;
                    changed = true;
                }
            }
            if b.retry_at.is_some_and(|t| now >= t) {
                b.retry_at = None;
                if b.health.set(true) {
                    log::info!(
                        "upstream {}: backend {} retried after cooldown",
                        self.name,
                        b.conf.id
                    );
                    self.metrics.health_transition(&self.name, &b.conf.id, true);
                    changed = true;
                }
            }
        }
        if changed {
            self.apply_flags(&self.current.load(), &m);
        }
        self.run_migrations(&mut m, now);
        self.run_rebalance(&mut m, now);
    }

    /// Apply a reloaded backend list as a diff against the previous file: backends added to
    /// the file are added, backends removed from it are removed, changed ones are updated.
    /// Backends added or drained through the admin API are left alone unless the file itself
    /// changed them (a backend's `drain` flag applies only when it changed in the file).
    pub fn reload_backends(&self, backends: &[BackendConf]) {
        let mut m = self.members.lock();
        let old_file = std::mem::replace(&mut m.file, backends.to_vec());
        for conf in backends {
            let before = old_file.iter().find(|b| b.id == conf.id);
            if before == Some(conf) {
                continue;
            }
            match m.position(&conf.id) {
                None => {
                    log::info!(
                        "upstream {}: backend {} added by reload",
                        self.name,
                        conf.id
                    );
                    m.list.push(Member::new(conf.clone()));
                }
                Some(pos) => {
                    let b = &mut m.list[pos];
                    if before.map(|p| p.drain) != Some(conf.drain) {
                        b.state = AdminState::configured(conf.drain);
                    }
                    log::info!(
                        "upstream {}: backend {} updated by reload",
                        self.name,
                        conf.id
                    );
                    b.conf = conf.clone();
                }
            }
        }
        for gone in old_file
            .iter()
            .filter(|o| !backends.iter().any(|b| b.id == o.id))
        {
            if let Some(pos) = m.position(&gone.id) {
                log::info!(
                    "upstream {}: backend {} removed by reload",
                    self.name,
                    gone.id
                );
                m.list.remove(pos);
            }
        }
        if m.list.is_empty() && !(old_file.is_empty() && self.settings.discovery.is_some()) {
            log::error!(
                "upstream {}: reload would leave no backend; keeping the old ones",
                self.name
            );
            m.list = old_file.into_iter().map(Member::new).collect();
        }
        self.rebuild(&m);
    }
}

pub(super) const RELAXED: std::sync::atomic::Ordering = std::sync::atomic::Ordering::Relaxed;

pub(super) fn millis(d: Duration) -> Millis {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
#[path = "membership_tests.rs"]
mod tests;
