//! Admin changes through one gateway reach the others through Redis: a drain made on A stops
//! new sessions on that backend through B and C; a migration made on B moves sessions that C
//! then routes to their new backends, the application being told once (`reassigned`).
use super::{fleet_config, start_fleet, visit, Rng};
use berth_tests::redis::Redis;
use berth_tests::sessions::HEADER;
use berth_tests::{Backend, Gateway, Request};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Sessions visited through every gateway (so every gateway has them cached), by backend.
fn open(gws: &[Gateway], prefix: &str, n: usize) -> BTreeMap<String, String> {
    let mut homes = BTreeMap::new();
    let mut clients: Vec<_> = gws.iter().map(Gateway::client).collect();
    for i in 0..n {
        let id = format!("{prefix}-{i}");
        let seen: Vec<String> = clients
            .iter_mut()
            .map(|c| visit(c, &id).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        assert!(seen.iter().all(|b| *b == seen[0]), "{id}: {seen:?}");
        homes.insert(id, seen[0].clone());
    }
    homes
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !ok() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{what}: not within 20 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    t0.elapsed()
}

#[test]
fn admin_changes_through_one_gateway_reach_the_others() {
    let redis = Redis::start();
    let backends = Backend::start_many(4);
    let gws = start_fleet(&fleet_config(&backends, &[redis.url()], false));
    let (_, seed) = Rng::seeded();
    let mut homes = open(&gws, &format!("adm-{seed:x}"), 200);

    // Drain through A: B and C take no new session there.
    let drained = backends[0].spec().0;
    let r = gws[0].admin("POST", &format!("/admin/backends/{drained}/drain"), None);
    assert_eq!(r.status, 200, "{}", r.summary());
    for gw in &gws[1..] {
        let took = wait_until("the drain reaches the other gateways", || {
            gw.backend_info(&drained).state == "draining"
        });
        eprintln!("fleet: drain seen by {} after {took:?}", gw.addr);
    }
    let mut clients: Vec<_> = gws[1..].iter().map(Gateway::client).collect();
    for i in 0..200 {
        let id = format!("adm-new-{seed:x}-{i}");
        let b = visit(&mut clients[i % 2], &id).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(b, drained, "{id} was placed on the draining backend");
        homes.insert(id, b);
    }

    // Migrate 20 sessions off the busiest other backend through B.
    let mut per: BTreeMap<&str, usize> = BTreeMap::new();
    for b in homes.values().filter(|b| **b != drained) {
        *per.entry(b.as_str()).or_default() += 1;
    }
    let from = per
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(b, _)| b.to_string())
        .unwrap();
    let body = r#"{"count":20,"rate":100}"#;
    let r = gws[1].admin(
        "POST",
        &format!("/admin/backends/{from}/migrate"),
        Some(body),
    );
    assert_eq!(r.status, 202, "{}", r.summary());
    let moved = gws[1].wait_metric("berth_sessions_migrated_total", &[], |v| v >= 20.0);
    assert_eq!(moved, 20.0, "migrated through B");

    // Through C: exactly 20 of the sessions on `from` come back reassigned (once), each on
    // another backend; the others stay.
    let on_from: Vec<&String> = homes
        .iter()
        .filter(|(_, b)| **b == from)
        .map(|(k, _)| k)
        .collect();
    let mut c = gws[2].client();
    let mut reassigned = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    // The invalidation reaches C within the writer's period; until it has, C still has the
    // old pins cached and answers sticky on `from` (for sessions not yet invalidated, which
    // are then asked again below).
    let mut pending: Vec<&String> = on_from.clone();
    while reassigned.len() < 20 && Instant::now() < deadline {
        pending.retain(|id| {
            let r = c.send(&Request::get("/").header(HEADER, id));
            assert_eq!(r.status, 200, "{}", r.summary());
            if r.affinity() == "reassigned" {
                assert_eq!(r.previous(), from, "{id}: {}", r.summary());
                assert_ne!(r.backend(), from, "{id}: {}", r.summary());
                reassigned.insert(id.to_string(), r.backend().to_string());
                false
            } else {
                assert_eq!(
                    r.backend(),
                    from,
                    "{id} moved without being told: {}",
                    r.summary()
                );
                true
            }
        });
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        reassigned.len(),
        20,
        "sessions told they moved (of {})",
        on_from.len()
    );
    // Told once: through every gateway now, sticky on the new backend.
    for (id, to) in &reassigned {
        for gw in &gws {
            let r = gw.client().send(&Request::get("/").header(HEADER, id));
            assert_eq!((r.backend(), r.affinity()), (to.as_str(), "sticky"), "{id}");
        }
    }
}

/// `GET /admin/sessions/{value}` on a Redis upstream answers from the registry of record: a
/// gateway that never saw the session names the backend another gateway placed it on; with
/// Redis gone, the gateway that has it cached still answers, the other one has nothing to say.
#[test]
fn a_session_lookup_answers_from_redis_through_any_gateway() {
    let mut redis = Redis::start();
    let backends = Backend::start_many(4);
    let gws = start_fleet(&fleet_config(&backends, &[redis.url()], false));
    let (_, seed) = Rng::seeded();
    let id = format!("lookup-{seed:x}");
    let placed = visit(&mut gws[0].client(), &id).unwrap_or_else(|e| panic!("{e}"));
    let path = format!("/admin/sessions/{id}");
    let ask = |gw: &Gateway| {
        let r = gw.admin("GET", &path, None);
        (r.status, r.json().unwrap_or_default())
    };
    let lookups = |gw: &Gateway| gw.metric("berth_registry_round_trips_total", &[("op", "lookup")]);

    let (status, v) = ask(&gws[1]);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["registry"], "redis", "{v}");
    assert_eq!(v["backend"], placed.as_str(), "{v}");
    assert_eq!(v["cached"], false, "{v}");
    assert!(v.get("age_ms").is_none(), "not cached: no age: {v}");
    assert_eq!(lookups(&gws[1]), 1.0);
    let (status, v) = ask(&gws[0]);
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["backend"].as_str(), v["cached"].as_bool()),
        (Some(placed.as_str()), Some(true)),
        "{v}"
    );
    assert!(v["age_ms"].is_u64(), "{v}");
    assert_eq!(
        gws[0]
            .admin("GET", "/admin/sessions/never-seen", None)
            .status,
        404
    );

    redis.kill();
    let (status, v) = ask(&gws[0]);
    assert_eq!(status, 200, "from the cache: {v}");
    assert_eq!(v["backend"], placed.as_str(), "{v}");
    assert_eq!(ask(&gws[1]).0, 404, "neither Redis nor the cache has it");
}
