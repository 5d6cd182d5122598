//! The fleet service: for every upstream whose session registry is Redis, connects it, runs
//! its background work (writer, TTL renewal, ping, broadcasts) on this service's runtime, and
//! applies the admin changes other gateways broadcast to the upstream here. A Berth whose
//! upstreams all use the memory registry runs nothing here.
use crate::gateway::Gateway;
use crate::registry::redis::Now;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::sync::Arc;

pub struct Fleet {
    pub gw: Arc<Gateway>,
}

#[async_trait]
impl BackgroundService for Fleet {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut runs = Vec::new();
        for up in &self.gw.upstreams {
            let Some(reg) = up.redis.clone() else {
                continue;
            };
            let clock = self.gw.clock;
            let weak = Arc::downgrade(up);
            reg.set_inbox(Box::new(move |event| {
                if let Some(up) = weak.upgrade() {
                    up.apply(event, clock.now());
                }
            }));
            let now: Now = Arc::new(move || clock.now());
            let mut stop = shutdown.clone();
            runs.push(tokio::spawn(reg.run(now, async move {
                let _ = stop.changed().await;
            })));
        }
        if runs.is_empty() {
            return;
        }
        let _ = shutdown.changed().await;
        for r in runs {
            let _ = r.await;
        }
    }
}
