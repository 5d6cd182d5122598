//! Berth's configuration: the internal model (this file), every default ([`defaults`]) and the
//! YAML readers that fill it (`load`, and one file per top-level section that has its own
//! rules: [`access_log`], [`limits`]). The model holds checked, typed values only — plain data,
//! no behaviour; the file format is documented key by key in `conf/berth.yaml`. Nothing here
//! depends on another module of the gateway.
pub mod access_log;
pub mod limits;
mod load;
mod pem;
pub mod registry;
#[cfg(test)]
mod tests;

pub use access_log::{AccessLogConf, Target};
pub use limits::ClientLimits;
pub use registry::{RedisConf, RegistryConf};

pub use berth_plugins::params::ConfError;
pub use load::{load_file, parse, valid_id};

use berth_plugins::Chain;
use berth_routing::{OverlayConfig, RouterConfig};
use pingora_core::server::configuration::ServerConf;
use std::net::SocketAddr;
use std::time::Duration;

/// A whole, validated configuration.
pub struct Config {
    /// Pingora's server settings (`server:`).
    pub server: ServerConf,
    /// Client-facing listeners (`listeners:`).
    pub listeners: Vec<Listener>,
    /// The admin listener (`admin:`).
    pub admin: Admin,
    /// Routes in match order (`routes:`).
    pub routes: Vec<Route>,
    /// Upstreams in file order (`upstreams:`).
    pub upstreams: Vec<UpstreamConf>,
    /// The access log (`access_log:`); `None` = off.
    pub access_log: Option<AccessLogConf>,
    /// Client-side limits (`limits:`).
    pub limits: ClientLimits,
}

/// One client-facing listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// `ip:port` to bind.
    pub addr: String,
    /// A plain listener that also speaks HTTP/2 with prior knowledge (h2c), besides HTTP/1.1.
    pub h2c: bool,
    /// TLS termination (`tls:`); `None` = plain TCP.
    pub tls: Option<ListenerTls>,
}

/// `listeners[].tls:`: the certificates a TLS listener serves and what it negotiates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// Certificate chain + key pairs, in file order. A client's SNI picks the certificate
    /// whose names match; the first one serves clients without SNI or with an unknown name.
    pub certificates: Vec<CertFiles>,
    /// Offer HTTP/2 (ALPN `h2`, then `http/1.1`); false: `http/1.1` only.
    pub http2: bool,
    /// The oldest TLS version accepted (TLS 1.0 and 1.1 are never accepted).
    pub min_version: TlsVersion,
}

/// One certificate of a TLS listener: the files, and where they were named in the file (for
/// error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// PEM file with the certificate chain, leaf first.
    pub cert: String,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
    /// Key path of this entry, e.g. `listeners[1].tls.certificates[0]`.
    pub at: String,
}

/// A TLS protocol version Berth can be told to require at least.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// The admin listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// `ip:port` to bind.
    pub listen: String,
    /// Name of the environment variable holding the bearer token of `/admin/*`.
    pub token_env: String,
}

/// Host + path prefix → upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Lower-case host to match; `None` = any host.
    pub host: Option<String>,
    /// Path prefix to match.
    pub path_prefix: String,
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
}

/// One upstream.
pub struct UpstreamConf {
    pub name: String,
    pub chain: Chain,
    pub sessions: OverlayConfig,
    pub settings: UpstreamSettings,
    pub backends: Vec<BackendConf>,
    /// Where its session pins live (`registry:`, per upstream or global).
    pub registry: RegistryConf,
}

/// Per-upstream settings that routing tables and lifecycle tasks read at run time.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub router: RouterConfig,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// Other backends to try when connecting fails.
    pub connect_retries: usize,
    /// Active health checks; `None` = passive marking only.
    pub health: Option<HealthConf>,
    pub passive: PassiveConf,
    /// Sessions per second moved by a migration.
    pub migrate_rate: u32,
    /// Load limits beyond the router's (`load:`).
    pub load: LoadConf,
    /// Upstream connection pooling (`pool:`).
    pub pool: PoolConf,
    /// Default `max_connections` of its backends (also for backends added at run time).
    pub max_connections: Option<u32>,
    /// How long a request waits for a connection slot of a backend at `max_connections`.
    pub queue_timeout: Duration,
    /// Set `X-Forwarded-For` (appended) and `X-Forwarded-Proto` on requests to the backends
    /// (`forward_headers`, default true). Off: the client's own values pass through unchanged.
    pub forward_headers: bool,
    /// TLS to the backends (`tls:`); `None` = plain TCP.
    pub tls: Option<UpstreamTls>,
    /// Backends found in DNS (`discovery:`); `None` = the file's backends only.
    pub discovery: Option<DiscoveryConf>,
    /// Upgraded connections (`websocket:`).
    pub websocket: WebSocketConf,
    /// How requests reach the backends (`protocol`).
    pub protocol: UpstreamProtocol,
}

