//! A fleet: three Berth processes sharing sessions through one real `redis-server` (or a
//! 3-master Redis Cluster) they were pointed at, four backends. Every session's requests
//! reach one backend whichever gateway they go through, also when its first requests race
//! through all three at once; admin changes made through one gateway reach the others;
//! killing Redis under load fails no request. Placement uses `load.bound` (0.1), so each
//! gateway's own view of the loads would place many sessions differently: agreement comes
//! from the registry, not from identical rings.
use berth_tests::config::header_app;
use berth_tests::redis::{Redis, RedisCluster};
use berth_tests::sessions::HEADER;
use berth_tests::{par_map, Backend, Client, Gateway, Request};
use std::sync::Barrier;

mod admin;
mod cookies;
mod outage;
mod stored;
mod tls;

/// Sessions of the agreement check, requests per session, races.
const SESSIONS: usize = 500;
const REQUESTS: usize = 4;
const RACES: usize = 50;

/// The three gateways' config: header affinity, bounded load, the registry at `urls`.
pub(super) fn fleet_config(backends: &[Backend], urls: &[String], cluster: bool) -> String {
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let url = if cluster {
        format!("[{}]", urls.join(", "))
    } else {
        urls[0].clone()
    };
    let registry = format!(
        "{{type: redis, url: {url}, cluster: {cluster}, key_prefix: e2e, \
         timeouts: {{command: 2s, connect: 1s}}}}"
    );
    header_app(
        &specs,
        &[
            ("upstreams.app.registry", &registry),
            ("upstreams.app.load", "{bound: 0.1}"),
        ],
    )
}

pub(super) fn start_fleet(yaml: &str) -> Vec<Gateway> {
    let gws: Vec<Gateway> = (0..3).map(|_| Gateway::start_with_admin(yaml)).collect();
    for gw in &gws {
        let up = gw.wait_metric("berth_registry_up", &[("upstream", "app")], |v| v == 1.0);
        assert_eq!(up, 1.0, "the registry never came up:\n{}", gw.log_tail(30));
    }
    gws
}

/// A seeded xorshift: the seed is printed, so a failure can be replayed.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn seeded() -> (Rng, u64) {
        let seed = std::env::var("FLEET_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
                    | 1
            });
        eprintln!("fleet: seed {seed} (FLEET_SEED={seed} replays it)");
        (Rng(seed), seed)
    }

    pub(super) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// `GET /` in session `id` through `client`: the backend, or why not.
pub(super) fn visit(client: &mut Client, id: &str) -> Result<String, String> {
    let r = client
        .try_send(&Request::get("/").header(HEADER, id))
        .map_err(|e| format!("session {id}: {e}"))?;
    if r.status != 200 {
        return Err(format!("session {id}: {}", r.summary()));
    }
    Ok(r.backend().to_string())
}

/// `n` sessions named `prefix-i`, `REQUESTS` requests each, every one through a random
/// gateway: each session's backend (they must all agree), or the first disagreement.
pub(super) fn sessions_agree(gws: &[Gateway], prefix: &str, n: usize, seed: u64) -> Vec<String> {
    let results = par_map(n, 8, |i| {
        let id = format!("{prefix}-{i}");
        let mut rng = Rng(seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut clients: Vec<Client> = gws.iter().map(Gateway::client).collect();
        let mut seen = Vec::new();
        for _ in 0..REQUESTS {
            let g = (rng.next() % 3) as usize;
            seen.push((g, visit(&mut clients[g], &id)?));
        }
        if seen.iter().any(|(_, b)| *b != seen[0].1) {
            return Err(format!("session {id} reached several backends: {seen:?}"));
        }
        Ok(seen[0].1.clone())
    });
    results
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("seed {seed}: {e}; {}", registry_state(gws)))
}

