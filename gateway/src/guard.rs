//! Slow-client protection below HTTP: every client connection's byte stream is wrapped so that
//! a request head must arrive whole within `limits.header_timeout` of its first byte, and a
//! connection must send the first byte of its next request within `limits.keepalive_timeout`
//! (of being accepted, or of the previous response).
//!
//! Pingora's own read timeouts apply to each read, so a client trickling a head one byte at a
//! time (slowloris) would hold its connection forever. The wrapper sees the bytes Pingora
//! reads: it starts the head clock at the first byte of a request, stops it at the blank line
//! that ends the head, and starts a new head at the first byte read after the response began.
//! A `101 Switching Protocols` answer (WebSocket) turns the connection into a tunnel that is
//! never timed here; a `1xx` interim answer (`100 Continue`) keeps waiting for the body.
//! Bodies are timed by Pingora (`limits.body_timeout`, set per request in the proxy).
//!
//! Shutdown (SIGQUIT after `berth -u`, SIGTERM): once Pingora's accept loops have stopped it
//! calls the app's `cleanup`, and Pingora's HTTP cleanup ends at once every read still waiting
//! for a request head — also on a connection accepted a moment before, whose first request
//! has not arrived yet: that client gets its connection closed without a response
//! (issue 19). [`Guarded`] first keeps reading for a drain window (half the grace period, see
//! [`drain_window`]): no connection is accepted any more, a request that arrives on any
//! connection the process holds is served with `Connection: close` (Pingora turns keep-alive
//! off for requests read after the shutdown started), and only then are the connections that
//! stayed silent closed.
//!
//! Cost: one timer per connection, not per request. A deadline is a time stamped when a read
//! would wait in a timed phase (at most one clock read per request); the connection's single
//! timer is re-armed only when it would fire too late for the deadline now due, and when it
//! fires early (the connection moved on since it was armed) it is set again to the deadline
//! now due. Keep-alive connections therefore touch the timer wheel about once per idle
//! timeout rather than once per request — which is also why the idle timeout is enforced
//! here and Pingora's own keep-alive timeout (a timer per request) stays off.
use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::TlsRef;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora_core::server::ShutdownWatch;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The deadlines the wrapper enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// From the first byte of a request head to its end.
    pub header: Duration,
    /// From accepting a connection, or from the start of a response, to the first byte of the
    /// next request.
    pub idle: Duration,
}

/// How long a shutting-down process keeps reading requests on the connections it holds after
/// it stopped accepting (see the module docs): half of `grace_period` (Pingora's
/// `grace_period_seconds`, after which the process stops whatever still runs), so a request
/// that arrives at the end of the window has the other half to be answered.
pub fn drain_window(grace_period: Duration) -> Duration {
    grace_period / 2
}

/// A [`ServerApp`] whose connections are wrapped in [`HeadDeadline`].
pub struct Guarded<A> {
    inner: Arc<A>,
    deadlines: Deadlines,
    /// See [`drain_window`]; zero: none (Pingora's own behaviour).
    drain: Duration,
}

impl<A> Guarded<A> {
    pub fn new(inner: A, deadlines: Deadlines) -> Self {
        Guarded {
            inner: Arc::new(inner),
            deadlines,
            drain: Duration::ZERO,
        }
    }

    /// Keep serving requests on held connections for `drain` after the accept loops stopped.
    pub fn drain_for(mut self, drain: Duration) -> Self {
        self.drain = drain;
        self
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

/// Where a connection is in its request/response cycle, as far as its bytes tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for or reading a request head. `started`: a byte of it arrived; `newlines`:
    /// consecutive line ends seen (CR ignored); two end the head.
    Head { started: bool, newlines: u8 },
    /// Head complete: body, then the response.
    Body,
    /// The response began; the next byte read starts a new request head.
    Response,
    /// After `101 Switching Protocols`: not HTTP any more, never timed.
    Tunnel,
}

/// A client connection's stream with the head deadline applied (see the module docs).
pub struct HeadDeadline {
    inner: Stream,
    deadlines: Deadlines,
    phase: Phase,
    /// When the current timed wait ends: stamped at the first read that would wait in a timed
    /// phase (`None` until then, and in untimed phases).
    due: Option<Instant>,
    /// The connection's one timer, created at the first timed wait.
    timer: Option<Pin<Box<Sleep>>>,
}

impl std::fmt::Debug for HeadDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadDeadline")
            .field("inner", &self.inner)
            .field("phase", &self.phase)
            .field("due", &self.due)
            .finish()
    }
}

