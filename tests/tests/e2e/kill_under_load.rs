//! Issue #3, must-show 1: under continuous load from 200 header sessions, kill one of four
//! backends. No client request fails; the dead backend's sessions are on their backups (the
//! `X-Berth-Backup` their primary was told) from their first request after the kill, without
//! waiting for the health check, each told once (`reassigned`, previous = the dead backend); no
//! other session moves. The backend comes back
//! on the same address: no session moves back to it.
use berth_tests::config::{self, UPSTREAM};
use berth_tests::sessions::{self, Placed};
use berth_tests::{first_n, tally, Backend, Gateway};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SESSIONS: usize = 200;
const THREADS: usize = 8;
/// How long the backend may take to be shown down, then up again (health interval 2 s, fall
/// and rise 2): generous, as the machine may be loaded; waiting ends as soon as it shows.
const HEALTH_WAIT: Duration = Duration::from_secs(30);
/// Each phase lasts until every load thread went round all its sessions this many times.
const ROUNDS_PER_PHASE: u32 = 2;
const HEALTH: &str = "{type: http, path: /__health, interval: 2s, timeout: 1s, rise: 2, fall: 2}";

/// Test phases, as the load threads see them when they send a request.
const BEFORE_KILL: u8 = 0;
const KILLED: u8 = 1;
const BACK_UP: u8 = 2;

/// What one load thread saw of one session.
#[derive(Debug)]
struct Track {
    placed: Placed,
    /// Where it lives now.
    current: String,
    /// Time from the kill to the response that moved it (its first `reassigned`).
    moved_after: Option<Duration>,
    /// Requests sent in each phase.
    sent: [u32; 3],
}

/// Sets the stop flag when dropped — also when the test panics inside the thread scope, which
/// would otherwise wait forever for the load threads.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

struct Shared {
    phase: AtomicU8,
    stop: AtomicBool,
    killed_at: Mutex<Option<Instant>>,
    /// Per load thread, per phase: rounds over all its sessions begun and ended in the phase.
    rounds: Mutex<Vec<[u32; 3]>>,
}

impl Shared {
    /// Wait until every load thread went round its sessions [`ROUNDS_PER_PHASE`] times in the
    /// current phase (a condition, not a time: on a loaded machine a phase just lasts longer).
    fn wait_rounds(&self) {
        let phase = self.phase.load(Ordering::SeqCst) as usize;
        let done = || {
            let r = self.rounds.lock().unwrap_or_else(|p| p.into_inner());
            r.iter().all(|t| t[phase] >= ROUNDS_PER_PHASE).then_some(())
        };
        berth_tests::wait_for(Duration::from_secs(120), Duration::from_millis(20), done)
            .unwrap_or_else(|| {
                panic!(
                    "phase {phase}: the load threads did not go round their sessions \
                     {ROUNDS_PER_PHASE} times in 120 s: {:?}",
                    self.rounds.lock().unwrap_or_else(|p| p.into_inner())
                )
            });
    }
}

/// One load thread: loop over its sessions on one keep-alive connection until told to stop.
fn load(
    gw: &Gateway,
    shared: &Shared,
    me: usize,
    victim: &str,
    mine: Vec<Placed>,
) -> (Vec<Track>, Vec<String>) {
    let mut client = gw.client();
    let mut tracks: Vec<Track> = mine
        .into_iter()
        .map(|p| Track {
            current: p.home.clone(),
            placed: p,
            moved_after: None,
            sent: [0; 3],
        })
        .collect();
    let mut failures = Vec::new();
    let mut n = 0u64;
    while !shared.stop.load(Ordering::SeqCst) {
        let round_phase = shared.phase.load(Ordering::SeqCst);
        for t in tracks.iter_mut() {
            let phase = shared.phase.load(Ordering::SeqCst);
            t.sent[phase as usize] += 1;
            n += 1;
            let id = &t.placed.id;
            let r = match client.try_send(&sessions::request(id, &format!("/load/{n}"))) {
                Ok(r) => r,
                Err(e) => {
                    failures.push(format!("phase {phase}: {id} (on {}): {e}", t.current));
                    client.close();
                    continue;
                }
            };
            if !r.is_success() {
                failures.push(format!(
                    "phase {phase}: {id} (on {}): {}",
                    t.current,
                    r.summary()
                ));
                continue;
            }
            if sessions::check_sticky(&Ok(r.clone()), &t.current).is_ok() {
                continue;
            }
            let killed_at = *shared.killed_at.lock().unwrap_or_else(|p| p.into_inner());
            let may_move = t.placed.home == victim && t.moved_after.is_none();
            match (may_move, killed_at) {
                (true, Some(at)) => match sessions::check_reassigned(&Ok(r.clone()), victim) {
                    Ok(to) if to == t.placed.backup => {
                        t.moved_after = Some(at.elapsed());
                        t.current = to;
                    }
                    Ok(to) => {
                        failures.push(format!(
                            "{id}: moved from {victim} to {to}, not to its backup {}: {}",
                            t.placed.backup,
                            r.summary()
                        ));
                        t.moved_after = Some(at.elapsed());
                        t.current = to;
                    }
                    Err(e) => failures.push(format!("phase {phase}: {id}: {e}")),
                },
                _ => failures.push(format!(
                    "phase {phase}: {id} (home {}, now on {}) must stay there: {}",
                    t.placed.home,
                    t.current,
                    r.summary()
                )),
            }
        }
        if shared.phase.load(Ordering::SeqCst) == round_phase {
            shared.rounds.lock().unwrap_or_else(|p| p.into_inner())[me][round_phase as usize] += 1;
        }
    }
    (tracks, failures)
}

