//! The Redis session registry of one upstream: the overlay as a bounded local cache in front
//! of pins kept in Redis (or Redis Cluster) and shared by every gateway pointed at it.
//!
//! * **Request path**: a warm session is a local cache hit, no round trip. A session's first
//!   request on this gateway runs one script (`keys::first_pin`): `SET NX PX` or the pin that
//!   is already there, so gateways racing on a session agree on one backend.
//! * **Background** (`tasks.rs`, every 100 ms or when woken): re-pins, per-backend sets,
//!   write-backs and broadcasts go out batched; TTLs of the sessions used since the last
//!   round are renewed in one pipeline every `refresh_interval` — never one write per request.
//! * **Admin changes** (`stored.rs`, `sync.rs`): stored in one hash per upstream, then
//!   broadcast; the hash is read at connect, on every reconnect and after a reload.
//! * **Failure**: every call has `timeouts.command`; a call that fails marks the registry down
//!   (`berth_registry_up` 0) and, until a ping answers again, new sessions are placed from the
//!   local cache and the ring without asking (`degraded`), their pins kept for write-back with
//!   `NX` (a pin another gateway made meanwhile wins; ours is dropped from the cache).
use super::{Agreed, Envelope, Event, SessionRegistry};
use crate::config::RedisConf;
use crate::metrics::registry::op;
use crate::metrics::registry::RegistryMetrics;
use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use berth_routing::{Interner, Overlay, SessionKey};
use parking_lot::Mutex;
use redis::Script;
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

mod conn;
pub mod keys;
mod migrate;
pub mod stored;
mod sync;
mod tasks;

pub use conn::Conn;
use keys::Keys;
pub use tasks::Now;

/// A write waiting for the background writer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Write {
    /// A first pin made while Redis did not answer: written back with `NX`.
    Back { key: SessionKey, backend: String },
    /// A new session's entry in its backend's set.
    Index { key: SessionKey, backend: String },
    /// A session moved (failover, spill, learned key): its pin and the backends' sets.
    Repin {
        key: SessionKey,
        backend: String,
        from: Option<String>,
    },
    /// A session that is pinned nowhere any more.
    Remove { key: SessionKey },
}

#[derive(Default)]
struct Queue {
    writes: VecDeque<Write>,
    /// Admin state to store (written before `publish` is sent).
    store: Vec<stored::Field>,
    /// Serialized [`Envelope`]s to publish.
    publish: Vec<String>,
}

/// What reaches this upstream from the fleet.
#[derive(Debug)]
pub enum Inbound {
    /// An admin change made through another gateway.
    Event(Event),
    /// The stored admin state, read when the connection came up (or after a reload).
    Snapshot(stored::Snapshot),
}

/// Where the fleet's admin changes of this upstream go (set by the fleet service).
pub type Inbox = Box<dyn Fn(Inbound) + Send + Sync>;

pub struct RedisRegistry {
    upstream: String,
    conf: RedisConf,
    keys: Keys,
    overlay: Arc<Overlay>,
    names: Interner,
    conns: ArcSwapOption<Vec<Conn>>,
    next: AtomicUsize,
    up: AtomicBool,
    queue: Mutex<Queue>,
    wake: tokio::sync::Notify,
    /// The pins' `PX` (the overlay's idle TTL; 0 = none).
    ttl_ms: u64,
    pub metrics: RegistryMetrics,
    /// This process, in broadcasts.
    origin: u64,
    first_pin: Script,
    migrate: Script,
    store: Script,
    /// Backends this process drained because of the fleet (its admin API, a broadcast, the
    /// stored state): the ones a sync may undrain.
    fleet_drained: Mutex<HashSet<String>>,
    /// Asks the broadcast reader to read the stored admin state.
    sync: tokio::sync::Notify,
    /// Stored admin state and broadcasts go out one flush at a time, in order.
    admin_lock: tokio::sync::Mutex<()>,
    inbox: OnceLock<Inbox>,
    runtime: OnceLock<tokio::runtime::Handle>,
}

impl RedisRegistry {
    pub fn new(
        upstream: &str,
        conf: RedisConf,
        overlay: Arc<Overlay>,
        names: Interner,
        metrics: RegistryMetrics,
    ) -> RedisRegistry {
        metrics.up.set(0);
        RedisRegistry {
            keys: Keys::new(&conf.key_prefix, upstream),
            upstream: upstream.to_string(),
            ttl_ms: overlay.config().idle_ttl,
            conf,
            overlay,
            names,
            conns: ArcSwapOption::empty(),
            next: AtomicUsize::new(0),
            up: AtomicBool::new(false),
            queue: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            metrics,
            origin: rand::random(),
            first_pin: keys::first_pin(),
            migrate: keys::migrate(),
            store: stored::store(),
            fleet_drained: Mutex::default(),
            sync: tokio::sync::Notify::new(),
            admin_lock: tokio::sync::Mutex::new(()),
            inbox: OnceLock::new(),
            runtime: OnceLock::new(),
        }
    }

