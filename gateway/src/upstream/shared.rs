//! An upstream whose session registry is shared (Redis): the request path's one call to it
//! (a session's first request on this gateway), admin changes told to the other gateways and
//! theirs applied here, and migrations over the fleet's pins. Nothing here runs for an
//! upstream on the memory registry (`Upstream::redis` is `None`).
use super::{AdminState, BackendSet, Refused, Upstream};
use crate::config::{defaults, BackendConf};
use crate::policy::Attempt;
use crate::registry::redis::stored::{self, Local, Snapshot};
use crate::registry::{Agreed, Event, SessionRegistry};
use berth_routing::{Decision, Millis, Reason, SessionKey};
use std::sync::Arc;

impl Upstream {
    /// After [`Upstream::decide`], for a shared registry: a session placed here for the first
    /// time asks the registry, and follows the backend another gateway chose first; a session
    /// moved here (failover, spill) is re-pinned there too; a local cache hit costs nothing.
    pub async fn agree(&self, set: &BackendSet, a: &mut Attempt, now: Millis) {
        let Some(reg) = &self.redis else { return };
        let (Some(key), Some(d)) = (a.key, a.decision) else {
            return;
        };
        if a.token_unseen {
            // A token's first request here: the registry has the session's pin if a migration
            // or another gateway moved it (the token names where it was); else the token's
            // backend is pinned there, so the fleet's migrations see the session too.
            let mine = set.router.name(d.backend).to_string();
            match reg.first_pin(key, &mine).await {
                Agreed::Theirs {
                    backend,
                    moved_from,
                } if backend != mine || moved_from.is_some() => {
                    self.follow(set, a, key, &backend, moved_from.as_deref(), now);
                    if let Some(f) = a.decision.as_mut().filter(|f| f.backend != d.backend) {
                        // The token names another backend: re-issued, the app told.
                        f.reason = Reason::Failover;
                        f.previous = Some(set.router.id(d.backend));
                    }
                }
                Agreed::Degraded => a.degraded = true,
                _ => {}
            }
            return;
        }
        match d.reason {
            Reason::New => {
                let mine = set.router.name(d.backend).to_string();
                match reg.first_pin(key, &mine).await {
                    Agreed::Mine => {}
                    Agreed::Degraded => a.degraded = true,
                    Agreed::Theirs {
                        backend,
                        moved_from,
                    } => self.follow(set, a, key, &backend, moved_from.as_deref(), now),
                }
            }
            Reason::Failover | Reason::Spill => self.tell_moved(set, key, &d),
            Reason::Sticky => reg.metrics.cache_hits.inc(),
            Reason::Ring => {}
        }
    }

    /// The registry says `key` lives on `theirs`: the local cache follows, and so does this
    /// request (sticky; a failover when `theirs` cannot serve here).
    fn follow(
        &self,
        set: &BackendSet,
        a: &mut Attempt,
        key: SessionKey,
        theirs: &str,
        moved_from: Option<&str>,
        now: Millis,
    ) {
        a.moved_from = moved_from.map(|n| self.names.intern(n));
        let Some(i) = set.router.index_of(theirs) else {
            // A backend this gateway does not know (yet, or any more): keep ours, and say so.
            if let Some(d) = a.decision {
                self.registry
                    .repin(key, set.router.name(d.backend), Some(theirs));
            }
            return;
        };
        set.router.pin(key, i, now);
        if set.router.is_up(i) {
            let backup = self
                .overlay
                .info(key)
                .and_then(|p| p.backup)
                .and_then(|b| set.router.index_of_id(b));
            a.decision = Some(Decision {
                backend: i,
                backup,
                reason: Reason::Sticky,
                previous: None,
            });
        } else if let Some(d) = set.router.failover(a.point, Some(key), &[i], now) {
            a.decision = Some(d);
            self.tell_moved(set, key, &d);
        }
    }

    /// A session moved to `d.backend` by this gateway: re-pinned in the registry.
    pub(super) fn tell_moved(&self, set: &BackendSet, key: SessionKey, d: &Decision) {
        let from = d.previous.and_then(|id| self.names.name(id));
        self.registry
            .repin(key, set.router.name(d.backend), from.as_deref());
    }

