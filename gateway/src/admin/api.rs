//! `/admin/*` handlers. JSON in and out; errors are `{"error": "..."}` with 400 (bad input),
//! 404 (unknown backend/upstream/session), 405 (wrong method), 409 (conflict).
use super::{error, reply, Req};
use crate::config::{defaults, BackendConf};
use crate::gateway::Gateway;
use crate::registry::Event;
use crate::upstream::Upstream;
use crate::upstream::{AdminState, Refused};
use http::{Method, Response};
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;

type Resp = Response<Vec<u8>>;

fn json(status: u16, v: &impl serde::Serialize) -> Resp {
    match serde_json::to_vec(v) {
        Ok(body) => reply(status, "application/json", body),
        Err(e) => error(500, &format!("could not encode the response: {e}")),
    }
}

fn refused(r: Refused) -> Resp {
    match r {
        Refused::NotFound(m) => error(404, &m),
        Refused::Conflict(m) => error(409, &m),
        Refused::Invalid(m) => error(400, &m),
    }
}

/// Dispatch one authorized request.
pub(crate) async fn handle(gw: &Gateway, req: &Req) -> Resp {
    let path = req.path.trim_end_matches('/');
    let segs: Vec<String> = path
        .split('/')
        .skip(2)
        .map(percent_decode)
        .collect::<Option<_>>()
        .unwrap_or_default();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let upstream = query_param(req.query.as_deref(), "upstream");
    let m = &req.method;
    match segs.as_slice() {
        ["backends"] if *m == Method::GET => list(gw, upstream.as_deref()),
        ["backends"] if *m == Method::POST => add(gw, req),
        ["backends", id] if *m == Method::GET => with_backend(gw, id, upstream, |up| {
            up.view_of(id)
                .map_or_else(|| error(404, "no such backend"), |v| json(200, &v))
        }),
        ["backends", id] if *m == Method::PATCH => patch(gw, id, upstream, req),
        ["backends", id] if *m == Method::DELETE => {
            with_backend(gw, id, upstream, |up| match up.remove_backend(id) {
                Ok(n) => {
                    up.announce(Event::Remove {
                        backend: id.to_string(),
                    });
                    json(200, &serde_json::json!({ "removed": id, "sessions": n }))
                }
                Err(r) => refused(r),
            })
        }
        ["backends", id, "drain"] if *m == Method::POST => drain(gw, id, upstream, req),
        ["backends", id, "undrain"] if *m == Method::POST => with_backend(gw, id, upstream, |up| {
            let r = up.set_state(id, AdminState::Active);
            if r.is_ok() {
                up.announce(Event::Undrain {
                    backend: id.to_string(),
                });
            }
            r.map_or_else(refused, |v| json(200, &v))
        }),
        ["backends", id, "migrate"] if *m == Method::POST => migrate(gw, id, upstream, req),
        ["sessions", value] if *m == Method::GET => session(gw, value, upstream.as_deref()).await,
        ["ring"] if *m == Method::GET => super::status::ring(gw, upstream.as_deref()),
        ["backends"] | ["backends", _] | ["sessions", _] | ["ring"] => {
            error(405, "method not allowed")
        }
        ["backends", _, "drain" | "undrain" | "migrate"] => error(405, "method not allowed"),
        _ => error(404, "not found"),
    }
}

fn list(gw: &Gateway, upstream: Option<&str>) -> Resp {
    let mut backends = Vec::new();
    for up in &gw.upstreams {
        if upstream.is_none_or(|u| u == &*up.name) {
            backends.extend(up.views());
        }
    }
    if backends.is_empty() && upstream.is_some() {
        return error(404, "no such upstream");
    }
    json(200, &serde_json::json!({ "backends": backends }))
}

/// Find the upstream holding backend `id` (`?upstream=` disambiguates) and run `f` on it.
fn with_backend(
    gw: &Gateway,
    id: &str,
    upstream: Option<String>,
    f: impl FnOnce(&Arc<Upstream>) -> Resp,
) -> Resp {
    let holders: Vec<&Arc<Upstream>> = gw
        .upstreams
        .iter()
        .filter(|u| upstream.as_ref().is_none_or(|n| **n == *u.name))
        .filter(|u| u.read_members(|m| m.position(id).is_some()))
        .collect();
    match holders.as_slice() {
        [] => error(404, &format!("no backend {id:?}")),
        [one] => f(one),
        _ => error(
            400,
            &format!("backend {id:?} is in several upstreams: add ?upstream=<name>"),
        ),
    }
}

