//! Consistent hashing: Ketama (points ∝ weight) or modulo.
//!
//! A [`Ring`] is a sequence of *owners* (backend indices) that a key enters at a position derived
//! from its 32-bit point and then walks forward, wrapping. Ketama stores sorted `(point, owner)`
//! pairs (the owner on the same cache line as the point the search lands on); modulo stores a
//! weight-expanded slot list.

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

/// Ketama points per unit of weight unless configured (as nginx and pingora-ketama).
pub const DEFAULT_POINTS_PER_WEIGHT: u32 = 160;

/// Upper bound on the points (Ketama) or slots (modulo) of one backend, so an absurd weight
/// cannot exhaust memory. Config validation is expected to keep weights far below it; a backend
/// hitting the cap simply gets a smaller share than its weight asks for.
pub const MAX_POINTS_PER_BACKEND: u64 = 1 << 20;

/// An immutable ring over backend positions `0..n` (indices into the caller's backend list).
///
/// Ketama points are hashed from the backend *names*, and ties are broken by name, so the same
/// set of `(name, weight)` gives the same mapping on every gateway whatever the list order.
/// Modulo slots follow the list order (backend i appears `weight` times, in order).
#[derive(Debug, Clone)]
pub struct Ring {
    /// Ketama: points sorted by hash; modulo: one node per slot (point unused).
    nodes: Vec<Node>,
    /// Whether `nodes` are Ketama points (searched) or modulo slots (indexed).
    ketama: bool,
    /// Ketama search accelerator: `lookup[b]` is the first point index `>= b << shift`, so a
    /// lookup searches a bucket of ~2–4 points instead of binary-searching the whole ring
    /// (3 cache misses instead of ~10 at 1,000 backends). Empty for modulo.
    lookup: Vec<u32>,
    shift: u32,
    /// Number of backends the ring was built over (weighted or not).
    backends: usize,
    /// Number of distinct backends with at least one point: the length of a full walk.
    distinct: usize,
}

impl Ring {
    /// Build from `(name, weight)` per backend; index i in the slice is backend index i.
    /// Weight 0 backends get no points (they never receive new keys) — no panic. A
    /// `points_per_weight` of 0 (Ketama) gives an empty ring.
    pub fn new(hashing: Hashing, points_per_weight: u32, backends: &[(&str, u32)]) -> Ring {
        let ketama = hashing == Hashing::Ketama;
        let nodes = if ketama {
            ketama_points(points_per_weight, backends)
        } else {
            modulo_slots(backends)
        };
        let mut present = vec![false; backends.len()];
        for n in &nodes {
            present[n.owner as usize] = true;
        }
        let (lookup, shift) = if ketama {
            bucket_index(&nodes)
        } else {
            (Vec::new(), 32)
        };
        Ring {
            nodes,
            ketama,
            lookup,
            shift,
            backends: backends.len(),
            distinct: present.iter().filter(|p| **p).count(),
        }
    }

