use super::*;
use proptest::prelude::*;

const NOW: u64 = 1_700_000_000;
const LATER: u64 = NOW + 3600;

fn keys(list: &[(&str, u8)]) -> Keys {
    Keys::new(list.iter().map(|(id, b)| (*id, [*b; 32]))).expect("valid test keys")
}

fn k1() -> Keys {
    keys(&[("k1", 1)])
}

/// Replace field `i` (0-based, split on '.') of a token.
fn with_field(token: &str, i: usize, value: &str) -> String {
    let mut parts: Vec<&str> = token.split('.').collect();
    parts[i] = value;
    parts.join(".")
}

#[test]
fn round_trip() {
    let keys = k1();
    let t = keys.sign("app", "backend-1_a", LATER);
    assert!(t.starts_with("v1.k1.backend-1_a.1700003600."), "{t}");
    assert_eq!(t.rsplit('.').next().map(str::len), Some(43));
    let v = keys.verify(t.as_bytes(), "app", NOW).expect("verifies");
    assert_eq!(v.backend, "backend-1_a");
    assert_eq!(v.expiry, LATER);
    assert_eq!(v.key_id, "k1");
    let mac = URL_SAFE_NO_PAD
        .decode(t.rsplit('.').next().unwrap())
        .unwrap();
    assert_eq!(v.mac_bytes.as_slice(), mac.as_slice());
}

#[test]
fn expiry_is_inclusive_and_checked() {
    let keys = k1();
    let t = keys.sign("app", "b1", NOW);
    assert!(keys.verify(t.as_bytes(), "app", NOW).is_ok());
    assert_eq!(
        keys.verify(t.as_bytes(), "app", NOW + 1),
        Err(Invalid::Expired)
    );
}

#[test]
fn malformed() {
    let keys = k1();
    let good = keys.sign("app", "b1", LATER);
    let huge = "v1.k1.b1.1.".to_string() + &"A".repeat(600);
    let cases: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"garbage".to_vec(),
        b".....".to_vec(),
        b"v1".to_vec(),
        b"v1.k1.b1.123".to_vec(),                           // too few dots
        format!("{good}.extra").into_bytes(),               // too many dots
        with_field(&good, 0, "v2").into_bytes(),            // wrong version
        with_field(&good, 1, "").into_bytes(),              // empty key id
        with_field(&good, 1, "k 1").into_bytes(),           // bad charset
        with_field(&good, 2, &"b".repeat(65)).into_bytes(), // backend id too long
        with_field(&good, 3, "").into_bytes(),              // empty expiry
        with_field(&good, 3, "-5").into_bytes(),
        with_field(&good, 3, "+5").into_bytes(),
        with_field(&good, 3, "99999999999999999999").into_bytes(), // u64 overflow
        with_field(&good, 3, "12a").into_bytes(),
        with_field(&good, 4, "").into_bytes(), // no mac
        with_field(&good, 4, &"A".repeat(42)).into_bytes(), // short mac
        with_field(&good, 4, &"A".repeat(44)).into_bytes(), // long mac
        with_field(&good, 4, &format!("{}=", &"A".repeat(42))).into_bytes(), // padding
        with_field(&good, 4, &format!("{}+", &"A".repeat(42))).into_bytes(), // std alphabet
        huge.into_bytes(),
        {
            let mut t = good.clone().into_bytes();
            t[7] = 0xff; // non-UTF-8 inside the backend id
            t
        },
        vec![0xc3, 0x28, b'.', 0xff, 0xfe],
    ];
    for c in cases {
        assert_eq!(
            keys.verify(&c, "app", NOW),
            Err(Invalid::Malformed),
            "{:?}",
            String::from_utf8_lossy(&c)
        );
    }
}

#[test]
fn length_limit() {
    let keys = k1();
    let long_id = "b".repeat(64);
    let t = keys.sign("app", &long_id, u64::MAX);
    assert!(t.len() <= MAX_TOKEN_LEN);
    assert!(keys.verify(t.as_bytes(), "app", NOW).is_ok());
    let mut padded = t.into_bytes();
    padded.resize(MAX_TOKEN_LEN + 1, b'A');
    assert_eq!(keys.verify(&padded, "app", NOW), Err(Invalid::Malformed));
}

#[test]
fn forged() {
    let keys = k1();
    let good = keys.sign_session("app", "b1", LATER, 7);
    let mac = good.rsplit('.').next().unwrap().to_string();
    let mut flipped = mac.clone().into_bytes();
    flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let other_key = keys_sig(&keys_other(), "app", "b1", LATER, 7);
    let other_sid = keys.sign_session("app", "b1", LATER, 8);
    let other_sid = other_sid.split('.').nth(4).unwrap();
    let cases = [
        with_field(&good, 2, "b2"),                     // edited backend id
        with_field(&good, 3, &(LATER + 1).to_string()), // edited expiry
        with_field(&good, 3, &format!("0{LATER}")),     // same number, other text
        with_field(&good, 4, other_sid),                // another session's id
        with_field(&good, 5, &flipped),                 // edited mac
        with_field(&good, 5, &other_key),               // mac from another key, same id
    ];
    for t in cases {
        assert_eq!(
            keys.verify(t.as_bytes(), "app", NOW),
            Err(Invalid::BadSignature),
            "{t}"
        );
    }
}

