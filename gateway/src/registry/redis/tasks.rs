//! The registry's background work, on the registry service's runtime: connecting (again and
//! again until Redis answers), the writer (re-pins, sets, write-backs, broadcasts: every
//! 100 ms or when woken), TTL renewal of the sessions used since the last round (one pipeline
//! every `refresh_interval`), the ping that notices Redis is back, and the broadcast reader.
use super::{conn, keys, Conn, Envelope, Event, Inbound, RedisRegistry, Write};
use crate::metrics::registry::op;
use redis::{Cmd, PushInfo, PushKind, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// The routing core's clock.
pub type Now = Arc<dyn Fn() -> berth_routing::Millis + Send + Sync>;

/// Writer period (and the most a broadcast waits before it is sent).
const WRITE_EVERY: Duration = Duration::from_millis(100);
/// Ping period while Redis answers, and between reconnect attempts while it does not.
const PING_EVERY: Duration = Duration::from_millis(500);
/// Commands per pipeline.
const BATCH: usize = 1_000;

impl RedisRegistry {
    /// Connect, then run every background task until `stop` resolves.
    /// `now` is the routing core's clock (the overlay's times).
    pub async fn run(self: Arc<Self>, now: Now, stop: impl std::future::Future<Output = ()>) {
        let _ = self.runtime.set(tokio::runtime::Handle::current());
        let (tx, rx) = mpsc::unbounded_channel();
        let me = self.clone();
        let tasks = [
            tokio::spawn(me.clone().connect_loop(tx)),
            tokio::spawn(me.clone().writer()),
            tokio::spawn(me.clone().refresher(now)),
            tokio::spawn(me.clone().events(rx)),
        ];
        stop.await;
        for t in tasks {
            t.abort();
        }
    }

    /// Connect the pool (retrying until it works), subscribe, then ping.
    async fn connect_loop(self: Arc<Self>, push: mpsc::UnboundedSender<PushInfo>) {
        let channel = self.keys.channel();
        loop {
            match self.connect_pool(&push, &channel).await {
                Ok(conns) => {
                    self.conns.store(Some(Arc::new(conns)));
                    // The stored admin state, before the registry reports up (and again when
                    // it does, through `sync`: idempotent).
                    self.sync_now().await;
                    break;
                }
                Err(e) => {
                    log::warn!(
                        "upstream {}: cannot connect to Redis ({e}); retrying",
                        self.upstream
                    );
                    tokio::time::sleep(PING_EVERY).await;
                }
            }
        }
        let mut tick = tokio::time::interval(PING_EVERY);
        loop {
            tick.tick().await;
            let t = self.conf.command_timeout.max(Duration::from_millis(250));
            let ok: Option<String> = self
                .call(op::PING, t, |mut c| async move {
                    redis::cmd("PING").query_async(&mut c).await
                })
                .await;
            if ok.is_some() {
                self.set_up(true);
            }
        }
    }

    async fn connect_pool(
        &self,
        push: &mpsc::UnboundedSender<PushInfo>,
        channel: &str,
    ) -> redis::RedisResult<Vec<Conn>> {
        let mut first = conn::connect(&self.conf, Some(push.clone())).await?;
        first.subscribe(channel).await?;
        let mut conns = vec![first];
        while conns.len() < self.conf.pool {
            conns.push(conn::connect(&self.conf, None).await?);
        }
        Ok(conns)
    }

    /// Broadcast messages: decode, skip our own and other upstreams', apply; and reads of the
    /// stored admin state when asked (`sync`), in the same sequence.
    async fn events(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<PushInfo>) {
        loop {
            let push = tokio::select! {
                p = rx.recv() => match p {
                    Some(p) => p,
                    None => return,
                },
                _ = self.sync.notified() => {
                    self.sync_now().await;
                    continue;
                }
            };
            if push.kind == PushKind::Disconnection {
                // The subscribed connection dropped; the `redis` crate is re-establishing it
                // (re-subscribed before it answers again): what was broadcast meanwhile is
                // read from the stored state, on that connection.
                self.sync_now().await;
                continue;
            }
            if push.kind != PushKind::Message {
                continue;
            }
            let Some(Value::BulkString(payload)) = push.data.get(1) else {
                continue;
            };
            let env: Envelope = match serde_json::from_slice(payload) {
                Ok(e) => e,
                Err(e) => {
                    log::warn!("upstream {}: unreadable broadcast: {e}", self.upstream);
                    continue;
                }
            };
            if env.origin == self.origin || env.upstream != self.upstream {
                continue;
            }
            match env.event {
                Event::Invalidate { keys } => {
                    for k in keys.iter().filter_map(|k| keys::parse_hex(k)) {
                        self.overlay.remove(k);
                    }
                }
                other => {
                    self.note(&other);
                    if let Some(inbox) = self.inbox.get() {
                        inbox(Inbound::Event(other));
                    }
                }
            }
        }
    }

    /// Every [`WRITE_EVERY`] (or when woken): send what is queued while Redis answers.
    async fn writer(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(WRITE_EVERY) => {}
                _ = self.wake.notified() => {}
            }
            if !self.is_up() {
                continue;
            }
            // Admin state, then its broadcasts.
            self.flush_admin().await;
            let writes: Vec<Write> = {
                let mut q = self.queue.lock();
                let n = q.writes.len().min(BATCH);
                q.writes.drain(..n).collect()
            };
            if !writes.is_empty() {
                let failed = self.send_writes(writes).await;
                let mut q = self.queue.lock();
                for w in failed.into_iter().rev() {
                    q.writes.push_front(w);
                }
            }
            if !self.queue.lock().writes.is_empty() {
                self.wake.notify_one();
            }
        }
    }

    pub(super) async fn send_publish(&self, msgs: &[String]) -> bool {
        let channel = self.keys.channel();
        let cmds = msgs
            .iter()
            .map(|m| {
                let mut c = redis::cmd("PUBLISH");
                c.arg(&channel).arg(m);
                c
            })
            .collect();
        self.exec(op::PUBLISH, cmds).await
    }

    /// Send `writes`; returns the ones to try again (all of them when Redis did not answer).
    async fn send_writes(&self, writes: Vec<Write>) -> Vec<Write> {
        let mut cmds = Vec::new();
        let mut backs = Vec::new();
        for w in &writes {
            match w {
                Write::Back { key, backend } => backs.push((*key, backend.clone())),
                Write::Index { key, backend } => cmds.push(self.sadd(backend, *key)),
                Write::Repin { key, backend, from } => {
                    let mut set = redis::cmd("SET");
                    set.arg(self.keys.pin(*key)).arg(backend);
                    if self.ttl_ms > 0 {
                        set.arg("PX").arg(self.ttl_ms);
                    }
                    cmds.push(set);
                    cmds.push(self.sadd(backend, *key));
                    if let Some(f) = from {
                        cmds.push(self.srem(f, *key));
                    }
                }
                Write::Remove { key } => {
                    let mut del = redis::cmd("DEL");
                    del.arg(self.keys.pin(*key));
                    cmds.push(del);
                }
            }
        }
        if !cmds.is_empty() && !self.exec(op::WRITE, cmds).await {
            return writes;
        }
        let mut failed = Vec::new();
        for (key, backend) in backs {
            let t = self.conf.command_timeout.max(Duration::from_millis(250));
            match self.run_first_pin(key, &backend, t).await {
                Some((_, true, _)) => {
                    self.metrics.writebacks[0].inc();
                    self.push(Write::Index { key, backend });
                }
                Some((winner, false, _)) => {
                    if winner != backend {
                        // Another gateway pinned it meanwhile: its pin wins everywhere; ours
                        // leaves the cache, so the session's next request follows it.
                        self.metrics.writebacks[1].inc();
                        self.overlay.remove(key);
                    } else {
                        self.metrics.writebacks[0].inc();
                    }
                }
                None => failed.push(Write::Back { key, backend }),
            }
        }
        failed
    }

    fn sadd(&self, backend: &str, key: berth_routing::SessionKey) -> Cmd {
        let mut c = redis::cmd("SADD");
        c.arg(self.keys.on(backend)).arg(keys::hex(key));
        c
    }

    fn srem(&self, backend: &str, key: berth_routing::SessionKey) -> Cmd {
        let mut c = redis::cmd("SREM");
        c.arg(self.keys.on(backend)).arg(keys::hex(key));
        c
    }

    /// Run `cmds`: one pipeline on a single node; on a cluster, each command on its own
    /// (a cluster pipeline must stay on one node), all at once. One round trip of `op` is
    /// counted per pipeline. True when every command was answered.
    pub(super) async fn exec(&self, op: usize, cmds: Vec<Cmd>) -> bool {
        let Some(conn) = self.conn() else {
            return false;
        };
        let t = self.conf.command_timeout.max(Duration::from_millis(250)) * 4;
        if conn.is_cluster() {
            let calls = cmds.into_iter().map(|cmd| {
                self.call(op, t, move |mut c| async move {
                    cmd.query_async::<Value>(&mut c).await
                })
            });
            let results = futures_util::future::join_all(calls).await;
            return results.iter().all(Option::is_some);
        }
        let mut ok = true;
        for chunk in cmds.chunks(BATCH) {
            let mut pipe = redis::pipe();
            for c in chunk {
                pipe.add_command(c.clone()).ignore();
            }
            let r: Option<()> = self
                .call(op, t, |mut c| async move { pipe.query_async(&mut c).await })
                .await;
            ok &= r.is_some();
        }
        ok
    }

    /// Every `refresh_interval`: renew the Redis TTL of every session used since the last
    /// round (one `PEXPIRE` each, pipelined), so a session busy on this gateway never expires
    /// in Redis, at one write per session per round whatever its request rate.
    async fn refresher(self: Arc<Self>, now: Now) {
        if self.ttl_ms == 0 {
            return;
        }
        let every = self.conf.refresh_every(self.ttl_ms);
        let mut since = now();
        loop {
            tokio::time::sleep(every).await;
            let now = now();
            // Seconds are whole in the overlay: ask from the second before, overlap is cheap.
            let keys = self.overlay.seen_since(since.saturating_sub(1000));
            if keys.is_empty() || !self.is_up() {
                since = now;
                continue;
            }
            let cmds = keys
                .into_iter()
                .map(|k| {
                    let mut c = redis::cmd("PEXPIRE");
                    c.arg(self.keys.pin(k)).arg(self.ttl_ms);
                    c
                })
                .collect();
            if self.exec(op::REFRESH, cmds).await {
                since = now;
            }
        }
    }
}
