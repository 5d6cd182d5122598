//! The shared session registry's families (`registry: {type: redis}`): round trips, errors
//! and latency, local-cache hits, degraded decisions, write-backs and whether Redis answers.
//! Created with the first upstream that uses Redis (a Berth with the memory registry exports
//! none of them); every series of an upstream is resolved up front.
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Round-trip kinds (`berth_registry_round_trips_total{op}`).
pub const OPS: [&str; 8] = [
    "first_pin",
    "write",
    "refresh",
    "migrate",
    "publish",
    "ping",
    "sync",
    "lookup",
];
/// Indices of [`OPS`], the round-trip kind every Redis call is counted under.
pub mod op {
    pub const FIRST_PIN: usize = 0;
    pub const WRITE: usize = 1;
    pub const REFRESH: usize = 2;
    pub const MIGRATE: usize = 3;
    pub const PUBLISH: usize = 4;
    pub const PING: usize = 5;
    pub const SYNC: usize = 6;
    pub const LOOKUP: usize = 7;
}
/// Error kinds (`berth_registry_errors_total{why}`).
pub const ERRORS: [&str; 2] = ["timeout", "error"];
/// Write-back outcomes (`berth_registry_writebacks_total{result}`).
pub const WRITEBACKS: [&str; 3] = ["written", "conflict", "dropped"];

/// Upper bounds of `berth_registry_round_trip_seconds`: 100 µs to 1 s.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

#[derive(Clone)]
pub struct RegistryFamilies {
    up: IntGaugeVec,
    round_trips: IntCounterVec,
    errors: IntCounterVec,
    latency: HistogramVec,
    cache_hits: IntCounterVec,
    degraded: IntCounterVec,
    writebacks: IntCounterVec,
}

/// The handles of one upstream's shared registry.
#[derive(Clone)]
pub struct RegistryMetrics {
    /// 1 while Redis answers.
    pub up: IntGauge,
    /// By index of [`OPS`].
    pub round_trips: [IntCounter; 8],
    /// By index of [`ERRORS`].
    pub errors: [IntCounter; 2],
    pub latency: Histogram,
    pub cache_hits: IntCounter,
    pub degraded: IntCounter,
    /// By index of [`WRITEBACKS`].
    pub writebacks: [IntCounter; 3],
}

impl RegistryFamilies {
    pub(super) fn register(r: &Registry) -> prometheus::Result<RegistryFamilies> {
        let up = IntGaugeVec::new(
            Opts::new(
                "berth_registry_up",
                "1 while the upstream's shared session registry (Redis) answers, 0 while requests are routed from the local cache alone.",
            ),
            &["upstream"],
        )?;
        let round_trips = IntCounterVec::new(
            Opts::new(
                "berth_registry_round_trips_total",
                "Round trips to the shared session registry, by operation: first_pin, write (a batch of re-pins and set updates), refresh (a batch of TTL renewals), migrate, publish, ping, sync (a read of the stored admin state), lookup (the admin API's session lookup).",
            ),
            &["upstream", "op"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "berth_registry_errors_total",
                "Shared session registry calls that failed: timeout (no answer within timeouts.command), error (refused, connection lost).",
            ),
            &["upstream", "why"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "berth_registry_round_trip_seconds",
                "Time of one round trip to the shared session registry (answered ones).",
            )
            .buckets(BUCKETS.to_vec()),
            &["upstream"],
        )?;
        let cache_hits = IntCounterVec::new(
            Opts::new(
                "berth_registry_cache_hits_total",
                "Requests of a session whose pin was in the local cache (no round trip to the shared registry).",
            ),
            &["upstream"],
        )?;
        let degraded = IntCounterVec::new(
            Opts::new(
                "berth_registry_degraded_total",
                "New sessions placed from the local cache and the ring alone because the shared registry did not answer (reason degraded); their pins are written back when it does.",
            ),
            &["upstream"],
        )?;
        let writebacks = IntCounterVec::new(
            Opts::new(
                "berth_registry_writebacks_total",
                "Pins made while the shared registry was unreachable, by what became of them: written (NX), conflict (another gateway had pinned the session: its pin stays), dropped (over writeback_max).",
            ),
            &["upstream", "result"],
        )?;
        r.register(Box::new(up.clone()))?;
        r.register(Box::new(round_trips.clone()))?;
        r.register(Box::new(errors.clone()))?;
        r.register(Box::new(latency.clone()))?;
        r.register(Box::new(cache_hits.clone()))?;
        r.register(Box::new(degraded.clone()))?;
        r.register(Box::new(writebacks.clone()))?;
        Ok(RegistryFamilies {
            up,
            round_trips,
            errors,
            latency,
            cache_hits,
            degraded,
            writebacks,
        })
    }

    /// Resolve (and so create at 0) every series of one upstream.
    pub fn upstream(&self, upstream: &str) -> RegistryMetrics {
        RegistryMetrics {
            up: self.up.with_label_values(&[upstream]),
            round_trips: OPS.map(|o| self.round_trips.with_label_values(&[upstream, o])),
            errors: ERRORS.map(|w| self.errors.with_label_values(&[upstream, w])),
            latency: self.latency.with_label_values(&[upstream]),
            cache_hits: self.cache_hits.with_label_values(&[upstream]),
            degraded: self.degraded.with_label_values(&[upstream]),
            writebacks: WRITEBACKS.map(|w| self.writebacks.with_label_values(&[upstream, w])),
        }
    }
}
