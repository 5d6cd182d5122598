//! The per-request path of an upstream: decide (run the affinity chain, select a backend),
//! fail over after a failed connect, learn a key a plugin produced while answering, and end
//! (release the session's in-flight count and count the request). Only pre-resolved metric
//! handles here; a failover away from a backend that is no longer in the set — rare — resolves
//! its label on the spot.
use super::{BackendSet, Clock, Upstream};
use crate::conn_limit::Slot;
use crate::headers::{self, AffinityHeaders};
use crate::metrics::REGISTRY_SAMPLE;
use crate::policy::{AfterError, Answer, Attempt};
use crate::views::RespView;
use berth_plugins::{Affinity, DecisionView, RequestView};
use berth_routing::{Decision, Millis, Reason, Refusal, SessionKey};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;
use std::time::{Duration, Instant};

/// True for one call in [`REGISTRY_SAMPLE`] on this thread (no shared counter: no cache line
/// bouncing between worker threads).
fn sampled() -> bool {
    thread_local! {
        static N: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }
    N.with(|n| {
        let v = n.get().wrapping_add(1);
        n.set(v);
        v % REGISTRY_SAMPLE == 0
    })
}

impl Upstream {
    /// Run the affinity chain and pick a backend of `set`.
    pub fn decide(&self, set: &BackendSet, req: &dyn RequestView, now: Millis) -> Attempt {
        let found = self.chain.key(req);
        if let Some((plugin, why)) = found.invalid {
            self.metrics.invalid(plugin, why).inc();
        }
        if let Some(plugin) = found.panicked {
            self.metrics.panicked(plugin).inc();
        }
        let mut a = Attempt {
            decided_by: found.decided_by,
            key_expires: found.key_expires(),
            invalid: found.invalid.is_some(),
            budget: self.settings.connect_retries,
            ..Attempt::default()
        };
        let mut named = None;
        let timed = found.affinity.is_some() && sampled();
        let t0 = timed.then(Instant::now);
        let chosen = match found.affinity {
            Some(Affinity::Session(key)) => {
                a.point = key.ring_point();
                a.key = Some(key);
                set.router.select(key, now)
            }
            Some(Affinity::Backend { name, key, .. }) => {
                named = Some(name);
                a.point = key.ring_point();
                a.key = Some(key);
                // Only with a shared registry (one probe more): see `agree`.
                a.token_unseen = self.redis.is_some() && self.overlay.info(key).is_none();
                set.router.select_named(name, key, now)
            }
            // Bound to a backend with no session (connection affinity): nothing pinned.
            Some(Affinity::Bound { name, point }) => {
                named = Some(name);
                a.point = point;
                set.router.select_bound(name, point)
            }
            // No key. A session the chain will issue (cookie insert) is placed by load, evenly;
            // a request that starts no session goes by the ring at a random point.
            None if self.issues_sessions => {
                let bits: u64 = rand::random();
                a.point = bits as u32;
                set.router.select_keyless(bits, now)
            }
            None => {
                a.point = rand::random();
                set.router.select_unpinned(a.point, false)
            }
        };
        if let Some(t0) = t0 {
            self.metrics
                .registry_latency
                .observe(t0.elapsed().as_secs_f64());
        }
        match chosen {
            Ok(d) => {
                a.decision = Some(d);
                if let Some(key) = a.key {
                    // The selection counted this request in flight on the session.
                    a.acquired = self.settings.router.track_in_flight;
                    a.moved_from = self.take_moved(key);
                }
            }
            Err(why) => a.refused = Some(why),
        }
        if let Some(d) = a.decision.filter(|d| d.reason == Reason::Failover) {
            self.count_failover(set, &d, named);
        }
        a
    }

    /// The answer to a request no backend could take, counted.
    pub fn refused(&self, why: Refusal) -> Answer {
        match why {
            Refusal::NoBackend => {
                self.metrics.no_backend.inc();
                Answer::NoBackend
            }
            Refusal::Full => {
                self.metrics.full.inc();
                let secs = self.settings.load.retry_after.as_secs();
                Answer::Full {
                    retry_after: u32::try_from(secs).unwrap_or(u32::MAX),
                }
            }
        }
    }

    /// After a failed connect to `a.decision.backend`: the next ring node, re-pinned.
    pub fn failover(&self, set: &BackendSet, a: &mut Attempt, now: Millis) -> Option<Decision> {
        let failed = a.decision?.backend;
        a.failed.push(failed);
        let d = set
            .router
            .failover(a.point, a.key, a.failed.as_slice(), now)?;
        set.backends[failed].metrics.failovers.inc();
        a.decision = Some(d);
        Some(d)
    }

