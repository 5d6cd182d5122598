//! The `query` and `path` plugins: a session id carried in the URL, so every collaborator of
//! one document or room meets on one backend, and clients that drop cookies keep their
//! session.
//!
//! * `query` — the value of query parameter `name` (`/chat?room=blue` → `blue`),
//!   percent-decoded; settings `name` (required), `max_len` (default 256 bytes).
//! * `path` — one segment of the path, by position (`segment: 2`: `/doc/42/edit` → `42`) or
//!   by a pattern with one `{placeholder}` (`pattern: /doc/{id}/...`); in a pattern `*` matches
//!   any one segment and a final `...` any rest (also none); without `...` the path must have
//!   exactly the pattern's segments (a trailing `/` aside). Percent-decoded. Settings:
//!   `segment` or `pattern` (one of them), `max_len` (default 256 bytes).
//!
//! Both key the overlay like the `header` plugin (`SessionKey::new(b"query:<name>", value)`,
//! `b"path:<pattern>"`): the first request places the session, the next ones follow its pin.
//! An absent or empty value is [`KeyOutcome::Skip`], one over `max_len`
//! [`Invalid::Malformed`]. Nothing is allocated per request unless the value is
//! percent-encoded. They are written against the public plugin API only (a worked example).
use crate::{Affinity, AffinityPlugin, Invalid, KeyOutcome, Params, Rejected, RequestView};
use crate::{Query, SessionKey};
use std::borrow::Cow;

/// Default `max_len`, in bytes.
pub const DEFAULT_MAX_LEN: usize = 256;

/// The `query` plugin.
#[derive(Debug, Clone)]
pub struct QueryPlugin {
    param: String,
    namespace: Vec<u8>,
    max_len: usize,
}

impl QueryPlugin {
    /// Keyed by query parameter `param` (compared as sent), values up to `max_len` bytes.
    pub fn new(param: &str, max_len: usize) -> Self {
        QueryPlugin {
            param: param.to_string(),
            namespace: [b"query:", param.as_bytes()].concat(),
            max_len,
        }
    }
}

/// The key of `value` in `namespace`, or what is wrong with it.
fn keyed<'r>(namespace: &[u8], value: Option<Cow<'_, [u8]>>, max: usize) -> KeyOutcome<'r> {
    match value {
        None => KeyOutcome::Skip,
        Some(v) if v.is_empty() => KeyOutcome::Skip,
        Some(v) if v.len() > max => KeyOutcome::Invalid(Invalid::Malformed),
        Some(v) => KeyOutcome::Key(Affinity::Session(SessionKey::new(namespace, &v))),
    }
}

impl AffinityPlugin for QueryPlugin {
    fn name(&self) -> &str {
        "query"
    }

    fn sees_responses(&self) -> bool {
        false
    }

    fn session_key(&self, value: &[u8]) -> Option<SessionKey> {
        (!value.is_empty()).then(|| SessionKey::new(&self.namespace, value))
    }

    fn key<'r>(&self, req: &'r dyn RequestView) -> KeyOutcome<'r> {
        let value = req.query().and_then(|q| Query::new(q).get(&self.param));
        keyed(&self.namespace, value, self.max_len)
    }
}

/// How the `path` plugin finds its segment.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pick {
    /// The n-th segment (0-based here, 1-based in the settings).
    Position(usize),
    /// Pattern segments (one of them the capture), and whether a rest may follow.
    Pattern { parts: Vec<Part>, rest: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Any,
    Capture,
}

/// The `path` plugin.
#[derive(Debug, Clone)]
pub struct PathPlugin {
    pick: Pick,
    namespace: Vec<u8>,
    max_len: usize,
}

impl PathPlugin {
    /// Keyed by the `n`-th path segment (1-based: `/a/b` has `a` at 1).
    pub fn segment(n: usize, max_len: usize) -> Option<Self> {
        (n >= 1).then(|| PathPlugin {
            pick: Pick::Position(n - 1),
            namespace: format!("path:segment:{n}").into_bytes(),
            max_len,
        })
    }

