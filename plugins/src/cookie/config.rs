//! Settings of the `cookie` plugin (keys and defaults as documented in `conf/berth.yaml`).
use super::{Attributes, CookiePlugin, SameSite};
use crate::params::{show, Errors, Obj};
use crate::token::{self, Keys, MIN_SECRET_LEN};
use crate::{is_token, AffinityPlugin, PluginContext};
use serde_yaml::Value;

/// Default cookie name in insert mode.
pub const DEFAULT_NAME: &str = "berth";
/// Default lifetime of an issued cookie: 24h.
pub const DEFAULT_TTL_SECS: u64 = 24 * 3600;
/// Settings that only make sense when Berth issues the cookie.
const INSERT_ONLY: [&str; 7] = [
    "keys",
    "ttl",
    "http_only",
    "secure",
    "same_site",
    "path",
    "domain",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Insert,
    Learn,
}

/// Build a `cookie` plugin from its settings:
///
/// | key | default | |
/// |---|---|---|
/// | `mode` | `insert` | `insert` or `learn` |
/// | `name` | `berth` | cookie name (RFC 6265 token); required in learn mode |
/// | `keys` | — | insert: list of `{id, secret_env \| secret}`, first signs; required |
/// | `ttl` | `24h` | insert: `Max-Age` and token lifetime, at least 1s |
/// | `http_only` | `true` | insert |
/// | `secure` | `false` | insert (cookies issued to a client over TLS are always `Secure`) |
/// | `same_site` | `lax` | insert: `lax`, `strict` or `none` (`none` requires `secure: true`) |
/// | `path` | `/` | insert |
/// | `domain` | none | insert |
///
/// Secrets are raw bytes (an env var's value or the inline string), at least 32 of them.
pub fn factory(o: &mut Obj<'_, '_>, ctx: &PluginContext<'_>) -> Option<Box<dyn AffinityPlugin>> {
    let Some(mode) = read_mode(o) else {
        // The mode is wrong: do not also report its settings as unknown.
        for key in INSERT_ONLY {
            o.raw(key);
        }
        o.raw("name");
        return None;
    };
    let name = read_name(o, mode);
    match mode {
        Mode::Learn => {
            for key in INSERT_ONLY {
                if o.raw(key).is_some() {
                    o.error(
                        key,
                        "only valid in insert mode (this cookie plugin is in learn mode)",
                    );
                }
            }
            Some(Box::new(CookiePlugin::learn(name?)))
        }
        Mode::Insert => {
            let keys = read_keys(o);
            let attrs = read_attrs(o);
            let plugin = CookiePlugin::insert(name?, keys?, ctx.upstream, &attrs?);
            Some(Box::new(plugin))
        }
    }
}

fn read_mode(o: &mut Obj<'_, '_>) -> Option<Mode> {
    match o.raw("mode") {
        None => Some(Mode::Insert),
        Some(Value::String(s)) if s == "insert" => Some(Mode::Insert),
        Some(Value::String(s)) if s == "learn" => Some(Mode::Learn),
        Some(other) => {
            o.error(
                "mode",
                format!("expected insert or learn, found {}", show(other)),
            );
            None
        }
    }
}

fn read_name(o: &mut Obj<'_, '_>, mode: Mode) -> Option<String> {
    let present = o.raw("name").is_some();
    let name = match o.opt::<String>("name") {
        Some(n) => n,
        None if present => return None, // wrong type, already reported
        None if mode == Mode::Learn => {
            let msg = "is required in learn mode: the name of the application's session cookie \
                       (e.g. JSESSIONID)";
            o.error("name", msg);
            return None;
        }
        None => DEFAULT_NAME.to_string(),
    };
    if !is_token(name.as_bytes()) {
        let msg = format!(
            "{name:?} is not a valid cookie name (letters, digits and !#$%&'*+-.^_`|~ only)"
        );
        o.error("name", msg);
        return None;
    }
    Some(name)
}

fn read_keys(o: &mut Obj<'_, '_>) -> Option<Keys> {
    if o.raw("keys").is_none() {
        o.error(
            "keys",
            "is required in insert mode (list of {id, secret_env} signing keys)",
        );
        return None;
    }
    let before = o.errors().len();
    let mut pairs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    o.list("keys", |item, path, errors| {
        if let Some(pair) = read_key(item, path, errors, &mut ids) {
            pairs.push(pair);
        }
    });
    if o.errors().len() > before {
        return None;
    }
    match Keys::new(pairs) {
        Ok(keys) => Some(keys),
        Err(e) => {
            o.error("keys", e.to_string());
            None
        }
    }
}

