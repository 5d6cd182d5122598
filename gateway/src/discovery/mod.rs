//! Service discovery: an upstream with `discovery:` takes its backends from the A/AAAA records
//! of a DNS name (a Kubernetes headless service), re-resolved every `interval` and when the
//! records' TTL runs out, whichever comes first.
//!
//! * A record that appears becomes a backend (`add_backend`): pinned sessions do not move,
//!   new sessions reach it.
//! * A record that disappears drains its backend (`set_state(Draining)` with the
//!   `drain_deadline`): its sessions keep reaching it while it answers, move when it fails or
//!   the deadline passes; once drained it is removed (`remove_backend`). Never a mass remap.
//! * A record that comes back while its backend drains restores it (`set_state(Active)`).
//! * A failed or empty resolution keeps the last set (counted in
//!   `berth_discovery_resolutions_total`); the drains it started still complete.
//!
//! Backend ids derive from the address alone ([`plan::backend_id`]), so every gateway that
//! resolves the same name names the same backend alike. Membership changes go through the
//! upstream's own methods only, the ones the admin API and reloads use (`upstream/membership.rs`).
//! The resolution itself is a pingora-load-balancing `ServiceDiscovery` ([`dns::DnsDiscovery`]).
//! Files: `dns.rs` (resolving), `plan.rs` (what to change: pure), this file (the loop).
use crate::config::BackendConf;
use crate::config::DiscoveryConf;
use crate::gateway::Gateway;
use crate::metrics::discovery::{Change, DiscoveryMetrics, Resolution};
use crate::upstream::{AdminState, Upstream};
use async_trait::async_trait;
use pingora_core::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_load_balancing::discovery::ServiceDiscovery;
use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

pub mod dns;
pub mod plan;

use plan::{Seen, Step};

/// Shortest wait between two resolutions when the records' TTL is shorter (0 included).
const MIN_WAIT: Duration = Duration::from_millis(100);

/// Runs the discovery of every upstream that has `discovery:`.
pub struct Discoverer {
    gw: Arc<Gateway>,
    /// One per upstream with `discovery:`: the upstream, its settings, its metric handles.
    upstreams: Vec<(Arc<Upstream>, DiscoveryConf, Arc<DiscoveryMetrics>)>,
}

impl Discoverer {
    /// The discoverer of `gw`, its metric series created now (so a scrape has them from the
    /// start); `None` when no upstream has `discovery:`.
    pub fn new(gw: &Arc<Gateway>) -> Option<Discoverer> {
        let upstreams: Vec<_> = gw
            .upstreams
            .iter()
            .filter_map(|up| {
                let conf = up.settings.discovery.clone()?;
                let metrics = Arc::new(gw.metrics.discovery().upstream(&up.name));
                Some((up.clone(), conf, metrics))
            })
            .collect();
        (!upstreams.is_empty()).then(|| Discoverer {
            gw: gw.clone(),
            upstreams,
        })
    }
}

#[async_trait]
impl BackgroundService for Discoverer {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut loops = JoinSet::new();
        for (up, conf, metrics) in &self.upstreams {
            let lp = Loop {
                gw: self.gw.clone(),
                up: up.clone(),
                conf: conf.clone(),
                metrics: metrics.clone(),
                last: None,
                drained: HashSet::new(),
                failing: false,
            };
            loops.spawn(lp.run());
        }
        let _ = shutdown.changed().await;
        loops.abort_all();
    }
}

/// The discovery of one upstream.
struct Loop {
    gw: Arc<Gateway>,
    up: Arc<Upstream>,
    conf: DiscoveryConf,
    metrics: Arc<DiscoveryMetrics>,
    /// The set in use: the last non-empty answer.
    last: Option<BTreeSet<SocketAddr>>,
    /// Backends this loop put in draining (restored if their address comes back).
    drained: HashSet<String>,
    /// The last resolution failed (logged once per streak).
    failing: bool,
}

