use super::*;
use crate::testing::{outcome, FakeRequest, FakeResponse, Outcome};
use crate::{Invalid, Registry};

const NOW: u64 = 1_700_000_000;
const DAY: u64 = 86_400;
const SECRET: &str = "0123456789abcdef0123456789abcdef";
const INSERT: &str = "type: cookie\nkeys: [{id: k1, secret: 0123456789abcdef0123456789abcdef}]";

fn build_for(yaml: &str, upstream: &str) -> Result<Box<dyn AffinityPlugin>, Vec<String>> {
    let v: serde_yaml::Value = serde_yaml::from_str(yaml).expect("test yaml");
    Registry::builtin()
        .build_one(&v, "p", upstream)
        .map_err(|es| es.iter().map(ToString::to_string).collect())
}

fn build(yaml: &str) -> Result<Box<dyn AffinityPlugin>, Vec<String>> {
    build_for(yaml, "app")
}

fn plugin(yaml: &str) -> Box<dyn AffinityPlugin> {
    build(yaml).expect("valid settings")
}

fn errors(yaml: &str) -> Vec<String> {
    build(yaml).expect_err("invalid settings")
}

fn decision(reason: Reason, mine: bool, key_expires: Option<u64>) -> DecisionView<'static> {
    DecisionView {
        upstream: "app",
        backend: "b1",
        reason,
        decided_by_me: mine,
        now_unix: NOW,
        key_expires,
        session: None,
        tls: false,
        connection: None,
    }
}

/// The Set-Cookie values a plugin adds for `d`.
fn set_cookies(p: &dyn AffinityPlugin, d: &DecisionView<'_>) -> Vec<String> {
    let mut resp = FakeResponse::new();
    let key = p.on_response(d, &mut resp);
    let added: Vec<String> = resp
        .added("set-cookie")
        .into_iter()
        .map(String::from)
        .collect();
    // Insert mode returns the token's session key exactly when it issues a cookie for a
    // request that already had a session; a brand-new session is not pinned until its token
    // comes back.
    assert_eq!(
        key.is_some(),
        !added.is_empty() && d.session.is_some(),
        "key {key:?} for {added:?}"
    );
    if let Some(cookie) = added.first() {
        let pair = cookie.split(';').next().unwrap_or("");
        let req = FakeRequest::new().at(NOW).header("cookie", pair);
        match p.key(&req) {
            KeyOutcome::Key(Affinity::Backend { key: read, .. }) => {
                let want = key.or(d.session);
                assert!(want.is_none_or(|k| k == read), "{read:?} vs {want:?}");
            }
            other => panic!("issued token does not read back: {other:?}"),
        }
    }
    added
}

/// A fresh token for b1, as the plugin issues it.
fn issued(p: &dyn AffinityPlugin) -> String {
    let set = set_cookies(p, &decision(Reason::New, false, None));
    assert_eq!(set.len(), 1);
    let value = set[0].split(';').next().unwrap();
    value
        .strip_prefix("berth=")
        .expect("named berth")
        .to_string()
}

fn with_cookie(v: &str) -> FakeRequest {
    FakeRequest::new().at(NOW).header("cookie", v)
}