/// `discovery:` of an upstream: backends are the A/AAAA records of a DNS name (a Kubernetes
/// headless service), re-resolved every `interval` and when the records' TTL expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryConf {
    /// The name whose A and AAAA records are the backends.
    pub dns: String,
    /// The port every discovered backend listens on.
    pub port: u16,
    /// Longest time between two resolutions (sooner when the records' TTL expires first).
    pub interval: Duration,
    /// The DNS server asked (UDP, then TCP for long answers); `None` = the system's
    /// (`/etc/resolv.conf`).
    pub resolver: Option<SocketAddr>,
    /// How long one query may take.
    pub timeout: Duration,
    /// How long a backend whose record disappeared drains before its remaining sessions move.
    pub drain_deadline: Duration,
    /// Weight of every discovered backend.
    pub weight: u32,
    /// Key of the hash that names discovered backends (`id_secret_env`); empty = unkeyed.
    pub id_key: IdKey,
}

/// The key of discovered backends' ids; never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct IdKey(pub Vec<u8>);

impl std::fmt::Debug for IdKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "IdKey(none)"
        } else {
            "IdKey(…)"
        })
    }
}

/// `protocol` of an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (default).
    Http1,
    /// HTTP/2 over TLS (ALPN `h2`; needs `tls:`), e.g. gRPC.
    H2,
    /// HTTP/2 with prior knowledge in clear text, e.g. gRPC.
    H2c,
}

/// `websocket:` of an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebSocketConf {
    /// No byte in either direction for this long closes a socket (and bounds the wait for the
    /// answer to an upgrade request).
    pub idle_timeout: Duration,
    /// A socket whose client takes no data for this long is closed.
    pub send_timeout: Duration,
}

/// `tls:` of an upstream: its backends are reached over TLS (and probed over TLS).
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// The name sent as SNI and checked against the backends' certificates; `None` = each
    /// backend's IP address (checked against its certificate's IP addresses, no SNI sent).
    pub sni: Option<String>,
    /// The CA certificates (DER) the backends' chains must lead to (`ca_file`); `None` = the
    /// system's trust store.
    pub ca: Option<std::sync::Arc<Vec<Vec<u8>>>>,
    /// Verify the certificate chain and name (`verify`, default true).
    pub verify: bool,
    /// A digest of these settings (the name, the CA certificates, `verify`), mixed into the
    /// pool's group key: Pingora's connection reuse compares SNI and `verify` but not the CA,
    /// so without it a connection verified against one CA could serve an upstream trusting
    /// another.
    pub digest: u64,
}

/// `load:` of an upstream. The bound ε and `spill_pinned` live in [`RouterConfig`]; caps in
/// each [`BackendConf`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadConf {
    /// Cap for backends that set none (also for backends added through the admin API).
    pub max_sessions: Option<u32>,
    /// `Retry-After` of the 503 a new session gets when every backend is full.
    pub retry_after: Duration,
    /// Periodic moves of idle sessions off backends above the bound.
    pub rebalance: Option<RebalanceConf>,
}

/// `load.rebalance:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebalanceConf {
    /// How often the job runs.
    pub interval: Duration,
    /// A session unused for this long (and with no request in flight) may move.
    pub idle_after: Duration,
    /// At most this many sessions moved per second.
    pub rate: u32,
}

/// `pool:` of an upstream: which pooled upstream connections its requests may reuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConf {
    /// Pingora's `group_key` for this upstream's peers (hash of `pool.group`, by default the
    /// upstream's name): upstreams in different groups never share a connection.
    pub group_key: u64,
    /// Each session gets connections of its own (group key mixed with the session key), for
    /// apps that keep state per TCP connection (e.g. NTLM).
    pub per_session: bool,
    /// How long an idle pooled connection is kept; `None` = keep-alive off (no pooling).
    pub idle_timeout: Option<Duration>,
}

/// Active health checks of an upstream's backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConf {
    pub kind: HealthKind,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

/// What a health check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthKind {
    /// Connect over TCP.
    Tcp,
    /// `GET path`, expecting `expect_status`.
    Http { path: String, expect_status: u16 },
}

