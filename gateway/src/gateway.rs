//! The gateway's shared state: the upstreams, the routes that lead to them, the routing core's
//! clock, the metric families and the client-side limits. Built once from a validated config
//! and shared (read-only) by the proxy, the admin listener and the background services.
use crate::config::{ClientLimits, Config, Route};
use crate::metrics::Metrics;
use crate::policy::{Answer, Limit};
use crate::upstream::{Clock, SessionMetrics, Upstream};
use pingora_proxy::Session;
use prometheus::IntCounter;
use std::sync::Arc;

/// Everything the proxy needs, shared by all requests.
pub struct Gateway {
    pub upstreams: Vec<Arc<Upstream>>,
    pub routes: Vec<Route>,
    pub clock: Clock,
    pub metrics: Arc<Metrics>,
    /// Client-side limits (`limits:`).
    pub limits: ClientLimits,
    /// Requests refused by the limits, by [`Limit`] (`berth_requests_refused_total`).
    pub refused: [IntCounter; Limit::ALL.len()],
}

impl Gateway {
    /// Build the runtime state from a validated config.
    pub fn new(config: Config, metrics: Arc<Metrics>) -> Gateway {
        let upstreams: Vec<Arc<Upstream>> = config
            .upstreams
            .into_iter()
            .map(|u| Arc::new(Upstream::new(u, &metrics)))
            .collect();
        let scraped = SessionMetrics::new(upstreams.clone());
        if let Err(e) = metrics.register(Box::new(scraped)) {
            log::error!("session metrics not registered: {e}");
        }
        Gateway {
            upstreams,
            routes: config.routes,
            clock: Clock::new(),
            refused: Limit::ALL.map(|w| metrics.refused(w.as_str())),
            metrics,
            limits: config.limits,
        }
    }

    /// Applies the client-side limits to a request (its body timeout; the checks of its head):
    /// the answer, counted, when they refuse it.
    pub fn limit(&self, session: &mut Session) -> Option<Answer> {
        self.limits.apply(session);
        let why = self.limits.check(session)?;
        self.refused[why as usize].inc();
        Some(Answer::Refused(why))
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