#[test]
fn insert_issues_and_reads_back() {
    let p = plugin(INSERT);
    assert_eq!(p.name(), "cookie");
    assert!(p.issues_sessions());
    let set = set_cookies(&*p, &decision(Reason::New, false, None));
    let tok = issued(&*p);
    assert!(
        tok.starts_with(&format!("v1.k1.b1.{}.", NOW + DAY)),
        "{tok}"
    );
    assert_eq!(set.len(), 1);
    assert!(
        set[0].starts_with(&format!("berth=v1.k1.b1.{}.", NOW + DAY)),
        "{}",
        set[0]
    );
    assert!(
        set[0].ends_with("; Max-Age=86400; Path=/; HttpOnly; SameSite=Lax"),
        "{}",
        set[0]
    );
    assert_ne!(
        set[0],
        format!("berth={tok}; Max-Age=86400; Path=/; HttpOnly; SameSite=Lax"),
        "two new sessions get two session ids"
    );
    // Re-issuing for a known session keeps its id (and so its session key).
    let mut again = decision(Reason::Failover, true, None);
    again.session = Some(SessionKey(42));
    let mut resp = FakeResponse::new();
    assert_eq!(p.on_response(&again, &mut resp), Some(SessionKey(42)));
    let reissued = resp.added("set-cookie")[0]
        .split(';')
        .next()
        .unwrap()
        .to_string();
    match p.key(&FakeRequest::new().at(NOW).header("cookie", &reissued)) {
        KeyOutcome::Key(Affinity::Backend { key, .. }) => assert_eq!(key, SessionKey(42)),
        other => panic!("re-issued token does not read back: {other:?}"),
    }
    let req = with_cookie(&format!("other=1; berth={tok}"));
    let KeyOutcome::Key(Affinity::Backend { name, key, expires }) = p.key(&req) else {
        panic!("expected a backend, got {:?}", p.key(&req));
    };
    assert_eq!((name, expires), ("b1", NOW + DAY));
    let verified = Keys::new([("k1", SECRET)]).unwrap();
    let v = verified.verify(tok.as_bytes(), "app", NOW).unwrap();
    assert_eq!(
        key,
        SessionKey(v.sid),
        "the token's session id is the session key"
    );
    // The same token is the same session; another token another session.
    assert_eq!(
        outcome(&*p, &req),
        outcome(&*p, &with_cookie(&format!("berth={tok}")))
    );
}

#[test]
fn insert_rejects_bad_tokens() {
    let p = plugin(INSERT);
    let tok = issued(&*p);
    assert_eq!(outcome(&*p, &FakeRequest::new()), Outcome::Skip);
    assert_eq!(outcome(&*p, &with_cookie("other=x")), Outcome::Skip);
    assert_eq!(outcome(&*p, &with_cookie("berth=")), Outcome::Skip);
    let bad = |v: &str| outcome(&*p, &with_cookie(&format!("berth={v}")));
    assert_eq!(bad("garbage"), Outcome::Invalid(Invalid::Malformed));
    assert_eq!(bad(&"x".repeat(4096)), Outcome::Invalid(Invalid::Malformed));
    let forged = tok.replacen(".b1.", ".b2.", 1);
    assert_eq!(bad(&forged), Outcome::Invalid(Invalid::BadSignature));
    let unknown = tok.replacen("v1.k1.", "v1.k9.", 1);
    assert_eq!(bad(&unknown), Outcome::Invalid(Invalid::UnknownKey));
    let late = FakeRequest::new()
        .at(NOW + DAY + 1)
        .header("cookie", format!("berth={tok}"));
    assert_eq!(outcome(&*p, &late), Outcome::Invalid(Invalid::Expired));
    let non_utf8 = FakeRequest::new()
        .at(NOW)
        .header("cookie", b"berth=\xff\xfe");
    assert_eq!(
        outcome(&*p, &non_utf8),
        Outcome::Invalid(Invalid::Malformed)
    );
    // A token of another upstream does not verify here.
    let other = build_for(INSERT, "other-app").unwrap();
    assert_eq!(
        outcome(&*other, &with_cookie(&format!("berth={tok}"))),
        Outcome::Invalid(Invalid::BadSignature)
    );
}

#[test]
fn quoted_values_and_several_cookie_fields() {
    let p = plugin(INSERT);
    let tok = issued(&*p);
    let good = outcome(&*p, &with_cookie(&format!("berth={tok}")));
    assert!(good.is_key());
    assert_eq!(
        outcome(&*p, &with_cookie(&format!("berth=\"{tok}\""))),
        good
    );
    let split = FakeRequest::new()
        .at(NOW)
        .header("cookie", "a=1; b=2")
        .header("cookie", format!("c=3;berth={tok}"));
    assert_eq!(outcome(&*p, &split), good);
    // The first cookie with the name wins, across fields too.
    let first_bad = FakeRequest::new()
        .at(NOW)
        .header("cookie", "berth=junk")
        .header("cookie", format!("berth={tok}"));
    assert_eq!(
        outcome(&*p, &first_bad),
        Outcome::Invalid(Invalid::Malformed)
    );
    let first_good = with_cookie(&format!("berth={tok}; berth=junk"));
    assert_eq!(outcome(&*p, &first_good), good);
}

