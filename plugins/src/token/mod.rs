//! Signed session tokens for cookie insert mode.
//!
//! Format: `v1.<key-id>.<backend-id>.<expiry>.<sid>.<mac>` where `expiry` is Unix seconds in
//! decimal, `sid` is the session's random 128-bit id (base64url, 22 characters: it keeps one
//! session one session across re-issued tokens, and tells apart sessions placed on the same
//! backend in the same second), and `mac` is base64url (no padding) of
//! `HMAC-SHA256(secret, "v1.<key-id>.<backend-id>.<expiry>.<sid>" || "\n" || upstream-name)`.
//!
//! * The upstream name is bound into the MAC but not written in the token, so a token issued
//!   for another upstream fails as [`Invalid::BadSignature`] (indistinguishable from a forgery).
//! * Several keys: the first signs, every key verifies (rotation: add the new key first,
//!   remove the old one a TTL later; a token under a removed key is [`Invalid::UnknownKey`]).
//! * Verification order: shape ([`Invalid::Malformed`]) → key id ([`Invalid::UnknownKey`]) →
//!   MAC, compared in constant time ([`Invalid::BadSignature`]) → expiry
//!   ([`Invalid::Expired`]). The signature is checked before the expiry, so a client cannot
//!   learn anything about the expiry check from a token it did not get from us.
//! * Parsing never panics and never allocates: any length, any bytes.
//!
//! ```
//! use berth_plugins::token::Keys;
//! let keys = Keys::new([("k1", [7u8; 32])]).unwrap();
//! let token = keys.sign_session("app", "b1", 2_000, 42);
//! let ok = keys.verify(token.as_bytes(), "app", 1_000).unwrap();
//! assert_eq!((ok.backend, ok.expiry, ok.key_id, ok.sid), ("b1", 2_000, "k1", 42));
//! assert!(keys.verify(token.as_bytes(), "other-upstream", 1_000).is_err());
//! ```
use crate::Invalid;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

/// Version prefix of the token format.
pub const VERSION: &str = "v1";
/// Tokens longer than this are rejected as [`Invalid::Malformed`] before any other work.
pub const MAX_TOKEN_LEN: usize = 512;
/// Minimum secret length in bytes.
pub const MIN_SECRET_LEN: usize = 32;
/// Maximum length of a key id or backend id.
pub const MAX_ID_LEN: usize = 64;
/// Length of the raw MAC (HMAC-SHA256).
pub const MAC_LEN: usize = 32;
/// Length of the MAC in base64url without padding.
const MAC_B64_LEN: usize = 43;
/// A 16-byte session id in base64url without padding.
const SID_B64_LEN: usize = 22;
/// Longest decimal `u64`.
const MAX_EXPIRY_DIGITS: usize = 20;

/// True when `id` is a valid key id or backend id: 1–64 of `[A-Za-z0-9_-]`.
pub fn valid_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

/// Why a key set could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No key at all.
    #[error("at least one key is required")]
    NoKeys,
    /// A key id outside `[A-Za-z0-9_-]{1,64}`.
    #[error("key id {0:?} must be 1-64 letters, digits, '-' or '_'")]
    BadId(String),
    /// Two keys with one id.
    #[error("key id {0:?} is used twice")]
    DuplicateId(String),
    /// A secret shorter than [`MIN_SECRET_LEN`].
    #[error("the secret of key {id:?} is {len} bytes; at least {MIN_SECRET_LEN} are required")]
    ShortSecret {
        /// The key's id.
        id: String,
        /// Its length, in bytes.
        len: usize,
    },
}

struct Key {
    id: String,
    /// HMAC state already keyed with the secret: cloned per use, no re-keying per request.
    mac: HmacSha256,
}

/// The signing keys of one cookie plugin: the first signs, all verify.
pub struct Keys {
    keys: Vec<Key>,
}

impl fmt::Debug for Keys {
    /// Key ids only: secrets never reach logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("ids", &self.ids().collect::<Vec<_>>())
            .finish()
    }
}

/// A token that verified: what it says, borrowed from the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified<'t> {
    /// The backend id the token names.
    pub backend: &'t str,
    /// Expiry, Unix seconds.
    pub expiry: u64,
    /// Id of the key that signed it.
    pub key_id: &'t str,
    /// The session's id (random at issue, kept when the token is re-issued).
    pub sid: u128,
    /// The raw MAC.
    pub mac_bytes: [u8; MAC_LEN],
}

/// The parts of a well-formed token.
struct Parts<'t> {
    /// `v1.<kid>.<backend>.<expiry>.<sid>`: the signed prefix.
    signed: &'t [u8],
    key_id: &'t str,
    backend: &'t str,
    expiry: u64,
    sid: u128,
    mac: [u8; MAC_LEN],
}

