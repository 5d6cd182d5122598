//! `berth-upgrade-load <proxy-addr> <sessions> <stop-file>` — the load of `make upgrade-demo`.
//!
//! Opens `<sessions>` header sessions (`X-Session-Id`), remembers where each landed, then
//! sends requests on all of them from 4 threads (two keep-alive, two with a new connection
//! per request) until `<stop-file>` exists. Every request must succeed and reach its session's
//! backend. Prints a progress line each second and a summary; exits 1 on any failure or move.
use berth_tests::sessions::{id, HEADER};
use berth_tests::{Client, Request};
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const THREADS: usize = 4;

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    failed: AtomicU64,
    moved: AtomicU64,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(addr), Some(n), Some(stop)) = (
        args.get(1).and_then(|a| a.parse::<SocketAddr>().ok()),
        args.get(2).and_then(|n| n.parse::<usize>().ok()),
        args.get(3),
    ) else {
        eprintln!("usage: berth-upgrade-load <proxy-addr> <sessions> <stop-file>");
        return ExitCode::from(2);
    };
    let mut client = Client::new(addr);
    let mut homes = Vec::with_capacity(n);
    for i in 0..n {
        match client.try_send(&Request::get("/open").header(HEADER, &id(i))) {
            Ok(r) if r.status == 200 => homes.push(r.backend().to_string()),
            other => {
                eprintln!("opening session {i}: {other:?}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!("load: {n} sessions open; requests from {THREADS} threads (2 keep-alive, 2 new connection each)");
    let counts = Counts::default();
    let done = AtomicBool::new(false);
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (homes, counts, done) = (&homes, &counts, &done);
            s.spawn(move || {
                let mut c = if t % 2 == 0 {
                    Client::new(addr)
                } else {
                    Client::new(addr).fresh_connections()
                };
                while !done.load(Ordering::Relaxed) {
                    for i in (t..homes.len()).step_by(THREADS) {
                        counts.sent.fetch_add(1, Ordering::Relaxed);
                        match c.try_send(&Request::get("/load").header(HEADER, &id(i))) {
                            Ok(r) if r.status == 200 && r.backend() == homes[i] => {}
                            Ok(r) if r.status == 200 => {
                                counts.moved.fetch_add(1, Ordering::Relaxed);
                                eprintln!(
                                    "load: session {i} moved {} -> {}",
                                    homes[i],
                                    r.backend()
                                );
                            }
                            other => {
                                counts.failed.fetch_add(1, Ordering::Relaxed);
                                eprintln!(
                                    "load: session {i} failed: {:?}",
                                    other.map(|r| r.status)
                                );
                                c.close();
                            }
                        }
                    }
                }
            });
        }
        let mut last = 0;
        while !Path::new(stop).exists() {
            std::thread::sleep(Duration::from_secs(1));
            let sent = counts.sent.load(Ordering::Relaxed);
            println!(
                "load: t={:>3}s  {:>6} req/s  failed {}  moved {}",
                started.elapsed().as_secs(),
                sent - last,
                counts.failed.load(Ordering::Relaxed),
                counts.moved.load(Ordering::Relaxed)
            );
            last = sent;
        }
        done.store(true, Ordering::Relaxed);
    });
    let (sent, failed, moved) = (
        counts.sent.into_inner(),
        counts.failed.into_inner(),
        counts.moved.into_inner(),
    );
    println!("load: {sent} requests in {:?}: {failed} failed, {moved} reached another backend than their session's", started.elapsed());
    if failed == 0 && moved == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
