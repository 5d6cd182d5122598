//! A migration through any gateway moves sessions the whole fleet has pinned to a backend,
//! not only those this gateway has cached: their keys come from the backend's set in Redis,
//! each move is a script that re-pins only if the pin still names the backend and leaves the
//! one-time note (`reassigned`, told to whichever gateway serves the session next), and the
//! moved keys are broadcast so every gateway drops its cached pin.
use super::{keys, Event, RedisRegistry, SessionRegistry, Write};
use crate::metrics::registry::op;
use berth_routing::SessionKey;
use std::sync::Arc;
use std::time::Duration;

/// Where a migrated session goes (a backend id), or `None` when no backend takes it.
pub type Choose = Box<dyn Fn(SessionKey) -> Option<String> + Send + Sync>;

impl RedisRegistry {
    /// Move up to `count` sessions off `from` at `rate` per second, in the background.
    /// `moved(n)` is told how many moved, after each batch.
    pub fn migrate(
        self: &Arc<Self>,
        from: String,
        count: usize,
        rate: u32,
        choose: Choose,
        moved: Box<dyn Fn(u64) + Send + Sync>,
    ) {
        let Some(rt) = self.runtime.get() else {
            log::warn!(
                "upstream {}: migration of {from} refused: the registry has not started",
                self.upstream
            );
            return;
        };
        let me = self.clone();
        rt.spawn(async move {
            let mut left = count;
            let rate = rate.max(1) as usize;
            while left > 0 {
                let batch = left.min(rate);
                let done = me.migrate_batch(&from, batch, &choose).await;
                moved(done as u64);
                if done == 0 {
                    break;
                }
                left = left.saturating_sub(done);
                if left > 0 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            log::info!(
                "upstream {}: migration off {from} done ({} moved)",
                me.upstream,
                count - left
            );
        });
    }

    /// One batch: up to `n` moves; returns how many moved.
    async fn migrate_batch(&self, from: &str, n: usize, choose: &Choose) -> usize {
        let mut moved = Vec::new();
        // Stale members (sessions that expired or moved) are skipped and dropped from the set;
        // ask for a few more than needed.
        let candidates = self.keys_on(from, n * 2 + 8).await;
        for key in candidates {
            if moved.len() >= n {
                break;
            }
            let Some(to) = choose(key) else { break };
            let mut inv = self.migrate.key(self.keys.pin(key));
            inv.key(self.keys.moved(key))
                .arg(from)
                .arg(&to)
                .arg(self.ttl_arg());
            let t = self.conf.command_timeout * 4;
            let r: Option<i64> = self
                .call(op::MIGRATE, t, |mut c| async move {
                    inv.invoke_async(&mut c).await
                })
                .await;
            match r {
                Some(1) => {
                    self.overlay.remove(key);
                    self.push(Write::Repin {
                        key,
                        backend: to,
                        from: Some(from.to_string()),
                    });
                    moved.push(keys::hex(key));
                }
                Some(_) => {
                    // No longer on `from`: a stale member.
                    let mut c = redis::cmd("SREM");
                    c.arg(self.keys.on(from)).arg(keys::hex(key));
                    self.exec(op::WRITE, vec![c]).await;
                }
                None => break,
            }
        }
        let n = moved.len();
        if n > 0 {
            // The Repin writes above rewrite the pins the script already set (same value):
            // they are what moves the set members; the broadcast drops the cached pins.
            self.publish(Event::Invalidate { keys: moved });
        }
        n
    }
}
