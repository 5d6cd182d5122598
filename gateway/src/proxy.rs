//! The Pingora `ProxyHttp` implementation: each hook a few lines of delegation. Routing lives in
//! [`crate::upstream`] and `berth-routing`, request policy (retries, Berth's own answers) in
//! [`crate::policy`], affinity in `berth-plugins`, headers in [`crate::headers`].
use crate::access_log::{AccessLog, Record};
use crate::gateway::Gateway;
use crate::headers;
use crate::policy::{Answer, Attempt};
use crate::upstream::{BackendSet, Upstream};
use crate::views::{ReqView, RespView};
use async_trait::async_trait;
use berth_plugins::DecisionView;
use pingora_core::modules::http::HttpModules;
use pingora_core::protocols::Digest;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::sync::Arc;
use std::time::Instant;

/// Berth's proxy.
pub struct Proxy {
    pub gw: Arc<Gateway>,
    /// The access log, when configured.
    pub log: Option<Arc<AccessLog>>,
}

/// Per-request state.
#[derive(Default)]
pub struct Ctx {
    upstream: Option<Arc<Upstream>>,
    set: Option<Arc<BackendSet>>,
    attempt: Attempt,
    /// When `request_filter` began (the request header had been read).
    start: Option<Instant>,
    /// This request's connection slot on its backend (`max_connections`), held until the
    /// context is dropped.
    slot: Option<crate::conn_limit::Slot>,
    /// Refused because the backend stayed at `max_connections`.
    busy: bool,
}

impl Ctx {
    fn parts(&self) -> Option<(&Arc<Upstream>, &Arc<BackendSet>, usize)> {
        let d = self.attempt.decision?;
        Some((self.upstream.as_ref()?, self.set.as_ref()?, d.backend))
    }

    /// The routed parts, with the attempt to change (disjoint borrows: no reference counting).
    fn routed(&mut self) -> Option<(&Upstream, &BackendSet, &mut Attempt)> {
        Some((
            self.upstream.as_deref()?,
            self.set.as_deref()?,
            &mut self.attempt,
        ))
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
        let gw = &self.gw;
        gw.limits.apply(session);
        if let Some(why) = gw.limits.check(session) {
            gw.refused[why as usize].inc();
            Answer::Refused(why).send(session).await?;
            return Ok(true);
        }
        let req = session.req_header();
        let Some(upstream) = gw.route(headers::host(req), req.uri.path()) else {
            gw.metrics.no_route.inc();
            Answer::NoRoute.send(session).await?;
            return Ok(true);
        };
        let set = upstream.current.load_full();
        ctx.attempt = upstream.decide(&set, &ReqView(session), gw.clock.at(start));
        ctx.upstream = Some(upstream.clone());
        if let Some(why) = ctx.attempt.refused {
            upstream.refused(why).send(session).await?;
            return Ok(true);
        }
        ctx.set = Some(set);
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        // Disjoint field borrows: no reference-count traffic on the request path.
        let Ctx {
            upstream: Some(upstream),
            set: Some(set),
            attempt,
            slot,
            busy,
            ..
        } = ctx
        else {
            return Error::e_explain(ErrorType::InternalError, "no routing decision");
        };
        // A retry goes elsewhere: the failed backend's slot is free again.
        *slot = None;
        if std::mem::take(&mut attempt.retrying)
            && upstream
                .failover(set, attempt, self.gw.clock.now())
                .is_none()
        {
            upstream.metrics.no_backend.inc();
            return Error::e_explain(ErrorType::HTTPStatus(503), "no other backend is available");
        }
        let Some(d) = attempt.decision else {
            return Error::e_explain(ErrorType::InternalError, "no routing decision");
        };
        if let Some(limit) = &set.backends[d.backend].conns {
            let Some(s) = limit.acquire(upstream.settings.queue_timeout).await else {
                upstream.metrics.busy.inc();
                *busy = true;
                return Error::e_explain(
                    ErrorType::HTTPStatus(503),
                    "backend at its connection limit",
                );
            };
            *slot = Some(s);
        }
        let mut peer = Box::new(set.backends[d.backend].peer.clone());
        if let Some(key) = attempt.key.filter(|_| upstream.settings.pool.per_session) {
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
        if let Some((upstream, set, backend)) = ctx.parts() {
            set.backends[backend].metrics.connected(reused);
            upstream.connected(set, backend);
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
        if let Some((upstream, set, attempt)) = ctx.routed() {
            let now = self.gw.clock.now();
            headers::conceal_peer(&mut e, &peer._address, upstream.backend_name(set, attempt));
            e.set_retry(upstream.connect_failure(set, attempt, now));
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
        let Some((upstream, set, attempt)) = ctx.routed() else {
            e.set_retry(false);
            return e;
        };
        headers::conceal_peer(&mut e, &peer._address, upstream.backend_name(set, attempt));
        // A client at fault (e.g. a protected header nominated by `Connection`): another
        // backend would refuse it too.
        if e.esource() == &ErrorSource::Downstream {
            e.set_retry(false);
            return e;
        }
        let retriable = headers::is_idempotent(session.req_header())
            && !session.as_ref().retry_buffer_truncated()
            && session.response_written().is_none();
        e.set_retry(upstream.proxy_failure(attempt, retriable, client_reused, &e.retry));
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some((upstream, set, _)) = ctx.parts() else {
            return Ok(());
        };
        if upstream.settings.pool.idle_timeout.is_none() {
            // keepalive off: the backend closes after answering, so nothing is pooled.
            req.insert_header(http::header::CONNECTION, "close")?;
        }
        let signal = upstream.affinity_headers(&ctx.attempt, set);
        headers::to_upstream(session, req, &signal, upstream.settings.forward_headers)
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let (Some((upstream, set, backend)), Some(d)) = (ctx.parts(), ctx.attempt.decision) else {
            return Ok(());
        };
        if !upstream.chain.sees_responses() {
            // Header and IP affinity: nothing to add or learn (and no clocks to read).
            return Ok(());
        }
        let a = &ctx.attempt;
        let view = DecisionView {
            upstream: &upstream.name,
            backend: set.router.name(backend),
            reason: d.reason,
            decided_by_me: false,
            key_expires: a.key_expires,
            now_unix: crate::views::now_unix(),
            session: a.key,
        };
        let now = self.gw.clock.now();
        let learn = |key, replaces| upstream.learn(set, a, key, replaces, now);
        upstream
            .chain
            .on_response(&view, a.decided_by, &mut RespView(resp), learn);
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let code = headers::error_status(e);
        if code > 0 && session.response_written().is_none() {
            let answer = Answer::after_failure(code, ctx.attempt.not_retried, ctx.busy);
            if let Err(err) = answer.send(session).await {
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
        let status = session.response_written().map(|r| r.status.as_u16());
        let elapsed = ctx.start.map(|t| end.saturating_duration_since(t));
        if let Some(upstream) = &ctx.upstream {
            let now = self.gw.clock.at(end);
            upstream.end(ctx.set.as_deref(), &ctx.attempt, status, elapsed, now);
        }
        if let Some(log) = &self.log {
            let record = Record::new(ctx.upstream.as_deref(), ctx.set.as_deref(), &ctx.attempt);
            log.record(session, record.finished(status, elapsed));
        }
    }
}
