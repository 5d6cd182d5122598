//! `rediss://`: two gateways share pins through a `redis-server` that speaks TLS only, with a
//! certificate from a private CA (`ca_file`) and AUTH (`password_env`). A gateway without
//! `ca_file` (the system's roots) cannot verify that server: it routes every request anyway
//! (degraded), its registry down.
use super::{visit, Rng};
use berth_tests::admin::{TOKEN, TOKEN_ENV};
use berth_tests::config::header_app;
use berth_tests::redis::Redis;
use berth_tests::tls::TestCa;
use berth_tests::{Backend, Client, Gateway};

const PW: &str = "fleet-tls-secret";
const PW_ENV: &str = "BERTH_E2E_REDIS_TLS_PW";

fn config(backends: &[Backend], redis: &Redis, ca_file: bool) -> String {
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let ca = match (ca_file, redis.ca_file()) {
        (true, Some(f)) => format!(", ca_file: {:?}", f.display().to_string()),
        _ => String::new(),
    };
    let registry = format!(
        "{{type: redis, url: {}, password_env: {PW_ENV}, key_prefix: tls, \
         timeouts: {{command: 2s, connect: 1s}}{ca}}}",
        redis.url()
    );
    header_app(
        &specs,
        &[
            ("upstreams.app.registry", &registry),
            ("upstreams.app.load", "{bound: 0.1}"),
        ],
    )
}

#[test]
fn two_gateways_share_pins_over_tls_with_a_private_ca_and_auth() {
    let ca = TestCa::new("berth-e2e-redis-ca");
    let redis = Redis::start_tls(&ca, Some(PW));
    assert!(redis.url().starts_with("rediss://"), "{}", redis.url());
    let backends = Backend::start_many(4);
    let yaml = config(&backends, &redis, true);
    let env = [(PW_ENV, PW), (TOKEN_ENV, TOKEN)];
    let up = [("upstream", "app")];
    let gws: Vec<Gateway> = (0..2)
        .map(|_| {
            let gw = Gateway::start_with_env(&yaml, &env);
            let v = gw.wait_metric("berth_registry_up", &up, |v| v == 1.0);
            assert_eq!(v, 1.0, "no TLS connection:\n{}", gw.log_tail(30));
            gw
        })
        .collect();

    // 200 sessions, 4 requests each through a random gateway: one backend each (bounded load
    // alone would place many differently on each gateway).
    let (mut rng, seed) = Rng::seeded();
    let mut clients: Vec<Client> = gws.iter().map(Gateway::client).collect();
    for i in 0..200 {
        let id = format!("tls-{seed:x}-{i}");
        let seen: Vec<String> = (0..4)
            .map(|_| {
                let g = (rng.next() % 2) as usize;
                visit(&mut clients[g], &id).unwrap_or_else(|e| panic!("seed {seed}: {e}"))
            })
            .collect();
        assert!(
            seen.iter().all(|b| *b == seen[0]),
            "seed {seed}: {id} reached {seen:?}"
        );
    }
    let pins = redis.cli(&["--scan", "--pattern", "tls:*:p"]);
    assert_eq!(pins.lines().count(), 200, "pins in Redis over TLS");
    for gw in &gws {
        let m = berth_tests::metrics::sum(&gw.metrics(), "berth_registry_degraded_total", &up);
        assert_eq!(m, 0.0, "{}", gw.log_tail(20));
    }

    // Without ca_file the server's certificate leads to no trusted root: no connection, and
    // requests are still served.
    let blind = Gateway::start_with_env(&config(&backends, &redis, false), &env);
    let mut c = blind.client();
    for i in 0..3 {
        visit(&mut c, &format!("untrusted-{i}")).unwrap_or_else(|e| panic!("{e}"));
    }
    let text = blind.metrics();
    assert_eq!(
        berth_tests::metrics::sum(&text, "berth_registry_up", &up),
        0.0
    );
    assert_eq!(
        berth_tests::metrics::sum(&text, "berth_registry_degraded_total", &up),
        3.0
    );
    // Logged once the connection attempts (with backoff) give up: the certificate is why.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !blind.log().contains("cannot connect to Redis") {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            blind.log_tail(20)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let log = blind.log();
    assert!(
        log.contains("invalid peer certificate"),
        "{}",
        blind.log_tail(5)
    );
}
