//! [`Peeked`]: the peek Pingora makes on an h2c listener, served under the client deadlines.
//!
//! Pingora 0.9.1 decides between HTTP/1.1 and HTTP/2 on a plain listener with `h2c` on by
//! peeking at the first 24 bytes and comparing them with the HTTP/2 preface. Its TCP stream
//! peeks by reading exactly 24 bytes, without a deadline: a client that sends nothing, or an
//! HTTP/1.x request shorter than 24 bytes (`GET / HTTP/1.0\r\n\r\n`), would hold the
//! connection unanswered forever. Here the peek reads through the [`HeadDeadline`] (so the idle
//! and head deadlines apply) and stops as soon as the bytes depart from the preface; the bytes
//! it read are handed out again by the next reads.
use super::{HeadDeadline, H2_PREFACE};
use async_trait::async_trait;
use pingora_core::protocols::Peek;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// A guarded connection of an h2c listener, with the bytes a peek read kept for the next reads.
#[derive(Debug)]
pub struct Peeked {
    inner: HeadDeadline,
    /// Bytes read by the peek and not yet handed to a read.
    kept: [u8; H2_PREFACE.len()],
    /// `kept[start..end]` is still to be read.
    start: usize,
    end: usize,
}

impl Peeked {
    /// The guarded connection underneath.
    pub fn guarded(&self) -> &HeadDeadline {
        &self.inner
    }

    pub fn new(inner: HeadDeadline) -> Peeked {
        Peeked {
            inner,
            kept: [0; H2_PREFACE.len()],
            start: 0,
            end: 0,
        }
    }
}

#[async_trait]
impl Peek for Peeked {
    /// Fills `buf` with the connection's first bytes: exactly as sent while they match the
    /// HTTP/2 preface; once they depart from it, the bytes read so far and then zeros (the
    /// caller only asks whether the connection starts with the preface). Waits no longer than
    /// the client deadlines allow; `Err` when they pass or the client closes first.
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        let want = buf.len().min(self.kept.len());
        while self.end < want && self.kept[..self.end] == H2_PREFACE[..self.end] {
            let n = self.inner.read(&mut self.kept[self.end..want]).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.end += n;
        }
        let n = self.end.min(buf.len());
        buf[..n].copy_from_slice(&self.kept[..n]);
        buf[n..].fill(0);
        Ok(true)
    }
}

impl AsyncRead for Peeked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.start < this.end {
            let n = (this.end - this.start).min(buf.remaining());
            buf.put_slice(&this.kept[this.start..this.start + n]);
            this.start += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Peeked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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

super::delegate::pass_to_inner!(Peeked);
