//! Plugin registry: type name → factory. Explicit, no life-before-main registration.
use crate::params::{ConfError, Errors, Obj, Params, Rejected};
use crate::AffinityPlugin;
use serde_yaml::Value;
use std::sync::Arc;

/// What a built-in factory knows besides its own settings.
#[derive(Debug, Clone, Copy)]
pub struct PluginContext<'a> {
    /// The upstream the plugin belongs to (tokens are bound to it).
    pub upstream: &'a str,
}

/// Builds a plugin from its settings ([`Params`]). A closure: it may capture state shared by
/// every plugin it builds (a key set loaded once, a client, a counter). Called once per
/// `affinity:` entry of its type, at start and on every reload (`SIGHUP`, `berth -u`), never
/// on the request path.
pub type Factory = Arc<
    dyn Fn(&mut Params<'_>) -> Result<Box<dyn AffinityPlugin>, Rejected> + Send + Sync + 'static,
>;

/// Known plugin types: what `type:` in an `affinity:` entry may name.
///
/// ```
/// use berth_plugins::{AffinityPlugin, Params, Registry};
/// use berth_plugins::header::HeaderPlugin;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// let built = Arc::new(AtomicUsize::new(0)); // state captured by the factory
/// let count = built.clone();
/// let mut registry = Registry::builtin();
/// registry.register("tenant", move |p: &mut Params<'_>| {
///     count.fetch_add(1, Ordering::Relaxed);
///     let plugin = HeaderPlugin::new("x-tenant", 64).expect("a header name");
///     Ok(Box::new(plugin) as Box<dyn AffinityPlugin>)
/// });
/// assert!(registry.names().contains(&"tenant"));
/// registry.build_str("type: tenant", "app").unwrap();
/// registry.build_str("type: tenant", "other").unwrap();
/// assert_eq!(built.load(Ordering::Relaxed), 2);
/// let e = registry.build_str("type: nope", "app").unwrap_err();
/// assert!(e[0].message.starts_with("unknown plugin \"nope\""));
/// ```
#[derive(Clone)]
pub struct Registry {
    factories: Vec<(String, Factory)>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

/// A built-in factory over the gateway's own reader.
type Builtin = fn(&mut Obj<'_, '_>, &PluginContext<'_>) -> Option<Box<dyn AffinityPlugin>>;

fn builtin(f: Builtin) -> impl Fn(&mut Params<'_>) -> Result<Box<dyn AffinityPlugin>, Rejected> {
    move |p: &mut Params<'_>| {
        let upstream = p.upstream().to_string();
        let ctx = PluginContext {
            upstream: &upstream,
        };
        let before = p.error_count();
        match f(p.obj(), &ctx) {
            Some(plugin) if p.error_count() == before => Ok(plugin),
            _ => Err(p.rejected_since(before)),
        }
    }
}

impl Registry {
    /// A registry with no plugins.
    pub fn empty() -> Self {
        Registry {
            factories: Vec::new(),
        }
    }

    /// The built-in plugins: `cookie`, `header`, `ip`, `query`, `path`, `connection`.
    pub fn builtin() -> Self {
        let mut r = Self::empty();
        r.register("cookie", builtin(crate::cookie::factory));
        r.register("header", builtin(crate::header::factory));
        r.register("ip", builtin(crate::ip::factory));
        r.register("query", crate::url::query_factory);
        r.register("path", crate::url::path_factory);
        r.register("connection", crate::connection::factory);
        r
    }

    /// Add (or replace) a plugin type: `factory` builds a plugin from its settings.
    pub fn register<F>(&mut self, name: impl Into<String>, factory: F) -> &mut Self
    where
        F: Fn(&mut Params<'_>) -> Result<Box<dyn AffinityPlugin>, Rejected> + Send + Sync + 'static,
    {
        let name = name.into();
        self.factories.retain(|(n, _)| *n != name);
        self.factories.push((name, Arc::new(factory)));
        self
    }

    /// Registered type names, in registration order.
    pub fn names(&self) -> Vec<&str> {
        self.factories.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// Build one plugin from its YAML block (`type: <name>` plus its settings), recording every
    /// error under `path`. The gateway's config loader; not part of the plugin surface.
    #[doc(hidden)]
    pub fn build(
        &self,
        value: &Value,
        path: String,
        ctx: &PluginContext<'_>,
        errors: &mut Errors,
    ) -> Option<Box<dyn AffinityPlugin>> {
        let mut obj = Obj::new(value, path, errors)?;
        let kind: String = obj.req("type")?;
        let Some((_, factory)) = self.factories.iter().find(|(n, _)| *n == kind) else {
            let known = self.names().join(", ");
            obj.error("type", format!("unknown plugin {kind:?} (known: {known})"));
            return None;
        };
        let mut params = Params::new(obj, ctx.upstream);
        let plugin = factory(&mut params);
        params.finish();
        plugin.ok()
    }

    /// Build one plugin from a YAML value, returning its errors (tests and tools).
    #[doc(hidden)]
    pub fn build_one(
        &self,
        value: &Value,
        path: &str,
        upstream: &str,
    ) -> Result<Box<dyn AffinityPlugin>, Vec<ConfError>> {
        let mut errors = Errors::default();
        let ctx = PluginContext { upstream };
        match self.build(value, path.to_string(), &ctx, &mut errors) {
            Some(p) if errors.is_empty() => Ok(p),
            _ => Err(errors.0),
        }
    }

    /// Build one plugin of `upstream` from its settings written as in `berth.yaml`
    /// (`type: <name>` and its keys), as the gateway does at start: for unit tests and tools.
    /// Errors carry the key path `plugin.<key>`.
    pub fn build_str(
        &self,
        settings: &str,
        upstream: &str,
    ) -> Result<Box<dyn AffinityPlugin>, Vec<ConfError>> {
        let value: Value = serde_yaml::from_str(settings).map_err(|e| {
            vec![ConfError {
                path: "plugin".into(),
                message: format!("not YAML: {e}"),
            }]
        })?;
        self.build_one(&value, "plugin", upstream)
    }
}
