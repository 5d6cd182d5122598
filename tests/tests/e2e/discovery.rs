//! Issue 16, item 4: DNS service discovery. A DNS server the test starts on 127.0.0.1
//! (`berth_tests::dns::DnsServer`, hickory-server) answers `app.berth.test.` with the
//! addresses of demo backends on 127.0.0.2, .3, … (one port: DNS gives addresses, the config
//! the port). A record that appears becomes a backend without moving a pinned session; one
//! that disappears drains (its sessions stay while it answers) and, once drained, is removed
//! and only its sessions move; with the DNS server answering nothing, or stopped, routing
//! continues on the last set; a change is seen when the records' TTL runs out; and under
//! load, not one request fails while backends come and go. Backend ids derive from the
//! address: a second gateway names every backend alike and routes every session to the same
//! backend.
use berth_tests::admin::BackendInfo;
use berth_tests::dns::DnsServer;
use berth_tests::sessions::{self, Placed};
use berth_tests::{config, first_n, tally, Backend, Gateway};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

const NAME: &str = "app.berth.test.";
const SESSIONS: usize = 200;
const THREADS: usize = 4;
/// How long a change in DNS may take to show (resolved every 200 ms; a loaded machine).
const WAIT: Duration = Duration::from_secs(30);

/// Demo backends `b1..bn` on 127.0.0.2, 127.0.0.3, … all on the same port.
fn backends(n: usize) -> Vec<Backend> {
    let first = Backend::start_on("b1", SocketAddr::from(([127, 0, 0, 2], 0)));
    let port = first.addr.port();
    let mut all = vec![first];
    for i in 2..=n {
        let addr = SocketAddr::from(([127, 0, 0, 1 + i as u8], port));
        all.push(Backend::start_on(&format!("b{i}"), addr));
    }
    all
}

fn ips(bs: &[&Backend]) -> Vec<IpAddr> {
    bs.iter().map(|b| b.addr.ip()).collect()
}

/// One upstream `app` with header affinity, no file backends, its backends from `dns`.
fn dns_config(dns: &DnsServer, port: u16, drain_deadline: &str) -> String {
    let discovery = format!(
        "{{dns: \"{NAME}\", port: {port}, interval: 200ms, resolver: \"{}\", drain_deadline: {drain_deadline}}}",
        dns.addr
    );
    config::header_app(&[], &[("upstreams.app.discovery", &discovery)])
}

/// Wait until the upstream's backends are exactly `want` (by address), all `state`.
fn wait_members(gw: &Gateway, want: &[&Backend], state: &str) -> Vec<BackendInfo> {
    let mut addrs: Vec<String> = want.iter().map(|b| b.addr.to_string()).collect();
    addrs.sort();
    let ok = |rows: &[BackendInfo]| {
        let mut have: Vec<String> = rows.iter().map(|r| r.addr.clone()).collect();
        have.sort();
        have == addrs && rows.iter().all(|r| r.state == state)
    };
    gw.wait_backends(WAIT, ok).unwrap_or_else(|rows| {
        panic!(
            "backends not {addrs:?}, all {state}, within {WAIT:?}: {rows:?}\n--- berth log ---\n{}",
            gw.log_tail(40)
        )
    })
}

/// Backend id by demo backend name, from `GET /admin/backends`.
fn ids(gw: &Gateway, bs: &[Backend]) -> BTreeMap<String, String> {
    let rows = gw.backends();
    bs.iter()
        .filter_map(|b| {
            let row = rows.iter().find(|r| r.addr == b.addr.to_string())?;
            Some((b.name.clone(), row.id.clone()))
        })
        .collect()
}

/// Visit every session once. Those living on `gone` (demo name, backend id) must be reassigned
/// away from it, the others sticky. Updates homes; the number moved, or `Err` listing failures.
fn visit_all(
    gw: &Gateway,
    placed: &mut [Placed],
    gone: Option<(&str, &str)>,
) -> Result<usize, String> {
    let ids: Vec<String> = placed.iter().map(|p| p.id.clone()).collect();
    let results = sessions::visit(gw, &ids, THREADS, "/visit");
    let mut bad = Vec::new();
    let mut moved = 0;
    for (p, r) in placed.iter_mut().zip(&results) {
        let check = match gone {
            Some((name, id)) if p.home == name => match r {
                Ok(r)
                    if r.status == 200
                        && !r.backend().is_empty()
                        && r.backend() != name
                        && r.affinity() == "reassigned"
                        && r.previous() == id =>
                {
                    moved += 1;
                    p.home = r.backend().to_string();
                    Ok(())
                }
                Ok(r) => Err(format!(
                    "expected reassigned away from {name}: {}",
                    r.summary()
                )),
                Err(e) => Err(format!("expected reassigned away from {name}: {e}")),
            },
            _ => sessions::check_sticky(r, &p.home),
        };
        if let Err(e) = check {
            bad.push(format!("{}: {e}", p.id));
        }
    }
    if bad.is_empty() {
        Ok(moved)
    } else {
        Err(format!(
            "{} of {} sessions:\n  {}",
            bad.len(),
            placed.len(),
            first_n(&bad, 10)
        ))
    }
}

