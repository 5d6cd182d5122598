//! The synthetic trace: a deterministic, policy-independent sequence of timed events.
//!
//! * Sessions arrive as a Poisson process (`sessions` expected over `seconds`); the arrival is
//!   the session's first request.
//! * Each session lives a Pareto(`life_xm`, `life_alpha`) time, then departs (deferred until its
//!   requests in flight end). Sessions still alive at the end simply stay.
//! * Activity is heavy-tailed twice over: each session has a base gap, log-normal(`gap_median`,
//!   `gap_sigma`) — a few busy sessions, many lazy ones — and each gap between two of its requests
//!   is that base times a Pareto(1, `gap_alpha`) factor: bursts and long idle stretches.
//! * A request lasts an exponential time (mean `req_ms`): it is *in flight* until its release.
//! * At `fail_at` one backend fails (leaves the table); at `scale_at` a new backend joins.
//! * Every simulated second starts with a `Tick` (the sweeper's turn).
//!
//! Every draw is a hash of `(seed, session, counter)`, and events of the same millisecond are
//! ordered by `(kind, session)`, so the sequence depends on nothing but the configuration.
use crate::rng::{self, Stream};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// What the trace is made of.
#[derive(Debug, Clone)]
pub struct TraceConfig {
    pub seed: u64,
    /// Expected number of session arrivals over the whole trace.
    pub sessions: u64,
    /// Simulated seconds.
    pub seconds: u32,
    pub life_xm_s: f64,
    pub life_alpha: f64,
    pub gap_median_s: f64,
    pub gap_sigma: f64,
    pub gap_alpha: f64,
    pub req_ms: f64,
    /// Second at which one backend fails.
    pub fail_at: u32,
    /// Second at which a backend is added.
    pub scale_at: u32,
}

/// One event of the trace. Session ids are dense, in arrival order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Start of simulated second `s` (at `s·1000` ms), before any other event of that second.
    Tick(u32),
    /// A backend fails (right after its second's tick).
    Fail,
    /// A backend is added (right after its second's tick).
    ScaleUp,
    /// A request of the session ends.
    Release(u32),
    /// The session ends (no request of it is in flight).
    Depart(u32),
    /// A new session's first request.
    Arrive(u32),
    /// A later request of a session.
    Request(u32),
}

// Kinds in their same-millisecond order.
const FAIL: u8 = 0;
const SCALE: u8 = 1;
const RELEASE: u8 = 2;
const DEPART: u8 = 3;
const ARRIVE: u8 = 4;
const REQUEST: u8 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Pending {
    t_ms: u64,
    kind: u8,
    id: u32,
}

#[derive(Debug, Clone, Copy, Default)]
struct Session {
    depart_ms: u64,
    /// Requests so far (the counter of the gap draws).
    requests: u32,
    in_flight: u16,
    depart_pending: bool,
}

/// Totals of a trace, for the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TraceCounts {
    pub arrivals: u64,
    pub requests: u64,
    pub departures: u64,
    /// Hash of every event emitted, in order: equal for two runs iff they saw the same trace.
    pub checksum: u64,
}

/// Iterator over `(time in ms, event)`.
pub struct Trace {
    cfg: TraceConfig,
    end_ms: u64,
    /// Events of second `s` wait in `calendar[s]` until that second starts.
    calendar: Vec<Vec<Pending>>,
    /// Events of the current second, ordered.
    now: BinaryHeap<Reverse<Pending>>,
    /// Next second to start.
    next_sec: u32,
    arrivals: Stream,
    next_arrival_ms: f64,
    mean_gap_ms: f64,
    sessions: Vec<Session>,
    counts: TraceCounts,
}

impl Trace {
    pub fn new(cfg: TraceConfig) -> Self {
        let mut calendar = vec![Vec::new(); cfg.seconds as usize];
        for (at, kind) in [(cfg.fail_at, FAIL), (cfg.scale_at, SCALE)] {
            if let Some(bucket) = calendar.get_mut(at as usize) {
                bucket.push(Pending {
                    t_ms: u64::from(at) * 1000,
                    kind,
                    id: 0,
                });
            }
        }
        let mut arrivals = Stream::new(cfg.seed, 1);
        let mean_gap_ms = f64::from(cfg.seconds) * 1000.0 / cfg.sessions.max(1) as f64;
        let first = rng::exponential(arrivals.next_unit(), mean_gap_ms);
        Trace {
            end_ms: u64::from(cfg.seconds) * 1000,
            sessions: Vec::with_capacity(cfg.sessions as usize + cfg.sessions as usize / 50),
            cfg,
            calendar,
            now: BinaryHeap::new(),
            next_sec: 0,
            arrivals,
            next_arrival_ms: first,
            mean_gap_ms,
            counts: TraceCounts::default(),
        }
    }

