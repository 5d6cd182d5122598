//! Replays a trace against one policy and measures it.
//!
//! The runner keeps its own account of every session (backend, last use, active or not) and of
//! active sessions per backend, following the overlay's rules: a session is active from a use
//! until the first sweep at which its last use is a whole window old, and stays active while a
//! request is in flight. For (a), which has no overlay, that account *is* the load; for the
//! others it is checked against the router's loads every second (`Outcome::mismatches`).
//!
//! (e) sessions arrive without a key: the first request is placed by `select_keyless` and pins
//! nothing (not tracked in flight, not active); every later request carries the token naming
//! the session's backend (`select_named`), and the first of them pins it. A session that never
//! sends a second request never counts anywhere.
use crate::policy::{backend_name, key, session_of, EventMoves, Outcome, Policy, SimParams, Table};
use crate::rng;
use crate::stats::{below_bound, max_over_mean};
use crate::trace::{Event, Trace, TraceConfig};
use berth_routing::{BackendSpec, Decision, Interner, Overlay, OverlayConfig, Reason};
use std::sync::Arc;
use std::time::Instant;

mod keyless;

const NONE: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Sess {
    /// `BackendId.0` of the backend serving it.
    backend: u32,
    /// Last use, whole seconds (as the overlay keeps it).
    last_s: u32,
    active: bool,
    live: bool,
    /// Pinned: always for (a)–(d); for (e) once its token came back.
    returned: bool,
    /// Requests in flight the overlay does not track ((e): the keyless first request). The
    /// first releases are taken to be theirs.
    untracked: u8,
}

pub struct Runner<'a> {
    policy: Policy,
    p: &'a SimParams,
    names: Interner,
    overlay: Arc<Overlay>,
    specs: Vec<BackendSpec>,
    table: Table,
    sess: Vec<Sess>,
    /// Active sessions per `BackendId.0`, by the runner's own account.
    shadow: Vec<u32>,
    shadow_total: u64,
    /// `expiry[s]`: sessions that may stop being active at the sweep of second `s`.
    expiry: Vec<Vec<u32>>,
    live: u64,
    failed: Option<u32>,
    added: Option<u32>,
    /// Seed of (e)'s random bits for `select_keyless`.
    seed: u64,
    pub out: Outcome,
}

impl<'a> Runner<'a> {
    pub fn new(policy: Policy, p: &'a SimParams, trace: &TraceConfig) -> Self {
        let overlay = Arc::new(
            Overlay::new(OverlayConfig {
                // Room for every session of the trace: nothing is evicted, departures remove pins.
                max_entries: trace.sessions as usize * 11 / 10 + 10_000,
                idle_ttl: 0,
                active_window: u64::from(p.window_s) * 1000,
            })
            .with_pending_span(p.pending_span_ms),
        );
        let names = Interner::default();
        let specs: Vec<_> = (0..p.backends)
            .map(|n| BackendSpec::new(&backend_name(n), 1))
            .collect();
        let table = Table::new(policy, p.eps_milli, &specs, &overlay, &names);
        Runner {
            policy,
            p,
            names,
            overlay,
            specs,
            table,
            sess: Vec::with_capacity(trace.sessions as usize + trace.sessions as usize / 50),
            shadow: vec![0; p.backends + 1],
            shadow_total: 0,
            expiry: vec![Vec::new(); trace.seconds as usize + p.window_s as usize + 1],
            live: 0,
            failed: None,
            added: None,
            seed: trace.seed,
            out: Outcome::new(p.batch),
        }
    }

    /// Replays the whole trace.
    pub fn run(mut self, mut trace: Trace) -> Outcome {
        let start = Instant::now();
        while let Some((t, e)) = trace.next() {
            match e {
                Event::Tick(s) => self.tick(s, &trace),
                Event::Arrive(id) => self.arrive(id, t),
                Event::Request(id) => self.request(id, t),
                Event::Release(id) => self.release(id, t),
                Event::Depart(id) => self.depart(id),
                Event::Fail => self.fail(),
                Event::ScaleUp => self.scale_up(),
            }
        }
        self.out.wall = start.elapsed();
        self.out.trace = trace.counts();
        self.out.evicted = self.overlay.stats().evicted;
        self.out
    }

    /// The router's `A`: active sessions minus those on table backends taking no new sessions
    /// (pins on backends no longer in the table count, as in the router).
    fn active_total(&self) -> u64 {
        if !self.policy.pins() {
            return self.shadow_total;
        }
        let others: u64 = self
            .table
            .ineligible
            .iter()
            .map(|&i| u64::from(self.table.router.load(i)))
            .sum();
        self.overlay.loads().total().saturating_sub(others)
    }