    /// Keyed by the `{placeholder}` of `pattern` (see the module docs); `Err` says what is
    /// wrong with the pattern.
    pub fn pattern(pattern: &str, max_len: usize) -> Result<Self, String> {
        let Some(body) = pattern.strip_prefix('/') else {
            return Err("must start with /".into());
        };
        let mut segs: Vec<&str> = body.split('/').collect();
        let rest = segs.last() == Some(&"...");
        if rest {
            segs.pop();
        }
        let mut parts = Vec::with_capacity(segs.len());
        let mut capture = None;
        for (i, s) in segs.iter().enumerate() {
            let part = match *s {
                "*" => Part::Any,
                "..." => return Err("... may only end the pattern".into()),
                "" => return Err("has an empty segment".into()),
                s if s.starts_with('{') && s.ends_with('}') && s.len() > 2 => {
                    if capture.replace(i).is_some() {
                        return Err("has more than one {placeholder}".into());
                    }
                    Part::Capture
                }
                s if s.contains(['{', '}']) => {
                    return Err(format!("segment {s:?}: a placeholder is a whole segment"))
                }
                s => Part::Literal(s.to_string()),
            };
            parts.push(part);
        }
        if capture.is_none() {
            return Err("has no {placeholder} (e.g. /doc/{id}/...)".into());
        }
        Ok(PathPlugin {
            pick: Pick::Pattern { parts, rest },
            namespace: format!("path:{pattern}").into_bytes(),
            max_len,
        })
    }

    /// The raw segment this plugin keys by, when `path` has it.
    fn find<'p>(&self, path: &'p str) -> Option<&'p str> {
        let body = path.strip_prefix('/').unwrap_or(path);
        let mut segs = body.split('/');
        match &self.pick {
            Pick::Position(n) => segs.nth(*n),
            Pick::Pattern { parts, rest } => {
                let mut found = None;
                for part in parts {
                    let seg = segs.next()?;
                    match part {
                        Part::Literal(l) if l != seg => return None,
                        Part::Capture => found = Some(seg),
                        _ => {}
                    }
                }
                // Without `...`: nothing after the pattern, or a trailing `/` alone.
                if !rest {
                    match (segs.next(), segs.next()) {
                        (None, _) | (Some(""), None) => {}
                        _ => return None,
                    }
                }
                found
            }
        }
    }
}

impl AffinityPlugin for PathPlugin {
    fn name(&self) -> &str {
        "path"
    }

    fn sees_responses(&self) -> bool {
        false
    }

    fn session_key(&self, value: &[u8]) -> Option<SessionKey> {
        (!value.is_empty()).then(|| SessionKey::new(&self.namespace, value))
    }

    fn key<'r>(&self, req: &'r dyn RequestView) -> KeyOutcome<'r> {
        let value = self
            .find(req.path())
            .map(|s| Cow::from(percent_encoding::percent_decode_str(s)));
        keyed(&self.namespace, value, self.max_len)
    }
}

/// `max_len`, checked.
fn max_len(p: &mut Params<'_>) -> Result<usize, Rejected> {
    match p.opt::<i64>("max_len")? {
        None => Ok(DEFAULT_MAX_LEN),
        Some(n) if n >= 1 => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
        Some(n) => Err(p.invalid("max_len", format!("must be at least 1 (bytes), found {n}"))),
    }
}

/// Build a `query` plugin from its settings (`name`, `max_len`).
pub fn query_factory(p: &mut Params<'_>) -> Result<Box<dyn AffinityPlugin>, Rejected> {
    let name = p.req::<String>("name");
    let max_len = max_len(p);
    let (name, max_len) = (name?, max_len?);
    if name.is_empty() || name.contains(['&', '=', '#', ' ']) {
        return Err(p.invalid("name", format!("{name:?} is not a query parameter name")));
    }
    Ok(Box::new(QueryPlugin::new(&name, max_len)))
}

/// Build a `path` plugin from its settings (`segment` or `pattern`, `max_len`).
pub fn path_factory(p: &mut Params<'_>) -> Result<Box<dyn AffinityPlugin>, Rejected> {
    let segment = p.opt::<i64>("segment");
    let pattern = p.opt::<String>("pattern");
    let max_len = max_len(p);
    let (segment, pattern, max_len) = (segment?, pattern?, max_len?);
    let plugin = match (segment, pattern) {
        (Some(n), None) => usize::try_from(n)
            .ok()
            .and_then(|n| PathPlugin::segment(n, max_len))
            .ok_or_else(|| p.invalid("segment", format!("must be at least 1, found {n}")))?,
        (None, Some(pattern)) => PathPlugin::pattern(&pattern, max_len)
            .map_err(|why| p.invalid("pattern", format!("{pattern:?} {why}")))?,
        (Some(_), Some(_)) => return Err(p.invalid("segment", "give segment or pattern, not both")),
        (None, None) => {
            return Err(p.invalid("pattern", "is required (or segment: the position, from 1)"))
        }
    };
    Ok(Box::new(plugin))
}

#[cfg(test)]
#[path = "url_tests.rs"]
mod tests;
