//! The YAML reader: file → [`Config`], collecting every error with its key path.
use super::{defaults, Admin, ConfError, Config, Route, UpstreamConf, UpstreamSettings};
use berth_plugins::params::{join, show, Errors, Obj};
use berth_plugins::{Chain, PluginContext, Registry};
use berth_routing::{Hashing, RouterConfig};
use pingora_core::server::configuration::ServerConf;
use serde_yaml::Value;
use std::net::SocketAddr;

mod backends;
mod discovery;
mod listeners;
mod placement;
mod upstream_tls;
mod websocket;
use backends::{read_backends, read_health, read_passive, read_sessions};
use listeners::read_listeners;
use placement::{read_load, read_pool};

/// Read and check a configuration file.
pub fn load_file(path: &str, registry: &Registry) -> Result<Config, Vec<ConfError>> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, registry),
        Err(e) => Err(vec![ConfError {
            path: String::new(),
            message: format!("cannot read {path}: {e}"),
        }]),
    }
}

/// Parse and check a configuration document.
pub fn parse(text: &str, registry: &Registry) -> Result<Config, Vec<ConfError>> {
    let doc: Value = serde_yaml::from_str(text).map_err(|e| {
        vec![ConfError {
            path: String::new(),
            message: format!("not valid YAML: {e}"),
        }]
    })?;
    let mut errors = Errors::default();
    let config = read_config(&doc, registry, &mut errors);
    match config {
        Some(c) if errors.is_empty() => Ok(c),
        _ => Err(errors.0),
    }
}

fn read_config(doc: &Value, registry: &Registry, errors: &mut Errors) -> Option<Config> {
    let mut top = Obj::new(doc, String::new(), errors)?;
    let server = top.raw("server").map(|v| read_server(v, top.errors()));
    let listeners = read_listeners(&mut top);
    let admin = read_admin(&mut top);
    let access_log = super::access_log::read(&mut top);
    let limits = super::limits::read(&mut top);
    let global_registry = super::registry::read(&mut top).unwrap_or_default();
    let mut upstreams = Vec::new();
    let before = top.errors().len();
    top.map("upstreams", |name, v, path, errors| {
        let plugins = (registry, &global_registry);
        if let Some(u) = read_upstream(name, v, path, plugins, errors) {
            upstreams.push(u);
        }
    });
    if upstreams.is_empty() && top.errors().len() == before {
        top.error(
            "upstreams",
            "is required: at least one upstream with backends",
        );
    }
    if listeners.iter().any(|l| l.addr == admin.listen) {
        let msg = format!("{:?} is also a proxy listener", admin.listen);
        top.error("admin", msg);
    }
    let routes = read_routes(&mut top, &upstreams);
    top.finish();
    let server = match server {
        None => Some(berth_server_defaults(ServerConf::default(), None)),
        Some(s) => s,
    };
    Some(Config {
        server: server?,
        listeners,
        admin,
        routes,
        upstreams,
        access_log,
        limits,
    })
}

/// `server:` is Pingora's `ServerConf`. Pingora ignores unknown keys; Berth does not, so a
/// typo like `thread: 4` is caught: every key must survive a round trip through ServerConf.
fn read_server(v: &Value, errors: &mut Errors) -> Option<ServerConf> {
    let Value::Mapping(m) = v else {
        errors.push("server", format!("expected a mapping, found {}", show(v)));
        return None;
    };
    let known = serde_yaml::to_value(ServerConf::default()).ok();
    let known = known.as_ref().and_then(Value::as_mapping);
    for k in m.keys() {
        if known.is_some_and(|known| !known.contains_key(k)) {
            let key = k.as_str().unwrap_or("?");
            errors.push(
                join("server", key),
                "unknown key (not a Pingora server setting)",
            );
        }
    }
    let conf: ServerConf = match serde_yaml::from_value(v.clone()) {
        Ok(c) => berth_server_defaults(c, Some(m)),
        Err(e) => {
            errors.push("server", e.to_string());
            return None;
        }
    };
    match conf.validate() {
        Ok(c) => Some(c),
        Err(e) => {
            errors.push("server", e.to_string());
            None
        }
    }
}

