//! # berth-jwt — JWT affinity for Berth
//!
//! A claim of the bearer token the client already sends (`sub`, `sid`, a tenant) is the
//! session key: affinity with no state at the gateway beyond the overlay pin, the "state in
//! tokens the client presents" pattern. The token comes from a header (`Authorization:
//! Bearer …` by default) or a cookie, and is verified with [`jsonwebtoken`]: HS256 with a
//! secret from the environment, RS256/ES256 with a PEM public key or a JWKS file; `exp` and
//! `nbf` against the gateway's clock (with `leeway`), `aud` and `iss` when configured. Each
//! key verifies only its own algorithms: `alg: none` and algorithm confusion (HS256 "signed"
//! with an RSA public key) are refused.
//!
//! An invalid token yields no key — the next plugin of the chain decides — and is counted by
//! reason in `berth_affinity_invalid_total{plugin="jwt",why}`: `malformed`, `bad_signature`,
//! `unknown_key` (no key with the token's `kid`), `expired`, `not_yet_valid`,
//! `wrong_audience`, `wrong_issuer`, `bad_algorithm`. Never an error response.
//!
//! ```yaml
//! affinity:
//!   - type: jwt
//!     claim: sub                 # required; a dotted path reaches nested claims (tenant.id)
//!     secret_env: JWT_SECRET     # HS256; or public_key: /etc/berth/jwt.pem, or jwks: /etc/berth/jwks.json
//!     audience: [my-app]         # optional: aud must contain one of these
//!     issuer: https://id.example.com   # optional
//!     header: Authorization      # default; the value after "Bearer "
//!     cookie: id_token           # optional: read when the header has no bearer token
//!     algorithms: [HS256]        # optional: default HS256 for a secret, RS256/ES256 by key type
//!     leeway: 30s                # optional clock skew for exp/nbf (default 0s)
//!   - type: cookie               # e.g. the fallback for clients without a token
//! ```
use berth_plugins::{Affinity, AffinityPlugin, Invalid, KeyOutcome, Params, Rejected};
use berth_plugins::{RequestView, SessionKey};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::Algorithm;
use serde_json::Value;
use std::sync::Arc;

pub mod keys;

use keys::{Checks, FileCache, VerifyKey};

/// Longest token read, in bytes.
pub const DEFAULT_MAX_LEN: usize = 8192;

/// The `jwt` plugin.
pub struct JwtPlugin {
    header: String,
    cookie: Option<String>,
    claim: Vec<String>,
    namespace: Vec<u8>,
    keys: Vec<VerifyKey>,
    /// Accepted audiences and issuer (HS* tokens are checked here; others by jsonwebtoken).
    audience: Vec<String>,
    issuer: Option<String>,
    leeway: u64,
    max_len: usize,
}

