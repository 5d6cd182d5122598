//! The `load:` and `pool:` sections of an upstream: how sessions are placed and capped, and
//! which upstream connections its requests may share.
use super::super::{defaults, LoadConf, PoolConf, RebalanceConf};
use berth_plugins::params::Obj;
use berth_routing::OverlayConfig;
use std::time::Duration;

/// `load:` → (ε in thousandths, spill_pinned, the rest).
pub(super) fn read_load(
    up: &mut Obj<'_, '_>,
    sessions: &OverlayConfig,
) -> (Option<u32>, bool, LoadConf) {
    let mut cfg = LoadConf {
        max_sessions: None,
        retry_after: defaults::RETRY_AFTER,
        rebalance: None,
    };
    let Some(v) = up.raw("load") else {
        return (None, false, cfg);
    };
    let path = up.path_of("load");
    let Some(mut o) = Obj::new(v, path, up.errors()) else {
        return (None, false, cfg);
    };
    let bound = o.opt::<f64>("bound").and_then(|eps| {
        if eps.is_finite() && eps > 0.0 && eps <= 10.0 {
            Some((eps * 1000.0).round() as u32)
        } else {
            o.error(
                "bound",
                format!("{eps} is out of range (0, 10] (e.g. 0.25)"),
            );
            None
        }
    });
    cfg.max_sessions = o.opt::<u32>("max_sessions");
    if cfg.max_sessions == Some(0) {
        o.error("max_sessions", "must be at least 1 (omit it for no cap)");
    }
    let spill = o.flag("spill_pinned", false);
    if let Some(d) = o.duration("retry_after") {
        if d.as_secs() < 1 {
            o.error("retry_after", "must be at least 1s");
        }
        cfg.retry_after = d;
    }
    if let Some(v) = o.raw("rebalance") {
        let path = o.path_of("rebalance");
        let window = Duration::from_millis(sessions.active_window);
        if let Some(mut r) = Obj::new(v, path, o.errors()) {
            let rb = RebalanceConf {
                interval: r
                    .duration("interval")
                    .unwrap_or(defaults::REBALANCE_INTERVAL),
                idle_after: r
                    .duration("idle_after")
                    .unwrap_or(defaults::REBALANCE_IDLE_AFTER),
                rate: r.opt::<u32>("rate").unwrap_or(defaults::REBALANCE_RATE),
            };
            if rb.interval.as_secs() < 1 {
                r.error("interval", "must be at least 1s");
            }
            if rb.idle_after.as_secs() < 1 {
                r.error("idle_after", "must be at least 1s");
            }
            if rb.idle_after >= window {
                r.error(
                    "idle_after",
                    format!(
                        "must be shorter than sessions.active_window ({}s): sessions idle \
                         longer no longer count as load, so moving them balances nothing",
                        window.as_secs()
                    ),
                );
            }
            if rb.rate == 0 {
                r.error("rate", "must be at least 1 (sessions per second)");
            }
            r.finish();
            if bound.is_none() {
                o.error(
                    "rebalance",
                    "needs load.bound: rebalancing moves sessions off backends above it",
                );
            }
            cfg.rebalance = Some(rb);
        }
    }
    o.finish();
    (bound, spill, cfg)
}

pub(super) fn read_pool(up: &mut Obj<'_, '_>, upstream: &str) -> PoolConf {
    let group_key = |name: &str| xxhash_rust::xxh3::xxh3_64(name.as_bytes());
    let mut cfg = PoolConf {
        group_key: group_key(upstream),
        per_session: false,
        idle_timeout: Some(defaults::POOL_IDLE_TIMEOUT),
    };
    let Some(v) = up.raw("pool") else {
        return cfg;
    };
    let path = up.path_of("pool");
    let Some(mut o) = Obj::new(v, path, up.errors()) else {
        return cfg;
    };
    if let Some(g) = o.opt::<String>("group") {
        if g.is_empty() {
            o.error("group", "must not be empty");
        }
        cfg.group_key = group_key(&g);
    }
    cfg.per_session = o.flag("per_session", false);
    let keepalive = o.flag("keepalive", true);
    if let Some(d) = o.duration("idle_timeout") {
        if d.is_zero() {
            o.error(
                "idle_timeout",
                "must be above 0 (set keepalive: false to disable pooling)",
            );
        }
        cfg.idle_timeout = Some(d);
    }
    if !keepalive {
        cfg.idle_timeout = None;
    }
    o.finish();
    cfg
}