    /// Marks a use of `sid` at second `now_s`: active from now, last use now.
    fn touch(&mut self, sid: u32, now_s: u32) {
        let s = &mut self.sess[sid as usize];
        let schedule = !s.active || now_s > s.last_s;
        s.last_s = s.last_s.max(now_s);
        if !s.active {
            s.active = true;
            self.shadow[s.backend as usize] += 1;
            self.shadow_total += 1;
        }
        if schedule {
            let at = (s.last_s + self.p.window_s) as usize;
            if let Some(bucket) = self.expiry.get_mut(at) {
                bucket.push(sid);
            }
        }
    }

    /// Points `sid` at backend `to`, moving its active count along.
    fn set_backend(&mut self, sid: u32, to: u32) {
        let s = &mut self.sess[sid as usize];
        if s.active {
            if s.backend != NONE {
                self.shadow[s.backend as usize] -= 1;
            }
            self.shadow[to as usize] += 1;
        }
        s.backend = to;
    }

    /// Records a placement of `sid` on table index `idx`, decided when `a` sessions were active:
    /// the bound check, then the session's new home, then the ratio right after.
    fn placed(&mut self, sid: u32, idx: usize, a: u64, now_s: u32, late: bool) {
        let b = self.table.ids[idx];
        let w = u64::from(self.table.router.weight(idx));
        let load = u64::from(self.shadow[b as usize]);
        if !below_bound(load, a, w, self.table.weight, self.p.eps_milli) {
            self.out.over_bound += 1;
            self.out.over_bound_late += u64::from(late);
            if self.out.first_over_bound.is_none() {
                let cap = crate::stats::bound_cap(a, w, self.table.weight, self.p.eps_milli);
                self.out.first_over_bound = Some(format!(
                    "t={now_s}s session {sid} → {} at load {load}, cap {cap} (A={a})",
                    self.table.router.name(idx)
                ));
            }
        }
        self.set_backend(sid, b);
        self.touch(sid, now_s);
        let after = u64::from(self.shadow[b as usize]);
        if self.policy.pins() && u64::from(self.table.router.load(idx)) != after {
            let got = self.table.router.load(idx);
            self.out
                .mismatch(|| format!("t={now_s}s load of {b}: router {got}, sim {after}"));
        }
        if late && !self.policy.keyless() {
            let mean = self.active_total() as f64 * w as f64 / self.table.weight.max(1) as f64;
            self.out.placed.add(after as f64 / mean);
            let excess = after as f64 - (1.0 + f64::from(self.p.eps_milli) / 1000.0) * mean;
            self.out.placed_excess = self.out.placed_excess.max(excess);
            // The failed backend is the only one that leaves the table.
            let stale = self
                .failed
                .map_or(0, |f| u64::from(self.shadow[f as usize]));
            let in_table = self.shadow_total - stale;
            let mean = in_table as f64 * w as f64 / self.table.weight.max(1) as f64;
            self.out.placed_table.add(after as f64 / mean);
        }
    }

    fn arrive(&mut self, sid: u32, t: u64) {
        debug_assert_eq!(sid as usize, self.sess.len());
        let now_s = (t / 1000) as u32;
        self.sess.push(Sess {
            backend: NONE,
            last_s: now_s,
            active: false,
            live: true,
            returned: !self.policy.keyless(),
            untracked: 0,
        });
        self.live += 1;
        self.out.peak_live = self.out.peak_live.max(self.live);
        if self.policy.keyless() {
            self.arrive_keyless(sid, t, now_s);
            return;
        }
        let k = key(sid);
        let a = self.active_total();
        let router = &self.table.router;
        let start = Instant::now();
        let d = if self.policy.pins() {
            router.select(k, t)
        } else {
            router.select_unpinned(k.ring_point(), false)
        };
        let ns = start.elapsed().as_nanos() as u64;
        self.out.place_ns.add(ns);
        let Ok(d) = d else {
            self.out
                .mismatch(|| format!("session {sid} refused: {d:?}"));
            return;
        };
        if self.policy.pins() && d.reason != Reason::New {
            self.out
                .mismatch(|| format!("session {sid} arrived: {d:?}"));
        }
        self.out.placements += 1;
        self.placed(sid, d.backend, a, now_s, now_s >= self.p.warmup_s);
    }