fn parse<'a, T: Deserialize<'a> + Default>(req: &'a Req) -> Result<T, Resp> {
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&req.body).map_err(|e| error(400, &format!("invalid JSON body: {e}")))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AddBody {
    upstream: Option<String>,
    id: Option<String>,
    addr: Option<String>,
    weight: Option<u32>,
    max_sessions: Option<u32>,
    drain: Option<bool>,
}

fn add(gw: &Gateway, req: &Req) -> Resp {
    let body: AddBody = match parse(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let up = match (&body.upstream, gw.upstreams.as_slice()) {
        (Some(name), ups) => match ups.iter().find(|u| *u.name == **name) {
            Some(u) => u,
            None => return error(404, &format!("no upstream {name:?}")),
        },
        (None, [only]) => only,
        (None, _) => return error(400, "\"upstream\" is required: there are several upstreams"),
    };
    let Some(id) = body.id else {
        return error(400, "\"id\" is required");
    };
    if !crate::config::valid_id(&id) {
        let max = defaults::MAX_ID_LEN;
        return error(
            400,
            &format!("id {id:?} must be 1-{max} letters, digits, - or _"),
        );
    }
    let Some(addr) = body.addr else {
        return error(400, "\"addr\" is required");
    };
    let Ok(addr) = addr.parse::<SocketAddr>() else {
        return error(400, &format!("addr {addr:?} is not ip:port"));
    };
    let weight = body.weight.unwrap_or(defaults::WEIGHT);
    if weight > 10_000 {
        return error(400, &format!("weight {weight} is out of range 0..=10000"));
    }
    if body.max_sessions == Some(0) {
        return error(400, "max_sessions must be at least 1 (omit it for no cap)");
    }
    let conf = BackendConf {
        id,
        addr,
        weight,
        max_sessions: body.max_sessions.or(up.settings.load.max_sessions),
        drain: body.drain.unwrap_or(false),
        max_connections: up.settings.max_connections,
    };
    let event = Event::Add {
        backend: conf.id.clone(),
        addr: conf.addr.to_string(),
        weight: conf.weight,
        max_sessions: conf.max_sessions,
        drain: conf.drain,
    };
    let r = up.add_backend(conf);
    if r.is_ok() {
        up.announce(event);
    }
    r.map_or_else(refused, |v| json(201, &v))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    weight: Option<u32>,
    /// A number sets the cap, `null` removes it, absent leaves it.
    #[serde(default, deserialize_with = "present")]
    max_sessions: Option<Option<u32>>,
}

/// `Some(value)` for a present field, even `null` (→ `Some(None)`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<u32>>, D::Error> {
    Option::<u32>::deserialize(d).map(Some)
}