#[test]
fn reissue_rules() {
    let p = plugin(INSERT);
    let fresh = Some(NOW + DAY);
    let half = Some(NOW + DAY / 2);
    let stale = Some(NOW + DAY / 2 - 1);
    // Routed sticky by its own token with at least half its life left: nothing to do.
    assert!(set_cookies(&*p, &decision(Reason::Sticky, true, fresh)).is_empty());
    assert!(set_cookies(&*p, &decision(Reason::Sticky, true, half)).is_empty());
    // Less than half left, or unknown: refreshed.
    assert_eq!(
        set_cookies(&*p, &decision(Reason::Sticky, true, stale)).len(),
        1
    );
    assert_eq!(
        set_cookies(&*p, &decision(Reason::Sticky, true, None)).len(),
        1
    );
    // Any other decision gets a cookie for the backend that served.
    for reason in [Reason::New, Reason::Ring, Reason::Failover, Reason::Spill] {
        assert_eq!(
            set_cookies(&*p, &decision(reason, true, fresh)).len(),
            1,
            "{reason:?}"
        );
    }
    assert_eq!(
        set_cookies(&*p, &decision(Reason::Sticky, false, None)).len(),
        1
    );
    // The re-issued token names the new backend.
    let moved = DecisionView {
        backend: "b2",
        ..decision(Reason::Failover, true, fresh)
    };
    assert!(set_cookies(&*p, &moved)[0].starts_with("berth=v1.k1.b2."));
    // A backend id that could not verify gets no cookie.
    let odd = DecisionView {
        backend: "b 2",
        ..decision(Reason::New, false, None)
    };
    assert!(set_cookies(&*p, &odd).is_empty());
}

/// A brand-new session's token is issued but not handed back to be pinned: the session exists
/// once the client returns the token. A request that already had a session (a header key, a
/// re-issued token) keeps being tracked under its key.
#[test]
fn a_new_session_is_pinned_only_when_its_token_comes_back() {
    let p = plugin(INSERT);
    let mut resp = FakeResponse::new();
    assert_eq!(
        p.on_response(&decision(Reason::New, false, None), &mut resp),
        None
    );
    let cookie = resp.added("set-cookie")[0]
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let back = with_cookie(&cookie);
    let KeyOutcome::Key(Affinity::Backend { name, key, .. }) = p.key(&back) else {
        panic!("the issued token reads back");
    };
    assert_eq!(
        name, "b1",
        "the token names the backend the gateway pins on first sight"
    );
    let header = SessionKey(7);
    let found_by_header = DecisionView {
        session: Some(header),
        ..decision(Reason::New, false, None)
    };
    let mut resp = FakeResponse::new();
    assert_eq!(p.on_response(&found_by_header, &mut resp), Some(header));
    let refreshed = DecisionView {
        session: Some(key),
        ..decision(Reason::Sticky, true, Some(NOW + 1))
    };
    let mut resp = FakeResponse::new();
    assert_eq!(p.on_response(&refreshed, &mut resp), Some(key));
    assert_eq!(resp.added("set-cookie").len(), 1);

    // Through a chain (cookie insert, then a header): a request with neither pins nothing.
    let header_plugin = plugin("type: header\nname: X-Session-Id");
    let chain = crate::Chain::new(vec![plugin(INSERT), header_plugin]);
    let bare = FakeRequest::new().at(NOW);
    let none = chain.key(&bare);
    assert_eq!((none.affinity, none.decided_by), (None, None));
    let mut pinned = Vec::new();
    let mut resp = FakeResponse::new();
    chain.on_response(
        &decision(Reason::New, false, None),
        None,
        &mut resp,
        |k, _| pinned.push(k),
        |i| panic!("plugin {i} panicked"),
    );
    assert!(pinned.is_empty(), "{pinned:?}");
    assert_eq!(
        resp.added("set-cookie").len(),
        1,
        "a cookie is still issued"
    );
}