    /// Backend indices in ring order starting at `point`, each backend at most once (only
    /// backends with weight > 0). Failover walks this. Allocation-free for the first
    /// `INLINE_SEEN` (8) backends yielded; a longer walk allocates one bitset.
    pub fn walk(&self, point: u32) -> impl Iterator<Item = usize> + '_ {
        Walk {
            ring: self,
            pos: self.start(point),
            steps_left: self.nodes.len(),
            yielded: 0,
            seen: Seen::default(),
        }
    }

    /// The first backend for `point`, if the ring has any points.
    pub fn primary(&self, point: u32) -> Option<usize> {
        if self.nodes.is_empty() {
            return None;
        }
        Some(self.nodes[self.start(point)].owner as usize)
    }

    /// Number of points (Ketama) or slots (modulo).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when no backend has weight > 0: every walk is empty.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Number of distinct backends on the ring (those with weight > 0).
    pub fn distinct(&self) -> usize {
        self.distinct
    }

    /// Number of backends the ring was built over, weighted or not.
    pub fn backends(&self) -> usize {
        self.backends
    }

    /// Which hashing the ring was built with.
    pub fn hashing(&self) -> Hashing {
        if self.ketama {
            Hashing::Ketama
        } else {
            Hashing::Modulo
        }
    }

    /// Points (Ketama) or slots (modulo) owned by each backend, indexed like the slice the
    /// ring was built from.
    pub fn node_counts(&self) -> Vec<u32> {
        let mut counts = vec![0u32; self.backends];
        for n in &self.nodes {
            counts[n.owner as usize] += 1;
        }
        counts
    }

    /// Fraction of the key space each backend owns, indexed like the slice the ring was built
    /// from: the share of uniformly spread new keys whose walk starts at that backend.
    ///
    /// Ketama: a key at point `p` goes to the first point `>= p` (wrapping), so a point owns
    /// the arc `(previous point, point]`; a backend's share is the total length of its arcs
    /// over 2^32. Modulo: slots are equally likely, so a share is slots / total slots (the
    /// weight share, up to [`MAX_POINTS_PER_BACKEND`]). Weight-0 backends own 0; an empty ring
    /// owns nothing (all 0). The shares of a non-empty ring sum to 1 (up to rounding).
    /// O(points); meant for diagnostics, not the request path.
    pub fn shares(&self) -> Vec<f64> {
        let mut shares = vec![0f64; self.backends];
        let total = self.nodes.len();
        if total == 0 {
            return shares;
        }
        if !self.ketama {
            for (s, n) in shares.iter_mut().zip(self.node_counts()) {
                *s = f64::from(n) / total as f64;
            }
            return shares;
        }
        let mut arcs = vec![0u64; self.backends];
        let last = u64::from(self.nodes[total - 1].point);
        let mut prev: Option<u64> = None;
        for n in &self.nodes {
            let point = u64::from(n.point);
            let arc = match prev {
                // Equal points: the first in sort order is found by the search, the rest own 0.
                Some(p) => point - p,
                // The first point also owns the wrap-around: (last, 2^32) ∪ [0, first].
                None => point + (1u64 << 32) - last,
            };
            arcs[n.owner as usize] += arc;
            prev = Some(point);
        }
        for (s, a) in shares.iter_mut().zip(arcs) {
            *s = a as f64 / (1u64 << 32) as f64;
        }
        shares
    }

    /// Index into `nodes` where a walk from `point` starts. Only meaningful when non-empty.
    fn start(&self, point: u32) -> usize {
        if !self.ketama || self.nodes.is_empty() {
            return (point as usize).checked_rem(self.nodes.len()).unwrap_or(0);
        }
        let b = (u64::from(point) >> self.shift) as usize;
        let lo = self.lookup[b] as usize;
        let hi = self
            .lookup
            .get(b + 1)
            .map_or(self.nodes.len(), |&h| h as usize);
        let i = lo + self.nodes[lo..hi].partition_point(|n| n.point < point);
        if i == self.nodes.len() {
            0
        } else {
            i
        }
    }

    #[cfg(test)]
    fn points(&self) -> Vec<u32> {
        self.nodes.iter().map(|n| n.point).collect()
    }

    #[cfg(test)]
    fn owners(&self) -> Vec<u32> {
        self.nodes.iter().map(|n| n.owner).collect()
    }
}

/// One ring position: a Ketama point and its owner (or a modulo slot's owner).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Node {
    point: u32,
    owner: u32,
}

/// Buckets over the top bits of the point space, about one per 2–4 points (a power of two).
fn bucket_index(points: &[Node]) -> (Vec<u32>, u32) {
    if points.is_empty() {
        return (Vec::new(), 32);
    }
    let bits = (usize::BITS - 1 - points.len().leading_zeros()).saturating_sub(1);
    let shift = 32 - bits;
    let mut lookup = Vec::with_capacity(1 << bits);
    let mut i = 0;
    for b in 0..1u64 << bits {
        while i < points.len() && u64::from(points[i].point) < b << shift {
            i += 1;
        }
        // Cannot truncate: a ring has at most 2^32 points (see `owner_index`).
        lookup.push(i as u32);
    }
    (lookup, shift)
}

/// The stable hash of point `i` of backend `name`: xxh3-64 of `name ‖ 0x00 ‖ i (LE)`, truncated.
fn point_hash(name: &str, i: u32) -> u32 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(name.as_bytes());
    h.update(&[0]);
    h.update(&i.to_le_bytes());
    h.digest() as u32
}