    pub fn counts(&self) -> TraceCounts {
        self.counts
    }

    /// Requests of session `id` in flight now.
    pub fn in_flight(&self, id: u32) -> u16 {
        self.sessions[id as usize].in_flight
    }

    fn schedule(&mut self, p: Pending) {
        if p.t_ms >= self.end_ms {
            return;
        }
        let sec = (p.t_ms / 1000) as u32;
        if sec < self.next_sec {
            self.now.push(Reverse(p));
        } else {
            self.calendar[sec as usize].push(p);
        }
    }

    /// Session `id`'s base gap between requests, in ms.
    fn base_gap_ms(&self, id: u32) -> f64 {
        let (s, i) = (self.cfg.seed, u64::from(id));
        let (u1, u2) = (rng::unit(rng::draw(s, i, 1)), rng::unit(rng::draw(s, i, 2)));
        1000.0 * rng::lognormal(u1, u2, self.cfg.gap_median_s, self.cfg.gap_sigma)
    }

    /// A request of `id` starts at `t`: schedule its release and the session's next request.
    fn start_request(&mut self, id: u32, t: u64) {
        let (seed, i) = (self.cfg.seed, u64::from(id));
        let s = &mut self.sessions[id as usize];
        s.requests += 1;
        s.in_flight += 1;
        let (k, depart_ms) = (u64::from(s.requests), s.depart_ms);
        let dur = rng::exponential(rng::unit(rng::draw(seed, i, 3 + 2 * k)), self.cfg.req_ms);
        let u = rng::unit(rng::draw(seed, i, 4 + 2 * k));
        let gap = self.base_gap_ms(id) * rng::pareto(u, 1.0, self.cfg.gap_alpha);
        // At least 1 ms apart; a request never starts after its session's departure time.
        let release = t + (dur as u64).clamp(1, 60_000);
        self.schedule(Pending {
            t_ms: release,
            kind: RELEASE,
            id,
        });
        let next = t + (gap as u64).max(1);
        if next < depart_ms {
            self.schedule(Pending {
                t_ms: next,
                kind: REQUEST,
                id,
            });
        }
    }

    fn arrive(&mut self, t: u64) -> u32 {
        let id = u32::try_from(self.sessions.len()).expect("fewer than 2^32 sessions");
        let u = rng::unit(rng::draw(self.cfg.seed, u64::from(id), 0));
        let life_ms = 1000.0 * rng::pareto(u, self.cfg.life_xm_s, self.cfg.life_alpha);
        let depart_ms = t + (life_ms as u64).max(1);
        self.sessions.push(Session {
            depart_ms,
            ..Session::default()
        });
        self.schedule(Pending {
            t_ms: depart_ms,
            kind: DEPART,
            id,
        });
        self.start_request(id, t);
        id
    }

    /// Starts the next second: its tick, its arrivals, its scheduled events.
    fn start_second(&mut self) -> Option<u32> {
        let s = self.next_sec;
        if s >= self.cfg.seconds {
            return None;
        }
        self.next_sec += 1;
        let bucket = std::mem::take(&mut self.calendar[s as usize]);
        self.now.extend(bucket.into_iter().map(Reverse));
        let end = f64::from(s + 1) * 1000.0;
        while self.next_arrival_ms < end {
            self.now.push(Reverse(Pending {
                t_ms: self.next_arrival_ms as u64,
                kind: ARRIVE,
                id: u32::MAX, // the id is handed out when it happens
            }));
            self.next_arrival_ms += rng::exponential(self.arrivals.next_unit(), self.mean_gap_ms);
        }
        Some(s)
    }

    /// Applies the trace's own bookkeeping for `p`; `None` when it emits nothing (a departure
    /// deferred while requests are in flight).
    fn apply(&mut self, p: Pending) -> Option<Event> {
        let id = p.id;
        match p.kind {
            FAIL => Some(Event::Fail),
            SCALE => Some(Event::ScaleUp),
            ARRIVE => Some(Event::Arrive(self.arrive(p.t_ms))),
            REQUEST => {
                self.start_request(id, p.t_ms);
                Some(Event::Request(id))
            }
            RELEASE => {
                let s = &mut self.sessions[id as usize];
                s.in_flight -= 1;
                if s.in_flight == 0 && s.depart_pending {
                    s.depart_pending = false;
                    self.now.push(Reverse(Pending {
                        t_ms: p.t_ms,
                        kind: DEPART,
                        id,
                    }));
                }
                Some(Event::Release(id))
            }
            _ => {
                let s = &mut self.sessions[id as usize];
                if s.in_flight > 0 {
                    s.depart_pending = true;
                    return None;
                }
                Some(Event::Depart(id))
            }
        }
    }

