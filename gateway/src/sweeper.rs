//! Background expiry of idle pins. Expiry is also applied lazily on lookup; the sweep keeps
//! memory and the per-backend session counts current for sessions that never come back.
use crate::upstreams::Gateway;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;

/// Sweeps every upstream's overlay on an interval.
pub struct Sweeper {
    pub gw: Arc<Gateway>,
    pub every: Duration,
}

#[async_trait]
impl BackgroundService for Sweeper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => {
                    let now = self.gw.clock.now();
                    for up in &self.gw.upstreams {
                        let n = up.overlay.sweep(now);
                        if n > 0 {
                            log::debug!("upstream {}: {n} idle pins expired", up.name);
                        }
                    }
                }
            }
        }
    }
}
