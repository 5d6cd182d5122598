//! One upstream, in parts. An [`Upstream`] is an affinity chain, a sticky overlay, the current
//! [`BackendSet`] (behind `ArcSwap`: swapped whole, never locked on the request path) and the
//! membership state behind it. Its files:
//! * `table.rs` — [`BackendSet`]: one immutable version of the backends, the router over them
//!   and each one's connection template ([`Backend`]);
//! * `request.rs` — the per-request path: decide, fail over, learn, end;
//! * `membership.rs` (+ `moves.rs`) — the backend list and its lifecycle: admin state,
//!   health, drains, migrations, rebalancing, reloads — every change under one mutex;
//! * `view.rs` — backends as the admin API and the metrics show them;
//! * `scrape.rs` — the values `/metrics` reads from the upstreams when scraped;
//! * `sockets.rs` — its open WebSockets, by backend;
//! * `clock.rs` — the routing core's `now`.
use crate::config::RegistryConf;
use crate::config::{UpstreamConf, UpstreamSettings};
use crate::metrics::{Metrics, UpstreamMetrics};
use crate::registry::redis::RedisRegistry;
use crate::registry::{Memory, SessionRegistry};
use arc_swap::ArcSwap;
use berth_plugins::Chain;
use berth_routing::{Interner, Overlay};
use parking_lot::Mutex;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

mod clock;
mod membership;
mod moves;
mod request;
mod scrape;
mod shared;
mod sockets;
mod table;
mod view;

pub use clock::Clock;
pub use membership::{AdminState, Member, Members, Migration, Refused};
pub use scrape::SessionMetrics;
pub use sockets::{Sockets, WsRequest};
pub use table::BackendSet;
pub use view::BackendView;

/// One upstream: its affinity chain, its sticky overlay, its current backends and the
/// membership state behind them.
pub struct Upstream {
    pub name: Arc<str>,
    pub chain: Chain,
    pub overlay: Arc<Overlay>,
    pub names: Interner,
    /// Where its pins live (`registry:`): the overlay alone, or Redis with the overlay as
    /// local cache.
    pub registry: Arc<dyn SessionRegistry>,
    /// The same registry when it is Redis (the request path checks this `Option` only).
    pub redis: Option<Arc<RedisRegistry>>,
    /// The backends requests are routed over now.
    pub current: ArcSwap<BackendSet>,
    pub settings: UpstreamSettings,
    pub metrics: UpstreamMetrics,
    members: Mutex<Members>,
    /// Sessions moved by a migration whose next request has not come yet (fast check).
    moved_pending: AtomicUsize,
    /// Per-backend connection limits, kept across table rebuilds.
    conn_limits: crate::conn_limit::ConnLimits,
    root_metrics: Arc<Metrics>,
    issues_sessions: bool,
    /// The CA certificates of `tls.ca_file`, parsed once (shared by every peer template).
    tls_ca: Option<Arc<pingora_core::protocols::tls::CaType>>,
    /// Its open WebSockets.
    pub sockets: Sockets,
}

impl Upstream {
    pub fn new(conf: UpstreamConf, metrics: &Arc<Metrics>) -> Upstream {
        let overlay = Arc::new(Overlay::new(conf.sessions));
        let plugin_names: Vec<&str> = conf.chain.plugins().iter().map(|p| p.name()).collect();
        let members = Members::new(&conf.backends);
        let tls_ca = table::ca_of(&conf.settings);
        let names = Interner::default();
        let redis = match conf.registry {
            RegistryConf::Memory => None,
            RegistryConf::Redis(r) => Some(Arc::new(RedisRegistry::new(
                &conf.name,
                r,
                overlay.clone(),
                names.clone(),
                metrics.shared_registry().upstream(&conf.name),
            ))),
        };
        let registry: Arc<dyn SessionRegistry> = match &redis {
            Some(r) => r.clone(),
            None => Arc::new(Memory::new(overlay.clone(), names.clone())),
        };
        let up = Upstream {
            registry,
            redis,
            metrics: metrics.upstream(&conf.name, &plugin_names),
            issues_sessions: conf.chain.issues_sessions(),
            settings: conf.settings,
            name: conf.name.into(),
            chain: conf.chain,
            overlay,
            names,
            current: ArcSwap::from_pointee(BackendSet::empty()),
            members: Mutex::new(Members::default()),
            moved_pending: AtomicUsize::new(0),
            conn_limits: Default::default(),
            root_metrics: metrics.clone(),
            tls_ca,
            sockets: Sockets::default(),
        };
        up.rebuild(&members);
        *up.members.lock() = members;
        up
    }
}

impl Upstream {
    /// An active health check of backend `id` failed for `why` (counted; the result itself
    /// goes to [`Upstream::health_result`]).
    pub fn health_check_failed(&self, id: &str, why: crate::metrics::CheckFailure) {
        log::debug!(
            "health check of {}/{id} failed: {}",
            self.name,
            why.as_str()
        );
        self.metrics.health_check_failed(&self.name, id, why);
    }

    /// The CA certificates of `tls.ca_file`, parsed once.
    pub fn tls_ca(&self) -> Option<&Arc<pingora_core::protocols::tls::CaType>> {
        self.tls_ca.as_ref()
    }
}
