//! # berth — the gateway
//!
//! The only crate that imports Pingora. Its public API is what a **custom binary** needs: the
//! `berth` command line with your own affinity plugins registered.
//!
//! ```no_run
//! use berth_plugins::{AffinityPlugin, Params, Rejected};
//! fn my_plugin(p: &mut Params<'_>) -> Result<Box<dyn AffinityPlugin>, Rejected> {
//!     # let _ = p;
//!     unimplemented!("read settings from p, build the plugin")
//! }
//! fn main() {
//!     std::process::exit(berth::Berth::builder().plugin("my-plugin", my_plugin).run());
//! }
//! ```
//!
//! Everything else is private. Inside: the configuration reader (`config`), the shared state (`gateway`: the upstreams and their routes), a thin `ProxyHttp` (`proxy`,
//! which asks `policy` what a request may do) and an admin listener (`admin`). Dependencies
//! point one way: `config` and `metrics` depend on no other module; `upstream` on those two and
//! `policy`; the services (`proxy`, `admin`, `handover`, `health`, `discovery`, `fleet`,
//! `reload`, `upkeep`) on `gateway`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod access_log;
mod admin;
mod builder;
mod client_deadlines;
#[doc(hidden)]
pub mod config;
mod conn_limit;
mod discovery;
mod fleet;
mod gateway;
mod grpc;
mod handover;
#[doc(hidden)]
pub mod headers;
mod health;
mod launcher;
mod limits;
mod metrics;
mod policy;
mod proxy;
mod registry;
mod reload;
mod tls;
mod tunnel;
mod upkeep;
mod upstream;
mod views;

use berth_plugins::Registry;
pub use builder::Berth;
use clap::Parser;
use pingora_core::server::configuration::Opt;
use pingora_core::server::{RunArgs, Server};
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use std::sync::Arc;
use std::time::Duration;

/// Command line. The flags match Pingora's so `berth -u` works as Pingora upgrades expect.
#[doc(hidden)]
#[derive(Parser, Debug)]
#[command(
    name = "berth",
    version,
    about = "Berth: a sticky-session HTTP gateway on Pingora"
)]
pub struct Cli {
    /// Configuration file.
    #[arg(short = 'c', long = "conf", default_value = "conf/berth.yaml")]
    pub conf: String,
    /// Validate the configuration and exit: 0 = valid, 2 = invalid (every error is printed).
    #[arg(short = 't', long = "test")]
    pub test: bool,
    /// Take over the listening sockets of a running Berth (zero-downtime upgrade).
    #[arg(short = 'u', long = "upgrade")]
    pub upgrade: bool,
    /// Run in the background.
    #[arg(short = 'd', long = "daemon")]
    pub daemon: bool,
}

/// Pingora's grace period when `server.grace_period_seconds` is not set (`EXIT_TIMEOUT` in
/// pingora-core 0.9.1 `server/mod.rs`).
const PINGORA_GRACE_PERIOD_SECONDS: u64 = 300;

/// Exit code for an invalid configuration.
pub const EXIT_BAD_CONFIG: i32 = 2;

/// Run Berth with the built-in plugins: parse the command line, check the configuration,
/// serve. Returns the process's exit code.
///
/// ```no_run
/// std::process::exit(berth::main());
/// ```
pub fn main() -> i32 {
    main_with(Registry::builtin())
}

/// Run Berth with a plugin registry of your own (what [`Berth::run`] does).
///
/// ```no_run
/// let registry = berth_plugins::Registry::builtin();
/// // registry.register("my-plugin", my_plugin::factory);
/// std::process::exit(berth::main_with(registry));
/// ```
pub fn main_with(registry: Registry) -> i32 {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    // From here on a SIGHUP is a reload, applied once the reload service runs; not SIGHUP's
    // default action (ending the process) while the configuration is read and Pingora starts.
    let early_hangup = (!cli.test)
        .then(|| {
            reload::EarlyHangup::catch()
                .map_err(|e| log::warn!("cannot catch SIGHUP while starting: {e}"))
                .ok()
        })
        .flatten();
    // Validation comes first: with -u, an invalid file must leave the running Berth alone
    // (nothing is connected to, sent or taken before this point).
    // The certificate files of TLS listeners are part of the configuration: read and checked
    // here too (readable, key matching, not expired).
    let loaded = config::load_file(&cli.conf, &registry)
        .and_then(|c| tls::read_certificates(&c.listeners).map(|certs| (c, certs)));
    let (config, certificates) = match loaded {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!(
                "berth: {} error(s) in {}; nothing was started",
                errors.len(),
                cli.conf
            );
            if cli.upgrade {
                eprintln!(
                    "berth: upgrade refused; the running Berth was not touched and keeps serving"
                );
            }
            return EXIT_BAD_CONFIG;
        }
    };
    if cli.test {
        println!("berth: {} is valid", cli.conf);
        return 0;
    }
    serve(config, certificates, &cli, registry, early_hangup)
}