#[test]
fn attribute_rendering() {
    let p = plugin(&format!(
        "{INSERT}\nname: SRV\nttl: 1h\nhttp_only: false\nsecure: true\nsame_site: none\n\
         path: /app\ndomain: example.com"
    ));
    let set = set_cookies(&*p, &decision(Reason::New, false, None));
    let tok = set[0]
        .split(';')
        .next()
        .unwrap()
        .strip_prefix("SRV=")
        .unwrap();
    assert!(tok.starts_with(&format!("v1.k1.b1.{}.", NOW + 3600)));
    assert_eq!(
        set[0],
        format!("SRV={tok}; Max-Age=3600; Path=/app; Domain=example.com; Secure; SameSite=None")
    );
    let strict = plugin(&format!("{INSERT}\nsame_site: strict\nhttp_only: true"));
    let set = set_cookies(&*strict, &decision(Reason::New, false, None));
    assert!(set[0].ends_with("; Max-Age=86400; Path=/; HttpOnly; SameSite=Strict"));
    // Over TLS, Secure whatever `secure` says; a Secure cookie stays Secure once.
    let over_tls = DecisionView {
        tls: true,
        ..decision(Reason::New, false, None)
    };
    let set = set_cookies(&*strict, &over_tls);
    assert!(set[0].ends_with("; Max-Age=86400; Path=/; Secure; HttpOnly; SameSite=Strict"));
    let set = set_cookies(&*p, &over_tls);
    assert_eq!(set[0].matches("Secure").count(), 1, "{}", set[0]);
    // Half-life follows the configured ttl.
    assert!(set_cookies(&*p, &decision(Reason::Sticky, true, Some(NOW + 1800))).is_empty());
    assert_eq!(
        set_cookies(&*p, &decision(Reason::Sticky, true, Some(NOW + 1799))).len(),
        1
    );
}

#[test]
fn keys_from_env_and_rotation() {
    std::env::set_var(
        "BERTH_TEST_COOKIE_K2",
        "k2-secret-k2-secret-k2-secret-k2-secret",
    );
    let old = plugin(INSERT);
    let old_tok = issued(&*old);
    let rotated = plugin(&format!(
        "type: cookie\nkeys:\n  - {{id: k2, secret_env: BERTH_TEST_COOKIE_K2}}\n  \
         - {{id: k1, secret: {SECRET}}}"
    ));
    let new_tok = issued(&*rotated);
    assert!(new_tok.starts_with("v1.k2.b1."), "{new_tok}");
    let key = |p: &dyn AffinityPlugin, t: &str| outcome(p, &with_cookie(&format!("berth={t}")));
    assert!(key(&*rotated, &old_tok).is_key());
    assert!(key(&*rotated, &new_tok).is_key());
    assert_eq!(key(&*old, &new_tok), Outcome::Invalid(Invalid::UnknownKey));
    let retired = plugin("type: cookie\nkeys: [{id: k2, secret_env: BERTH_TEST_COOKIE_K2}]");
    assert!(key(&*retired, &new_tok).is_key());
    assert_eq!(
        key(&*retired, &old_tok),
        Outcome::Invalid(Invalid::UnknownKey)
    );
}

const LEARN: &str = "type: cookie\nmode: learn\nname: JSESSIONID";

#[test]
fn learn_keys_by_the_app_cookie() {
    let p = plugin(LEARN);
    assert!(!p.issues_sessions());
    let want = SessionKey::new(b"cookie:JSESSIONID", b"abc");
    let k = |v: &str| outcome(&*p, &with_cookie(v));
    assert_eq!(k("JSESSIONID=abc"), Outcome::Session(want));
    assert_eq!(k("x=1; JSESSIONID=\"abc\""), Outcome::Session(want));
    assert_eq!(k("JSESSIONID=abc; JSESSIONID=zzz"), k("JSESSIONID=abc"));
    assert_eq!(k("jsessionid=abc"), Outcome::Skip);
    assert_eq!(k("JSESSIONID="), Outcome::Skip);
    assert_eq!(k("berth=abc"), Outcome::Skip);
    let split = FakeRequest::new()
        .header("cookie", "a=1")
        .header("cookie", "JSESSIONID=abc");
    assert_eq!(outcome(&*p, &split), Outcome::Session(want));
    // The namespace includes the cookie name.
    let other = plugin("type: cookie\nmode: learn\nname: PHPSESSID");
    let theirs = outcome(&*other, &with_cookie("PHPSESSID=abc"));
    assert_ne!(theirs, Outcome::Session(want));
}