/// Points of one backend, capped by [`MAX_POINTS_PER_BACKEND`].
fn points_of(per_weight: u32, weight: u32) -> u32 {
    let n = (u64::from(per_weight) * u64::from(weight)).min(MAX_POINTS_PER_BACKEND);
    // Cannot fail: n <= MAX_POINTS_PER_BACKEND < 2^32.
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn ketama_points(per_weight: u32, backends: &[(&str, u32)]) -> Vec<Node> {
    let total: usize = backends
        .iter()
        .map(|&(_, w)| points_of(per_weight, w) as usize)
        .sum();
    let mut all: Vec<(u32, u32)> = Vec::with_capacity(total);
    for (idx, &(name, weight)) in backends.iter().enumerate() {
        let owner = owner_index(idx);
        all.extend((0..points_of(per_weight, weight)).map(|i| (point_hash(name, i), owner)));
    }
    // Ties between two backends' points are broken by name (then index, for duplicate names),
    // never by list position alone, so list order does not change the mapping.
    all.sort_unstable_by(|a, b| {
        (a.0, backends[a.1 as usize].0, a.1).cmp(&(b.0, backends[b.1 as usize].0, b.1))
    });
    all.into_iter()
        .map(|(point, owner)| Node { point, owner })
        .collect()
}

fn modulo_slots(backends: &[(&str, u32)]) -> Vec<Node> {
    let mut slots = Vec::new();
    for (idx, &(_, weight)) in backends.iter().enumerate() {
        let n = points_of(1, weight) as usize;
        let node = Node {
            point: 0,
            owner: owner_index(idx),
        };
        slots.extend(std::iter::repeat_n(node, n));
    }
    slots
}

fn owner_index(idx: usize) -> u32 {
    // Cannot fail in practice: 2^32 `(&str, u32)` backends would be a 96 GiB slice.
    u32::try_from(idx).expect("fewer than 2^32 backends in one ring")
}

/// Backends remembered inline by a walk before it switches to a heap bitset.
const INLINE_SEEN: usize = 8;

/// The set of backends a walk already yielded: inline for the first [`INLINE_SEEN`], then a
/// bitset over all backends.
#[derive(Default)]
struct Seen {
    inline: [u32; INLINE_SEEN],
    n: usize,
    bits: Option<Vec<u64>>,
}

impl Seen {
    #[inline]
    fn contains(&self, b: u32) -> bool {
        match &self.bits {
            None => self.inline[..self.n].contains(&b),
            Some(bits) => bits[(b / 64) as usize] & (1 << (b % 64)) != 0,
        }
    }

    #[inline]
    fn insert(&mut self, b: u32, backends: usize) {
        if self.bits.is_none() && self.n < INLINE_SEEN {
            self.inline[self.n] = b;
            self.n += 1;
        } else {
            self.insert_slow(b, backends);
        }
    }

    /// Past `INLINE_SEEN` backends: move to (or use) the bitset.
    #[cold]
    #[inline(never)]
    fn insert_slow(&mut self, b: u32, backends: usize) {
        let inline = &self.inline[..self.n];
        let bits = self.bits.get_or_insert_with(|| {
            let mut bits = vec![0u64; backends.div_ceil(64)];
            for &s in inline {
                bits[(s / 64) as usize] |= 1 << (s % 64);
            }
            bits
        });
        bits[(b / 64) as usize] |= 1 << (b % 64);
    }
}

struct Walk<'a> {
    ring: &'a Ring,
    pos: usize,
    steps_left: usize,
    yielded: usize,
    seen: Seen,
}