/// `PATCH /admin/backends/{id}`: change weight and/or cap at run time. Pinned sessions stay
/// where they are; only new placements follow the new weight (a new ring).
fn patch(gw: &Gateway, id: &str, upstream: Option<String>, req: &Req) -> Resp {
    let body: PatchBody = match parse(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if body.weight.is_none() && body.max_sessions.is_none() {
        return error(
            400,
            "nothing to change: give \"weight\" and/or \"max_sessions\"",
        );
    }
    if let Some(w) = body.weight.filter(|&w| w > 10_000) {
        return error(400, &format!("weight {w} is out of range 0..=10000"));
    }
    if body.max_sessions == Some(Some(0)) {
        return error(400, "max_sessions must be at least 1 (null for no cap)");
    }
    with_backend(gw, id, upstream, |up| {
        let r = up.update_backend(id, body.weight, body.max_sessions);
        if r.is_ok() {
            up.announce(Event::Update {
                backend: id.to_string(),
                weight: body.weight,
                max_sessions: body.max_sessions.flatten(),
                cap_changed: body.max_sessions.is_some(),
            });
        }
        r.map_or_else(refused, |v| json(200, &v))
    })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DrainBody {
    deadline: Option<String>,
}

fn drain(gw: &Gateway, id: &str, upstream: Option<String>, req: &Req) -> Resp {
    let body: DrainBody = match parse(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let within = match body.deadline.as_deref().map(humantime::parse_duration) {
        None => None,
        Some(Ok(d)) => Some(d.as_millis() as u64),
        Some(Err(e)) => {
            return error(
                400,
                &format!("deadline is not a duration like \"30s\": {e}"),
            )
        }
    };
    let deadline = within.map(|ms| gw.clock.now() + ms);
    with_backend(gw, id, upstream, |up| {
        let r = up.set_state(id, AdminState::Draining { deadline });
        if r.is_ok() {
            up.announce(Event::Drain {
                backend: id.to_string(),
                deadline_ms: within,
            });
        }
        r.map_or_else(refused, |v| json(200, &v))
    })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MigrateBody {
    count: Option<usize>,
    rate: Option<u32>,
}

fn migrate(gw: &Gateway, id: &str, upstream: Option<String>, req: &Req) -> Resp {
    let body: MigrateBody = match parse(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if body.rate == Some(0) {
        return error(400, "rate must be at least 1 (sessions per second)");
    }
    with_backend(gw, id, upstream, |up| {
        let scheduled = if up.redis.is_some() {
            // Shared registry: the fleet's sessions on `id`, from Redis.
            up.migrate_shared(id, body.count, body.rate)
        } else {
            up.migrate(id, body.count, body.rate, gw.clock.now())
        };
        match scheduled {
            Ok(n) => json(202, &serde_json::json!({ "backend": id, "scheduled": n })),
            Err(r) => refused(r),
        }
    })
}

/// A pinned session, looked up by its raw affinity value through each plugin that keeps
/// overlay sessions. For a shared registry (Redis) the backend is the registry's, the record
/// every gateway follows (this gateway's cache may not have the session, or may be stale);
/// when Redis does not answer, this gateway's cached pin.
async fn session(gw: &Gateway, value: &str, upstream: Option<&str>) -> Resp {
    let now = gw.clock.now();
    for up in gw
        .upstreams
        .iter()
        .filter(|u| upstream.is_none_or(|n| n == &*u.name))
    {
        for plugin in up.chain.plugins() {
            let Some(key) = plugin.session_key(value.as_bytes()) else {
                continue;
            };
            let info = up.overlay.info(key);
            let name = |id| up.names.name(id).map(|n| n.to_string());
            let cached = info.and_then(|i| name(i.backend));
            let record = if up.registry.shared() {
                up.registry.lookup(key).await
            } else {
                None
            };
            let Some(backend) = record.clone().or_else(|| cached.clone()) else {
                continue;
            };
            let mut v = serde_json::json!({
                "upstream": &*up.name,
                "plugin": plugin.name(),
                "registry": up.registry.kind(),
                "backend": backend,
                "cached": info.is_some(),
            });
            if let Some(info) = info {
                let extra = serde_json::json!({
                    "backup": info.backup.and_then(name),
                    "age_ms": now.saturating_sub(info.created),
                    "idle_ms": now.saturating_sub(info.last_seen),
                    "in_flight": info.in_flight,
                    "frequency": info.frequency,
                });
                if let (Some(o), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
                    o.extend(e);
                }
            }
            if record.is_some() && cached.is_some() && record != cached {
                // This gateway's cache disagrees (a migration's invalidation not here yet).
                v["cached_backend"] = cached.into();
            }
            return json(200, &v);
        }
    }
    error(404, "no pinned session for that value")
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| percent_decode(v))
}

/// Decode `%XX` escapes (RFC 3986; a `%` not followed by two hex digits stays as it is, as
/// the WHATWG URL standard has it); `None` when the result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let decoded = percent_encoding::percent_decode_str(s).decode_utf8().ok()?;
    Some(decoded.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("a%20b%2Fc").as_deref(), Some("a b/c"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("bad%2").as_deref(), Some("bad%2"));
        assert_eq!(percent_decode("bad%zz").as_deref(), Some("bad%zz"));
        assert_eq!(percent_decode("%ff%fe"), None, "not UTF-8");
        assert_eq!(
            query_param(Some("a=1&upstream=web"), "upstream").as_deref(),
            Some("web")
        );
        assert_eq!(query_param(None, "upstream"), None);
    }
}
