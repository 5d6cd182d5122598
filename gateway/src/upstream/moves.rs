//! Sessions moved off their backend on purpose: admin migrations (at a rate), rebalancing of
//! idle sessions (every `load.rebalance.interval`), and the one-time "you moved" notes their
//! next requests carry. Part of the membership tick (`membership.rs`).
use super::membership::{millis, RELAXED};
use super::{Members, Migration, Refused, Upstream};
use berth_routing::{BackendId, Millis, SessionKey};

impl Upstream {
    /// Start a migration of `count` (default all) of `id`'s sessions at `rate` per second.
    /// Returns how many are scheduled.
    pub fn migrate(
        &self,
        id: &str,
        count: Option<usize>,
        rate: Option<u32>,
        now: Millis,
    ) -> Result<usize, Refused> {
        let mut m = self.members.lock();
        m.position(id)
            .ok_or_else(|| Refused::NotFound(format!("no backend {id:?}")))?;
        let backend = self.names.intern(id);
        let pinned = usize::try_from(self.overlay.count(backend)).unwrap_or(usize::MAX);
        let scheduled = count.map_or(pinned, |c| c.min(pinned));
        let rate = rate.unwrap_or(self.settings.migrate_rate).max(1);
        m.migrations.retain(|g| g.backend != backend);
        if scheduled > 0 {
            m.migrations.push(Migration {
                backend,
                remaining: scheduled,
                rate,
                budget: 0.0,
                last: now,
            });
        }
        log::info!(
            "upstream {}: migrating {scheduled} sessions off {id} at {rate}/s",
            self.name
        );
        Ok(scheduled)
    }

    /// The backend a migrated session was moved from, once: its next request says so.
    pub(super) fn take_moved(&self, key: SessionKey) -> Option<BackendId> {
        if self
            .moved_pending
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0
        {
            return None;
        }
        let mut m = self.members.lock();
        let prev = m.moved.remove(&key);
        self.moved_pending
            .store(m.moved.len(), std::sync::atomic::Ordering::Relaxed);
        prev
    }

    /// The moved-session notes wait for each session's next request; sessions that never come
    /// back would keep theirs forever, so past a size the notes of sessions no longer pinned
    /// are dropped (the map stays within the overlay's size).
    fn prune_moved(&self, m: &mut Members) {
        const PRUNE_ABOVE: usize = 10_000;
        if m.moved.len() > PRUNE_ABOVE {
            m.moved.retain(|k, _| self.overlay.info(*k).is_some());
        }
    }

    /// Every `load.rebalance.interval`: move up to `rate × interval` idle sessions off
    /// backends above the load bound (see [`berth_routing::Router::rebalance`]). Each moved
    /// session's next request says so (`X-Berth-Affinity: reassigned`).
    pub(super) fn run_rebalance(&self, m: &mut Members, now: Millis) {
        let Some(rb) = &self.settings.load.rebalance else {
            return;
        };
        let interval = millis(rb.interval);
        if now.saturating_sub(m.last_rebalance) < interval {
            return;
        }
        m.last_rebalance = now;
        let budget = (u64::from(rb.rate) * interval / 1000).max(1) as usize;
        let set = self.current.load();
        let moves = set.router.rebalance(millis(rb.idle_after), now, budget);
        if moves.is_empty() {
            return;
        }
        for mv in &moves {
            m.moved.insert(mv.key, mv.from);
        }
        self.prune_moved(m);
        self.metrics.rebalanced.inc_by(moves.len() as u64);
        self.moved_pending.store(m.moved.len(), RELAXED);
        log::info!(
            "upstream {}: rebalancing moved {} idle sessions",
            self.name,
            moves.len()
        );
    }

    pub(super) fn run_migrations(&self, m: &mut Members, now: Millis) {
        if m.migrations.is_empty() {
            return;
        }
        let set = self.current.load();
        let mut migrations = std::mem::take(&mut m.migrations);
        for g in migrations.iter_mut() {
            g.budget += f64::from(g.rate) * (now.saturating_sub(g.last)) as f64 / 1000.0;
            g.last = now;
            let batch = (g.budget as usize).min(g.remaining);
            if batch == 0 {
                continue;
            }
            let keys = self.overlay.keys_on(g.backend, batch);
            let from = set.router.index_of_id(g.backend);
            let mut moved = 0;
            for key in &keys {
                let failed: &[usize] = from.as_slice();
                if set
                    .router
                    .failover(key.ring_point(), Some(*key), failed, now)
                    .is_some()
                {
                    m.moved.insert(*key, g.backend);
                    moved += 1;
                }
            }
            self.metrics.migrated.inc_by(moved as u64);
            g.budget -= batch as f64;
            g.remaining = if keys.len() < batch || moved == 0 {
                0
            } else {
                g.remaining - moved
            };
        }
        migrations.retain(|g| g.remaining > 0);
        m.migrations = migrations;
        self.prune_moved(m);
        self.moved_pending.store(m.moved.len(), RELAXED);
    }
}
