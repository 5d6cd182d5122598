//! Slow-client protection below HTTP: every client connection's byte stream is wrapped so that
//! a request head must arrive whole within `limits.header_timeout` of its first byte, and a
//! connection must send the first byte of its next request within `limits.keepalive_timeout`
//! (of being accepted, or of the previous response).
//!
//! Pingora's own read timeouts apply to each read, so a client trickling a head one byte at a
//! time (slowloris) would hold its connection forever. The wrapper sees the bytes Pingora
//! reads: it starts the head clock at the first byte of a request, stops it at the blank line
//! that ends the head, and starts a new head at the first byte read after the response began.
//! A `101 Switching Protocols` answer (WebSocket) turns the connection into a tunnel, timed by
//! its own idle timeout when the proxy published one ([`crate::tunnel`]: no byte in either
//! direction for `websocket.idle_timeout`, and the wait for the answer to the upgrade request
//! too), and ended when the tunnel is closed from outside (a drain deadline, the backend's
//! removal); a `1xx` interim answer (`100 Continue`) keeps waiting for the body.
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
//! HTTP/2 (h2c with prior knowledge, or h2 chosen by ALPN on a TLS listener): a connection
//! that may speak it starts by matching the client's connection preface
//! (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`) under the same deadlines as a request head: the
//! idle one until its first byte, the head one for the rest. Once the preface is complete the
//! connection is HTTP/2 and never timed here: the h2 server closes it after
//! `limits.keepalive_timeout` without a stream in flight (Pingora's `h2_idle_timeout`). Bytes
//! that depart from the preface are an HTTP/1.x head, timed as one. On an h2c listener
//! Pingora peeks at the first bytes to tell the two apart; [`preface::Peeked`] serves that peek
//! through these deadlines (Pingora's own peek waits without a deadline, and for 24 bytes, so a
//! request shorter than that would never be answered).
//!
//! TLS: the TLS listener (the `tls` module) completes the handshake first and hands the decrypted
//! stream here, so the deadlines see request bytes, never TLS records.
//!
//! Cost: one timer per connection, not per request. A deadline is a time stamped when a read
//! would wait in a timed phase (at most one clock read per request); the connection's single
//! timer is re-armed only when it would fire too late for the deadline now due, and when it
//! fires early (the connection moved on since it was armed) it is set again to the deadline
//! now due. Keep-alive connections therefore touch the timer wheel about once per idle
//! timeout rather than once per request — which is also why the idle timeout is enforced
//! here and Pingora's own keep-alive timeout (a timer per request) stays off.
use crate::tunnel::{self, CloseWhy, Tunnel};
use berth_plugins::ConnectionContext;
use bytes::Bytes;
use pingora_core::protocols::Stream;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

pub mod h2;
pub mod preface;

/// A number for each client connection this process accepts (one atomic add per connection).
fn next_connection_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The plugins' context of the client connection under an HTTP/1.x session's `stream`: the
/// [`HeadDeadline`] every connection is wrapped in (under [`preface::Peeked`] on h2c
/// listeners). `None` for another stream.
pub fn connection_of(stream: &Stream) -> Option<&ConnectionContext> {
    let any = stream.as_any();
    if let Some(guarded) = any.downcast_ref::<HeadDeadline>() {
        return Some(&guarded.conn);
    }
    any.downcast_ref::<preface::Peeked>()
        .map(|p| &p.guarded().conn)
}

