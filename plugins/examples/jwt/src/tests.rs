//! The plugin against tokens made here with jsonwebtoken, and keys made with `openssl`.
use super::*;
use berth_plugins::testing::{outcome, FakeRequest, Outcome};
use berth_plugins::Registry;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;
use std::path::Path;
use std::process::Command;

const NOW: u64 = 1_700_000_000;
const SECRET: &str = "jwt-unit-test-secret-0123456789abcdefghij";
const SECRET_ENV: &str = "BERTH_JWT_UNIT_TEST_SECRET";

fn registry(cache: &Arc<FileCache>) -> Registry {
    static ENV: std::sync::Once = std::sync::Once::new();
    // One variable, set once, never changed: no test sees it half-written.
    ENV.call_once(|| std::env::set_var(SECRET_ENV, SECRET));
    let mut r = Registry::empty();
    r.register("jwt", factory(cache.clone()));
    r
}

fn plugin(yaml: &str) -> Box<dyn AffinityPlugin> {
    let cache = Arc::new(FileCache::default());
    registry(&cache)
        .build_str(yaml, "app")
        .unwrap_or_else(|e| panic!("{yaml}: {e:?}"))
}

fn hs256() -> Box<dyn AffinityPlugin> {
    plugin(&format!(
        "type: jwt\nclaim: sub\nsecret_env: {SECRET_ENV}\naudience: app\nissuer: idp\ncookie: id_token"
    ))
}

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "aud": "app", "iss": "idp", "exp": NOW + 600, "nbf": NOW - 10})
}

fn sign(alg: Algorithm, claims: &Value, key: &EncodingKey) -> String {
    encode(&Header::new(alg), claims, key).expect("sign")
}

fn hs(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
}

fn bearer(token: &str) -> FakeRequest {
    FakeRequest::new()
        .at(NOW)
        .header("Authorization", format!("Bearer {token}"))
}

fn session(sub: &str) -> Outcome {
    Outcome::Session(SessionKey::new(b"jwt:sub", sub.as_bytes()))
}

fn with(mut c: Value, key: &str, v: Value) -> Value {
    c[key] = v;
    c
}

#[test]
fn hs256_claim_is_the_session() {
    let p = hs256();
    assert_eq!(
        outcome(&*p, &bearer(&hs(&claims("alice")))),
        session("alice")
    );
    assert_eq!(outcome(&*p, &bearer(&hs(&claims("bob")))), session("bob"));
    // From the cookie when there is no bearer token.
    let req = FakeRequest::new()
        .at(NOW)
        .header("cookie", format!("a=1; id_token={}", hs(&claims("carol"))));
    assert_eq!(outcome(&*p, &req), session("carol"));
    assert_eq!(outcome(&*p, &FakeRequest::new()), Outcome::Skip);
    let basic = FakeRequest::new().header("authorization", "Basic dXNlcjpwYXNz");
    assert_eq!(outcome(&*p, &basic), Outcome::Skip);
    // A valid token without the claim: nothing for this plugin.
    let no_sub = claims("x").as_object().map(|m| {
        let mut m = m.clone();
        m.remove("sub");
        Value::Object(m)
    });
    assert_eq!(
        outcome(&*p, &bearer(&hs(&no_sub.expect("object")))),
        Outcome::Skip
    );
    assert_eq!(
        p.session_key(b"alice"),
        Some(SessionKey::new(b"jwt:sub", b"alice"))
    );
}

#[test]
fn invalid_tokens_are_counted_by_reason() {
    let p = hs256();
    let check = |token: &str, why: Invalid| {
        assert_eq!(
            outcome(&*p, &bearer(token)),
            Outcome::Invalid(why),
            "{token}"
        );
    };
    let other = EncodingKey::from_secret(b"another-secret-another-secret-0123456789");
    check(
        &sign(Algorithm::HS256, &claims("a"), &other),
        Invalid::BadSignature,
    );
    check(
        &hs(&with(claims("a"), "exp", json!(NOW - 1))),
        Invalid::Expired,
    );
    check(
        &hs(&with(claims("a"), "nbf", json!(NOW + 60))),
        Invalid::NotYetValid,
    );
    check(
        &hs(&with(claims("a"), "aud", json!("other"))),
        Invalid::WrongAudience,
    );
    check(
        &hs(&with(claims("a"), "aud", json!(["x", "y"]))),
        Invalid::WrongAudience,
    );
    let listed = hs(&with(claims("a"), "aud", json!(["x", "app"])));
    assert_eq!(
        outcome(&*p, &bearer(&listed)),
        session("a"),
        "aud as a list"
    );
    check(
        &hs(&with(claims("a"), "iss", json!("evil"))),
        Invalid::WrongIssuer,
    );
    check(
        &hs(&json!({"sub": "a", "aud": "app", "iss": "idp"})),
        Invalid::Malformed,
    );
    check("not.a.token", Invalid::Malformed);
    check(&"x".repeat(9000), Invalid::Malformed);
    // alg: none, any case, unsigned.
    use base64::Engine as _;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    for alg in ["none", "None", "NONE"] {
        let token = format!(
            "{}.{}.",
            b64(&json!({"alg": alg, "typ": "JWT"})),
            b64(&claims("a"))
        );
        check(&token, Invalid::BadAlgorithm);
    }
    // HS384 is not what this key verifies.
    let hs384 = sign(
        Algorithm::HS384,
        &claims("a"),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    );
    check(&hs384, Invalid::BadAlgorithm);
    // exp within the leeway passes.
    let lenient = plugin(&format!(
        "type: jwt\nclaim: sub\nsecret_env: {SECRET_ENV}\nleeway: 30s"
    ));
    let late = hs(&json!({"sub": "a", "exp": NOW - 20}));
    assert_eq!(outcome(&*lenient, &bearer(&late)), session("a"));
}