/// Open `n` new sessions from id `from`; where they went.
fn open(gw: &Gateway, from: usize, n: usize) -> (Vec<Placed>, BTreeMap<String, usize>) {
    let placed = sessions::open(gw, &sessions::ids(from, n), THREADS);
    let homes = tally(placed.iter().map(|p| p.home.as_str()));
    (placed, homes)
}

/// 3 records, then a 4th (no pinned session moves; new sessions reach it), then one removed
/// (drains; after the drain deadline it is removed and only its sessions move). A second
/// gateway on the same name gives every backend the same id and every session the same one.
#[test]
fn records_join_without_moving_sessions_and_leave_through_a_drain() {
    let bs = backends(4);
    let dns = DnsServer::start(NAME, &ips(&[&bs[0], &bs[1], &bs[2]]));
    let yaml = dns_config(&dns, bs[0].addr.port(), "2s");
    let gw = Gateway::start_with_admin(&yaml);
    let rows = wait_members(&gw, &[&bs[0], &bs[1], &bs[2]], "active");
    for r in &rows {
        assert!(
            r.id.starts_with("dns-") && !r.id.contains("127"),
            "a discovered backend's id {:?} (it must not show {})",
            r.id,
            r.addr
        );
    }
    let other = Gateway::start_with_admin(&yaml);
    wait_members(&other, &[&bs[0], &bs[1], &bs[2]], "active");
    assert_eq!(
        ids(&other, &bs),
        ids(&gw, &bs),
        "both gateways name the backends alike"
    );

    let (mut placed, homes) = open(&gw, 0, SESSIONS);
    assert_eq!(
        homes.len(),
        3,
        "{SESSIONS} sessions on 3 backends: {homes:?}"
    );
    // The other gateway (which has not seen them: `new` there) places every session on the
    // same backend: same ids, so the same ring.
    let ids_: Vec<String> = placed.iter().map(|p| p.id.clone()).collect();
    let there = sessions::visit(&other, &ids_, THREADS, "/there");
    let differ: Vec<String> = placed
        .iter()
        .zip(&there)
        .filter_map(|(p, r)| match r {
            Ok(r) if r.status == 200 && r.backend() == p.home => None,
            Ok(r) => Some(format!("{} (on {}): {}", p.id, p.home, r.summary())),
            Err(e) => Some(format!("{} (on {}): {e}", p.id, p.home)),
        })
        .collect();
    assert!(
        differ.is_empty(),
        "{} of {SESSIONS} sessions reach another backend through the other gateway:\n  {}",
        differ.len(),
        first_n(&differ, 10)
    );
    drop(other);

    dns.set(&ips(&[&bs[0], &bs[1], &bs[2], &bs[3]]));
    wait_members(&gw, &[&bs[0], &bs[1], &bs[2], &bs[3]], "active");
    let moved =
        visit_all(&gw, &mut placed, None).unwrap_or_else(|e| panic!("after adding b4: {e}"));
    assert_eq!(moved, 0);
    let (more, homes) = open(&gw, 1000, SESSIONS);
    let on_b4 = homes.get("b4").copied().unwrap_or(0);
    assert!(
        on_b4 >= SESSIONS / 10,
        "b4 got {on_b4} of {SESSIONS} new sessions: {homes:?}"
    );
    placed.extend(more);

    let id_b2 = ids(&gw, &bs)["b2"].clone();
    let on_b2 = placed.iter().filter(|p| p.home == "b2").count();
    assert!(on_b2 > 0, "no session on b2");
    dns.set(&ips(&[&bs[0], &bs[2], &bs[3]]));
    gw.wait_backends(WAIT, |rows| {
        rows.iter().all(|r| r.id != id_b2 || r.state != "active")
    })
    .unwrap_or_else(|rows| panic!("b2 ({id_b2}) never left active: {rows:?}"));
    let (_, homes) = open(&gw, 2000, SESSIONS / 2);
    assert_eq!(
        homes.get("b2"),
        None,
        "a new session was placed on draining b2: {homes:?}"
    );
    // Drained at its 2 s deadline, then removed.
    wait_members(&gw, &[&bs[0], &bs[2], &bs[3]], "active");
    let moved = visit_all(&gw, &mut placed, Some(("b2", &id_b2)))
        .unwrap_or_else(|e| panic!("after b2's record went away: {e}"));
    assert_eq!(moved, on_b2, "exactly b2's sessions move");
    visit_all(&gw, &mut placed, None).unwrap_or_else(|e| panic!("the moved sessions stick: {e}"));
}

