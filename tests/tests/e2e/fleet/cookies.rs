//! Cookie-insert sessions in a fleet: a token's first request on each gateway puts the session
//! in Redis (so a migration through any gateway sees it), and a migration's move reaches a
//! gateway whose client still holds a token naming the old backend: the session follows Redis,
//! the application is told once (`reassigned`) and the client gets a token for the new one.
use super::start_fleet;
use berth_tests::config::{self, COOKIE_NAME};
use berth_tests::redis::Redis;
use berth_tests::{Backend, User};
use std::collections::BTreeMap;

const USERS: usize = 60;

#[test]
fn cookie_sessions_migrated_through_one_gateway_follow_on_the_others() {
    let redis = Redis::start();
    let backends = Backend::start_many(3);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let registry = format!(
        "{{type: redis, url: {}, key_prefix: e2e, timeouts: {{command: 2s}}}}",
        redis.url()
    );
    let yaml = config::app_config(&[config::cookie_plugin()], &specs);
    let yaml = config::set(&yaml, "upstreams.app.registry", &registry);
    let gws = start_fleet(&yaml);
    // Each user: a first request through A (a token), then one through B and one through A.
    let mut users: Vec<(User, String)> = (0..USERS)
        .map(|_| {
            let mut u = User::new(gws[0].client());
            let first = u.get("/").expect("GET /");
            assert_eq!(first.affinity(), "new", "{}", first.summary());
            let home = first.backend().to_string();
            for g in [1, 0] {
                u.client = gws[g].client();
                let r = u.get("/").expect("GET /");
                assert_eq!((r.backend(), r.affinity()), (home.as_str(), "sticky"));
            }
            (u, home)
        })
        .collect();
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for (_, h) in &users {
        *per.entry(h.clone()).or_default() += 1;
    }
    let from = per
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(b, _)| b.clone())
        .unwrap();
    // Through B, which saw each of these sessions once.
    let r = gws[1].admin(
        "POST",
        &format!("/admin/backends/{from}/migrate"),
        Some(r#"{"count":10,"rate":100}"#),
    );
    assert_eq!(r.status, 202, "{}", r.summary());
    let moved = gws[1].wait_metric("berth_sessions_migrated_total", &[], |v| v >= 10.0);
    assert_eq!(moved, 10.0);
    // Through C, which never saw them: 10 follow Redis to a new backend, told once, with a
    // new token; the others stay.
    let mut reassigned = 0;
    for (u, home) in users.iter_mut().filter(|(_, h)| *h == from) {
        u.client = gws[2].client();
        let r = u.get("/").expect("GET /");
        assert_eq!(r.status, 200, "{}", r.summary());
        if r.affinity() == "reassigned" {
            reassigned += 1;
            assert_ne!(r.backend(), from, "{}", r.summary());
            assert_eq!(r.previous(), from, "{}", r.summary());
            assert!(
                r.set_cookie(COOKIE_NAME).is_some(),
                "a new token: {}",
                r.summary()
            );
            *home = r.backend().to_string();
        } else {
            assert_eq!((r.backend(), r.affinity()), (from.as_str(), "sticky"));
        }
    }
    assert_eq!(reassigned, 10, "sessions told they moved");
    // Told once: every gateway, sticky where they now are.
    for (u, home) in users.iter_mut() {
        for gw in &gws {
            u.client = gw.client();
            let r = u.get("/").expect("GET /");
            assert_eq!(
                (r.backend(), r.affinity()),
                (home.as_str(), "sticky"),
                "{}",
                r.summary()
            );
        }
    }
}
