//! Every Berth metric, in one place. Prefix `berth_`, base units, labels from closed sets
//! (upstream, backend id, reason, status class, plugin, why) — never a session id.
//!
//! The request path only touches pre-resolved handles ([`BackendMetrics`],
//! [`UpstreamMetrics`]): no label hashing, no lock per request.
use crate::upstreams::Gateway;
use berth_plugins::Invalid;
use berth_routing::Reason;
use parking_lot::Mutex;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Response status classes used as the `class` label. `none` = no response was sent.
pub const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

/// Upper bounds of `berth_request_duration_seconds`, 0.5 ms to 60 s (about ×2.5 apart).
pub const DURATION_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Upper bounds of `berth_registry_operation_duration_seconds`, 50 ns to 1 ms.
pub const REGISTRY_BUCKETS: [f64; 10] = [
    5e-8, 1e-7, 2.5e-7, 5e-7, 1e-6, 2.5e-6, 5e-6, 1e-5, 1e-4, 1e-3,
];

/// One session selection in this many is timed for the registry latency histogram (a clock
/// read costs about as much as the selection it would time).
pub const REGISTRY_SAMPLE: u32 = 256;

/// `berth_pins_total{event}` values: the first three of [`overlay_counters`].
const OVERLAY_EVENTS: [&str; 3] = ["created", "expired", "evicted"];
/// `berth_registry_operations_total{op}` values: the last three of [`overlay_counters`].
const REGISTRY_OPS: [&str; 3] = ["get", "pin", "remove"];

/// The overlay's counters read at scrape time, in one fixed order.
fn overlay_counters(s: &berth_routing::OverlayStats) -> [u64; 6] {
    [s.created, s.expired, s.evicted, s.gets, s.pins, s.removes]
}

/// What a request's affinity came to (`berth_affinity_total{outcome}`), see
/// [`crate::observe`] for the rules.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The session's pin held: it went to its backend.
    Hit,
    /// No live pin: a new session was placed.
    Miss,
    /// The session changed backend (failover, spill, migration).
    Reassigned,
    /// The key it presented was rejected (forged, expired, malformed ...); routed as new.
    InvalidToken,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Hit,
        Outcome::Miss,
        Outcome::Reassigned,
        Outcome::InvalidToken,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Reassigned => "reassigned",
            Outcome::InvalidToken => "invalid_token",
        }
    }
}

/// The metric families.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    affinity_invalid: IntCounterVec,
    unrouted: IntCounterVec,
    connect_failures: IntCounterVec,
    sessions: IntGaugeVec,
    sessions_active: IntGaugeVec,
    table_capacity: IntGaugeVec,
    rebalanced: IntCounterVec,
    pins: IntCounterVec,
    backend_up: IntGaugeVec,
    health_transitions: IntCounterVec,
    migrated: IntCounterVec,
    retries: IntCounterVec,
    duration: HistogramVec,
    registry_latency: HistogramVec,
    affinity: IntCounterVec,
    failovers: IntCounterVec,
    drain_remaining: IntGaugeVec,
    registry_ops: IntCounterVec,
    connections: IntCounterVec,
    /// Access-log lines dropped because the writer's queue was full.
    pub access_log_full: IntCounter,
    /// Access-log lines lost because writing them failed.
    pub access_log_write_error: IntCounter,
    /// Requests no route matched (answered 404).
    pub no_route: IntCounter,
    /// Admin API requests refused for a missing or wrong token.
    pub admin_denied: IntCounter,
    /// Requests refused by the client-side limits, by [`crate::limits::Refused`].
    pub refused: [IntCounter; crate::limits::Refused::ALL.len()],
    /// Pins taken over from the old process in an upgrade, by upstream.
    pub upgrade_received: IntCounterVec,
    /// Pins of the old process not taken over, by upstream and why.
    pub upgrade_dropped: IntCounterVec,
    /// Last overlay counters seen, per upstream, so scrapes add only the difference.
    last_pins: Mutex<Vec<(String, [u64; 6])>>,
}

/// Handles for one backend.
pub struct BackendMetrics {
    /// `[reason][class]`.
    requests: Vec<[IntCounter; 6]>,
    pub connect_failures: IntCounter,
    /// 1 while the backend serves (healthy and not drained), else 0.
    pub up: IntGauge,
    /// Failover decisions away from this backend.
    pub failovers: IntCounter,
    /// Upstream connections used: `[new, reused]`.
    connections: [IntCounter; 2],
}

