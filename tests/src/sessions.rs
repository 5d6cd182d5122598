//! Sessions keyed by a header ([`HEADER`]), as the lifecycle tests use them: open many, visit
//! them all from a few keep-alive clients, and see where each went.
use crate::client::{Client, Request, Response};
use crate::gateway::Gateway;
use std::io;

/// The affinity header of [`crate::config::header_app`].
pub const HEADER: &str = "X-Session-Id";

/// The `i`-th session id: looks like an application's (not sequential), stable across runs.
pub fn id(i: usize) -> String {
    let mixed = (i as u64 + 1)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(17);
    format!("sess-{mixed:016x}")
}

/// `n` ids from [`id`], starting at `from`.
pub fn ids(from: usize, n: usize) -> Vec<String> {
    (from..from + n).map(id).collect()
}

/// `GET path` in session `id`.
pub fn request(id: &str, path: &str) -> Request {
    Request::get(path).header(HEADER, id)
}

/// A session and where it lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub id: String,
    /// The backend that answered (its id).
    pub home: String,
    /// The `X-Berth-Backup` that backend was told (`-` when none).
    pub backup: String,
}

/// Send `make(i, &ids[i])` for every id from `threads` keep-alive clients (thread `t` takes
/// ids `t, t + threads, …`, in order); the results in id order.
pub fn visit_with(
    gw: &Gateway,
    ids: &[String],
    threads: usize,
    make: impl Fn(usize, &str) -> Request + Sync,
) -> Vec<io::Result<Response>> {
    let threads = threads.clamp(1, ids.len().max(1));
    let make = &make;
    let mut parts: Vec<Vec<(usize, io::Result<Response>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut client: Client = gw.client();
                    (t..ids.len())
                        .step_by(threads)
                        .map(|i| (i, client.try_send(&make(i, &ids[i]))))
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut all: Vec<_> = parts.drain(..).flatten().collect();
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, r)| r).collect()
}

/// `GET path` once in every session (see [`visit_with`]).
pub fn visit(
    gw: &Gateway,
    ids: &[String],
    threads: usize,
    path: &str,
) -> Vec<io::Result<Response>> {
    visit_with(gw, ids, threads, |_, id| request(id, path))
}

/// Open every session (its first request): each must get 200 with `X-Berth-Affinity: new`.
/// Panics listing the failures.
pub fn open(gw: &Gateway, ids: &[String], threads: usize) -> Vec<Placed> {
    let results = visit(gw, ids, threads, "/open");
    let mut failures = Vec::new();
    let mut placed = Vec::new();
    for (id, r) in ids.iter().zip(results) {
        match r {
            Ok(r) if r.status == 200 && r.affinity() == "new" && !r.backend().is_empty() => placed
                .push(Placed {
                    id: id.clone(),
                    home: r.backend().to_string(),
                    backup: r.seen_backup().to_string(),
                }),
            Ok(r) => failures.push(format!("{id}: expected 200/new: {}", r.summary())),
            Err(e) => failures.push(format!("{id}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} new sessions failed:\n  {}",
        failures.len(),
        ids.len(),
        crate::first_n(&failures, 10)
    );
    placed
}

/// `Ok` when `r` is a 200 from `home` with `X-Berth-Affinity: sticky` and no previous backend.
pub fn check_sticky(r: &io::Result<Response>, home: &str) -> Result<(), String> {
    match r {
        Ok(r)
            if r.status == 200
                && r.backend() == home
                && r.affinity() == "sticky"
                && r.previous() == "-" =>
        {
            Ok(())
        }
        Ok(r) => Err(format!("expected sticky on {home}: {}", r.summary())),
        Err(e) => Err(format!("expected sticky on {home}: {e}")),
    }
}

/// `Ok(new home)` when `r` is a 200 from a backend other than `from` with
/// `X-Berth-Affinity: reassigned` and `X-Berth-Previous-Backend: from`.
pub fn check_reassigned(r: &io::Result<Response>, from: &str) -> Result<String, String> {
    match r {
        Ok(r)
            if r.status == 200
                && !r.backend().is_empty()
                && r.backend() != from
                && r.affinity() == "reassigned"
                && r.previous() == from =>
        {
            Ok(r.backend().to_string())
        }
        Ok(r) => Err(format!(
            "expected reassigned away from {from}: {}",
            r.summary()
        )),
        Err(e) => Err(format!("expected reassigned away from {from}: {e}")),
    }
}