/// A client listener: TCP on `addr`, with `limits.read_buffer_bytes` of read buffer per
/// connection instead of Pingora's 64 KiB.
fn client_listener(addr: &str, gw: &gateway::Gateway) -> pingora_core::listeners::ListenerConfig {
    use pingora_core::listeners::{L4BufferSettings, ListenerConfig};
    ListenerConfig::tcp(addr).l4_buffer(L4BufferSettings {
        read: Some(gw.limits.read_buffer_bytes),
        write: None,
    })
}

/// Start the server; returns only if it cannot start.
fn serve(
    mut config: config::Config,
    certificates: Vec<Vec<tls::certs::Loaded>>,
    cli: &Cli,
    registry: Registry,
    early_hangup: Option<reload::EarlyHangup>,
) -> i32 {
    let opt = Opt {
        upgrade: cli.upgrade,
        daemon: cli.daemon,
        ..Opt::default()
    };
    let server_conf = std::mem::take(&mut config.server);
    let listeners = std::mem::take(&mut config.listeners);
    let admin_conf = config.admin.clone();
    let admin_listen = admin_conf.listen.clone();
    let state_sock = handover::state_sock_path(&server_conf.upgrade_sock);

    let metrics = Arc::new(metrics::Metrics::new());
    let access_log = match config
        .access_log
        .take()
        .map(|c| access_log::AccessLog::open(&c, &metrics).map_err(|e| (c.target, e)))
    {
        None => None,
        Some(Ok(log)) => Some(Arc::new(log)),
        Some(Err((target, e))) => {
            eprintln!("access_log.path: cannot open {target:?}: {e}");
            return EXIT_BAD_CONFIG;
        }
    };
    let mut gw = gateway::Gateway::new(config, metrics);
    // Before anything serves: the running Berth's sessions, drains and admin changes.
    let predecessor = if cli.upgrade {
        match handover::inherit(&state_sock, &mut gw) {
            Ok(p) => p,
            Err(why) => {
                eprintln!(
                    "berth: upgrade refused by the running Berth: {why}; try again once it is done"
                );
                return 1;
            }
        }
    } else {
        None
    };
    let gw = Arc::new(gw);
    let mut server = Server::new_with_opt_and_conf(opt, server_conf);
    // Before Pingora forks: the launcher of `berth -d` must outlive an early "ready" signal.
    let ready_exit = launcher::ReadyExit::arm(
        server.configuration.daemon,
        server.configuration.daemon_wait_for_ready,
    );
    // Bootstrap (taking the listening sockets on -u) runs as a service, after a daemon fork:
    // `berth -u -d` returns at once, then SIGQUIT to the old process hands the sockets over.
    let bootstrap = server.bootstrap_as_a_service();

    // Every client connection goes through the slow-client guard (see `client_deadlines`),
    // which also keeps serving the connections it holds for a while after a shutdown stopped
    // accepting. Listeners are served by kind, each kind a Pingora service of its own (its own
    // runtime and upstream connection pool), so plain HTTP/1.1 listeners run exactly the code
    // they would without the others: plain, plain with h2c, TLS.
    let grace = Duration::from_secs(
        server
            .configuration
            .grace_period_seconds
            .unwrap_or(PINGORA_GRACE_PERIOD_SECONDS),
    );
    let edge = tls::Edge::new(&listeners, certificates, &gw.metrics).map(Arc::new);
    let server_conf = server.configuration.clone();
    let guarded = |tls: bool, h2: bool| {
        let proxy = proxy::Proxy {
            gw: gw.clone(),
            log: access_log.clone(),
            tls,
        };
        let mut app = pingora_proxy::http_proxy(&server_conf, proxy);
        if h2 {
            let mut options = pingora_core::apps::HttpServerOptions::default();
            // Plain listeners of this kind are h2c ones; on TLS, ALPN decides.
            options.h2c = !tls;
            // An HTTP/2 connection without a stream in flight is closed after this.
            options.h2_idle_timeout = Some(gw.limits.keepalive_timeout);
            app.server_options = Some(options);
        }
        let guarded = client_deadlines::Guarded::new(app, gw.limits.deadlines())
            .drain_for(client_deadlines::drain_window(grace));
        if h2 {
            guarded.counting_h2_errors(gw.metrics.http2_errors.clone())
        } else {
            guarded
        }
    };
    let of_kind = |h2c: bool, tls: bool| -> Vec<&str> {
        listeners
            .iter()
            .filter(|l| l.h2c == h2c && l.tls.is_some() == tls)
            .map(|l| l.addr.as_str())
            .collect()
    };
    let plain = of_kind(false, false);
    if !plain.is_empty() {
        let mut service = Service::new("berth proxy".into(), guarded(false, false));
        plain
            .iter()
            .for_each(|addr| service.add_listener(client_listener(addr, &gw)));
        server.add_service(service).add_dependency(&bootstrap);
    }
    let h2c = of_kind(true, false);
    if !h2c.is_empty() {
        let app = client_deadlines::H2c(Arc::new(guarded(false, true)));
        let mut service = Service::new("berth proxy h2c".into(), app);
        h2c.iter()
            .for_each(|addr| service.add_listener(client_listener(addr, &gw)));
        server.add_service(service).add_dependency(&bootstrap);
    }
    if let Some(edge) = &edge {
        let app = tls::accept::Terminate {
            edge: edge.clone(),
            guarded: Arc::new(guarded(true, true)),
            handshake_timeout: gw.limits.header_timeout,
        };
        let mut service = Service::new("berth proxy tls".into(), app);
        edge.listeners
            .iter()
            .for_each(|l| service.add_listener(client_listener(&l.addr, &gw)));
        server.add_service(service).add_dependency(&bootstrap);
    }

    let token = std::env::var(&admin_conf.token_env)
        .ok()
        .filter(|t| !t.is_empty());
    if token.is_none() {
        log::warn!(
            "{} is not set: the admin API (/admin/*) is disabled",
            admin_conf.token_env
        );
    }
    let app = admin::AdminApp {
        gw: gw.clone(),
        token,
        token_env: admin_conf.token_env,
    };
    let mut admin = Service::new("berth admin".into(), app);
    admin.threads = Some(1);
    admin.add_tcp(&admin_listen);
    server.add_service(admin).add_dependency(&bootstrap);
    let exit = handover::install(&mut server, &gw, state_sock, predecessor, &bootstrap);

    let upkeep = upkeep::Upkeep {
        gw: gw.clone(),
        tick: Duration::from_millis(100),
        sweep: Duration::from_secs(1),
        ready_exit,
    };
    server.add_service(background_service("berth upkeep", upkeep));
    let reloader = reload::Reloader {
        gw: gw.clone(),
        conf_path: cli.conf.clone(),
        registry,
        access_log: access_log.clone(),
        edge,
        early: early_hangup,
    };
    server.add_service(background_service("berth reload", reloader));
    if let Some(log) = access_log {
        let writer = access_log::WriterService { log };
        server.add_service(background_service("berth access log", writer));
    }
    if gw.upstreams.iter().any(|u| u.redis.is_some()) {
        let fleet = fleet::Fleet { gw: gw.clone() };
        server.add_service(background_service("berth registry", fleet));
    }
    let checker = health::HealthChecker { gw: gw.clone() };
    server.add_service(background_service("berth health checks", checker));
    if let Some(discoverer) = discovery::Discoverer::new(&gw) {
        server.add_service(background_service("berth discovery", discoverer));
    }

    log::info!(
        "berth: serving {} upstream(s) on {}; admin on {}",
        gw.upstreams.len(),
        listeners
            .iter()
            .map(|l| match (&l.tls, l.h2c) {
                (Some(_), _) => format!("{} (TLS)", l.addr),
                (None, true) => format!("{} (h2c)", l.addr),
                (None, false) => l.addr.clone(),
            })
            .collect::<Vec<_>>()
            .join(", "),
        admin_listen
    );
    server.run(RunArgs::default());
    // The runtimes have stopped: a successor gets the last changes before the process exits.
    if !exit.finish(Duration::from_secs(2)) {
        log::warn!("upgrade: the successor did not take the last changes in time");
    }
    0
}
