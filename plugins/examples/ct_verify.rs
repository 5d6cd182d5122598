//! Timing check of token verification (dudect-style): does the time `Keys::verify` takes
//! depend on where a forged MAC differs from the right one?
//!
//! Two classes of forged tokens are verified in random interleaving: MACs wrong in their first
//! byte and MACs wrong in their last byte. An early-exit comparison is faster on the first
//! class; a constant-time one is not. Prints Welch's t statistic over the two timing samples:
//! |t| below ~4.5 is what constant time looks like (the dudect threshold); a byte-by-byte `==`
//! shows |t| in the tens or hundreds. A measurement, not a test: run it on a quiet machine.
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
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for _ in 0..samples {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let class = (x & 1) as usize;
        let t = Instant::now();
        let r = keys.verify(black_box(forged[class].as_bytes()), "app", 0);
        let ns = t.elapsed().as_nanos() as f64;
        assert!(black_box(r).is_err());
        times[class].push(ns);
    }
    // Drop the slowest 5% of each class (interrupts, migrations), as dudect does.
    for t in times.iter_mut() {
        t.sort_by(|a, b| a.total_cmp(b));
        t.truncate(t.len() * 95 / 100);
    }
    let t = welch_t(&times[0], &times[1]);
    let med = |v: &[f64]| v[v.len() / 2];
    println!(
        "verify, MAC wrong in byte 0: median {} ns; in byte 31: median {} ns; {} samples; \
         Welch t = {t:.2} ({})",
        med(&times[0]),
        med(&times[1]),
        samples,
        if t.abs() < 4.5 {
            "no timing difference detected"
        } else {
            "TIMING DIFFERENCE"
        }
    );
}