    fn request(&mut self, sid: u32, t: u64) {
        if self.policy.keyless() {
            self.request_keyless(sid, t);
            return;
        }
        let now_s = (t / 1000) as u32;
        let k = key(sid);
        let a = self.active_total();
        let d = if self.policy.pins() {
            let start = Instant::now();
            let d = self.table.router.select(k, t);
            self.out.hit_ns.add(start.elapsed().as_nanos() as u64);
            d
        } else {
            self.table.router.select_unpinned(k.ring_point(), false)
        };
        let Ok(d) = d else {
            self.out
                .mismatch(|| format!("session {sid} refused: {d:?}"));
            return;
        };
        if self.policy.pins() && d.reason == Reason::New {
            self.out
                .unexpected_move(|| format!("t={now_s}s session {sid} lost its pin: {d:?}"));
        }
        let was = self.sess[sid as usize].backend;
        if self.table.ids[d.backend] == was {
            self.touch(sid, now_s);
            return;
        }
        self.moved(sid, was, d, a, now_s);
    }

    /// A request of `sid` went to another backend than its last one.
    fn moved(&mut self, sid: u32, was: u32, d: Decision, a: u64, now_s: u32) {
        let failover = d.reason == Reason::Failover
            && Some(was) == self.failed
            && d.previous.map(|p| p.0) == self.failed;
        if !failover {
            let to = self.table.router.name(d.backend).to_string();
            self.out
                .unexpected_move(|| format!("t={now_s}s session {sid} {was} → {to}: {d:?}"));
            if self.added.is_some() {
                self.out.scale_up.moved += 1;
            }
            self.set_backend(sid, self.table.ids[d.backend]);
            self.touch(sid, now_s);
            return;
        }
        self.out.failure.moved += 1;
        self.out.failure.from_failed += 1;
        self.out.replacements += 1;
        self.placed(sid, d.backend, a, now_s, now_s >= self.p.warmup_s);
    }

    fn release(&mut self, sid: u32, t: u64) {
        let s = &mut self.sess[sid as usize];
        if s.untracked > 0 {
            s.untracked -= 1;
            return;
        }
        if self.policy.pins() && !self.overlay.release(key(sid), t) {
            self.out
                .mismatch(|| format!("release of session {sid}: not pinned"));
        }
        self.touch(sid, (t / 1000) as u32);
    }

    fn depart(&mut self, sid: u32) {
        let s = self.sess[sid as usize];
        if self.policy.pins() {
            let pinned = self.overlay.remove(key(sid)).map(|b| b.0);
            if pinned != s.returned.then_some(s.backend) {
                self.out
                    .mismatch(|| format!("session {sid} left {pinned:?}, sim {}", s.backend));
            }
        }
        if s.active {
            self.shadow[s.backend as usize] -= 1;
            self.shadow_total -= 1;
        }
        self.sess[sid as usize].live = false;
        self.sess[sid as usize].active = false;
        self.live -= 1;
    }

    /// The start of second `s`: sweep, retire sessions whose window ended, check the router's
    /// loads against the simulator's, rebalance (d), sample.
    fn tick(&mut self, s: u32, trace: &Trace) {
        if self.policy.pins() {
            self.overlay.sweep(u64::from(s) * 1000);
        }
        for sid in std::mem::take(&mut self.expiry[s as usize]) {
            let x = self.sess[sid as usize];
            let tracked = trace.in_flight(sid) - u16::from(x.untracked);
            if x.live && x.active && x.last_s + self.p.window_s <= s && tracked == 0 {
                self.sess[sid as usize].active = false;
                self.shadow[x.backend as usize] -= 1;
                self.shadow_total -= 1;
            }
        }
        if self.policy.pins() {
            self.check_loads(s);
        }
        if self.policy == crate::policy::Policy::Rebalanced
            && s > 0
            && s.is_multiple_of(self.p.rebalance_every_s)
        {
            self.rebalance(s, trace);
        }
        if self.policy.keyless() {
            self.overlay.roll_pending(u64::from(s) * 1000);
        }
        self.sample(s);
    }

    fn check_loads(&mut self, s: u32) {
        for (id, &mine) in self.shadow.iter().enumerate() {
            let theirs = self.overlay.active(berth_routing::BackendId(id as u32));
            if theirs != mine {
                let what = || format!("t={s}s backend id {id}: router {theirs}, sim {mine}");
                self.out.mismatch(what);
            }
        }
        if self.overlay.loads().total() != self.shadow_total {
            let (t, m) = (self.overlay.loads().total(), self.shadow_total);
            self.out
                .mismatch(|| format!("t={s}s total active: router {t}, sim {m}"));
        }
    }