impl Keys {
    /// Build a key set from `(id, secret)` pairs, in order (the first signs).
    pub fn new<I, S>(keys: impl IntoIterator<Item = (I, S)>) -> Result<Keys, KeyError>
    where
        I: Into<String>,
        S: AsRef<[u8]>,
    {
        let mut out: Vec<Key> = Vec::new();
        for (id, secret) in keys {
            let id = id.into();
            let secret = secret.as_ref();
            if !valid_id(id.as_bytes()) {
                return Err(KeyError::BadId(id));
            }
            if out.iter().any(|k| k.id == id) {
                return Err(KeyError::DuplicateId(id));
            }
            if secret.len() < MIN_SECRET_LEN {
                let len = secret.len();
                return Err(KeyError::ShortSecret { id, len });
            }
            let Ok(mac) = HmacSha256::new_from_slice(secret) else {
                // HMAC takes keys of any length; kept as an error rather than a panic.
                let len = secret.len();
                return Err(KeyError::ShortSecret { id, len });
            };
            out.push(Key { id, mac });
        }
        if out.is_empty() {
            return Err(KeyError::NoKeys);
        }
        Ok(Keys { keys: out })
    }

    /// The key ids, signing key first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    /// The signing key (never absent: [`Keys::new`] refuses an empty set).
    fn signer(&self) -> &Key {
        &self.keys[0]
    }

    /// A token naming `backend` in `upstream`, valid until `expiry` (Unix seconds inclusive),
    /// signed with the first key. `backend` must be a [`valid_id`]; a token for any other
    /// string does not verify ([`Invalid::Malformed`]).
    pub fn sign(&self, upstream: &str, backend: &str, expiry: u64) -> String {
        self.sign_session(upstream, backend, expiry, rand::random())
    }

    /// As [`Keys::sign`], for the session with id `sid` (re-issuing keeps a session's id).
    pub fn sign_session(&self, upstream: &str, backend: &str, expiry: u64, sid: u128) -> String {
        let key = self.signer();
        let mut out = String::with_capacity(
            VERSION.len()
                + key.id.len()
                + backend.len()
                + MAX_EXPIRY_DIGITS
                + SID_B64_LEN
                + MAC_B64_LEN
                + 5,
        );
        out.push_str(VERSION);
        out.push('.');
        out.push_str(&key.id);
        out.push('.');
        out.push_str(backend);
        out.push('.');
        out.push_str(&expiry.to_string());
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(sid.to_be_bytes(), &mut out);
        let tag = mac_of(&key.mac, out.as_bytes(), upstream)
            .finalize()
            .into_bytes();
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(tag, &mut out);
        out
    }

    /// Check a token for `upstream` at time `now` (Unix seconds). See the module docs for the
    /// order of the checks.
    pub fn verify<'t>(
        &self,
        token: &'t [u8],
        upstream: &str,
        now: u64,
    ) -> Result<Verified<'t>, Invalid> {
        let parts = parse(token).ok_or(Invalid::Malformed)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == parts.key_id)
            .ok_or(Invalid::UnknownKey)?;
        mac_of(&key.mac, parts.signed, upstream)
            .verify_slice(&parts.mac)
            .map_err(|_| Invalid::BadSignature)?;
        if parts.expiry < now {
            return Err(Invalid::Expired);
        }
        Ok(Verified {
            backend: parts.backend,
            expiry: parts.expiry,
            key_id: parts.key_id,
            sid: parts.sid,
            mac_bytes: parts.mac,
        })
    }
}

/// The MAC state after feeding `signed || "\n" || upstream`.
fn mac_of(keyed: &HmacSha256, signed: &[u8], upstream: &str) -> HmacSha256 {
    let mut mac = keyed.clone();
    mac.update(signed);
    mac.update(b"\n");
    mac.update(upstream.as_bytes());
    mac
}

/// Split a token into its parts; `None` when it is not in the format.
fn parse(token: &[u8]) -> Option<Parts<'_>> {
    if token.len() > MAX_TOKEN_LEN {
        return None;
    }
    let mut fields = token.split(|&c| c == b'.');
    let (Some(version), Some(kid), Some(backend), Some(expiry), Some(sid), Some(mac), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return None;
    };
    if version != VERSION.as_bytes() || !valid_id(kid) || !valid_id(backend) {
        return None;
    }
    let expiry = parse_u64(expiry)?;
    if sid.len() != SID_B64_LEN {
        return None;
    }
    let mut sid_buf = [0u8; 16 + 2];
    let n = URL_SAFE_NO_PAD.decode_slice(sid, &mut sid_buf).ok()?;
    let sid = u128::from_be_bytes(sid_buf.get(..n)?.try_into().ok()?);
    if mac.len() != MAC_B64_LEN {
        return None;
    }
    // 43 base64 characters decode to 32 bytes; the engine's length estimate wants room for 33.
    let mut buf = [0u8; MAC_LEN + 3];
    let n = URL_SAFE_NO_PAD.decode_slice(mac, &mut buf).ok()?;
    let mac: [u8; MAC_LEN] = buf.get(..n)?.try_into().ok()?;
    // The signed prefix is everything before the last '.'; `mac` is the last field.
    let signed = &token[..token.len() - MAC_B64_LEN - 1];
    Some(Parts {
        signed,
        key_id: std::str::from_utf8(kid).ok()?,
        backend: std::str::from_utf8(backend).ok()?,
        expiry,
        sid,
        mac,
    })
}

/// Strict decimal: 1–20 ASCII digits, no sign, no overflow.
fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > MAX_EXPIRY_DIGITS {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &c| {
        let d = c.checked_sub(b'0').filter(|d| *d <= 9)?;
        acc.checked_mul(10)?.checked_add(u64::from(d))
    })
}

#[cfg(test)]
mod tests;
