//! Per-backend connection limits (`max_connections`, per backend or as the upstream's default):
//! at most that many requests are in flight to a backend at once, each holding one upstream
//! connection. A request over the limit waits up to the upstream's `queue_timeout` for a slot,
//! then gets `503` with `Retry-After` (counted in `berth_requests_unrouted_total{why="busy"}`).
//! It is not sent to another backend: its session's state lives on this one.
//!
//! A slot is taken in `upstream_peer` (once the backend is known, before connecting) and given
//! back when the request's context is dropped, after the response was sent (a WebSocket holds
//! its slot for its whole life), or as soon as the request moves to another backend (a retry
//! after a failed connect). Idle pooled connections hold no slot; their number is bounded by
//! Pingora's `server.upstream_keepalive_pool_size`.
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One backend's limit.
#[derive(Debug)]
pub struct ConnLimit {
    max: u32,
    slots: Arc<Semaphore>,
}

/// A slot: one request in flight to the backend. Dropping it frees the slot.
#[derive(Debug)]
pub struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

impl ConnLimit {
    pub fn new(max: u32) -> Self {
        ConnLimit {
            max,
            slots: Arc::new(Semaphore::new(max as usize)),
        }
    }

    #[cfg(test)]
    pub fn max(&self) -> u32 {
        self.max
    }

    /// Requests holding a slot now.
    #[cfg(test)]
    pub fn in_use(&self) -> u32 {
        self.max
            .saturating_sub(u32::try_from(self.slots.available_permits()).unwrap_or(u32::MAX))
    }

    /// A slot, waiting at most `wait` for one; `None` when none freed up in time.
    pub async fn acquire(&self, wait: Duration) -> Option<Slot> {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Some(Slot(p));
        }
        if wait.is_zero() {
            return None;
        }
        match tokio::time::timeout(wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(p)) => Some(Slot(p)),
            _ => None,
        }
    }
}

/// The limits of one upstream's backends, by backend id. Kept across routing-table rebuilds so
/// requests in flight keep counting against the backend they went to.
#[derive(Debug, Default)]
pub struct ConnLimits(Mutex<HashMap<String, Arc<ConnLimit>>>);

impl ConnLimits {
    /// The limits for a new backend list (`(id, max_connections)` in table order): a backend
    /// whose limit is unchanged keeps its slots; others get fresh ones; unlisted ids are dropped.
    pub fn for_backends<'a>(
        &self,
        list: impl IntoIterator<Item = (&'a str, Option<u32>)>,
    ) -> Vec<Option<Arc<ConnLimit>>> {
        let mut map = self.0.lock();
        let mut next = HashMap::new();
        let out = list
            .into_iter()
            .map(|(id, max)| {
                let max = max?;
                let limit = match map.remove(id) {
                    Some(l) if l.max == max => l,
                    _ => Arc::new(ConnLimit::new(max)),
                };
                next.insert(id.to_string(), limit.clone());
                Some(limit)
            })
            .collect();
        *map = next;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slots_are_bounded_waited_for_and_freed() {
        let l = ConnLimit::new(2);
        let a = l.acquire(Duration::ZERO).await.expect("free slot");
        let _b = l.acquire(Duration::ZERO).await.expect("free slot");
        assert_eq!(l.in_use(), 2);
        assert!(l.acquire(Duration::ZERO).await.is_none());
        assert!(l.acquire(Duration::from_millis(20)).await.is_none());
        let l = Arc::new(l);
        let waiter = tokio::spawn({
            let l = l.clone();
            async move { l.acquire(Duration::from_secs(10)).await.is_some() }
        });
        drop(a);
        assert!(waiter.await.unwrap(), "a freed slot goes to the waiter");
    }

    #[test]
    fn limits_survive_rebuilds_unless_changed() {
        let limits = ConnLimits::default();
        let first = limits.for_backends([("a", Some(2)), ("b", None), ("c", Some(1))]);
        assert!(first[1].is_none());
        let second = limits.for_backends([("a", Some(2)), ("c", Some(5))]);
        let (a1, a2) = (first[0].as_ref().unwrap(), second[0].as_ref().unwrap());
        assert!(Arc::ptr_eq(a1, a2), "unchanged limit keeps its slots");
        assert_eq!(second[1].as_ref().unwrap().max(), 5);
        let third = limits.for_backends([("c", Some(5))]);
        assert!(Arc::ptr_eq(
            second[1].as_ref().unwrap(),
            third[0].as_ref().unwrap()
        ));
        assert_eq!(limits.0.lock().len(), 1);
    }
}