/// Each gateway's registry counters, for failure messages.
pub(super) fn registry_state(gws: &[Gateway]) -> String {
    let m = |g: &Gateway, name: &str| {
        berth_tests::metrics::value(&g.metrics(), name, &[]).unwrap_or(-1.0)
    };
    gws.iter()
        .map(|g| {
            format!(
                "[{}: degraded {}, errors {}]",
                g.addr,
                m(g, "berth_registry_degraded_total"),
                m(g, "berth_registry_errors_total")
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `RACES` sessions whose first requests go through all three gateways at the same moment
/// (a barrier per session), then two more each: one backend per session.
fn races_agree(gws: &[Gateway], seed: u64) {
    for i in 0..RACES {
        let id = format!("race-{seed:x}-{i}");
        let barrier = Barrier::new(3);
        let seen: Vec<Result<Vec<String>, String>> = std::thread::scope(|s| {
            let hs: Vec<_> = gws
                .iter()
                .map(|gw| {
                    let (id, barrier) = (&id, &barrier);
                    s.spawn(move || {
                        let mut c = gw.client();
                        c.connect_now().map_err(|e| e.to_string())?;
                        barrier.wait();
                        let mut out = vec![visit(&mut c, id)?];
                        out.push(visit(&mut c, id)?);
                        out.push(visit(&mut c, id)?);
                        Ok(out)
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().expect("no panic"))
                .collect()
        });
        let all: Vec<String> = seen
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"))
            .concat();
        assert!(
            all.iter().all(|b| *b == all[0]),
            "seed {seed}: race session {id} reached several backends: {all:?}"
        );
    }
}

fn agreement(gws: &[Gateway], backends: &[Backend]) {
    let (_, seed) = Rng::seeded();
    let homes = sessions_agree(gws, &format!("s-{seed:x}"), SESSIONS, seed);
    // Bounded load spreads them: every backend has some.
    for b in backends {
        let (name, _) = b.spec();
        assert!(homes.contains(&name), "no session on {name}: {homes:?}");
    }
    races_agree(gws, seed);
    // The registry made the gateways agree: some first pins found another gateway's pin.
    let followed: f64 = gws
        .iter()
        .map(|g| g.metric("berth_registry_round_trips_total", &[("op", "first_pin")]))
        .sum();
    assert!(
        followed >= (SESSIONS + RACES) as f64,
        "first pins: {followed}"
    );
}

#[test]
fn three_gateways_one_redis_agree_on_every_session() {
    let redis = Redis::start();
    let backends = Backend::start_many(4);
    let gws = start_fleet(&fleet_config(&backends, &[redis.url()], false));
    agreement(&gws, &backends);
}

#[test]
fn three_gateways_on_a_redis_cluster_agree_on_every_session() {
    let cluster = RedisCluster::start();
    let backends = Backend::start_many(4);
    let gws = start_fleet(&fleet_config(&backends, &cluster.urls(), true));
    agreement(&gws, &backends);
    // The pins are spread over the three masters (hash tags per session).
    for node in &cluster.nodes {
        let keys: u64 = node.cli(&["DBSIZE"]).trim().parse().unwrap_or(0);
        assert!(keys > 50, "node {} holds {keys} keys", node.port);
    }
}

/// AUTH: the password comes from the variable `password_env` names. With it, pins reach
/// Redis; with a wrong one, Redis refuses every call and requests are still served (from the
/// local cache and the ring: degraded), `berth_registry_up` 0.
#[test]
fn a_password_from_the_environment_authenticates() {
    const PW: &str = "fleet-e2e-secret";
    let redis = Redis::start_with_password(PW);
    let backends = Backend::start_many(2);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let registry = format!(
        "{{type: redis, url: {}, password_env: BERTH_E2E_REDIS_PW, key_prefix: auth, \
         timeouts: {{command: 2s}}}}",
        redis.url()
    );
    let yaml = header_app(&specs, &[("upstreams.app.registry", &registry)]);
    let up = [("upstream", "app")];
    let good = Gateway::start_with_env(&yaml, &[("BERTH_E2E_REDIS_PW", PW)]);
    assert_eq!(
        good.wait_metric("berth_registry_up", &up, |v| v == 1.0),
        1.0
    );
    let mut c = good.client();
    for i in 0..3 {
        visit(&mut c, &format!("auth-{i}")).unwrap_or_else(|e| panic!("{e}"));
    }
    let pins = redis.cli(&["--scan", "--pattern", "auth:*:p"]);
    assert_eq!(pins.lines().count(), 3, "pins in Redis: {pins}");

    let wrong = Gateway::start_with_env(&yaml, &[("BERTH_E2E_REDIS_PW", "not-it")]);
    let mut c = wrong.client();
    for i in 0..3 {
        visit(&mut c, &format!("refused-{i}")).unwrap_or_else(|e| panic!("{e}"));
    }
    let text = wrong.metrics();
    let m = |name| berth_tests::metrics::sum(&text, name, &up);
    assert_eq!(m("berth_registry_up"), 0.0);
    assert_eq!(m("berth_registry_degraded_total"), 3.0);
    // The refusal is logged once the connection attempts (with backoff) give up.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !wrong.log().contains("cannot connect to Redis") {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            wrong.log_tail(20)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