impl JwtPlugin {
    /// The token the request carries: the header's bearer token, else the cookie's value.
    fn token<'r>(&self, req: &'r dyn RequestView) -> Option<&'r str> {
        if let Some(v) = req.header(&self.header) {
            let v = std::str::from_utf8(v).ok()?.trim();
            if v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer ") {
                return Some(v[7..].trim_start());
            }
        }
        let name = self.cookie.as_deref()?;
        (0..)
            .map_while(|n| req.header_nth("cookie", n))
            .filter_map(|field| std::str::from_utf8(field).ok())
            .flat_map(|field| field.split(';'))
            .find_map(|c| {
                let (k, v) = c.trim().split_once('=')?;
                (k == name).then(|| v.trim_matches('"'))
            })
    }

    /// Verify `token` at `now`: the session key, `None` when the token lacks the claim.
    fn verify(&self, token: &str, now: u64) -> Result<Option<SessionKey>, Invalid> {
        if token.len() > self.max_len {
            return Err(Invalid::Malformed);
        }
        let header = match jsonwebtoken::decode_header(token) {
            Ok(h) => h,
            Err(_) if alg_none(token) => return Err(Invalid::BadAlgorithm),
            Err(_) => return Err(Invalid::Malformed),
        };
        let key = self.key_for(header.kid.as_deref())?;
        let (_, validation) = key
            .validations
            .iter()
            .find(|(alg, _)| *alg == header.alg)
            .ok_or(Invalid::BadAlgorithm)?;
        let claims = match key.hmac.iter().find(|(alg, _)| *alg == header.alg) {
            Some((_, hmac)) => self.hmac_claims(token, hmac)?,
            None => {
                jsonwebtoken::decode::<Value>(token, &key.key, validation)
                    .map_err(|e| reason(e.kind()))?
                    .claims
            }
        };
        let time = |name: &str| claims.get(name).and_then(Value::as_f64).map(|t| t as u64);
        match time("exp") {
            Some(exp) if now > exp.saturating_add(self.leeway) => return Err(Invalid::Expired),
            Some(_) => {}
            None => return Err(Invalid::Malformed), // a session token without an expiry
        }
        if time("nbf").is_some_and(|nbf| now.saturating_add(self.leeway) < nbf) {
            return Err(Invalid::NotYetValid);
        }
        let mut value = &claims;
        for part in &self.claim {
            match value.get(part) {
                Some(v) => value = v,
                None => return Ok(None),
            }
        }
        Ok(match value {
            Value::String(s) if !s.is_empty() => {
                Some(SessionKey::new(&self.namespace, s.as_bytes()))
            }
            Value::Number(n) => Some(SessionKey::new(&self.namespace, n.to_string().as_bytes())),
            _ => None,
        })
    }

    /// The claims of an HS* token whose signature `hmac` verifies (constant time, ring), with
    /// `aud` and `iss` checked as jsonwebtoken's `Validation` would.
    fn hmac_claims(&self, token: &str, hmac: &ring::hmac::Key) -> Result<Value, Invalid> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (message, signature) = token.rsplit_once('.').ok_or(Invalid::Malformed)?;
        let (_, payload) = message.split_once('.').ok_or(Invalid::Malformed)?;
        let mut sig = [0u8; 64];
        let n = b64
            .decode_slice(signature, &mut sig)
            .map_err(|_| Invalid::Malformed)?;
        ring::hmac::verify(hmac, message.as_bytes(), &sig[..n])
            .map_err(|_| Invalid::BadSignature)?;
        let json = b64.decode(payload).map_err(|_| Invalid::Malformed)?;
        let claims: Value = serde_json::from_slice(&json).map_err(|_| Invalid::Malformed)?;
        if !self.audience.is_empty() {
            let ok = match claims.get("aud") {
                Some(Value::String(a)) => self.audience.contains(a),
                Some(Value::Array(all)) => all.iter().any(|a| {
                    a.as_str()
                        .is_some_and(|a| self.audience.iter().any(|x| x == a))
                }),
                _ => false,
            };
            if !ok {
                return Err(Invalid::WrongAudience);
            }
        }
        if let Some(iss) = &self.issuer {
            if claims.get("iss").and_then(Value::as_str) != Some(iss.as_str()) {
                return Err(Invalid::WrongIssuer);
            }
        }
        Ok(claims)
    }

    /// The key a token with `kid` is verified with.
    fn key_for(&self, kid: Option<&str>) -> Result<&VerifyKey, Invalid> {
        if let Some(k) =
            kid.and_then(|kid| self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)))
        {
            return Ok(k);
        }
        match self.keys.as_slice() {
            [only] if only.kid.is_none() || kid.is_none() => Ok(only),
            _ => Err(Invalid::UnknownKey),
        }
    }
}

/// True when the token's header says `alg: none` (any case), which jsonwebtoken cannot parse.
fn alg_none(token: &str) -> bool {
    use base64::Engine as _;
    let Some(head) = token.split('.').next() else {
        return false;
    };
    let Ok(json) =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(head.trim_end_matches('='))
    else {
        return false;
    };
    let alg = serde_json::from_slice::<Value>(&json).ok();
    alg.as_ref()
        .and_then(|h| h.get("alg"))
        .and_then(Value::as_str)
        .is_some_and(|a| a.eq_ignore_ascii_case("none"))
}

/// What a verification error counts as.
fn reason(kind: &ErrorKind) -> Invalid {
    match kind {
        ErrorKind::InvalidSignature => Invalid::BadSignature,
        ErrorKind::ExpiredSignature => Invalid::Expired,
        ErrorKind::ImmatureSignature => Invalid::NotYetValid,
        ErrorKind::InvalidAudience => Invalid::WrongAudience,
        ErrorKind::InvalidIssuer => Invalid::WrongIssuer,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => Invalid::BadAlgorithm,
        _ => Invalid::Malformed,
    }
}

impl AffinityPlugin for JwtPlugin {
    fn name(&self) -> &str {
        "jwt"
    }

    fn sees_responses(&self) -> bool {
        false
    }

    fn session_key(&self, value: &[u8]) -> Option<SessionKey> {
        (!value.is_empty()).then(|| SessionKey::new(&self.namespace, value))
    }

    fn key<'r>(&self, req: &'r dyn RequestView) -> KeyOutcome<'r> {
        let Some(token) = self.token(req) else {
            return KeyOutcome::Skip;
        };
        match self.verify(token, req.now_unix()) {
            Ok(Some(key)) => KeyOutcome::Key(Affinity::Session(key)),
            Ok(None) => KeyOutcome::Skip,
            Err(why) => KeyOutcome::Invalid(why),
        }
    }
}

