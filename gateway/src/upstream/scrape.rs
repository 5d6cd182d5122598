//! What `/metrics` reads from the upstreams when it is scraped: sessions and active sessions
//! per backend, each overlay's capacity, sessions left on draining backends, and the overlay's
//! own counters (pins created/expired/evicted, registry operations). A
//! [`prometheus::core::Collector`]: the values are read at scrape time, so nothing is kept in
//! between and nothing on the request path counts them twice.
use super::Upstream;
use berth_routing::OverlayStats;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use std::sync::Arc;

/// The scrape-time families, freshly made for each scrape (and once for their descriptions).
struct Families {
    sessions: IntGaugeVec,
    sessions_active: IntGaugeVec,
    table_capacity: IntGaugeVec,
    drain_remaining: IntGaugeVec,
    pins: IntCounterVec,
    registry_ops: IntCounterVec,
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric name and labels")
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("static metric name and labels")
}

impl Families {
    fn new() -> Families {
        Families {
            sessions: gauge(
                "berth_sessions",
                "Sessions pinned in the overlay, per backend.",
                &["upstream", "backend"],
            ),
            sessions_active: gauge(
                "berth_sessions_active",
                "Active sessions per backend: a request in flight, or used within the upstream's sessions.active_window. What placement, caps and autoscaling count.",
                &["upstream", "backend"],
            ),
            table_capacity: gauge(
                "berth_session_table_capacity",
                "Most sessions the upstream's overlay holds (sessions.max, rounded up to whole shards); beyond it the least recently used pins are evicted.",
                &["upstream"],
            ),
            drain_remaining: gauge(
                "berth_drain_remaining_sessions",
                "Sessions still pinned to a draining or drained backend (0 for active backends).",
                &["upstream", "backend"],
            ),
            pins: counter(
                "berth_pins_total",
                "Overlay pins by event: created, expired (idle TTL), evicted (table full).",
                &["upstream", "event"],
            ),
            registry_ops: counter(
                "berth_registry_operations_total",
                "Session registry operations: get (lookups), pin (writes), remove. The memory registry is the in-process overlay.",
                &["upstream", "registry", "op"],
            ),
        }
    }

    fn collectors(&self) -> [&dyn Collector; 6] {
        [
            &self.sessions,
            &self.sessions_active,
            &self.table_capacity,
            &self.drain_remaining,
            &self.pins,
            &self.registry_ops,
        ]
    }

    fn fill(&self, up: &Upstream) {
        let name = &*up.name;
        let cap = i64::try_from(up.overlay.capacity()).unwrap_or(i64::MAX);
        self.table_capacity.with_label_values(&[name]).set(cap);
        for b in up.views() {
            let left = if b.state == "active" { 0 } else { b.sessions };
            self.drain_remaining
                .with_label_values(&[name, &b.id])
                .set(i64::try_from(left).unwrap_or(i64::MAX));
        }
        let set = up.current.load();
        for idx in 0..set.router.len() {
            let labels = [name, set.router.name(idx)];
            let n = up.overlay.count(set.router.id(idx));
            self.sessions
                .with_label_values(&labels)
                .set(i64::try_from(n).unwrap_or(i64::MAX));
            let active = set.router.load(idx);
            self.sessions_active
                .with_label_values(&labels)
                .set(i64::from(active));
        }
        let OverlayStats {
            created,
            expired,
            evicted,
            gets,
            pins,
            removes,
        } = up.overlay.stats();
        for (event, n) in [
            ("created", created),
            ("expired", expired),
            ("evicted", evicted),
        ] {
            self.pins.with_label_values(&[name, event]).inc_by(n);
        }
        for (op, n) in [("get", gets), ("pin", pins), ("remove", removes)] {
            self.registry_ops
                .with_label_values(&[name, "memory", op])
                .inc_by(n);
        }
    }
}

/// The scrape-time families of every upstream.
pub struct SessionMetrics {
    upstreams: Vec<Arc<Upstream>>,
    descs: Vec<Desc>,
}

impl SessionMetrics {
    pub fn new(upstreams: Vec<Arc<Upstream>>) -> SessionMetrics {
        let descs = Families::new()
            .collectors()
            .iter()
            .flat_map(|c| c.desc().into_iter().cloned())
            .collect();
        SessionMetrics { upstreams, descs }
    }
}

impl Collector for SessionMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let f = Families::new();
        for up in &self.upstreams {
            f.fill(up);
        }
        f.collectors().iter().flat_map(|c| c.collect()).collect()
    }
}
