//! Per-connection context: an id for the client connection a request came on, and a few
//! values plugins keep for it (set once, read by every later request of the connection,
//! dropped with the connection).
use std::any::Any;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// How many values one connection can hold (one per [`Slot`] that sets one). A connection
/// whose values are all taken refuses more ([`ConnectionContext::set`] returns `Err`).
pub const SLOTS_PER_CONNECTION: usize = 4;

type Value = (u64, Box<dyn Any + Send + Sync>);

/// The gateway's context of one client connection (HTTP/1.x: the requests of one keep-alive
/// connection, one after the other). A plugin reaches it with
/// [`RequestView::connection`](crate::RequestView::connection) on the request path and
/// [`DecisionView::connection`](crate::DecisionView::connection) when the response is on its
/// way; it stores values under a [`Slot`] of its own. Values are set once (first write wins)
/// and live as long as the connection; a value that must change holds its own interior
/// mutability (an atomic, a `Mutex`).
///
/// ```
/// use berth_plugins::{ConnectionContext, Slot};
/// let conn = ConnectionContext::new(7);
/// let first_backend: Slot<String> = Slot::new();
/// assert_eq!(conn.id(), 7);
/// assert_eq!(conn.get(&first_backend), None);
/// assert_eq!(conn.set(&first_backend, "b2".to_string()).map(|s| s.as_str()), Ok("b2"));
/// // Set once: a second value is handed back.
/// assert_eq!(conn.set(&first_backend, "b3".to_string()), Err("b3".to_string()));
/// assert_eq!(conn.get(&first_backend).map(String::as_str), Some("b2"));
/// // Another slot (another plugin, or another instance of the same plugin) is separate.
/// let other: Slot<String> = Slot::new();
/// assert_eq!(conn.get(&other), None);
/// ```
#[derive(Debug)]
pub struct ConnectionContext {
    id: u64,
    values: [OnceLock<Value>; SLOTS_PER_CONNECTION],
}

impl ConnectionContext {
    /// The context of connection `id` (the gateway numbers its connections; tests pick any).
    pub fn new(id: u64) -> Self {
        ConnectionContext {
            id,
            values: Default::default(),
        }
    }

    /// This connection's id: unique among the connections this gateway process accepted.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The value stored under `slot`, when one was set.
    pub fn get<T: Any + Send + Sync>(&self, slot: &Slot<T>) -> Option<&T> {
        self.values
            .iter()
            .map_while(OnceLock::get)
            .find(|(id, _)| *id == slot.id)
            .and_then(|(_, v)| v.downcast_ref())
    }

    /// Store `value` under `slot` and return it; `Err(value)` when `slot` already has one or
    /// the connection holds [`SLOTS_PER_CONNECTION`] values already.
    pub fn set<T: Any + Send + Sync>(&self, slot: &Slot<T>, value: T) -> Result<&T, T> {
        if self.get(slot).is_some() {
            return Err(value);
        }
        let mut entry: Value = (slot.id, Box::new(value));
        for cell in &self.values {
            match cell.set(entry) {
                Ok(()) => {
                    let stored = cell.get().and_then(|(_, v)| v.downcast_ref());
                    return Ok(stored.expect("the value just stored is a T"));
                }
                Err(back) => entry = back,
            }
        }
        match entry.1.downcast::<T>() {
            Ok(v) => Err(*v),
            Err(_) => unreachable!("the boxed value is a T"),
        }
    }
}

/// A key under which a plugin keeps one value of type `T` per connection. Each `Slot::new()`
/// is distinct, so two instances of one plugin (two upstreams) never see each other's values:
/// create it when the plugin is built and keep it in the plugin.
pub struct Slot<T> {
    id: u64,
    _value: PhantomData<fn() -> T>,
}

impl<T> Slot<T> {
    /// A new slot, distinct from every other.
    pub fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Slot {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            _value: PhantomData,
        }
    }
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> std::fmt::Debug for Slot<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Slot({})", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_fill_up_and_refuse_the_rest() {
        let conn = ConnectionContext::new(1);
        let slots: Vec<Slot<u32>> = (0..=SLOTS_PER_CONNECTION).map(|_| Slot::new()).collect();
        for (i, s) in slots.iter().enumerate().take(SLOTS_PER_CONNECTION) {
            assert_eq!(conn.set(s, i as u32), Ok(&(i as u32)));
        }
        assert_eq!(conn.set(&slots[SLOTS_PER_CONNECTION], 99), Err(99));
        for (i, s) in slots.iter().enumerate().take(SLOTS_PER_CONNECTION) {
            assert_eq!(conn.get(s), Some(&(i as u32)));
        }
        assert_eq!(conn.get(&slots[SLOTS_PER_CONNECTION]), None);
    }

    #[test]
    fn values_of_another_type_under_another_slot() {
        let conn = ConnectionContext::new(2);
        let a: Slot<String> = Slot::new();
        let b: Slot<std::sync::atomic::AtomicU32> = Slot::new();
        conn.set(&a, "x".into()).expect("free");
        let counter = conn.set(&b, Default::default()).expect("free");
        counter.fetch_add(2, Ordering::Relaxed);
        let again = conn.get(&b).expect("set");
        assert_eq!(again.load(Ordering::Relaxed), 2);
        assert_eq!(conn.get(&a).map(String::as_str), Some("x"));
    }
}
