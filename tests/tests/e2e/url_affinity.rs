//! Path and query affinity (the built-in `path` and `query` plugins): 50 rooms × 4 clients
//! without cookies, the room named in the path (`/doc/{id}/...`) or in a query parameter
//! (`?room=`) — every client of a room reaches one backend, and rooms spread over the backends.
use berth_tests::config::{self, UPSTREAM};
use berth_tests::{first_n, par_map, tally, Backend, Gateway, Request};
use std::collections::BTreeMap;

const ROOMS: usize = 50;
const CLIENTS: usize = 4;
const REQUESTS: usize = 3;
const THREADS: usize = 8;

fn start() -> (Vec<Backend>, Gateway) {
    let backends = Backend::start_many(3);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let plugins = [
        "type: path\npattern: /doc/{id}/...\n".to_string(),
        "type: query\nname: room\n".to_string(),
    ];
    (
        backends,
        Gateway::start(&config::app_config(&plugins, &specs)),
    )
}

/// Every client of every room, each on its own connection (no cookie is ever sent back):
/// `(room, client) → backend`, or what went wrong.
fn visit(
    gw: &Gateway,
    target: impl Fn(usize, usize) -> String + Sync,
) -> Vec<Result<String, String>> {
    par_map(ROOMS * CLIENTS, THREADS, |i| {
        let (room, client) = (i / CLIENTS, i % CLIENTS);
        let mut c = gw.client();
        let mut home: Option<String> = None;
        for n in 0..REQUESTS {
            let path = target(room, n);
            let r = c
                .try_send(&Request::get(&path))
                .map_err(|e| format!("room {room} client {client} {path}: {e}"))?;
            if r.status != 200 {
                return Err(format!("room {room} {path}: {}", r.summary()));
            }
            match &home {
                None => home = Some(r.backend().to_string()),
                Some(h) if h != r.backend() => {
                    return Err(format!(
                        "room {room} client {client}: {h} then {}",
                        r.backend()
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(home.unwrap_or_default())
    })
}

/// Every client of a room on one backend; rooms on every backend.
fn check(kind: &str, results: &[Result<String, String>]) {
    let failures: Vec<String> = results.iter().filter_map(|r| r.clone().err()).collect();
    assert!(
        failures.is_empty(),
        "{kind}: {} failed:\n  {}",
        failures.len(),
        first_n(&failures, 10)
    );
    let mut rooms: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    for (i, r) in results.iter().enumerate() {
        rooms
            .entry(i / CLIENTS)
            .or_default()
            .push(r.as_deref().unwrap_or(""));
    }
    let split: Vec<String> = rooms
        .iter()
        .filter(|(_, homes)| homes.iter().any(|h| *h != homes[0]))
        .map(|(room, homes)| format!("room {room}: {homes:?}"))
        .collect();
    assert!(
        split.is_empty(),
        "{kind}: rooms split over backends:\n  {}",
        split.join("\n  ")
    );
    let per_backend = tally(rooms.values().map(|homes| homes[0]));
    for b in ["b1", "b2", "b3"] {
        let n = per_backend.get(b).copied().unwrap_or(0);
        assert!(
            n >= 8,
            "{kind}: backend {b} has {n} of {ROOMS} rooms: {per_backend:?}"
        );
    }
}

#[test]
fn every_client_of_a_room_in_the_path_meets_on_one_backend() {
    let (_backends, gw) = start();
    let results = visit(&gw, |room, n| format!("/doc/room-{room}/part/{n}"));
    check("path", &results);
    // One session per room, pinned in the overlay like a header session.
    let sessions = gw.metric("berth_sessions", &[("upstream", UPSTREAM)]);
    assert_eq!(sessions, ROOMS as f64);
}

#[test]
fn every_client_of_a_room_in_the_query_meets_on_one_backend() {
    let (_backends, gw) = start();
    // The parameter anywhere in the query, the path changing.
    let results = visit(&gw, |room, n| {
        format!("/chat/{n}?x={n}&room=r%2D{room}&y=1")
    });
    check("query", &results);
    assert_eq!(
        gw.metric("berth_sessions", &[("upstream", UPSTREAM)]),
        ROOMS as f64
    );
    // Encoded or not, one room: `r-7` reaches the backend `r%2D7` was placed on.
    let placed = gw.client().get("/chat/0?room=r%2D7").backend().to_string();
    assert_eq!(gw.client().get("/chat?room=r-7").backend(), placed);
}
