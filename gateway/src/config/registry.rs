//! `registry:` — where an upstream's session pins live: `memory` (the default: this process's
//! overlay alone) or `redis` (shared by every Berth pointed at the same Redis, with the overlay
//! as each one's local cache). Set at the top level for every upstream, or per upstream (which
//! wins). Checked here so `berth -t` reports a bad URL, a missing password variable, an
//! unreadable CA file or an out-of-range timeout.
use berth_plugins::params::Obj;
use std::time::Duration;

/// The session registry of an upstream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RegistryConf {
    /// This process's overlay only.
    #[default]
    Memory,
    /// Redis (or Redis Cluster), with the overlay as local cache.
    Redis(RedisConf),
}

/// `registry: {type: redis, ...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConf {
    /// `redis://host:port[/db]` or `rediss://` (TLS); with `cluster`, one or more seed nodes.
    pub urls: Vec<String>,
    /// Redis Cluster (`cluster: true`): keys are spread over the cluster's slots.
    pub cluster: bool,
    /// Prefix of every key and of the broadcast channel (`key_prefix`, default `berth`).
    pub key_prefix: String,
    /// The environment variable holding the AUTH password (`password_env`); `None` = the URL's
    /// own password, if any.
    pub password_env: Option<String>,
    /// Multiplexed connections per upstream (`pool`, default 2), used in turn.
    pub pool: usize,
    /// Every command's deadline (`timeouts.command`, default 50ms): past it the request is
    /// routed from the local cache and the ring (`degraded`).
    pub command_timeout: Duration,
    /// Deadline of one connection attempt (`timeouts.connect`, default 1s).
    pub connect_timeout: Duration,
    /// How often pins used since the last round get their Redis TTL renewed, in one pipeline
    /// (`refresh_interval`; default a quarter of `sessions.idle_ttl`, at most 1m, at least 1s).
    pub refresh_interval: Option<Duration>,
    /// Pins made while Redis was unreachable, kept to be written back (`writeback_max`,
    /// default 100,000); beyond it the oldest are dropped (counted).
    pub writeback_max: usize,
    /// The CA certificates (PEM text of `ca_file`) a `rediss://` server's certificate must
    /// lead to; `None` = the system's roots.
    pub ca_pem: Option<Vec<u8>>,
}

/// Defaults of `registry:`.
pub const DEFAULT_PREFIX: &str = "berth";
pub const DEFAULT_POOL: usize = 2;
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_millis(50);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_WRITEBACK_MAX: usize = 100_000;

/// Read `registry:` from `o` (the top level or an upstream); `None` when absent.
pub(crate) fn read(o: &mut Obj<'_, '_>) -> Option<RegistryConf> {
    let v = o.raw("registry")?;
    let path = o.path_of("registry");
    let mut r = Obj::new(v, path, o.errors())?;
    let kind = r.req::<String>("type");
    let conf = match kind.as_deref() {
        Some("memory") => Some(RegistryConf::Memory),
        Some("redis") => read_redis(&mut r).map(RegistryConf::Redis),
        Some(other) => {
            r.error("type", format!("{other:?} is not one of: memory, redis"));
            None
        }
        None => None,
    };
    r.finish();
    conf
}

fn read_redis(r: &mut Obj<'_, '_>) -> Option<RedisConf> {
    let cluster = r.flag("cluster", false);
    let urls: Vec<String> = match r.raw("url") {
        None => {
            r.error(
                "url",
                "is required: redis://host:port or rediss://host:port",
            );
            return None;
        }
        Some(serde_yaml::Value::Sequence(_)) => r.opt::<Vec<String>>("url").unwrap_or_default(),
        Some(_) => r.opt::<String>("url").into_iter().collect(),
    };
    if urls.is_empty() {
        r.error("url", "names no Redis server");
    }
    if urls.len() > 1 && !cluster {
        r.error(
            "url",
            "several URLs are the seed nodes of a Redis Cluster: set cluster: true",
        );
    }
    for u in &urls {
        if let Err(e) = check_url(u) {
            r.error("url", e);
        }
    }
    let key_prefix = r
        .opt::<String>("key_prefix")
        .unwrap_or_else(|| DEFAULT_PREFIX.into());
    if key_prefix.is_empty()
        || !key_prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_:.".contains(&b))
    {
        r.error(
            "key_prefix",
            format!("{key_prefix:?} must be 1 or more letters, digits, -, _, : or ."),
        );
    }
    let password_env = r.opt::<String>("password_env");
    if let Some(env) = &password_env {
        if std::env::var_os(env).is_none() {
            r.error(
                "password_env",
                format!("the environment variable {env:?} is not set"),
            );
        }
    }
    let pool = r.opt::<usize>("pool").unwrap_or(DEFAULT_POOL);
    if !(1..=64).contains(&pool) {
        r.error("pool", format!("{pool} is out of range 1..=64"));
    }
    let (command_timeout, connect_timeout) = read_timeouts(r);
    let refresh_interval = r.duration("refresh_interval");
    if refresh_interval.is_some_and(|d| d < Duration::from_secs(1)) {
        r.error("refresh_interval", "must be at least 1s");
    }
    let writeback_max = r
        .opt::<usize>("writeback_max")
        .unwrap_or(DEFAULT_WRITEBACK_MAX);
    let ca_pem = r.opt::<String>("ca_file").and_then(|file| {
        if !urls.iter().any(|u| u.starts_with("rediss://")) {
            r.error(
                "ca_file",
                "applies to TLS only: the url must start with rediss://",
            );
            return None;
        }
        match super::pem::read_ca(&file) {
            Ok((text, _)) => Some(text),
            Err(e) => {
                r.error("ca_file", e);
                None
            }
        }
    });
    Some(RedisConf {
        urls,
        cluster,
        key_prefix,
        password_env,
        pool,
        command_timeout,
        connect_timeout,
        refresh_interval,
        writeback_max,
        ca_pem,
    })
}

fn read_timeouts(r: &mut Obj<'_, '_>) -> (Duration, Duration) {
    let mut command = DEFAULT_COMMAND_TIMEOUT;
    let mut connect = DEFAULT_CONNECT_TIMEOUT;
    if let Some(v) = r.raw("timeouts") {
        let path = r.path_of("timeouts");
        if let Some(mut t) = Obj::new(v, path, r.errors()) {
            if let Some(d) = t.duration("command") {
                if d < Duration::from_millis(1) || d > Duration::from_secs(5) {
                    t.error("command", "must be between 1ms and 5s");
                }
                command = d;
            }
            if let Some(d) = t.duration("connect") {
                if d < Duration::from_millis(10) || d > Duration::from_secs(60) {
                    t.error("connect", "must be between 10ms and 60s");
                }
                connect = d;
            }
            t.finish();
        }
    }
    (command, connect)
}

/// A Redis URL the client accepts: `redis://` or `rediss://`, with a host.
fn check_url(u: &str) -> Result<(), String> {
    if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
        return Err(format!("{u:?} must start with redis:// or rediss:// (TLS)"));
    }
    redis::Client::open(u)
        .map(|_| ())
        .map_err(|e| format!("{u:?} is not a Redis URL: {e}"))
}

impl RedisConf {
    /// The TTL refresh period for an overlay whose idle TTL is `idle_ttl` ms (0 = none).
    pub fn refresh_every(&self, idle_ttl_ms: u64) -> Duration {
        self.refresh_interval.unwrap_or_else(|| {
            let quarter = Duration::from_millis(idle_ttl_ms / 4);
            quarter.clamp(Duration::from_secs(1), Duration::from_secs(60))
        })
    }
}
