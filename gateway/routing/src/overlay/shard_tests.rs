//! Property test of one shard: random operations on small, full tables (1–32 pins, so probes
//! wrap round the table's end and every insert evicts), checking after each one that the
//! table is consistent (every pin findable, no hole on a probe path, no key twice), that the
//! per-backend and active counts and the lock-free loads match the pins, and that what an
//! operation says it pinned is what a lookup then finds.
//!
//! Deterministic: seeds 1..=SEEDS, each printed when its run fails;
//! `BERTH_SHARD_SEED=n` replays one.
use super::super::loads::Loads;
use super::super::{Imported, Lookup, Pin, PinOutcome, PinRecord};
use super::Shard;
use crate::{BackendId, SessionKey};
use std::sync::Arc;

const SEEDS: u64 = 3000;
const STEPS: usize = 400;
const BACKENDS: u32 = 5;

/// xorshift64*: deterministic test randomness.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pin(&mut self) -> Pin {
        let backend = BackendId(self.below(BACKENDS as usize) as u32);
        let backup = (self.below(2) == 0).then(|| BackendId(self.below(BACKENDS as usize) as u32));
        Pin { backend, backup }
    }
}

/// Prints the seed of a run that panics.
struct Seed(u64);

impl Drop for Seed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "shard property test failed with seed {0} (BERTH_SHARD_SEED={0})",
                self.0
            );
        }
    }
}

/// The shard is consistent and its loads (one shard: the whole overlay) match its pins.
fn check(s: &Shard, loads: &Loads) {
    s.check_invariants();
    let mut active = Vec::new();
    s.add_counts(&mut active, true);
    for id in 0..BACKENDS {
        let want = active.get(id as usize).copied().unwrap_or(0);
        assert_eq!(
            u64::from(loads.get(BackendId(id))),
            want,
            "loads of backend {id}"
        );
    }
}

fn backend_of(s: &Shard, key: u128) -> Option<BackendId> {
    s.info(key).map(|i| i.backend)
}

fn run(seed: u64) {
    let _seed = Seed(seed);
    let mut r = Rng::new(seed);
    let cap = 1 + r.below(32);
    let ttl_s = [0, 2, 5][r.below(3)];
    let loads = Arc::new(Loads::default());
    let mut s = Shard::new(cap, r.next(), loads.clone());
    // More keys than room, so the table stays full and evicts.
    let keys: Vec<u128> = (0..cap * 3 + 2)
        .map(|_| u128::from(r.next()) << 64 | u128::from(r.next()))
        .collect();
    let mut now_s = 1u32;
    for _ in 0..STEPS {
        if r.below(4) == 0 {
            now_s += r.below(3) as u32;
        }
        let key = keys[r.below(keys.len())];
        match r.below(11) {
            0 | 1 => {
                let to = r.pin();
                let acquire = r.below(2) == 0;
                match s.get_or_pin(key, now_s, ttl_s, acquire, || Some(to)) {
                    Lookup::Found(p) => assert_eq!(backend_of(&s, key), Some(p.backend)),
                    Lookup::Pinned(p) => {
                        assert_eq!(p, to);
                        assert_eq!(backend_of(&s, key), Some(to.backend), "a new pin is found");
                    }
                    Lookup::Unplaced => unreachable!("place always chooses"),
                }
            }
            2 => match s.get_or_pin(key, now_s, ttl_s, false, || None) {
                Lookup::Found(p) => assert_eq!(backend_of(&s, key), Some(p.backend)),
                Lookup::Pinned(_) => unreachable!("place chose nothing"),
                Lookup::Unplaced => assert_eq!(s.info(key), None, "absent or expired and removed"),
            },
            3 => {
                let to = r.pin();
                let before = backend_of(&s, key);
                let out = s.pin(key, to, now_s, ttl_s);
                assert_eq!(backend_of(&s, key), Some(to.backend));
                if let PinOutcome::Changed { previous } = out {
                    assert_eq!(Some(previous), before);
                }
            }
            4 => {
                let acquire = r.below(2) == 0;
                if let Some(p) = s.get(key, now_s, ttl_s, acquire) {
                    assert_eq!(backend_of(&s, key), Some(p.backend));
                }
            }
            5 => {
                let pinned = s.info(key).is_some();
                assert_eq!(s.release(key, now_s), pinned);
            }
            6 => {
                let had = backend_of(&s, key);
                assert_eq!(s.remove(key), had);
                assert_eq!(s.info(key), None);
            }
            7 => {
                s.sweep(now_s, ttl_s);
                s.recount(now_s.saturating_sub(r.below(4) as u32));
            }
            8 => {
                let from = BackendId(r.below(BACKENDS as usize) as u32);
                let to = r.pin();
                let before = backend_of(&s, key);
                if s.move_if_idle(key, from, to, now_s + 1) {
                    assert_eq!(before, Some(from));
                    assert_eq!(backend_of(&s, key), Some(to.backend));
                }
            }
            9 => {
                let rec = PinRecord {
                    key: SessionKey(key),
                    pin: r.pin(),
                    age: r.below(10_000) as u64,
                    idle: r.below(8_000) as u64,
                    placed: r.below(2) == 0,
                };
                match s.import(&rec, now_s, ttl_s) {
                    Imported::Added | Imported::Updated => {
                        assert_eq!(backend_of(&s, key), Some(rec.pin.backend))
                    }
                    Imported::Kept => assert!(s.info(key).is_some()),
                    Imported::Expired => {}
                }
            }
            _ => {
                let b = BackendId(r.below(BACKENDS as usize) as u32);
                s.remove_backend(b);
                assert_eq!(s.count(b), 0);
            }
        }
        check(&s, &loads);
    }
}

#[test]
fn full_small_shards_keep_their_invariants_under_random_operations() {
    match std::env::var("BERTH_SHARD_SEED") {
        Ok(seed) => run(seed.parse().expect("BERTH_SHARD_SEED is a number")),
        Err(_) => (1..=SEEDS).for_each(run),
    }
}
