//! The DNS discovery families: resolutions by result, the addresses of the last set in use,
//! and the membership changes discovery made. Created with the first upstream that has
//! `discovery:` (a Berth without one exports none of them); every series of such an upstream is
//! resolved up front, so a failure that never happened reads as 0.
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// How one resolution ended (`berth_discovery_resolutions_total{result}`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// At least one address: the new set.
    Ok,
    /// No address (NXDOMAIN, no A/AAAA record): the last set is kept.
    Empty,
    /// No answer (timeout, refused, server failure, unreadable system config): the last set
    /// is kept.
    Error,
}

/// What discovery did to an upstream's membership (`berth_discovery_changes_total{change}`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A new address became a backend.
    Added,
    /// A backend's address disappeared: it drains.
    Draining,
    /// A draining backend's address came back: it takes new sessions again.
    Restored,
    /// A drained backend whose address is gone was removed.
    Removed,
}

impl Resolution {
    pub const ALL: [Resolution; 3] = [Resolution::Ok, Resolution::Empty, Resolution::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Ok => "ok",
            Resolution::Empty => "empty",
            Resolution::Error => "error",
        }
    }
}

impl Change {
    pub const ALL: [Change; 4] = [
        Change::Added,
        Change::Draining,
        Change::Restored,
        Change::Removed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Draining => "draining",
            Change::Restored => "restored",
            Change::Removed => "removed",
        }
    }
}

/// The families (registered once, at the first upstream with `discovery:`).
#[derive(Clone)]
pub struct DiscoveryFamilies {
    resolutions: IntCounterVec,
    addresses: IntGaugeVec,
    changes: IntCounterVec,
}

/// The handles of one upstream's discovery.
pub struct DiscoveryMetrics {
    /// By [`Resolution`] as index.
    pub resolutions: [IntCounter; 3],
    /// Addresses in the set in use (the last non-empty answer).
    pub addresses: IntGauge,
    /// By [`Change`] as index.
    pub changes: [IntCounter; 4],
}

impl DiscoveryFamilies {
    pub(super) fn register(r: &Registry) -> prometheus::Result<DiscoveryFamilies> {
        let resolutions = IntCounterVec::new(
            Opts::new(
                "berth_discovery_resolutions_total",
                "DNS resolutions of an upstream's discovery name, by result: ok (a new set), empty (no address) and error (no answer); empty and error keep the last set.",
            ),
            &["upstream", "result"],
        )?;
        let addresses = IntGaugeVec::new(
            Opts::new(
                "berth_discovery_addresses",
                "Addresses in the set of backends discovery uses now (the last non-empty answer).",
            ),
            &["upstream"],
        )?;
        let changes = IntCounterVec::new(
            Opts::new(
                "berth_discovery_changes_total",
                "Membership changes made by DNS discovery: added, draining (the record disappeared), restored (it came back while draining), removed (drained and gone).",
            ),
            &["upstream", "change"],
        )?;
        r.register(Box::new(resolutions.clone()))?;
        r.register(Box::new(addresses.clone()))?;
        r.register(Box::new(changes.clone()))?;
        Ok(DiscoveryFamilies {
            resolutions,
            addresses,
            changes,
        })
    }

    /// Resolve (and so create at 0) every series of one upstream.
    pub fn upstream(&self, upstream: &str) -> DiscoveryMetrics {
        DiscoveryMetrics {
            resolutions: Resolution::ALL
                .map(|r| self.resolutions.with_label_values(&[upstream, r.as_str()])),
            addresses: self.addresses.with_label_values(&[upstream]),
            changes: Change::ALL.map(|c| self.changes.with_label_values(&[upstream, c.as_str()])),
        }
    }
}

impl DiscoveryMetrics {
    pub fn resolved(&self, r: Resolution) {
        self.resolutions[r as usize].inc();
    }

    pub fn changed(&self, c: Change) {
        self.changes[c as usize].inc();
    }
}
