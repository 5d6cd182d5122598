//! The [`ServerApp`] wrappers that put every client connection of a proxy listener in a
//! [`HeadDeadline`], and hold Pingora's shutdown cleanup for the drain window.
//!
//! HTTP/1.x connections are served by [`Guarded`]'s own keep-alive loop (Pingora's, in its
//! `ServerApp` for every `HttpServerApp`, with one change): between two requests the
//! connection waits here for the first bytes of the next one ([`HeadDeadline::
//! poll_request_start`]) holding only the connection, and Pingora's per-request state (the
//! proxy's request future and session, ~30 KB) is created when they arrive. Pingora waits
//! for the next request inside that state, so an idle keep-alive connection would hold it for
//! as long as it stays open.
use super::{preface, Deadlines, HeadDeadline};
use async_trait::async_trait;
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::sync::Notify;

/// A [`ServerApp`] whose connections are wrapped in [`HeadDeadline`].
pub struct Guarded<A> {
    inner: Arc<A>,
    deadlines: Deadlines,
    /// See [`super::drain_window`]; zero: none (Pingora's own behaviour).
    drain: Duration,
    /// Where HTTP/2 connections count the errors they are closed for (see [`super::h2`]).
    h2_errors: Option<Arc<crate::metrics::Http2Errors>>,
    /// Set (and waiters woken) by `cleanup` once the drain window is over: connections
    /// waiting here for their next request are closed, as Pingora closes those waiting in it.
    closing: AtomicBool,
    closed: Notify,
}

impl<A> Guarded<A> {
    pub fn new(inner: A, deadlines: Deadlines) -> Self {
        Guarded {
            inner: Arc::new(inner),
            deadlines,
            drain: Duration::ZERO,
            h2_errors: None,
            closing: AtomicBool::new(false),
            closed: Notify::new(),
        }
    }

    /// Count the errors HTTP/2 connections are closed for in `errors`.
    pub fn counting_h2_errors(mut self, errors: Arc<crate::metrics::Http2Errors>) -> Self {
        self.h2_errors = Some(errors);
        self
    }

    /// Keep serving requests on held connections for `drain` after the accept loops stopped.
    pub fn drain_for(mut self, drain: Duration) -> Self {
        self.drain = drain;
        self
    }
}

impl<A: HttpServerApp + Send + Sync + 'static> Guarded<A> {
    /// Serve a TLS connection that chose `h2` by ALPN (`h2: true`) or HTTP/1.1 (`false`).
    pub async fn serve(
        self: &Arc<Self>,
        stream: Stream,
        h2: bool,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if !h2 {
            return self
                .serve_h1(
                    Box::new(HeadDeadline::new(stream, self.deadlines)),
                    shutdown,
                )
                .await;
        }
        let guarded =
            HeadDeadline::expecting_preface(stream, self.deadlines, self.h2_errors.clone());
        self.inner.process_new(Box::new(guarded), shutdown).await
    }

    /// An HTTP/1.x connection's requests, one after the other (see the module docs): the
    /// keep-alive loop of Pingora's `ServerApp` for `HttpServerApp`s, waiting for each
    /// request's first bytes before Pingora's per-request state exists.
    async fn serve_h1(
        self: &Arc<Self>,
        mut conn: Box<HeadDeadline>,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut settings: Option<HttpPersistentSettings> = None;
        let mut first = true;
        loop {
            if !self.request_start(&mut conn).await {
                return None;
            }
            let mut session = ServerSession::new_http1(conn);
            if first {
                // The first request, as Pingora sets it up.
                first = false;
                session.set_keepalive(if *shutdown.borrow() { None } else { Some(60) });
                session.set_keepalive_reuses_remaining(
                    self.inner
                        .server_options()
                        .and_then(|o| o.keepalive_request_limit),
                );
            } else if let Some(s) = settings.take() {
                s.apply_to_session(&mut session);
            }
            let (stream, next) = self
                .inner
                .process_new_http(session, shutdown)
                .await?
                .consume();
            settings = next;
            // The stream handed to the session comes back (Pingora never wraps it).
            conn = stream.into_any().downcast::<HeadDeadline>().ok()?;
        }
    }

    /// Wait until the next request's first bytes arrived on `conn` (true), or the connection
    /// ended: closed by the client, its idle deadline, or the end of the drain window (false).
    async fn request_start(&self, conn: &mut HeadDeadline) -> bool {
        let closed = self.closed.notified();
        tokio::pin!(closed);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = conn.poll_request_start(cx) {
                if let Err(e) = &r {
                    log::debug!("client connection ended before a request: {e}");
                }
                return Poll::Ready(r.unwrap_or(false));
            }
            if closed.as_mut().poll(cx).is_ready() || self.closing.load(Ordering::Acquire) {
                return Poll::Ready(false);
            }
            Poll::Pending
        })
        .await
    }

    /// The connection of an h2c listener: HTTP/1.1, or HTTP/2 with prior knowledge.
    pub async fn serve_h2c(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let guarded =
            HeadDeadline::expecting_preface(stream, self.deadlines, self.h2_errors.clone());
        let peeked: Stream = Box::new(preface::Peeked::new(guarded));
        self.inner.process_new(peeked, shutdown).await
    }
}

/// The [`ServerApp`] of h2c listeners: [`Guarded::serve_h2c`] for every connection.
pub struct H2c<A>(pub Arc<Guarded<A>>);

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for H2c<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        self.0.serve_h2c(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.0.cleanup().await
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for Guarded<A> {
    /// A connection of a plain listener (HTTP/1.x only).
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        self.serve_h1(
            Box::new(HeadDeadline::new(stream, self.deadlines)),
            shutdown,
        )
        .await
    }

    /// Pingora calls this once every accept loop of the service has ended (`Service::
    /// start_service`: `join_all` of the loops, then `cleanup`): nothing is accepted any more.
    /// The inner app's cleanup (Pingora's HTTP cleanup: end every read waiting for a request)
    /// follows the drain window.
    async fn cleanup(&self) {
        if !self.drain.is_zero() {
            log::info!(
                "shutdown: no longer accepting; requests arriving within {:?} on connections \
                 already accepted are still served (with Connection: close), then idle \
                 connections are closed",
                self.drain
            );
            tokio::time::sleep(self.drain).await;
            log::info!("shutdown: drain window over; closing idle connections");
        }
        self.closing.store(true, Ordering::Release);
        self.closed.notify_waiters();
        self.inner.cleanup().await
    }
}

#[cfg(test)]
#[path = "app_tests.rs"]
mod tests;
