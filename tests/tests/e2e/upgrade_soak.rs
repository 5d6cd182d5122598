//! Issue #19, part 2: an upgrade soak. Berth (started directly) is upgraded again and again
//! (`berth -u`, SIGQUIT to the old process, which finishes and exits before the next upgrade)
//! under continuous load from client threads — half of them keep their connection alive, half
//! open a new connection per request — on header, cookie (Berth's token) and learned-cookie
//! sessions, plus header sessions opened during the load. Every request must be answered 200
//! by its session's backend: 0 failed, 0 moved.
//!
//! One client thread in four waits 1 ms between opening a connection and writing its request.
//! A connection the old process accepted just before it stopped accepting, and whose request
//! had not arrived when Pingora ended the reads still waiting for one, used to be closed
//! without a response (issue 19): with that pause, 11 requests in 50 upgrades (four runs) were
//! lost that way here; with clients that all write at once, 0 in 40 upgrades (1,012,711
//! requests): the window is the time between a client's connect and its request.
//!
//! Size knobs (environment): `BERTH_SOAK_REQUESTS` (at least this many requests, default
//! 20,000), `BERTH_SOAK_UPGRADES` (at least this many upgrades, default 3), `BERTH_SOAK_THREADS`
//! (client threads, default 12). Upgrades go on until both minimums are reached. The defaults
//! are the CI size (`make test`); `make upgrade-soak` runs 1,000,000 requests and 10 upgrades.

use super::upgrade::scenario::*;
use berth_tests::{first_n, Backend, Gateway};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Load between two upgrades (the old process has exited), so the new process serves alone
/// for a while too.
const BETWEEN: Duration = Duration::from_millis(500);

/// One thread in four opens a connection, waits this long, then writes its request (a
/// client that connects ahead of its request, or is slow to write).
const FIRST_WRITE_AFTER: Duration = Duration::from_millis(1);

fn knob(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .replace(['_', ','], "")
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?}: {e}")),
        Err(_) => default,
    }
}

#[test]
fn upgrades_under_load_fail_no_request_and_move_no_session() {
    let want_requests = knob("BERTH_SOAK_REQUESTS", 20_000);
    let want_upgrades = knob("BERTH_SOAK_UPGRADES", 3);
    let threads = knob("BERTH_SOAK_THREADS", 12).max(2) as usize;

    let backends = Backend::start_many(4);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let learn_specs = specs[..3].to_vec();
    let mut gw = Gateway::start_with_admin(&config(&specs, &learn_specs));
    let sessions = open_sessions(&gw);
    let takes_new: Vec<&str> = backends.iter().map(|b| b.name.as_str()).collect();

    // Phases: 0 while no upgrade is under way, 1 from `berth -u` until the old process exited.
    let load = Load {
        first_write_after: FIRST_WRITE_AFTER,
        ..Load::default()
    };
    let mut parts: Vec<Vec<Session>> = vec![Vec::new(); threads];
    for (i, s) in sessions.into_iter().enumerate() {
        parts[i % threads].push(s);
    }
    let started = Instant::now();
    let mut upgrades = 0u64;
    // The end of the old process's log for each upgrade during which a request failed.
    let mut logs = Vec::new();
    let ran: Vec<Ran> = std::thread::scope(|scope| {
        let _stop = StopOnDrop(&load.stop);
        let addr = gw.addr;
        let handles: Vec<_> = parts
            .into_iter()
            .enumerate()
            .map(|(t, mine)| {
                let (load, takes_new) = (&load, &takes_new);
                scope.spawn(move || run_load(addr, load, t, mine, takes_new))
            })
            .collect();
        while upgrades < want_upgrades || load.total() < want_requests {
            std::thread::sleep(BETWEEN);
            let failed_before = load.failed();
            load.phase.store(1, Ordering::SeqCst);
            let mut old = gw.upgrade();
            let (status, took) = old.wait_exit(EXIT_TIMEOUT);
            load.phase.store(0, Ordering::SeqCst);
            upgrades += 1;
            println!(
                "upgrade {upgrades}: pid {} -> {} (old exited {status:?} {took:?} after \
                 SIGQUIT); {} requests so far, {} failed, {} moved",
                old.pid,
                gw.pid().unwrap_or_default(),
                load.total(),
                load.failed(),
                load.moved.load(Ordering::Relaxed)
            );
            if load.failed() > failed_before {
                let log = old.log();
                let lines: Vec<&str> = log.lines().collect();
                logs.push(format!(
                    "--- upgrade {upgrades}: the old process (pid {}), last 40 lines of its log \
                     ---\n{}",
                    old.pid,
                    lines[lines.len().saturating_sub(40)..].join("\n")
                ));
            }
            assert!(
                status.is_some_and(|s| s.success()),
                "the old process (pid {}) exits cleanly: {status:?}\n--- its log ---\n{}",
                old.pid,
                old.log()
            );
        }
        load.stop.store(true, Ordering::SeqCst);
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let took = started.elapsed();

    let total = load.total();
    let sum = |fresh: bool| -> (u64, u64) {
        ran.iter()
            .filter(|r| r.fresh == fresh)
            .fold((0, 0), |(q, c), r| (q + r.requests, c + r.connections))
    };
    let ((fresh_q, fresh_c), (kept_q, kept_c)) = (sum(true), sum(false));
    let failures = load
        .failures
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    let moved = load.moved.load(Ordering::Relaxed);
    println!(
        "upgrade soak: {total} requests ({fresh_q} on {fresh_c} new connections, {kept_q} on \
         {kept_c} keep-alive connections; {} during upgrades) from {threads} threads over \
         {upgrades} upgrades in {took:.1?}: {} failed, {moved} moved; {} sessions opened \
         during the load ({} later requests answered `new` again, same backend)",
        load.sent[1].load(Ordering::Relaxed),
        failures.len() as u64 - moved,
        load.opened.load(Ordering::Relaxed),
        load.raced.load(Ordering::Relaxed),
    );
    assert!(
        failures.is_empty(),
        "{} of {total} requests failed or changed backend ({moved} moved):\n  {}\n{}",
        failures.len(),
        first_n(&failures, 15),
        logs.join("\n")
    );
    assert!(total >= want_requests && upgrades >= want_upgrades);
    assert!(
        ran.iter().filter(|r| !r.fresh).all(|r| r.connections >= 2),
        "each keep-alive client was moved to a new process: {ran:?}"
    );
}