    fn count(&mut self, t: u64, e: Event) {
        let (kind, id) = match e {
            Event::Tick(s) => (9, s),
            Event::Fail => (FAIL, 0),
            Event::ScaleUp => (SCALE, 0),
            Event::Release(i) => (RELEASE, i),
            Event::Depart(i) => {
                self.counts.departures += 1;
                (DEPART, i)
            }
            Event::Arrive(i) => {
                self.counts.arrivals += 1;
                (ARRIVE, i)
            }
            Event::Request(i) => {
                self.counts.requests += 1;
                (REQUEST, i)
            }
        };
        let word = t ^ (u64::from(kind) << 56) ^ (u64::from(id) << 20);
        self.counts.checksum = rng::mix64(self.counts.checksum ^ word);
    }
}

impl Iterator for Trace {
    type Item = (u64, Event);

    fn next(&mut self) -> Option<(u64, Event)> {
        loop {
            let head = self.now.peek().map(|r| r.0);
            let (t, e) = match head {
                Some(p) if p.t_ms < u64::from(self.next_sec) * 1000 => {
                    self.now.pop();
                    match self.apply(p) {
                        Some(e) => (p.t_ms, e),
                        None => continue,
                    }
                }
                _ => {
                    let s = self.start_second()?;
                    (u64::from(s) * 1000, Event::Tick(s))
                }
            };
            self.count(t, e);
            return Some((t, e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> TraceConfig {
        TraceConfig {
            seed: 9,
            sessions: 3_000,
            seconds: 120,
            life_xm_s: 10.0,
            life_alpha: 1.5,
            gap_median_s: 3.0,
            gap_sigma: 1.5,
            gap_alpha: 1.3,
            req_ms: 200.0,
            fail_at: 60,
            scale_at: 90,
        }
    }

    #[test]
    fn same_config_same_trace() {
        let a: Vec<_> = Trace::new(cfg()).collect();
        let b: Vec<_> = Trace::new(cfg()).collect();
        assert_eq!(a, b);
        let other = TraceConfig { seed: 10, ..cfg() };
        let mut t = Trace::new(other);
        t.by_ref().for_each(drop);
        let mut u = Trace::new(cfg());
        u.by_ref().for_each(drop);
        assert_ne!(t.counts().checksum, u.counts().checksum);
    }

    /// Time never goes back; every second has one tick before its other events; requests and
    /// departures only for arrived sessions; a departure only with nothing in flight, never
    /// followed by another event of that session; in-flight counts match starts and releases.
    #[test]
    fn events_are_ordered_and_consistent() {
        let mut trace = Trace::new(cfg());
        let (mut last_t, mut last_tick) = (0u64, None);
        let (mut in_flight, mut gone) = (Vec::<i32>::new(), Vec::<bool>::new());
        let (mut fails, mut scales) = (0, 0);
        while let Some((t, e)) = trace.next() {
            assert!(t >= last_t, "time went back at {e:?}");
            last_t = t;
            if let Event::Tick(s) = e {
                assert_eq!(t, u64::from(s) * 1000);
                assert_eq!(last_tick.map_or(0, |l| l + 1), s);
                last_tick = Some(s);
                continue;
            }
            assert_eq!(last_tick, Some((t / 1000) as u32), "{e:?} before its tick");
            match e {
                Event::Arrive(i) => {
                    assert_eq!(i as usize, in_flight.len(), "ids are dense");
                    in_flight.push(1);
                    gone.push(false);
                }
                Event::Request(i) => in_flight[i as usize] += 1,
                Event::Release(i) => in_flight[i as usize] -= 1,
                Event::Depart(i) => {
                    assert_eq!(in_flight[i as usize], 0);
                    gone[i as usize] = true;
                }
                Event::Fail => fails += 1,
                Event::ScaleUp => scales += 1,
                Event::Tick(_) => unreachable!(),
            }
            if let Event::Request(i) | Event::Release(i) = e {
                assert!(!gone[i as usize], "event after departure");
                assert!(in_flight[i as usize] >= 0);
                assert_eq!(i32::from(trace.in_flight(i)), in_flight[i as usize]);
            }
        }
        assert_eq!((fails, scales), (1, 1));
        assert_eq!(last_tick, Some(119));
        let c = trace.counts();
        // Poisson arrivals: 3,000 expected, within 4 standard deviations.
        assert!(
            (c.arrivals as f64 - 3000.0).abs() < 4.0 * 3000f64.sqrt(),
            "{c:?}"
        );
        assert!(c.requests > c.arrivals && c.departures > 0);
    }
}
