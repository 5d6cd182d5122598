//! A WebSocket (any HTTP/1.1 `Upgrade`) between the proxy, which knows which backend a socket
//! reached, and the client connection's wrapper (`client_deadlines`), which owns the
//! client's bytes. A [`Tunnel`] is made by the proxy for an upgrade request and published for
//! the client connection ([`publish`]); the wrapper picks it up ([`current`]) and from then on:
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
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
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
    /// Its upgrade request waits for the backend's answer.
    waiting: AtomicBool,
}

impl Tunnel {
    pub fn new(idle: Duration) -> Tunnel {
        Tunnel {
            idle,
            closed: AtomicU8::new(0),
            waker: AtomicWaker::new(),
            waiting: AtomicBool::new(false),
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

/// Upgrade requests and their sockets by client connection (the connection's descriptor: unique
/// while the connection is open, and an entry is withdrawn before the request's connection is
/// dropped): the proxy publishes, the connection's wrapper looks up — when a `101` is written,
/// and, while some upgrade request waits for its answer, when a request's body read waits.
/// Plain requests touch nothing here but one atomic load on a body read that has to wait.
struct Registry {
    by_connection: Mutex<HashMap<i32, Arc<Tunnel>>>,
    /// Upgrade requests published and not yet answered.
    waiting: AtomicUsize,
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| Registry {
    by_connection: Mutex::new(HashMap::new()),
    waiting: AtomicUsize::new(0),
});

/// Make `t` the tunnel of the upgrade request connection `conn` is serving now.
pub fn publish(conn: i32, t: Arc<Tunnel>) {
    t.waiting.store(true, Ordering::Release);
    REGISTRY.waiting.fetch_add(1, Ordering::AcqRel);
    if let Some(old) = REGISTRY.by_connection.lock().insert(conn, t) {
        answered(&old);
    }
}

/// The backend answered `t`'s upgrade request (with a `101` or not).
pub fn answered(t: &Tunnel) {
    if t.waiting.swap(false, Ordering::AcqRel) {
        REGISTRY.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The request of connection `conn` is over: its tunnel, if any, is withdrawn.
pub fn withdraw(conn: i32) {
    if let Some(old) = REGISTRY.by_connection.lock().remove(&conn) {
        answered(&old);
    }
}

/// The tunnel published for connection `conn`.
pub fn current(conn: i32) -> Option<Arc<Tunnel>> {
    REGISTRY.by_connection.lock().get(&conn).cloned()
}

/// The tunnel of connection `conn` if its upgrade request still waits for its answer (one
/// atomic load when no upgrade request waits anywhere).
pub fn waiting(conn: i32) -> Option<Arc<Tunnel>> {
    if REGISTRY.waiting.load(Ordering::Acquire) == 0 {
        return None;
    }
    current(conn).filter(|t| t.waiting.load(Ordering::Acquire))
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

    #[test]
    fn published_per_connection_and_withdrawn() {
        let t = Arc::new(Tunnel::new(Duration::from_secs(1)));
        // Descriptors no real connection of this test process has.
        let (a, b) = (-1000, -1001);
        assert!(current(a).is_none());
        publish(a, t.clone());
        assert!(current(a).is_some_and(|s| Arc::ptr_eq(&s, &t)));
        assert!(waiting(a).is_some());
        assert!(current(b).is_none());
        answered(&t);
        assert!(waiting(a).is_none(), "answered: no longer waiting");
        assert!(current(a).is_some(), "still the connection's socket");
        withdraw(a);
        assert!(current(a).is_none());
    }
}
