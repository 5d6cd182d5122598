//! Timing check of token verification (dudect-style): does the time `Keys::verify` takes
//! depend on where a forged MAC differs from the right one?
//!
//! Two classes of forged tokens are verified in random interleaving: MACs wrong in their first
//! byte and MACs wrong in their last byte. An early-exit comparison is faster on the first
//! class; a constant-time one is not. Prints Welch's t statistic over the two timing samples:
//! |t| below ~4.5 is what constant time looks like (the dudect threshold); a byte-by-byte `==`
//! shows |t| in the tens or hundreds. A measurement, not a test: run it on a quiet machine.
//!
//! The same measurement of a byte-by-byte early-exit comparison of the same MACs (the
//! mistake the check is looking for) is printed as a control, to show the method sees it.
//!
//! `cargo run --release -p berth-plugins --example ct_verify [samples]`
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use berth_plugins::token::Keys;
use std::hint::black_box;
use std::time::Instant;

fn with_mac(token: &str, mac: &[u8]) -> String {
    let (signed, _) = token.rsplit_once('.').expect("a token has a MAC");
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(mac))
}

fn welch_t(a: &[f64], b: &[f64]) -> f64 {
    let mean = |x: &[f64]| x.iter().sum::<f64>() / x.len() as f64;
    let var =
        |x: &[f64], m: f64| x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (x.len() - 1) as f64;
    let (ma, mb) = (mean(a), mean(b));
    (ma - mb) / (var(a, ma) / a.len() as f64 + var(b, mb) / b.len() as f64).sqrt()
}

/// The control: an early-exit comparison, as a careless verifier would write it.
fn naive_eq(a: &[u8], b: &[u8]) -> bool {
    for (x, y) in a.iter().zip(b) {
        if black_box(*x) != black_box(*y) {
            return false;
        }
    }
    a.len() == b.len()
}

/// Time `f(class)` for `samples` random classes; each class's timings, slowest 5% dropped (as
/// dudect does: interrupts, migrations).
fn measure(samples: usize, mut f: impl FnMut(usize) -> bool) -> [Vec<f64>; 2] {
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for _ in 0..samples {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let class = (x & 1) as usize;
        let t = Instant::now();
        let ok = f(class);
        let ns = t.elapsed().as_nanos() as f64;
        assert!(!black_box(ok));
        times[class].push(ns);
    }
    for t in times.iter_mut() {
        t.sort_by(|a, b| a.total_cmp(b));
        t.truncate(t.len() * 95 / 100);
    }
    times
}

fn report(what: &str, times: &[Vec<f64>; 2]) {
    let t = welch_t(&times[0], &times[1]);
    let med = |v: &[f64]| v[v.len() / 2];
    println!(
        "{what}: MAC wrong in byte 0: median {} ns; in byte 31: median {} ns; Welch t = {t:.2} \
         ({})",
        med(&times[0]),
        med(&times[1]),
        if t.abs() < 4.5 {
            "no timing difference detected"
        } else {
            "TIMING DIFFERENCE"
        }
    );
}

fn main() {
    let samples: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let keys = Keys::new([("k1", [7u8; 32])]).expect("a valid key");
    let token = keys.sign_session("app", "b1", u64::MAX / 2, 42);
    let mac = URL_SAFE_NO_PAD
        .decode(token.rsplit_once('.').expect("mac").1)
        .expect("base64");
    let mut first = mac.clone();
    first[0] ^= 1;
    let mut last = mac.clone();
    last[31] ^= 1;
    let forged = [with_mac(&token, &first), with_mac(&token, &last)];
    println!("{samples} samples per measurement");
    let times = measure(samples, |class| {
        keys.verify(black_box(forged[class].as_bytes()), "app", 0)
            .is_ok()
    });
    report("Keys::verify", &times);
    let wrong = [first, last];
    let times = measure(samples, |class| naive_eq(black_box(&wrong[class]), &mac));
    report("control, early-exit compare", &times);
}
