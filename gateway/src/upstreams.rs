//! Runtime state of the gateway: upstreams, their routing tables (behind `ArcSwap`, swapped
//! whole, never locked on the request path) and the route table.
use crate::config::{Config, Route, UpstreamConf, UpstreamSettings};
use crate::members::{Member, Members};
use crate::metrics::{BackendMetrics, Metrics, UpstreamMetrics};
use arc_swap::ArcSwap;
use berth_plugins::{Affinity, Chain, RequestView};
use berth_routing::{
    BackendId, BackendIdx, BackendSpec, Decision, Interner, Millis, Overlay, Reason, Refusal,
    Router, SessionKey,
};
use http::HeaderValue;
use parking_lot::Mutex;
use pingora_core::upstreams::peer::HttpPeer;
use std::sync::atomic::{AtomicU32, AtomicUsize};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Everything the proxy needs, shared by all requests.
pub struct Gateway {
    pub upstreams: Vec<Arc<Upstream>>,
    pub routes: Vec<Route>,
    pub clock: Clock,
    pub metrics: Arc<Metrics>,
    /// The access log, when configured (see [`crate::access_log`]).
    pub access_log: Option<crate::access_log::AccessLog>,
    /// Client-side limits (`limits:`).
    pub limits: crate::limits::ClientLimits,
}

impl Gateway {
    /// Build the runtime state from a validated config.
    pub fn new(config: Config, metrics: Arc<Metrics>) -> Gateway {
        let upstreams = config
            .upstreams
            .into_iter()
            .map(|u| Arc::new(Upstream::new(u, &metrics)))
            .collect();
        Gateway {
            upstreams,
            routes: config.routes,
            clock: Clock::new(),
            metrics,
            access_log: None,
            limits: config.limits,
        }
    }

    /// The upstream for a request: first route whose host and path prefix match.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<&Arc<Upstream>> {
        let host = host.map(strip_port);
        self.routes
            .iter()
            .find(|r| {
                path.starts_with(r.path_prefix.as_str())
                    && match (&r.host, host) {
                        (None, _) => true,
                        (Some(want), Some(h)) => want.eq_ignore_ascii_case(h),
                        (Some(_), None) => false,
                    }
            })
            .map(|r| &self.upstreams[r.upstream])
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return host
            .split(']')
            .next()
            .map_or(host, |h| &host[..h.len() + 1]);
    }
    host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    })
}

/// Milliseconds since the gateway started (or since the process it took over from started):
/// the `now` handed to the routing core.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    offset: Millis,
}

impl Clock {
    pub fn new() -> Self {
        Clock::continuing(0)
    }
    /// A clock that reads `from` now: an upgraded process continues its predecessor's clock,
    /// so handed-over times (drain deadlines, pin ages) keep their meaning.
    pub fn continuing(from: Millis) -> Self {
        Clock {
            start: Instant::now(),
            offset: from,
        }
    }
    pub fn now(&self) -> Millis {
        self.at(Instant::now())
    }
    /// `t` as a routing-core time (for a caller that also needs the `Instant`).
    pub fn at(&self, t: Instant) -> Millis {
        self.offset + t.saturating_duration_since(self.start).as_millis() as Millis
    }
}

