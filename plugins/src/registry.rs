//! Plugin registry: type name → factory. Explicit, no life-before-main registration.
use crate::params::{ConfError, Errors, Obj};
use crate::AffinityPlugin;
use serde_yaml::Value;

/// What a factory knows besides its own settings.
#[derive(Debug, Clone, Copy)]
pub struct PluginContext<'a> {
    /// The upstream the plugin belongs to (tokens are bound to it).
    pub upstream: &'a str,
}

/// Builds a plugin from its settings. Read settings through `obj` (unknown keys are reported
/// after the factory returns); record problems with `obj.error(..)` and return `None`.
pub type Factory =
    fn(obj: &mut Obj<'_, '_>, ctx: &PluginContext<'_>) -> Option<Box<dyn AffinityPlugin>>;

/// Known plugin types.
#[derive(Clone)]
pub struct Registry {
    factories: Vec<(&'static str, Factory)>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl Registry {
    /// A registry with no plugins.
    pub fn empty() -> Self {
        Registry {
            factories: Vec::new(),
        }
    }

    /// The built-in plugins: `cookie`, `header`, `ip`.
    pub fn builtin() -> Self {
        let mut r = Self::empty();
        r.register("cookie", crate::cookie::factory);
        r.register("header", crate::header::factory);
        r.register("ip", crate::ip::factory);
        r
    }

    /// Add (or replace) a plugin type.
    pub fn register(&mut self, name: &'static str, factory: Factory) -> &mut Self {
        self.factories.retain(|(n, _)| *n != name);
        self.factories.push((name, factory));
        self
    }

    /// Registered type names, in registration order.
    pub fn names(&self) -> Vec<&'static str> {
        self.factories.iter().map(|(n, _)| *n).collect()
    }

    /// Build one plugin from its YAML block (`type: <name>` plus its settings), recording every
    /// error under `path`.
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
        let before = obj.errors().len();
        let plugin = factory(&mut obj, ctx);
        let failed = obj.errors().len() > before;
        obj.finish();
        if failed {
            None
        } else {
            plugin
        }
    }

    /// Build one plugin, returning its errors (convenience for tests and tools).
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
}