    /// The peer for the attempt's backend — after a failed connect, the next backend first —
    /// holding one of its connection slots (`max_connections`) in `slot`.
    pub async fn peer(
        &self,
        set: &BackendSet,
        a: &mut Attempt,
        slot: &mut Option<Slot>,
        clock: &Clock,
    ) -> Result<Box<HttpPeer>> {
        // A retry goes elsewhere: the failed backend's slot is free again.
        *slot = None;
        if std::mem::take(&mut a.retrying) && self.failover(set, a, clock.now()).is_none() {
            self.metrics.no_backend.inc();
            return Error::e_explain(ErrorType::HTTPStatus(503), "no other backend is available");
        }
        let Some(d) = a.decision else {
            return Error::e_explain(ErrorType::InternalError, "no routing decision");
        };
        if let Some(limit) = &set.backends[d.backend].conns {
            let Some(s) = limit.acquire(self.settings.queue_timeout).await else {
                self.metrics.busy.inc();
                a.busy = true;
                return Error::e_explain(
                    ErrorType::HTTPStatus(503),
                    "backend at its connection limit",
                );
            };
            *slot = Some(s);
        }
        let mut peer = Box::new(set.backends[d.backend].peer.clone());
        if let Some(key) = a.key.filter(|_| self.settings.pool.per_session) {
            // Connections of their own per session: the pool key includes the session.
            peer.group_key ^= key.0 as u64;
        }
        Ok(peer)
    }

    /// The backend's response header is on its way: the affinity chain may add to it (a
    /// cookie) and learn a key from it (see [`Upstream::learn`]).
    pub fn on_response(
        &self,
        set: &BackendSet,
        a: &Attempt,
        (session, resp): (&Session, &mut ResponseHeader),
        clock: &Clock,
        tls: bool,
    ) {
        let Some(d) = a.decision else { return };
        if !self.chain.sees_responses() {
            // Header and IP affinity: nothing to add or learn (and no clocks to read).
            return;
        }
        let view = DecisionView {
            upstream: &self.name,
            backend: set.router.name(d.backend),
            reason: d.reason,
            decided_by_me: false,
            key_expires: a.key_expires,
            now_unix: crate::views::now_unix(),
            session: a.key,
            tls,
            connection: crate::views::connection(session),
        };
        let now = clock.now();
        let learn = |key, replaces| self.learn(set, a, key, replaces, now);
        let panicked = |plugin| self.metrics.panicked(plugin).inc();
        self.chain
            .on_response(&view, a.decided_by, &mut RespView(resp), learn, panicked);
    }

    /// Pin a session key a plugin produced while answering (a learn-mode app cookie, a token
    /// re-issued for a session; not a token for a brand-new session, pinned when it comes back)
    /// to the decided backend. When it replaces the key the request came with,
    /// the old key is dropped so the session is counted once.
    pub fn learn(
        &self,
        set: &BackendSet,
        a: &Attempt,
        key: SessionKey,
        replaces: bool,
        now: Millis,
    ) {
        let Some(d) = a.decision else { return };
        set.router.pin(key, d.backend, now);
        if self.redis.is_some() {
            // Learned here: the other gateways find it in the shared registry.
            self.registry.repin(key, set.router.name(d.backend), None);
        }
        if let Some(old) = a.key.filter(|old| replaces && *old != key) {
            self.registry.remove(old);
        }
    }

