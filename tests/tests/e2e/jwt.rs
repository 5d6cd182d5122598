//! JWT affinity from a plugin crate outside the workspace (`plugins/examples/jwt`, its binary
//! `berth-jwt` built with `berth::Berth::builder()`): 200 sessions with valid RS256 tokens
//! stick, and tokens with a bad signature, expired, not yet valid, for another audience, with
//! `alg: none`, or HS256-"signed" with the RS256 public key are ignored — served by the
//! fallback (the ring) — and each counted under its reason.
use berth_tests::config::{self, UPSTREAM};
use berth_tests::{first_n, par_map, tally, Backend, Gateway, Request};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

const SESSIONS: usize = 200;
const REQUESTS: usize = 3;
const THREADS: usize = 8;

/// An RSA key pair made by `openssl` in `dir`: (private PEM, path of the public PEM).
fn rsa(dir: &Path, name: &str) -> (Vec<u8>, std::path::PathBuf) {
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pem"));
    for args in [
        vec![
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ],
        vec!["pkey", "-pubout", "-in"],
    ] {
        let mut cmd = Command::new("openssl");
        cmd.args(&args);
        if args[0] == "genpkey" {
            cmd.arg(&private);
        } else {
            cmd.arg(&private).arg("-out").arg(&public);
        }
        let out = cmd.output().expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (std::fs::read(&private).expect("private key"), public)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "aud": "app", "iss": "https://idp.test", "exp": now() + 3600, "nbf": now() - 60})
}

fn with(mut c: Value, key: &str, v: Value) -> Value {
    c[key] = v;
    c
}

fn get(token: &str, path: &str) -> Request {
    Request::get(path).header("Authorization", &format!("Bearer {token}"))
}

#[test]
fn valid_tokens_stick_and_invalid_ones_fall_back_counted_by_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (private, public) = rsa(dir.path(), "idp");
    let (other, _) = rsa(dir.path(), "attacker");
    let backends = Backend::start_many(3);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let plugin = format!(
        "type: jwt\nclaim: sub\npublic_key: {}\naudience: app\nissuer: https://idp.test\n",
        public.display()
    );
    let gw = Gateway::start_binary(
        &berth_tests::jwt_bin(),
        &config::app_config(&[plugin], &specs),
        &[],
    );
    let key = EncodingKey::from_rsa_pem(&private).expect("RSA key");
    let sign = |c: &Value| encode(&Header::new(Algorithm::RS256), c, &key).expect("sign");

    // 200 sessions, each on fresh connections (no cookie): every request on its first backend.
    let results = par_map(SESSIONS, THREADS, |i| {
        let token = sign(&claims(&format!("user-{i}")));
        let mut home = String::new();
        for n in 0..REQUESTS {
            let r = gw.client().send(&get(&token, &format!("/s/{i}/{n}")));
            let want = if n == 0 { "new" } else { "sticky" };
            if r.status != 200 || r.affinity() != want || (n > 0 && r.backend() != home) {
                return Err(format!(
                    "session {i} request {n} (home {home:?}): {}",
                    r.summary()
                ));
            }
            home = r.backend().to_string();
        }
        Ok(home)
    });
    let failures: Vec<String> = results.iter().filter_map(|r| r.clone().err()).collect();
    assert!(
        failures.is_empty(),
        "{} failed:\n  {}",
        failures.len(),
        first_n(&failures, 10)
    );
    let homes = tally(results.iter().filter_map(|r| r.as_deref().ok()));
    assert_eq!(homes.len(), 3, "sessions per backend: {homes:?}");
    assert_eq!(
        gw.metric("berth_sessions", &[("upstream", UPSTREAM)]),
        SESSIONS as f64
    );

    // Invalid tokens: served by the fallback (the ring), never an error, counted by reason.
    use base64::Engine as _;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let public_pem = std::fs::read(&public).expect("public key");
    let forged_key = EncodingKey::from_rsa_pem(&other).expect("RSA key");
    let cases: Vec<(&str, String, usize)> = vec![
        (
            "bad_signature",
            encode(&Header::new(Algorithm::RS256), &claims("x"), &forged_key).expect("sign"),
            1,
        ),
        (
            "expired",
            sign(&with(claims("x"), "exp", json!(now() - 3600))),
            2,
        ),
        (
            "not_yet_valid",
            sign(&with(claims("x"), "nbf", json!(now() + 3600))),
            3,
        ),
        (
            "wrong_audience",
            sign(&with(claims("x"), "aud", json!("other-app"))),
            4,
        ),
        (
            "wrong_issuer",
            sign(&with(claims("x"), "iss", json!("https://evil.test"))),
            5,
        ),
        (
            "bad_algorithm",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "JWT"})),
                b64(&claims("x"))
            ),
            6,
        ),
        (
            "bad_algorithm",
            encode(
                &Header::new(Algorithm::HS256),
                &claims("x"),
                &EncodingKey::from_secret(&public_pem),
            )
            .expect("sign"),
            7,
        ),
    ];
    for (why, token, times) in &cases {
        for n in 0..*times {
            let r = gw.client().send(&get(token, &format!("/bad/{why}/{n}")));
            assert_eq!(
                (r.status, r.affinity()),
                (200, "ring"),
                "{why}: {}",
                r.summary()
            );
        }
    }
    for why in [
        "bad_signature",
        "expired",
        "not_yet_valid",
        "wrong_audience",
        "wrong_issuer",
        "bad_algorithm",
    ] {
        let want: usize = cases
            .iter()
            .filter(|(w, _, _)| *w == why)
            .map(|(_, _, n)| n)
            .sum();
        let labels = [("upstream", UPSTREAM), ("plugin", "jwt"), ("why", why)];
        let got = gw.wait_metric("berth_affinity_invalid_total", &labels, |v| {
            v == want as f64
        });
        assert_eq!(
            got, want as f64,
            "berth_affinity_invalid_total{{why={why}}}"
        );
    }
    // Nothing new was pinned for them.
    assert_eq!(
        gw.metric("berth_sessions", &[("upstream", UPSTREAM)]),
        SESSIONS as f64
    );
}

#[test]
fn the_example_config_is_valid_for_berth_jwt_and_checked_like_the_rest() {
    let path = berth_tests::workspace_root().join("plugins/examples/jwt/berth.yaml");
    let check = |secret: &str| {
        let out = Command::new(berth_tests::jwt_bin())
            .arg("-t")
            .arg("-c")
            .arg(&path)
            .env("JWT_SECRET", secret)
            .env("BERTH_COOKIE_SECRET", config::COOKIE_SECRET)
            .output()
            .expect("run berth-jwt -t");
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        (out.status.code(), stderr)
    };
    let (code, stderr) = check("example-jwt-secret-0123456789abcdef0123");
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = check("short");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "upstreams.app.affinity[0].secret_env: environment variable JWT_SECRET must hold a \
             secret of at least 32 bytes"
        ),
        "{stderr}"
    );
}