    /// An admin change made here, told to the other gateways (nothing for a local registry).
    pub fn announce(&self, event: Event) {
        self.registry.publish(event);
    }

    /// An admin change made through another gateway, applied here as if made here.
    pub fn apply(&self, event: Event, now: Millis) {
        let r = match event {
            Event::Drain {
                backend,
                deadline_ms,
            } => {
                let deadline = deadline_ms.map(|ms| now + ms);
                self.set_state(&backend, AdminState::Draining { deadline })
                    .map(drop)
            }
            Event::Undrain { backend } => self.set_state(&backend, AdminState::Active).map(drop),
            Event::Update {
                backend,
                weight,
                max_sessions,
                cap_changed,
            } => self
                .update_backend(&backend, weight, cap_changed.then_some(max_sessions))
                .map(drop),
            Event::Add {
                backend,
                addr,
                weight,
                max_sessions,
                drain,
            } => match addr.parse() {
                Ok(addr) => self
                    .add_backend(BackendConf {
                        id: backend,
                        addr,
                        weight,
                        max_sessions,
                        drain,
                        max_connections: self.settings.max_connections,
                    })
                    .map(drop),
                Err(_) => Err(Refused::Invalid(format!("{addr:?} is not ip:port"))),
            },
            Event::Remove { backend } => self.remove_backend(&backend).map(drop),
            Event::Invalidate { .. } => Ok(()),
        };
        if let Err(e) = r {
            log::warn!(
                "upstream {}: a broadcast change did not apply: {e:?}",
                self.name
            );
        }
    }

    /// The admin state stored in Redis (read when the connection came up, or after a reload):
    /// what differs from this gateway's state is applied as if broadcast (`stored::plan`).
    pub fn apply_stored(&self, snap: &Snapshot, now: Millis) {
        let Some(reg) = &self.redis else { return };
        let dns = self.settings.discovery.is_some();
        let local: Vec<Local> = self.read_members(|m| {
            m.list
                .iter()
                .map(|b| Local {
                    id: b.conf.id.clone(),
                    weight: b.conf.weight,
                    max_sessions: b.conf.max_sessions,
                    draining: b.state != AdminState::Active,
                    discovered: dns && b.conf.id.starts_with(defaults::DISCOVERED_ID_PREFIX),
                })
                .collect()
        });
        let events = stored::plan(
            snap,
            &local,
            &reg.fleet_drained(),
            stored::wall_ms(),
            defaults::WEIGHT,
        );
        for e in events {
            log::info!("upstream {}: stored admin state: {e:?}", self.name);
            reg.note(&e);
            self.apply(e, now);
        }
    }

    /// A migration over the fleet's pins of `id` (from the registry), at `rate` per second;
    /// returns how many are scheduled (`count`, or the sessions this gateway has cached).
    pub fn migrate_shared(
        self: &Arc<Self>,
        id: &str,
        count: Option<usize>,
        rate: Option<u32>,
    ) -> Result<usize, Refused> {
        let Some(reg) = &self.redis else {
            return Err(Refused::Conflict("no shared registry".into()));
        };
        if self.read_members(|m| m.position(id).is_none()) {
            return Err(Refused::NotFound(format!("no backend {id:?}")));
        }
        let scheduled = count.unwrap_or_else(|| {
            let local = self.registry.count(id);
            usize::try_from(local).unwrap_or(usize::MAX).max(1)
        });
        let rate = rate.unwrap_or(self.settings.migrate_rate).max(1);
        let up = Arc::downgrade(self);
        let from = id.to_string();
        let choose = Box::new(move |key: SessionKey| {
            let up = up.upgrade()?;
            let set = up.current.load();
            let failed = set.router.index_of(&from);
            let d = set
                .router
                .failover(key.ring_point(), None, failed.as_slice(), 0)?;
            Some(set.router.name(d.backend).to_string())
        });
        let migrated = self.metrics.migrated.clone();
        let moved = Box::new(move |n: u64| migrated.inc_by(n));
        reg.migrate(
            id.to_string(),
            count.unwrap_or(usize::MAX),
            rate,
            choose,
            moved,
        );
        log::info!(
            "upstream {}: migrating sessions off {id} at {rate}/s through the registry",
            self.name
        );
        Ok(scheduled)
    }
}
