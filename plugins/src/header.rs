//! The `header` plugin: the value of a named request header is the session key.
//!
//! An absent or empty header is [`KeyOutcome::Skip`]; a value longer than `max_len` bytes is
//! [`Invalid::Malformed`] (counted by the gateway); otherwise the key is
//! `SessionKey::new(b"header:<lower-cased name>", value)`. Only the first field of the header
//! counts. No allocation per request.
//!
//! Settings: `name` (required, a header name), `max_len` (default 256, at least 1).
use crate::params::Obj;
use crate::{is_token, Affinity, AffinityPlugin, Invalid, KeyOutcome, PluginContext, RequestView};
use berth_routing::SessionKey;

/// Default `max_len`, in bytes.
pub const DEFAULT_MAX_LEN: usize = 256;

/// The `header` plugin.
#[derive(Debug, Clone)]
pub struct HeaderPlugin {
    /// Lower-cased header name.
    name: String,
    /// `header:<name>`, precomputed.
    namespace: Vec<u8>,
    max_len: usize,
}

impl HeaderPlugin {
    /// A plugin keyed by header `name` (must be a valid header name), values up to `max_len`
    /// bytes; `None` when `name` is not a header name.
    pub fn new(name: &str, max_len: usize) -> Option<Self> {
        if !is_token(name.as_bytes()) {
            return None;
        }
        let name = name.to_ascii_lowercase();
        let namespace = [b"header:", name.as_bytes()].concat();
        Some(HeaderPlugin {
            name,
            namespace,
            max_len,
        })
    }
}

impl AffinityPlugin for HeaderPlugin {
    fn name(&self) -> &str {
        "header"
    }

    fn sees_responses(&self) -> bool {
        false
    }

    fn session_key(&self, value: &[u8]) -> Option<SessionKey> {
        (!value.is_empty()).then(|| SessionKey::new(&self.namespace, value))
    }

    fn key<'r>(&self, req: &'r dyn RequestView) -> KeyOutcome<'r> {
        match req.header(&self.name) {
            None | Some([]) => KeyOutcome::Skip,
            Some(v) if v.len() > self.max_len => KeyOutcome::Invalid(Invalid::Malformed),
            Some(v) => KeyOutcome::Key(Affinity::Session(SessionKey::new(&self.namespace, v))),
        }
    }
}

/// Build a `header` plugin from its settings.
pub fn factory(o: &mut Obj<'_, '_>, _ctx: &PluginContext<'_>) -> Option<Box<dyn AffinityPlugin>> {
    let name: Option<String> = o.req("name");
    let max_len = match o.opt::<i64>("max_len") {
        None => Some(DEFAULT_MAX_LEN),
        Some(n) => match usize::try_from(n) {
            Ok(n) if n >= 1 => Some(n),
            _ => {
                o.error("max_len", format!("must be at least 1 (bytes), found {n}"));
                None
            }
        },
    };
    let name = name?;
    let Some(plugin) = HeaderPlugin::new(&name, max_len?) else {
        let msg = format!(
            "{name:?} is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)"
        );
        o.error("name", msg);
        return None;
    };
    Some(Box::new(plugin))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeRequest;
    use crate::Registry;

    fn build(yaml: &str) -> Result<Box<dyn AffinityPlugin>, Vec<String>> {
        let v: serde_yaml::Value = serde_yaml::from_str(yaml).expect("test yaml");
        Registry::builtin()
            .build_one(&v, "up.affinity[1]", "app")
            .map_err(|es| es.iter().map(ToString::to_string).collect())
    }

    fn plugin(yaml: &str) -> Box<dyn AffinityPlugin> {
        build(yaml).expect("valid settings")
    }

    #[test]
    fn keys_by_value_case_insensitive_name() {
        let p = plugin("type: header\nname: X-Session-Id");
        assert_eq!(p.name(), "header");
        assert!(!p.issues_sessions());
        let req = FakeRequest::new().header("x-session-id", "abc");
        let want = SessionKey::new(b"header:x-session-id", b"abc");
        assert_eq!(p.key(&req), KeyOutcome::Key(Affinity::Session(want)));
        // Another value, another session; same value under another plugin, another session.
        let other = FakeRequest::new().header("X-SESSION-ID", "abd");
        assert_ne!(p.key(&other), p.key(&req));
        assert_ne!(want, SessionKey::new(b"header:x-other", b"abc"));
        // Only the first field counts.
        let two = FakeRequest::new()
            .header("x-session-id", "abc")
            .header("x-session-id", "zzz");
        assert_eq!(p.key(&two), p.key(&req));
    }

    #[test]
    fn absent_empty_and_too_long() {
        let p = plugin("type: header\nname: X-Session-Id\nmax_len: 4");
        assert_eq!(p.key(&FakeRequest::new()), KeyOutcome::Skip);
        let empty = FakeRequest::new().header("x-session-id", "");
        assert_eq!(p.key(&empty), KeyOutcome::Skip);
        let four = FakeRequest::new().header("x-session-id", "abcd");
        assert!(matches!(p.key(&four), KeyOutcome::Key(_)));
        let five = FakeRequest::new().header("x-session-id", "abcde");
        assert_eq!(p.key(&five), KeyOutcome::Invalid(Invalid::Malformed));
        let binary = FakeRequest::new().header("x-session-id", [0xffu8, 0, 1]);
        assert!(matches!(p.key(&binary), KeyOutcome::Key(_)));
    }

    #[test]
    fn default_max_len() {
        let p = plugin("type: header\nname: X-Session-Id");
        let ok = FakeRequest::new().header("x-session-id", "a".repeat(256));
        assert!(matches!(p.key(&ok), KeyOutcome::Key(_)));
        let long = FakeRequest::new().header("x-session-id", "a".repeat(257));
        assert_eq!(p.key(&long), KeyOutcome::Invalid(Invalid::Malformed));
    }

    #[test]
    fn config_errors() {
        let e = build("type: header").unwrap_err();
        assert_eq!(e, ["up.affinity[1].name: is required"]);
        let e = build("type: header\nname: 'X Session'").unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("up.affinity[1].name: \"X Session\" is not a valid header name"));
        let e = build("type: header\nname: X-S\nmax_len: 0").unwrap_err();
        assert_eq!(
            e,
            ["up.affinity[1].max_len: must be at least 1 (bytes), found 0"]
        );
        let e = build("type: header\nname: X-S\nmax_len: -3").unwrap_err();
        assert_eq!(
            e,
            ["up.affinity[1].max_len: must be at least 1 (bytes), found -3"]
        );
        let e = build("type: header\nname: X-S\nmax_len: lots").unwrap_err();
        assert!(e[0].starts_with("up.affinity[1].max_len: "), "{e:?}");
        let e = build("type: header\nname: X-S\nmaxlen: 3").unwrap_err();
        assert!(
            e[0].starts_with("up.affinity[1].maxlen: unknown key"),
            "{e:?}"
        );
    }
}