/// The most [`HeadDeadline::poll_request_start`] reads ahead (on the stack; what it read is
/// then kept in a buffer of its exact size until Pingora reads it).
const READ_AHEAD: usize = 4096;

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

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
    /// After `101 Switching Protocols`: not HTTP any more; timed only by its [`Tunnel`].
    Tunnel,
    /// A connection that may speak HTTP/2, before its first bytes departed from the preface:
    /// `matched` bytes of [`H2_PREFACE`] arrived so far.
    Preface { matched: u8 },
    /// The whole preface arrived: HTTP/2, never timed here.
    H2,
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
    /// On a connection that may speak HTTP/2: the scan of its written frames.
    h2: Option<Box<h2::H2Watch>>,
    /// The tunnel of an upgrade request (published by the proxy), once seen.
    tunnel: Option<Arc<Tunnel>>,
    /// The plugins' context of this connection (its id and their values), reached from a
    /// request through [`connection_of`].
    conn: ConnectionContext,
    /// Bytes read ahead by [`Self::poll_request_start`] (already observed), returned first by
    /// the next reads; empty (no allocation) otherwise.
    ahead: Bytes,
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
            h2: None,
            tunnel: None,
            conn: ConnectionContext::new(next_connection_id()),
            ahead: Bytes::new(),
        }
    }

    /// Wait for the first bytes of the next request (under the idle deadline, as any read):
    /// `true` once some arrived (read ahead; the next reads return them first), `false` at the
    /// end of the stream. See [`Guarded`] for why.
    pub fn poll_request_start(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        if !self.ahead.is_empty() {
            return Poll::Ready(Ok(true));
        }
        // A request head usually fits; the rest is read by Pingora as usual.
        let mut tmp = [std::mem::MaybeUninit::<u8>::uninit(); READ_AHEAD];
        let mut buf = ReadBuf::uninit(&mut tmp);
        match Pin::new(&mut *self).poll_read(cx, &mut buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) if buf.filled().is_empty() => Poll::Ready(Ok(false)),
            Poll::Ready(Ok(())) => {
                self.ahead = Bytes::copy_from_slice(buf.filled());
                Poll::Ready(Ok(true))
            }
        }
    }

    /// Serve a read from the bytes read ahead (there are some); the buffer is freed with the
    /// last of them.
    fn read_ahead(&mut self, buf: &mut ReadBuf<'_>) {
        let n = self.ahead.len().min(buf.remaining());
        buf.put_slice(&self.ahead[..n]);
        bytes::Buf::advance(&mut self.ahead, n);
        if self.ahead.is_empty() {
            self.ahead = Bytes::new();
        }
    }

    /// A connection that may speak HTTP/2 (see the module docs), counting the errors it is
    /// closed for in `errors`.
    pub fn expecting_preface(
        inner: Stream,
        deadlines: Deadlines,
        errors: Option<Arc<crate::metrics::Http2Errors>>,
    ) -> Self {
        let mut s = HeadDeadline::new(inner, deadlines);
        s.phase = Phase::Preface { matched: 0 };
        s.h2 = errors.map(|e| Box::new(h2::H2Watch::new(e)));
        s
    }

    /// True once the connection sent the whole HTTP/2 preface.
    #[cfg(test)]
    pub fn is_h2(&self) -> bool {
        self.phase == Phase::H2
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
            match self.phase {
                Phase::Preface { matched } => self.observe_preface(usize::from(matched), bytes),
                Phase::H2 => self.observe_h2_read(bytes),
                // Activity: the idle time counts from here.
                Phase::Tunnel => self.due = None,
                _ => {}
            }
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

    /// Frame bytes an HTTP/2 client sent after its preface: the control-frame budget.
    fn observe_h2_read(&mut self, bytes: &[u8]) {
        if let Some(w) = self.h2.as_mut() {
            if !bytes.is_empty() {
                let _ = w.read(bytes);
            }
        }
    }

    /// More bytes of a connection that may open with the HTTP/2 preface.
    fn observe_preface(&mut self, matched: usize, bytes: &[u8]) {
        let want = &H2_PREFACE[matched..];
        let n = want.len().min(bytes.len());
        if bytes[..n] == want[..n] {
            self.phase = if matched + n == H2_PREFACE.len() {
                Phase::H2
            } else {
                // At most 23: fits.
                Phase::Preface {
                    matched: (matched + n) as u8,
                }
            };
            // The head clock starts at the first byte (stamped if a read has to wait).
            self.due = None;
            if self.phase == Phase::H2 {
                self.observe_h2_read(&bytes[n..]);
            }
            return;
        }
        // Not HTTP/2: an HTTP/1.x head, of which `matched` bytes arrived before these.
        self.h2 = None;
        self.phase = Phase::Head {
            started: matched > 0,
            newlines: 0,
        };
        self.observe_read(bytes);
    }

    /// Track the bytes about to be written: the first write after a head is the response's
    /// status line. HTTP/2 frames go to the frame scan (from the first byte: an HTTP/2 server
    /// writes its SETTINGS without waiting for the client's preface).
    fn observe_write(&mut self, bytes: &[u8]) {
        match self.phase {
            Phase::Response => {}
            Phase::Tunnel => self.due = None,
            Phase::H2 | Phase::Preface { .. } => {
                if let Some(w) = self.h2.as_mut() {
                    w.written(bytes);
                }
            }
            Phase::Head { .. } | Phase::Body => {
                self.phase = match crate::headers::status_of(bytes) {
                    Some(101) => {
                        if self.tunnel.is_none() {
                            self.tunnel = tunnel::current(self.inner.id());
                        }
                        Phase::Tunnel
                    }
                    Some(100..=199) => Phase::Body,
                    _ => {
                        self.tunnel = None;
                        Phase::Response
                    }
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
            Phase::Head { started: false, .. }
            | Phase::Response
            | Phase::Preface { matched: 0 } => ("no request", self.deadlines.idle),
            Phase::Preface { .. } => ("HTTP/2 preface not complete", self.deadlines.header),
            Phase::Body | Phase::Tunnel => {
                if self.phase == Phase::Body && self.tunnel.is_none() {
                    // An upgrade request waiting for its answer is timed like its socket.
                    self.tunnel = tunnel::waiting(self.inner.id());
                }
                match &self.tunnel {
                    Some(t) => ("WebSocket idle", t.idle),
                    None => return Ok(()),
                }
            }
            Phase::H2 => return Ok(()),
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

mod app;
mod delegate;
mod io_traits;

pub use app::{Guarded, H2c};

#[cfg(test)]
mod tests;
