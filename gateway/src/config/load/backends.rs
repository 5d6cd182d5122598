//! The parts of an upstream about its backends and their sessions: `health:` (active checks),
//! `passive:` (connect failures), `sessions:` (the overlay) and `backends:`.
use super::super::{defaults, BackendConf, HealthConf, HealthKind, PassiveConf};
use super::valid_id;
use berth_plugins::params::Obj;
use berth_routing::OverlayConfig;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

pub(super) fn read_health(up: &mut Obj<'_, '_>) -> Option<HealthConf> {
    let v = up.raw("health")?;
    let path = up.path_of("health");
    let mut o = Obj::new(v, path, up.errors())?;
    let kind = match o.req::<String>("type").as_deref() {
        Some("tcp") => Some(HealthKind::Tcp),
        Some("http") => Some(HealthKind::Http {
            path: String::new(),
            expect_status: 200,
        }),
        Some(other) => {
            o.error("type", format!("{other:?} is not one of: http, tcp"));
            None
        }
        None => None,
    };
    let check_path = o.opt::<String>("path");
    let expect = o.opt::<u16>("expect_status");
    let kind = match kind {
        Some(HealthKind::Http { .. }) => {
            let path = check_path.unwrap_or_else(|| "/".into());
            if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
                o.error(
                    "path",
                    format!("{path:?} must start with \"/\" and contain no spaces"),
                );
            }
            let expect_status = expect.unwrap_or(200);
            if !(100..=599).contains(&expect_status) {
                o.error(
                    "expect_status",
                    format!("{expect_status} is not an HTTP status"),
                );
            }
            Some(HealthKind::Http {
                path,
                expect_status,
            })
        }
        other => {
            if check_path.is_some() {
                o.error("path", "only valid with type: http");
            }
            if expect.is_some() {
                o.error("expect_status", "only valid with type: http");
            }
            other
        }
    };
    let interval = o.duration("interval").unwrap_or(defaults::HEALTH_INTERVAL);
    let timeout = o.duration("timeout").unwrap_or(defaults::HEALTH_TIMEOUT);
    if interval < Duration::from_millis(10) {
        o.error("interval", "must be at least 10ms");
    }
    if timeout.is_zero() {
        o.error("timeout", "must be more than 0");
    }
    let rise = o.opt::<u32>("rise").unwrap_or(defaults::HEALTH_RISE).max(1);
    let fall = o.opt::<u32>("fall").unwrap_or(defaults::HEALTH_FALL).max(1);
    o.finish();
    Some(HealthConf {
        kind: kind?,
        interval,
        timeout,
        rise,
        fall,
    })
}

pub(super) fn read_passive(up: &mut Obj<'_, '_>) -> PassiveConf {
    let mut cfg = PassiveConf {
        fall: defaults::PASSIVE_FALL,
        cooldown: defaults::PASSIVE_COOLDOWN,
    };
    let Some(v) = up.raw("passive") else {
        return cfg;
    };
    let path = up.path_of("passive");
    let Some(mut o) = Obj::new(v, path, up.errors()) else {
        return cfg;
    };
    cfg.fall = o.opt::<u32>("fall").unwrap_or(cfg.fall);
    cfg.cooldown = o.duration("cooldown").unwrap_or(cfg.cooldown);
    o.finish();
    cfg
}

pub(super) fn read_sessions(up: &mut Obj<'_, '_>) -> OverlayConfig {
    let mut cfg = OverlayConfig {
        max_entries: defaults::MAX_SESSIONS,
        idle_ttl: defaults::IDLE_TTL.as_millis() as u64,
        active_window: defaults::ACTIVE_WINDOW.as_millis() as u64,
    };
    let Some(v) = up.raw("sessions") else {
        return cfg;
    };
    let path = up.path_of("sessions");
    let Some(mut o) = Obj::new(v, path, up.errors()) else {
        return cfg;
    };
    if let Some(ttl) = o.duration("idle_ttl") {
        if ttl.as_secs() < 1 {
            o.error("idle_ttl", "must be at least 1s");
        }
        cfg.idle_ttl = ttl.as_millis() as u64;
    }
    if let Some(max) = o.opt::<usize>("max") {
        if max == 0 {
            o.error("max", "must be at least 1");
        }
        cfg.max_entries = max;
    }
    if let Some(w) = o.duration("active_window") {
        if w.as_secs() < 1 {
            o.error("active_window", "must be at least 1s");
        }
        cfg.active_window = w.as_millis() as u64;
    }
    o.finish();
    cfg
}

/// The file's backends. With `discovery:` (`discovered`) the list may be empty or absent, and
/// ids with the discovered backends' prefix are refused (they would collide).
pub(super) fn read_backends(up: &mut Obj<'_, '_>, discovered: bool) -> Vec<BackendConf> {
    let mut out: Vec<BackendConf> = Vec::new();
    let mut ids = HashSet::new();
    if up.raw("backends").is_none() {
        if !discovered {
            up.error(
                "backends",
                "is required: at least one backend (or `discovery:` to find them in DNS)",
            );
        }
        return out;
    }
    up.list("backends", |v, path, errors| {
        let Some(mut o) = Obj::new(v, path, errors) else {
            return;
        };
        let id = o.req::<String>("id");
        if let Some(id) = &id {
            if !valid_id(id) {
                o.error(
                    "id",
                    format!(
                        "{id:?} must be 1-{} letters, digits, - or _",
                        defaults::MAX_ID_LEN
                    ),
                );
            } else if !ids.insert(id.clone()) {
                o.error("id", format!("duplicate backend id {id:?}"));
            } else if discovered && id.starts_with(defaults::DISCOVERED_ID_PREFIX) {
                o.error(
                    "id",
                    format!(
                        "{id:?}: ids starting with {:?} are reserved for the backends `discovery:` \
                         finds",
                        defaults::DISCOVERED_ID_PREFIX
                    ),
                );
            }
        }
        let addr = o
            .req::<String>("addr")
            .and_then(|a| match a.parse::<SocketAddr>() {
                Ok(sa) => Some(sa),
                Err(_) => {
                    o.error("addr", format!("{a:?} is not ip:port"));
                    None
                }
            });
        let weight = o.opt::<u32>("weight").unwrap_or(defaults::WEIGHT);
        if weight > 10_000 {
            o.error("weight", format!("{weight} is out of range 0..=10000"));
        }
        let max_sessions = o.opt::<u32>("max_sessions");
        if max_sessions == Some(0) {
            o.error("max_sessions", "must be at least 1 (omit it for no cap)");
        }
        let drain = o.flag("drain", false);
        let max_connections = o.opt::<u32>("max_connections");
        if max_connections == Some(0) {
            o.error(
                "max_connections",
                "must be at least 1 (omit it for no limit)",
            );
        }
        o.finish();
        if let (Some(id), Some(addr)) = (id, addr) {
            out.push(BackendConf {
                id,
                addr,
                weight,
                max_sessions,
                drain,
                max_connections,
            });
        }
    });
    if !out.is_empty() && out.iter().all(|b| b.weight == 0) {
        up.error(
            "backends",
            "every backend has weight 0: no backend could take a new session",
        );
    }
    out
}
