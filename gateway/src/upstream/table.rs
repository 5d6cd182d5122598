//! [`BackendSet`]: one immutable version of an upstream's backends — the router over them (ring,
//! flags, shared overlay) and, by backend index, what a request needs to reach each one.
use super::{Member, Members, Upstream};
use crate::config::{UpstreamProtocol, UpstreamSettings};
use crate::conn_limit::ConnLimit;
use crate::metrics::BackendMetrics;
use berth_routing::{BackendSpec, Interner, Overlay, Router};
use http::HeaderValue;
use pingora_core::protocols::tls::CaType;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::utils::tls::{parse_x509, WrappedX509};
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::Duration;

/// One immutable version of an upstream's backends.
pub struct BackendSet {
    pub router: Router,
    /// By [`berth_routing::BackendIdx`].
    pub backends: Vec<Backend>,
}

/// A backend as requests use it.
pub struct Backend {
    /// Its id (what cookies, metrics and the access log name).
    pub name: Arc<str>,
    /// Template cloned for every request to this backend.
    pub peer: HttpPeer,
    pub metrics: BackendMetrics,
    /// The backend id as a header value (`X-Berth-Backup`), built once.
    pub id_value: Option<HeaderValue>,
    /// Consecutive connect failures seen by requests (passive health).
    pub connect_failures: AtomicU32,
    /// Its `max_connections` limit, if any.
    pub conns: Option<Arc<ConnLimit>>,
}

impl BackendSet {
    /// A set for `members` of `up` (index i = `members[i]`), all flags at their defaults.
    pub(super) fn new(up: &Upstream, members: &[Member]) -> BackendSet {
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
            .map(|(b, conns)| Backend {
                name: b.conf.id.as_str().into(),
                peer: peer(b.conf.addr, s, up.tls_ca.as_ref()),
                metrics: up.root_metrics.backend(&up.name, &b.conf.id),
                id_value: HeaderValue::from_str(&b.conf.id).ok(),
                connect_failures: AtomicU32::new(0),
                conns,
            })
            .collect();
        BackendSet { router, backends }
    }

    pub(super) fn empty() -> BackendSet {
        let overlay = Arc::new(Overlay::new(Default::default()));
        BackendSet {
            router: Router::new(Default::default(), &[], overlay, &Interner::default()),
            backends: Vec::new(),
        }
    }
}

/// The connection template of a backend at `addr`. With `tls:`, TLS (HTTP/1.1 by ALPN) with the
/// upstream's name, CA (`ca`, parsed once per upstream) and verification; its pool group key
/// mixes in the TLS settings' digest, so connections verified against one CA or name are never
/// handed to an upstream that trusts another (Pingora's reuse hash leaves the CA out).
impl Upstream {
    /// The backends of `old` that `m` no longer has: removed, their metric series deleted.
    pub(super) fn forget_removed(&self, old: &BackendSet, m: &Members) {
        for idx in 0..old.router.len() {
            let id = old.router.name(idx);
            if m.position(id).is_none() {
                self.root_metrics.forget_backend(&self.name, id);
            }
        }
    }
}

pub(super) fn peer(
    addr: std::net::SocketAddr,
    s: &UpstreamSettings,
    ca: Option<&Arc<CaType>>,
) -> HttpPeer {
    let mut p = match &s.tls {
        None => HttpPeer::new(addr, false, String::new()),
        Some(tls) => {
            let name = tls.sni.clone().unwrap_or_else(|| addr.ip().to_string());
            let mut p = HttpPeer::new(addr, true, name);
            p.options.verify_cert = tls.verify;
            p.options.verify_hostname = tls.verify;
            p.options.ca = ca.cloned();
            // Connecting and the handshake together.
            p.options.total_connection_timeout = Some(s.connect_timeout * 2);
            p
        }
    };
    p.options.connection_timeout = Some(s.connect_timeout);
    p.options.read_timeout = Some(s.read_timeout);
    p.options.write_timeout = Some(s.read_timeout);
    // Pingora: an idle timeout of 0 means the connection is not pooled.
    p.options.idle_timeout = Some(s.pool.idle_timeout.unwrap_or(Duration::ZERO));
    p.group_key = s.pool.group_key ^ s.tls.as_ref().map_or(0, |t| t.digest);
    if s.protocol != UpstreamProtocol::Http1 {
        // HTTP/2 only (h2 by ALPN, h2c with prior knowledge), many streams per connection.
        p.options.set_http_version(2, 2);
        p.options.max_h2_streams = H2_STREAMS;
    }
    p
}

/// Streams one HTTP/2 connection to a backend carries at once (`protocol: h2`/`h2c`).
const H2_STREAMS: usize = 100;

/// The CA certificates of an upstream's `tls.ca_file`, as Pingora's connector takes them.
pub(super) fn ca_of(s: &UpstreamSettings) -> Option<Arc<CaType>> {
    let ders = s.tls.as_ref()?.ca.as_ref()?;
    let certs: Vec<WrappedX509> = ders
        .iter()
        // Parsed once by the config reader: cannot fail here.
        .map(|der| WrappedX509::new(der.clone(), parse_x509))
        .collect();
    Some(Arc::from(certs.into_boxed_slice()))
}
