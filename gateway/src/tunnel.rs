//! A WebSocket (any HTTP/1.1 `Upgrade`) between the proxy, which knows which backend a socket
//! reached, and the client connection's wrapper (`client_deadlines`), which owns the
//! client's bytes. A [`Tunnel`] is made by the proxy for an upgrade request and published to
//! the connection's task ([`publish`]); the wrapper picks it up ([`current`]) and from then on:
//!
//! * times the socket's idleness: no byte in either direction for [`Tunnel::idle`] ends it
//!   (Pingora's own read timeouts would cut a socket that is quiet in one direction only, and
//!   are turned off for upgraded requests: its issue #255);
//! * ends it when someone else closes it ([`Tunnel::close`]: a drain deadline, the backend's
//!   removal): the client's reads end (end of stream) and its writes fail, so Pingora finishes
//!   both halves of the tunnel and closes both connections.
//!
//! It depends on `metrics` only (for [`CloseWhy`]).
pub use crate::metrics::CloseWhy;
use atomic_waker::AtomicWaker;
use std::cell::RefCell;
use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::Context;
use std::time::Duration;

/// One upgraded connection (or one upgrade request waiting for its answer).
#[derive(Debug)]
pub struct Tunnel {
    /// No byte in either direction for this long ends it.
    pub idle: Duration,
    /// 0 while open, else [`CloseWhy::code`] of why it was closed from outside or timed out.
    closed: AtomicU8,
    /// The connection's task, woken by [`Tunnel::close`].
    waker: AtomicWaker,
}

impl Tunnel {
    pub fn new(idle: Duration) -> Tunnel {
        Tunnel {
            idle,
            closed: AtomicU8::new(0),
            waker: AtomicWaker::new(),
        }
    }

    /// End the tunnel for `why` (the first reason given stays); its connection's task wakes up
    /// and finishes it.
    pub fn close(&self, why: CloseWhy) {
        let _ = self
            .closed
            .compare_exchange(0, why.code(), Ordering::AcqRel, Ordering::Acquire);
        self.waker.wake();
    }

    /// Why it was closed, if it was ([`Tunnel::close`], or the wrapper's idle timer).
    pub fn closed(&self) -> Option<CloseWhy> {
        match self.closed.load(Ordering::Acquire) {
            0 => None,
            c => CloseWhy::ALL.get(usize::from(c) - 1).copied(),
        }
    }

    /// True when closed; otherwise the task of `cx` is woken when it is.
    pub fn poll_closed(&self, cx: &Context<'_>) -> bool {
        if self.closed().is_some() {
            return true;
        }
        self.waker.register(cx.waker());
        self.closed().is_some()
    }
}

tokio::task_local! {
    /// The tunnel of the request the connection's task is serving, if it is an upgrade.
    static CURRENT: RefCell<Option<Arc<Tunnel>>>;
}

/// Run a client connection's future (`fut`) with a place for its tunnel. HTTP/1.x requests of a
/// connection are served inside the task that runs this future, so the proxy's hooks and the
/// connection's wrapper meet there.
pub fn scope<F: Future>(fut: F) -> impl Future<Output = F::Output> {
    CURRENT.scope(RefCell::new(None), fut)
}

/// Make `t` the current request's tunnel (`None`: no tunnel, e.g. the backend refused the
/// upgrade). Outside [`scope`] (an HTTP/2 stream) nothing happens.
pub fn publish(t: Option<Arc<Tunnel>>) {
    let _ = CURRENT.try_with(|c| *c.borrow_mut() = t);
}

/// The tunnel the proxy published for this connection's current request.
pub fn current() -> Option<Arc<Tunnel>> {
    CURRENT.try_with(|c| c.borrow().clone()).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_reason_stays() {
        let t = Tunnel::new(Duration::from_secs(1));
        assert_eq!(t.closed(), None);
        t.close(CloseWhy::DrainDeadline);
        t.close(CloseWhy::BackendRemoved);
        assert_eq!(t.closed(), Some(CloseWhy::DrainDeadline));
        for why in CloseWhy::ALL {
            let t = Tunnel::new(Duration::from_secs(1));
            t.close(why);
            assert_eq!(t.closed(), Some(why));
        }
    }

    #[tokio::test]
    async fn published_within_the_scope_only() {
        let t = Arc::new(Tunnel::new(Duration::from_secs(1)));
        publish(Some(t.clone()));
        assert!(current().is_none(), "no scope: nothing kept");
        let seen = scope(async {
            assert!(current().is_none());
            publish(Some(t.clone()));
            let seen = current();
            publish(None);
            (seen, current())
        })
        .await;
        assert!(seen.0.is_some_and(|s| Arc::ptr_eq(&s, &t)));
        assert!(seen.1.is_none());
    }
}
