use super::*;
use crate::testing::{outcome, FakeRequest, Outcome};
use crate::Registry;

fn build(yaml: &str) -> Result<Box<dyn AffinityPlugin>, Vec<String>> {
    Registry::builtin()
        .build_str(yaml, "app")
        .map_err(|es| es.iter().map(ToString::to_string).collect())
}

fn key_of(p: &dyn AffinityPlugin, target: &str) -> Outcome {
    outcome(p, &FakeRequest::new().uri(target))
}

#[test]
fn query_parameter_is_the_key() {
    let p = build("type: query\nname: room").expect("valid");
    let blue = Outcome::Session(SessionKey::new(b"query:room", b"blue"));
    assert_eq!(key_of(&*p, "/chat?room=blue"), blue);
    assert_eq!(key_of(&*p, "/other/path?x=1&room=blue&room=red"), blue);
    assert_eq!(key_of(&*p, "/chat?room=bl%75e"), blue, "percent-decoded");
    assert_eq!(
        key_of(&*p, "/chat?room=a+b"),
        Outcome::Session(SessionKey::new(b"query:room", b"a b"))
    );
    assert_eq!(key_of(&*p, "/chat"), Outcome::Skip);
    assert_eq!(key_of(&*p, "/chat?room="), Outcome::Skip);
    assert_eq!(key_of(&*p, "/chat?rooms=blue"), Outcome::Skip);
    assert_eq!(
        p.session_key(b"blue"),
        Some(SessionKey::new(b"query:room", b"blue"))
    );
    let long = format!("/chat?room={}", "a".repeat(257));
    assert_eq!(key_of(&*p, &long), Outcome::Invalid(Invalid::Malformed));
    assert!(!p.sees_responses());
}

#[test]
fn path_segment_by_position() {
    let p = build("type: path\nsegment: 2").expect("valid");
    let k = |v: &[u8]| Outcome::Session(SessionKey::new(b"path:segment:2", v));
    assert_eq!(key_of(&*p, "/doc/42/edit"), k(b"42"));
    assert_eq!(key_of(&*p, "/doc/42"), k(b"42"));
    assert_eq!(
        key_of(&*p, "/room/42?x=1"),
        k(b"42"),
        "the query is not the path"
    );
    assert_eq!(key_of(&*p, "/doc/a%20b"), k(b"a b"));
    assert_eq!(key_of(&*p, "/doc"), Outcome::Skip);
    assert_eq!(key_of(&*p, "/doc/"), Outcome::Skip);
}

#[test]
fn path_segment_by_pattern() {
    let p = build("type: path\npattern: /doc/{id}/...").expect("valid");
    let k = |v: &[u8]| Outcome::Session(SessionKey::new(b"path:/doc/{id}/...", v));
    assert_eq!(key_of(&*p, "/doc/42"), k(b"42"));
    assert_eq!(key_of(&*p, "/doc/42/"), k(b"42"));
    assert_eq!(key_of(&*p, "/doc/42/edit/more"), k(b"42"));
    assert_eq!(key_of(&*p, "/docs/42"), Outcome::Skip);
    assert_eq!(key_of(&*p, "/"), Outcome::Skip);

    let exact = build("type: path\npattern: /t/*/room/{room}").expect("valid");
    let k = |v: &[u8]| Outcome::Session(SessionKey::new(b"path:/t/*/room/{room}", v));
    assert_eq!(key_of(&*exact, "/t/acme/room/7"), k(b"7"));
    assert_eq!(key_of(&*exact, "/t/acme/room/7/"), k(b"7"));
    assert_eq!(key_of(&*exact, "/t/acme/room/7/x"), Outcome::Skip);
    assert_eq!(key_of(&*exact, "/t/acme/hall/7"), Outcome::Skip);
}

#[test]
fn settings_errors() {
    let err = |yaml: &str| build(yaml).expect_err(yaml);
    assert_eq!(err("type: query"), ["plugin.name: is required"]);
    assert_eq!(
        err("type: query\nname: 'a=b'"),
        ["plugin.name: \"a=b\" is not a query parameter name"]
    );
    assert_eq!(
        err("type: query\nname: room\nmax_len: 0"),
        ["plugin.max_len: must be at least 1 (bytes), found 0"]
    );
    assert_eq!(
        err("type: path"),
        ["plugin.pattern: is required (or segment: the position, from 1)"]
    );
    assert_eq!(
        err("type: path\nsegment: 0"),
        ["plugin.segment: must be at least 1, found 0"]
    );
    assert_eq!(
        err("type: path\nsegment: 1\npattern: /{a}"),
        ["plugin.segment: give segment or pattern, not both"]
    );
    assert_eq!(
        err("type: path\npattern: /doc/id"),
        ["plugin.pattern: \"/doc/id\" has no {placeholder} (e.g. /doc/{id}/...)"]
    );
    assert_eq!(
        err("type: path\npattern: /{a}/{b}"),
        ["plugin.pattern: \"/{a}/{b}\" has more than one {placeholder}"]
    );
    assert_eq!(
        err("type: path\npattern: doc/{id}"),
        ["plugin.pattern: \"doc/{id}\" must start with /"]
    );
    assert_eq!(
        err("type: path\npattern: /.../{id}"),
        ["plugin.pattern: \"/.../{id}\" ... may only end the pattern"]
    );
    let e = err("type: path\npattern: /{id}\nsegmnt: 2");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("plugin.segmnt: unknown key"), "{e:?}");
    // Every error of one block at once.
    let e = err("type: path\nsegment: x\nmax_len: -1");
    assert_eq!(e.len(), 2, "{e:?}");
}
