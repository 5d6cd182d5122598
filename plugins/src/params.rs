//! A small YAML reader that collects **every** error with its key path, instead of stopping at
//! the first one as serde does. Used by the gateway's config loader and by plugin factories, so
//! a plugin's own settings are checked the same way as the rest of `berth.yaml`.
//!
//! ```
//! use berth_plugins::params::{Errors, Obj};
//! let doc: serde_yaml::Value = serde_yaml::from_str("name: x\nweight: many\nextra: 1").unwrap();
//! let mut errors = Errors::default();
//! let mut obj = Obj::new(&doc, "backends[0]".into(), &mut errors).unwrap();
//! let name: Option<String> = obj.req("name");
//! let weight: u32 = obj.opt("weight").unwrap_or(1);
//! obj.finish();
//! assert_eq!(name.as_deref(), Some("x"));
//! assert_eq!(weight, 1);
//! assert_eq!(errors.len(), 2); // backends[0].weight (wrong type), backends[0].extra (unknown key)
//! ```
use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};
use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

/// One configuration error: where (`upstreams.app.backends[2].addr`) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// The errors collected while reading one document.
#[derive(Debug, Default)]
pub struct Errors(pub Vec<ConfError>);

impl Errors {
    /// Record an error at `path`.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfError {
            path: path.into(),
            message: message.into(),
        });
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Join a key path and a field name.
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// A YAML mapping being read field by field. Every field read is remembered; [`Obj::finish`]
/// reports the keys nobody asked for as unknown.
pub struct Obj<'a, 'e> {
    map: &'a Mapping,
    path: String,
    seen: Vec<&'a str>,
    errors: &'e mut Errors,
}

impl<'a, 'e> Obj<'a, 'e> {
    /// Start reading `value` at `path`; records an error and returns `None` when it is not a
    /// mapping (an empty/null value reads as an empty mapping).
    pub fn new(value: &'a Value, path: String, errors: &'e mut Errors) -> Option<Self> {
        static EMPTY: OnceLock<Mapping> = OnceLock::new();
        let map = match value {
            Value::Mapping(m) => m,
            Value::Null => EMPTY.get_or_init(Mapping::new),
            other => {
                errors.push(path, format!("expected a mapping, found {}", kind(other)));
                return None;
            }
        };
        Some(Obj {
            map,
            path,
            seen: Vec::new(),
            errors,
        })
    }

    /// The path of this mapping.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The path of one of its fields.
    pub fn path_of(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The error sink, to report semantic errors found by the caller.
    pub fn errors(&mut self) -> &mut Errors {
        self.errors
    }

    /// Record an error on one field of this mapping.
    pub fn error(&mut self, key: &str, message: impl Into<String>) {
        let p = self.path_of(key);
        self.errors.push(p, message);
    }

    /// The raw value of a field, marking it as known.
    pub fn raw(&mut self, key: &'static str) -> Option<&'a Value> {
        self.seen.push(key);
        match self.map.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    /// An optional field, deserialized with serde. A wrong type is recorded and reads as `None`.
    pub fn opt<T: DeserializeOwned>(&mut self, key: &'static str) -> Option<T> {
        let v = self.raw(key)?;
        match serde_yaml::from_value::<T>(v.clone()) {
            Ok(t) => Some(t),
            Err(e) => {
                self.error(key, clean(&e.to_string()));
                None
            }
        }
    }

    /// A required field; its absence is an error.
    pub fn req<T: DeserializeOwned>(&mut self, key: &'static str) -> Option<T> {
        if self.map.get(key).is_none_or(Value::is_null) {
            self.seen.push(key);
            self.error(key, "is required");
            return None;
        }
        self.opt(key)
    }

    /// A duration written like `30s`, `5m`, `1h 30m`, `250ms`.
    pub fn duration(&mut self, key: &'static str) -> Option<Duration> {
        let v = self.raw(key)?;
        let text = match v {
            Value::String(s) => s.clone(),
            other => {
                let msg = format!("expected a duration like \"30s\", found {}", show(other));
                self.error(key, msg);
                return None;
            }
        };
        match humantime::parse_duration(&text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(
                    key,
                    format!("{text:?} is not a duration ({e}); write e.g. \"30s\""),
                );
                None
            }
        }
    }

    /// A bool with a default.
    pub fn flag(&mut self, key: &'static str, default: bool) -> bool {
        self.opt(key).unwrap_or(default)
    }

    /// Read an optional list, calling `each` with every element and its path.
    pub fn list(
        &mut self,
        key: &'static str,
        mut each: impl FnMut(&'a Value, String, &mut Errors),
    ) {
        let Some(v) = self.raw(key) else { return };
        let path = self.path_of(key);
        match v {
            Value::Sequence(items) => {
                for (i, item) in items.iter().enumerate() {
                    each(item, format!("{path}[{i}]"), self.errors);
                }
            }
            other => self
                .errors
                .push(path, format!("expected a list, found {}", kind(other))),
        }
    }

    /// Read an optional mapping of name → value, calling `each` in file order.
    pub fn map(
        &mut self,
        key: &'static str,
        mut each: impl FnMut(&'a str, &'a Value, String, &mut Errors),
    ) {
        let Some(v) = self.raw(key) else { return };
        let path = self.path_of(key);
        match v {
            Value::Mapping(m) => {
                for (k, item) in m {
                    match k.as_str() {
                        Some(name) => each(name, item, join(&path, name), self.errors),
                        None => self
                            .errors
                            .push(path.clone(), format!("key {} is not a string", show(k))),
                    }
                }
            }
            other => self
                .errors
                .push(path, format!("expected a mapping, found {}", kind(other))),
        }
    }

    /// Report every key of the mapping that was never read as unknown.
    pub fn finish(self) {
        for k in self.map.keys() {
            let name = k.as_str().unwrap_or("?");
            if !self.seen.contains(&name) {
                let mut known: Vec<&str> = self.seen.clone();
                known.sort_unstable();
                known.dedup();
                self.errors.push(
                    join(&self.path, name),
                    format!("unknown key (known keys here: {})", known.join(", ")),
                );
            }
        }
    }
}

/// A short description of a YAML value for error messages.
pub fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        other => kind(other).into(),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// serde_yaml appends " at line X column Y" for values it parsed itself; values deserialized
/// from a `Value` carry no position, so the message is already clean. Kept as one place to tidy.
fn clean(msg: &str) -> String {
    msg.trim().to_string()
}