impl Loop {
    async fn run(mut self) {
        let mut source: Option<dns::DnsDiscovery> = None;
        loop {
            if source.is_none() {
                match dns::DnsDiscovery::new(&self.conf) {
                    Ok(s) => source = Some(s),
                    Err(why) => self.failed(Resolution::Error, &why),
                }
            }
            let wait = match &source {
                Some(s) => self.resolve(s).await,
                None => self.conf.interval,
            };
            if let Some(want) = self.last.clone() {
                self.follow(&want);
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// One resolution; returns how long to wait for the next.
    async fn resolve(&mut self, source: &(dyn ServiceDiscovery + Sync)) -> Duration {
        // The resolver has its own timeout per query; this bounds the whole call anyway.
        let limit = self.conf.timeout * 4;
        let answer = match tokio::time::timeout(limit, source.discover()).await {
            Ok(a) => a,
            Err(_) => {
                self.failed(Resolution::Error, "no answer in time");
                return self.conf.interval;
            }
        };
        let backends = match answer {
            Ok((backends, _)) => backends,
            Err(e) => {
                self.failed(Resolution::Error, &e.to_string());
                return self.conf.interval;
            }
        };
        let addrs: BTreeSet<SocketAddr> = backends
            .iter()
            .filter_map(|b| match b.addr {
                PingoraAddr::Inet(a) => Some(a),
                PingoraAddr::Unix(_) => None,
            })
            .collect();
        if addrs.is_empty() {
            self.failed(Resolution::Empty, "no A or AAAA record");
            return self.conf.interval;
        }
        self.metrics.resolved(Resolution::Ok);
        if self.failing {
            self.failing = false;
            log::info!(
                "upstream {}: {} resolves again ({} addresses)",
                self.up.name,
                self.conf.dns,
                addrs.len()
            );
        }
        self.metrics.addresses.set(addrs.len() as i64);
        self.last = Some(addrs);
        let expires = backends
            .iter()
            .filter_map(|b| b.ext.get::<dns::ValidUntil>())
            .map(|v| v.0)
            .min();
        next_wait(self.conf.interval, expires, Instant::now())
    }

    /// A resolution that changes nothing: counted; logged at the start of a streak.
    fn failed(&mut self, r: Resolution, why: &str) {
        self.metrics.resolved(r);
        let kept = self.last.as_ref().map_or(0, BTreeSet::len);
        if !self.failing {
            log::warn!(
                "upstream {}: resolving {} gave no backends ({why}); keeping the last set ({kept} addresses)",
                self.up.name,
                self.conf.dns
            );
        } else {
            log::debug!(
                "upstream {}: resolving {}: {why}",
                self.up.name,
                self.conf.dns
            );
        }
        self.failing = true;
    }

    /// Make the upstream's discovered backends follow `want`.
    fn follow(&mut self, want: &BTreeSet<SocketAddr>) {
        let members: Vec<Seen> = self.up.read_members(|m| {
            m.list
                .iter()
                .map(|b| Seen {
                    discovered: !m.file.iter().any(|f| f.id == b.conf.id)
                        && plan::backend_id(&self.conf.id_key, b.conf.addr) == b.conf.id,
                    id: b.conf.id.clone(),
                    addr: b.conf.addr,
                    state: b.state,
                })
                .collect()
        });
        self.drained
            .retain(|id| members.iter().any(|m| &m.id == id));
        for step in plan::plan(&members, want, &self.drained, &self.conf.id_key) {
            self.apply(step);
        }
    }

    fn apply(&mut self, step: Step) {
        let up = &self.up;
        let (done, change) = match step {
            Step::Add { id, addr } => {
                let conf = BackendConf {
                    id,
                    addr,
                    weight: self.conf.weight,
                    max_sessions: up.settings.load.max_sessions,
                    drain: false,
                    max_connections: up.settings.max_connections,
                };
                (up.add_backend(conf).map(drop), Change::Added)
            }
            Step::Drain(id) => {
                let deadline = self.gw.clock.now() + millis(self.conf.drain_deadline);
                let state = AdminState::Draining {
                    deadline: Some(deadline),
                };
                let r = up.set_state(&id, state).map(drop);
                if r.is_ok() {
                    log::info!(
                        "upstream {}: backend {id} is no longer in DNS: draining",
                        up.name
                    );
                    self.drained.insert(id);
                }
                (r, Change::Draining)
            }
            Step::Restore(id) => {
                let r = up.set_state(&id, AdminState::Active).map(drop);
                if r.is_ok() {
                    log::info!("upstream {}: backend {id} is back in DNS", up.name);
                    self.drained.remove(&id);
                }
                (r, Change::Restored)
            }
            Step::Remove(id) => {
                let r = up.remove_backend(&id).map(drop);
                self.drained.remove(&id);
                (r, Change::Removed)
            }
        };
        match done {
            Ok(()) => self.metrics.changed(change),
            Err(why) => log::warn!(
                "upstream {}: discovery could not make a change ({}): {why:?}",
                up.name,
                change.as_str()
            ),
        }
    }
}

/// The wait before the next resolution: `interval`, or sooner when the answer expires first
/// (never less than [`MIN_WAIT`]).
fn next_wait(interval: Duration, expires: Option<Instant>, now: Instant) -> Duration {
    let ttl = expires.map_or(interval, |t| t.saturating_duration_since(now));
    ttl.min(interval).max(MIN_WAIT.min(interval))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_again_at_the_interval_or_when_the_ttl_runs_out() {
        let now = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(next_wait(s(5), None, now), s(5));
        assert_eq!(next_wait(s(5), Some(now + s(30)), now), s(5));
        assert_eq!(next_wait(s(5), Some(now + s(2)), now), s(2));
        assert_eq!(next_wait(s(5), Some(now), now), MIN_WAIT);
    }
}
