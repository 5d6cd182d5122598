//! Client-IP affinity: direct clients (distinct 127.0.0.X sources), clients behind a trusted
//! proxy (`X-Forwarded-For`), and an untrusted peer whose `X-Forwarded-For` must be ignored.
use berth_tests::config::{self, UPSTREAM};
use berth_tests::{check_spread, first_n, par_map, tally, Backend, Client, Gateway, Request};
use std::net::IpAddr;

const THREADS: usize = 8;

fn start() -> (Vec<Backend>, Gateway) {
    let backends = Backend::start_many(3);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let plugin = config::ip_plugin(&["127.0.0.1/32"]);
    let gw = Gateway::start(&config::app_config(&[plugin], &specs));
    (backends, gw)
}

/// `n` requests on fresh connections; the backend of each (errors as strings).
fn visits(
    client: &mut Client,
    n: usize,
    req: &Request,
) -> Result<Vec<berth_tests::Response>, String> {
    (0..n)
        .map(|_| client.try_send(req).map_err(|e| e.to_string()))
        .collect()
}

#[test]
fn direct_clients_stick_by_source_address() {
    let (_backends, gw) = start();
    let sources: Vec<IpAddr> = (2..=41).map(|x| IpAddr::from([127, 0, 0, x])).collect();
    let results = par_map(sources.len(), THREADS, |i| {
        let ip = sources[i];
        let mut c = gw.client().source(ip).fresh_connections();
        let rs = visits(&mut c, 3, &Request::get("/")).map_err(|e| format!("{ip}: {e}"))?;
        let home = rs[0].backend().to_string();
        let ok = rs.iter().all(|r| r.status == 200 && r.backend() == home)
            && rs[0].affinity() == "new"
            && rs[1..].iter().all(|r| r.affinity() == "sticky")
            && rs
                .iter()
                .all(|r| r.header("x-seen-forwarded-for") == Some(ip.to_string().as_str()));
        if ok {
            Ok(home)
        } else {
            let got: Vec<String> = rs.iter().map(|r| r.summary()).collect();
            Err(format!(
                "{ip}: not sticky new→sticky with XFF {ip}: {got:#?}"
            ))
        }
    });
    let failures: Vec<String> = results.iter().filter_map(|r| r.clone().err()).collect();
    assert!(
        failures.is_empty(),
        "{} sources failed:\n  {}",
        failures.len(),
        first_n(&failures, 5)
    );
    let homes = tally(results.iter().filter_map(|r| r.as_deref().ok()));
    assert!(
        homes.len() >= 2,
        "40 client addresses all on one backend: {homes:?}"
    );
}

#[test]
fn forwarded_clients_behind_a_trusted_proxy_stick_and_spread() {
    let (_backends, gw) = start();
    const CLIENTS: usize = 300;
    let client_ip = |i: usize| format!("10.{}.{}.{}", i % 7, i / 7 % 256, (i * 37) % 251 + 1);
    let results = par_map(CLIENTS, THREADS, |i| {
        let ip = client_ip(i);
        let req = Request::get("/").header("X-Forwarded-For", &ip);
        // Keep-alive from 127.0.0.1 (the trusted proxy), as a real proxy would.
        let mut c = gw.client();
        let rs = visits(&mut c, 3, &req).map_err(|e| format!("{ip}: {e}"))?;
        let home = rs[0].backend().to_string();
        let xff = format!("{ip}, 127.0.0.1");
        let ok = rs.iter().all(|r| r.status == 200 && r.backend() == home)
            && rs[0].affinity() == "new"
            && rs[1..].iter().all(|r| r.affinity() == "sticky")
            && rs
                .iter()
                .all(|r| r.header("x-seen-forwarded-for") == Some(xff.as_str()));
        if ok {
            Ok(home)
        } else {
            let got: Vec<String> = rs.iter().map(|r| r.summary()).collect();
            Err(format!(
                "client {ip}: expected sticky with X-Forwarded-For {xff:?}: {got:#?}"
            ))
        }
    });
    let failures: Vec<String> = results.iter().filter_map(|r| r.clone().err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {CLIENTS} clients failed:\n  {}",
        failures.len(),
        first_n(&failures, 5)
    );
    let homes = tally(results.iter().filter_map(|r| r.as_deref().ok()));
    check_spread(&homes, &["b1", "b2", "b3"], 80, 120).unwrap_or_else(|e| panic!("{e}"));
    let new = gw.wait_metric(
        "berth_requests_total",
        &[("upstream", UPSTREAM), ("reason", "new")],
        |v| v >= CLIENTS as f64,
    );
    assert_eq!(new, CLIENTS as f64, "one new session per forwarded client");
}

#[test]
fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let (_backends, gw) = start();
    let peer = IpAddr::from([127, 0, 0, 2]);
    let visit = |i: usize| {
        let claimed = format!("192.0.2.{}", i + 1);
        let req = Request::get("/").header("X-Forwarded-For", &claimed);
        let r = gw
            .client()
            .source(peer)
            .fresh_connections()
            .try_send(&req)
            .map_err(|e| format!("{claimed}: {e}"))?;
        let xff = format!("{claimed}, {peer}");
        if r.status == 200 && r.header("x-seen-forwarded-for") == Some(xff.as_str()) {
            Ok(r.backend().to_string())
        } else {
            Err(format!(
                "{claimed}: expected 200 with X-Forwarded-For {xff:?}: {}",
                r.summary()
            ))
        }
    };
    // The first request alone (it creates the session), then 59 more in parallel.
    let mut results = vec![visit(0)];
    results.extend(par_map(59, 4, |i| visit(i + 1)));
    let failures: Vec<String> = results.iter().filter_map(|r| r.clone().err()).collect();
    assert!(failures.is_empty(), "{}", first_n(&failures, 5));
    let homes = tally(results.iter().filter_map(|r| r.as_deref().ok()));
    assert_eq!(
        homes.len(),
        1,
        "60 forged X-Forwarded-For values from untrusted {peer} spread over {homes:?}"
    );
    // Exactly one session: the peer's own address.
    let new = gw.wait_metric(
        "berth_requests_total",
        &[("upstream", UPSTREAM), ("reason", "new")],
        |v| v >= 1.0,
    );
    let sticky = gw.wait_metric(
        "berth_requests_total",
        &[("upstream", UPSTREAM), ("reason", "sticky")],
        |v| v >= 59.0,
    );
    assert_eq!(
        (new, sticky),
        (1.0, 59.0),
        "requests by reason (new, sticky)"
    );
}
