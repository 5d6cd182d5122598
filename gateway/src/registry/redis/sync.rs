//! Admin state in Redis (`stored.rs`): written before each broadcast, read when the
//! connection comes up. The broadcast reader runs the reads (`sync_now`), so a snapshot and
//! the broadcasts around it are applied in one order; it reads on the connection that is
//! subscribed, which the `redis` crate re-subscribes before it answers again after a
//! reconnect: a change published after the read arrives as a broadcast.
use super::stored::{self, Snapshot};
use super::{Event, Inbound, RedisRegistry};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::metrics::registry::op;

impl RedisRegistry {
    /// Remember the drains that came from the fleet (see [`stored::plan`]).
    pub fn note(&self, event: &Event) {
        let mut d = self.fleet_drained.lock();
        match event {
            Event::Drain { backend, .. }
            | Event::Add {
                backend,
                drain: true,
                ..
            } => {
                d.insert(backend.clone());
            }
            Event::Undrain { backend } | Event::Remove { backend } | Event::Add { backend, .. } => {
                d.remove(backend);
            }
            Event::Update { .. } | Event::Invalidate { .. } => {}
        }
    }

    pub fn fleet_drained(&self) -> HashSet<String> {
        self.fleet_drained.lock().clone()
    }

    /// Read the stored admin state again soon (after a reload: the file's changes are applied,
    /// then the stored state over them).
    pub fn resync(&self) {
        self.sync.notify_one();
    }

    /// The time a write or read of the stored admin state may take (a few round trips).
    fn admin_timeout(&self) -> Duration {
        self.conf.command_timeout.max(Duration::from_millis(250)) * 4
    }

    /// Write the queued admin state, then publish the queued broadcasts; false (and
    /// everything left queued, in order) when Redis did not answer.
    pub(super) async fn flush_admin(&self) -> bool {
        let _one = self.admin_lock.lock().await;
        let (fields, publish) = {
            let mut q = self.queue.lock();
            (std::mem::take(&mut q.store), std::mem::take(&mut q.publish))
        };
        if !fields.is_empty() {
            let mut inv = self.store.key(self.keys.admin());
            for (f, v) in &fields {
                inv.arg(f).arg(v.as_deref().unwrap_or(""));
            }
            let t = self.admin_timeout();
            let r: Option<i64> = self
                .call(op::WRITE, t, |mut c| async move {
                    inv.invoke_async(&mut c).await
                })
                .await;
            if r.is_none() {
                let mut q = self.queue.lock();
                q.store.splice(0..0, fields);
                q.publish.splice(0..0, publish);
                return false;
            }
        }
        if !publish.is_empty() && !self.send_publish(&publish).await {
            self.queue.lock().publish.splice(0..0, publish);
            return false;
        }
        true
    }

    /// Read the stored admin state and hand it to the upstream (after writing this gateway's
    /// own pending changes, so a sync never undoes a change made here while Redis was down).
    pub(super) async fn sync_now(&self) {
        if !self.flush_admin().await {
            // Down: the next `up` transition asks again.
            return;
        }
        let Some(first) = self.conns.load().as_ref().and_then(|c| c.first().cloned()) else {
            return;
        };
        let key = self.keys.admin();
        let t = self.admin_timeout();
        let pairs: Option<HashMap<String, String>> = self
            .call_on(first, op::SYNC, t, |mut c| async move {
                redis::cmd("HGETALL").arg(key).query_async(&mut c).await
            })
            .await;
        let Some(pairs) = pairs else { return };
        let snap: Snapshot = stored::parse(pairs.into_iter().collect());
        log::info!(
            "upstream {}: stored admin state read ({} backends named)",
            self.upstream,
            snap.len()
        );
        if let Some(inbox) = self.inbox.get() {
            inbox(Inbound::Snapshot(snap));
        }
    }
}
