//! [`Berth::builder`]: a `berth` binary with plugins of your own.
use berth_plugins::{AffinityPlugin, Params, Registry, Rejected};

/// A `berth` binary being put together: the built-in plugins plus yours.
///
/// ```no_run
/// use berth_plugins::{AffinityPlugin, Params, Rejected};
/// use berth_plugins::header::HeaderPlugin;
/// use std::sync::Arc;
/// // State the factory captures: here a default read once at start.
/// let default = Arc::new(std::env::var("TENANT_HEADER").unwrap_or("x-tenant".into()));
/// let code = berth::Berth::builder()
///     .plugin("tenant", move |p: &mut Params<'_>| {
///         let name = p.opt::<String>("header")?.unwrap_or_else(|| default.to_string());
///         let plugin = HeaderPlugin::new(&name, 256)
///             .ok_or_else(|| p.invalid("header", "not a header name"))?;
///         Ok(Box::new(plugin) as Box<dyn AffinityPlugin>)
///     })
///     .run();
/// std::process::exit(code);
/// ```
#[derive(Debug)]
pub struct Berth {
    registry: Registry,
}

impl Berth {
    /// The built-in plugins (`cookie`, `header`, `ip`, `query`, `path`, `connection`).
    pub fn builder() -> Self {
        Berth {
            registry: Registry::builtin(),
        }
    }

    /// Register plugin type `name` (what `type:` names in `affinity:`), built by `factory`;
    /// a built-in of the same name is replaced.
    pub fn plugin<F>(mut self, name: &str, factory: F) -> Self
    where
        F: Fn(&mut Params<'_>) -> Result<Box<dyn AffinityPlugin>, Rejected> + Send + Sync + 'static,
    {
        self.registry.register(name, factory);
        self
    }

    /// The plugin types known so far.
    pub fn plugin_names(&self) -> Vec<&str> {
        self.registry.names()
    }

    /// Run `berth` with these plugins: the same command line (`-c`, `-t`, `-u`, `-d`) and
    /// behaviour as the stock binary. Returns the exit code (0; 2 for an invalid
    /// configuration) once the server has stopped.
    pub fn run(self) -> i32 {
        crate::main_with(self.registry)
    }
}
