//! The gateway's state as the wire carries it, both ways: membership and pins of each
//! upstream out of a running gateway (old process), and into a starting one (new process).
//!
//! Membership is merged the way a SIGHUP reload merges: the new process starts from the old
//! one's *live* list (admin drains, API-added and API-removed backends, health) and applies
//! the difference between the file the old process last loaded and its own file. Pins are
//! applied only where they still make sense: a pin (or backup) on a backend the new process
//! does not have, or in an upstream it does not have, is dropped and counted.
use super::wire::{self, LiveBackend, Members, Pins, Record, Removed, WireMigration, WireState};
use crate::gateway::Gateway;
use crate::upstream::Upstream;
use crate::upstream::{AdminState, Member, Migration};
use berth_routing::{BackendId, Change, HealthState, Imported, Millis, Pin, PinRecord, SessionKey};
use std::collections::HashMap;

/// Membership of `up`, with drain deadlines as time left from `now`.
pub(super) fn members_of(up: &Upstream, now: Millis) -> Members {
    up.read_members(|m| members_wire(up, m, now))
}

fn members_wire(up: &Upstream, m: &crate::upstream::Members, now: Millis) -> Members {
    let name = |id: BackendId| up.names.name(id).map(|n| n.to_string()).unwrap_or_default();
    Members {
        upstream: up.name.to_string(),
        file: m.file.clone(),
        live: m
            .list
            .iter()
            .map(|b| LiveBackend {
                conf: b.conf.clone(),
                state: match b.state {
                    AdminState::Active => WireState::Active,
                    AdminState::Draining { deadline } => WireState::Draining {
                        remaining_ms: deadline.map(|d| d.saturating_sub(now)),
                    },
                    AdminState::Drained => WireState::Drained,
                },
                up: b.health.is_up(),
            })
            .collect(),
        migrations: m
            .migrations
            .iter()
            .map(|g| WireMigration {
                backend: name(g.backend),
                remaining: g.remaining as u64,
                rate: g.rate,
            })
            .collect(),
        moved: m.moved.iter().map(|(k, b)| (k.0, name(*b))).collect(),
    }
}

/// What changes of `up`'s membership a successor follows (ids, addresses, weights, admin
/// states with absolute deadlines): compared between ticks to send changes only.
pub(super) fn members_signature(up: &Upstream) -> Vec<LiveBackend> {
    members_of(up, 0)
        .live
        .into_iter()
        .map(|mut b| {
            b.up = true; // health is each process's own observation
            b
        })
        .collect()
}

/// Turns an overlay's records (or journal changes) into bounded PINS/REMOVED frames.
pub(super) struct Packer<'u> {
    up: &'u Upstream,
    names: Vec<String>,
    index: HashMap<BackendId, u16>,
    records: Vec<Record>,
    removed: Vec<u128>,
}

