//! Berth's cookie token, `v1.<kid>.<backend>.<expiry>.<sid>.<mac>`, for crafting test cookies.
//!
//! `sid` is the session's 16-byte id in base64url (22 characters);
//! `mac = base64url-nopad(HMAC-SHA256(secret, "v1.<kid>.<backend>.<expiry>.<sid>\n<upstream>"))`:
//! a token is bound to its upstream without naming it.
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The fields of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub kid: String,
    pub backend: String,
    pub expiry: u64,
    pub sid: String,
    pub mac: String,
}

impl Token {
    /// Split a token into its fields; `None` when it does not have the `v1.` five-field shape.
    pub fn parse(value: &str) -> Option<Token> {
        let parts: Vec<&str> = value.split('.').collect();
        match parts.as_slice() {
            ["v1", kid, backend, expiry, sid, mac] => Some(Token {
                kid: kid.to_string(),
                backend: backend.to_string(),
                expiry: expiry.parse().ok()?,
                sid: sid.to_string(),
                mac: mac.to_string(),
            }),
            _ => None,
        }
    }

    /// The token as a cookie value.
    pub fn encode(&self) -> String {
        format!(
            "v1.{}.{}.{}.{}.{}",
            self.kid, self.backend, self.expiry, self.sid, self.mac
        )
    }
}

/// A correctly signed token for a new session (a fresh session id per call).
pub fn sign(secret: &[u8], kid: &str, backend: &str, expiry: u64, upstream: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let sid = (u128::from(std::process::id()) << 64) | u128::from(n);
    sign_sid(
        secret,
        kid,
        backend,
        expiry,
        &URL_SAFE_NO_PAD.encode(sid.to_be_bytes()),
        upstream,
    )
}

/// A correctly signed token with session id `sid` (22 base64url characters).
pub fn sign_sid(
    secret: &[u8],
    kid: &str,
    backend: &str,
    expiry: u64,
    sid: &str,
    upstream: &str,
) -> String {
    let payload = format!("v1.{kid}.{backend}.{expiry}.{sid}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(payload.as_bytes());
    mac.update(b"\n");
    mac.update(upstream.as_bytes());
    let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{payload}.{tag}")
}

/// True when `value` verifies under `secret` for `upstream`.
pub fn verify(secret: &[u8], value: &str, upstream: &str) -> bool {
    Token::parse(value)
        .is_some_and(|t| sign_sid(secret, &t.kid, &t.backend, t.expiry, &t.sid, upstream) == value)
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_parse_verify_roundtrip() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let t = sign(secret, "k1", "b2", 1_700_000_000, "app");
        let parsed = Token::parse(&t).unwrap();
        assert_eq!((parsed.kid.as_str(), parsed.backend.as_str()), ("k1", "b2"));
        assert_eq!(parsed.expiry, 1_700_000_000);
        assert_eq!(
            parsed.mac.len(),
            43,
            "32-byte MAC in base64url without padding"
        );
        assert_eq!(parsed.encode(), t);
        assert!(verify(secret, &t, "app"));
        assert!(!verify(secret, &t, "other"));
        assert!(!verify(secret, &t.replace(".b2.", ".b1."), "app"));
    }

    #[test]
    fn known_answer() {
        // RFC 4231 test case 2 key and data, to pin the HMAC itself.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
