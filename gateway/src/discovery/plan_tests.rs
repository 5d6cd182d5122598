use super::*;

fn a(s: &str) -> SocketAddr {
    s.parse().expect("ip:port")
}

fn key() -> IdKey {
    IdKey::default()
}

fn disc(addr: &str, state: AdminState) -> Seen {
    Seen {
        id: backend_id(&key(), a(addr)),
        addr: a(addr),
        state,
        discovered: true,
    }
}

fn file(id: &str, addr: &str) -> Seen {
    Seen {
        id: id.into(),
        addr: a(addr),
        state: AdminState::Active,
        discovered: false,
    }
}

fn want(addrs: &[&str]) -> BTreeSet<SocketAddr> {
    addrs.iter().map(|s| a(s)).collect()
}

fn id(addr: &str) -> String {
    backend_id(&key(), a(addr))
}

#[test]
fn ids_are_derived_from_the_address_alone() {
    let x = backend_id(&key(), a("10.0.0.5:8080"));
    assert_eq!(x, backend_id(&IdKey::default(), a("10.0.0.5:8080")));
    assert!(x.starts_with("dns-") && x.len() == 20, "{x}");
    assert!(crate::config::valid_id(&x), "{x}");
    assert!(!x.contains("10"), "{x} shows the address");
    assert_ne!(x, backend_id(&key(), a("10.0.0.5:8081")));
    assert_ne!(x, backend_id(&key(), a("10.0.0.6:8080")));
    let v6 = backend_id(&key(), a("[fd00::1]:8080"));
    assert!(crate::config::valid_id(&v6), "{v6}");
    let keyed = backend_id(&IdKey(b"k".repeat(32)), a("10.0.0.5:8080"));
    assert_ne!(x, keyed, "the key changes the id");
    // Known value (Python: hmac.new(b"", b"10.0.0.5:8080", sha256).hexdigest()[:16]), so
    // gateways built from other versions agree.
    assert_eq!(x, "dns-77204023a7dffb7c");
}

#[test]
fn new_addresses_are_added_and_known_ones_left_alone() {
    let members = vec![disc("10.0.0.1:80", AdminState::Active)];
    let steps = plan(
        &members,
        &want(&["10.0.0.1:80", "10.0.0.2:80"]),
        &HashSet::new(),
        &key(),
    );
    assert_eq!(
        steps,
        vec![Step::Add {
            id: id("10.0.0.2:80"),
            addr: a("10.0.0.2:80")
        }]
    );
}

#[test]
fn a_vanished_address_drains_then_is_removed_once_drained() {
    let want = want(&["10.0.0.1:80"]);
    let none = HashSet::new();
    let active = vec![
        disc("10.0.0.1:80", AdminState::Active),
        disc("10.0.0.2:80", AdminState::Active),
    ];
    assert_eq!(
        plan(&active, &want, &none, &key()),
        vec![Step::Drain(id("10.0.0.2:80"))]
    );
    let draining = vec![
        disc("10.0.0.1:80", AdminState::Active),
        disc("10.0.0.2:80", AdminState::Draining { deadline: Some(5) }),
    ];
    assert_eq!(plan(&draining, &want, &none, &key()), vec![]);
    let drained = vec![
        disc("10.0.0.1:80", AdminState::Active),
        disc("10.0.0.2:80", AdminState::Drained),
    ];
    assert_eq!(
        plan(&drained, &want, &none, &key()),
        vec![Step::Remove(id("10.0.0.2:80"))]
    );
}

#[test]
fn an_address_that_comes_back_is_restored_only_from_discoverys_own_drain() {
    let want = want(&["10.0.0.1:80", "10.0.0.2:80"]);
    let members = vec![
        disc("10.0.0.1:80", AdminState::Draining { deadline: None }),
        disc("10.0.0.2:80", AdminState::Drained),
    ];
    // Both drained by the admin: left alone.
    assert_eq!(plan(&members, &want, &HashSet::new(), &key()), vec![]);
    let ours: HashSet<String> = [id("10.0.0.1:80"), id("10.0.0.2:80")].into();
    assert_eq!(
        plan(&members, &want, &ours, &key()),
        vec![
            Step::Restore(id("10.0.0.1:80")),
            Step::Restore(id("10.0.0.2:80"))
        ]
    );
}

#[test]
fn file_backends_are_never_touched_and_keep_their_address() {
    let members = vec![
        file("web1", "10.0.0.1:80"),
        file("web2", "10.0.0.9:80"),
        disc("10.0.0.2:80", AdminState::Active),
    ];
    // 10.0.0.1 is web1's: not added again. web2 is not in DNS: not drained.
    let steps = plan(
        &members,
        &want(&["10.0.0.1:80", "10.0.0.2:80"]),
        &HashSet::new(),
        &key(),
    );
    assert_eq!(steps, vec![]);
}

#[test]
fn a_whole_new_set_adds_first_then_drains() {
    let members = vec![
        disc("10.0.0.1:80", AdminState::Active),
        disc("10.0.0.2:80", AdminState::Active),
    ];
    let steps = plan(&members, &want(&["10.0.0.3:80"]), &HashSet::new(), &key());
    assert_eq!(
        steps,
        vec![
            Step::Add {
                id: id("10.0.0.3:80"),
                addr: a("10.0.0.3:80")
            },
            Step::Drain(id("10.0.0.1:80")),
            Step::Drain(id("10.0.0.2:80")),
        ]
    );
}