/// Handles for one upstream.
pub struct UpstreamMetrics {
    /// `[plugin][why]`.
    invalid: Vec<[IntCounter; 5]>,
    pub no_backend: IntCounter,
    /// New sessions refused because every backend was at its cap (503).
    pub full: IntCounter,
    /// Requests refused because their backend stayed at `max_connections` (503).
    pub busy: IntCounter,
    pub migrated: IntCounter,
    /// Idle sessions moved by rebalancing.
    pub rebalanced: IntCounter,
    pub retry_connect: IntCounter,
    pub retry_idempotent: IntCounter,
    health_transitions: IntCounterVec,
    /// `[reason]`.
    duration: Vec<Histogram>,
    /// Sampled time of one session selection in the registry (lookup, and placement + pin on
    /// a miss).
    pub registry_latency: Histogram,
    /// `[outcome]`.
    affinity: [IntCounter; 4],
    /// For failovers away from a backend no longer in the table (resolved on the spot).
    failovers: IntCounterVec,
}

impl BackendMetrics {
    /// Count one finished request.
    pub fn request(&self, reason: Reason, status: Option<u16>) {
        let class = match status {
            Some(s @ 100..=599) => (s / 100 - 1) as usize,
            _ => 5,
        };
        self.requests[reason.index()][class].inc();
    }

    /// Count one upstream connection handed to a request.
    pub fn connected(&self, reused: bool) {
        self.connections[usize::from(reused)].inc();
    }
}

impl UpstreamMetrics {
    /// Count a health transition of `backend` (rare: resolved on the spot).
    pub fn health_transition(&self, upstream: &str, backend: &str, up: bool) {
        let to = if up { "up" } else { "down" };
        self.health_transitions
            .with_label_values(&[upstream, backend, to])
            .inc();
    }

    /// Observe a routed request's duration (from its request header to its last byte sent).
    pub fn duration(&self, reason: Reason, elapsed: std::time::Duration) {
        self.duration[reason.index()].observe(elapsed.as_secs_f64());
    }

    /// Count one affinity outcome.
    pub fn affinity(&self, outcome: Outcome) {
        self.affinity[outcome as usize].inc();
    }

    /// Count a failover away from `backend`, a backend that is no longer in the routing table
    /// (rare: resolved on the spot).
    pub fn failover_from(&self, upstream: &str, backend: &str) {
        self.failovers.with_label_values(&[upstream, backend]).inc();
    }

