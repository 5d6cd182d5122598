//! Printing a run: one Markdown table per (backends, sessions), then the checks.
use crate::policy::{Outcome, Policy, SimParams};
use crate::trace::TraceConfig;

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "–".into();
    }
    format!("{:.2}%", 100.0 * part as f64 / whole as f64)
}

fn ns(x: Option<f64>) -> String {
    x.map_or("–".into(), |v| format!("{v:.0}"))
}

pub fn header(cfg: &TraceConfig, p: &SimParams, first: &Outcome) {
    let counts = first.trace;
    println!(
        "\n## {} backends, {} sessions (seed {})\n",
        p.backends,
        thousands(cfg.sessions),
        cfg.seed
    );
    println!(
        "Trace: {} sessions arrived over {} s, {} requests, {} departures; peak {} live, \
         peak {} active; after warm-up (t ≥ {} s) on average {:.0}% of live sessions active, \
         {:.1} active per backend. Backend {} fails at t = {} s, a backend joins at t = {} s. \
         Trace checksum {:016x}.\n",
        thousands(counts.arrivals),
        cfg.seconds,
        thousands(counts.requests),
        thousands(counts.departures),
        thousands(first.peak_live),
        thousands(first.peak_active),
        p.warmup_s,
        100.0 * first.active_share.avg().unwrap_or(0.0),
        first.mean_active_per_backend.avg().unwrap_or(0.0),
        crate::policy::backend_name(0),
        cfg.fail_at,
        cfg.scale_at,
        counts.checksum
    );
}

pub fn table(p: &SimParams, rows: &[(Policy, Outcome)]) {
    let eps = f64::from(p.eps_milli) / 1000.0;
    println!(
        "| policy | placements (+ re-placed) | placed at/above bound (ε={eps}): all (after warm-up) | placed/mean, max (excess over {}·mean, sessions) | \
         max/mean over time: max, avg | moved on scale-up (share of live; 1/(N+1) = {:.2}%) | \
         moved on failure (of them from the failed backend; on it at the failure) | \
         rebalanced (of them active) | placement ns (median of batches) | sticky hit ns | wall s |",
        1.0 + eps,
        100.0 / (p.backends as f64 + 1.0)
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (policy, o) in rows {
        let rebalanced = if *policy == Policy::Rebalanced {
            let r = &o.rebalancing;
            format!("{} ({})", thousands(r.moved), thousands(r.moved_active))
        } else {
            "–".into()
        };
        println!(
            "| {} | {} (+ {}) | {} ({}) | {:.3} ({:+.2}) | {:.3}, {:.3} | {} ({}) | {} ({}; {}) | {} | {} | {} | {:.1} |",
            policy.label(),
            thousands(o.placements),
            thousands(o.replacements),
            thousands(o.over_bound),
            thousands(o.over_bound_late),
            o.placed.max,
            o.placed_excess,
            o.over_time.max,
            o.over_time.avg().unwrap_or(0.0),
            thousands(o.scale_up.moved),
            pct(o.scale_up.moved, o.scale_up.live),
            thousands(o.failure.moved),
            thousands(o.failure.from_failed),
            thousands(o.failure.on_failed),
            rebalanced,
            ns(o.place_ns.median()),
            if policy.pins() { ns(o.hit_ns.median()) } else { "–".into() },
            o.wall.as_secs_f64()
        );
    }
}

/// Prints every invariant a run must keep; returns whether all held.
pub fn checks(p: &SimParams, rows: &[(Policy, Outcome)]) -> bool {
    let mut ok = true;
    let checksum = rows.first().map(|r| r.1.trace.checksum);
    let mut fail = |what: String| {
        ok = false;
        println!("- FAILED: {what}");
    };
    println!();
    for (policy, o) in rows {
        let l = policy.label();
        if Some(o.trace.checksum) != checksum {
            fail(format!("{l}: replayed a different trace"));
        }
        if policy.bounded() && o.over_bound > 0 {
            let first = o.first_over_bound.as_deref().unwrap_or("");
            fail(format!(
                "{l}: {} placements at/above the bound, first: {first}",
                o.over_bound
            ));
        }
        if o.mismatches > 0 {
            let first = o.first_mismatch.as_deref().unwrap_or("");
            fail(format!(
                "{l}: {} disagreements with the router, first: {first}",
                o.mismatches
            ));
        }
        if o.unexpected > 0 {
            let first = o.first_unexpected.as_deref().unwrap_or("");
            fail(format!(
                "{l}: {} unexplained moves, first: {first}",
                o.unexpected
            ));
        }
        if o.failure.moved != o.failure.from_failed {
            fail(format!(
                "{l}: sessions not on the failed backend moved on failure"
            ));
        }
        if o.evicted > 0 {
            fail(format!("{l}: {} pins evicted", o.evicted));
        }
        if o.rebalancing.moved_busy > 0 {
            fail(format!(
                "{l}: rebalancing moved {} busy sessions",
                o.rebalancing.moved_busy
            ));
        }
    }
    if let Some((_, d)) = rows.iter().find(|r| r.0 == Policy::Rebalanced) {
        let r = &d.rebalancing;
        let avg = r.total_time.as_secs_f64() * 1e3 / r.calls.max(1) as f64;
        println!(
            "- (d) rebalance: {} calls (every {} s, budget {}/s, idle ≥ {} s), {:.2} ms per call on \
             average, {:.2} ms at most",
            r.calls,
            p.rebalance_every_s,
            p.budget_per_s,
            p.idle_for_s,
            avg,
            r.max_time.as_secs_f64() * 1e3
        );
    }
    if let Some((_, e)) = rows.iter().find(|r| r.0 == Policy::Keyless) {
        println!(
            "- (e): {} keyless sessions placed, {} came back (were pinned; {}), plus {} keyless \
             requests that never came back (crawlers; pending span {} ms); placed/mean for (e) is \
             the placement signal (active + pending) of the chosen backend right after each \
             keyless placement; the signal's max/mean over time: max {:.3}, avg {:.3}",
            thousands(e.placements),
            thousands(e.returned),
            if p.back_at_once {
                "each right after its first request"
            } else {
                "with their second request"
            },
            thousands(e.crawls),
            p.pending_span_ms,
            e.over_time_signal.max,
            e.over_time_signal.avg().unwrap_or(0.0)
        );
        if e.placed.max > 1.05 {
            fail(format!(
                "(e): a keyless placement left its backend at {:.3} × the mean (goal ≤ 1.05)",
                e.placed.max
            ));
        }
    }
    let table_means: Vec<String> = rows
        .iter()
        .map(|(policy, o)| format!("{} {:.3}", policy.letter(), o.placed_table.max))
        .collect();
    println!(
        "- placed/mean, max, with the mean over the table's backends only (the router's mean \
         also counts active pins still on the failed backend): {}",
        table_means.join(", ")
    );
    if ok {
        println!(
            "- checks passed: one trace for all policies; every load the router reported every \
             second equals the simulator's own count; no unexplained move; no pin evicted; \
             no busy session rebalanced; (c)/(d)/(e) never placed at or above the bound; \
             (e) placed every keyless session at ≤ 1.05 × the mean"
        );
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(10_000_000), "10,000,000");
        assert_eq!(pct(1, 3), "33.33%");
        assert_eq!(pct(1, 0), "–");
    }
}