/// Passive health: connect failures seen by real requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassiveConf {
    /// Consecutive connect failures that mark a backend down; 0 = off.
    pub fall: u32,
    /// Without active checks: how long a passively-downed backend stays down.
    pub cooldown: Duration,
}

/// One backend of an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConf {
    /// Stable id (what cookies name).
    pub id: String,
    pub addr: SocketAddr,
    pub weight: u32,
    /// Cap on active sessions (`None` = no cap).
    pub max_sessions: Option<u32>,
    /// Start (or, on reload, put) the backend in the draining state.
    pub drain: bool,
    /// Requests in flight to it at once (`None` = no limit).
    pub max_connections: Option<u32>,
}

/// Defaults, in one place so the reader and the docs agree.
pub mod defaults {
    use std::time::Duration;
    pub const LISTEN: &str = "0.0.0.0:8080";
    /// `listeners[].h2c`.
    pub const H2C: bool = false;
    /// `listeners[].tls.http2`.
    pub const TLS_HTTP2: bool = true;
    /// `listeners[].tls.min_version`.
    pub const TLS_MIN_VERSION: super::TlsVersion = super::TlsVersion::Tls12;
    pub const ADMIN_LISTEN: &str = "127.0.0.1:9180";
    pub const POINTS_PER_WEIGHT: u32 = berth_routing::DEFAULT_POINTS_PER_WEIGHT;
    pub const IDLE_TTL: Duration = Duration::from_secs(30 * 60);
    pub const MAX_SESSIONS: usize = 1_000_000;
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
    pub const READ_TIMEOUT: Duration = Duration::from_secs(60);
    pub const CONNECT_RETRIES: usize = 2;
    pub const WEIGHT: u32 = 1;
    pub const TOKEN_ENV: &str = "BERTH_ADMIN_TOKEN";
    pub const HEALTH_INTERVAL: Duration = Duration::from_secs(2);
    pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
    pub const HEALTH_RISE: u32 = 2;
    pub const HEALTH_FALL: u32 = 2;
    pub const PASSIVE_FALL: u32 = 3;
    pub const PASSIVE_COOLDOWN: Duration = Duration::from_secs(10);
    pub const MIGRATE_RATE: u32 = 200;
    pub const ACTIVE_WINDOW: Duration = Duration::from_secs(5 * 60);
    pub const RETRY_AFTER: Duration = Duration::from_secs(5);
    pub const REBALANCE_INTERVAL: Duration = Duration::from_secs(10);
    pub const REBALANCE_IDLE_AFTER: Duration = Duration::from_secs(60);
    pub const REBALANCE_RATE: u32 = 100;
    pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    pub const QUEUE_TIMEOUT: Duration = Duration::from_secs(1);
    /// `websocket.idle_timeout`, `websocket.send_timeout`.
    pub const WEBSOCKET_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
    pub const WEBSOCKET_SEND_TIMEOUT: Duration = Duration::from_secs(60);
    /// Longest backend id; ids appear in cookies and metric labels.
    pub const MAX_ID_LEN: usize = berth_plugins::token::MAX_ID_LEN;
    /// `access_log.queue`: lines waiting for the writer.
    pub const ACCESS_LOG_QUEUE: usize = 8192;
    /// `limits:` (see [`super::limits`]).
    pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
    pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
    pub const BODY_TIMEOUT: Duration = Duration::from_secs(60);
    pub const MAX_HEADER_BYTES: usize = 64 * 1024;
    pub const MAX_HEADERS: usize = 100;
    pub const MAX_URI_BYTES: usize = 8 * 1024;
    /// No user-space read buffer per client connection (Pingora's 64 KiB one is most of an
    /// idle keep-alive connection's memory; `make bench-tail`).
    pub const READ_BUFFER_BYTES: usize = 0;
    /// `server.upstream_keepalive_pool_size` (Pingora: 128; see `load::berth_server_defaults`).
    pub const UPSTREAM_KEEPALIVE_POOL_SIZE: usize = 1024;
    /// `discovery:` (see [`super::DiscoveryConf`]).
    pub const DISCOVERY_INTERVAL: Duration = Duration::from_secs(5);
    pub const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(2);
    pub const DISCOVERY_DRAIN_DEADLINE: Duration = Duration::from_secs(5 * 60);
    /// Ids of discovered backends start with this; file backends of an upstream with
    /// `discovery:` may not.
    pub const DISCOVERED_ID_PREFIX: &str = "dns-";
}