#[test]
fn killing_a_backend_under_load_fails_no_request_and_moves_only_its_sessions() {
    let mut backends = Backend::start_many(4);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let gw = Gateway::start_with_admin(&config::header_app(
        &specs,
        &[("upstreams.app.health", HEALTH)],
    ));
    let ids = sessions::ids(0, SESSIONS);
    let placed = sessions::open(&gw, &ids, THREADS);
    let homes = tally(placed.iter().map(|p| p.home.as_str()));
    for p in &placed {
        assert!(
            p.backup != "-" && p.backup != p.home && specs.iter().any(|(id, _)| *id == p.backup),
            "{}: on {} the backend was told backup {:?} (want another configured backend)",
            p.id,
            p.home,
            p.backup
        );
    }
    let (victim, on_victim) = homes
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(b, n)| (b.clone(), *n))
        .expect("sessions were placed");
    let vi = backends
        .iter()
        .position(|b| b.name == victim)
        .expect("the victim is one of ours");

    let shared = Shared {
        phase: AtomicU8::new(BEFORE_KILL),
        stop: AtomicBool::new(false),
        killed_at: Mutex::new(None),
        rounds: Mutex::new(vec![[0; 3]; THREADS]),
    };
    let mut restart_report = String::new();
    let results: Vec<(Vec<Track>, Vec<String>)> = std::thread::scope(|s| {
        let stop = StopOnDrop(&shared.stop);
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let mine: Vec<Placed> = placed.iter().skip(t).step_by(THREADS).cloned().collect();
                let (gw, shared, victim) = (&gw, &shared, victim.as_str());
                s.spawn(move || load(gw, shared, t, victim, mine))
            })
            .collect();
        shared.wait_rounds();

        // Phase and time first, then the kill: a response that shows the kill (a move) always
        // finds `killed_at` set, however the load threads are scheduled.
        *shared.killed_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        shared.phase.store(KILLED, Ordering::SeqCst);
        backends[vi].kill();
        // The active check notices within fall × interval (+ timeout).
        let (_, took) = gw.wait_backend(&victim, "down", HEALTH_WAIT, |b| b.health == "down");
        restart_report.push_str(&format!(
            "{victim} shown down {took:?} after the poll began; "
        ));
        shared.wait_rounds();

        backends[vi].restart();
        let (_, took) = gw.wait_backend(&victim, "up again", HEALTH_WAIT, |b| b.health == "up");
        restart_report.push_str(&format!("up again {took:?} after the restart"));
        shared.phase.store(BACK_UP, Ordering::SeqCst);
        shared.wait_rounds();
        drop(stop);
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let failures: Vec<String> = results.iter().flat_map(|(_, f)| f.clone()).collect();
    let tracks: Vec<&Track> = results.iter().flat_map(|(t, _)| t).collect();
    let sent: u32 = tracks.iter().map(|t| t.sent.iter().sum::<u32>()).sum();
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed or went wrong ({restart_report}):\n  {}",
        failures.len(),
        first_n(&failures, 15)
    );

    // Every session was exercised in every phase: the checks above are not vacuous.
    for t in &tracks {
        assert!(
            t.sent.iter().all(|&n| n >= 2),
            "{}: requests per phase {:?}; the load was too slow to test anything",
            t.placed.id,
            t.sent
        );
    }
    let mut times: Vec<u128> = tracks
        .iter()
        .filter_map(|t| t.moved_after.map(|d| d.as_millis()))
        .collect();
    times.sort_unstable();
    let per_phase: Vec<u32> = (0..3)
        .map(|i| tracks.iter().map(|t| t.sent[i]).sum())
        .collect();
    eprintln!("move times (ms): {times:?}; requests per phase {per_phase:?}");
    let victims: Vec<&&Track> = tracks.iter().filter(|t| t.placed.home == victim).collect();
    assert_eq!(victims.len(), on_victim);
    // Each of them moved, on its first request after the kill (any other answer to it is in
    // `failures` above), whenever the health check noticed.
    let stayed: Vec<String> = victims
        .iter()
        .filter(|t| t.moved_after.is_none())
        .map(|t| format!("{} (requests per phase {:?})", t.placed.id, t.sent))
        .collect();
    assert!(
        stayed.is_empty(),
        "{} of {on_victim} sessions of {victim} never moved to their backup:\n  {}",
        stayed.len(),
        first_n(&stayed, 10)
    );
    let slowest = victims.iter().filter_map(|t| t.moved_after).max();
    eprintln!("{on_victim} sessions of {victim} moved; slowest {slowest:?}; {restart_report}");

    // Where the gateway says they live now: on their backups, not back on the victim.
    for t in &tracks {
        let info = gw
            .session_info(&t.placed.id)
            .unwrap_or_else(|| panic!("{}: no pinned session in the admin API", t.placed.id));
        assert_eq!(
            info.backend, t.current,
            "{}: the admin API disagrees with where requests went ({info:?})",
            t.placed.id
        );
    }
    let rows = gw.backends();
    let victim_row = rows.iter().find(|b| b.id == victim).expect("listed");
    assert_eq!(
        (victim_row.health.as_str(), victim_row.sessions),
        ("up", 0),
        "{victim} after its sessions moved away: {rows:?}"
    );
    assert_eq!(
        rows.iter().map(|b| b.sessions).sum::<u64>(),
        SESSIONS as u64,
        "every session is pinned once: {rows:?}"
    );
    assert_eq!(
        backends[vi].count(),
        0,
        "the restarted {victim} must get no session back"
    );
    let bad = gw.wait_metric(
        "berth_requests_total",
        &[("upstream", UPSTREAM), ("class", "5xx")],
        |_| true,
    );
    assert_eq!(bad, 0.0, "5xx responses counted");
}
