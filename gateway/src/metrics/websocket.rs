//! The WebSocket families: sockets open now and opened so far per backend, sockets ended by
//! why, and upgrade requests that did not become a socket by why. Every series of an upstream
//! or backend is resolved with it, so a close that never happened reads as 0.
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Why a socket ended (`berth_websockets_closed_total{why}`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CloseWhy {
    /// The client or the backend closed it.
    Closed,
    /// No byte in either direction for `websocket.idle_timeout`.
    IdleTimeout,
    /// The client took no data for `websocket.send_timeout` (it stopped reading).
    SendTimeout,
    /// Its backend was drained and the drain's deadline passed.
    DrainDeadline,
    /// Its backend was removed.
    BackendRemoved,
    /// An I/O or protocol error on either side.
    Error,
}

impl CloseWhy {
    pub const ALL: [CloseWhy; 6] = [
        CloseWhy::Closed,
        CloseWhy::IdleTimeout,
        CloseWhy::SendTimeout,
        CloseWhy::DrainDeadline,
        CloseWhy::BackendRemoved,
        CloseWhy::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CloseWhy::Closed => "closed",
            CloseWhy::IdleTimeout => "idle_timeout",
            CloseWhy::SendTimeout => "send_timeout",
            CloseWhy::DrainDeadline => "drain_deadline",
            CloseWhy::BackendRemoved => "backend_removed",
            CloseWhy::Error => "error",
        }
    }

    pub(crate) fn code(self) -> u8 {
        // 0 is "open".
        CloseWhy::ALL.iter().position(|w| *w == self).unwrap_or(0) as u8 + 1
    }
}

/// Why an upgrade request did not become a socket
/// (`berth_websocket_upgrades_failed_total{why}`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum UpgradeFailure {
    /// The backend answered the upgrade request without `101` (it refused it).
    Refused,
    /// The backend answered `101` to a request that asked for no upgrade (Berth answers 502).
    Unasked,
}

impl UpgradeFailure {
    pub const ALL: [UpgradeFailure; 2] = [UpgradeFailure::Refused, UpgradeFailure::Unasked];

    pub fn as_str(self) -> &'static str {
        match self {
            UpgradeFailure::Refused => "refused",
            UpgradeFailure::Unasked => "unasked_101",
        }
    }
}

/// The families (registered once).
#[derive(Clone)]
pub struct WebSocketFamilies {
    open: IntGaugeVec,
    opened: IntCounterVec,
    closed: IntCounterVec,
    failed: IntCounterVec,
}

/// A backend's handles.
pub struct BackendSockets {
    /// `berth_websockets_open`.
    pub open: IntGauge,
    /// `berth_websockets_total`.
    pub opened: IntCounter,
}

/// An upstream's handles.
pub struct UpstreamSockets {
    /// By [`CloseWhy::ALL`].
    closed: [IntCounter; 6],
    /// By [`UpgradeFailure::ALL`].
    failed: [IntCounter; 2],
}

impl UpstreamSockets {
    pub fn closed(&self, why: CloseWhy) -> &IntCounter {
        let i = CloseWhy::ALL.iter().position(|w| *w == why).unwrap_or(0);
        &self.closed[i]
    }

    pub fn failed(&self, why: UpgradeFailure) -> &IntCounter {
        &self.failed[why as usize]
    }
}

impl WebSocketFamilies {
    pub fn register(r: &Registry) -> prometheus::Result<WebSocketFamilies> {
        let open = IntGaugeVec::new(
            Opts::new(
                "berth_websockets_open",
                "WebSockets (upgraded connections) open now, by the backend they reach.",
            ),
            &["upstream", "backend"],
        )?;
        let opened = IntCounterVec::new(
            Opts::new(
                "berth_websockets_total",
                "WebSockets opened (101 from the backend), by backend.",
            ),
            &["upstream", "backend"],
        )?;
        let closed = IntCounterVec::new(
            Opts::new(
                "berth_websockets_closed_total",
                "WebSockets ended: closed (by the client or the backend), idle_timeout, send_timeout (the client stopped reading), drain_deadline, backend_removed, error.",
            ),
            &["upstream", "why"],
        )?;
        let failed = IntCounterVec::new(
            Opts::new(
                "berth_websocket_upgrades_failed_total",
                "Upgrade requests that did not become a socket: refused (the backend answered without 101), unasked_101 (a 101 to a request that asked for no upgrade; answered 502).",
            ),
            &["upstream", "why"],
        )?;
        r.register(Box::new(open.clone()))?;
        r.register(Box::new(opened.clone()))?;
        r.register(Box::new(closed.clone()))?;
        r.register(Box::new(failed.clone()))?;
        Ok(WebSocketFamilies {
            open,
            opened,
            closed,
            failed,
        })
    }

    pub fn backend(&self, upstream: &str, backend: &str) -> BackendSockets {
        BackendSockets {
            open: self.open.with_label_values(&[upstream, backend]),
            opened: self.opened.with_label_values(&[upstream, backend]),
        }
    }

    /// Delete a removed backend's series.
    pub fn forget_backend(&self, upstream: &str, backend: &str) {
        let _ = self.open.remove_label_values(&[upstream, backend]);
        let _ = self.opened.remove_label_values(&[upstream, backend]);
    }

    pub fn upstream(&self, upstream: &str) -> UpstreamSockets {
        UpstreamSockets {
            closed: CloseWhy::ALL.map(|w| self.closed.with_label_values(&[upstream, w.as_str()])),
            failed: UpgradeFailure::ALL
                .map(|w| self.failed.with_label_values(&[upstream, w.as_str()])),
        }
    }
}