/// True for one call in [`crate::metrics::REGISTRY_SAMPLE`] on this thread (no shared
/// counter: no cache line bouncing between worker threads).
fn sampled() -> bool {
    thread_local! {
        static N: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }
    N.with(|n| {
        let v = n.get().wrapping_add(1);
        n.set(v);
        v % crate::metrics::REGISTRY_SAMPLE == 0
    })
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// One upstream: its affinity chain, its sticky overlay, its current routing table and the
/// membership/lifecycle state behind it (see [`crate::members`]).
pub struct Upstream {
    pub name: String,
    pub chain: Chain,
    pub overlay: Arc<Overlay>,
    pub names: Interner,
    pub table: ArcSwap<Table>,
    pub settings: UpstreamSettings,
    pub metrics: UpstreamMetrics,
    pub(crate) members: Mutex<Members>,
    /// Sessions moved by a migration whose next request has not come yet (fast check).
    pub(crate) moved_pending: AtomicUsize,
    /// Per-backend connection limits, kept across table rebuilds.
    pub conn_limits: crate::conn_limit::ConnLimits,
    root_metrics: Arc<Metrics>,
    issues_sessions: bool,
}

/// One immutable version of an upstream's backends.
pub struct Table {
    pub router: Router,
    pub backends: Vec<BackendRt>,
}

/// Per-backend runtime data, by [`BackendIdx`].
pub struct BackendRt {
    /// Template cloned for every request to this backend.
    pub peer: HttpPeer,
    pub metrics: BackendMetrics,
    /// The backend id as a header value (`X-Berth-Backup`), built once.
    pub id_value: Option<HeaderValue>,
    /// Consecutive connect failures seen by requests (passive health).
    pub connect_failures: AtomicU32,
    /// Its `max_connections` limit, if any.
    pub conns: Option<Arc<crate::conn_limit::ConnLimit>>,
}

impl Upstream {
    fn new(conf: UpstreamConf, metrics: &Arc<Metrics>) -> Upstream {
        let overlay = Arc::new(Overlay::new(conf.sessions));
        let plugin_names: Vec<&str> = conf.chain.plugins().iter().map(|p| p.name()).collect();
        let members = Members::new(&conf.backends);
        let up = Upstream {
            metrics: metrics.upstream(&conf.name, &plugin_names),
            issues_sessions: conf.chain.issues_sessions(),
            settings: conf.settings,
            name: conf.name,
            chain: conf.chain,
            overlay,
            names: Interner::default(),
            table: ArcSwap::from_pointee(Table::empty()),
            members: Mutex::new(Members::default()),
            moved_pending: AtomicUsize::new(0),
            conn_limits: Default::default(),
            root_metrics: metrics.clone(),
        };
        let table = Table::new(&up, &members.list);
        up.apply_flags(&table, &members);
        up.table.store(Arc::new(table));
        *up.members.lock() = members;
        up
    }

    /// Run the affinity chain and pick a backend.
    pub fn decide(&self, table: &Table, req: &dyn RequestView, now: Millis) -> Routing {
        let found = self.chain.key(req);
        if let Some((plugin, why)) = found.invalid {
            self.metrics.invalid(plugin, why).inc();
        }
        let mut r = Routing {
            decided_by: found.decided_by,
            key_expires: found.key_expires(),
            invalid: found.invalid.is_some(),
            ..Routing::default()
        };
        let mut named = None;
        let timed = found.affinity.is_some() && sampled();
        let t0 = timed.then(Instant::now);
        let chosen = match found.affinity {
            Some(Affinity::Session(key)) => {
                r.point = key.ring_point();
                r.key = Some(key);
                table.router.select(key, now)
            }
            Some(Affinity::Backend { name, key, .. }) => {
                named = Some(name);
                r.point = key.ring_point();
                r.key = Some(key);
                table.router.select_named(name, key, now)
            }
            // No key. A session the chain will issue (cookie insert) is placed by load, evenly;
            // a request that starts no session goes by the ring at a random point.
            None if self.issues_sessions => {
                let bits: u64 = rand::random();
                r.point = bits as u32;
                table.router.select_keyless(bits, now)
            }
            None => {
                r.point = rand::random();
                table.router.select_unpinned(r.point, false)
            }
        };
        if let Some(t0) = t0 {
            self.metrics
                .registry_latency
                .observe(t0.elapsed().as_secs_f64());
        }
        match chosen {
            Ok(d) => {
                r.decision = Some(d);
                if let Some(key) = r.key {
                    // The selection counted this request in flight on the session.
                    r.acquired = self.settings.router.track_in_flight;
                    r.moved_from = self.take_moved(key);
                }
            }
            Err(why) => r.refused = Some(why),
        }
        if let Some(d) = r.decision.filter(|d| d.reason == Reason::Failover) {
            self.count_failover(table, &d, named);
        }
        r
    }

    /// A refused new session: counted; the `Retry-After` seconds and body of its 503.
    pub fn refusal(&self, why: Refusal) -> (u32, &'static str) {
        match why {
            Refusal::NoBackend => {
                self.metrics.no_backend.inc();
                (
                    1,
                    "no backend is available for this upstream; retry shortly\n",
                )
            }
            Refusal::Full => {
                self.metrics.full.inc();
                let secs = self.settings.load.retry_after.as_secs();
                (
                    u32::try_from(secs).unwrap_or(u32::MAX),
                    "every backend of this upstream is at its limit of active sessions, so no \
                     new session can start now; existing sessions are unaffected; retry after \
                     the Retry-After delay\n",
                )
            }
        }
    }

    /// The request is over: its session's request-in-flight count goes down.
    pub fn finish(&self, r: &Routing, now: Millis) {
        if let Some(key) = r.key.filter(|_| r.acquired) {
            self.overlay.release(key, now);
        }
    }

    /// After a failed connect to `r.decision.backend`: the next ring node, re-pinned.
    pub fn failover(&self, table: &Table, r: &mut Routing, now: Millis) -> Option<Decision> {
        let failed = r.decision?.backend;
        r.failed.push(failed);
        let d = table
            .router
            .failover(r.point, r.key, r.failed.as_slice(), now)?;
        table.backends[failed].metrics.failovers.inc();
        r.decision = Some(d);
        Some(d)
    }

    /// Pin a session key a plugin produced while answering (a learn-mode app cookie, a token
    /// re-issued for a session; not a token for a brand-new session, pinned when it comes back)
    /// to `backend`. When it replaces the key the request came with, the old
    /// key is dropped so the session is counted once.
    pub fn learn(&self, table: &Table, r: &Routing, key: SessionKey, replaces: bool, now: Millis) {
        let Some(d) = r.decision else { return };
        table.router.pin(key, d.backend, now);
        if let Some(old) = r.key.filter(|old| replaces && *old != key) {
            self.overlay.remove(old);
        }
    }
}

impl Table {
    /// A table for `members` (index i = `members[i]`), all flags at their defaults.
    pub(crate) fn new(up: &Upstream, members: &[Member]) -> Table {
        let specs: Vec<BackendSpec> = members
            .iter()
            .map(|b| BackendSpec {
                name: b.conf.id.clone(),
                weight: b.conf.weight,
                max_sessions: b.conf.max_sessions,
            })
            .collect();
        let router = Router::new(up.settings.router, &specs, up.overlay.clone(), &up.names);
        let s = &up.settings;
        let limits = up.conn_limits.for_backends(members.iter().map(|b| {
            let max = b.conf.max_connections.or(s.max_connections);
            (b.conf.id.as_str(), max)
        }));
        let backends = members
            .iter()
            .zip(limits)
            .map(|(b, conns)| BackendRt {
                peer: peer(b.conf.addr, s),
                metrics: up.root_metrics.backend(&up.name, &b.conf.id),
                id_value: HeaderValue::from_str(&b.conf.id).ok(),
                connect_failures: AtomicU32::new(0),
                conns,
            })
            .collect();
        Table { router, backends }
    }

    fn empty() -> Table {
        let overlay = Arc::new(Overlay::new(Default::default()));
        Table {
            router: Router::new(Default::default(), &[], overlay, &Interner::default()),
            backends: Vec::new(),
        }
    }
}

fn peer(addr: std::net::SocketAddr, s: &UpstreamSettings) -> HttpPeer {
    let mut p = HttpPeer::new(addr, false, String::new());
    p.options.connection_timeout = Some(s.connect_timeout);
    p.options.read_timeout = Some(s.read_timeout);
    p.options.write_timeout = Some(s.read_timeout);
    // Pingora: an idle timeout of 0 means the connection is not pooled.
    p.options.idle_timeout = Some(s.pool.idle_timeout.unwrap_or(Duration::ZERO));
    p.group_key = s.pool.group_key;
    p
}

/// Per-request routing state (lives in the proxy's CTX).
#[derive(Debug, Default, Clone)]
pub struct Routing {
    pub decision: Option<Decision>,
    /// Index of the plugin whose key decided, if any.
    pub decided_by: Option<usize>,
    /// The session's position on the ring (for failover walks).
    pub point: u32,
    /// The overlay key, when the session lives in the overlay.
    pub key: Option<SessionKey>,
    /// Expiry of the token that decided (cookie insert mode), for its refresh rule.
    pub key_expires: Option<u64>,
    /// Backends that failed for this request, in order.
    pub failed: Failed,
    /// Set when a connect failed and Pingora will call `upstream_peer` again.
    pub retrying: bool,
    /// Set when a failed request was not retried because it is not idempotent.
    pub not_retried: bool,
    /// A plugin rejected the key the request presented (forged, expired ...).
    pub invalid: bool,
    /// A migration moved this session here; its first request says so.
    pub moved_from: Option<BackendId>,
    /// Why no backend was chosen (the request is answered with a 503).
    pub refused: Option<Refusal>,
    /// The selection counted this request in flight on `key` (released by `finish`).
    pub acquired: bool,
}

impl Routing {
    /// What the backend is told about this request (`X-Berth-*` headers).
    pub fn signal<'t>(&self, up: &Upstream, table: &'t Table) -> Signal<'t> {
        let Some(d) = self.decision else {
            return Signal::default();
        };
        let previous = d.previous.or(self.moved_from);
        let affinity = match d.reason {
            _ if previous.is_some() => "reassigned",
            Reason::Failover | Reason::Spill => "reassigned",
            r => r.as_str(),
        };
        Signal {
            affinity,
            previous: previous.and_then(|id| up.names.name(id)),
            backup: d
                .backup
                .and_then(|b| table.backends.get(b))
                .and_then(|b| b.id_value.as_ref()),
        }
    }
}

/// The `X-Berth-*` headers of one request.
#[derive(Debug, Default, Clone)]
pub struct Signal<'t> {
    /// `sticky | new | ring | reassigned`.
    pub affinity: &'static str,
    /// Where the session was before, when it moved.
    pub previous: Option<Arc<str>>,
    /// The session's backup backend (its id).
    pub backup: Option<&'t HeaderValue>,
}

/// Backends that failed during one request; small and allocation-free.
#[derive(Debug, Default, Clone)]
pub struct Failed {
    items: [BackendIdx; 8],
    len: usize,
}

impl Failed {
    pub fn push(&mut self, b: BackendIdx) {
        if self.len < self.items.len() {
            self.items[self.len] = b;
            self.len += 1;
        }
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn as_slice(&self) -> &[BackendIdx] {
        &self.items[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::strip_port;

    #[test]
    fn host_port_is_stripped() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }
}