    fn rebalance(&mut self, s: u32, trace: &Trace) {
        let budget = self.p.budget_per_s * self.p.rebalance_every_s as usize;
        let idle_ms = u64::from(self.p.idle_for_s) * 1000;
        let start = Instant::now();
        let moves = self
            .table
            .router
            .rebalance(idle_ms, u64::from(s) * 1000, budget);
        let took = start.elapsed();
        let r = &mut self.out.rebalancing;
        r.calls += 1;
        r.total_time += took;
        r.max_time = r.max_time.max(took);
        for m in moves {
            let sid = session_of(m.key);
            let x = self.sess[sid as usize];
            if x.backend != m.from.0 || !x.live {
                self.out
                    .mismatch(|| format!("t={s}s rebalanced {sid} from {:?}", m.from));
            }
            let busy = trace.in_flight(sid) > 0 || x.last_s + self.p.idle_for_s > s;
            let r = &mut self.out.rebalancing;
            r.moved += 1;
            r.moved_active += u64::from(x.active);
            r.moved_busy += u64::from(busy);
            self.set_backend(sid, self.table.ids[m.to]);
        }
    }

    fn sample(&mut self, s: u32) {
        self.out.peak_active = self.out.peak_active.max(self.shadow_total);
        if s < self.p.warmup_s {
            return;
        }
        let r = &self.table.router;
        let loads = (0..r.len()).map(|i| {
            let load = if self.policy.pins() {
                r.load(i)
            } else {
                self.shadow[self.table.ids[i] as usize]
            };
            (u64::from(load), u64::from(r.weight(i)))
        });
        if let Some(x) = max_over_mean(loads) {
            self.out.over_time.add(x);
        }
        if self.policy.keyless() {
            let signal = (0..r.len()).map(|i| (r.keyless_load(i), u64::from(r.weight(i))));
            if let Some(x) = max_over_mean(signal) {
                self.out.over_time_signal.add(x);
            }
        }
        if self.live > 0 {
            self.out
                .active_share
                .add(self.shadow_total as f64 / self.live as f64);
        }
        self.out
            .mean_active_per_backend
            .add(self.shadow_total as f64 / r.len() as f64);
    }

    fn rebuild(&mut self) {
        self.table = Table::new(
            self.policy,
            self.p.eps_milli,
            &self.specs,
            &self.overlay,
            &self.names,
        );
    }

    /// Backend 0 fails: it leaves the table.
    fn fail(&mut self) {
        let gone = self.specs.remove(0);
        let id = self.names.intern(&gone.name).0;
        self.failed = Some(id);
        self.rebuild();
        let on_failed = self
            .sess
            .iter()
            .filter(|s| s.live && s.backend == id)
            .count() as u64;
        let pinned = self
            .sess
            .iter()
            .filter(|s| s.live && s.returned && s.backend == id)
            .count() as u64;
        if self.policy.pins() && self.overlay.count(berth_routing::BackendId(id)) != pinned {
            self.out
                .mismatch(|| format!("pins on the failed backend ≠ {pinned}"));
        }
        self.out.failure = EventMoves {
            live: self.live,
            on_failed,
            ..EventMoves::default()
        };
        if !self.policy.pins() {
            self.out.failure = self.follow_ring(self.out.failure);
        }
    }

    /// A new backend joins.
    fn scale_up(&mut self) {
        let name = backend_name(self.p.backends);
        self.specs.push(BackendSpec::new(&name, 1));
        self.added = Some(self.names.intern(&name).0);
        self.rebuild();
        self.out.scale_up = EventMoves {
            live: self.live,
            ..EventMoves::default()
        };
        if !self.policy.pins() {
            self.out.scale_up = self.follow_ring(self.out.scale_up);
        }
    }

    /// (a): every live session goes to its ring primary in the new table.
    fn follow_ring(&mut self, mut ev: EventMoves) -> EventMoves {
        for sid in 0..self.sess.len() as u32 {
            let s = self.sess[sid as usize];
            if !s.live {
                continue;
            }
            let Ok(d) = self
                .table
                .router
                .select_unpinned(key(sid).ring_point(), false)
            else {
                continue;
            };
            let to = self.table.ids[d.backend];
            if to != s.backend {
                ev.moved += 1;
                ev.from_failed += u64::from(Some(s.backend) == self.failed);
                self.set_backend(sid, to);
            }
        }
        ev
    }
}
