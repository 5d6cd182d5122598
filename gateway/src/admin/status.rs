//! Read-only views of the routing state: `/readyz` (open, for load balancers and Kubernetes
//! readiness probes) and `GET /admin/ring` (per-backend ring shares).
use super::{error, reply};
use crate::gateway::Gateway;
use crate::upstream::{AdminState, Member};
use berth_routing::Hashing;
use http::Response;
use serde::Serialize;

type Resp = Response<Vec<u8>>;

/// One upstream's readiness.
#[derive(Serialize)]
struct UpstreamReady<'a> {
    name: &'a str,
    backends: usize,
    /// Backends that take new sessions: healthy, active (not draining/drained), weight > 0.
    taking_new: usize,
}

/// Why `m` takes no new sessions, as the admin API would describe it.
fn refusal(m: &Member) -> String {
    let mut why = Vec::with_capacity(3);
    if !m.health.is_up() {
        why.push("down");
    }
    if m.state != AdminState::Active {
        why.push(m.state.as_str());
    }
    if m.conf.weight == 0 {
        why.push("weight 0");
    }
    if why.is_empty() {
        why.push("not eligible");
    }
    format!("{}: {}", m.conf.id, why.join(" and "))
}

/// `/readyz`: 200 `{"ready":true,…}` while every upstream has a backend that takes new
/// sessions, else 503 `{"ready":false,"reason":…}` naming each upstream that has none and why
/// each of its backends refuses.
pub(crate) fn readiness(gw: &Gateway) -> Resp {
    let mut upstreams = Vec::with_capacity(gw.upstreams.len());
    let mut reasons = Vec::new();
    for up in &gw.upstreams {
        let set = up.current.load();
        let n = set.router.len();
        let taking_new = (0..n).filter(|&i| set.router.takes_new(i)).count();
        if taking_new == 0 {
            let why: Vec<String> = up.read_members(|m| m.list.iter().map(refusal).collect());
            let why = if why.is_empty() {
                "no backends".to_string()
            } else {
                why.join(", ")
            };
            reasons.push(format!(
                "upstream {:?} has no backend that takes new sessions ({why})",
                up.name
            ));
        }
        upstreams.push(UpstreamReady {
            name: &up.name,
            backends: n,
            taking_new,
        });
    }
    let (status, body) = if reasons.is_empty() {
        (
            200,
            serde_json::json!({ "ready": true, "upstreams": upstreams }),
        )
    } else {
        let reason = reasons.join("; ");
        (
            503,
            serde_json::json!({ "ready": false, "reason": reason, "upstreams": upstreams }),
        )
    };
    reply(status, "application/json", body.to_string().into_bytes())
}

/// One backend on the ring.
#[derive(Serialize)]
struct RingBackend<'a> {
    id: &'a str,
    weight: u32,
    /// Ketama points or modulo slots.
    points: u32,
    /// Fraction of the hash space (see `berth_routing::Ring::shares`).
    share: f64,
}

#[derive(Serialize)]
struct RingView<'a> {
    upstream: &'a str,
    hashing: &'static str,
    points: usize,
    backends: Vec<RingBackend<'a>>,
}

/// `GET /admin/ring[?upstream=NAME]`: each upstream's hashing, point count, and every
/// backend's points and share of the hash space.
pub(crate) fn ring(gw: &Gateway, upstream: Option<&str>) -> Resp {
    let tables: Vec<_> = gw
        .upstreams
        .iter()
        .filter(|u| upstream.is_none_or(|n| n == &*u.name))
        .map(|u| (u, u.current.load_full()))
        .collect();
    if tables.is_empty() && upstream.is_some() {
        return error(404, "no such upstream");
    }
    let views: Vec<RingView<'_>> = tables
        .iter()
        .map(|(up, table)| {
            let ring = table.router.ring();
            let (shares, points) = (ring.shares(), ring.node_counts());
            RingView {
                upstream: &up.name,
                hashing: match ring.hashing() {
                    Hashing::Ketama => "ketama",
                    Hashing::Modulo => "modulo",
                },
                points: ring.len(),
                backends: (0..table.router.len())
                    .map(|i| RingBackend {
                        id: table.router.name(i),
                        weight: table.router.weight(i),
                        points: points.get(i).copied().unwrap_or(0),
                        share: shares.get(i).copied().unwrap_or(0.0),
                    })
                    .collect(),
            }
        })
        .collect();
    match serde_json::to_vec(&serde_json::json!({ "upstreams": views })) {
        Ok(body) => reply(200, "application/json", body),
        Err(e) => error(500, &format!("could not encode the response: {e}")),
    }
}
