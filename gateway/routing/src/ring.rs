//! Consistent hashing: Ketama (points ∝ weight) or modulo.
//! SKELETON — the routing helper replaces the bodies.

/// Which hashing an upstream uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Hashing {
    /// Ketama: `points_per_weight × weight` points per backend, hashed from its stable name.
    /// Adding or removing a backend moves only ~1/N of the keys.
    #[default]
    Ketama,
    /// `hash mod Σweight` over a weight-expanded slot list: cheapest, but a membership change
    /// moves most keys. For stable topologies.
    Modulo,
}

/// An immutable ring over backend positions `0..n` (indices into the caller's backend list).
#[derive(Debug, Clone)]
pub struct Ring {
    _private: (),
}

impl Ring {
    /// Build from `(name, weight)` per backend; index i in the slice is backend index i.
    /// Weight 0 backends get no points (they never receive new keys) — no panic.
    pub fn new(_hashing: Hashing, _points_per_weight: u32, _backends: &[(&str, u32)]) -> Ring {
        unimplemented!("routing helper")
    }

    /// Backend indices in ring order starting at `point`, each backend at most once (only
    /// backends with weight > 0). Failover walks this.
    pub fn walk(&self, _point: u32) -> impl Iterator<Item = usize> + '_ {
        std::iter::empty()
    }

    /// The first backend for `point`, if the ring has any points.
    pub fn primary(&self, point: u32) -> Option<usize> {
        self.walk(point).next()
    }
}
