//! Periodic upkeep: idle-pin expiry and each upstream's membership tick (drain completion,
//! passive cooldowns, migrations, rebalancing). Expiry is also applied lazily on lookup; the
//! sweep keeps memory and the per-backend session counts current for sessions that never come
//! back.
use crate::gateway::Gateway;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;

/// Lifecycle ticks every `tick`; overlay sweeps every `sweep`.
pub struct Upkeep {
    pub gw: Arc<Gateway>,
    pub tick: Duration,
    pub sweep: Duration,
    /// Disarmed once the daemon runs (see `launcher`).
    pub ready_exit: Option<crate::launcher::ReadyExit>,
}

#[async_trait]
impl BackgroundService for Upkeep {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if let Some(r) = &self.ready_exit {
            r.disarm();
        }
        let mut tick = tokio::time::interval(self.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_sweep = self.gw.clock.now();
        let sweep_ms = self.sweep.as_millis() as u64;
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => {
                    let now = self.gw.clock.now();
                    let sweep = now.saturating_sub(last_sweep) >= sweep_ms;
                    if sweep {
                        last_sweep = now;
                    }
                    for up in &self.gw.upstreams {
                        if sweep {
                            let n = up.overlay.sweep(now);
                            if n > 0 {
                                log::debug!("upstream {}: {n} idle pins expired", up.name);
                            }
                        }
                        up.tick(now);
                    }
                }
            }
        }
    }
}
