//! The Pingora `ProxyHttp` implementation: each hook a few lines of delegation. Routing lives in
//! [`crate::upstream`] and `berth-routing`, request policy (retries, Berth's own answers) in
//! [`crate::policy`], affinity in `berth-plugins`, headers in [`crate::headers`].
use crate::access_log::{AccessLog, Record};
use crate::gateway::Gateway;
use crate::headers;
use crate::policy::{Answer, Attempt};
use crate::upstream::{BackendSet, Upstream, WsRequest};
use crate::views::ReqView;
use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::{modules::http::HttpModules, protocols::Digest, upstreams::peer::HttpPeer};
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::sync::Arc;
use std::time::Instant;

/// Berth's proxy (one per kind of listener: see `lib.rs`).
pub struct Proxy {
    pub gw: Arc<Gateway>,
    /// The access log, when configured.
    pub log: Option<Arc<AccessLog>>,
    /// Serves TLS listeners: `X-Forwarded-Proto: https`, `Secure` cookies.
    pub tls: bool,
}

/// Per-request state.
#[derive(Default)]
pub struct Ctx {
    upstream: Option<Arc<Upstream>>,
    set: Option<Arc<BackendSet>>,
    attempt: Attempt,
    /// When `request_filter` began (the request header had been read).
    start: Option<Instant>,
    /// Its connection slot on the backend (`max_connections`), freed when the context drops.
    slot: Option<crate::conn_limit::Slot>,
    /// An upgrade request (WebSocket), then its socket.
    ws: Option<WsRequest>,
    /// The backend answered 101 to a request that asked for no upgrade: not retried elsewhere.
    unasked_101: bool,
}

impl Ctx {
    /// The routed parts, with the attempt to change (disjoint borrows: no reference counting).
    fn routed(&mut self) -> Option<(&Upstream, &BackendSet, &mut Attempt)> {
        let (upstream, set) = self.upstream.as_deref().zip(self.set.as_deref())?;
        Some((upstream, set, &mut self.attempt))
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    /// No downstream modules: Pingora's default (compression, off) costs calls per request.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let start = Instant::now();
        ctx.start = Some(start);
        let gw = &self.gw;
        if let Some(refused) = gw.limit(session) {
            refused.send(session).await?;
            return Ok(true);
        }
        let req = session.req_header();
        let Some(upstream) = gw.route(headers::host(req), req.uri.path()) else {
            gw.metrics.no_route.inc();
            Answer::NoRoute.send(session).await?;
            return Ok(true);
        };
        let set = upstream.current.load_full();
        let now = gw.clock.at(start);
        ctx.attempt = upstream.decide(&set, &ReqView(session), now);
        if upstream.redis.is_some() {
            // A shared registry: a session's first request here asks it (see `agree`).
            upstream.agree(&set, &mut ctx.attempt, now).await;
        }
        ctx.upstream = Some(upstream.clone());
        if let Some(why) = ctx.attempt.refused {
            upstream.refused(why).send(session).await?;
            return Ok(true);
        }
        ctx.set = Some(set);
        if session.is_upgrade_req() {
            if let Some(conn) = session.as_downstream().stream().map(|s| s.id()) {
                ctx.ws = Some(upstream.upgrade_request(conn));
            }
        }
        Ok(false)
    }

    /// Disjoint field borrows: no reference-count traffic on the request path.
    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let Ctx {
            upstream: Some(upstream),
            set: Some(set),
            attempt,
            slot,
            ws,
            ..
        } = ctx
        else {
            return Error::e_explain(ErrorType::InternalError, "no routing decision");
        };
        let mut peer = upstream.peer(set, attempt, slot, &self.gw.clock).await?;
        if ws.is_some() {
            Upstream::upgrade_peer(&mut peer);
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
        let since = ctx.start;
        if let Some((upstream, set, attempt)) = ctx.routed() {
            upstream.connected(set, attempt, reused, since);
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
        let unasked_101 = ctx.unasked_101;
        let retry = ctx.routed().is_some_and(|(upstream, set, attempt)| {
            headers::conceal_peer(&mut e, &peer._address, upstream.backend_name(set, attempt));
            !unasked_101 && upstream.proxy_failure(attempt, session, &e, client_reused)
        });
        e.set_retry(retry);
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        match ctx.routed() {
            Some((u, set, attempt)) => u.request_headers(session, req, set, attempt, self.tls),
            None => Ok(()),
        }
    }

    /// A `101` to a request that asked for no upgrade is refused (Pingora 0.9.1 would pass it
    /// on and turn the client's connection into a tunnel): a 502, counted.
    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if resp.status == http::StatusCode::SWITCHING_PROTOCOLS && ctx.ws.is_none() {
            if let Some(upstream) = &ctx.upstream {
                ctx.unasked_101 = true;
                return upstream.unasked_upgrade();
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Ctx {
            upstream: Some(upstream),
            set: Some(set),
            attempt,
            ws,
            ..
        } = ctx
        else {
            return Ok(());
        };
        let status = resp.status.as_u16();
        upstream.on_response(set, attempt, (&*session, resp), &self.gw.clock, self.tls);
        if ws.is_some() {
            upstream.upgrade_answered(set, attempt, ws, status, session);
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        Answer::after_error(session, e, &ctx.attempt).await
    }

    /// Pingora issue #935: see [`headers::drop_empty_last_chunk`].
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        _ctx: &mut Ctx,
    ) -> Result<()> {
        headers::drop_empty_last_chunk(body, end_of_stream);
        Ok(())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        // One clock read: the routing core's `now` and the request's duration.
        let end = Instant::now();
        let status = session.response_written().map(|r| r.status.as_u16());
        let elapsed = ctx.start.map(|t| end.saturating_duration_since(t));
        if let Some(upstream) = &ctx.upstream {
            if let Some(ws) = ctx.ws.take() {
                upstream.upgrade_ended(ws, e);
            }
            let now = self.gw.clock.at(end);
            upstream.end(ctx.set.as_deref(), &ctx.attempt, status, elapsed, now);
        }
        if let Some(log) = &self.log {
            let record = Record::new(ctx.upstream.as_deref(), ctx.set.as_deref(), &ctx.attempt);
            log.record(session, record.finished(status, elapsed));
        }
    }
}