/// `openssl` makes a key pair in `dir`: (private PEM, public PEM).
fn keypair(dir: &Path, name: &str, algorithm: &[&str]) -> (Vec<u8>, Vec<u8>) {
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pem"));
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let mut gen = vec!["genpkey", "-out", private.to_str().expect("utf-8")];
    gen.extend_from_slice(algorithm);
    run(&gen);
    run(&[
        "pkey",
        "-in",
        private.to_str().expect("utf-8"),
        "-pubout",
        "-out",
        public.to_str().expect("utf-8"),
    ]);
    (
        std::fs::read(private).expect("key"),
        std::fs::read(public).expect("pem"),
    )
}

#[test]
fn rs256_from_pem_and_algorithm_confusion() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (private, public) = keypair(
        dir.path(),
        "rsa",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let cache = Arc::new(FileCache::default());
    let yaml = format!(
        "type: jwt\nclaim: sub\npublic_key: {}",
        dir.path().join("rsa.pem").display()
    );
    let p = registry(&cache).build_str(&yaml, "app").expect("valid");
    let rs = EncodingKey::from_rsa_pem(&private).expect("rsa key");
    assert_eq!(
        outcome(&*p, &bearer(&sign(Algorithm::RS256, &claims("dave"), &rs))),
        session("dave")
    );
    // HS256 "signed" with the public key as the secret: refused, whatever the signature.
    let confused = sign(
        Algorithm::HS256,
        &claims("dave"),
        &EncodingKey::from_secret(&public),
    );
    assert_eq!(
        outcome(&*p, &bearer(&confused)),
        Outcome::Invalid(Invalid::BadAlgorithm)
    );
    // Another key pair: bad signature.
    let (other, _) = keypair(
        dir.path(),
        "rsa2",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let forged = sign(
        Algorithm::RS256,
        &claims("dave"),
        &EncodingKey::from_rsa_pem(&other).expect("rsa"),
    );
    assert_eq!(
        outcome(&*p, &bearer(&forged)),
        Outcome::Invalid(Invalid::BadSignature)
    );
    // The factory's captured state: the file is read once for two plugins.
    registry(&cache).build_str(&yaml, "other").expect("valid");
    assert_eq!(cache.reads(), 1);
}

#[test]
fn es256_from_jwks_by_kid() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (private, public) = keypair(
        dir.path(),
        "ec",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let enc = EncodingKey::from_ec_pem(&private).expect("ec key");
    // The JWK of the public key: a P-256 SPKI ends with the point 04 || X || Y.
    use base64::Engine as _;
    let body: String = String::from_utf8(public)
        .expect("PEM")
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("PEM body");
    let point = &der[der.len() - 65..];
    assert_eq!(point[0], 4, "uncompressed point");
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..]),
        "kid": "k1", "alg": "ES256", "use": "sig"});
    let set = json!({"keys": [jwk]});
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, set.to_string()).expect("write jwks");
    let p = plugin(&format!(
        "type: jwt\nclaim: tenant.id\njwks: {}",
        path.display()
    ));
    let nested = json!({"tenant": {"id": "acme"}, "exp": NOW + 60});
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("k1".into());
    let token = encode(&header, &nested, &enc).expect("sign");
    let want = Outcome::Session(SessionKey::new(b"jwt:tenant.id", b"acme"));
    assert_eq!(outcome(&*p, &bearer(&token)), want);
    header.kid = Some("k2".into());
    let token = encode(&header, &nested, &enc).expect("sign");
    assert_eq!(
        outcome(&*p, &bearer(&token)),
        Outcome::Invalid(Invalid::UnknownKey)
    );
}

#[test]
fn settings_are_checked() {
    let cache = Arc::new(FileCache::default());
    let r = registry(&cache);
    let err = |yaml: &str| -> Vec<String> {
        r.build_str(yaml, "app")
            .err()
            .unwrap_or_else(|| panic!("{yaml} is valid"))
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    assert_eq!(
        err("type: jwt\nsecret_env: X"),
        ["plugin.claim: is required"]
    );
    assert_eq!(
        err("type: jwt\nclaim: sub"),
        ["plugin.secret_env: give exactly one of secret_env, public_key, jwks"]
    );
    assert_eq!(
        err("type: jwt\nclaim: sub\nsecret_env: BERTH_JWT_UNIT_TEST_UNSET"),
        ["plugin.secret_env: environment variable BERTH_JWT_UNIT_TEST_UNSET must hold a secret of at least 32 bytes"]
    );
    let e = err(&format!(
        "type: jwt\nclaim: sub\nsecret_env: {SECRET_ENV}\nalgorithms: [none]"
    ));
    assert!(
        e[0].starts_with("plugin.algorithms: \"none\" is not supported"),
        "{e:?}"
    );
    let e = err(&format!(
        "type: jwt\nclaim: sub\nsecret_env: {SECRET_ENV}\nalgorithms: [RS256]"
    ));
    assert_eq!(
        e,
        ["plugin.algorithms: RS256 does not go with a secret (HS256/384/512)"]
    );
    let e = err("type: jwt\nclaim: sub\npublic_key: /nonexistent/key.pem");
    assert!(
        e[0].starts_with("plugin.public_key: \"/nonexistent/key.pem\": "),
        "{e:?}"
    );
    let e = err(&format!(
        "type: jwt\nclaim: sub\nsecret_env: {SECRET_ENV}\nextra: 1"
    ));
    assert!(e[0].starts_with("plugin.extra: unknown key"), "{e:?}");
}