impl<'u> Packer<'u> {
    pub(super) fn new(up: &'u Upstream) -> Packer<'u> {
        Packer {
            up,
            names: Vec::new(),
            index: HashMap::new(),
            records: Vec::new(),
            removed: Vec::new(),
        }
    }

    fn name_index(&mut self, id: BackendId) -> Option<u16> {
        if let Some(i) = self.index.get(&id) {
            return Some(*i);
        }
        let name = self.up.names.name(id)?;
        let i = u16::try_from(self.names.len())
            .ok()
            .filter(|i| *i != u16::MAX)?;
        self.names.push(name.to_string());
        self.index.insert(id, i);
        Some(i)
    }

    /// Adds one pin; a frame is emitted to `emit` whenever one is full.
    pub(super) fn pin(&mut self, r: &PinRecord, emit: &mut impl FnMut(wire::Frame)) {
        let Some(backend) = self.name_index(r.pin.backend) else {
            return;
        };
        let backup = r.pin.backup.and_then(|b| self.name_index(b));
        self.records.push(Record {
            key: r.key.0,
            backend,
            backup,
            age_s: u32::try_from(r.age / 1000).unwrap_or(u32::MAX),
            idle_s: u32::try_from(r.idle / 1000).unwrap_or(u32::MAX),
            placed: r.placed,
        });
        if self.records.len() >= wire::MAX_RECORDS || self.names.len() >= 60_000 {
            self.flush_pins(emit);
        }
    }

    pub(super) fn change(&mut self, c: &Change, emit: &mut impl FnMut(wire::Frame)) {
        match c {
            Change::Pinned(r) => self.pin(r, emit),
            Change::Removed(k) => {
                self.removed.push(k.0);
                if self.removed.len() >= wire::MAX_RECORDS {
                    self.flush_removed(emit);
                }
            }
        }
    }

    fn flush_pins(&mut self, emit: &mut impl FnMut(wire::Frame)) {
        if self.records.is_empty() {
            return;
        }
        self.index.clear();
        emit(wire::Frame::Pins(Pins {
            upstream: self.up.name.to_string(),
            names: std::mem::take(&mut self.names),
            records: std::mem::take(&mut self.records),
        }));
    }

    fn flush_removed(&mut self, emit: &mut impl FnMut(wire::Frame)) {
        if self.removed.is_empty() {
            return;
        }
        emit(wire::Frame::Removed(Removed {
            upstream: self.up.name.to_string(),
            keys: std::mem::take(&mut self.removed),
        }));
    }

    /// Emits what is left.
    pub(super) fn finish(mut self, emit: &mut impl FnMut(wire::Frame)) {
        self.flush_pins(emit);
        self.flush_removed(emit);
    }
}

/// Counts of what a successor applied.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Pins applied.
    pub sessions: u64,
    /// Pins dropped, by why (`backend_gone`, `upstream_gone`, `expired`).
    pub dropped: Vec<(&'static str, u64)>,
    /// Upstreams whose membership was taken over.
    pub upstreams: usize,
    /// Removals applied.
    pub removed: u64,
    /// Ring picks of the old process not applied over a session id pinned here explicitly
    /// (both processes serve for a few seconds during an upgrade).
    pub kept: u64,
}

impl Tally {
    fn drop(&mut self, why: &'static str, n: u64) {
        if n == 0 {
            return;
        }
        match self.dropped.iter_mut().find(|(w, _)| *w == why) {
            Some((_, c)) => *c += n,
            None => self.dropped.push((why, n)),
        }
    }

    /// Pins dropped for any reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().map(|(_, n)| n).sum()
    }
}

/// Applies received frames to a gateway.
#[derive(Default)]
pub(super) struct Applier {
    /// The last membership received per upstream (changes are applied as differences).
    last: HashMap<String, Members>,
    pub(super) tally: Tally,
}

impl Applier {
    fn upstream<'g>(gw: &'g Gateway, name: &str) -> Option<&'g Upstream> {
        gw.upstreams.iter().find(|u| &*u.name == name).map(|u| &**u)
    }

    /// A MEMBERS frame: merged whole during the snapshot, as differences afterwards.
    pub(super) fn members(&mut self, gw: &Gateway, m: Members, snapshot: bool, now: Millis) {
        let Some(up) = Self::upstream(gw, &m.upstream) else {
            if snapshot {
                log::warn!(
                    "upgrade: upstream {} of the old process is not in this configuration; its \
                     membership and sessions are dropped",
                    m.upstream
                );
            }
            return;
        };
        match self.last.get(&m.upstream) {
            Some(prev) if !snapshot => follow(up, prev, &m, now),
            _ => {
                adopt(up, &m, now);
                self.tally.upstreams += 1;
            }
        }
        self.last.insert(m.upstream.clone(), m);
    }

    /// A PINS frame: each pin whose backend this process has is imported.
    pub(super) fn pins(&mut self, gw: &Gateway, p: &Pins, now: Millis) {
        let n = p.records.len() as u64;
        let received = &gw.metrics.upgrade_received;
        let dropped = &gw.metrics.upgrade_dropped;
        let Some(up) = Self::upstream(gw, &p.upstream) else {
            dropped
                .with_label_values(&[p.upstream.as_str(), "upstream_gone"])
                .inc_by(n);
            self.tally.drop("upstream_gone", n);
            return;
        };
        let set = up.current.load();
        let ids: Vec<Option<BackendId>> = p
            .names
            .iter()
            .map(|n| set.router.index_of(n).map(|i| set.router.id(i)))
            .collect();
        let (mut ok, mut gone, mut expired) = (0, 0, 0);
        for r in &p.records {
            let Some(backend) = ids[usize::from(r.backend)] else {
                gone += 1;
                continue;
            };
            let rec = PinRecord {
                key: SessionKey(r.key),
                pin: Pin {
                    backend,
                    backup: r.backup.and_then(|b| ids[usize::from(b)]),
                },
                age: Millis::from(r.age_s) * 1000,
                idle: Millis::from(r.idle_s) * 1000,
                placed: r.placed,
            };
            match up.overlay.import(&rec, now) {
                Imported::Added | Imported::Updated => ok += 1,
                Imported::Kept => self.tally.kept += 1,
                Imported::Expired => expired += 1,
            }
        }
        received.with_label_values(&[&*up.name]).inc_by(ok);
        for (why, c) in [("backend_gone", gone), ("expired", expired)] {
            if c > 0 {
                dropped.with_label_values(&[&*up.name, why]).inc_by(c);
            }
            self.tally.drop(why, c);
        }
        self.tally.sessions += ok;
    }

    /// A REMOVED frame.
    pub(super) fn removed(&mut self, gw: &Gateway, r: &Removed) {
        if let Some(up) = Self::upstream(gw, &r.upstream) {
            for k in &r.keys {
                up.overlay.remove(SessionKey(*k));
            }
            self.tally.removed += r.keys.len() as u64;
        }
    }
}

