//! An upstream's open WebSockets (upgraded connections): which backend each one reaches, so a
//! drain deadline or a backend's removal can close them, a drain can wait for them, and
//! `berth_websockets_open` counts them. Nothing here runs for a request that is no upgrade.
//!
//! A socket's session stays in flight for the socket's whole life (the request that opened it
//! ends when the socket does), so it is an active session that expiry, migration and
//! rebalancing never move.
use super::{BackendSet, Upstream};
use crate::metrics::{CloseWhy, UpgradeFailure};
use crate::policy::Attempt;
use crate::tunnel::{self, Tunnel};
use parking_lot::Mutex;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType};
use pingora_proxy::Session;
use prometheus::IntGauge;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The open sockets of one upstream.
#[derive(Default)]
pub struct Sockets {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Open>>,
}

struct Open {
    backend: Arc<str>,
    tunnel: Arc<Tunnel>,
    /// Its backend's `berth_websockets_open`.
    gauge: IntGauge,
}

/// An upgrade request on its way, then its socket.
pub struct WsRequest {
    tunnel: Arc<Tunnel>,
    /// Its client connection (see [`crate::tunnel`]).
    conn: i32,
    /// Its entry in [`Sockets`] once the backend answered `101`.
    id: Option<u64>,
}

impl Sockets {
    /// Sockets open to backend `id`.
    pub fn open_on(&self, id: &str) -> usize {
        let open = self.open.lock();
        if open.is_empty() {
            return 0;
        }
        open.values().filter(|o| &*o.backend == id).count()
    }

    /// Close every socket to backend `id` for `why`; how many.
    pub fn close_on(&self, id: &str, why: CloseWhy) -> usize {
        self.close_where(|b| b == id, why)
    }

    /// Close every socket whose backend `keep` refuses, for `why`; how many.
    pub fn close_where(&self, close: impl Fn(&str) -> bool, why: CloseWhy) -> usize {
        let open = self.open.lock();
        let mut n = 0;
        for o in open.values().filter(|o| close(&o.backend)) {
            o.tunnel.close(why);
            n += 1;
        }
        n
    }
}

impl Upstream {
    /// An upgrade request on client connection `conn` was routed: its tunnel, published for
    /// the connection (see [`crate::tunnel`]).
    pub fn upgrade_request(&self, conn: i32) -> WsRequest {
        let tunnel = Arc::new(Tunnel::new(self.settings.websocket.idle_timeout));
        tunnel::publish(conn, tunnel.clone());
        WsRequest {
            tunnel,
            conn,
            id: None,
        }
    }

    /// The peer of an upgrade request: no read timeout (Pingora would apply it to the socket's
    /// reads from the backend, cutting sockets that only the client talks on: its issue #255;
    /// idleness is timed in both directions by the client connection's wrapper instead), and
    /// HTTP/1.1, which the upgrade needs.
    pub fn upgrade_peer(peer: &mut HttpPeer) {
        peer.options.read_timeout = None;
        peer.options.set_http_version(1, 1);
    }

    /// The backend answered the upgrade request of `a` with `status`: a `101` opens a socket
    /// (registered, counted; the client connection's Pingora timeouts become the socket's:
    /// no read timeout, `send_timeout` for writes); anything else is a refusal (counted) and
    /// `ws` is gone.
    pub fn upgrade_answered(
        &self,
        set: &BackendSet,
        a: &Attempt,
        ws: &mut Option<WsRequest>,
        status: u16,
        session: &mut Session,
    ) {
        let (Some(w), Some(d)) = (ws.as_mut(), a.decision) else {
            return;
        };
        tunnel::answered(&w.tunnel);
        if status != 101 {
            self.metrics
                .websockets
                .failed(UpgradeFailure::Refused)
                .inc();
            tunnel::withdraw(w.conn);
            *ws = None;
            return;
        }
        let backend = &set.backends[d.backend];
        let id = self.sockets.next.fetch_add(1, Ordering::Relaxed);
        backend.metrics.websockets.opened.inc();
        backend.metrics.websockets.open.inc();
        self.sockets.open.lock().insert(
            id,
            Open {
                backend: backend.name.clone(),
                tunnel: w.tunnel.clone(),
                gauge: backend.metrics.websockets.open.clone(),
            },
        );
        w.id = Some(id);
        session.set_read_timeout(None);
        session.set_write_timeout(Some(self.settings.websocket.send_timeout));
    }

    /// The request of `ws` is over (`e`: how it failed, if it did): its socket, if one was
    /// opened, is closed and counted by why.
    pub fn upgrade_ended(&self, ws: WsRequest, e: Option<&Error>) {
        // The connection's next request (after an upgrade that failed) is no upgrade.
        tunnel::withdraw(ws.conn);
        let Some(id) = ws.id else { return };
        if let Some(o) = self.sockets.open.lock().remove(&id) {
            o.gauge.dec();
        }
        let why = ws.tunnel.closed().unwrap_or(match e.map(|e| e.etype()) {
            None => CloseWhy::Closed,
            Some(ErrorType::WriteTimedout) => CloseWhy::SendTimeout,
            Some(ErrorType::ReadTimedout) => CloseWhy::IdleTimeout,
            Some(_) => CloseWhy::Error,
        });
        self.metrics.websockets.closed(why).inc();
    }

    /// A request that asked for no upgrade got `101` from its backend: counted, and the error
    /// that refuses it (the client gets a 502; the backend's connection is not reused).
    pub fn unasked_upgrade(&self) -> pingora_error::Result<()> {
        self.metrics
            .websockets
            .failed(UpgradeFailure::Unasked)
            .inc();
        Error::e_explain(
            ErrorType::InvalidHTTPHeader,
            "the backend answered 101 Switching Protocols to a request that asked for no upgrade",
        )
        .map_err(|e| e.into_up())
    }
}
