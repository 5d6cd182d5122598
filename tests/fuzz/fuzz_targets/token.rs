//! The cookie token verifier and the cookie parsers, on hostile bytes.
//!
//! Properties checked besides "never panics":
//! * a token that verifies is exactly the token Berth would sign for its fields (no second
//!   spelling of a valid token exists: no leading zeros, padding or trailing-bit variants);
//! * any single-byte edit of a token Berth signed fails to verify, and a token never verifies
//!   for another upstream (an attacker cannot re-point a token at a backend of their choice);
//! * the insert-mode cookie plugin only ever names a backend through a verified token.
#![no_main]
use arbitrary::Arbitrary;
use berth_plugins::testing::{FakeRequest, FakeResponse};
use berth_plugins::token::{valid_id, Keys};
use berth_plugins::{Affinity, AffinityPlugin, DecisionView, KeyOutcome};
use berth_routing::{Reason, SessionKey};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const UPSTREAM: &str = "app";
const SECRET: &str = "fuzz-secret-0123456789abcdef0123456789";

#[derive(Arbitrary, Debug)]
enum Input<'a> {
    /// Raw bytes presented as a token.
    Verify { token: &'a [u8], now: u64 },
    /// A token Berth signed, then one byte of it changed.
    Edit {
        backend: &'a str,
        expiry: u64,
        sid: u128,
        at: u16,
        byte: u8,
    },
    /// `Cookie` fields for the insert- and learn-mode plugins.
    Cookies { fields: Vec<&'a [u8]>, now: u64 },
    /// `Set-Cookie` fields from a backend, for learn mode (cookie dates included).
    SetCookies { fields: Vec<&'a [u8]>, now: u64 },
}

fn keys() -> &'static Keys {
    static K: OnceLock<Keys> = OnceLock::new();
    K.get_or_init(|| {
        Keys::new([("k2", [2u8; 32]), ("k1", [1u8; 32])]).expect("two valid keys")
    })
}

fn plugins() -> &'static (Box<dyn AffinityPlugin>, Box<dyn AffinityPlugin>) {
    static P: OnceLock<(Box<dyn AffinityPlugin>, Box<dyn AffinityPlugin>)> = OnceLock::new();
    P.get_or_init(|| {
        let registry = berth_plugins::Registry::builtin();
        let build = |yaml: &str| {
            let v: serde_yaml::Value = serde_yaml::from_str(yaml).expect("plugin yaml");
            registry.build_one(&v, "fuzz", UPSTREAM).expect("valid plugin")
        };
        let insert = build(&format!(
            "type: cookie\nkeys: [{{id: k1, secret: \"{SECRET}\"}}]"
        ));
        let learn = build("type: cookie\nmode: learn\nname: JSESSIONID");
        (insert, learn)
    })
}

fuzz_target!(|input: Input<'_>| match input {
    Input::Verify { token, now } => {
        if let Ok(v) = keys().verify(token, UPSTREAM, now) {
            // Only the signing key can have produced it; re-signing gives the same bytes.
            let again = keys().sign_session(UPSTREAM, v.backend, v.expiry, v.sid);
            assert_eq!(again.as_bytes(), token, "a second spelling of a valid token");
        }
    }
    Input::Edit {
        backend,
        expiry,
        sid,
        at,
        byte,
    } => {
        let token = keys().sign_session(UPSTREAM, backend, expiry, sid);
        let ok = keys().verify(token.as_bytes(), UPSTREAM, 0);
        assert_eq!(ok.is_ok(), valid_id(backend.as_bytes()), "{token}");
        assert!(keys().verify(token.as_bytes(), "other", 0).is_err());
        let mut edited = token.into_bytes();
        let i = usize::from(at) % edited.len();
        if edited[i] != byte {
            edited[i] = byte;
            let r = keys().verify(&edited, UPSTREAM, 0);
            assert!(r.is_err(), "edited token verified: {:?}", String::from_utf8_lossy(&edited));
        }
    }
    Input::Cookies { fields, now } => {
        let mut req = FakeRequest::new().at(now);
        for f in &fields {
            req = req.header("cookie", f);
        }
        let (insert, learn) = plugins();
        match insert.key(&req) {
            KeyOutcome::Key(Affinity::Backend { name, .. }) => {
                assert!(valid_id(name.as_bytes()));
            }
            KeyOutcome::Key(Affinity::Session(_)) => panic!("insert mode yields backends"),
            _ => {}
        }
        let _ = learn.key(&req);
    }
    Input::SetCookies { fields, now } => {
        let mut resp = FakeResponse::new();
        for f in &fields {
            resp = resp.header("set-cookie", f);
        }
        let d = DecisionView {
            upstream: UPSTREAM,
            backend: "b1",
            reason: Reason::New,
            decided_by_me: true,
            now_unix: now,
            key_expires: None,
            session: Some(SessionKey(7)),
            tls: now % 2 == 0,
            connection: None,
        };
        let (insert, learn) = plugins();
        let _ = learn.on_response(&d, &mut resp);
        let _ = insert.on_response(&d, &mut resp);
    }
});