impl HeadDeadline {
    pub fn new(inner: Stream, deadlines: Deadlines) -> Self {
        HeadDeadline {
            inner,
            deadlines,
            phase: Phase::Head {
                started: false,
                newlines: 0,
            },
            // A new connection's idle time counts from its acceptance.
            due: Some(Instant::now() + deadlines.idle),
            timer: None,
        }
    }

    /// Track the bytes just read.
    fn observe_read(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.phase == Phase::Response {
            self.phase = Phase::Head {
                started: false,
                newlines: 0,
            };
        }
        let Phase::Head {
            mut started,
            mut newlines,
        } = self.phase
        else {
            return;
        };
        let mut rest = bytes;
        if !started {
            // Empty lines before a request line are allowed (RFC 9112 §2.2).
            let Some(first) = rest.iter().position(|&b| b != b'\r' && b != b'\n') else {
                return;
            };
            rest = &rest[first..];
            started = true;
            newlines = 0;
            // The head's clock starts now; stamped only if a read has to wait for the rest.
            self.due = None;
        }
        // The head ends at an empty line: two line ends with nothing but CRs between them.
        while let Some(i) = memchr::memchr(b'\n', rest) {
            if rest[..i].iter().any(|&b| b != b'\r') {
                newlines = 1;
            } else {
                newlines += 1;
            }
            if newlines == 2 {
                self.phase = Phase::Body;
                self.due = None;
                return;
            }
            rest = &rest[i + 1..];
        }
        if rest.iter().any(|&b| b != b'\r') {
            newlines = 0;
        }
        self.phase = Phase::Head { started, newlines };
    }

    /// Track the bytes about to be written: the first write after a head is the response's
    /// status line.
    fn observe_write(&mut self, bytes: &[u8]) {
        match self.phase {
            Phase::Response | Phase::Tunnel => {}
            Phase::Head { .. } | Phase::Body => {
                let status = bytes
                    .strip_prefix(b"HTTP/1.")
                    .and_then(|rest| rest.get(2..5));
                self.phase = match status {
                    Some(b"101") => Phase::Tunnel,
                    Some([b'1', _, _]) => Phase::Body,
                    _ => Phase::Response,
                };
                // The idle time until the next request counts from the response's start.
                self.due = None;
            }
        }
    }

    /// A read is about to wait: `Err` when the current deadline has passed, else the timer is
    /// armed (registered with `cx`) no later than the deadline.
    fn wait(&mut self, cx: &mut Context<'_>) -> Result<(), &'static str> {
        let (what, wait) = match self.phase {
            Phase::Head { started: true, .. } => {
                ("request head not complete", self.deadlines.header)
            }
            Phase::Head { started: false, .. } | Phase::Response => {
                ("no request", self.deadlines.idle)
            }
            Phase::Body | Phase::Tunnel => return Ok(()),
        };
        let due = *self.due.get_or_insert_with(|| Instant::now() + wait);
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        if timer.deadline() > due {
            timer.as_mut().reset(due);
        }
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return Ok(());
            }
            // Fired: either this deadline, or an earlier one the connection has moved past.
            if timer.deadline() >= due {
                return Err(what);
            }
            timer.as_mut().reset(due);
        }
    }
}

