//! The [`ServerApp`] wrappers that put every client connection of a proxy listener in a
//! [`HeadDeadline`], and hold Pingora's shutdown cleanup for the drain window.
use super::{preface, Deadlines, HeadDeadline};
use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use std::sync::Arc;
use std::time::Duration;

/// A [`ServerApp`] whose connections are wrapped in [`HeadDeadline`].
pub struct Guarded<A> {
    inner: Arc<A>,
    deadlines: Deadlines,
    /// See [`super::drain_window`]; zero: none (Pingora's own behaviour).
    drain: Duration,
    /// Where HTTP/2 connections count the errors they are closed for (see [`super::h2`]).
    h2_errors: Option<Arc<crate::metrics::Http2Errors>>,
}

impl<A> Guarded<A> {
    pub fn new(inner: A, deadlines: Deadlines) -> Self {
        Guarded {
            inner: Arc::new(inner),
            deadlines,
            drain: Duration::ZERO,
            h2_errors: None,
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

impl<A: ServerApp + Send + Sync + 'static> Guarded<A> {
    /// Serve a connection that may speak HTTP/2 (see the module docs): a TLS connection that
    /// chose `h2` by ALPN (`h2: true`) or HTTP/1.1 (`false`), or, wrapped in
    /// [`preface::Peeked`], a connection of an h2c listener.
    pub async fn serve(
        self: &Arc<Self>,
        stream: Stream,
        h2: bool,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let guarded = if h2 {
            HeadDeadline::expecting_preface(stream, self.deadlines, self.h2_errors.clone())
        } else {
            HeadDeadline::new(stream, self.deadlines)
        };
        self.inner.process_new(Box::new(guarded), shutdown).await
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
impl<A: ServerApp + Send + Sync + 'static> ServerApp for H2c<A> {
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
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Guarded<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let guarded: Stream = Box::new(HeadDeadline::new(stream, self.deadlines));
        self.inner.process_new(guarded, shutdown).await
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
        self.inner.cleanup().await
    }
}
