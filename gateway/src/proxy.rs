//! The Pingora `ProxyHttp` implementation. Each phase delegates: routing decisions live in
//! [`crate::upstreams`] and `berth-routing`, affinity in `berth-plugins`, counting in
//! [`crate::metrics`].
use crate::headers;
use crate::upstreams::{Gateway, Routing, Table, Upstream};
use crate::views::{ReqView, RespView};
use async_trait::async_trait;
use berth_plugins::DecisionView;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{ProxyHttp, Session};
use std::sync::Arc;

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
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let req = session.req_header();
        let host = headers::host(req);
        let Some(upstream) = self.gw.route(host, req.uri.path()) else {
            self.gw.metrics.no_route.inc();
            headers::respond(session, 404, None, "no route for this host and path\n").await?;
            return Ok(true);
        };
        let table = upstream.table.load_full();
        let now = self.gw.clock.now();
        ctx.routing = upstream.decide(&table, &ReqView(session), now);
        if ctx.routing.decision.is_none() {
            upstream.metrics.no_backend.inc();
            let body = "no backend is available for this upstream; retry shortly\n";
            headers::respond(session, 503, Some(1), body).await?;
            return Ok(true);
        }
        ctx.upstream = Some(upstream.clone());
        ctx.table = Some(table);
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let (Some(upstream), Some(table), Some(_)) =
            (&ctx.upstream, &ctx.table, ctx.routing.decision)
        else {
            return Error::e_explain(ErrorType::InternalError, "no routing decision");
        };
        if ctx.routing.retrying {
            ctx.routing.retrying = false;
            if upstream
                .failover(table, &mut ctx.routing, self.gw.clock.now())
                .is_none()
            {
                upstream.metrics.no_backend.inc();
                return Error::e_explain(
                    ErrorType::HTTPStatus(503),
                    "no other backend is available",
                );
            }
        }
        let d = ctx.routing.decision.map_or(0, |d| d.backend);
        Ok(Box::new(table.backends[d].peer.clone()))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let (Some(upstream), Some(table), Some(d)) =
            (&ctx.upstream, &ctx.table, ctx.routing.decision)
        else {
            return e;
        };
        table.backends[d.backend].metrics.connect_failures.inc();
        if ctx.routing.failed.len() < upstream.connect_retries {
            ctx.routing.retrying = true;
            e.set_retry(true);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let (Some(table), Some(d)) = (&ctx.table, ctx.routing.decision) else {
            return Ok(());
        };
        let upstream = ctx.upstream.as_ref();
        let previous = d.previous.and_then(|id| upstream?.names.name(id));
        let backup = d.backup.map(|b| table.router.name(b));
        headers::to_upstream(session, req, d.reason, previous.as_deref(), backup)
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let (Some(upstream), Some(table), Some(d)) =
            (&ctx.upstream, &ctx.table, ctx.routing.decision)
        else {
            return Ok(());
        };
        let view = DecisionView {
            upstream: &upstream.name,
            backend: table.router.name(d.backend),
            reason: d.reason,
            decided_by_me: false,
            key_expires: ctx.routing.key_expires,
            now_unix: crate::views::now_unix(),
        };
        let now = self.gw.clock.now();
        upstream
            .chain
            .on_response(&view, ctx.routing.decided_by, &mut RespView(resp), |key| {
                upstream.learn(table, key, d.backend, now)
            });
        Ok(())
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        let (Some(table), Some(d)) = (&ctx.table, ctx.routing.decision) else {
            return;
        };
        let status = session.response_written().map(|r| r.status.as_u16());
        table.backends[d.backend].metrics.request(d.reason, status);
    }
}