    /// What the backend is told about this request (`X-Berth-*` headers).
    fn affinity_headers<'s>(&self, a: &Attempt, set: &'s BackendSet) -> AffinityHeaders<'s> {
        let Some(d) = a.decision else {
            return AffinityHeaders::default();
        };
        let previous = d.previous.or(a.moved_from);
        let affinity = match d.reason {
            _ if previous.is_some() => "reassigned",
            Reason::Failover | Reason::Spill => "reassigned",
            r => r.as_str(),
        };
        AffinityHeaders {
            affinity,
            previous: previous.and_then(|id| self.names.name(id)),
            backup: d
                .backup
                .and_then(|b| set.backends.get(b))
                .and_then(|b| b.id_value.as_ref()),
        }
    }

    /// The request is over: its session's request-in-flight count goes down (at `now`), and,
    /// when it was routed on `set`, it is counted: `berth_requests_total`, its duration
    /// (`elapsed`, when known) and its affinity outcome.
    pub fn end(
        &self,
        set: Option<&BackendSet>,
        a: &Attempt,
        status: Option<u16>,
        elapsed: Option<Duration>,
        now: Millis,
    ) {
        if let Some(key) = a.key.filter(|_| a.acquired) {
            self.overlay.release(key, now);
        }
        let (Some(set), Some(d)) = (set, a.decision) else {
            return;
        };
        set.backends[d.backend].metrics.request(d.reason, status);
        if let Some(e) = elapsed {
            self.metrics.duration(d.reason, e);
        }
        if let Some(o) = a.outcome() {
            self.metrics.affinity(o);
        }
    }

    /// Count failover decision `d` (reason `failover`) made while selecting: the session's
    /// pinned backend (`d.previous`) could not serve it. `named` is the backend a verified
    /// token named, for the label when `d.previous` is unknown to this process.
    fn count_failover(&self, set: &BackendSet, d: &Decision, named: Option<&str>) {
        match d.previous.and_then(|id| set.router.index_of_id(id)) {
            Some(i) => set.backends[i].metrics.failovers.inc(),
            None => {
                let name = d.previous.and_then(|id| self.names.name(id));
                let label = name.as_deref().or(named).unwrap_or("");
                self.metrics.failover_from(&self.name, label);
            }
        }
    }
}

/// What a failure on the way to or from a backend leads to.
impl Upstream {
    /// A connection to the attempt's backend is handed to the request (`reused` from the pool):
    /// counted, and the backend's passive failure streak ends.
    /// A connection to the chosen backend is ready; `since`: when the request's header was
    /// read (for `berth_request_queueing_seconds`).
    pub fn connected(&self, set: &BackendSet, a: &Attempt, reused: bool, since: Option<Instant>) {
        if let Some(since) = since {
            self.metrics.queueing(reused, since.elapsed());
        }
        if let Some(d) = a.decision {
            set.backends[d.backend].metrics.connected(reused);
            self.connection_succeeded(set, d.backend);
        }
    }

    /// The headers of the request to the backend: Berth's `X-Berth-*`, the forwarding ones
    /// (`forward_headers`), and `Connection: close` when keep-alive is off.
    pub fn request_headers(
        &self,
        session: &Session,
        req: &mut RequestHeader,
        set: &BackendSet,
        a: &Attempt,
        tls: bool,
    ) -> Result<()> {
        let h1 = self.settings.protocol == crate::config::UpstreamProtocol::Http1;
        if self.settings.pool.idle_timeout.is_none() && (h1 || session.is_upgrade_req()) {
            // keepalive off: the backend closes after answering, so nothing is pooled (HTTP/1.1
            // only: HTTP/2 has no Connection header).
            req.insert_header(http::header::CONNECTION, "close")?;
        }
        let signal = self.affinity_headers(a, set);
        headers::to_upstream(session, req, &signal, self.settings.forward_headers, tls)
    }

    /// The name of the backend `a` was sent to, in `set`.
    pub fn backend_name<'s>(&self, set: &'s BackendSet, a: &Attempt) -> &'s str {
        a.decision
            .and_then(|d| set.backends.get(d.backend))
            .map_or("", |b| &b.name)
    }

    /// A connect to the decided backend failed: counted, fed to passive health; true when the
    /// request is to try another backend (nothing reached this one, so any request may move).
    pub fn connect_failure(&self, set: &BackendSet, a: &mut Attempt, now: Millis) -> bool {
        let Some(d) = a.decision else { return false };
        set.backends[d.backend].metrics.connect_failures.inc();
        self.connect_failed(set, d.backend, now);
        let retry = a.connect_failed();
        if retry {
            self.metrics.retry_connect.inc();
        }
        retry
    }

    /// A request failed on its way to or from the backend with `e` (see
    /// [`Attempt::proxy_failed`]): true when Pingora is to retry it (on the same backend over
    /// a new connection, or on the next backend).
    pub fn proxy_failure(
        &self,
        a: &mut Attempt,
        session: &Session,
        e: &Error,
        upstream_reused: bool,
    ) -> bool {
        // A client at fault (e.g. a protected header nominated by `Connection`): another
        // backend would refuse it too.
        if e.esource() == &ErrorSource::Downstream {
            return false;
        }
        let retriable = headers::is_idempotent(session.req_header())
            && !session.as_ref().retry_buffer_truncated()
            && session.response_written().is_none();
        match a.proxy_failed(retriable, upstream_reused, &e.retry) {
            AfterError::GiveUp { .. } => false,
            AfterError::SameBackend => true,
            AfterError::NextBackend => {
                self.metrics.retry_idempotent.inc();
                true
            }
        }
    }
}
