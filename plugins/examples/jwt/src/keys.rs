//! Verification keys: an HS256 secret from the environment, a PEM public key (RS256/ES256) or
//! a JWKS file; each key with the algorithms it may verify (so a token cannot pick another).
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// One key and a ready [`Validation`] per algorithm it may verify.
pub struct VerifyKey {
    /// `kid`, for JWKS keys that have one.
    pub kid: Option<String>,
    /// The key.
    pub key: DecodingKey,
    /// `(algorithm, validation)`, built once (aud/iss set; exp/nbf checked by the plugin
    /// against the gateway's clock).
    pub validations: Vec<(Algorithm, Validation)>,
    /// For a secret: the HMAC key of each allowed algorithm, built once (the plugin verifies
    /// HS* tokens with it directly: jsonwebtoken would rebuild the key for every token).
    pub hmac: Vec<(Algorithm, ring::hmac::Key)>,
}

/// What the validations check besides the signature.
#[derive(Debug, Clone, Default)]
pub struct Checks {
    /// Accepted audiences (`aud` must contain one); none: `aud` is not checked.
    pub audience: Vec<String>,
    /// The accepted issuer (`iss`); none: not checked.
    pub issuer: Option<String>,
}

impl VerifyKey {
    fn new(kid: Option<String>, key: DecodingKey, algs: &[Algorithm], checks: &Checks) -> Self {
        let validations = algs
            .iter()
            .map(|&alg| {
                let mut v = Validation::new(alg);
                v.validate_exp = false; // the plugin checks exp and nbf with the request's time
                v.validate_nbf = false;
                v.required_spec_claims.clear();
                v.validate_aud = !checks.audience.is_empty();
                if v.validate_aud {
                    v.set_audience(&checks.audience);
                }
                if let Some(iss) = &checks.issuer {
                    v.set_issuer(&[iss]);
                }
                (alg, v)
            })
            .collect();
        VerifyKey {
            kid,
            key,
            validations,
            hmac: Vec::new(),
        }
    }
}

/// An HS256 (or HS384/HS512) secret.
pub fn secret(secret: &[u8], algs: &[Algorithm], checks: &Checks) -> Vec<VerifyKey> {
    let key = DecodingKey::from_secret(secret);
    let mut k = VerifyKey::new(None, key, algs, checks);
    k.hmac = algs
        .iter()
        .filter_map(|&alg| {
            let ring_alg = match alg {
                Algorithm::HS256 => ring::hmac::HMAC_SHA256,
                Algorithm::HS384 => ring::hmac::HMAC_SHA384,
                Algorithm::HS512 => ring::hmac::HMAC_SHA512,
                _ => return None,
            };
            Some((alg, ring::hmac::Key::new(ring_alg, secret)))
        })
        .collect();
    vec![k]
}

/// A PEM public key: RSA (RS256 by default) or EC P-256 (ES256).
pub fn pem(
    text: &[u8],
    algs: Option<&[Algorithm]>,
    checks: &Checks,
) -> Result<Vec<VerifyKey>, String> {
    if let Ok(key) = DecodingKey::from_rsa_pem(text) {
        let algs = algs.unwrap_or(&[Algorithm::RS256]);
        return Ok(vec![VerifyKey::new(None, key, algs, checks)]);
    }
    match DecodingKey::from_ec_pem(text) {
        Ok(key) => {
            let algs = algs.unwrap_or(&[Algorithm::ES256]);
            Ok(vec![VerifyKey::new(None, key, algs, checks)])
        }
        Err(e) => Err(format!("not an RSA or EC public key in PEM: {e}")),
    }
}

/// A JWKS document: each key with its `alg`, or the one its type implies (RSA: RS256, EC
/// P-256: ES256, P-384: ES384).
pub fn jwks(text: &[u8], checks: &Checks) -> Result<Vec<VerifyKey>, String> {
    let set: JwkSet = serde_json::from_slice(text).map_err(|e| format!("not a JWKS: {e}"))?;
    if set.keys.is_empty() {
        return Err("has no keys".into());
    }
    set.keys
        .iter()
        .enumerate()
        .map(|(i, jwk)| {
            let alg = match (jwk.common.key_algorithm, &jwk.algorithm) {
                (Some(KeyAlgorithm::RS256), _) => Algorithm::RS256,
                (Some(KeyAlgorithm::RS384), _) => Algorithm::RS384,
                (Some(KeyAlgorithm::RS512), _) => Algorithm::RS512,
                (Some(KeyAlgorithm::ES256), _) => Algorithm::ES256,
                (Some(KeyAlgorithm::ES384), _) => Algorithm::ES384,
                (Some(other), _) => return Err(format!("keys[{i}]: alg {other:?} not supported")),
                (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
                (None, AlgorithmParameters::EllipticCurve(ec)) => match ec.curve {
                    EllipticCurve::P256 => Algorithm::ES256,
                    EllipticCurve::P384 => Algorithm::ES384,
                    ref c => return Err(format!("keys[{i}]: curve {c:?} not supported")),
                },
                (None, _) => return Err(format!("keys[{i}]: only RSA and EC keys are supported")),
            };
            let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("keys[{i}]: {e}"))?;
            Ok(VerifyKey::new(
                jwk.common.key_id.clone(),
                key,
                &[alg],
                checks,
            ))
        })
        .collect()
}

/// Key files read once and shared by every plugin that names them — the state a factory
/// captures (`main.rs`). A file is read again when its modification time or size changed,
/// so a reload (`SIGHUP`) after a key rotation picks up the new keys.
#[derive(Default)]
pub struct FileCache {
    files: Mutex<HashMap<PathBuf, Cached>>,
    reads: std::sync::atomic::AtomicUsize,
}

/// A file's modification time and size.
type Stamp = (Option<SystemTime>, u64);
/// A file's contents as read at `Stamp`.
type Cached = (Stamp, Arc<Vec<u8>>);

impl FileCache {
    /// The contents of `path`, from the cache when the file did not change.
    pub fn read(&self, path: &Path) -> std::io::Result<Arc<Vec<u8>>> {
        let meta = std::fs::metadata(path)?;
        let stamp = (meta.modified().ok(), meta.len());
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((s, bytes)) = files.get(path) {
            if *s == stamp {
                return Ok(bytes.clone());
            }
        }
        let bytes = Arc::new(std::fs::read(path)?);
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        files.insert(path.to_path_buf(), (stamp, bytes.clone()));
        Ok(bytes)
    }

    /// How many times a file was actually read.
    pub fn reads(&self) -> usize {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }
}
