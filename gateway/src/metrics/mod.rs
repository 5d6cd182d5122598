//! Berth's metric families and the handles the request path counts with. Prefix `berth_`,
//! base units, labels from closed sets (upstream, backend id, reason, status class, plugin,
//! why) — never a session id.
//!
//! The request path only touches pre-resolved handles ([`BackendMetrics`],
//! [`UpstreamMetrics`]): no label hashing, no lock per request. Values that are read from the
//! gateway's state when `/metrics` is scraped (sessions per backend, pins, drains) come from a
//! [`prometheus::core::Collector`] the gateway registers with [`Metrics::register`]. This
//! module depends on no other module of the gateway.
pub mod discovery;
mod handles;
pub mod registry;
pub mod tls;
pub mod websocket;

pub use handles::{
    BackendMetrics, CheckFailure, Http2Errors, Outcome, UpstreamMetrics, HTTP2_ERRORS,
};
pub use websocket::{CloseWhy, UpgradeFailure};

use berth_plugins::Invalid;
use berth_routing::Reason;
use prometheus::core::Collector;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Response status classes used as the `class` label. `none` = no response was sent.
pub const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

/// Upper bounds of `berth_request_duration_seconds`, 0.5 ms to 60 s (about ×2.5 apart).
pub const DURATION_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Upper bounds of `berth_request_queueing_seconds`, 50 µs to 10 s.
pub const QUEUEING_BUCKETS: [f64; 17] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// Upper bounds of `berth_registry_operation_duration_seconds`, 50 ns to 1 ms.
pub const REGISTRY_BUCKETS: [f64; 10] = [
    5e-8, 1e-7, 2.5e-7, 5e-7, 1e-6, 2.5e-6, 5e-6, 1e-5, 1e-4, 1e-3,
];

/// One session selection in this many is timed for the registry latency histogram (a clock
/// read costs about as much as the selection it would time).
pub const REGISTRY_SAMPLE: u32 = 256;

/// The metric families.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    affinity_invalid: IntCounterVec,
    plugin_panics: IntCounterVec,
    unrouted: IntCounterVec,
    connect_failures: IntCounterVec,
    rebalanced: IntCounterVec,
    backend_up: IntGaugeVec,
    health_transitions: IntCounterVec,
    health_failures: IntCounterVec,
    migrated: IntCounterVec,
    retries: IntCounterVec,
    duration: HistogramVec,
    queueing: HistogramVec,
    registry_latency: HistogramVec,
    affinity: IntCounterVec,
    failovers: IntCounterVec,
    connections: IntCounterVec,
    /// Access-log lines dropped because the writer's queue was full.
    pub access_log_full: IntCounter,
    /// Access-log lines lost because writing them failed.
    pub access_log_write_error: IntCounter,
    /// Requests no route matched (answered 404).
    pub no_route: IntCounter,
    /// Admin API requests refused for a missing or wrong token.
    pub admin_denied: IntCounter,
    /// Requests refused by the client-side limits, by why (see [`Metrics::refused`]).
    refused: IntCounterVec,
    /// Pins taken over from the old process in an upgrade, by upstream.
    pub upgrade_received: IntCounterVec,
    /// Pins of the old process not taken over, by upstream and why.
    pub upgrade_dropped: IntCounterVec,
    /// HTTP/2 connections closed for a client's error, by reason.
    pub http2_errors: std::sync::Arc<Http2Errors>,
    /// The TLS families, registered with the first TLS listener ([`Metrics::tls`]).
    tls: std::sync::OnceLock<tls::TlsFamilies>,
    /// The DNS discovery families, registered with the first upstream that has `discovery:`
    /// ([`Metrics::discovery`]).
    discovery: std::sync::OnceLock<discovery::DiscoveryFamilies>,
    websockets: websocket::WebSocketFamilies,
    /// The shared registry's families, registered with the first Redis upstream.
    shared_registry: std::sync::OnceLock<registry::RegistryFamilies>,
}

/// Registers `c` (a new family with static, valid names) and returns it.
fn registered<C: Collector + Clone + 'static>(r: &Registry, c: prometheus::Result<C>) -> C {
    let c = c.expect("metric names and labels are static and valid");
    r.register(Box::new(c.clone()))
        .expect("each metric is registered once");
    c
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    registered(r, IntCounterVec::new(Opts::new(name, help), labels))
}

