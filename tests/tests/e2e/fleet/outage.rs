//! Redis killed (SIGKILL) under load from three gateways: no client request fails, warm
//! sessions (in every gateway's local cache) stay on their backends, new sessions are placed from the local cache and the ring
//! (`degraded`); Redis restarted on the same port: the gateways reconnect by themselves,
//! `berth_registry_up` is 1 again, and the pins made meanwhile are written back.
use super::{fleet_config, sessions_agree, start_fleet, visit, Rng};
use berth_routing::SessionKey;
use berth_tests::redis::Redis;
use berth_tests::{Backend, Gateway};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WARM: usize = 100;
const THREADS: usize = 6;

fn all_up(gws: &[Gateway], v: f64) -> bool {
    gws.iter()
        .all(|g| g.metric("berth_registry_up", &[("upstream", "app")]) == v)
}

#[test]
fn killing_redis_under_load_fails_no_request() {
    let mut redis = Redis::start();
    let backends = Backend::start_many(4);
    let gws = start_fleet(&fleet_config(&backends, &[redis.url()], false));
    let (_, seed) = Rng::seeded();
    let warm_ids: Vec<String> = (0..WARM).map(|i| format!("warm-{seed:x}-{i}")).collect();
    let homes = sessions_agree(&gws, &format!("warm-{seed:x}"), WARM, seed);
    // Warm on every gateway: each has the pin in its local cache (a session a gateway never
    // saw cannot be found there while Redis is down: it is placed anew, `degraded`).
    let mut clients: Vec<_> = gws.iter().map(Gateway::client).collect();
    for (id, home) in warm_ids.iter().zip(&homes) {
        for c in clients.iter_mut() {
            assert_eq!(visit(c, id).as_deref(), Ok(home.as_str()), "{id}");
        }
    }

    let stop = AtomicBool::new(false);
    let killed_at: Mutex<Option<Instant>> = Mutex::new(None);
    let sent = AtomicU64::new(0);
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    // New sessions opened during the load: (id, backend, first request started after the kill).
    let opened: Mutex<Vec<(String, String, bool)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (stop, killed_at, sent, failures, opened) =
                (&stop, &killed_at, &sent, &failures, &opened);
            let (gws, warm_ids, homes) = (&gws, &warm_ids, &homes);
            s.spawn(move || {
                let mut rng = Rng(seed ^ (t as u64 + 7).wrapping_mul(0x2545_F491_4F6C_DD1D) | 1);
                let mut clients: Vec<_> = gws.iter().map(Gateway::client).collect();
                let mut k = 0;
                while !stop.load(Ordering::Relaxed) {
                    let g = (rng.next() % 3) as usize;
                    let w = (rng.next() % WARM as u64) as usize;
                    sent.fetch_add(1, Ordering::Relaxed);
                    match visit(&mut clients[g], &warm_ids[w]) {
                        Ok(b) if b == homes[w] => {}
                        Ok(b) => failures.lock().unwrap().push(format!(
                            "warm {} moved from {} to {b} (gateway {g})",
                            warm_ids[w], homes[w]
                        )),
                        Err(e) => failures.lock().unwrap().push(e),
                    }
                    if rng.next().is_multiple_of(4) {
                        let after_kill = killed_at.lock().unwrap().is_some();
                        let id = format!("load-{seed:x}-{t}-{k}");
                        k += 1;
                        let mut seen = Vec::new();
                        for _ in 0..3 {
                            sent.fetch_add(1, Ordering::Relaxed);
                            match visit(&mut clients[g], &id) {
                                Ok(b) => seen.push(b),
                                Err(e) => failures.lock().unwrap().push(e),
                            }
                        }
                        if seen.len() == 3 && seen.iter().all(|b| *b == seen[0]) {
                            opened
                                .lock()
                                .unwrap()
                                .push((id, seen[0].clone(), after_kill));
                        } else {
                            failures.lock().unwrap().push(format!("{id}: {seen:?}"));
                        }
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_secs(1));
        *killed_at.lock().unwrap() = Some(Instant::now());
        redis.kill();
        let t0 = Instant::now();
        while !all_up(&gws, 0.0) {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "berth_registry_up stayed 1"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_secs(2));
        redis.restart();
        let t1 = Instant::now();
        while !all_up(&gws, 1.0) {
            assert!(
                t1.elapsed() < Duration::from_secs(30),
                "the gateways did not reconnect"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "fleet: every gateway answered by Redis {:?} after its restart",
            t1.elapsed()
        );
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, Ordering::Relaxed);
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "seed {seed}: {} of {} requests failed or moved: {:?}",
        failures.len(),
        sent.load(Ordering::Relaxed),
        &failures[..failures.len().min(10)]
    );
    let degraded: f64 = gws
        .iter()
        .map(|g| g.metric("berth_registry_degraded_total", &[]))
        .sum();
    assert!(degraded > 0.0, "no session was placed while Redis was down");
    // Every session opened after the kill is in Redis now, on the backend it was served by.
    let opened = opened.into_inner().unwrap();
    let since_kill: Vec<_> = opened.iter().filter(|o| o.2).collect();
    assert!(
        !since_kill.is_empty(),
        "no session was opened after the kill"
    );
    let keys: Vec<String> = since_kill
        .iter()
        .map(|(id, _, _)| {
            let key = SessionKey::new(b"header:x-session-id", id.as_bytes());
            format!("e2e:{{app:{:032x}}}:p", key.0)
        })
        .collect();
    let t0 = Instant::now();
    loop {
        let mut stored = Vec::new();
        for chunk in keys.chunks(200) {
            let mut args = vec!["MGET"];
            args.extend(chunk.iter().map(String::as_str));
            stored.extend(redis.cli(&args).lines().map(str::to_string));
        }
        let missing: Vec<_> = since_kill
            .iter()
            .zip(&stored)
            .filter(|((_, b, _), got)| got.trim() != b.as_str())
            .collect();
        if missing.is_empty() && stored.len() == keys.len() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{} of {} pins made meanwhile are not in Redis, e.g. {:?}",
            missing.len(),
            since_kill.len(),
            missing.first()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "fleet: {} requests, 0 failed; {} sessions opened after the kill, all in Redis; {degraded} degraded",
        sent.load(Ordering::Relaxed),
        since_kill.len()
    );
}