impl Iterator for Walk<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let nodes = &self.ring.nodes;
        while self.steps_left > 0 && self.yielded < self.ring.distinct {
            let owner = nodes[self.pos].owner;
            self.steps_left -= 1;
            self.pos += 1;
            if self.pos == nodes.len() {
                self.pos = 0;
            }
            // The first owner needs no check: nothing was seen yet.
            if self.yielded == 0 || !self.seen.contains(owner) {
                if self.yielded + 1 < self.ring.distinct {
                    self.seen.insert(owner, self.ring.backends);
                }
                self.yielded += 1;
                return Some(owner as usize);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("backend-{i}")).collect()
    }

    fn specs(names: &[String], w: u32) -> Vec<(&str, u32)> {
        names.iter().map(|n| (n.as_str(), w)).collect()
    }

    #[test]
    fn empty_ring_walks_nothing() {
        for h in [Hashing::Ketama, Hashing::Modulo] {
            let r = Ring::new(h, 160, &[]);
            assert!(r.is_empty());
            assert_eq!(r.walk(123).count(), 0);
            assert_eq!(r.primary(0), None);
        }
    }

    #[test]
    fn zero_weight_gets_no_points_and_no_panic() {
        for h in [Hashing::Ketama, Hashing::Modulo] {
            let r = Ring::new(h, 160, &[("a", 0), ("b", 1), ("c", 0)]);
            assert_eq!(r.distinct(), 1);
            assert_eq!(r.backends(), 3);
            for p in [0, 1, u32::MAX / 2, u32::MAX] {
                assert_eq!(r.walk(p).collect::<Vec<_>>(), vec![1]);
            }
            let all_zero = Ring::new(h, 160, &[("a", 0)]);
            assert_eq!(all_zero.primary(7), None);
        }
    }

    #[test]
    fn zero_points_per_weight_is_empty() {
        let r = Ring::new(Hashing::Ketama, 0, &[("a", 3)]);
        assert!(r.is_empty());
        assert_eq!(r.walk(1).next(), None);
    }

    #[test]
    fn ketama_point_counts_follow_weight() {
        let r = Ring::new(Hashing::Ketama, 10, &[("a", 1), ("b", 3)]);
        assert_eq!(r.len(), 40);
        assert_eq!(r.owners().iter().filter(|&&o| o == 1).count(), 30);
        assert!(r.points().windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn walk_yields_every_weighted_backend_once() {
        let n = names(40); // more than INLINE_SEEN: exercises the bitset
        let r = Ring::new(Hashing::Ketama, 160, &specs(&n, 1));
        for p in [0, 99, u32::MAX] {
            let mut seen: Vec<usize> = r.walk(p).collect();
            assert_eq!(seen[0], r.primary(p).expect("non-empty"));
            seen.sort_unstable();
            assert_eq!(seen, (0..40).collect::<Vec<_>>());
        }
    }

    #[test]
    fn walk_starts_at_first_point_at_or_after_and_wraps() {
        let r = Ring::new(Hashing::Ketama, 4, &[("a", 1), ("b", 1)]);
        let first = r.points()[0];
        let last = *r.points().last().expect("8 points");
        assert_eq!(r.primary(first), Some(r.owners()[0] as usize));
        assert_eq!(
            r.primary(last),
            Some(*r.owners().last().expect("8") as usize)
        );
        // Past the last point wraps to the first.
        if last < u32::MAX {
            assert_eq!(r.primary(last + 1), Some(r.owners()[0] as usize));
        }
    }

    #[test]
    fn modulo_slots_in_order_and_walk_continues() {
        let r = Ring::new(Hashing::Modulo, 160, &[("a", 2), ("b", 1), ("c", 1)]);
        assert_eq!(r.owners(), vec![0, 0, 1, 2]);
        assert_eq!(r.walk(0).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(r.walk(1).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(r.walk(2).collect::<Vec<_>>(), vec![1, 2, 0]);
        assert_eq!(r.walk(7).collect::<Vec<_>>(), vec![2, 0, 1]);
    }

    #[test]
    fn list_order_does_not_change_ketama_mapping() {
        let a = Ring::new(Hashing::Ketama, 160, &[("x", 1), ("y", 2), ("z", 1)]);
        let b = Ring::new(Hashing::Ketama, 160, &[("z", 1), ("x", 1), ("y", 2)]);
        let to_b = [1, 2, 0]; // index in a → index in b
        for p in (0..u32::MAX).step_by(1 << 20) {
            let wa: Vec<usize> = a.walk(p).map(|i| to_b[i]).collect();
            assert_eq!(wa, b.walk(p).collect::<Vec<_>>());
        }
    }

    #[test]
    fn bucket_lookup_matches_binary_search() {
        for n in [1, 2, 3, 10, 100] {
            let ns = names(n);
            let r = Ring::new(Hashing::Ketama, 7, &specs(&ns, 1));
            let points = r.points();
            let mut probes: Vec<u32> = points.clone();
            probes.extend(points.iter().map(|p| p.wrapping_add(1)));
            probes.extend([0, 1, u32::MAX, u32::MAX - 1, 1 << 31]);
            probes.extend((0..1000u32).map(|i| i.wrapping_mul(0x9E37_79B9)));
            for p in probes {
                let i = points.partition_point(|&x| x < p) % points.len();
                assert_eq!(r.start(p), i, "n={n} p={p}");
            }
        }
    }

    /// Share of each backend counted by brute force: the primary of every `step`-th point.
    fn sampled_shares(r: &Ring, step: usize) -> Vec<f64> {
        let mut hits = vec![0u64; r.backends()];
        let mut n = 0u64;
        for p in (0..=u32::MAX).step_by(step) {
            if let Some(b) = r.primary(p) {
                hits[b] += 1;
            }
            n += 1;
        }
        hits.iter().map(|&h| h as f64 / n as f64).collect()
    }

    #[test]
    fn ketama_shares_are_the_arcs_each_backend_owns() {
        let r = Ring::new(Hashing::Ketama, 3, &[("a", 1), ("b", 2), ("c", 1)]);
        let shares = r.shares();
        assert!(
            (shares.iter().sum::<f64>() - 1.0).abs() < 1e-12,
            "{shares:?}"
        );
        // Exact: recompute every arc from the sorted points by hand.
        let (points, owners) = (r.points(), r.owners());
        let mut arcs = [0i64; 3];
        for i in 0..points.len() {
            let hi = i64::from(points[i]);
            let lo = match i {
                0 => i64::from(points[points.len() - 1]) - (1i64 << 32),
                _ => i64::from(points[i - 1]),
            };
            arcs[owners[i] as usize] += hi - lo;
        }
        for (s, a) in shares.iter().zip(arcs) {
            assert_eq!(*s, a as f64 / 4_294_967_296.0);
        }
        // And by sampling which backend a key lands on: 4,096 evenly spaced probes; each arc's
        // count is off by under one probe, so a backend with k points is off by < k/4096.
        for (s, m) in shares.iter().zip(sampled_shares(&r, 1 << 20)) {
            assert!((s - m).abs() < 0.002, "arcs {shares:?} vs sampled {m}");
        }
    }

    #[test]
    fn ketama_shares_follow_weight_with_many_points() {
        let r = Ring::new(
            Hashing::Ketama,
            160,
            &[("a", 1), ("b", 1), ("c", 2), ("z", 0)],
        );
        let s = r.shares();
        assert_eq!(s[3], 0.0, "weight 0 owns nothing");
        for (got, want) in s.iter().zip([0.25, 0.25, 0.5]) {
            assert!((got - want).abs() < 0.06, "{s:?}");
        }
        assert_eq!(r.node_counts(), vec![160, 160, 320, 0]);
    }

    #[test]
    fn modulo_shares_are_weight_shares() {
        let r = Ring::new(
            Hashing::Modulo,
            160,
            &[("a", 2), ("b", 1), ("c", 0), ("d", 1)],
        );
        assert_eq!(r.shares(), vec![0.5, 0.25, 0.0, 0.25]);
        assert_eq!(r.hashing(), Hashing::Modulo);
    }

    #[test]
    fn empty_rings_own_nothing() {
        for h in [Hashing::Ketama, Hashing::Modulo] {
            assert_eq!(
                Ring::new(h, 160, &[("a", 0), ("b", 0)]).shares(),
                vec![0.0, 0.0]
            );
            assert!(Ring::new(h, 160, &[]).shares().is_empty());
        }
        assert_eq!(
            Ring::new(Hashing::Ketama, 0, &[("a", 1)]).shares(),
            vec![0.0]
        );
    }

    #[test]
    fn a_single_backend_owns_everything() {
        for h in [Hashing::Ketama, Hashing::Modulo] {
            assert_eq!(
                Ring::new(h, 5, &[("a", 0), ("b", 3)]).shares(),
                vec![0.0, 1.0]
            );
        }
    }

    #[test]
    fn huge_weight_is_capped() {
        let r = Ring::new(Hashing::Modulo, 1, &[("a", u32::MAX), ("b", 1)]);
        assert_eq!(r.len() as u64, MAX_POINTS_PER_BACKEND + 1);
    }
}