    /// Where this upstream's broadcast admin changes are applied (once).
    pub fn set_inbox(&self, inbox: Inbox) {
        let _ = self.inbox.set(inbox);
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    fn set_up(&self, up: bool) {
        if self.up.swap(up, Ordering::AcqRel) != up {
            if up {
                log::info!("upstream {}: Redis registry is answering", self.upstream);
                self.wake.notify_one();
                // Admin changes made meanwhile (or before this process started) are stored.
                self.sync.notify_one();
            } else {
                log::warn!(
                    "upstream {}: Redis registry is not answering; routing from the local cache",
                    self.upstream
                );
            }
        }
        self.metrics.up.set(i64::from(up));
    }

    /// A connection of the pool, in turn; `None` before the first connect.
    fn conn(&self) -> Option<Conn> {
        let conns = self.conns.load();
        let conns = conns.as_ref()?;
        let i = self.next.fetch_add(1, Ordering::Relaxed) % conns.len();
        Some(conns[i].clone())
    }

    /// Run `f` on a connection within `timeout`, counted as a round trip of `op` (index of
    /// [`crate::metrics::registry::OPS`]); a failure marks the registry down.
    async fn call<T, F, Fut>(&self, op: usize, timeout: Duration, f: F) -> Option<T>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        self.call_on(self.conn()?, op, timeout, f).await
    }

    /// [`RedisRegistry::call`] on `conn`.
    async fn call_on<T, F, Fut>(&self, conn: Conn, op: usize, timeout: Duration, f: F) -> Option<T>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        self.metrics.round_trips[op].inc();
        let t0 = Instant::now();
        match tokio::time::timeout(timeout, f(conn)).await {
            Ok(Ok(v)) => {
                self.metrics.latency.observe(t0.elapsed().as_secs_f64());
                Some(v)
            }
            Ok(Err(e)) => {
                log::debug!("upstream {}: Redis: {e}", self.upstream);
                self.metrics.errors[1].inc();
                self.set_up(false);
                None
            }
            Err(_) => {
                self.metrics.errors[0].inc();
                self.set_up(false);
                None
            }
        }
    }

    fn push(&self, w: Write) {
        let mut q = self.queue.lock();
        if q.writes.len() >= self.conf.writeback_max {
            if let Some(Write::Back { .. }) = q.writes.pop_front() {
                self.metrics.writebacks[2].inc();
            }
        }
        q.writes.push_back(w);
    }

    fn ttl_arg(&self) -> String {
        self.ttl_ms.to_string()
    }

    /// The first-pin script for `key` placed on `backend`: `(winner, created, moved_from)`.
    async fn run_first_pin(
        &self,
        key: SessionKey,
        backend: &str,
        timeout: Duration,
    ) -> Option<(String, bool, String)> {
        let mut inv = self.first_pin.key(self.keys.pin(key));
        inv.key(self.keys.moved(key))
            .arg(backend)
            .arg(self.ttl_arg());
        let r: Option<(String, i64, String)> = self
            .call(op::FIRST_PIN, timeout, |mut c| async move {
                inv.invoke_async(&mut c).await
            })
            .await;
        r.map(|(w, created, from)| (w, created == 1, from))
    }
}

#[async_trait]
impl SessionRegistry for RedisRegistry {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn shared(&self) -> bool {
        true
    }

    async fn lookup(&self, key: SessionKey) -> Option<String> {
        let pin = self.keys.pin(key);
        let t = self.conf.command_timeout;
        self.call(op::LOOKUP, t, |mut c| async move {
            redis::cmd("GET").arg(pin).query_async(&mut c).await
        })
        .await
        .flatten()
    }

    async fn first_pin(&self, key: SessionKey, backend: &str) -> Agreed {
        if !self.is_up() {
            self.metrics.degraded.inc();
            self.push(Write::Back {
                key,
                backend: backend.to_string(),
            });
            return Agreed::Degraded;
        }
        match self
            .run_first_pin(key, backend, self.conf.command_timeout)
            .await
        {
            Some((_, true, _)) => {
                self.push(Write::Index {
                    key,
                    backend: backend.to_string(),
                });
                Agreed::Mine
            }
            Some((winner, false, from)) => Agreed::Theirs {
                backend: winner,
                moved_from: (!from.is_empty()).then_some(from),
            },
            None => {
                self.metrics.degraded.inc();
                self.push(Write::Back {
                    key,
                    backend: backend.to_string(),
                });
                Agreed::Degraded
            }
        }
    }

    fn repin(&self, key: SessionKey, backend: &str, from: Option<&str>) {
        self.push(Write::Repin {
            key,
            backend: backend.to_string(),
            from: from.map(str::to_string),
        });
    }

    fn remove(&self, key: SessionKey) {
        self.overlay.remove(key);
        self.push(Write::Remove { key });
    }

    async fn keys_on(&self, backend: &str, limit: usize) -> Vec<SessionKey> {
        let set = self.keys.on(backend);
        let t = self.conf.command_timeout * 4;
        let members: Vec<String> = self
            .call(op::MIGRATE, t, |mut c| async move {
                redis::cmd("SRANDMEMBER")
                    .arg(set)
                    .arg(limit)
                    .query_async(&mut c)
                    .await
            })
            .await
            .unwrap_or_default();
        members.iter().filter_map(|m| keys::parse_hex(m)).collect()
    }

    fn count(&self, backend: &str) -> u64 {
        self.names
            .get(backend)
            .map_or(0, |id| self.overlay.count(id))
    }

    fn publish(&self, event: Event) {
        self.note(&event);
        let fields = stored::fields_of(&event, stored::wall_ms());
        let env = Envelope {
            origin: self.origin,
            upstream: self.upstream.clone(),
            event,
        };
        match serde_json::to_string(&env) {
            Ok(text) => {
                let mut q = self.queue.lock();
                q.store.extend(fields);
                q.publish.push(text);
                drop(q);
                self.wake.notify_one();
            }
            Err(e) => log::error!("upstream {}: cannot encode {env:?}: {e}", self.upstream),
        }
    }
}
