//! Admin state stored in Redis, so a gateway that starts (or reconnects) after an admin change
//! made through another one still applies it: one hash per upstream,
//! `<prefix>:{<upstream>}:admin`, with a field per backend and attribute:
//!
//! * `<backend>:drain` — `{"deadline_unix_ms": n | null}`: drained through the admin API, with
//!   the deadline as wall-clock time (every gateway reads it on its own clock); an undrain
//!   deletes the field;
//! * `<backend>:weight` — the weight set through the API (`PATCH`, `POST`);
//! * `<backend>:max_sessions` — the cap set through the API (`"none"` for no cap);
//! * `<backend>:member` — `{"added":{"addr":"ip:port"}}` (added through the API) or
//!   `"removed"` (deleted through the API, a tombstone: the file's backend stays out).
//!
//! Each admin change writes only the fields it changes (one script, atomic), before it is
//! published, so two gateways changing different attributes of one backend do not overwrite
//! each other. Every gateway reads the hash when its connection comes up (start, every
//! reconnect, after a reload) and applies what differs from its own state ([`plan`]).
use super::super::Event;
use redis::Script;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};

/// Wall-clock milliseconds since the Unix epoch (drain deadlines in the hash).
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A backend's membership as the admin API left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Membership {
    Added { addr: String },
    Removed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Drain {
    deadline_unix_ms: Option<u64>,
}

/// What the hash says of one backend (`None`: the attribute is not stored).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredBackend {
    pub member: Option<Membership>,
    pub weight: Option<u32>,
    /// `Some(None)`: the cap was removed through the API.
    pub max_sessions: Option<Option<u32>>,
    /// `Some(deadline)`: drained through the API, until the wall-clock `deadline` (ms).
    pub drain: Option<Option<u64>>,
}

/// The hash of one upstream, by backend id.
pub type Snapshot = BTreeMap<String, StoredBackend>;

/// A field to set (`Some`) or delete (`None`).
pub type Field = (String, Option<String>);

fn field(backend: &str, attr: &str) -> String {
    format!("{backend}:{attr}")
}

fn json(v: &impl Serialize) -> String {
    serde_json::to_string(v).expect("plain data encodes")
}

fn cap(v: Option<u32>) -> String {
    v.map_or_else(|| "none".to_string(), |n| n.to_string())
}

fn drain_field(backend: &str, deadline_ms: Option<u64>, wall_ms: u64) -> Field {
    let d = Drain {
        deadline_unix_ms: deadline_ms.map(|ms| wall_ms.saturating_add(ms)),
    };
    (field(backend, "drain"), Some(json(&d)))
}

/// The fields `event`, made through this gateway's admin API at wall-clock `wall_ms`, changes.
pub fn fields_of(event: &Event, wall_ms: u64) -> Vec<Field> {
    match event {
        Event::Drain {
            backend,
            deadline_ms,
        } => vec![drain_field(backend, *deadline_ms, wall_ms)],
        Event::Undrain { backend } => vec![(field(backend, "drain"), None)],
        Event::Update {
            backend,
            weight,
            max_sessions,
            cap_changed,
        } => {
            let mut f = Vec::new();
            if let Some(w) = weight {
                f.push((field(backend, "weight"), Some(w.to_string())));
            }
            if *cap_changed {
                f.push((field(backend, "max_sessions"), Some(cap(*max_sessions))));
            }
            f
        }
        Event::Add {
            backend,
            addr,
            weight,
            max_sessions,
            drain,
        } => {
            let member = Membership::Added { addr: addr.clone() };
            vec![
                (field(backend, "member"), Some(json(&member))),
                (field(backend, "weight"), Some(weight.to_string())),
                (field(backend, "max_sessions"), Some(cap(*max_sessions))),
                if *drain {
                    drain_field(backend, None, wall_ms)
                } else {
                    (field(backend, "drain"), None)
                },
            ]
        }
        Event::Remove { backend } => vec![
            (field(backend, "member"), Some(json(&Membership::Removed))),
            (field(backend, "weight"), None),
            (field(backend, "max_sessions"), None),
            (field(backend, "drain"), None),
        ],
        Event::Invalidate { .. } => Vec::new(),
    }
}

