//! Connections to Redis or Redis Cluster through the `redis` crate: a [`ConnectionManager`]
//! (one multiplexed connection that reconnects by itself, with exponential backoff) per
//! `pool` slot, or a cluster connection (slot map, redirections, reconnects: the crate's
//! `cluster-async`). Both speak RESP3 so the broadcast channel's messages arrive as push
//! frames on the same connection, re-subscribed after every reconnect.
use crate::config::RedisConf;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{
    Cmd, IntoConnectionInfo, Pipeline, ProtocolVersion, PushInfo, RedisFuture, TlsCertificates,
    Value,
};
use tokio::sync::mpsc::UnboundedSender;

/// One connection, single node or cluster.
#[derive(Clone)]
pub enum Conn {
    One(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::One(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::One(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::One(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl Conn {
    pub fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }

    /// Subscribe to `channel` (kept across reconnects).
    pub async fn subscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        match self {
            Conn::One(c) => c.subscribe(channel).await,
            Conn::Cluster(c) => c.subscribe(channel).await,
        }
    }
}

/// The connection info of `url` with RESP3 and the password of `password_env`, if set.
fn info(url: &str, conf: &RedisConf) -> redis::RedisResult<redis::ConnectionInfo> {
    let mut info = url.into_connection_info()?;
    info.redis.protocol = ProtocolVersion::RESP3;
    if let Some(pw) = conf
        .password_env
        .as_deref()
        .and_then(|e| std::env::var(e).ok())
    {
        info.redis.password = Some(pw);
    }
    Ok(info)
}

/// `ca_file`'s certificates as the roots a `rediss://` server's chain must lead to.
fn certs(ca_pem: &[u8]) -> TlsCertificates {
    TlsCertificates {
        client_tls: None,
        root_cert: Some(ca_pem.to_vec()),
    }
}

/// Connect once. `push` receives the broadcast channel's messages (only the first connection
/// of a pool subscribes).
pub async fn connect(
    conf: &RedisConf,
    push: Option<UnboundedSender<PushInfo>>,
) -> redis::RedisResult<Conn> {
    if conf.cluster {
        let nodes = conf
            .urls
            .iter()
            .map(|u| info(u, conf))
            .collect::<redis::RedisResult<Vec<_>>>()?;
        let mut b = ClusterClientBuilder::new(nodes)
            .use_protocol(ProtocolVersion::RESP3)
            .connection_timeout(conf.connect_timeout)
            .response_timeout(
                conf.command_timeout
                    .max(std::time::Duration::from_millis(200)),
            )
            .retries(2)
            .max_retry_wait(200);
        if let Some(tx) = push {
            b = b.push_sender(tx);
        }
        if let Some(ca) = &conf.ca_pem {
            b = b.certs(certs(ca));
        }
        let client = b.build()?;
        return Ok(Conn::Cluster(client.get_async_connection().await?));
    }
    let info = info(&conf.urls[0], conf)?;
    let client = match &conf.ca_pem {
        Some(ca) => redis::Client::build_with_tls(info, certs(ca))?,
        None => redis::Client::open(info)?,
    };
    // Reconnects back off 100 ms × 2^n, at most 2 s apart, so a Redis back after an outage is
    // found within a few seconds.
    let mut cfg = ConnectionManagerConfig::new()
        .set_connection_timeout(conf.connect_timeout)
        .set_factor(100)
        .set_exponent_base(2)
        .set_max_delay(2_000)
        .set_number_of_retries(3);
    if let Some(tx) = push {
        cfg = cfg.set_push_sender(tx).set_automatic_resubscription();
    }
    Ok(Conn::One(
        client.get_connection_manager_with_config(cfg).await?,
    ))
}
