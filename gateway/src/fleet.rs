//! The fleet service: for every upstream whose session registry is Redis, connects it, runs
//! its background work (writer, TTL renewal, ping, broadcasts) on this service's runtime, and
//! applies to the upstream here the admin changes other gateways broadcast, and the stored
//! admin state read whenever the connection comes up. A Berth whose
//! upstreams all use the memory registry runs nothing here.
use crate::gateway::Gateway;
use crate::registry::redis::{Inbound, Now};
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
            reg.set_inbox(Box::new(move |inbound| {
                let Some(up) = weak.upgrade() else { return };
                match inbound {
                    Inbound::Event(event) => up.apply(event, clock.now()),
                    Inbound::Snapshot(snap) => up.apply_stored(&snap, clock.now()),
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