/// Read the hash's `(field, value)` pairs; a field that does not parse is skipped (logged).
pub fn parse(pairs: Vec<(String, String)>) -> Snapshot {
    let mut snap = Snapshot::new();
    for (f, v) in pairs {
        let Some((backend, attr)) = f.rsplit_once(':') else {
            log::warn!("stored admin state: unknown field {f:?}");
            continue;
        };
        let b = snap.entry(backend.to_string()).or_default();
        let ok = match attr {
            "member" => serde_json::from_str(&v).map(|m| b.member = Some(m)).is_ok(),
            "weight" => v.parse().map(|w| b.weight = Some(w)).is_ok(),
            "max_sessions" if v == "none" => {
                b.max_sessions = Some(None);
                true
            }
            "max_sessions" => v.parse().map(|c| b.max_sessions = Some(Some(c))).is_ok(),
            "drain" => serde_json::from_str::<Drain>(&v)
                .map(|d| b.drain = Some(d.deadline_unix_ms))
                .is_ok(),
            _ => false,
        };
        if !ok {
            log::warn!("stored admin state: cannot read {f:?} = {v:?}");
        }
    }
    snap.retain(|_, b| *b != StoredBackend::default());
    snap
}

/// A backend as this gateway has it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    pub id: String,
    pub weight: u32,
    pub max_sessions: Option<u32>,
    /// Draining or drained.
    pub draining: bool,
    /// Found through DNS discovery: a tombstone does not remove it (discovery adds it back
    /// while DNS lists it, and a removal would move its sessions at every sync).
    pub discovered: bool,
}

/// The changes that bring this gateway (`local`) to the stored state, in order. `fleet_drained`
/// are the backends this gateway drained because of the fleet (through its own admin API, a
/// broadcast or the hash): one the hash no longer says is drained is undrained (an undrain
/// this gateway missed); a drain from the file or from DNS discovery is left alone. A stored
/// attribute of a backend this gateway does not have is skipped.
pub fn plan(
    snap: &Snapshot,
    local: &[Local],
    fleet_drained: &HashSet<String>,
    wall_ms: u64,
    default_weight: u32,
) -> Vec<Event> {
    let mut out = Vec::new();
    for (id, s) in snap {
        let mut here = local.iter().find(|l| l.id == *id).cloned();
        match (&s.member, &here) {
            (Some(Membership::Removed), Some(l)) => {
                if !l.discovered {
                    out.push(Event::Remove {
                        backend: id.clone(),
                    });
                }
                continue;
            }
            (Some(Membership::Removed), None) => continue,
            (Some(Membership::Added { addr }), None) => {
                let weight = s.weight.unwrap_or(default_weight);
                let max_sessions = s.max_sessions.flatten();
                out.push(Event::Add {
                    backend: id.clone(),
                    addr: addr.clone(),
                    weight,
                    max_sessions,
                    drain: false,
                });
                here = Some(Local {
                    id: id.clone(),
                    weight,
                    max_sessions,
                    draining: false,
                    discovered: false,
                });
            }
            _ => {}
        }
        let Some(here) = here else { continue };
        let weight = s.weight.filter(|w| *w != here.weight);
        let cap = s.max_sessions.filter(|c| *c != here.max_sessions);
        if weight.is_some() || cap.is_some() {
            out.push(Event::Update {
                backend: id.clone(),
                weight,
                max_sessions: cap.flatten(),
                cap_changed: cap.is_some(),
            });
        }
        match s.drain {
            Some(deadline) if !here.draining => out.push(Event::Drain {
                backend: id.clone(),
                deadline_ms: deadline.map(|d| d.saturating_sub(wall_ms)),
            }),
            None if here.draining && fleet_drained.contains(id) => out.push(Event::Undrain {
                backend: id.clone(),
            }),
            _ => {}
        }
    }
    // Drained through the fleet, and nothing stored of them any more.
    for l in local {
        if l.draining && fleet_drained.contains(&l.id) && !snap.contains_key(&l.id) {
            out.push(Event::Undrain {
                backend: l.id.clone(),
            });
        }
    }
    out
}

/// Set or delete fields of one hash, atomically, in order. KEYS: the hash. ARGV: field,
/// value pairs (an empty value deletes the field). Returns 1.
pub fn store() -> Script {
    Script::new(
        r"
for i = 1, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', KEYS[1], ARGV[i])
  else
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return 1
",
    )
}

#[cfg(test)]
#[path = "stored_tests.rs"]
mod tests;
