//! Backend names → stable [`BackendId`]s.
use crate::BackendId;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;

/// Hands out one [`BackendId`] per distinct backend name, for the life of the process. Ids are
/// never reused, so a pin made under an old routing table keeps meaning the same backend.
/// Only touched when tables are built and by admin/metrics paths, never per request.
///
/// Cloning is cheap and shares the table: a clone hands out and resolves the same ids (a
/// [`crate::Router`] keeps one to name backends that left its table).
#[derive(Debug, Default, Clone)]
pub struct Interner {
    inner: Arc<RwLock<Names>>,
}

#[derive(Debug, Default)]
struct Names {
    by_name: HashMap<Arc<str>, BackendId>,
    names: Vec<Arc<str>>,
}

impl Interner {
    /// The id of `name`, allocating one the first time.
    ///
    /// Panics when [`crate::MAX_BACKEND_IDS`] names were already interned and `name` is new:
    /// callers that admit new backends at runtime check [`Interner::room`] first.
    pub fn intern(&self, name: &str) -> BackendId {
        if let Some(id) = self.inner.read().by_name.get(name) {
            return *id;
        }
        let mut w = self.inner.write();
        if let Some(id) = w.by_name.get(name) {
            return *id;
        }
        let n = u32::try_from(w.names.len()).unwrap_or(u32::MAX);
        assert!(n < crate::MAX_BACKEND_IDS, "backend id space exhausted");
        let id = BackendId(n);
        let name: Arc<str> = Arc::from(name);
        w.names.push(name.clone());
        w.by_name.insert(name, id);
        id
    }

    /// How many more new names can be interned.
    pub fn room(&self) -> usize {
        (crate::MAX_BACKEND_IDS as usize).saturating_sub(self.inner.read().names.len())
    }

    /// The id of `name` if it was ever interned.
    pub fn get(&self, name: &str) -> Option<BackendId> {
        self.inner.read().by_name.get(name).copied()
    }

    /// The name behind an id.
    pub fn name(&self, id: BackendId) -> Option<Arc<str>> {
        self.inner.read().names.get(id.0 as usize).cloned()
    }
}