/// Where Berth's default differs from Pingora's (for keys the file does not set):
/// `fast_timeout_to_tokio_threshold_seconds: 0` — Pingora's own timers ("fast timeouts") cost
/// a registration in a shared timer table each time a timed upstream read or pooled connection
/// waits, i.e. on every request; Tokio's timers cost less there (measured: 2.4k fewer
/// instructions per proxied request, `conf/bench/instructions.sh`).
/// `upstream_keepalive_pool_size: 1024` (Pingora: 128) — idle upstream connections kept per
/// worker thread. Beyond it a released connection is closed, and under many concurrent
/// requests (2,000 client connections) 9% of requests opened a new backend connection
/// (`make bench-tail`, system calls per request: `connect` 0.09 → 0 with 1,024).
/// `work_stealing: false` when `threads: 1` — with one worker there is nothing to steal, and
/// Tokio's multi-thread scheduler serves tasks unfairly once more are ready than its local
/// queue holds (they wait in the global queue): p99 at 2,000 connections 572 ms against 173 ms
/// on the single-thread scheduler Pingora uses without stealing (`conf/bench/ab.sh`).
fn berth_server_defaults(mut conf: ServerConf, set: Option<&serde_yaml::Mapping>) -> ServerConf {
    let is_set = |key: &str| set.is_some_and(|m| m.contains_key(key));
    if !is_set("fast_timeout_to_tokio_threshold_seconds") {
        conf.fast_timeout_to_tokio_threshold_seconds = Some(0);
    }
    if !is_set("upstream_keepalive_pool_size") {
        conf.upstream_keepalive_pool_size = defaults::UPSTREAM_KEEPALIVE_POOL_SIZE;
    }
    if !is_set("work_stealing") && conf.threads == 1 {
        conf.work_stealing = false;
    }
    conf
}

fn read_admin(top: &mut Obj<'_, '_>) -> Admin {
    let mut admin = Admin {
        listen: defaults::ADMIN_LISTEN.into(),
        token_env: defaults::TOKEN_ENV.into(),
    };
    let Some(v) = top.raw("admin") else {
        return admin;
    };
    let path = top.path_of("admin");
    let Some(mut o) = Obj::new(v, path, top.errors()) else {
        return admin;
    };
    if let Some(listen) = o.opt::<String>("listen") {
        if listen.parse::<SocketAddr>().is_err() {
            o.error("listen", format!("{listen:?} is not ip:port"));
        } else {
            admin.listen = listen;
        }
    }
    if let Some(env) = o.opt::<String>("token_env") {
        if env.is_empty() || !env.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            o.error(
                "token_env",
                format!("{env:?} is not an environment variable name"),
            );
        } else {
            admin.token_env = env;
        }
    }
    o.finish();
    admin
}

fn read_routes(top: &mut Obj<'_, '_>, upstreams: &[UpstreamConf]) -> Vec<Route> {
    let mut routes = Vec::new();
    if top.raw("routes").is_none() {
        if upstreams.len() == 1 {
            routes.push(Route {
                host: None,
                path_prefix: "/".into(),
                upstream: 0,
            });
        } else if upstreams.len() > 1 {
            top.error("routes", "is required when there is more than one upstream");
        }
        return routes;
    }
    top.list("routes", |v, path, errors| {
        let Some(mut o) = Obj::new(v, path, errors) else {
            return;
        };
        let host = o.opt::<String>("host").filter(|h| h != "*");
        let prefix = o.opt::<String>("path_prefix").unwrap_or_else(|| "/".into());
        if !prefix.starts_with('/') {
            o.error("path_prefix", format!("{prefix:?} must start with \"/\""));
        }
        let upstream = o.req::<String>("upstream").and_then(|name| {
            let idx = upstreams.iter().position(|u| u.name == name);
            if idx.is_none() {
                let known: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
                o.error(
                    "upstream",
                    format!("unknown upstream {name:?} (defined: {})", known.join(", ")),
                );
            }
            idx
        });
        if let Some(upstream) = upstream {
            routes.push(Route {
                host: host.map(|h| h.to_ascii_lowercase()),
                path_prefix: prefix,
                upstream,
            });
        }
        o.finish();
    });
    routes
}