impl AsyncRead for HeadDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let this = &mut *self;
                this.observe_read(&buf.filled()[before..]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match self.wait(cx) {
                Ok(()) => Poll::Pending,
                Err(what) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{what} within the client timeout"),
                ))),
            },
        }
    }
}

impl AsyncWrite for HeadDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.observe_write(buf);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
                let first: &[u8] = first;
                self.observe_write(first);
            }
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for HeadDeadline {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for HeadDeadline {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeadDeadline {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<pingora_core::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeadDeadline {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeadDeadline {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for HeadDeadline {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
    fn set_socket_digest(&mut self, socket_digest: SocketDigest) {
        self.inner.set_socket_digest(socket_digest)
    }
}

#[async_trait]
impl Peek for HeadDeadline {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    const D: Deadlines = Deadlines {
        header: Duration::from_millis(300),
        idle: Duration::from_millis(300),
    };
    /// Comfortably past both deadlines.
    const PAST: Duration = Duration::from_millis(900);

    /// A guarded server side and its client, over real loopback TCP.
    async fn pair() -> (HeadDeadline, TcpStream) {
        pair_with(D).await
    }

    async fn pair_with(d: Deadlines) -> (HeadDeadline, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let stream: Stream = Box::new(pingora_core::protocols::l4::stream::Stream::from(server));
        (HeadDeadline::new(stream, d), client)
    }

    /// Read until `n` bytes arrived, an error, or EOF.
    async fn read_n(s: &mut HeadDeadline, n: usize) -> io::Result<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while got.len() < n {
            let k = s.read(&mut buf).await?;
            if k == 0 {
                break;
            }
            got.extend_from_slice(&buf[..k]);
        }
        Ok(got)
    }

    /// A read that neither returns data nor fails for `PAST`.
    async fn stays_open(s: &mut HeadDeadline) {
        let mut buf = [0u8; 16];
        let r = tokio::time::timeout(PAST, s.read(&mut buf)).await;
        assert!(r.is_err(), "the read ended: {r:?}");
    }

    async fn times_out(s: &mut HeadDeadline) {
        let mut buf = [0u8; 64];
        let r = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) => return Ok(()),
                    Ok(_) => continue,
                    Err(e) => return Err(e),
                }
            }
        })
        .await
        .expect("the deadline fired");
        let e = r.expect_err("a timeout error, not EOF");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    /// An inner app that counts its cleanups.
    struct Counted(Arc<std::sync::atomic::AtomicUsize>);

    #[async_trait]
    impl ServerApp for Counted {
        async fn process_new(self: &Arc<Self>, _s: Stream, _w: &ShutdownWatch) -> Option<Stream> {
            None
        }
        async fn cleanup(&self) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn idle_reads_are_ended_only_after_the_drain_window() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        assert_eq!(
            drain_window(Duration::from_secs(5)),
            Duration::from_millis(2500)
        );
        let cleaned = Arc::new(AtomicUsize::new(0));
        // No window: the inner cleanup (Pingora's end of idle reads) at once.
        Guarded::new(Counted(cleaned.clone()), D).cleanup().await;
        assert_eq!(cleaned.load(SeqCst), 1);
        // With one: not while it lasts.
        let g = Arc::new(
            Guarded::new(Counted(cleaned.clone()), D).drain_for(Duration::from_secs(3600)),
        );
        let task = tokio::spawn({
            let g = g.clone();
            async move { g.cleanup().await }
        });
        tokio::time::sleep(PAST).await;
        assert_eq!(
            cleaned.load(SeqCst),
            1,
            "idle reads ended within the window"
        );
        assert!(!task.is_finished());
        task.abort();
    }

    #[tokio::test]
    async fn a_silent_new_connection_is_cut() {
        let (mut s, _client) = pair().await;
        times_out(&mut s).await;
    }

    #[tokio::test]
    async fn a_trickled_head_is_cut() {
        let (mut s, mut client) = pair().await;
        let trickle = tokio::spawn(async move {
            client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if client.write_all(b"X: 1\r\n").await.is_err() {
                    break;
                }
            }
        });
        times_out(&mut s).await;
        trickle.abort();
    }

    #[tokio::test]
    async fn a_complete_head_stops_the_clock_and_the_response_restarts_it() {
        // Idle longer than PAST: the head clock, not the idle one, cuts the trickled head.
        let (mut s, mut client) = pair_with(Deadlines {
            header: D.header,
            idle: Duration::from_secs(3),
        })
        .await;
        let head = b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n";
        client.write_all(head).await.unwrap();
        assert_eq!(read_n(&mut s, head.len()).await.unwrap(), head);
        // Waiting for the body or the backend is not timed here.
        stays_open(&mut s).await;
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap();
        // Idle between requests, within keepalive_timeout.
        stays_open(&mut s).await;
        // The next head, trickled, is timed from its first byte.
        client.write_all(b"GET /2 HTTP/1.1\r\n").await.unwrap();
        times_out(&mut s).await;
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_cut_and_a_busy_one_is_not() {
        let (mut s, mut client) = pair().await;
        // A request every 100 ms for 3× the idle timeout, each read waiting for it (the timer is
        // armed): each idle time counts from the previous response, so the connection stays
        // (the one timer fires early, re-arms, never cuts).
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let sender = tokio::spawn(async move {
            for _ in 0..9 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                client.write_all(head).await.unwrap();
            }
            client
        });
        for _ in 0..9 {
            assert_eq!(read_n(&mut s, head.len()).await.unwrap(), head);
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .await
                .unwrap();
        }
        let _client = sender.await.unwrap();
        // Then nothing: cut once idle for keepalive_timeout after the last response.
        let t = std::time::Instant::now();
        times_out(&mut s).await;
        let idle = t.elapsed();
        assert!(idle >= D.idle - Duration::from_millis(110), "{idle:?}");
    }

    #[tokio::test]
    async fn a_head_split_over_reads_is_found_whole() {
        // CR LF split between reads, bare LFs, leading empty lines: the head still ends at its
        // empty line and no timeout follows while the response is awaited.
        let (mut s, mut client) = pair().await;
        for part in [
            &b"\r\n\r\nGET / HTTP/1.1\r"[..],
            b"\nHost: x\r\nA: b\r\n\r",
            b"\n",
        ] {
            client.write_all(part).await.unwrap();
            read_n(&mut s, part.len()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stays_open(&mut s).await;
        let (mut s, mut client) = pair().await;
        let head = b"GET / HTTP/1.1\nHost: x\n\n";
        client.write_all(head).await.unwrap();
        read_n(&mut s, head.len()).await.unwrap();
        stays_open(&mut s).await;
        // A line of CRs only is not an empty line's end unless a LF follows.
        let (mut s, mut client) = pair().await;
        let head = b"GET / HTTP/1.1\r\nX: y\r\r";
        client.write_all(head).await.unwrap();
        read_n(&mut s, head.len()).await.unwrap();
        times_out(&mut s).await;
    }

    #[tokio::test]
    async fn interim_responses_keep_waiting_for_the_body_and_101_is_a_tunnel() {
        let (mut s, mut client) = pair().await;
        let head = b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\n";
        client.write_all(head).await.unwrap();
        read_n(&mut s, head.len()).await.unwrap();
        s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.unwrap();
        client.write_all(b"bo").await.unwrap();
        assert_eq!(read_n(&mut s, 2).await.unwrap(), b"bo");
        stays_open(&mut s).await;

        let (mut s, mut client) = pair().await;
        let head = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        client.write_all(head).await.unwrap();
        read_n(&mut s, head.len()).await.unwrap();
        s.write_all(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
            .await
            .unwrap();
        client.write_all(b"\x81\x05hello").await.unwrap();
        assert_eq!(read_n(&mut s, 7).await.unwrap(), b"\x81\x05hello");
        stays_open(&mut s).await;
    }
}
