//! A plugin's settings: [`Params`], read key by key with every error collected (with its key
//! path, e.g. `upstreams.app.affinity[1].claim: is required`) so `berth -t` reports them all,
//! the way it checks the rest of `berth.yaml`.
//!
//! The document format (YAML today) is not part of this API: values are read with serde
//! ([`serde::de::DeserializeOwned`]), so a plugin never sees the YAML library.
//!
//! [`Obj`] and the other hidden items are the gateway's own config reader; they are not part
//! of the plugin surface and may change in any release.
use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};
use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

/// One configuration error: where (`upstreams.app.backends[2].addr`) and what.
///
/// ```
/// use berth_plugins::ConfError;
/// let e = ConfError { path: "upstreams.app.affinity[0].claim".into(), message: "is required".into() };
/// assert_eq!(e.to_string(), "upstreams.app.affinity[0].claim: is required");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfError {
    /// The key path.
    pub path: String,
    /// What is wrong there.
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
#[doc(hidden)]
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
    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// None at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Join a key path and a field name.
#[doc(hidden)]
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// A YAML mapping being read field by field. Every field read is remembered; [`Obj::finish`]
/// reports the keys nobody asked for as unknown.
#[doc(hidden)]
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
#[doc(hidden)]
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

/// A plugin factory's failure: its settings are wrong. Only [`Params`] makes one, when it
/// records the error (so a rejection always comes with a message for the operator).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected(());

/// The settings of one plugin (its block in `affinity:`, `type:` excluded), read by its
/// factory. Every read marks the key as known; keys nobody read are reported as unknown
/// once the factory returns. Reads return `Err(Rejected)` after recording the error, so a
/// factory can read every key first (all errors reported at once) and use `?` after:
///
/// ```
/// use berth_plugins::{Params, Rejected, Registry, AffinityPlugin};
/// use berth_plugins::header::HeaderPlugin;
/// use std::time::Duration;
/// let mut registry = Registry::empty();
/// registry.register("demo", |p: &mut Params<'_>| {
///     let name = p.req::<String>("name");            // required
///     let max_len = p.opt::<usize>("max_len");        // optional
///     let _ttl = p.duration("ttl");                   // "30s", "5m"
///     let (name, max_len) = (name?, max_len?.unwrap_or(64));
///     if max_len == 0 {
///         return Err(p.invalid("max_len", "must be at least 1"));
///     }
///     let plugin = HeaderPlugin::new(&name, max_len)
///         .ok_or_else(|| p.invalid("name", format!("{name:?} is not a header name")))?;
///     Ok(Box::new(plugin) as Box<dyn AffinityPlugin>)
/// });
/// assert!(registry.build_str("type: demo\nname: X-A\nttl: 30s", "app").is_ok());
/// let errors = registry.build_str("type: demo\nmax_len: zero\nextra: 1", "app").unwrap_err();
/// let errors: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
/// assert_eq!(errors.len(), 3, "{errors:?}"); // name required, max_len not a number, extra unknown
/// assert_eq!(errors[0], "plugin.name: is required");
/// ```
pub struct Params<'p> {
    obj: Obj<'p, 'p>,
    upstream: &'p str,
}

impl std::fmt::Debug for Params<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Params")
            .field("path", &self.obj.path())
            .field("upstream", &self.upstream)
            .finish()
    }
}

impl<'p> Params<'p> {
    /// Settings read from `obj` for a plugin of `upstream` (the gateway's config loader).
    #[doc(hidden)]
    pub fn new(obj: Obj<'p, 'p>, upstream: &'p str) -> Self {
        Params { obj, upstream }
    }

    /// Report unknown keys (after the factory returned).
    #[doc(hidden)]
    pub fn finish(self) {
        self.obj.finish()
    }

    /// Errors recorded so far (all plugins' of this document).
    #[doc(hidden)]
    pub fn error_count(&mut self) -> usize {
        self.obj.errors().len()
    }

    /// The gateway's reader, for the built-in plugins.
    pub(crate) fn obj(&mut self) -> &mut Obj<'p, 'p> {
        &mut self.obj
    }

    /// The upstream this plugin serves (e.g. to bind tokens to it).
    pub fn upstream(&self) -> &str {
        self.upstream
    }

    /// The key path of this plugin's block (`upstreams.app.affinity[1]`).
    pub fn path(&self) -> &str {
        self.obj.path()
    }

    /// A required setting; its absence or a wrong type is an error.
    pub fn req<T: DeserializeOwned>(&mut self, key: &'static str) -> Result<T, Rejected> {
        let before = self.obj.errors().len();
        match self.obj.req(key) {
            Some(v) => Ok(v),
            None => Err(self.rejected_since(before)),
        }
    }

    /// An optional setting: `Ok(None)` when absent (or `null`), an error when of the wrong
    /// type.
    pub fn opt<T: DeserializeOwned>(&mut self, key: &'static str) -> Result<Option<T>, Rejected> {
        let before = self.obj.errors().len();
        match self.obj.opt(key) {
            Some(v) => Ok(Some(v)),
            None if self.obj.errors().len() > before => Err(Rejected(())),
            None => Ok(None),
        }
    }

    /// An optional duration written like `30s`, `5m`, `1h 30m`, `250ms`.
    pub fn duration(&mut self, key: &'static str) -> Result<Option<Duration>, Rejected> {
        let before = self.obj.errors().len();
        match self.obj.duration(key) {
            Some(v) => Ok(Some(v)),
            None if self.obj.errors().len() > before => Err(Rejected(())),
            None => Ok(None),
        }
    }

    /// An optional bool with its default.
    pub fn flag(&mut self, key: &'static str, default: bool) -> Result<bool, Rejected> {
        Ok(self.opt(key)?.unwrap_or(default))
    }

    /// Record that setting `key` is wrong (`message` says why, for the operator) and get the
    /// [`Rejected`] to return.
    pub fn invalid(&mut self, key: &str, message: impl Into<String>) -> Rejected {
        self.obj.error(key, message);
        Rejected(())
    }

    /// A rejection; records a generic error when none was recorded since `before`.
    pub(crate) fn rejected_since(&mut self, before: usize) -> Rejected {
        if self.obj.errors().len() == before {
            let path = self.obj.path().to_string();
            self.obj.errors().push(path, "invalid settings");
        }
        Rejected(())
    }
}
