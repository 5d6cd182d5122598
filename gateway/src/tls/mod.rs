//! TLS termination for the listeners with a `tls:` section.
//!
//! * [`certs`] reads and checks each certificate (chain + key files): at `berth -t`, at start
//!   and on SIGHUP, with errors naming the key path and the file.
//! * [`sni`] picks the certificate for a client hello by its SNI, from an `ArcSwap` that a
//!   reload replaces in one store.
//! * [`accept`] is the listener's [`pingora_core::apps::ServerApp`]: the TLS listeners are plain
//!   TCP listeners to Pingora, and Berth does the handshake itself (Pingora's rustls acceptor,
//!   with a rustls `ServerConfig` of Berth's: TLS 1.2/1.3, ALPN `h2`/`http/1.1`, the SNI
//!   resolver) so that it can bound it by `limits.header_timeout` and count every failure by
//!   reason (Pingora's own TLS listener logs them and moves on). The decrypted stream then goes
//!   to the slow-client guard ([`crate::client_deadlines`]) and on to HTTP, like any
//!   connection.
//!
//! Plain listeners never reach this module: they are served by a Pingora service of their own,
//! so TLS costs them nothing.
pub mod accept;
pub mod certs;
pub mod sni;

use crate::config::{ConfError, Listener, ListenerTls, TlsVersion};
use crate::metrics::tls::{TlsFamilies, TlsListenerMetrics};
use pingora_core::listeners::tls::Acceptor;
use rustls::server::ServerConfig;
use sni::{CertSet, SniResolver};
use std::net::SocketAddr;
use std::sync::Arc;

/// One TLS listener at run time.
pub struct TlsListener {
    /// Its address as configured (`listeners[].addr`, the `listener` label).
    pub addr: String,
    bind: SocketAddr,
    acceptor: Acceptor,
    resolver: Arc<SniResolver>,
    metrics: TlsListenerMetrics,
    /// Expiry gauges of the certificates loaded last (to drop the series of files no longer
    /// served).
    files: parking_lot::Mutex<Vec<String>>,
    /// `http2` and `min_version` as started (a reload cannot change them).
    negotiates: (bool, TlsVersion),
}

/// Every TLS listener of the process: what the TLS service accepts with, and what SIGHUP
/// reloads.
pub struct Edge {
    pub listeners: Vec<TlsListener>,
    families: TlsFamilies,
}

/// Read and check the certificates of every TLS listener (`berth -t`, start, SIGHUP): by
/// listener, in the order of `listeners` that have `tls:`.
pub fn read_certificates(
    listeners: &[Listener],
) -> Result<Vec<Vec<certs::Loaded>>, Vec<ConfError>> {
    let now = crate::views::now_unix() as i64;
    let mut errors = Vec::new();
    let mut out = Vec::new();
    for l in listeners {
        let Some(tls) = &l.tls else { continue };
        let mut loaded = Vec::new();
        for files in &tls.certificates {
            match certs::load(files, now) {
                Ok(c) => loaded.push(c),
                Err(e) => errors.extend(e),
            }
        }
        out.push(loaded);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

impl Edge {
    /// The TLS listeners of `listeners` with their certificates (from [`read_certificates`]);
    /// `None` when no listener has `tls:`.
    pub fn new(
        listeners: &[Listener],
        certificates: Vec<Vec<certs::Loaded>>,
        metrics: &crate::metrics::Metrics,
    ) -> Option<Edge> {
        let tls: Vec<(&Listener, &ListenerTls)> = listeners
            .iter()
            .filter_map(|l| l.tls.as_ref().map(|t| (l, t)))
            .collect();
        if tls.is_empty() {
            return None;
        }
        let families = metrics.tls().clone();
        let listeners = tls
            .into_iter()
            .zip(certificates)
            .map(|((l, t), certs)| {
                let resolver = Arc::new(SniResolver::new(CertSet::new(&certs)));
                let listener = TlsListener {
                    addr: l.addr.clone(),
                    // Checked by the config reader.
                    bind: l
                        .addr
                        .parse()
                        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
                    acceptor: Acceptor::from_server_config(server_config(t, resolver.clone())),
                    resolver,
                    metrics: families.listener(&l.addr),
                    files: Default::default(),
                    negotiates: (t.http2, t.min_version),
                };
                listener.show(&families, &certs);
                listener
            })
            .collect();
        Some(Edge {
            listeners,
            families,
        })
    }

    /// SIGHUP: the certificates of `listeners` (the re-read file) for the TLS listeners
    /// running now, matched by address. All or nothing: when one certificate fails, nothing
    /// changes and the errors are returned. A TLS listener added or removed in the file needs
    /// an upgrade (reported by the caller).
    pub fn reload(&self, listeners: &[Listener]) -> Result<usize, Vec<ConfError>> {
        let running: Vec<Listener> = listeners
            .iter()
            .filter(|l| l.tls.is_some() && self.listeners.iter().any(|t| t.addr == l.addr))
            .cloned()
            .collect();
        let loaded = read_certificates(&running)?;
        let mut n = 0;
        for (l, certs) in running.iter().zip(loaded) {
            if let Some(t) = self.listeners.iter().find(|t| t.addr == l.addr) {
                let tls = l.tls.as_ref().map(|c| (c.http2, c.min_version));
                if tls != Some(t.negotiates) {
                    log::warn!(
                        "reload: {} tls.http2 / tls.min_version changed: that needs an upgrade \
                         (berth -u); only its certificates were reloaded",
                        t.addr
                    );
                }
                t.resolver.replace(CertSet::new(&certs));
                t.show(&self.families, &certs);
                n += certs.len();
            }
        }
        Ok(n)
    }

    /// The listener a connection arrived on, by the socket's local address (only asked when
    /// there are several TLS listeners).
    fn find(&self, local: Option<SocketAddr>) -> Option<&TlsListener> {
        if let [only] = self.listeners.as_slice() {
            return Some(only);
        }
        let local = local?;
        self.listeners.iter().find(|l| {
            l.bind.port() == local.port()
                && (l.bind.ip().is_unspecified() || l.bind.ip() == local.ip())
        })
    }
}

impl TlsListener {
    /// Publish the expiry of `certs` (dropping series of files no longer served) and log them.
    fn show(&self, families: &TlsFamilies, certs: &[certs::Loaded]) {
        let mut files = self.files.lock();
        for old in files.iter() {
            if !certs.iter().any(|c| &c.file == old) {
                let _ = families.not_after.remove_label_values(&[&self.addr, old]);
            }
        }
        files.clear();
        for c in certs {
            families
                .not_after
                .with_label_values(&[&self.addr, &c.file])
                .set(c.not_after);
            files.push(c.file.clone());
            log::info!(
                "tls {}: {} for {} (expires {})",
                self.addr,
                c.file,
                if c.names.is_empty() {
                    "(no names)".to_string()
                } else {
                    c.names.join(", ")
                },
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH
                        + std::time::Duration::from_secs(c.not_after.max(0) as u64)
                )
            );
        }
    }
}

/// The rustls configuration of one TLS listener: TLS 1.3 and 1.2 (or 1.3 alone), the SNI
/// resolver, ALPN `h2` then `http/1.1` (or `http/1.1` alone), rustls' defaults otherwise
/// (its cipher suites and key-exchange groups, a 256-session resumption cache).
fn server_config(tls: &ListenerTls, resolver: Arc<SniResolver>) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = if tls.http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Arc::new(config)
}
