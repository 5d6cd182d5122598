//! The Pingora `ProxyHttp` implementation. Each phase delegates: routing decisions live in
//! [`crate::upstreams`] and `berth-routing`, lifecycle in [`crate::members`], affinity in
//! `berth-plugins`, headers in [`crate::headers`], counting in [`crate::metrics`].
use crate::headers;
use crate::upstreams::{Gateway, Routing, Table, Upstream};
use crate::views::{ReqView, RespView};
use async_trait::async_trait;
use berth_plugins::DecisionView;
use pingora_core::modules::http::HttpModules;
use pingora_core::protocols::Digest;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result, RetryType};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::sync::Arc;
use std::time::Instant;

/// Berth's proxy.
pub struct Proxy {
    pub gw: Arc<Gateway>,
}

/// Per-request state.
#[derive(Default)]
pub struct Ctx {
    upstream: Option<Arc<Upstream>>,
    table: Option<Arc<Table>>,
    routing: Routing,
    /// When `request_filter` began (the request header had been read).
    start: Option<Instant>,
    /// This request's connection slot on its backend (`max_connections`), held until the
    /// context is dropped.
    slot: Option<crate::conn_limit::Slot>,
    /// Refused because the backend stayed at `max_connections`.
    busy: bool,
}

impl Ctx {
    fn parts(&self) -> Option<(&Arc<Upstream>, &Arc<Table>, usize)> {
        let d = self.routing.decision?;
        Some((self.upstream.as_ref()?, self.table.as_ref()?, d.backend))
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    /// No downstream modules. Pingora's default adds a response-compression module with every
    /// level at 0 (disabled), which still costs a context and several filter calls per request.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let start = Instant::now();
        ctx.start = Some(start);
        let limits = &self.gw.limits;
        limits.apply(session);
        if let Some(why) = limits.check(session) {
            self.gw.metrics.refused[why as usize].inc();
            let (status, body) = why.response();
            headers::respond(session, status, None, body).await?;
            return Ok(true);
        }
        let req = session.req_header();
        let Some(upstream) = self.gw.route(headers::host(req), req.uri.path()) else {
            self.gw.metrics.no_route.inc();
            headers::respond(session, 404, None, "no route for this host and path\n").await?;
            return Ok(true);
        };
        let table = upstream.table.load_full();
        let now = self.gw.clock.at(start);
        ctx.routing = upstream.decide(&table, &ReqView(session), now);
        ctx.upstream = Some(upstream.clone());
        if let Some(why) = ctx.routing.refused {
            let (retry_after, body) = upstream.refusal(why);
            headers::respond(session, 503, Some(retry_after), body).await?;
            return Ok(true);
        }
        ctx.table = Some(table);
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        // Disjoint field borrows: no reference-count traffic on the request path.
        let Ctx {
            upstream: Some(upstream),
            table: Some(table),
            routing,
            slot,
            busy,
            ..
        } = ctx
        else {
            return Error::e_explain(ErrorType::InternalError, "no routing decision");
        };
        // A retry goes elsewhere: the failed backend's slot is free again.
        *slot = None;
        if routing.retrying {
            routing.retrying = false;
            let now = self.gw.clock.now();
            if upstream.failover(table, routing, now).is_none() {
                upstream.metrics.no_backend.inc();
                return Error::e_explain(
                    ErrorType::HTTPStatus(503),
                    "no other backend is available",
                );
            }
        }
        let Some(d) = routing.decision else {
            return Error::e_explain(ErrorType::InternalError, "no routing decision");
        };
        if let Some(limit) = &table.backends[d.backend].conns {
            match limit.acquire(upstream.settings.queue_timeout).await {
                Some(s) => *slot = Some(s),
                None => {
                    upstream.metrics.busy.inc();
                    *busy = true;
                    return Error::e_explain(
                        ErrorType::HTTPStatus(503),
                        "backend at its connection limit",
                    );
                }
            }
        }
        let mut peer = Box::new(table.backends[d.backend].peer.clone());
        if let Some(key) = routing.key.filter(|_| upstream.settings.pool.per_session) {
            // Connections of their own per session: the pool key includes the session.
            peer.group_key ^= key.0 as u64;
        }
        Ok(peer)
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        _digest: Option<&Digest>,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some((upstream, table, backend)) = ctx.parts() {
            table.backends[backend].metrics.connected(reused);
            upstream.connected(table, backend);
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let Some((upstream, table, backend)) = ctx.parts() else {
            return e;
        };
        headers::conceal_peer(&mut e, &peer._address, table.router.name(backend));
        table.backends[backend].metrics.connect_failures.inc();
        upstream.connect_failed(table, backend, self.gw.clock.now());
        // Nothing reached the backend: any request may go to the next node.
        if ctx.routing.failed.len() < upstream.settings.connect_retries {
            upstream.metrics.retry_connect.inc();
            ctx.routing.retrying = true;
            e.set_retry(true);
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        mut e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        if let Some((_, table, backend)) = ctx.parts() {
            headers::conceal_peer(&mut e, &peer._address, table.router.name(backend));
        }
        if e.esource() == &ErrorSource::Downstream {
            // The client's request is at fault (e.g. a protected header nominated by
            // `Connection`): another backend would refuse it too.
            e.set_retry(false);
            return e;
        }
        let retriable = headers::is_idempotent(session.req_header())
            && !session.as_ref().retry_buffer_truncated()
            && session.response_written().is_none();
        let Some((upstream, _, _)) = ctx.parts() else {
            e.set_retry(false);
            return e;
        };
        match after_proxy_error(
            retriable,
            client_reused,
            &e.retry,
            ctx.routing.failed.len(),
            upstream.settings.connect_retries,
        ) {
            AfterError::GiveUp { not_retried } => {
                ctx.routing.not_retried = not_retried;
                e.set_retry(false);
            }
            // A pooled connection the backend had already closed: same backend, new connection.
            AfterError::SameBackend => e.set_retry(true),
            AfterError::NextBackend => {
                upstream.metrics.retry_idempotent.inc();
                ctx.routing.retrying = true;
                e.set_retry(true);
            }
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some((upstream, table, _)) = ctx.parts() else {
            return Ok(());
        };
        let signal = ctx.routing.signal(upstream, table);
        if upstream.settings.pool.idle_timeout.is_none() {
            // keepalive off: the backend closes after answering, so nothing is pooled.
            req.insert_header(http::header::CONNECTION, "close")?;
        }
        headers::to_upstream(session, req, &signal, upstream.settings.forward_headers)
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let (Some((upstream, table, backend)), Some(d)) = (ctx.parts(), ctx.routing.decision)
        else {
            return Ok(());
        };
        if !upstream.chain.sees_responses() {
            // Header and IP affinity: nothing to add or learn (and no clocks to read).
            return Ok(());
        }
        let view = DecisionView {
            upstream: &upstream.name,
            backend: table.router.name(backend),
            reason: d.reason,
            decided_by_me: false,
            key_expires: ctx.routing.key_expires,
            now_unix: crate::views::now_unix(),
            session: ctx.routing.key,
        };
        let now = self.gw.clock.now();
        let routing = &ctx.routing;
        let mut resp = RespView(resp);
        upstream
            .chain
            .on_response(&view, routing.decided_by, &mut resp, |key, replaces| {
                upstream.learn(table, routing, key, replaces, now)
            });
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let code = headers::error_status(e);
        let body = if ctx.routing.not_retried {
            "the backend failed before responding; the request was not retried on another \
             backend because it is not idempotent (send an Idempotency-Key header to allow it)\n"
        } else if ctx.busy {
            "the backend serving this session is at its connection limit (max_connections); \
             retry shortly\n"
        } else if code == 503 {
            "no backend is available for this upstream; retry shortly\n"
        } else if code == 502 {
            "the backend failed before responding\n"
        } else {
            "the request could not be proxied\n"
        };
        if code > 0 && session.response_written().is_none() {
            let retry_after = (code == 503).then_some(1);
            if let Err(err) = headers::respond(session, code, retry_after, body).await {
                log::debug!("error response not sent: {err}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        // One clock read: the routing core's `now` and the request's duration.
        let end = Instant::now();
        if let Some(upstream) = &ctx.upstream {
            upstream.finish(&ctx.routing, self.gw.clock.at(end));
        }
        let status = session.response_written().map(|r| r.status.as_u16());
        let elapsed = ctx.start.map(|t| end.saturating_duration_since(t));
        if let (Some(upstream), Some(table)) = (&ctx.upstream, &ctx.table) {
            upstream.finished(table, &ctx.routing, status, elapsed);
        }
        if let Some(log) = &self.gw.access_log {
            let done = crate::access_log::Done {
                upstream: ctx.upstream.take(),
                table: ctx.table.take(),
                decision: ctx.routing.decision,
                status,
                elapsed,
            };
            log.record(session, done);
        }
    }
}

/// What to do after a request failed on its way to or from a backend.
#[derive(Debug, PartialEq, Eq)]
enum AfterError {
    /// Answer the client with the error; `not_retried` when only non-idempotency stopped a
    /// retry (the 502 body says so).
    GiveUp { not_retried: bool },
    /// Retry on a new connection to the same backend (a stale pooled connection).
    SameBackend,
    /// Retry on the next backend.
    NextBackend,
}

/// The retry rule: a non-idempotent (or already partly answered) request is never replayed; a
/// failure on a pooled connection that Pingora marks retryable (`Decided(true)` or
/// `ReusedOnly`) is retried once more on the same backend; otherwise the next backend, while
/// `failed < retries`. Never calls `RetryType::retry()`, which panics on `ReusedOnly`.
fn after_proxy_error(
    retriable: bool,
    upstream_reused: bool,
    retry: &RetryType,
    failed: usize,
    retries: usize,
) -> AfterError {
    if !retriable {
        AfterError::GiveUp { not_retried: true }
    } else if upstream_reused && !matches!(retry, RetryType::Decided(false)) {
        AfterError::SameBackend
    } else if failed < retries {
        AfterError::NextBackend
    } else {
        AfterError::GiveUp { not_retried: false }
    }
}

#[cfg(test)]
mod tests {
    use super::{after_proxy_error as after, AfterError::*, RetryType};

    #[test]
    fn retry_rule_covers_every_retry_type_without_panicking() {
        let undecided = RetryType::ReusedOnly;
        let yes = RetryType::Decided(true);
        let no = RetryType::Decided(false);
        assert_eq!(after(false, true, &yes, 0, 2), GiveUp { not_retried: true });
        assert_eq!(after(true, true, &undecided, 0, 2), SameBackend);
        assert_eq!(after(true, true, &yes, 0, 2), SameBackend);
        assert_eq!(after(true, true, &no, 0, 2), NextBackend);
        assert_eq!(after(true, false, &undecided, 0, 2), NextBackend);
        assert_eq!(
            after(true, false, &undecided, 2, 2),
            GiveUp { not_retried: false }
        );
    }
}