/// A key set whose key is also called `k1` but has another secret.
fn keys_other() -> Keys {
    keys(&[("k1", 2)])
}

fn keys_sig(keys: &Keys, up: &str, backend: &str, expiry: u64, sid: u128) -> String {
    let t = keys.sign_session(up, backend, expiry, sid);
    t.rsplit('.').next().unwrap().to_string()
}

#[test]
fn signature_checked_before_expiry() {
    let keys = k1();
    let past = keys.sign("app", "b1", NOW - 10);
    let forged = with_field(&past, 2, "b2");
    assert_eq!(
        keys.verify(forged.as_bytes(), "app", NOW),
        Err(Invalid::BadSignature)
    );
    assert_eq!(
        keys.verify(past.as_bytes(), "app", NOW),
        Err(Invalid::Expired)
    );
}

#[test]
fn wrong_upstream_is_a_bad_signature() {
    let keys = k1();
    let t = keys.sign("app", "b1", LATER);
    assert_eq!(
        keys.verify(t.as_bytes(), "app2", NOW),
        Err(Invalid::BadSignature)
    );
    // The upstream is separated from the signed text: no ambiguity at the boundary.
    assert_eq!(
        keys.verify(t.as_bytes(), "", NOW),
        Err(Invalid::BadSignature)
    );
}

#[test]
fn rotation() {
    let old = keys(&[("old", 1)]);
    let rotated = keys(&[("new", 2), ("old", 1)]);
    let retired = keys(&[("new", 2)]);
    let t_old = old.sign("app", "b1", LATER);
    // Old tokens still verify while the old key is listed.
    assert_eq!(
        rotated
            .verify(t_old.as_bytes(), "app", NOW)
            .map(|v| v.key_id),
        Ok("old")
    );
    // The new key signs.
    let t_new = rotated.sign("app", "b1", LATER);
    assert!(t_new.starts_with("v1.new."));
    assert!(retired.verify(t_new.as_bytes(), "app", NOW).is_ok());
    // Once removed, the old key is unknown.
    assert_eq!(
        retired.verify(t_old.as_bytes(), "app", NOW),
        Err(Invalid::UnknownKey)
    );
    assert_eq!(rotated.ids().collect::<Vec<_>>(), ["new", "old"]);
}

#[test]
fn key_set_errors() {
    let none: [(&str, [u8; 32]); 0] = [];
    assert_eq!(Keys::new(none).err(), Some(KeyError::NoKeys));
    assert_eq!(
        Keys::new([("k 1", [0u8; 32])]).err(),
        Some(KeyError::BadId("k 1".into()))
    );
    assert_eq!(
        Keys::new([("k", [0u8; 32]), ("k", [1u8; 32])]).err(),
        Some(KeyError::DuplicateId("k".into()))
    );
    assert_eq!(
        Keys::new([("k", [0u8; 31])]).err(),
        Some(KeyError::ShortSecret {
            id: "k".into(),
            len: 31
        })
    );
}

#[test]
fn debug_hides_secrets() {
    let shown = format!("{:?}", keys(&[("k1", b'S')]));
    assert_eq!(shown, r#"Keys { ids: ["k1"] }"#);
}

#[test]
fn ids() {
    assert!(valid_id(b"a"));
    assert!(valid_id(b"A-z_0-9"));
    assert!(valid_id("x".repeat(64).as_bytes()));
    assert!(!valid_id(b""));
    assert!(!valid_id("x".repeat(65).as_bytes()));
    assert!(!valid_id(b"a.b"));
    assert!(!valid_id("é".as_bytes()));
}

proptest! {
    #[test]
    fn verify_never_panics_on_strings(s in ".{0,600}") {
        let _ = k1().verify(s.as_bytes(), "app", NOW);
    }

    #[test]
    fn verify_never_panics_on_bytes(b in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = k1().verify(&b, "app", NOW);
    }

    #[test]
    fn verify_never_panics_on_near_tokens(
        kid in "[A-Za-z0-9_.-]{0,70}",
        backend in "[A-Za-z0-9_.=+/-]{0,70}",
        expiry in "[0-9+-]{0,25}",
        mac in "[A-Za-z0-9_=+/-]{0,50}",
    ) {
        let t = format!("v1.{kid}.{backend}.{expiry}.{mac}");
        let _ = k1().verify(t.as_bytes(), "app", NOW);
    }

    #[test]
    fn sign_verify_round_trip(
        kid in "[A-Za-z0-9_-]{1,64}",
        backend in "[A-Za-z0-9_-]{1,64}",
        upstream in ".{0,40}",
        expiry in any::<u64>(),
        now in any::<u64>(),
    ) {
        let keys = Keys::new([(kid.clone(), [9u8; 40])]).unwrap();
        let t = keys.sign(&upstream, &backend, expiry);
        prop_assert!(t.len() <= MAX_TOKEN_LEN);
        match keys.verify(t.as_bytes(), &upstream, now) {
            Ok(v) => {
                prop_assert!(expiry >= now);
                prop_assert_eq!(v.backend, backend.as_str());
                prop_assert_eq!(v.key_id, kid.as_str());
                prop_assert_eq!(v.expiry, expiry);
            }
            Err(e) => {
                prop_assert!(expiry < now);
                prop_assert_eq!(e, Invalid::Expired);
            }
        }
    }
}