#[test]
fn learn_pins_what_the_app_sets() {
    let p = plugin(LEARN);
    let d = decision(Reason::Ring, false, None);
    let learn = |fields: &[&str]| {
        let mut resp = fields
            .iter()
            .fold(FakeResponse::new(), |r, f| r.header("set-cookie", f));
        let got = p.on_response(&d, &mut resp);
        assert!(resp.added.is_empty(), "learn mode never sets cookies");
        got
    };
    let key = |v: &[u8]| Some(SessionKey::new(b"cookie:JSESSIONID", v));
    assert_eq!(learn(&[]), None);
    assert_eq!(learn(&["JSESSIONID=abc; Path=/; HttpOnly"]), key(b"abc"));
    assert_eq!(learn(&["JSESSIONID=\"abc\"; Max-Age=60"]), key(b"abc"));
    assert_eq!(learn(&["other=1", "JSESSIONID=new"]), key(b"new"));
    assert_eq!(learn(&["JSESSIONID=a", "JSESSIONID=b"]), key(b"b"));
    assert_eq!(learn(&["other=abc"]), None);
    assert_eq!(learn(&["JSESSIONID="]), None);
    assert_eq!(learn(&["JSESSIONID=abc; Max-Age=0"]), None);
    assert_eq!(
        learn(&["JSESSIONID=deleted; Expires=Thu, 01 Jan 1970 00:00:00 GMT"]),
        None
    );
    assert_eq!(learn(&["JSESSIONID=a", "JSESSIONID=; Max-Age=0"]), None);
    assert_eq!(
        learn(&["JSESSIONID=abc; Expires=Wed, 21 Oct 2037 07:28:00 GMT"]),
        key(b"abc")
    );
    assert_eq!(learn(&["\u{ff}garbage;;;", "=;"]), None);
}

