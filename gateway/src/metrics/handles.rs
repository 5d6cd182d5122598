//! Pre-resolved metric handles: what the request path touches (no label hashing, no lock).
use berth_plugins::Invalid;
use berth_routing::Reason;
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge};

/// What a request's affinity came to (`berth_affinity_total{outcome}`); the rules are
/// `Attempt::outcome` in `policy`.
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

/// Why an active health check failed (`berth_health_check_failures_total{reason}`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CheckFailure {
    /// No connection (refused, unreachable).
    Connect,
    /// No answer within the check's `timeout`.
    Timeout,
    /// The TLS handshake failed: certificate not trusted or not for the name, or no TLS.
    Tls,
    /// An HTTP check got another status than `expect_status`.
    Status,
    /// Anything else (a broken response, ...).
    Other,
}

impl CheckFailure {
    pub const ALL: [CheckFailure; 5] = [
        CheckFailure::Connect,
        CheckFailure::Timeout,
        CheckFailure::Tls,
        CheckFailure::Status,
        CheckFailure::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CheckFailure::Connect => "connect",
            CheckFailure::Timeout => "timeout",
            CheckFailure::Tls => "tls",
            CheckFailure::Status => "status",
            CheckFailure::Other => "other",
        }
    }
}

/// Reasons of `berth_http2_errors_total`, by the GOAWAY error code they stand for (RFC 9113
/// §7): PROTOCOL_ERROR (1), FLOW_CONTROL_ERROR (3), FRAME_SIZE_ERROR (6), COMPRESSION_ERROR
/// (9), ENHANCE_YOUR_CALM (11, floods), any other code; and `control_flood`: connections cut
/// by Berth for a flood of SETTINGS or PING frames (`client_deadlines::h2::ControlBudget`).
pub const HTTP2_ERRORS: [&str; 7] = [
    "protocol_error",
    "flow_control_error",
    "frame_size_error",
    "compression_error",
    "enhance_your_calm",
    "other",
    "control_flood",
];

/// `berth_http2_errors_total` by reason: HTTP/2 connections Berth's server closed for a
/// client's error (a GOAWAY with an error code).
#[derive(Debug)]
pub struct Http2Errors(pub(super) [IntCounter; 7]);

impl Http2Errors {
    /// Count a GOAWAY with error `code` (not 0: NO_ERROR is a clean close).
    pub fn count(&self, code: u32) {
        let i = match code {
            1 => 0,
            3 => 1,
            6 => 2,
            9 => 3,
            11 => 4,
            _ => 5,
        };
        self.0[i].inc();
    }

    /// Count a connection cut for a flood of control frames.
    pub fn count_control_flood(&self) {
        self.0[6].inc();
    }

    /// Connections cut for a flood of control frames so far.
    #[cfg(test)]
    pub fn control_floods(&self) -> u64 {
        self.0[6].get()
    }
}

/// Handles for one backend.
pub struct BackendMetrics {
    /// `[reason][class]`.
    pub(super) requests: Vec<[IntCounter; 6]>,
    pub connect_failures: IntCounter,
    /// 1 while the backend serves (healthy and not drained), else 0.
    pub up: IntGauge,
    /// Failover decisions away from this backend.
    pub failovers: IntCounter,
    /// Upstream connections used: `[new, reused]`.
    pub(super) connections: [IntCounter; 2],
    /// Its WebSockets: open now, opened so far.
    pub websockets: super::websocket::BackendSockets,
}

/// Handles for one upstream.
pub struct UpstreamMetrics {
    /// `[plugin][why]`.
    pub(super) invalid: Vec<[IntCounter; Invalid::ALL.len()]>,
    /// `[plugin]`: calls that panicked.
    pub(super) panics: Vec<IntCounter>,
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
    pub(super) health_transitions: IntCounterVec,
    pub(super) health_failures: IntCounterVec,
    /// `[reason]`.
    pub(super) duration: Vec<Histogram>,
    /// `[reused, new]`.
    pub(super) queueing: [Histogram; 2],
    /// Sampled time of one session selection in the registry (lookup, and placement + pin on
    /// a miss).
    pub registry_latency: Histogram,
    /// `[outcome]`.
    pub(super) affinity: [IntCounter; 4],
    /// For failovers away from a backend no longer in the table (resolved on the spot).
    pub(super) failovers: IntCounterVec,
    /// WebSockets ended, and upgrade requests that did not become one.
    pub websockets: super::websocket::UpstreamSockets,
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

    /// Count a failed active health check of `backend` (resolved on the spot: at most one per
    /// backend and interval).
    pub fn health_check_failed(&self, upstream: &str, backend: &str, why: CheckFailure) {
        self.health_failures
            .with_label_values(&[upstream, backend, why.as_str()])
            .inc();
    }

    /// Observe a routed request's duration (from its request header to its last byte sent).
    pub fn duration(&self, reason: Reason, elapsed: std::time::Duration) {
        self.duration[reason.index()].observe(elapsed.as_secs_f64());
    }

    /// Observe the time from a request's header to the backend connection it is written on.
    pub fn queueing(&self, reused: bool, elapsed: std::time::Duration) {
        self.queueing[usize::from(!reused)].observe(elapsed.as_secs_f64());
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

    /// The counter of panics of plugin `plugin` (its index in the chain).
    pub fn panicked(&self, plugin: usize) -> &IntCounter {
        &self.panics[plugin]
    }

    /// The counter for plugin `plugin` rejecting a key for `why`.
    pub fn invalid(&self, plugin: usize, why: Invalid) -> &IntCounter {
        let i = Invalid::ALL.iter().position(|w| *w == why).unwrap_or(0);
        &self.invalid[plugin][i]
    }
}
