//! Admin changes are stored in Redis, not only broadcast: a gateway started after a drain, a
//! weight change, a backend added and one removed through the others applies all four before
//! it reports its registry up, places no new session on the drained backend nor on the removed
//! one, and places again on the drained backend once another gateway undrains it.
use super::{fleet_config, visit, Rng};
use berth_tests::redis::{Redis, RedisCluster};
use berth_tests::{Backend, Gateway};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn start_gateway(yaml: &str) -> Gateway {
    let gw = Gateway::start_with_admin(yaml);
    let up = gw.wait_metric("berth_registry_up", &[("upstream", "app")], |v| v == 1.0);
    assert_eq!(up, 1.0, "the registry never came up:\n{}", gw.log_tail(30));
    gw
}

fn wait_until(what: &str, gw: &Gateway, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{what}: not within 20 s\n{}",
            gw.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `n` new sessions through `gw`: how many landed on each backend.
fn place(gw: &Gateway, prefix: &str, n: usize) -> BTreeMap<String, usize> {
    let mut c = gw.client();
    let mut per = BTreeMap::new();
    for i in 0..n {
        let b = visit(&mut c, &format!("{prefix}-{i}")).unwrap_or_else(|e| panic!("{e}"));
        *per.entry(b).or_default() += 1;
    }
    per
}

#[test]
fn a_gateway_started_after_admin_changes_applies_them() {
    let redis = Redis::start();
    late_gateway(&[redis.url()], false, &redis);
}

/// The same on a 3-master Redis Cluster (the hash in one slot, broadcasts through the
/// cluster's pub/sub).
#[test]
fn a_gateway_started_after_admin_changes_applies_them_on_a_redis_cluster() {
    let cluster = RedisCluster::start();
    late_gateway(&cluster.urls(), true, &cluster.nodes[0]);
}

/// `redis` answers `redis-cli` (with `-c`, redirections followed on a cluster).
fn late_gateway(urls: &[String], cluster: bool, redis: &Redis) {
    let backends = Backend::start_many(4);
    let extra = Backend::start("b5");
    let yaml = fleet_config(&backends, urls, cluster);
    let (a, b) = (start_gateway(&yaml), start_gateway(&yaml));
    let (_, seed) = Rng::seeded();
    let id = |i: usize| backends[i].spec().0;
    let (drained, heavier, removed) = (id(0), id(1), id(3));

    let r = a.admin(
        "POST",
        &format!("/admin/backends/{drained}/drain"),
        Some(r#"{"deadline":"10m"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.summary());
    let r = a.admin(
        "PATCH",
        &format!("/admin/backends/{heavier}"),
        Some(r#"{"weight":5}"#),
    );
    assert_eq!(r.status, 200, "{}", r.summary());
    let body = format!(r#"{{"id":"b5","addr":"{}"}}"#, extra.spec().1);
    let r = a.admin("POST", "/admin/backends", Some(&body));
    assert_eq!(r.status, 201, "{}", r.summary());
    let r = b.admin("DELETE", &format!("/admin/backends/{removed}"), None);
    assert_eq!(r.status, 200, "{}", r.summary());
    // Stored (before each was published): the hash names all four.
    wait_until("the changes are stored", &a, || {
        let h = redis.cli(&["HGETALL", "e2e:{app}:admin"]);
        h.contains(&format!("{drained}:drain"))
            && h.contains(&format!("{heavier}:weight"))
            && h.contains("b5:member")
            && h.contains(&format!("{removed}:member"))
    });

    // C starts after all of it, and has applied it when it reports its registry up.
    let c = start_gateway(&yaml);
    let views = c.backends();
    let view = |b: &str| views.iter().find(|v| v.id == b);
    // Draining, or drained already (C has none of its sessions cached).
    let state = view(&drained).map(|v| v.state.as_str());
    assert!(
        matches!(state, Some("draining" | "drained")),
        "{drained}: {views:?}"
    );
    assert_eq!(view(&heavier).map(|v| v.weight), Some(5), "{views:?}");
    assert!(view("b5").is_some(), "b5 added: {views:?}");
    assert!(view(&removed).is_none(), "{removed} removed: {views:?}");

    let per = place(&c, &format!("late-{seed:x}"), 200);
    assert!(
        !per.contains_key(&drained),
        "placed on the drained backend: {per:?}"
    );
    assert!(
        !per.contains_key(&removed),
        "placed on the removed backend: {per:?}"
    );
    assert!(
        per.contains_key("b5"),
        "the added backend takes sessions: {per:?}"
    );

    // Undrain through B: C places there again, and the hash no longer says drained.
    let r = b.admin("POST", &format!("/admin/backends/{drained}/undrain"), None);
    assert_eq!(r.status, 200, "{}", r.summary());
    wait_until("the undrain reaches C", &c, || {
        c.backend_info(&drained).state == "active"
    });
    let h = redis.cli(&["HGETALL", "e2e:{app}:admin"]);
    assert!(!h.contains(&format!("{drained}:drain")), "{h}");
    let per = place(&c, &format!("undrained-{seed:x}"), 200);
    assert!(
        per.contains_key(&drained),
        "none placed after the undrain: {per:?}"
    );

    // A fourth gateway started now sees the undrain too (the drain is not stored any more).
    let d = start_gateway(&yaml);
    assert_eq!(d.backend_info(&drained).state, "active");
    assert_eq!(d.backend_info(&heavier).weight, 5);
}

/// The stored state is read again after a reload and after the subscribed connection drops,
/// so a change this gateway missed (written to the hash, never broadcast to it: here written
/// with `redis-cli`) is applied then: a weight, an undrain of a drain that came from the
/// fleet, and the stored weight wins over the file's after a SIGHUP.
#[test]
fn a_reload_or_a_reconnect_reads_the_stored_state_again() {
    let redis = Redis::start();
    let backends = Backend::start_many(4);
    let yaml = fleet_config(&backends, &[redis.url()], false);
    let (a, c) = (start_gateway(&yaml), start_gateway(&yaml));
    let id = |i: usize| backends[i].spec().0;
    let hash = "e2e:{app}:admin";

    let r = a.admin(
        "PATCH",
        &format!("/admin/backends/{}", id(1)),
        Some(r#"{"weight":5}"#),
    );
    assert_eq!(r.status, 200, "{}", r.summary());
    let r = a.admin("POST", &format!("/admin/backends/{}/drain", id(0)), None);
    assert_eq!(r.status, 200, "{}", r.summary());
    wait_until("the broadcasts reach C", &c, || {
        c.backend_info(&id(1)).weight == 5 && c.backend_info(&id(0)).state != "active"
    });

    // Missed by C: the undrain of b1 (its field deleted). C's file now gives b2 weight 2 and
    // b3 weight 3; after the SIGHUP, b3 has the file's weight (the reload ran), b2 the stored
    // one, and b1 is undrained.
    redis.cli(&["HDEL", hash, &format!("{}:drain", id(0))]);
    let mut file = berth_tests::config::set(&yaml, "upstreams.app.backends.1.weight", "2");
    file = berth_tests::config::set(&file, "upstreams.app.backends.2.weight", "3");
    c.rewrite_config(&file);
    c.sighup();
    wait_until("the reload", &c, || c.backend_info(&id(2)).weight == 3);
    wait_until("the stored state over the reload", &c, || {
        c.backend_info(&id(1)).weight == 5 && c.backend_info(&id(0)).state == "active"
    });

    // Missed by C: a weight for b4. Its subscribed connection is cut: it reads the hash again
    // once it is back.
    redis.cli(&["HSET", hash, &format!("{}:weight", id(3)), "4"]);
    assert_eq!(c.backend_info(&id(3)).weight, 1);
    let killed = redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert!(
        killed.trim().parse::<u32>().unwrap_or(0) >= 2,
        "killed: {killed:?}"
    );
    wait_until("the re-read after the reconnect", &c, || {
        c.backend_info(&id(3)).weight == 4
    });
    assert!(
        c.metric("berth_registry_round_trips_total", &[("op", "sync")]) >= 3.0,
        "start, reload, reconnect"
    );
}