fn algorithm(name: &str) -> Option<Algorithm> {
    Some(match name {
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        _ => return None,
    })
}

/// `audience`: one string or a list.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// A factory for `jwt` plugins reading key files through `cache` (shared by every plugin it
/// builds: the state the closure captures).
pub fn factory(
    cache: Arc<FileCache>,
) -> impl Fn(&mut Params<'_>) -> Result<Box<dyn AffinityPlugin>, Rejected> + Send + Sync + 'static {
    move |p: &mut Params<'_>| build(p, &cache)
}

fn build(p: &mut Params<'_>, cache: &FileCache) -> Result<Box<dyn AffinityPlugin>, Rejected> {
    let claim = p.req::<String>("claim");
    let header = p.opt::<String>("header");
    let cookie = p.opt::<String>("cookie");
    let secret_env = p.opt::<String>("secret_env");
    let public_key = p.opt::<String>("public_key");
    let jwks = p.opt::<String>("jwks");
    let algorithms = p.opt::<Vec<String>>("algorithms");
    let audience = p.opt::<OneOrMany>("audience");
    let issuer = p.opt::<String>("issuer");
    let leeway = p.duration("leeway");
    let max_len = p.opt::<usize>("max_len");
    let (claim, header, cookie) = (claim?, header?, cookie?);
    let (secret_env, public_key, jwks) = (secret_env?, public_key?, jwks?);
    let (algorithms, audience, issuer, leeway, max_len) =
        (algorithms?, audience?, issuer?, leeway?, max_len?);
    if claim.is_empty() || claim.split('.').any(str::is_empty) {
        return Err(p.invalid(
            "claim",
            format!("{claim:?} is not a claim name (e.g. sub, tenant.id)"),
        ));
    }
    let algs = match algorithms {
        None => None,
        Some(names) => {
            let mut algs = Vec::new();
            for n in &names {
                match algorithm(n) {
                    Some(a) => algs.push(a),
                    None => {
                        let msg = format!("{n:?} is not supported (HS256/384/512, RS256/384/512, ES256/384; never none)");
                        return Err(p.invalid("algorithms", msg));
                    }
                }
            }
            Some(algs)
        }
    };
    let checks = Checks {
        audience: match audience {
            None => Vec::new(),
            Some(OneOrMany::One(a)) => vec![a],
            Some(OneOrMany::Many(a)) => a,
        },
        issuer,
    };
    let keys = match (secret_env, public_key, jwks) {
        (Some(var), None, None) => {
            let secret = std::env::var(&var).unwrap_or_default();
            if secret.len() < 32 {
                let msg =
                    format!("environment variable {var} must hold a secret of at least 32 bytes");
                return Err(p.invalid("secret_env", msg));
            }
            let algs = algs.unwrap_or_else(|| vec![Algorithm::HS256]);
            if let Some(a) = algs
                .iter()
                .find(|a| !matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512))
            {
                return Err(p.invalid(
                    "algorithms",
                    format!("{a:?} does not go with a secret (HS256/384/512)"),
                ));
            }
            keys::secret(secret.as_bytes(), &algs, &checks)
        }
        (None, Some(path), None) => {
            let text = cache
                .read(path.as_ref())
                .map_err(|e| p.invalid("public_key", format!("{path:?}: {e}")))?;
            if algs.as_ref().is_some_and(|a| {
                a.iter()
                    .any(|a| matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512))
            }) {
                return Err(p.invalid("algorithms", "HS* with a public key is algorithm confusion"));
            }
            keys::pem(&text, algs.as_deref(), &checks)
                .map_err(|e| p.invalid("public_key", format!("{path:?}: {e}")))?
        }
        (None, None, Some(path)) => {
            let text = cache
                .read(path.as_ref())
                .map_err(|e| p.invalid("jwks", format!("{path:?}: {e}")))?;
            keys::jwks(&text, &checks).map_err(|e| p.invalid("jwks", format!("{path:?}: {e}")))?
        }
        _ => {
            return Err(p.invalid(
                "secret_env",
                "give exactly one of secret_env, public_key, jwks",
            ))
        }
    };
    let header = header
        .unwrap_or_else(|| "authorization".into())
        .to_ascii_lowercase();
    let namespace = format!("jwt:{claim}").into_bytes();
    Ok(Box::new(JwtPlugin {
        header,
        cookie,
        claim: claim.split('.').map(str::to_string).collect(),
        namespace,
        keys,
        audience: checks.audience.clone(),
        issuer: checks.issuer.clone(),
        leeway: leeway.map_or(0, |d| d.as_secs()),
        max_len: max_len.unwrap_or(DEFAULT_MAX_LEN),
    }))
}

#[cfg(test)]
mod tests;
