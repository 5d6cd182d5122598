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
    Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Response status classes used as the `class` label. `none` = no response was sent.
pub const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

/// The metric families.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    affinity_invalid: IntCounterVec,
    unrouted: IntCounterVec,
    connect_failures: IntCounterVec,
    sessions: IntGaugeVec,
    pins: IntCounterVec,
    backend_up: IntGaugeVec,
    health_transitions: IntCounterVec,
    migrated: IntCounterVec,
    retries: IntCounterVec,
    /// Requests no route matched (answered 404).
    pub no_route: IntCounter,
    /// Admin API requests refused for a missing or wrong token.
    pub admin_denied: IntCounter,
    /// Pins taken over from the old process in an upgrade, by upstream.
    pub upgrade_received: IntCounterVec,
    /// Pins of the old process not taken over, by upstream and why.
    pub upgrade_dropped: IntCounterVec,
    /// Last overlay counters seen, per upstream, so scrapes add only the difference.
    last_pins: Mutex<Vec<(String, [u64; 3])>>,
}

/// Handles for one backend.
pub struct BackendMetrics {
    /// `[reason][class]`.
    requests: Vec<[IntCounter; 6]>,
    pub connect_failures: IntCounter,
    /// 1 while the backend serves (healthy and not drained), else 0.
    pub up: IntGauge,
}

/// Handles for one upstream.
pub struct UpstreamMetrics {
    /// `[plugin][why]`.
    invalid: Vec<[IntCounter; 5]>,
    pub no_backend: IntCounter,
    pub migrated: IntCounter,
    pub retry_connect: IntCounter,
    pub retry_idempotent: IntCounter,
    health_transitions: IntCounterVec,
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
}

impl UpstreamMetrics {
    /// Count a health transition of `backend` (rare: resolved on the spot).
    pub fn health_transition(&self, upstream: &str, backend: &str, up: bool) {
        let to = if up { "up" } else { "down" };
        self.health_transitions
            .with_label_values(&[upstream, backend, to])
            .inc();
    }

    /// The counter for plugin `plugin` rejecting a key for `why`.
    pub fn invalid(&self, plugin: usize, why: Invalid) -> &IntCounter {
        let i = Invalid::ALL.iter().position(|w| *w == why).unwrap_or(0);
        &self.invalid[plugin][i]
    }
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
        let unrouted = counter_vec(
            r,
            "berth_requests_unrouted_total",
            "Requests answered by Berth itself: no route (404) or no eligible backend (503).",
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
        Metrics {
            admin_denied,
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
            migrated: self.migrated.with_label_values(&[upstream]),
            retry_connect: self.retries.with_label_values(&[upstream, "connect"]),
            retry_idempotent: self.retries.with_label_values(&[upstream, "idempotent"]),
            health_transitions: self.health_transitions.clone(),
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
        for up in &gw.upstreams {
            let table = up.table.load();
            for idx in 0..table.router.len() {
                let n = up.overlay.count(table.router.id(idx));
                self.sessions
                    .with_label_values(&[up.name.as_str(), table.router.name(idx)])
                    .set(n as i64);
            }
            let s = up.overlay.stats();
            let now = [s.created, s.expired, s.evicted];
            let pos = match last.iter().position(|(n, _)| *n == up.name) {
                Some(p) => p,
                None => {
                    last.push((up.name.clone(), [0; 3]));
                    last.len() - 1
                }
            };
            for (i, event) in ["created", "expired", "evicted"].iter().enumerate() {
                let delta = now[i].saturating_sub(last[pos].1[i]);
                self.pins
                    .with_label_values(&[up.name.as_str(), event])
                    .inc_by(delta);
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
