//! Deterministic random numbers for the trace: a counter-based hash (SplitMix64's finalizer), so
//! any draw of any session can be recomputed from `(seed, session, counter)` alone and the trace
//! does not depend on the order in which a policy consumes it; plus the three distributions the
//! trace draws from. Written here (not `rand`) so the trace is the same on every `rand` version.

/// SplitMix64's output function: a bijective 64-bit mix.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A 64-bit draw determined by `(seed, a, b)` (e.g. session id and request counter).
pub fn draw(seed: u64, a: u64, b: u64) -> u64 {
    mix64(seed ^ mix64(a ^ mix64(b.wrapping_mul(0xD6E8_FEB8_6659_FD93))))
}

/// Maps 64 random bits to a uniform number in the open interval (0, 1): 52 bits plus a half,
/// so the largest value, 1 − 2⁻⁵³, is still below 1 in an `f64`.
pub fn unit(x: u64) -> f64 {
    ((x >> 12) as f64 + 0.5) / (1u64 << 52) as f64
}

/// Exponential with mean `mean`, from a uniform `u` in (0, 1).
pub fn exponential(u: f64, mean: f64) -> f64 {
    -mean * u.ln()
}

/// Pareto with scale `xm` and shape `alpha` (mean `alpha·xm/(alpha−1)` for alpha > 1), from a
/// uniform `u` in (0, 1).
pub fn pareto(u: f64, xm: f64, alpha: f64) -> f64 {
    xm * u.powf(-1.0 / alpha)
}

/// Log-normal with median `median` and log-space deviation `sigma`, from two uniforms in (0, 1)
/// (Box–Muller).
pub fn lognormal(u1: f64, u2: f64, median: f64, sigma: f64) -> f64 {
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    median * (sigma * z).exp()
}

/// A sequential stream (for the Poisson arrivals, which are one global sequence).
#[derive(Debug, Clone)]
pub struct Stream {
    seed: u64,
    n: u64,
}

impl Stream {
    /// The stream `lane` of `seed`.
    pub fn new(seed: u64, lane: u64) -> Self {
        Stream {
            seed: draw(seed, lane, u64::MAX),
            n: 0,
        }
    }

    /// The next uniform in (0, 1).
    pub fn next_unit(&mut self) -> f64 {
        self.n += 1;
        unit(draw(self.seed, self.n, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: u64, f: impl Fn(u64) -> f64) -> Vec<f64> {
        let mut v: Vec<f64> = (0..n).map(f).collect();
        v.sort_by(f64::total_cmp);
        v
    }

    #[test]
    fn unit_is_open_and_uniform() {
        assert!(unit(0) > 0.0 && unit(u64::MAX) < 1.0);
        let v = sample(100_000, |i| unit(draw(7, i, 0)));
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        assert!((mean - 0.5).abs() < 0.005, "{mean}");
        assert!((v[v.len() / 10] - 0.1).abs() < 0.01);
    }

    #[test]
    fn draws_are_deterministic_and_distinct() {
        assert_eq!(draw(1, 2, 3), draw(1, 2, 3));
        assert_ne!(draw(1, 2, 3), draw(1, 3, 2));
        assert_ne!(draw(1, 2, 3), draw(2, 2, 3));
        let mut a = Stream::new(5, 1);
        let mut b = Stream::new(5, 1);
        let mut c = Stream::new(5, 2);
        let (x, y, z) = (a.next_unit(), b.next_unit(), c.next_unit());
        assert_eq!(x, y);
        assert_ne!(x, z);
        assert_ne!(a.next_unit(), x);
    }

    #[test]
    fn distributions_have_their_moments() {
        let n = 200_000;
        let exp = sample(n, |i| exponential(unit(draw(1, i, 0)), 3.0));
        let mean = exp.iter().sum::<f64>() / n as f64;
        assert!((mean - 3.0).abs() < 0.05, "exponential mean {mean}");
        // Pareto(xm = 2, alpha = 3): mean 3, median 2·2^(1/3), never below xm.
        let par = sample(n, |i| pareto(unit(draw(2, i, 0)), 2.0, 3.0));
        let mean = par.iter().sum::<f64>() / n as f64;
        assert!((mean - 3.0).abs() < 0.05, "pareto mean {mean}");
        assert!(par[0] >= 2.0);
        assert!((par[n as usize / 2] - 2.0 * 2f64.powf(1.0 / 3.0)).abs() < 0.02);
        // Log-normal: median as given, log-space deviation sigma.
        let ln = sample(n, |i| {
            lognormal(unit(draw(3, i, 0)), unit(draw(3, i, 1)), 20.0, 1.5)
        });
        assert!(
            (ln[n as usize / 2] - 20.0).abs() < 0.5,
            "{}",
            ln[n as usize / 2]
        );
        let logs: Vec<f64> = ln.iter().map(|x| (x / 20.0).ln()).collect();
        let var = logs.iter().map(|l| l * l).sum::<f64>() / n as f64;
        assert!((var.sqrt() - 1.5).abs() < 0.02, "sigma {}", var.sqrt());
    }
}
