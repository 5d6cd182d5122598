//! Tokio's stream traits for [`HeadDeadline`]: reads feed the phase tracking and wait under the
//! deadline now due; writes feed the status-line and HTTP/2 frame scans.
use super::*;

impl AsyncRead for HeadDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.tunnel_closed(cx) {
            // Closed from outside: the end of the client's stream finishes the tunnel.
            return Poll::Ready(Ok(()));
        }
        if !self.ahead.is_empty() {
            self.read_ahead(buf);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let this = &mut *self;
                this.observe_read(&buf.filled()[before..]);
                if this.h2.as_ref().is_some_and(|w| w.flooded()) {
                    return Poll::Ready(Err(io::Error::other(
                        "HTTP/2 control frame flood (SETTINGS/PING over the budget)",
                    )));
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match self.wait(cx) {
                Ok(()) => Poll::Pending,
                Err(_) if self.phase == Phase::Tunnel => {
                    if let Some(t) = &self.tunnel {
                        t.close(CloseWhy::IdleTimeout);
                    }
                    Poll::Ready(Ok(()))
                }
                Err(what) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{what} within the client timeout"),
                ))),
            },
        }
    }
}

impl HeadDeadline {
    /// True when this connection is a tunnel closed from outside (else its task is woken when
    /// it is).
    fn tunnel_closed(&self, cx: &Context<'_>) -> bool {
        self.phase == Phase::Tunnel && self.tunnel.as_ref().is_some_and(|t| t.poll_closed(cx))
    }

    /// A write of `n` bytes from `bufs` on a connection that may speak HTTP/2: the frame scan
    /// must see exactly the bytes written; until the connection is known to be HTTP/1, its
    /// first write is also the response's status line.
    fn observe_h2_write(&mut self, bufs: &[io::IoSlice<'_>], mut n: usize) {
        for b in bufs {
            if n == 0 {
                break;
            }
            let b: &[u8] = b;
            let part = &b[..n.min(b.len())];
            if !part.is_empty() {
                self.observe_write(part);
            }
            n -= part.len();
        }
    }
}

impl AsyncWrite for HeadDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.tunnel_closed(cx) {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n @ 1..)) = r {
            if self.h2.is_some() {
                self.observe_h2_write(&[io::IoSlice::new(buf)], n);
            } else {
                self.observe_write(buf);
            }
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.tunnel_closed(cx) {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let (Poll::Ready(Ok(n @ 1..)), true) = (&r, self.h2.is_some()) {
            self.observe_h2_write(bufs, *n);
        } else if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
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
