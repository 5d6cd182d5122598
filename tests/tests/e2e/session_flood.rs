//! A flood of distinct session ids (what a client inventing a new id per request sends) keeps
//! the overlay at its configured `sessions.max`: the oldest pins are evicted and counted, and
//! the gateway's memory stays bounded.
//!
//! The scaled-down flood (50,000 ids, `max` 5,000, in header mode and in cookie learn mode)
//! runs with the other tests. The full-size run is the same test with
//! `BERTH_FLOOD_IDS=5000000 BERTH_FLOOD_MAX=100000` and a release gateway
//! (`BERTH_BIN=target/release/berth`); SECURITY.md has its figures.
use berth_tests::{config, par_map, Backend, Client, Gateway, Request};
use std::time::Instant;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident memory of a process, in KiB (`VmRSS` of `/proc/<pid>/status`).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line")
}

/// Send ids `from..to` (one request each, distinct ids) over `conns` keep-alive connections.
fn flood(
    gw: &Gateway,
    from: usize,
    to: usize,
    conns: usize,
    req: &(dyn Fn(usize) -> Request + Sync),
) {
    let per = (to - from).div_ceil(conns);
    let failures: usize = par_map(conns, conns, |c| {
        let mut client = Client::new(gw.addr);
        let lo = from + c * per;
        let hi = (lo + per).min(to);
        (lo..hi)
            .filter(|&i| !client.try_send(&req(i)).is_ok_and(|r| r.status == 200))
            .count()
    })
    .into_iter()
    .sum();
    assert_eq!(failures, 0, "requests failed during the flood");
}

/// A random-looking id for flood index `i` (distinct per index and per run).
fn id(run: u64, i: usize) -> String {
    let x = (i as u64 ^ run).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!("{x:016x}{i:x}")
}

fn flood_keeps_the_overlay_bounded(plugin: String, req: impl Fn(String) -> Request + Sync) {
    let ids = env_or("BERTH_FLOOD_IDS", 50_000);
    let max = env_or("BERTH_FLOOD_MAX", 5_000);
    let backends = Backend::start_many(2);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let yaml = config::app_config(&[plugin], &specs);
    let yaml = config::set(&yaml, "upstreams.app.sessions.max", &max.to_string());
    let gw = Gateway::start(&yaml);
    let pid = gw.pid().expect("running");
    let run = std::process::id() as u64;
    let make = |i: usize| req(id(run, i));

    // Fill the table once, then measure from there.
    let conns = 4;
    flood(&gw, 0, max, conns, &make);
    let rss_full = rss_kib(pid);
    let started = Instant::now();
    flood(&gw, max, ids, conns, &make);
    let took = started.elapsed();
    let rss_after = rss_kib(pid);

    let sessions = gw.metric("berth_sessions", &[("upstream", "app")]);
    let evicted = gw.metric("berth_pins_total", &[("event", "evicted")]);
    let created = gw.metric("berth_pins_total", &[("event", "created")]);
    eprintln!(
        "flood: {ids} ids, max {max}: {sessions} sessions, {created} pins created, {evicted} \
         evicted; RSS {rss_full} KiB with the table full, {rss_after} KiB after the flood \
         ({:.0} req/s)",
        (ids - max) as f64 / took.as_secs_f64()
    );
    // The overlay holds at most `max` (plus less than one per shard: 64).
    assert!(
        sessions <= (max + 64) as f64,
        "{sessions} sessions with max {max}"
    );
    assert!(
        sessions >= (max / 2) as f64,
        "{sessions}: the flood did not fill the table"
    );
    assert_eq!(created, ids as f64, "every id was pinned once");
    assert!(
        evicted >= (ids - max - 64) as f64,
        "{evicted} evictions counted for {ids} ids in a table of {max}"
    );
    // Memory: a leak of more than ~700 bytes per request would show here.
    let growth = rss_after.saturating_sub(rss_full);
    let allowed = 32 * 1024 + (ids as u64 / 1000);
    assert!(
        growth <= allowed,
        "RSS grew by {growth} KiB over {} requests after the table was full",
        ids - max
    );
    // Still serving, and a flooded id that is still pinned is sticky.
    let last = make(ids - 1);
    let mut c = gw.client();
    let a = c.send(&last);
    assert_eq!(a.status, 200);
    assert_eq!(c.send(&last).backend(), a.backend());
}

#[test]
fn a_flood_of_header_session_ids_keeps_the_overlay_at_its_max() {
    flood_keeps_the_overlay_bounded(config::header_plugin("X-Session-Id"), |id| {
        Request::get("/").header("X-Session-Id", &id)
    });
}

#[test]
fn a_flood_of_learned_cookie_ids_keeps_the_overlay_at_its_max() {
    let plugin = "type: cookie\nmode: learn\nname: SID\n".to_string();
    flood_keeps_the_overlay_bounded(plugin, |id| {
        Request::get("/").header("Cookie", &format!("theme=dark; SID={id}"))
    });
}
