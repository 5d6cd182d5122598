//! The session registry: where an upstream's pins live, behind [`SessionRegistry`].
//!
//! * [`Memory`] (the default): the routing core's overlay alone. Every decision is made and
//!   kept in this process; the request path never calls the registry (the overlay *is* it), so
//!   it costs what it cost before there was a trait.
//! * [`redis::RedisRegistry`]: pins shared by every Berth pointed at the same Redis (or Redis
//!   Cluster). The overlay stays in front as a bounded local cache: a warm session is a cache
//!   hit and costs no round trip; a session's first request on a gateway asks Redis once (a
//!   script: `SET NX PX` or the pin already there), so gateways racing on one session agree;
//!   re-pins, TTL renewals and the per-backend sets are written in the background, batched.
//!   Admin changes are stored in Redis and broadcast to the other gateways over pub/sub
//!   ([`Envelope`]); a gateway reads the stored ones whenever its connection comes up.
//!
//! The routing core stays pure: it decides on the overlay, and this layer (in the gateway
//! crate, the only one that does I/O) reconciles those decisions with the shared store.
use async_trait::async_trait;
use berth_routing::{Interner, Overlay, SessionKey};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub mod redis;

/// What the registry says of a session's first pin made by this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Agreed {
    /// This process's placement stands (it was the first, or the registry is local).
    Mine,
    /// The session is pinned elsewhere already (another gateway placed it first, earlier or
    /// meanwhile): its backend, and the backend a migration moved it from when this request
    /// is the first to come since (told once, fleet-wide).
    Theirs {
        backend: String,
        moved_from: Option<String>,
    },
    /// The shared store could not answer in time (down, slow): the local placement stands and
    /// is written back (`NX`) when the store is back.
    Degraded,
}

/// The operations of a session registry beyond what the overlay (its local part) decides.
///
/// `kind`, `shared` and `lookup` serve the admin API (`GET /admin/sessions/{value}`); the
/// request path does not call them (it reads the overlay, then agrees through `first_pin`).
#[async_trait]
pub trait SessionRegistry: Send + Sync {
    /// `memory` or `redis` (`"registry"` in the admin API's session lookup).
    fn kind(&self) -> &'static str;

    /// Whether pins are shared with other processes (then `lookup` asks the shared store).
    fn shared(&self) -> bool;

    /// Lookup: the backend `key` is pinned to, in the registry of record (`None`: pinned
    /// nowhere, or a shared store that did not answer).
    async fn lookup(&self, key: SessionKey) -> Option<String>;

    /// First pin: this process placed `key` on `backend` (already pinned in the overlay).
    async fn first_pin(&self, key: SessionKey, backend: &str) -> Agreed;

    /// Re-pin: `key` moved to `backend` (failover, spill, learned key), from `from`.
    fn repin(&self, key: SessionKey, backend: &str, from: Option<&str>);

    /// Remove: `key` is pinned nowhere any more.
    fn remove(&self, key: SessionKey);

    /// List by backend: up to `limit` sessions pinned to `backend`.
    async fn keys_on(&self, backend: &str, limit: usize) -> Vec<SessionKey>;

    /// Counts: sessions pinned to `backend` as this process sees them (the overlay's exact
    /// count; for a shared registry, the sessions this gateway has cached).
    fn count(&self, backend: &str) -> u64;

    /// Tell the other processes sharing this registry about an admin change (nothing to do
    /// for a local registry).
    fn publish(&self, event: Event);
}

/// The embedded registry: the overlay and nothing else.
pub struct Memory {
    overlay: Arc<Overlay>,
    names: Interner,
}

impl Memory {
    pub fn new(overlay: Arc<Overlay>, names: Interner) -> Memory {
        Memory { overlay, names }
    }
}

#[async_trait]
impl SessionRegistry for Memory {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn shared(&self) -> bool {
        false
    }

    async fn lookup(&self, key: SessionKey) -> Option<String> {
        let pin = self.overlay.info(key)?;
        self.names.name(pin.backend).map(|n| n.to_string())
    }

    async fn first_pin(&self, _key: SessionKey, _backend: &str) -> Agreed {
        Agreed::Mine
    }

    fn repin(&self, _key: SessionKey, _backend: &str, _from: Option<&str>) {}

    fn remove(&self, key: SessionKey) {
        self.overlay.remove(key);
    }

    async fn keys_on(&self, backend: &str, limit: usize) -> Vec<SessionKey> {
        match self.names.get(backend) {
            Some(id) => self.overlay.keys_on(id, limit),
            None => Vec::new(),
        }
    }

    fn count(&self, backend: &str) -> u64 {
        self.names
            .get(backend)
            .map_or(0, |id| self.overlay.count(id))
    }

    fn publish(&self, _event: Event) {}
}

/// An admin change or a cache invalidation, as broadcast to the other gateways.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Event {
    Drain {
        backend: String,
        /// Milliseconds from now (each gateway reads it on its own clock).
        deadline_ms: Option<u64>,
    },
    Undrain {
        backend: String,
    },
    Update {
        backend: String,
        weight: Option<u32>,
        /// With `cap_changed`: the new cap (`None` removes it).
        max_sessions: Option<u32>,
        cap_changed: bool,
    },
    Add {
        backend: String,
        addr: String,
        weight: u32,
        max_sessions: Option<u32>,
        drain: bool,
    },
    Remove {
        backend: String,
    },
    /// These sessions' cached pins are stale (a migration moved them): drop them, so their
    /// next request asks the registry.
    Invalidate {
        keys: Vec<String>,
    },
}

/// One message on the channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The sending process (its own messages come back to it and are skipped).
    pub origin: u64,
    pub upstream: String,
    #[serde(flatten)]
    pub event: Event,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_as_json() {
        let e = Envelope {
            origin: 7,
            upstream: "app".into(),
            event: Event::Update {
                backend: "b1".into(),
                weight: Some(3),
                max_sessions: None,
                cap_changed: true,
            },
        };
        let text = serde_json::to_string(&e).unwrap();
        assert!(text.contains("\"op\":\"update\""), "{text}");
        assert_eq!(serde_json::from_str::<Envelope>(&text).unwrap(), e);
    }
}
