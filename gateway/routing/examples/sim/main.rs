//! Load-placement simulation of the routing core (issue 4, item 7): one synthetic trace of
//! session arrivals, heavy-tailed activity and departures, one backend failure and one scale-up,
//! replayed against (a) Ketama alone, (b) Ketama + overlay, (c) + bounded load, (d) + idle
//! rebalancing and (e) sessions without a key placed by load (issue 19); plus bursts of new
//! keyless sessions (`burst.rs`). See `gateway/routing/SIMULATION.md` and `--help`.
//!
//! `make sim` (or `cargo run --release -p berth-routing --example sim -- [options]`).
mod burst;
mod policy;
mod report;
mod rng;
mod runner;
mod stats;
mod trace;

use policy::{Outcome, Policy, SimParams};
use std::process::ExitCode;
use std::time::Instant;
use trace::{Trace, TraceConfig};

const HELP: &str = "\
sim — replay one synthetic session trace against five placement policies

options (defaults in brackets):
  --quick                 smoke run: 10 and 100 backends, 20k/50k sessions, 300 s
  --large                 the largest run: 1,000 backends, 10,000,000 sessions
  --no-bursts             skip the bursts of new keyless sessions printed first
  --backends LIST         backend counts, comma-separated [10,100,1000]
  --sessions LIST         expected sessions per backend count (one value = all) [200000,1000000,2000000]
  --seconds N             simulated seconds [1200]; failure at N/2, scale-up at 3N/4, warm-up N/4
  --seed N                trace seed [1]
  --policies abcde        which policies to run [abcde]
  --eps X                 bounded-load epsilon [0.25]
  --window S              active window, seconds [60]
  --idle-for S            (d) move only sessions unused this long [20]
  --budget N              (d) sessions moved per second at most [1000]
  --rebalance-every S     (d) seconds between rebalance calls [1]
  --life-xm S             Pareto scale of session lifetimes, seconds [120]
  --life-alpha A          Pareto shape of session lifetimes [1.3]
  --gap-median S          median of a session's base gap between requests, seconds [120]
  --gap-sigma X           log-normal sigma of base gaps [2]
  --gap-alpha A           Pareto shape of each gap's factor [1.3]
  --req-ms MS             mean request duration (in flight) [100]
  --batch N               placements per timed batch [1024]
  --keyless-return WHEN   (e) a session's token comes back: at-once (right after its first
                          request, as a browser's next resource request) or second-request
                          (with its second request of the trace) [at-once]
  --crawlers X            (e) keyless requests that never come back, per session arrival [1]
  --pending-span MS       (e) a keyless placement counts as pending for MS to 2·MS unless it
                          comes back [1000]
";

struct Args {
    /// Print the bursts of new keyless sessions first (`burst.rs`).
    bursts: bool,
    backends: Vec<usize>,
    sessions: Vec<u64>,
    policies: Vec<Policy>,
    trace: TraceConfig,
    p: SimParams,
}

fn list<T: std::str::FromStr>(v: &str) -> Result<Vec<T>, String> {
    v.split(',')
        .map(|x| {
            x.trim()
                .replace('_', "")
                .parse()
                .map_err(|_| format!("bad number {x:?}"))
        })
        .collect()
}

fn one<T: std::str::FromStr>(v: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("bad value {v:?}"))
}

fn defaults() -> Args {
    Args {
        bursts: true,
        backends: vec![10, 100, 1000],
        sessions: vec![200_000, 1_000_000, 2_000_000],
        policies: Policy::ALL.to_vec(),
        trace: TraceConfig {
            seed: 1,
            sessions: 0,
            seconds: 1200,
            life_xm_s: 120.0,
            life_alpha: 1.3,
            gap_median_s: 120.0,
            gap_sigma: 2.0,
            gap_alpha: 1.3,
            req_ms: 100.0,
            fail_at: 0,
            scale_at: 0,
        },
        p: SimParams {
            backends: 0,
            eps_milli: 250,
            window_s: 60,
            idle_for_s: 20,
            budget_per_s: 1000,
            rebalance_every_s: 1,
            warmup_s: 0,
            batch: 1024,
            back_at_once: true,
            crawlers: 1.0,
            pending_span_ms: berth_routing::PENDING_SPAN,
        },
    }
}