fn histogram_vec(r: &Registry, name: &str, help: &str, buckets: &[f64]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    registered(r, HistogramVec::new(opts, &["upstream", "reason"]))
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let r = &registry;
        let unrouted = counter_vec(
            r,
            "berth_requests_unrouted_total",
            "Requests answered by Berth itself: no route (404), no eligible backend (503, why=no_backend), every backend at its session cap (503, why=full), the backend at its connection limit past queue_timeout (503, why=busy).",
            &["upstream", "why"],
        );
        let backend_up = registered(
            r,
            IntGaugeVec::new(
                Opts::new(
                    "berth_backend_up",
                    "1 while a backend serves requests (healthy and not drained), else 0.",
                ),
                &["upstream", "backend"],
            ),
        );
        let admin_denied = registered(
            r,
            IntCounter::new(
                "berth_admin_denied_total",
                "Admin API requests refused for a missing or invalid bearer token.",
            ),
        );
        let duration = histogram_vec(
            r,
            "berth_request_duration_seconds",
            "Time from a routed request's header to the last byte of its response, by routing reason.",
            &DURATION_BUCKETS,
        );
        let queueing = registered(
            r,
            HistogramVec::new(
                HistogramOpts::new(
                    "berth_request_queueing_seconds",
                    "Time from a routed request's header to the backend connection it is written on (Berth's routing, the connection pool or a new connection, and waiting to be scheduled), by whether the connection was reused.",
                )
                .buckets(QUEUEING_BUCKETS.to_vec()),
                &["upstream", "connection"],
            ),
        );
        let registry_latency = registered(
            r,
            HistogramVec::new(
                HistogramOpts::new(
                    "berth_registry_operation_duration_seconds",
                    "Time of one session selection in the session registry (lookup; placement and pin on a miss), sampled: one selection in 256 is timed.",
                )
                .buckets(REGISTRY_BUCKETS.to_vec()),
                &["upstream", "registry"],
            ),
        );
        let access_log_dropped = counter_vec(
            r,
            "berth_access_log_dropped_total",
            "Access-log lines not written: queue full (the writer fell behind) or write error.",
            &["why"],
        );
        let http2_errors = counter_vec(
            r,
            "berth_http2_errors_total",
            "HTTP/2 client connections Berth closed for the client's error (a GOAWAY with an error code): protocol_error, flow_control_error, frame_size_error, compression_error, enhance_your_calm (a flood of resets or small frames), other; control_flood: cut by Berth for a flood of SETTINGS or PING frames (over a burst of 100, refilled at 10/s and by each response frame).",
            &["reason"],
        );
        let websockets = websocket::WebSocketFamilies::register(r)
            .expect("metric names and labels are static and valid, registered once");
        Metrics {
            websockets,
            http2_errors: std::sync::Arc::new(Http2Errors(
                HTTP2_ERRORS.map(|r| http2_errors.with_label_values(&[r])),
            )),
            access_log_full: access_log_dropped.with_label_values(&["queue_full"]),
            access_log_write_error: access_log_dropped.with_label_values(&["write_error"]),
            duration,
            queueing,
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
            connections: counter_vec(
                r,
                "berth_upstream_connections_total",
                "Upstream connections handed to requests: newly opened (reused=false) or from the keep-alive pool (reused=true).",
                &["upstream", "backend", "reused"],
            ),
            admin_denied,
            refused: counter_vec(
                r,
                "berth_requests_refused_total",
                "Requests refused by the client-side limits before routing: request target too long (414), too many or too large header fields (431), both Transfer-Encoding and Content-Length (400).",
                &["why"],
            ),
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
            health_failures: counter_vec(
                r,
                "berth_health_check_failures_total",
                "Active health checks that failed, by reason: connect, timeout, tls (handshake or certificate), status (unexpected HTTP status), other.",
                &["upstream", "backend", "reason"],
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
            plugin_panics: counter_vec(
                r,
                "berth_plugin_panics_total",
                "Affinity plugin calls that panicked (caught: the request went on as if the plugin had found no key).",
                &["upstream", "plugin"],
            ),
            connect_failures: counter_vec(
                r,
                "berth_upstream_connect_failures_total",
                "Failed connection attempts to a backend.",
                &["upstream", "backend"],
            ),
            registry,
            tls: std::sync::OnceLock::new(),
            discovery: std::sync::OnceLock::new(),
            shared_registry: std::sync::OnceLock::new(),
        }
    }

    /// The DNS discovery families, registered on first call (a Berth without `discovery:`
    /// exports none of them).
    pub fn discovery(&self) -> &discovery::DiscoveryFamilies {
        self.discovery.get_or_init(|| {
            discovery::DiscoveryFamilies::register(&self.registry)
                .expect("metric names and labels are static and valid, registered once")
        })
    }

    /// The TLS listeners' families, registered on first call (a Berth without a TLS listener
    /// exports none of them).
    pub fn tls(&self) -> &tls::TlsFamilies {
        self.tls.get_or_init(|| {
            tls::TlsFamilies::register(&self.registry)
                .expect("metric names and labels are static and valid, registered once")
        })
    }

    /// The shared registry's families, registered on first call (a Berth whose upstreams all
    /// use the memory registry exports none of them).
    pub fn shared_registry(&self) -> &registry::RegistryFamilies {
        self.shared_registry.get_or_init(|| {
            registry::RegistryFamilies::register(&self.registry)
                .expect("metric names and labels are static and valid, registered once")
        })
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
            websockets: self.websockets.backend(upstream, backend),
        }
    }

    /// Delete the series of a backend removed from `upstream` (admin API, reload, DNS
    /// discovery), so `/metrics` stops exporting it; a backend added again under the id
    /// starts new series (counters from 0, which Prometheus' `rate` reads as a reset).
    /// Handles still held by requests in flight on it count into series no longer exported.
    pub fn forget_backend(&self, upstream: &str, backend: &str) {
        // Absent series (never touched) are not an error worth reporting.
        for r in Reason::ALL {
            for c in CLASSES {
                let _ = self
                    .requests
                    .remove_label_values(&[upstream, backend, r.as_str(), c]);
            }
        }
        for family in [&self.connect_failures, &self.failovers] {
            let _ = family.remove_label_values(&[upstream, backend]);
        }
        let _ = self.backend_up.remove_label_values(&[upstream, backend]);
        for v in ["false", "true"] {
            let _ = self
                .connections
                .remove_label_values(&[upstream, backend, v]);
        }
        for to in ["up", "down"] {
            let _ = self
                .health_transitions
                .remove_label_values(&[upstream, backend, to]);
        }
        for why in CheckFailure::ALL {
            let _ = self
                .health_failures
                .remove_label_values(&[upstream, backend, why.as_str()]);
        }
        self.websockets.forget_backend(upstream, backend);
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
        let panics = plugins
            .iter()
            .map(|p| self.plugin_panics.with_label_values(&[upstream, p]))
            .collect();
        UpstreamMetrics {
            invalid,
            panics,
            no_backend: self.unrouted.with_label_values(&[upstream, "no_backend"]),
            full: self.unrouted.with_label_values(&[upstream, "full"]),
            busy: self.unrouted.with_label_values(&[upstream, "busy"]),
            migrated: self.migrated.with_label_values(&[upstream]),
            rebalanced: self.rebalanced.with_label_values(&[upstream]),
            retry_connect: self.retries.with_label_values(&[upstream, "connect"]),
            retry_idempotent: self.retries.with_label_values(&[upstream, "idempotent"]),
            health_transitions: self.health_transitions.clone(),
            health_failures: self.health_failures.clone(),
            duration: Reason::ALL
                .iter()
                .map(|r| self.duration.with_label_values(&[upstream, r.as_str()]))
                .collect(),
            queueing: ["reused", "new"].map(|c| self.queueing.with_label_values(&[upstream, c])),
            registry_latency: self
                .registry_latency
                .with_label_values(&[upstream, "memory"]),
            affinity: Outcome::ALL
                .map(|o| self.affinity.with_label_values(&[upstream, o.as_str()])),
            failovers: self.failovers.clone(),
            websockets: self.websockets.upstream(upstream),
        }
    }

    /// The counter of requests refused by the client-side limits for `why` (resolve once).
    pub fn refused(&self, why: &str) -> IntCounter {
        self.refused.with_label_values(&[why])
    }

    /// Adds families whose values are read when `/metrics` is scraped.
    pub fn register(&self, c: Box<dyn Collector>) -> prometheus::Result<()> {
        self.registry.register(c)
    }

    /// Prometheus text exposition of every family.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            log::warn!("metrics encoding failed: {e}");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
