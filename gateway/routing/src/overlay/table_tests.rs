use super::*;
use std::collections::HashMap;

/// A key whose home is `h` in a table of `n` slots; `tag` (the high bits) tells keys apart.
fn key_at(h: usize, n: usize, tag: u64) -> u128 {
    // Distinct low bits too, like keys ground to share a home.
    let lo = (((h as u128) << 64).div_ceil(n as u128) as u64).wrapping_add(tag);
    let k = u128::from(tag) << 64 | u128::from(lo);
    assert_eq!(home(k, 1, n), h);
    k
}

fn slot(key: u128, backend: u32, seen: u32) -> Slot {
    Slot {
        key,
        backend,
        backup: VACANT,
        created_s: seen,
        last_seen_s: seen,
    }
}

fn put(t: &mut Table, key: u128, backend: u32, seen: u32) -> usize {
    let vacant = t.find(key).expect_err("absent");
    t.insert(slot(key, backend, seen), Some(vacant))
}

/// xorshift64: deterministic test randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn slot_is_32_bytes_and_aligned() {
    assert_eq!(std::mem::size_of::<Slot>(), 32);
    assert_eq!(std::mem::align_of::<Slot>(), 32);
}

#[test]
fn sizes_follow_the_bound() {
    let mut t = Table::new(12, 1);
    assert_eq!(t.slots(), INITIAL_SLOTS);
    for k in 1..=12u128 {
        put(&mut t, k << 60, 0, 0);
    }
    assert_eq!(t.slots(), 18, "12 / 0.7");
    t.check_invariants();
    assert_eq!(Table::new(1, 1).slots(), 2, "always one vacant slot");
    assert_eq!(Table::new(0, 1).slots(), 2, "0 is treated as 1");
    let mut t = Table::new(1000, 1);
    assert_eq!(t.slots(), INITIAL_SLOTS);
    for k in 0..1000u64 {
        put(
            &mut t,
            u128::from(k.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            0,
            0,
        );
    }
    assert_eq!((t.len(), t.slots()), (1000, 1429));
    assert_eq!(t.memory_bytes(), 1429 * 32);
    t.check_invariants();
}

#[test]
fn probes_wrap_around_the_end() {
    let mut t = Table::new(12, 1);
    let n = t.slots();
    // Four keys homed at the last slot: they occupy n-1, 0, 1, 2.
    let keys: Vec<u128> = (0..4).map(|tag| key_at(n - 1, n, tag)).collect();
    let pos: Vec<usize> = keys.iter().map(|&k| put(&mut t, k, 1, 0)).collect();
    assert_eq!(pos, vec![n - 1, 0, 1, 2]);
    // A key homed at 0 goes after them.
    let k0 = key_at(0, n, 9);
    assert_eq!(put(&mut t, k0, 2, 0), 3);
    // An absent key homed at n-1 probes across the end to the first vacant slot.
    assert_eq!(t.find(key_at(n - 1, n, 99)), Err(4));
    t.check_invariants();

    // Removing the pin at n-1 pulls the wrapped ones back across the end.
    assert_eq!(t.remove_at(n - 1).key, keys[0]);
    t.check_invariants();
    assert_eq!(t.find(keys[1]), Ok(n - 1));
    assert_eq!(t.find(keys[3]), Ok(1));
    // k0 (home 0) moved back to 2, not past its home.
    assert_eq!(t.find(k0), Ok(2));
    assert_eq!(t.find(keys[0]), Err(3));
    // Remove in the middle of the wrapped run.
    t.remove_at(0);
    t.check_invariants();
    assert_eq!((t.find(keys[3]), t.find(k0)), (Ok(0), Ok(1)));
}

#[test]
fn backward_shift_keeps_pins_at_or_after_home() {
    let mut t = Table::new(12, 1);
    let n = t.slots();
    // a (home 3) at 3, b (home 3) at 4, c (home 5) at 5, d (home 4) at 6.
    let (a, b, c, d) = (
        key_at(3, n, 1),
        key_at(3, n, 2),
        key_at(5, n, 3),
        key_at(4, n, 4),
    );
    for k in [a, b, c, d] {
        put(&mut t, k, 0, 0);
    }
    assert_eq!(t.find(d), Ok(6));
    t.remove_at(3); // a: b moves to 3; c stays at 5 (its home); d moves to 4.
    t.check_invariants();
    assert_eq!((t.find(b), t.find(c), t.find(d)), (Ok(3), Ok(5), Ok(4)));
}

/// Random inserts, updates and removals against a `HashMap`, with keys crowded onto a few
/// homes (long clusters, wrap-around) or spread out, at several sizes.
#[test]
fn random_ops_match_a_hashmap() {
    for (max_len, homes, seed) in [(12, 3, 1), (50, 10, 2), (300, 1 << 20, 3), (1, 1, 4)] {
        let mut rng = Rng(0x2545_F491_4F6C_DD1D ^ seed);
        let mut t = Table::new(max_len, 1);
        let mut model: HashMap<u128, u32> = HashMap::new();
        for step in 0..20_000u32 {
            let r = rng.next();
            // 4 * max_len distinct keys; their homes in the current table are crowded when
            // `homes` is small.
            let tag = r % (4 * max_len as u64);
            let n = t.slots();
            let key = key_at((tag as usize % homes) * 7919 % n, n, tag + 1);
            // Keys are identified by tag: the same tag must map to the same key whatever the
            // table size, so look it up by tag in the model.
            let key = model
                .keys()
                .copied()
                .find(|k| (k >> 64) as u64 == tag + 1)
                .unwrap_or(key);
            match (r >> 32) % 3 {
                0 => match (t.find(key), model.remove(&key)) {
                    (Ok(pos), Some(b)) => assert_eq!(t.remove_at(pos).backend, b),
                    (Err(_), None) => {}
                    other => panic!("step {step}: {other:?}"),
                },
                1 => match t.find(key) {
                    Ok(pos) => {
                        t.slot_mut(pos).backend = step;
                        model.insert(key, step);
                    }
                    Err(vacant) if t.len() < max_len => {
                        t.insert(slot(key, step, step), Some(vacant));
                        model.insert(key, step);
                    }
                    Err(vacant) => {
                        // Full: evict as the shard does.
                        let victim = t.oldest_near(key, 5).expect("non-empty");
                        let old = t.replace(victim, slot(key, step, step), vacant);
                        assert_eq!(model.remove(&old.key), Some(old.backend));
                        model.insert(key, step);
                    }
                },
                _ => {
                    let got = t.find(key).ok().map(|p| t.slot(p).backend);
                    assert_eq!(got, model.get(&key).copied(), "step {step}");
                }
            }
            assert_eq!(t.len(), model.len());
            if step % 97 == 0 {
                t.check_invariants();
            }
        }
        t.check_invariants();
        for (k, b) in &model {
            assert_eq!(t.find(*k).map(|p| t.slot(p).backend), Ok(*b));
        }
    }
}

#[test]
fn replace_in_place_or_at_the_vacant_slot() {
    let mut t = Table::new(12, 1);
    let n = t.slots();
    // A run at 3..6 (homes 3, 3, 4), a gap at 6, a pin at 7 (home 7).
    let run = [key_at(3, n, 1), key_at(3, n, 2), key_at(4, n, 3)];
    for k in run {
        put(&mut t, k, 0, 0);
    }
    let far = key_at(7, n, 4);
    put(&mut t, far, 0, 0);
    // A new key homed at 3 probes 3, 4, 5 and would go to 6: a victim at 4 is on its path,
    // so the new pin takes slot 4.
    let new = key_at(3, n, 5);
    assert_eq!(t.find(new), Err(6));
    assert_eq!(t.replace(4, slot(new, 1, 0), 6).key, run[1]);
    assert_eq!(t.find(new), Ok(4));
    t.check_invariants();
    // Another key homed at 4 would go to 6; the victim at 7 is past the gap: removed, and the
    // new pin goes to 6.
    let new2 = key_at(4, n, 6);
    assert_eq!(t.replace(7, slot(new2, 1, 0), 6).key, far);
    assert_eq!((t.find(new2), t.find(far)), (Ok(6), Err(7)));
    assert_eq!(t.len(), 4);
    t.check_invariants();
}

#[test]
fn remove_where_across_the_wrap() {
    let mut t = Table::new(12, 1);
    let n = t.slots();
    let mut keys = Vec::new();
    for tag in 0..10u64 {
        // Homes n-2, n-1, 0: one long cluster wrapping around.
        let k = key_at((n - 2 + tag as usize % 3) % n, n, tag);
        put(&mut t, k, (tag % 2) as u32, 0);
        keys.push(k);
    }
    let mut gone = Vec::new();
    t.remove_where(|s| s.backend == 1, |s| gone.push(s.key));
    t.check_invariants();
    assert_eq!((gone.len(), t.len()), (5, 5));
    for (tag, k) in keys.iter().enumerate() {
        assert_eq!(t.find(*k).is_ok(), tag % 2 == 0);
        assert_eq!(gone.contains(k), tag % 2 == 1);
    }
    t.remove_where(|_| true, |_| {});
    assert_eq!(t.len(), 0);
    assert!(t.slots.iter().all(Slot::is_vacant));
}

#[test]
fn full_table_evicts_the_oldest_sampled() {
    let mut t = Table::new(100, 1);
    let mut rng = Rng(7);
    for i in 0..100u32 {
        put(
            &mut t,
            u128::from(rng.next()) << 64 | u128::from(rng.next()),
            i,
            i,
        );
    }
    assert_eq!(t.len(), 100);
    for i in 100..10_000u32 {
        let key = u128::from(rng.next()) << 64 | u128::from(rng.next());
        let victim = t.oldest_near(key, 5).expect("full");
        // The victim is the oldest of the first five pins from the key's home.
        let n = t.slots();
        let mut firsts = Vec::new();
        let mut j = home(key, 1, n);
        while firsts.len() < 5 {
            if !t.slot(j).is_vacant() {
                firsts.push(t.slot(j).last_seen_s);
            }
            j = (j + 1) % n;
        }
        assert_eq!(Some(&t.slot(victim).last_seen_s), firsts.iter().min());
        let vacant = t.find(key).expect_err("new key");
        t.replace(victim, slot(key, i, i), vacant);
        assert_eq!(t.len(), 100);
    }
    t.check_invariants();
    // Sampling evicts old pins first: few survivors of the first 5,000 insertions remain.
    let old = t.iter().filter(|s| s.last_seen_s < 5_000).count();
    assert!(old <= 5, "{old} old pins survived");
}

/// Keys crafted to share one home (as a client grinding cookie values could) spread out under a
/// random multiplier.
#[test]
fn multiplier_spreads_crafted_keys() {
    let crafted: Vec<u128> = (0..200).map(|tag| key_at(5, 429, tag)).collect();
    let mut t = Table::new(300, 0x9E37_79B9_7F4A_7C15);
    for &k in &crafted {
        put(&mut t, k, 0, 0);
    }
    t.check_invariants();
    let n = t.slots();
    let longest = (0..n)
        .filter(|&p| !t.slot(p).is_vacant())
        .map(|p| distance(t.home(t.slot(p).key), p, n))
        .max();
    assert!(longest < Some(20), "longest displacement {longest:?}");
    // Without the multiplier they form one cluster.
    let mut plain = Table::new(300, 1);
    for &k in &crafted {
        put(&mut plain, k, 0, 0);
    }
    assert_eq!(plain.find(crafted[199]), Ok(204));
}

#[test]
fn one_pin_table() {
    let mut t = Table::new(1, 1);
    assert_eq!(t.oldest_near(5, 5), None);
    put(&mut t, 5, 0, 0);
    let victim = t.oldest_near(6, 5).expect("one pin");
    let vacant = t.find(6).expect_err("absent");
    assert_eq!(t.replace(victim, slot(6, 0, 0), vacant).key, 5);
    assert_eq!(t.len(), 1);
    t.check_invariants();
    assert!(t.find(5).is_err() && t.find(6).is_ok());
}