fn parse(argv: &[String]) -> Result<Args, String> {
    let mut a = defaults();
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        if flag == "--quick" {
            (a.backends, a.sessions, a.trace.seconds) = (vec![10, 100], vec![20_000, 50_000], 300);
            continue;
        }
        if flag == "--large" {
            (a.backends, a.sessions) = (vec![1000], vec![10_000_000]);
            continue;
        }
        if flag == "--no-bursts" {
            a.bursts = false;
            continue;
        }
        if flag == "--help" || flag == "-h" {
            return Err(String::new());
        }
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let t = &mut a.trace;
        match flag.as_str() {
            "--backends" => a.backends = list(v)?,
            "--sessions" => a.sessions = list(v)?,
            "--seconds" => t.seconds = one(v)?,
            "--seed" => t.seed = one(v)?,
            "--policies" => a.policies = policies(v)?,
            "--eps" => a.p.eps_milli = (one::<f64>(v)? * 1000.0).round() as u32,
            "--window" => a.p.window_s = one(v)?,
            "--idle-for" => a.p.idle_for_s = one(v)?,
            "--budget" => a.p.budget_per_s = one(v)?,
            "--rebalance-every" => a.p.rebalance_every_s = one::<u32>(v)?.max(1),
            "--life-xm" => t.life_xm_s = one(v)?,
            "--life-alpha" => t.life_alpha = one(v)?,
            "--gap-median" => t.gap_median_s = one(v)?,
            "--gap-sigma" => t.gap_sigma = one(v)?,
            "--gap-alpha" => t.gap_alpha = one(v)?,
            "--req-ms" => t.req_ms = one(v)?,
            "--batch" => a.p.batch = one(v)?,
            "--keyless-return" => {
                a.p.back_at_once = match v.as_str() {
                    "at-once" => true,
                    "second-request" => false,
                    _ => return Err(format!("--keyless-return {v:?}: at-once or second-request")),
                }
            }
            "--crawlers" => a.p.crawlers = one(v)?,
            "--pending-span" => a.p.pending_span_ms = one(v)?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if a.sessions.len() != 1 && a.sessions.len() != a.backends.len() {
        return Err("--sessions takes one value or one per --backends entry".into());
    }
    if a.p.window_s == 0 || a.trace.seconds < 8 || a.backends.contains(&0) {
        return Err("--window, --seconds (≥ 8) and --backends must be positive".into());
    }
    Ok(a)
}

fn policies(v: &str) -> Result<Vec<Policy>, String> {
    v.chars()
        .map(|c| {
            let p = Policy::ALL.iter().find(|p| p.letter() == c);
            p.copied()
                .ok_or_else(|| format!("unknown policy {c:?} (a, b, c, d, e)"))
        })
        .collect()
}

/// What one `Instant::now()` + `elapsed()` pair costs here (included in the timed figures).
fn timer_overhead() -> Option<f64> {
    let mut b = stats::Batches::new(1024);
    for _ in 0..64 * 1024 {
        let start = Instant::now();
        b.add(start.elapsed().as_nanos() as u64);
    }
    b.median()
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprint!(
                "{}{HELP}",
                if e.is_empty() {
                    e
                } else {
                    format!("sim: {e}\n\n")
                }
            );
            return if argv.iter().any(|a| a == "--help" || a == "-h") {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    println!(
        "# berth-routing simulation\n\ncommand: sim {}",
        argv.join(" ")
    );
    println!(
        "clock: one Instant pair costs {} ns (median of batches), included in the ns figures",
        timer_overhead().map_or("?".into(), |x| format!("{x:.0}"))
    );
    let mut ok = true;
    if args.bursts {
        ok &= burst::report(args.trace.seed);
    }
    for (i, &n) in args.backends.iter().enumerate() {
        let sessions = args.sessions[if args.sessions.len() == 1 { 0 } else { i }];
        ok &= run(&args, n, sessions);
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// All policies over one trace of `sessions` on `backends`; prints the table; true when every
/// check held.
fn run(args: &Args, backends: usize, sessions: u64) -> bool {
    let s = args.trace.seconds;
    let cfg = TraceConfig {
        sessions,
        fail_at: s / 2,
        scale_at: s * 3 / 4,
        ..args.trace.clone()
    };
    let p = SimParams {
        backends,
        warmup_s: s / 4,
        ..args.p.clone()
    };
    let mut rows: Vec<(Policy, Outcome)> = Vec::new();
    for &policy in &args.policies {
        let trace = Trace::new(cfg.clone());
        let out = runner::Runner::new(policy, &p, &cfg).run(trace);
        eprintln!(
            "  {backends} backends, {}: {:.1} s",
            policy.label(),
            out.wall.as_secs_f64()
        );
        rows.push((policy, out));
    }
    let Some(first) = rows.first() else {
        return true;
    };
    report::header(&cfg, &p, &first.1);
    report::table(&p, &rows);
    report::checks(&p, &rows)
}