/// One `{id, secret_env | secret}`; `ids` are the ids seen so far (duplicates are errors).
fn read_key(
    item: &Value,
    path: String,
    errors: &mut Errors,
    ids: &mut Vec<String>,
) -> Option<(String, Vec<u8>)> {
    let mut k = Obj::new(item, path, errors)?;
    let id = k.req::<String>("id").and_then(|id| {
        if !token::valid_id(id.as_bytes()) {
            k.error(
                "id",
                format!("{id:?} must be 1-64 letters, digits, '-' or '_'"),
            );
            None
        } else if ids.contains(&id) {
            k.error("id", format!("{id:?} is used by another key"));
            None
        } else {
            ids.push(id.clone());
            Some(id)
        }
    });
    let has_env = k.raw("secret_env").is_some();
    let has_inline = k.raw("secret").is_some();
    let env = k.opt::<String>("secret_env");
    let inline = k.opt::<String>("secret");
    let secret = match (has_env, has_inline) {
        (true, true) => {
            k.error("secret", "set either secret_env or secret, not both");
            None
        }
        (false, false) => {
            let p = k.path().to_string();
            let msg = "set secret_env (the name of an environment variable holding the secret) \
                       or secret";
            k.errors().push(p, msg);
            None
        }
        (true, false) => env.and_then(|var| secret_from_env(&mut k, &var)),
        (false, true) => inline.and_then(|s| long_enough(&mut k, "secret", s.into_bytes(), "is")),
    };
    k.finish();
    Some((id?, secret?))
}

fn secret_from_env(k: &mut Obj<'_, '_>, var: &str) -> Option<Vec<u8>> {
    if var.is_empty() || var.contains(['=', '\0']) {
        k.error(
            "secret_env",
            format!("{var:?} is not a valid environment variable name"),
        );
        return None;
    }
    let Some(value) = std::env::var_os(var) else {
        k.error(
            "secret_env",
            format!("environment variable {var} is not set"),
        );
        return None;
    };
    if value.is_empty() {
        k.error("secret_env", format!("environment variable {var} is empty"));
        return None;
    }
    let what = format!("(environment variable {var}) holds");
    long_enough(k, "secret_env", value.into_encoded_bytes(), &what)
}

/// The secret when it has at least [`MIN_SECRET_LEN`] bytes; the error never shows it.
fn long_enough(k: &mut Obj<'_, '_>, key: &str, secret: Vec<u8>, what: &str) -> Option<Vec<u8>> {
    if secret.len() >= MIN_SECRET_LEN {
        return Some(secret);
    }
    let msg = format!(
        "the secret {what} {} bytes; at least {MIN_SECRET_LEN} are required \
         (e.g. `openssl rand -base64 48`)",
        secret.len()
    );
    k.error(key, msg);
    None
}

fn read_attrs(o: &mut Obj<'_, '_>) -> Option<Attributes> {
    let before = o.errors().len();
    let ttl_secs = match o.duration("ttl") {
        None => DEFAULT_TTL_SECS,
        Some(d) if d.as_secs() == 0 => {
            o.error("ttl", "must be at least 1s");
            0
        }
        Some(d) => d.as_secs(),
    };
    let http_only = o.flag("http_only", true);
    let secure = o.flag("secure", false);
    let same_site = read_same_site(o, secure);
    let path = o.opt::<String>("path").unwrap_or_else(|| "/".to_string());
    if !path.starts_with('/') || path.bytes().any(|c| c == b';' || c.is_ascii_control()) {
        let msg = format!("{path:?} must start with '/' and contain no ';' or control characters");
        o.error("path", msg);
    }
    let domain = o.opt::<String>("domain");
    if let Some(d) = &domain {
        let host = d.strip_prefix('.').unwrap_or(d);
        let ok = !host.is_empty()
            && host
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.');
        if !ok {
            o.error("domain", format!("{d:?} is not a domain name"));
        }
    }
    (o.errors().len() == before).then_some(Attributes {
        ttl_secs,
        http_only,
        secure,
        same_site: same_site?,
        path,
        domain,
    })
}

fn read_same_site(o: &mut Obj<'_, '_>, secure: bool) -> Option<SameSite> {
    let same_site = match o.raw("same_site") {
        None => SameSite::Lax,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("lax") => SameSite::Lax,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("strict") => SameSite::Strict,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("none") => SameSite::None,
        Some(other) => {
            let msg = format!("expected lax, strict or none, found {}", show(other));
            o.error("same_site", msg);
            return None;
        }
    };
    if same_site == SameSite::None && !secure {
        let msg =
            "none requires secure: true (browsers reject SameSite=None cookies without Secure)";
        o.error("same_site", msg);
        return None;
    }
    Some(same_site)
}