fn admin_state(s: WireState, now: Millis) -> AdminState {
    match s {
        WireState::Active => AdminState::Active,
        WireState::Draining { remaining_ms } => AdminState::Draining {
            deadline: remaining_ms.map(|r| now.saturating_add(r)),
        },
        WireState::Drained => AdminState::Drained,
    }
}

/// Snapshot: the old live list, then this process's file changes on top (as a reload would).
fn adopt(up: &Upstream, m: &Members, now: Millis) {
    let cooldown = u64::try_from(up.settings.passive.cooldown.as_millis()).unwrap_or(0);
    let list = m
        .live
        .iter()
        .map(|b| Member {
            conf: b.conf.clone(),
            state: admin_state(b.state, now),
            health: if b.up {
                HealthState::up()
            } else {
                HealthState::down()
            },
            // Without active checks a passively-downed backend is tried after a cooldown.
            retry_at: (!b.up && up.settings.health.is_none()).then_some(now + cooldown),
        })
        .collect();
    let known = |id: &str| m.live.iter().any(|b| b.conf.id == id);
    let migrations = m
        .migrations
        .iter()
        .filter(|g| known(&g.backend))
        .map(|g| Migration {
            backend: up.names.intern(&g.backend),
            remaining: usize::try_from(g.remaining).unwrap_or(usize::MAX),
            rate: g.rate.max(1),
            budget: 0.0,
            last: now,
        })
        .collect();
    let moved = m
        .moved
        .iter()
        .map(|(k, b)| (SessionKey(*k), up.names.intern(b)))
        .collect();
    let own_file = up.adopt(list, migrations, moved, m.file.clone());
    // Diff the old file against this process's file, applied to the old live list.
    up.reload_backends(&own_file);
}

/// After the snapshot: apply what the old process changed between two MEMBERS frames, as the
/// admin API would (backends added, removed, drained, undrained; health is not followed).
fn follow(up: &Upstream, prev: &Members, next: &Members, now: Millis) {
    let find = |list: &[LiveBackend], id: &str| list.iter().position(|b| b.conf.id == id);
    for b in &next.live {
        match find(&prev.live, &b.conf.id).map(|i| &prev.live[i]) {
            None => {
                log::info!(
                    "upgrade: the old process added backend {} to {}",
                    b.conf.id,
                    up.name
                );
                if up.add_backend(b.conf.clone()).is_err() {
                    continue; // this process has it already
                }
                let _ = up.set_state(&b.conf.id, admin_state(b.state, now));
            }
            Some(p) => {
                if p.conf != b.conf {
                    replace_conf(up, &b.conf);
                }
                if p.state != b.state {
                    log::info!(
                        "upgrade: the old process set backend {} of {} {:?}",
                        b.conf.id,
                        up.name,
                        b.state
                    );
                    let _ = up.set_state(&b.conf.id, admin_state(b.state, now));
                }
            }
        }
    }
    for p in &prev.live {
        if find(&next.live, &p.conf.id).is_none() {
            log::info!(
                "upgrade: the old process removed backend {} from {}",
                p.conf.id,
                up.name
            );
            let _ = up.remove_backend(&p.conf.id);
        }
    }
}

/// A backend's address or weight changed (a reload in the old process).
fn replace_conf(up: &Upstream, conf: &crate::config::BackendConf) {
    up.replace_conf(conf);
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