/// A backend whose record disappears keeps its sessions while it answers (a long drain
/// deadline), takes new sessions again when the record comes back, and its sessions move when
/// it stops answering; then it is removed. A resolution with no records and a stopped DNS
/// server keep the last set: every session stays, new ones are placed.
#[test]
fn a_draining_backend_keeps_its_sessions_and_the_last_set_outlives_dns() {
    let mut bs = backends(3);
    let mut dns = DnsServer::start(NAME, &ips(&[&bs[0], &bs[1], &bs[2]]));
    let gw = Gateway::start_with_admin(&dns_config(&dns, bs[0].addr.port(), "1h"));
    wait_members(&gw, &[&bs[0], &bs[1], &bs[2]], "active");
    let id_b1 = ids(&gw, &bs)["b1"].clone();
    let (mut placed, _) = open(&gw, 0, SESSIONS);
    let on_b1 = placed.iter().filter(|p| p.home == "b1").count();
    assert!(on_b1 > 0, "no session on b1");

    dns.set(&ips(&[&bs[1], &bs[2]]));
    gw.wait_backend(&id_b1, "draining", WAIT, |b| b.state == "draining");
    let served = bs[0].count_path("/visit");
    visit_all(&gw, &mut placed, None).unwrap_or_else(|e| panic!("while b1 drains: {e}"));
    assert_eq!(
        bs[0].count_path("/visit"),
        served + on_b1 as u64,
        "b1 served its sessions"
    );
    let (more, homes) = open(&gw, 1000, SESSIONS / 2);
    assert_eq!(
        homes.get("b1"),
        None,
        "a new session was placed on draining b1: {homes:?}"
    );
    placed.extend(more);

    dns.set(&ips(&[&bs[0], &bs[1], &bs[2]]));
    gw.wait_backend(&id_b1, "active again", WAIT, |b| b.state == "active");
    let (more, homes) = open(&gw, 2000, SESSIONS);
    assert!(
        homes.contains_key("b1"),
        "b1 restored takes new sessions: {homes:?}"
    );
    placed.extend(more);
    let on_b1 = placed.iter().filter(|p| p.home == "b1").count();

    dns.set(&ips(&[&bs[1], &bs[2]]));
    gw.wait_backend(&id_b1, "draining", WAIT, |b| b.state == "draining");
    bs[0].kill();
    let moved = visit_all(&gw, &mut placed, Some(("b1", &id_b1)))
        .unwrap_or_else(|e| panic!("after b1 stopped answering: {e}"));
    assert_eq!(moved, on_b1, "exactly b1's sessions move");
    // No session left on it: drained, then removed.
    wait_members(&gw, &[&bs[1], &bs[2]], "active");

    let empty_before = gw.metric("berth_discovery_resolutions_total", &[("result", "empty")]);
    dns.set(&[]);
    gw.wait_metric(
        "berth_discovery_resolutions_total",
        &[("result", "empty")],
        |v| v >= empty_before + 2.0,
    );
    wait_members(&gw, &[&bs[1], &bs[2]], "active");
    visit_all(&gw, &mut placed, None).unwrap_or_else(|e| panic!("with no records: {e}"));

    let errors_before = gw.metric("berth_discovery_resolutions_total", &[("result", "error")]);
    dns.stop();
    gw.wait_metric(
        "berth_discovery_resolutions_total",
        &[("result", "error")],
        |v| v >= errors_before + 2.0,
    );
    wait_members(&gw, &[&bs[1], &bs[2]], "active");
    visit_all(&gw, &mut placed, None).unwrap_or_else(|e| panic!("with DNS stopped: {e}"));
    let (_, homes) = open(&gw, 3000, SESSIONS / 2);
    assert_eq!(homes.keys().collect::<Vec<_>>(), ["b2", "b3"], "{homes:?}");
    assert_eq!(gw.metric("berth_discovery_addresses", &[]), 2.0);
}

/// With an interval far too long to matter (1 h), a change is seen when the answer's TTL
/// (1 s, `berth_tests::dns::TTL`) runs out: the records are re-resolved then.
#[test]
fn records_are_resolved_again_when_their_ttl_runs_out() {
    let bs = backends(2);
    let dns = DnsServer::start(NAME, &ips(&[&bs[0]]));
    let yaml = dns_config(&dns, bs[0].addr.port(), "1h");
    let gw = Gateway::start_with_admin(&config::set(
        &yaml,
        "upstreams.app.discovery.interval",
        "1h",
    ));
    wait_members(&gw, &[&bs[0]], "active");
    let asked = dns.queries();
    dns.set(&ips(&[&bs[0], &bs[1]]));
    wait_members(&gw, &[&bs[0], &bs[1]], "active");
    assert!(dns.queries() > asked, "no new query reached the DNS server");
}

