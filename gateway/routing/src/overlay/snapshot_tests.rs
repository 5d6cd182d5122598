use super::*;
use crate::overlay::tests::{key, overlay};
use crate::BackendId;
use std::collections::HashMap;

const A: BackendId = BackendId(0);
const B: BackendId = BackendId(1);
const C: BackendId = BackendId(2);

fn pin(backend: BackendId, backup: Option<BackendId>) -> Pin {
    Pin { backend, backup }
}

fn by_key(records: &[PinRecord]) -> HashMap<SessionKey, PinRecord> {
    records.iter().map(|r| (r.key, *r)).collect()
}

#[test]
fn export_then_import_keeps_every_pin_its_backup_and_times() {
    let old = overlay(10_000, 600_000);
    for i in 0..3_000u64 {
        let (b, backup) = match i % 3 {
            0 => (A, Some(B)),
            1 => (B, None),
            _ => (C, Some(A)),
        };
        old.pin(key(i), b, backup, 1_000 + i); // created at second 1..4
    }
    old.get(key(7), 50_000); // used again at second 50
    let mut records = Vec::new();
    old.export(100_000, &mut records);
    assert_eq!(records.len(), 3_000);
    let r7 = by_key(&records)[&key(7)];
    assert_eq!((r7.age, r7.idle), (99_000, 50_000));

    // The new process's clock is younger: ages are counted back from its own `now`.
    let new = overlay(10_000, 600_000);
    for r in &records {
        assert_eq!(new.import(r, 200_000), Imported::Added);
    }
    assert_eq!(
        (new.count(A), new.count(B), new.count(C)),
        (1_000, 1_000, 1_000)
    );
    assert_eq!(
        new.stats().created,
        0,
        "handed-over pins are not new sessions"
    );
    let info = new.info(key(7)).expect("imported");
    assert_eq!((info.backend, info.backup), (B, None));
    assert_eq!((info.created, info.last_seen), (101_000, 150_000));
    let mut again = Vec::new();
    new.export(200_000, &mut again);
    let again = by_key(&again);
    for r in &records {
        assert_eq!(again[&r.key].pin, r.pin);
    }
    new.check_invariants();
}

#[test]
fn expired_pins_are_neither_exported_nor_imported() {
    let old = overlay(1_000, 10_000);
    old.pin(key(1), A, None, 0);
    old.pin(key(2), B, None, 5_000);
    let mut records = Vec::new();
    old.export(12_000, &mut records);
    assert_eq!(records.iter().map(|r| r.key).collect::<Vec<_>>(), [key(2)]);

    // A shorter TTL on the importing side refuses what is already idle that long.
    let new = overlay(1_000, 5_000);
    assert_eq!(new.import(&records[0], 1_000), Imported::Expired);
    assert!(new.is_empty());
}

#[test]
fn import_over_an_existing_pin_moves_it_and_keeps_counts_exact() {
    let o = overlay(1_000, 0);
    o.pin(key(1), A, None, 10_000);
    let rec = PinRecord {
        key: key(1),
        pin: pin(B, Some(C)),
        age: 3_000,
        idle: 1_000,
        placed: false,
    };
    assert_eq!(o.import(&rec, 20_000), Imported::Updated);
    assert_eq!((o.count(A), o.count(B)), (0, 1));
    let info = o.info(key(1)).expect("still pinned");
    assert_eq!((info.backend, info.backup), (B, Some(C)));
    assert_eq!((info.created, info.last_seen), (17_000, 19_000));
    // Same backend: a refresh that never moves last-seen backwards.
    o.get(key(1), 30_000);
    assert_eq!(o.import(&rec, 31_000), Imported::Updated);
    assert_eq!(o.info(key(1)).map(|i| i.last_seen), Some(30_000));
    o.check_invariants();
}

#[test]
fn import_into_a_full_overlay_stays_bounded() {
    let o = overlay(100, 0);
    for i in 0..500u64 {
        let rec = PinRecord {
            key: key(i),
            pin: pin(A, None),
            age: 0,
            idle: 0,
            placed: false,
        };
        o.import(&rec, 1_000);
    }
    assert!(o.len() <= o.capacity());
    assert_eq!(o.count(A) as usize, o.len());
    assert!(o.stats().evicted >= 400);
    o.check_invariants();
}

#[test]
fn the_journal_is_off_until_started_and_notes_only_changes() {
    let o = overlay(1_000, 0);
    let mut changes = Vec::new();
    o.pin(key(1), A, None, 0);
    assert_eq!(o.journal_take(0, &mut changes), Taken::default());
    assert!(changes.is_empty(), "no journal before journal_start");

    o.journal_start(None);
    o.get(key(1), 1_000); // a hit: no change
    o.pin(key(1), A, None, 1_000); // same backend and backup: no change
    o.journal_take(1_000, &mut changes);
    assert!(changes.is_empty(), "refreshes are not changes: {changes:?}");

    o.pin(key(2), B, None, 2_000); // new
    o.pin(key(1), C, Some(A), 2_000); // re-pinned
    o.pin(key(1), B, Some(A), 2_000); // and again: sent once, as it is now
    o.pin(key(3), A, None, 2_000);
    o.remove(key(3)); // removed
    o.journal_take(3_000, &mut changes);
    changes.sort_by_key(|c| match c {
        Change::Pinned(r) => r.key.0,
        Change::Removed(k) => k.0,
    });
    let mut want = vec![
        Change::Pinned(PinRecord {
            key: key(1),
            pin: pin(B, Some(A)),
            age: 3_000,
            idle: 1_000,
            placed: false,
        }),
        Change::Pinned(PinRecord {
            key: key(2),
            pin: pin(B, None),
            age: 1_000,
            idle: 1_000,
            placed: false,
        }),
        Change::Removed(key(3)),
    ];
    want.sort_by_key(|c| match c {
        Change::Pinned(r) => r.key.0,
        Change::Removed(k) => k.0,
    });
    assert_eq!(changes, want);

    changes.clear();
    o.journal_take(3_000, &mut changes);
    assert!(changes.is_empty(), "taken once");
    o.journal_stop();
    o.pin(key(9), A, None, 4_000);
    o.journal_take(4_000, &mut changes);
    assert!(changes.is_empty(), "stopped");
}

