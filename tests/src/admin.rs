//! The admin API as the tests see it: rows of `GET /admin/backends` ([`BackendInfo`]), a pinned
//! session ([`SessionInfo`]), and the bearer token the harness gives the gateway.
use serde_json::Value;

/// The admin token tests give the gateway ([`crate::Gateway::start_with_admin`]).
pub const TOKEN: &str = "test-token";
/// The env var the gateway reads the token from (Berth's default `admin.token_env`).
pub const TOKEN_ENV: &str = "BERTH_ADMIN_TOKEN";

/// One backend as `GET /admin/backends` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendInfo {
    pub upstream: String,
    pub id: String,
    pub addr: String,
    pub weight: u64,
    /// `up` or `down`.
    pub health: String,
    /// `active`, `draining` or `drained`.
    pub state: String,
    /// Sessions pinned to it.
    pub sessions: u64,
}

fn field<'a>(v: &'a Value, key: &str) -> Result<&'a Value, String> {
    v.get(key).ok_or_else(|| format!("no {key:?} in {v}"))
}

fn string(v: &Value, key: &str) -> Result<String, String> {
    field(v, key)?
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{key:?} is not a string in {v}"))
}

fn number(v: &Value, key: &str) -> Result<u64, String> {
    field(v, key)?
        .as_u64()
        .ok_or_else(|| format!("{key:?} is not a non-negative integer in {v}"))
}

impl BackendInfo {
    /// Read one backend object (every field of the contract is required).
    pub fn from_json(v: &Value) -> Result<BackendInfo, String> {
        let info = BackendInfo {
            upstream: string(v, "upstream")?,
            id: string(v, "id")?,
            addr: string(v, "addr")?,
            weight: number(v, "weight")?,
            health: string(v, "health")?,
            state: string(v, "state")?,
            sessions: number(v, "sessions")?,
        };
        if !["up", "down"].contains(&info.health.as_str()) {
            return Err(format!("health must be up|down: {v}"));
        }
        if !["active", "draining", "drained"].contains(&info.state.as_str()) {
            return Err(format!("state must be active|draining|drained: {v}"));
        }
        Ok(info)
    }

    /// Read `{"backends":[…]}`.
    pub fn list_from_json(v: &Value) -> Result<Vec<BackendInfo>, String> {
        field(v, "backends")?
            .as_array()
            .ok_or_else(|| format!("\"backends\" is not an array in {v}"))?
            .iter()
            .map(BackendInfo::from_json)
            .collect()
    }
}

/// A pinned session as `GET /admin/sessions/{value}` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub upstream: String,
    pub backend: String,
    pub backup: Option<String>,
    pub age_ms: u64,
    pub idle_ms: u64,
}

impl SessionInfo {
    pub fn from_json(v: &Value) -> Result<SessionInfo, String> {
        let backup = match field(v, "backup")? {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => return Err(format!("\"backup\" is neither a string nor null: {other}")),
        };
        Ok(SessionInfo {
            upstream: string(v, "upstream")?,
            backend: string(v, "backend")?,
            backup,
            age_ms: number(v, "age_ms")?,
            idle_ms: number(v, "idle_ms")?,
        })
    }
}

/// Percent-encode everything but unreserved characters (RFC 3986), for a path segment.
pub fn pct_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_backend_rows() {
        let v: Value = serde_json::from_str(
            r#"{"backends":[{"upstream":"app","id":"b1","addr":"127.0.0.1:1","weight":1,
                "health":"up","state":"draining","sessions":7}]}"#,
        )
        .unwrap();
        let list = BackendInfo::list_from_json(&v).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(
            (
                list[0].id.as_str(),
                list[0].state.as_str(),
                list[0].sessions
            ),
            ("b1", "draining", 7)
        );
        let bad: Value = serde_json::from_str(r#"{"backends":[{"id":"b1"}]}"#).unwrap();
        assert!(BackendInfo::list_from_json(&bad).is_err());
    }

    #[test]
    fn reads_sessions_and_encodes() {
        let v: Value = serde_json::from_str(
            r#"{"upstream":"app","backend":"b2","backup":null,"age_ms":5,"idle_ms":1}"#,
        )
        .unwrap();
        let s = SessionInfo::from_json(&v).unwrap();
        assert_eq!((s.backend.as_str(), s.backup), ("b2", None));
        assert_eq!(pct_encode("a b/c~d"), "a%20b%2Fc~d");
    }
}
