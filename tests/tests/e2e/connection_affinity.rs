//! Connection affinity (the built-in `connection` plugin): 100 keep-alive connections without
//! cookies each stay on one backend for 20 requests, nothing is pinned in the overlay, and new
//! connections land on every backend.
use berth_tests::config::{self, UPSTREAM};
use berth_tests::{first_n, par_map, tally, Backend, Gateway};

const CONNECTIONS: usize = 100;
const REQUESTS: usize = 20;
const THREADS: usize = 8;

#[test]
fn every_request_of_a_connection_follows_its_first() {
    let backends = Backend::start_many(3);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let plugins = ["type: connection\n".to_string()];
    let gw = Gateway::start(&config::app_config(&plugins, &specs));
    let results = par_map(CONNECTIONS, THREADS, |i| {
        let mut c = gw.client();
        let first = c.get(&format!("/c/{i}/0"));
        if first.status != 200 || first.affinity() != "ring" {
            return Err(format!("connection {i} first request: {}", first.summary()));
        }
        let home = first.backend().to_string();
        for n in 1..REQUESTS {
            let r = c.get(&format!("/c/{i}/{n}"));
            if r.status != 200 || r.backend() != home || r.affinity() != "sticky" {
                return Err(format!(
                    "connection {i} request {n} (first on {home}): {}",
                    r.summary()
                ));
            }
        }
        if c.connections_opened() != 1 {
            return Err(format!(
                "connection {i}: {} connections opened",
                c.connections_opened()
            ));
        }
        Ok(home)
    });
    let failures: Vec<String> = results.iter().filter_map(|r| r.clone().err()).collect();
    assert!(
        failures.is_empty(),
        "{} failed:\n  {}",
        failures.len(),
        first_n(&failures, 10)
    );
    // New connections land anywhere: over 100, on every backend.
    let homes = tally(results.iter().filter_map(|r| r.as_deref().ok()));
    assert_eq!(homes.len(), 3, "connections per backend: {homes:?}");
    // Nothing pinned: the affinity ends with the connection.
    assert_eq!(gw.metric("berth_sessions", &[("upstream", UPSTREAM)]), 0.0);
    let served: u64 = backends.iter().map(Backend::count).sum();
    assert_eq!(served, (CONNECTIONS * REQUESTS) as u64);
}