    /// The counter for plugin `plugin` rejecting a key for `why`.
    pub fn invalid(&self, plugin: usize, why: Invalid) -> &IntCounter {
        let i = Invalid::ALL.iter().position(|w| *w == why).unwrap_or(0);
        &self.invalid[plugin][i]
    }
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)
        .expect("metric names and labels are static and valid");
    r.register(Box::new(g.clone()))
        .expect("each metric is registered once");
    g
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .expect("metric names and labels are static and valid");
    r.register(Box::new(c.clone()))
        .expect("each metric is registered once");
    c
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let r = &registry;
        let sessions = IntGaugeVec::new(
            Opts::new(
                "berth_sessions",
                "Sessions pinned in the overlay, per backend.",
            ),
            &["upstream", "backend"],
        )
        .expect("static metric");
        r.register(Box::new(sessions.clone()))
            .expect("registered once");
        let sessions_active = IntGaugeVec::new(
            Opts::new(
                "berth_sessions_active",
                "Active sessions per backend: a request in flight, or used within the upstream's sessions.active_window. What placement, caps and autoscaling count.",
            ),
            &["upstream", "backend"],
        )
        .expect("static metric");
        r.register(Box::new(sessions_active.clone()))
            .expect("registered once");
        let table_capacity = IntGaugeVec::new(
            Opts::new(
                "berth_session_table_capacity",
                "Most sessions the upstream's overlay holds (sessions.max, rounded up to whole shards); beyond it the least recently used pins are evicted.",
            ),
            &["upstream"],
        )
        .expect("static metric");
        r.register(Box::new(table_capacity.clone()))
            .expect("registered once");
        let unrouted = counter_vec(
            r,
            "berth_requests_unrouted_total",
            "Requests answered by Berth itself: no route (404), no eligible backend (503, why=no_backend), every backend at its session cap (503, why=full), the backend at its connection limit past queue_timeout (503, why=busy).",
            &["upstream", "why"],
        );
        let backend_up = IntGaugeVec::new(
            Opts::new(
                "berth_backend_up",
                "1 while a backend serves requests (healthy and not drained), else 0.",
            ),
            &["upstream", "backend"],
        )
        .expect("static metric");
        r.register(Box::new(backend_up.clone()))
            .expect("registered once");
        let admin_denied = IntCounter::new(
            "berth_admin_denied_total",
            "Admin API requests refused for a missing or invalid bearer token.",
        )
        .expect("static metric");
        r.register(Box::new(admin_denied.clone()))
            .expect("registered once");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "berth_request_duration_seconds",
                "Time from a routed request's header to the last byte of its response, by routing reason.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["upstream", "reason"],
        )
        .expect("static metric");
        r.register(Box::new(duration.clone()))
            .expect("registered once");
        let registry_latency = HistogramVec::new(
            HistogramOpts::new(
                "berth_registry_operation_duration_seconds",
                "Time of one session selection in the session registry (lookup; placement and pin on a miss), sampled: one selection in 256 is timed.",
            )
            .buckets(REGISTRY_BUCKETS.to_vec()),
            &["upstream", "registry"],
        )
        .expect("static metric");
        r.register(Box::new(registry_latency.clone()))
            .expect("registered once");
        let access_log_dropped = counter_vec(
            r,
            "berth_access_log_dropped_total",
            "Access-log lines not written: queue full (the writer fell behind) or write error.",
            &["why"],
        );
        Metrics {
            access_log_full: access_log_dropped.with_label_values(&["queue_full"]),
            access_log_write_error: access_log_dropped.with_label_values(&["write_error"]),
            duration,
            registry_latency,
            affinity: counter_vec(
                r,
                "berth_affinity_total",
                "Affinity outcomes of routed requests: hit (pin held), miss (new session), reassigned (moved to another backend), invalid_token (key rejected, routed as new).",
                &["upstream", "outcome"],
            ),
            failovers: counter_vec(
                r,
                "berth_failovers_total",
                "Failover decisions, by the backend failed away from (pinned backend unusable, or a connect/idempotent retry on another backend).",
                &["upstream", "backend"],
            ),
            drain_remaining: gauge_vec(
                r,
                "berth_drain_remaining_sessions",
                "Sessions still pinned to a draining or drained backend (0 for active backends).",
                &["upstream", "backend"],
            ),
            registry_ops: counter_vec(
                r,
                "berth_registry_operations_total",
                "Session registry operations: get (lookups), pin (writes), remove. The memory registry is the in-process overlay.",
                &["upstream", "registry", "op"],
            ),
            connections: counter_vec(
                r,
                "berth_upstream_connections_total",
                "Upstream connections handed to requests: newly opened (reused=false) or from the keep-alive pool (reused=true).",
                &["upstream", "backend", "reused"],
            ),
            admin_denied,
            refused: {
                let v = counter_vec(
                    r,
                    "berth_requests_refused_total",
                    "Requests refused by the client-side limits before routing: request target too long (414), too many or too large header fields (431), both Transfer-Encoding and Content-Length (400).",
                    &["why"],
                );
                crate::limits::Refused::ALL.map(|w| v.with_label_values(&[w.as_str()]))
            },
            upgrade_received: counter_vec(
                r,
                "berth_upgrade_sessions_received_total",
                "Sessions (overlay pins) taken over from the previous process in an upgrade (berth -u).",
                &["upstream"],
            ),
            upgrade_dropped: counter_vec(
                r,
                "berth_upgrade_sessions_dropped_total",
                "Sessions of the previous process not taken over: backend_gone, upstream_gone or expired.",
                &["upstream", "why"],
            ),
            backend_up,
            health_transitions: counter_vec(
                r,
                "berth_health_transitions_total",
                "Backend health changes (active checks and passive marking), by new state.",
                &["upstream", "backend", "to"],
            ),
            migrated: counter_vec(
                r,
                "berth_sessions_migrated_total",
                "Sessions moved off a backend by an admin migration.",
                &["upstream"],
            ),
            rebalanced: counter_vec(
                r,
                "berth_sessions_rebalanced_total",
                "Idle sessions moved off backends above the load bound by rebalancing.",
                &["upstream"],
            ),
            retries: counter_vec(
                r,
                "berth_retries_total",
                "Requests retried on another backend: after a connect failure, or an idempotent request that failed before a response.",
                &["upstream", "why"],
            ),
            no_route: unrouted.with_label_values(&["", "no_route"]),
            unrouted,
            requests: counter_vec(
                r,
                "berth_requests_total",
                "Requests proxied, by upstream, backend, routing reason and response status class.",
                &["upstream", "backend", "reason", "class"],
            ),
            affinity_invalid: counter_vec(
                r,
                "berth_affinity_invalid_total",
                "Affinity keys rejected (forged, expired, malformed ...); the request was routed as new.",
                &["upstream", "plugin", "why"],
            ),
            connect_failures: counter_vec(
                r,
                "berth_upstream_connect_failures_total",
                "Failed connection attempts to a backend.",
                &["upstream", "backend"],
            ),
            pins: counter_vec(
                r,
                "berth_pins_total",
                "Overlay pins by event: created, expired (idle TTL), evicted (table full).",
                &["upstream", "event"],
            ),
            sessions,
            sessions_active,
            table_capacity,
            last_pins: Mutex::new(Vec::new()),
            registry,
        }
    }

    /// Resolve the handles of one backend.
    pub fn backend(&self, upstream: &str, backend: &str) -> BackendMetrics {
        let requests = Reason::ALL
            .iter()
            .map(|r| {
                CLASSES.map(|c| {
                    self.requests
                        .with_label_values(&[upstream, backend, r.as_str(), c])
                })
            })
            .collect();
        BackendMetrics {
            requests,
            connect_failures: self
                .connect_failures
                .with_label_values(&[upstream, backend]),
            up: self.backend_up.with_label_values(&[upstream, backend]),
            failovers: self.failovers.with_label_values(&[upstream, backend]),
            connections: ["false", "true"].map(|reused| {
                self.connections
                    .with_label_values(&[upstream, backend, reused])
            }),
        }
    }

    /// Resolve the handles of one upstream.
    pub fn upstream(&self, upstream: &str, plugins: &[&str]) -> UpstreamMetrics {
        let invalid = plugins
            .iter()
            .map(|p| {
                Invalid::ALL.map(|w| {
                    self.affinity_invalid
                        .with_label_values(&[upstream, p, w.as_str()])
                })
            })
            .collect();
        UpstreamMetrics {
            invalid,
            no_backend: self.unrouted.with_label_values(&[upstream, "no_backend"]),
            full: self.unrouted.with_label_values(&[upstream, "full"]),
            busy: self.unrouted.with_label_values(&[upstream, "busy"]),
            migrated: self.migrated.with_label_values(&[upstream]),
            rebalanced: self.rebalanced.with_label_values(&[upstream]),
            retry_connect: self.retries.with_label_values(&[upstream, "connect"]),
            retry_idempotent: self.retries.with_label_values(&[upstream, "idempotent"]),
            health_transitions: self.health_transitions.clone(),
            duration: Reason::ALL
                .iter()
                .map(|r| self.duration.with_label_values(&[upstream, r.as_str()]))
                .collect(),
            registry_latency: self
                .registry_latency
                .with_label_values(&[upstream, "memory"]),
            affinity: Outcome::ALL
                .map(|o| self.affinity.with_label_values(&[upstream, o.as_str()])),
            failovers: self.failovers.clone(),
        }
    }

    /// Prometheus text exposition, after refreshing the values read from routing state.
    pub fn render(&self, gw: &Gateway) -> Vec<u8> {
        self.refresh(gw);
        let mut out = Vec::with_capacity(16 * 1024);
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            log::warn!("metrics encoding failed: {e}");
        }
        out
    }

    fn refresh(&self, gw: &Gateway) {
        let mut last = self.last_pins.lock();
        // Rebuilt whole, so backends removed since the last scrape disappear.
        self.drain_remaining.reset();
        for up in &gw.upstreams {
            self.table_capacity
                .with_label_values(&[up.name.as_str()])
                .set(i64::try_from(up.overlay.capacity()).unwrap_or(i64::MAX));
            for b in up.views() {
                let left = if b.state == "active" { 0 } else { b.sessions };
                self.drain_remaining
                    .with_label_values(&[up.name.as_str(), &b.id])
                    .set(i64::try_from(left).unwrap_or(i64::MAX));
            }
            let table = up.table.load();
            for idx in 0..table.router.len() {
                let labels = [up.name.as_str(), table.router.name(idx)];
                let n = up.overlay.count(table.router.id(idx));
                self.sessions.with_label_values(&labels).set(n as i64);
                let active = table.router.load(idx);
                self.sessions_active
                    .with_label_values(&labels)
                    .set(i64::from(active));
            }
            let now = overlay_counters(&up.overlay.stats());
            let pos = match last.iter().position(|(n, _)| *n == up.name) {
                Some(p) => p,
                None => {
                    last.push((up.name.clone(), [0; 6]));
                    last.len() - 1
                }
            };
            let delta: Vec<u64> = (0..6)
                .map(|i| now[i].saturating_sub(last[pos].1[i]))
                .collect();
            for (event, d) in OVERLAY_EVENTS.iter().zip(&delta[..3]) {
                self.pins
                    .with_label_values(&[up.name.as_str(), event])
                    .inc_by(*d);
            }
            for (op, d) in REGISTRY_OPS.iter().zip(&delta[3..]) {
                self.registry_ops
                    .with_label_values(&[up.name.as_str(), "memory", op])
                    .inc_by(*d);
            }
            last[pos].1 = now;
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