#[test]
fn imports_are_journaled_so_a_process_can_pass_them_on() {
    let middle = overlay(1_000, 0);
    middle.journal_start(None);
    let rec = PinRecord {
        key: key(5),
        pin: pin(C, None),
        age: 0,
        idle: 0,
        placed: false,
    };
    middle.import(&rec, 1_000);
    let mut changes = Vec::new();
    middle.journal_take(1_000, &mut changes);
    assert_eq!(changes, vec![Change::Pinned(rec)]);
}

#[test]
fn an_overflowing_journal_sends_its_shard_whole() {
    // One shard (small overlay), journal bound JOURNAL_MIN keys.
    let o = overlay(100_000 / 256, 0);
    assert_eq!(o.shards(), 1);
    o.pin(key(0), A, None, 0);
    o.journal_start(None);
    for i in 1..=(JOURNAL_MIN as u64 + 10) {
        let k = key(i % 200 + 1);
        o.pin(k, if (i / 200) % 2 == 0 { A } else { B }, None, 1_000);
    }
    let mut changes = Vec::new();
    let taken = o.journal_take(2_000, &mut changes);
    assert_eq!(taken.overflowed_shards, 1);
    assert_eq!(changes.len(), o.len(), "every live pin, key 0 included");
    assert!(changes
        .iter()
        .any(|c| matches!(c, Change::Pinned(r) if r.key == key(0))));
    // The journal goes on after an overflow.
    changes.clear();
    o.pin(key(1), C, None, 3_000);
    assert_eq!(o.journal_take(3_000, &mut changes), Taken::default());
    assert_eq!(changes.len(), 1);
}

#[test]
fn export_shard_by_shard_covers_the_whole_overlay_once() {
    let o = overlay(100_000, 0);
    assert!(o.shards() > 1);
    for i in 0..20_000u64 {
        o.pin(key(i), A, None, 0);
    }
    let mut all = Vec::new();
    for s in 0..o.shards() {
        o.export_shard(s, 0, &mut all);
    }
    let keys: std::collections::HashSet<_> = all.iter().map(|r| r.key).collect();
    assert_eq!((all.len(), keys.len()), (20_000, 20_000));
}

#[test]
fn the_wake_callback_rings_once_per_take_and_shard() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let rung = Arc::new(AtomicUsize::new(0));
    let o = overlay(100, 0); // one shard
    let r = rung.clone();
    o.journal_start(Some(Arc::new(move || {
        r.fetch_add(1, Ordering::SeqCst);
    })));
    o.get(key(1), 0);
    assert_eq!(
        rung.load(Ordering::SeqCst),
        0,
        "a miss without pin is no change"
    );
    o.pin(key(1), A, None, 0);
    o.pin(key(2), A, None, 0);
    assert_eq!(rung.load(Ordering::SeqCst), 1);
    o.journal_take(0, &mut Vec::new());
    o.pin(key(3), B, None, 0);
    assert_eq!(rung.load(Ordering::SeqCst), 2);
}

#[test]
fn a_placement_does_not_override_an_explicit_pin_but_the_reverse_does() {
    let o = overlay(1_000, 0);
    o.pin(key(1), A, None, 0); // explicit (e.g. a learned session id)
    let placement = |b| PinRecord {
        key: key(1),
        pin: pin(b, None),
        age: 0,
        idle: 0,
        placed: true,
    };
    assert_eq!(o.import(&placement(B), 1_000), Imported::Kept);
    assert_eq!(o.info(key(1)).map(|i| i.backend), Some(A));
    assert_eq!(
        o.import(&placement(A), 1_000),
        Imported::Updated,
        "same backend: refresh"
    );

    // A placement here (a ring pick on a miss) yields to an explicit pin from elsewhere.
    let router_miss = o.get_or_pin(key(2), 0, false, || Some(pin(B, None)));
    assert!(matches!(router_miss, crate::Lookup::Pinned(_)));
    let mut explicit = placement(C);
    explicit.key = key(2);
    explicit.placed = false;
    assert_eq!(o.import(&explicit, 1_000), Imported::Updated);
    assert_eq!(o.info(key(2)).map(|i| i.backend), Some(C));
    // Exported with their kind, so the next process decides the same way.
    let mut records = Vec::new();
    o.export(1_000, &mut records);
    let by = by_key(&records);
    assert!(!by[&key(1)].placed && !by[&key(2)].placed);
    let o2 = overlay(1_000, 0);
    o2.get_or_pin(key(3), 0, false, || Some(pin(A, None)));
    records.clear();
    o2.export(0, &mut records);
    assert!(records[0].placed);
}
