use super::*;

fn stored(events: &[Event], wall_ms: u64) -> Snapshot {
    // What the hash holds after `events`, written in order (the script's semantics).
    let mut hash = BTreeMap::new();
    for e in events {
        for (f, v) in fields_of(e, wall_ms) {
            match v {
                Some(v) => hash.insert(f, v),
                None => hash.remove(&f),
            };
        }
    }
    parse(hash.into_iter().collect())
}

fn local(id: &str, weight: u32, draining: bool) -> Local {
    Local {
        id: id.into(),
        weight,
        max_sessions: None,
        draining,
        discovered: false,
    }
}

fn drain(b: &str, deadline_ms: Option<u64>) -> Event {
    Event::Drain {
        backend: b.into(),
        deadline_ms,
    }
}

fn undrain(b: &str) -> Event {
    Event::Undrain { backend: b.into() }
}

#[test]
fn fields_round_trip_through_the_hash() {
    let snap = stored(
        &[
            drain("b1", Some(30_000)),
            Event::Update {
                backend: "b2".into(),
                weight: Some(4),
                max_sessions: None,
                cap_changed: true,
            },
            Event::Add {
                backend: "b3".into(),
                addr: "10.0.0.3:80".into(),
                weight: 2,
                max_sessions: Some(9),
                drain: true,
            },
            Event::Remove {
                backend: "b4".into(),
            },
        ],
        1_000,
    );
    assert_eq!(snap["b1"].drain, Some(Some(31_000)), "absolute wall clock");
    assert_eq!(snap["b2"].weight, Some(4));
    assert_eq!(snap["b2"].max_sessions, Some(None), "cap removed");
    let b3 = &snap["b3"];
    assert_eq!(
        b3.member,
        Some(Membership::Added {
            addr: "10.0.0.3:80".into()
        })
    );
    assert_eq!(
        (b3.weight, b3.max_sessions, b3.drain),
        (Some(2), Some(Some(9)), Some(None))
    );
    assert_eq!(snap["b4"].member, Some(Membership::Removed));
}

#[test]
fn undrain_and_remove_clear_what_they_replace() {
    let snap = stored(&[drain("b1", None), undrain("b1")], 0);
    assert!(snap.is_empty(), "{snap:?}");
    let snap = stored(
        &[
            drain("b2", None),
            Event::Update {
                backend: "b2".into(),
                weight: Some(7),
                max_sessions: None,
                cap_changed: false,
            },
            Event::Remove {
                backend: "b2".into(),
            },
        ],
        0,
    );
    let b2 = &snap["b2"];
    assert_eq!(b2.member, Some(Membership::Removed));
    assert_eq!((b2.weight, b2.drain), (None, None));
    // Added again after the removal: the tombstone is gone.
    let snap = stored(
        &[
            Event::Remove {
                backend: "b2".into(),
            },
            Event::Add {
                backend: "b2".into(),
                addr: "10.0.0.2:80".into(),
                weight: 1,
                max_sessions: None,
                drain: false,
            },
        ],
        0,
    );
    assert!(matches!(snap["b2"].member, Some(Membership::Added { .. })));
}

#[test]
fn unreadable_fields_are_skipped() {
    let snap = parse(vec![
        ("b1:weight".into(), "heavy".into()),
        ("nocolon".into(), "1".into()),
        ("b2:colour".into(), "red".into()),
        ("b3:weight".into(), "5".into()),
    ]);
    assert_eq!(snap.keys().collect::<Vec<_>>(), ["b3"]);
}

#[test]
fn a_late_gateway_applies_what_differs() {
    let snap = stored(
        &[
            drain("b1", Some(60_000)),
            Event::Update {
                backend: "b2".into(),
                weight: Some(5),
                max_sessions: None,
                cap_changed: false,
            },
            Event::Add {
                backend: "b9".into(),
                addr: "10.0.0.9:80".into(),
                weight: 3,
                max_sessions: None,
                drain: false,
            },
            Event::Remove {
                backend: "b3".into(),
            },
        ],
        10_000,
    );
    let here = [
        local("b1", 1, false),
        local("b2", 1, false),
        local("b3", 1, false),
    ];
    let events = plan(&snap, &here, &HashSet::new(), 40_000, 1);
    assert_eq!(
        events,
        vec![
            drain("b1", Some(30_000)),
            Event::Update {
                backend: "b2".into(),
                weight: Some(5),
                max_sessions: None,
                cap_changed: false,
            },
            Event::Remove {
                backend: "b3".into()
            },
            Event::Add {
                backend: "b9".into(),
                addr: "10.0.0.9:80".into(),
                weight: 3,
                max_sessions: None,
                drain: false,
            },
        ]
    );
    // Applied: nothing more to do (the sync is idempotent).
    let after = [
        local("b1", 1, true),
        local("b2", 5, false),
        local("b9", 3, false),
    ];
    assert_eq!(plan(&snap, &after, &HashSet::new(), 40_000, 1), vec![]);
}

#[test]
fn a_passed_deadline_drains_now() {
    let snap = stored(&[drain("b1", Some(1_000))], 0);
    let events = plan(&snap, &[local("b1", 1, false)], &HashSet::new(), 5_000, 1);
    assert_eq!(events, vec![drain("b1", Some(0))]);
}

#[test]
fn only_fleet_drains_are_undone() {
    let snap = Snapshot::new();
    let here = [local("b1", 1, true), local("b2", 1, true)];
    let fleet: HashSet<String> = ["b1".to_string()].into();
    // b1 was drained through the fleet and its drain is gone from the hash (an undrain this
    // gateway missed); b2 drains because of the file or DNS: left alone.
    assert_eq!(plan(&snap, &here, &fleet, 0, 1), vec![undrain("b1")]);
    // b1 named in the hash for something else, its drain gone: still undrained.
    let snap = stored(
        &[Event::Update {
            backend: "b1".into(),
            weight: Some(1),
            max_sessions: None,
            cap_changed: false,
        }],
        0,
    );
    assert_eq!(plan(&snap, &here, &fleet, 0, 1), vec![undrain("b1")]);
}

#[test]
fn stored_state_for_a_backend_not_here_is_skipped() {
    let snap = stored(&[drain("gone", None)], 0);
    assert_eq!(
        plan(&snap, &[local("b1", 1, false)], &HashSet::new(), 0, 1),
        vec![]
    );
}

#[test]
fn a_tombstone_does_not_remove_a_discovered_backend() {
    let snap = stored(
        &[Event::Remove {
            backend: "dns-00aa".into(),
        }],
        0,
    );
    let mut l = local("dns-00aa", 1, false);
    assert_eq!(
        plan(&snap, std::slice::from_ref(&l), &HashSet::new(), 0, 1),
        vec![Event::Remove {
            backend: "dns-00aa".into()
        }]
    );
    l.discovered = true;
    assert_eq!(plan(&snap, &[l], &HashSet::new(), 0, 1), vec![]);
}