fn read_upstream(
    name: &str,
    v: &Value,
    path: String,
    (registry, global_registry): (&Registry, &super::RegistryConf),
    errors: &mut Errors,
) -> Option<UpstreamConf> {
    if !valid_id(name) {
        errors.push(
            path.clone(),
            format!("upstream name {name:?} must be 1-64 letters, digits, - or _"),
        );
    }
    let mut o = Obj::new(v, path, errors)?;
    let hashing = match o.opt::<String>("hashing").as_deref() {
        None | Some("ketama") => Hashing::Ketama,
        Some("modulo") => Hashing::Modulo,
        Some(other) => {
            o.error(
                "hashing",
                format!("{other:?} is not one of: ketama, modulo"),
            );
            Hashing::Ketama
        }
    };
    let points = o
        .opt::<u32>("points_per_weight")
        .unwrap_or(defaults::POINTS_PER_WEIGHT);
    if !(1..=10_000).contains(&points) {
        o.error(
            "points_per_weight",
            format!("{points} is out of range 1..=10000"),
        );
    }
    let mut plugins = Vec::new();
    let ctx = PluginContext { upstream: name };
    o.list("affinity", |v, path, errors| {
        if let Some(p) = registry.build(v, path, &ctx, errors) {
            plugins.push(p);
        }
    });
    let sessions = read_sessions(&mut o);
    let connect_timeout = o
        .duration("connect_timeout")
        .unwrap_or(defaults::CONNECT_TIMEOUT);
    let read_timeout = o.duration("read_timeout").unwrap_or(defaults::READ_TIMEOUT);
    let connect_retries = o
        .opt::<usize>("connect_retries")
        .unwrap_or(defaults::CONNECT_RETRIES);
    let health = read_health(&mut o);
    let passive = read_passive(&mut o);
    let migrate_rate = o
        .opt::<u32>("migrate_rate")
        .unwrap_or(defaults::MIGRATE_RATE);
    if migrate_rate == 0 {
        o.error("migrate_rate", "must be at least 1 (sessions per second)");
    }
    let (bound_milli, spill_pinned, load) = read_load(&mut o, &sessions);
    let pool = read_pool(&mut o, name);
    let max_connections = o.opt::<u32>("max_connections");
    if max_connections == Some(0) {
        o.error(
            "max_connections",
            "must be at least 1 (omit it for no limit)",
        );
    }
    let queue_timeout = o
        .duration("queue_timeout")
        .unwrap_or(defaults::QUEUE_TIMEOUT);
    let forward_headers = o.opt::<bool>("forward_headers").unwrap_or(true);
    let tls = upstream_tls::read(&mut o);
    let session_registry = super::registry::read(&mut o).unwrap_or_else(|| global_registry.clone());
    // Backends may be absent with `discovery:`, even one with mistakes (reported on their own).
    let discovered = o.raw("discovery").is_some();
    let discovery = discovery::read(&mut o);
    let mut backends = read_backends(&mut o, discovered);
    let websocket = websocket::read_websocket(&mut o);
    let protocol = websocket::read_protocol(&mut o, tls.is_some());
    for b in backends.iter_mut() {
        b.max_sessions = b.max_sessions.or(load.max_sessions);
        b.max_connections = b.max_connections.or(max_connections);
    }
    o.finish();
    Some(UpstreamConf {
        name: name.to_string(),
        chain: Chain::new(plugins),
        sessions,
        settings: UpstreamSettings {
            router: RouterConfig {
                hashing,
                points_per_weight: points,
                bound_milli,
                spill_pinned,
                track_in_flight: true,
            },
            connect_timeout,
            read_timeout,
            connect_retries,
            health,
            passive,
            migrate_rate,
            load,
            pool,
            max_connections,
            queue_timeout,
            forward_headers,
            tls,
            discovery,
            websocket,
            protocol,
        },
        backends,
        registry: session_registry,
    })
}

/// Ids and names appear in cookies, metric labels and URLs: keep them plain (the rule of the
/// cookie token's ids, `[A-Za-z0-9_-]{1,64}`).
pub fn valid_id(s: &str) -> bool {
    berth_plugins::token::valid_id(s.as_bytes())
}
