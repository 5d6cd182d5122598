//! Small measurement helpers: the bounded-load test as the router computes it, load ratios,
//! and medians of timed batches.

/// `ceil((1+ε)·(A+1)·w/W)` with ε in thousandths: the bounded-load cap of a backend of weight
/// `w` for the next new session, when `A` sessions are active on backends of total weight `W`.
pub fn bound_cap(active: u64, w: u64, total_w: u64, eps_milli: u32) -> u64 {
    let num = u128::from(1000 + eps_milli) * u128::from(active + 1) * u128::from(w);
    let cap = num.div_ceil(1000 * u128::from(total_w.max(1)));
    u64::try_from(cap).unwrap_or(u64::MAX)
}

/// Whether a backend with `load` active sessions is below its cap — the router's own integer
/// form, `load·W·1000 < (1000+ε‰)·(A+1)·w`, which is `load < bound_cap(..)`.
pub fn below_bound(load: u64, active: u64, w: u64, total_w: u64, eps_milli: u32) -> bool {
    u128::from(load) * u128::from(total_w) * 1000
        < u128::from(1000 + eps_milli) * u128::from(active + 1) * u128::from(w)
}

/// max over backends of `load_i / (w_i · Σload / Σw)`: 1.0 is perfectly even (by weight).
/// Backends of weight 0 are left out, as from the router's mean. `None` when nothing is loaded.
pub fn max_over_mean(loads: impl Iterator<Item = (u64, u64)>) -> Option<f64> {
    let (mut sum, mut total_w, mut worst) = (0u64, 0u64, 0f64);
    for (load, w) in loads.filter(|&(_, w)| w > 0) {
        sum += load;
        total_w += w;
        worst = worst.max(load as f64 / w as f64);
    }
    (sum > 0).then(|| worst * total_w as f64 / sum as f64)
}

/// Maximum and average of a sampled ratio.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ratio {
    pub max: f64,
    sum: f64,
    n: u64,
}

impl Ratio {
    pub fn add(&mut self, x: f64) {
        self.max = self.max.max(x);
        self.sum += x;
        self.n += 1;
    }

    pub fn avg(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / self.n as f64)
    }
}

/// Durations summed over batches of `size` operations; the median batch mean is the figure
/// reported (robust to the odd preemption or page fault in one batch).
#[derive(Debug, Clone, Default)]
pub struct Batches {
    size: u32,
    ns: u64,
    n: u32,
    means: Vec<f64>,
}

impl Batches {
    pub fn new(size: u32) -> Self {
        Batches {
            size: size.max(1),
            ..Batches::default()
        }
    }

    pub fn add(&mut self, ns: u64) {
        self.ns += ns;
        self.n += 1;
        if self.n == self.size {
            self.means.push(self.ns as f64 / f64::from(self.n));
            self.ns = 0;
            self.n = 0;
        }
    }

    /// Median of the complete batches' means (the partial last batch is left out).
    pub fn median(&self) -> Option<f64> {
        let mut v = self.means.clone();
        v.sort_by(f64::total_cmp);
        let m = v.len();
        match m {
            0 => None,
            _ if m % 2 == 1 => Some(v[m / 2]),
            _ => Some((v[m / 2 - 1] + v[m / 2]) / 2.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_bound_is_load_below_the_ceiling() {
        for eps in [0, 100, 250, 1000] {
            for total_w in 1..8 {
                for w in 1..=total_w {
                    for active in 0..60 {
                        let cap = bound_cap(active, w, total_w, eps);
                        for load in 0..cap + 3 {
                            assert_eq!(below_bound(load, active, w, total_w, eps), load < cap);
                        }
                    }
                }
            }
        }
        // 1.25 · 100 / 10 = 12.5 → 13; 1.25 · 80 / 10 = 10 exactly → 10.
        assert_eq!(bound_cap(99, 1, 10, 250), 13);
        assert_eq!(bound_cap(79, 1, 10, 250), 10);
        assert!(below_bound(9, 79, 1, 10, 250) && !below_bound(10, 79, 1, 10, 250));
        assert_eq!(bound_cap(0, 1, 0, 250), 2, "no weight: no panic");
    }

    #[test]
    fn max_over_mean_weighs_backends() {
        assert_eq!(max_over_mean([(10, 1), (10, 1)].into_iter()), Some(1.0));
        assert_eq!(max_over_mean([(30, 1), (10, 1)].into_iter()), Some(1.5));
        // 20 on weight 2 and 10 on weight 1 is even.
        assert_eq!(max_over_mean([(20, 2), (10, 1)].into_iter()), Some(1.0));
        assert_eq!(max_over_mean([(0, 1), (0, 1)].into_iter()), None);
        assert_eq!(max_over_mean([(5, 0), (5, 1)].into_iter()), Some(1.0));
    }

    #[test]
    fn ratio_and_batches() {
        let mut r = Ratio::default();
        assert_eq!(r.avg(), None);
        for x in [1.0, 3.0, 2.0] {
            r.add(x);
        }
        assert_eq!((r.max, r.avg()), (3.0, Some(2.0)));
        let mut b = Batches::new(2);
        assert_eq!(b.median(), None);
        for ns in [10, 30, 100, 100, 1, 3, 7] {
            b.add(ns);
        }
        // Batches: 20, 100, 2 (7 is an incomplete batch) → median 20.
        assert_eq!(b.median(), Some(20.0));
        b.add(9);
        assert_eq!(b.median(), Some(14.0), "(8 + 20) / 2");
    }
}