/// Under load (every session visited again and again from 4 threads), DNS goes from 3 records
/// to 4 and back to 3 with another one gone (drain deadline 1 s): not one request fails, every
/// answer comes from the session's backend, except that the removed backend's sessions are
/// each reassigned once, away from it.
#[test]
fn membership_follows_dns_under_load_without_a_failed_request() {
    let bs = backends(4);
    let dns = DnsServer::start(NAME, &ips(&[&bs[0], &bs[1], &bs[2]]));
    let gw = Gateway::start_with_admin(&dns_config(&dns, bs[0].addr.port(), "1s"));
    wait_members(&gw, &[&bs[0], &bs[1], &bs[2]], "active");
    let id_b2 = ids(&gw, &bs)["b2"].clone();
    let (mut placed, _) = open(&gw, 0, 100);
    let on_b2 = placed.iter().filter(|p| p.home == "b2").count();
    assert!(on_b2 > 0, "no session on b2");
    let done = std::sync::atomic::AtomicBool::new(false);
    let (rounds, moved) = std::thread::scope(|s| {
        s.spawn(|| {
            dns.set(&ips(&[&bs[0], &bs[1], &bs[2], &bs[3]]));
            wait_members(&gw, &[&bs[0], &bs[1], &bs[2], &bs[3]], "active");
            dns.set(&ips(&[&bs[0], &bs[2], &bs[3]]));
            wait_members(&gw, &[&bs[0], &bs[2], &bs[3]], "active");
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let mut rounds = 0;
        let mut moved = 0;
        loop {
            let last = done.load(std::sync::atomic::Ordering::SeqCst);
            let ids: Vec<String> = placed.iter().map(|p| p.id.clone()).collect();
            let results = sessions::visit(&gw, &ids, THREADS, "/load");
            let mut bad = Vec::new();
            for (p, r) in placed.iter_mut().zip(&results) {
                let check = match r {
                    Ok(resp) if p.home == "b2" && resp.affinity() == "reassigned" => {
                        if resp.status == 200 && resp.previous() == id_b2 && resp.backend() != "b2"
                        {
                            p.home = resp.backend().to_string();
                            moved += 1;
                            Ok(())
                        } else {
                            Err(format!("a bad move off b2: {}", resp.summary()))
                        }
                    }
                    _ => sessions::check_sticky(r, &p.home),
                };
                if let Err(e) = check {
                    bad.push(format!("{}: {e}", p.id));
                }
            }
            assert!(bad.is_empty(), "round {rounds}:\n  {}", first_n(&bad, 10));
            rounds += 1;
            if last {
                break (rounds, moved);
            }
        }
    });
    let on_b2_at_first = placed.iter().filter(|p| p.home == "b2").count();
    assert_eq!(
        on_b2_at_first, 0,
        "sessions still on b2 after it was removed"
    );
    assert!(moved > 0, "no session was on b2 ({rounds} rounds)");
    assert!(rounds >= 2, "{rounds} rounds");
}

/// An upgrade (`berth -u`) hands the discovered backends over with the sessions: the new
/// process recognises them by their ids (nothing added twice), every session stays on its
/// backend, and it follows DNS from there (a record removed after the upgrade drains, then
/// only its sessions move).
#[test]
fn an_upgrade_keeps_the_discovered_backends_and_their_sessions() {
    let bs = backends(3);
    let dns = DnsServer::start(NAME, &ips(&[&bs[0], &bs[1], &bs[2]]));
    let mut gw = Gateway::start_with_admin(&dns_config(&dns, bs[0].addr.port(), "1s"));
    wait_members(&gw, &[&bs[0], &bs[1], &bs[2]], "active");
    let before = ids(&gw, &bs);
    let (mut placed, _) = open(&gw, 0, SESSIONS);
    let mut old = gw.upgrade();
    old.wait_exit(Duration::from_secs(60));
    let rows = wait_members(&gw, &[&bs[0], &bs[1], &bs[2]], "active");
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(
        ids(&gw, &bs),
        before,
        "the new process names the backends alike"
    );
    visit_all(&gw, &mut placed, None).unwrap_or_else(|e| panic!("after the upgrade: {e}"));
    let id_b2 = before["b2"].clone();
    let on_b2 = placed.iter().filter(|p| p.home == "b2").count();
    dns.set(&ips(&[&bs[0], &bs[2]]));
    wait_members(&gw, &[&bs[0], &bs[2]], "active");
    let moved = visit_all(&gw, &mut placed, Some(("b2", &id_b2)))
        .unwrap_or_else(|e| panic!("after b2's record went away: {e}"));
    assert_eq!(moved, on_b2, "exactly b2's sessions move");
}