#[test]
fn insert_config_errors() {
    let short = "type: cookie\nkeys: [{id: k1, secret: tooshort}]";
    assert_eq!(
        errors(short),
        ["p.keys[0].secret: the secret is 8 bytes; at least 32 are required (e.g. `openssl rand -base64 48`)"]
    );
    let cases: &[(&str, &str)] = &[
        ("type: cookie", "p.keys: is required in insert mode"),
        (
            "type: cookie\nkeys: []",
            "p.keys: at least one key is required",
        ),
        ("type: cookie\nkeys: k1", "p.keys: expected a list"),
        (
            &format!("type: cookie\nkeys: [{{secret: {SECRET}}}]"),
            "p.keys[0].id: is required",
        ),
        (
            &format!("type: cookie\nkeys: [{{id: 'k.1', secret: {SECRET}}}]"),
            "p.keys[0].id: \"k.1\" must be",
        ),
        (
            &format!(
                "type: cookie\nkeys: [{{id: k, secret: {SECRET}}}, {{id: k, secret: {SECRET}}}]"
            ),
            "p.keys[1].id: \"k\" is used by another key",
        ),
        ("type: cookie\nkeys: [{id: k}]", "p.keys[0]: set secret_env"),
        (
            &format!("type: cookie\nkeys: [{{id: k, secret: {SECRET}, secret_env: X}}]"),
            "p.keys[0].secret: set either secret_env or secret, not both",
        ),
        (
            "type: cookie\nkeys: [{id: k, secret_env: BERTH_TEST_COOKIE_UNSET}]",
            "p.keys[0].secret_env: environment variable BERTH_TEST_COOKIE_UNSET is not set",
        ),
        (
            "type: cookie\nkeys: [{id: k, secret_env: 'A=B'}]",
            "p.keys[0].secret_env: \"A=B\" is not a valid",
        ),
        (
            &format!("type: cookie\nkeys: [{{id: k, secret: {SECRET}, extra: 1}}]"),
            "p.keys[0].extra: unknown key",
        ),
        (
            &format!("{INSERT}\nmode: sticky"),
            "p.mode: expected insert or learn, found \"sticky\"",
        ),
        (
            &format!("{INSERT}\nname: 'my cookie'"),
            "p.name: \"my cookie\" is not a valid cookie name",
        ),
        (
            &format!("{INSERT}\nname: 'a;b'"),
            "p.name: \"a;b\" is not a valid cookie name",
        ),
        (&format!("{INSERT}\nttl: 0s"), "p.ttl: must be at least 1s"),
        (
            &format!("{INSERT}\nttl: forever"),
            "p.ttl: \"forever\" is not a duration",
        ),
        (&format!("{INSERT}\nsecure: maybe"), "p.secure: "),
        (
            &format!("{INSERT}\nsame_site: none"),
            "p.same_site: none requires secure: true",
        ),
        (
            &format!("{INSERT}\nsame_site: loose"),
            "p.same_site: expected lax, strict or none, found \"loose\"",
        ),
        (
            &format!("{INSERT}\npath: app"),
            "p.path: \"app\" must start with '/'",
        ),
        (
            &format!("{INSERT}\npath: '/a;b'"),
            "p.path: \"/a;b\" must start with '/'",
        ),
        (
            &format!("{INSERT}\ndomain: 'ex ample.com'"),
            "p.domain: \"ex ample.com\" is not a domain name",
        ),
        (&format!("{INSERT}\ncolour: blue"), "p.colour: unknown key"),
    ];
    for (yaml, want) in cases {
        let e = errors(yaml);
        assert_eq!(e.len(), 1, "{yaml}: {e:?}");
        assert!(
            e[0].starts_with(want),
            "{yaml}:\n  got  {}\n  want {want}",
            e[0]
        );
    }
}

#[test]
fn env_secret_errors() {
    std::env::set_var("BERTH_TEST_COOKIE_EMPTY", "");
    std::env::set_var("BERTH_TEST_COOKIE_SHORT", "short");
    let e = errors("type: cookie\nkeys: [{id: k, secret_env: BERTH_TEST_COOKIE_EMPTY}]");
    assert_eq!(
        e,
        ["p.keys[0].secret_env: environment variable BERTH_TEST_COOKIE_EMPTY is empty"]
    );
    let e = errors("type: cookie\nkeys: [{id: k, secret_env: BERTH_TEST_COOKIE_SHORT}]");
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with(
            "p.keys[0].secret_env: the secret (environment variable BERTH_TEST_COOKIE_SHORT) \
             holds 5 bytes; at least 32 are required"
        ),
        "{e:?}"
    );
    assert!(!e[0].contains("short bytes"), "the secret is never shown");
}

#[test]
fn learn_config_errors() {
    assert_eq!(
        errors("type: cookie\nmode: learn"),
        ["p.name: is required in learn mode: the name of the application's session cookie (e.g. JSESSIONID)"]
    );
    let e = errors(&format!(
        "{LEARN}\nkeys: [{{id: k1, secret: {SECRET}}}]\nttl: 1h\nsecure: true"
    ));
    assert_eq!(
        e,
        [
            "p.keys: only valid in insert mode (this cookie plugin is in learn mode)",
            "p.ttl: only valid in insert mode (this cookie plugin is in learn mode)",
            "p.secure: only valid in insert mode (this cookie plugin is in learn mode)",
        ]
    );
    let e = errors("type: cookie\nmode: learn\nname: 'JSESSION ID'");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("p.name: \"JSESSION ID\" is not a valid cookie name"));
    // A wrong mode reports the mode only, not its settings as unknown.
    let e = errors(&format!("{INSERT}\nmode: 3\nttl: 1h"));
    assert_eq!(e, ["p.mode: expected insert or learn, found 3"]);
}
