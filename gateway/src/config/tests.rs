use super::parse;
use berth_plugins::Registry;

fn config(server: &str) -> super::Config {
    let yaml = format!(
        "{server}upstreams:\n  app:\n    backends:\n      - {{ id: b1, addr: \"127.0.0.1:9\" }}\n"
    );
    parse(&yaml, &Registry::builtin()).expect("valid config")
}

#[test]
fn pingora_timers_default_to_tokio_unless_the_file_says_otherwise() {
    assert_eq!(
        config("").server.fast_timeout_to_tokio_threshold_seconds,
        Some(0)
    );
    assert_eq!(
        config("server:\n  threads: 2\n")
            .server
            .fast_timeout_to_tokio_threshold_seconds,
        Some(0)
    );
    assert_eq!(
        config("server:\n  fast_timeout_to_tokio_threshold_seconds: 900\n")
            .server
            .fast_timeout_to_tokio_threshold_seconds,
        Some(900)
    );
    assert_eq!(
        config("server:\n  fast_timeout_to_tokio_threshold_seconds: null\n")
            .server
            .fast_timeout_to_tokio_threshold_seconds,
        None
    );
}

#[test]
fn one_worker_runs_without_work_stealing_and_the_pool_keeps_1024_unless_the_file_says_otherwise() {
    let server = |yaml: &str| {
        let s = config(yaml).server;
        (s.threads, s.work_stealing, s.upstream_keepalive_pool_size)
    };
    assert_eq!(server(""), (1, false, 1024));
    assert_eq!(server("server:\n  threads: 1\n"), (1, false, 1024));
    assert_eq!(server("server:\n  threads: 4\n"), (4, true, 1024));
    assert_eq!(
        server("server:\n  threads: 1\n  work_stealing: true\n"),
        (1, true, 1024)
    );
    assert_eq!(
        server("server:\n  threads: 4\n  work_stealing: false\n"),
        (4, false, 1024)
    );
    assert_eq!(
        server("server:\n  upstream_keepalive_pool_size: 64\n"),
        (1, false, 64)
    );
}

#[test]
fn forwarding_headers_are_on_unless_turned_off() {
    let up = |extra: &str| {
        let yaml = format!(
            "upstreams:\n  app:\n{extra}    backends:\n      - {{ id: b1, addr: \"127.0.0.1:9\" }}\n"
        );
        parse(&yaml, &Registry::builtin())
            .expect("valid config")
            .upstreams[0]
            .settings
            .forward_headers
    };
    assert!(up(""));
    assert!(!up("    forward_headers: false\n"));
    assert!(parse(
        "upstreams:\n  app:\n    forward_headers: maybe\n    backends:\n      - { id: b1, addr: \"127.0.0.1:9\" }\n",
        &Registry::builtin()
    )
    .is_err());
}

#[test]
fn discovery_defaults_and_backends_become_optional() {
    let yaml = "upstreams:\n  app:\n    discovery: {dns: app.test, port: 8080}\n";
    let c = parse(yaml, &Registry::builtin()).expect("valid config");
    let up = &c.upstreams[0];
    assert!(up.backends.is_empty());
    let d = up.settings.discovery.as_ref().expect("discovery");
    assert_eq!(
        (d.dns.as_str(), d.port, d.resolver, d.weight),
        ("app.test", 8080, None, 1)
    );
    assert_eq!(d.interval, super::defaults::DISCOVERY_INTERVAL);
    assert_eq!(d.timeout, super::defaults::DISCOVERY_TIMEOUT);
    assert_eq!(d.drain_deadline, super::defaults::DISCOVERY_DRAIN_DEADLINE);
    assert!(d.id_key.0.is_empty());
    assert_eq!(format!("{:?}", d.id_key), "IdKey(none)");
    let yaml = "upstreams:\n  app:\n    discovery: {dns: app.test., port: 80, interval: 1s, \
                resolver: \"127.0.0.1:5353\", timeout: 500ms, drain_deadline: 10m, weight: 3}\n    \
                backends: [{id: b1, addr: \"10.0.0.1:80\"}]\n";
    let c = parse(yaml, &Registry::builtin()).expect("valid config");
    let up = &c.upstreams[0];
    let d = up.settings.discovery.as_ref().expect("discovery");
    assert_eq!(up.backends.len(), 1);
    assert_eq!(d.resolver, Some("127.0.0.1:5353".parse().expect("ip:port")));
    assert_eq!(
        (
            d.interval.as_millis(),
            d.timeout.as_millis(),
            d.drain_deadline.as_secs(),
            d.weight
        ),
        (1000, 500, 600, 3)
    );
}

#[test]
fn websocket_timeouts_and_protocol_default_and_read() {
    use super::UpstreamProtocol;
    use std::time::Duration;
    let s = &config("").upstreams[0].settings;
    assert_eq!(s.websocket.idle_timeout, Duration::from_secs(3600));
    assert_eq!(s.websocket.send_timeout, Duration::from_secs(60));
    assert_eq!(s.protocol, UpstreamProtocol::Http1);
    let yaml = "upstreams:\n  app:\n    protocol: h2c\n    websocket: {idle_timeout: 90s, send_timeout: 5s}\n    backends:\n      - { id: b1, addr: \"127.0.0.1:9\" }\n";
    let c = parse(yaml, &Registry::builtin()).expect("valid config");
    let s = &c.upstreams[0].settings;
    assert_eq!(s.websocket.idle_timeout, Duration::from_secs(90));
    assert_eq!(s.websocket.send_timeout, Duration::from_secs(5));
    assert_eq!(s.protocol, UpstreamProtocol::H2c);
}

#[test]
fn the_registry_is_memory_by_default_global_or_per_upstream() {
    use super::registry::DEFAULT_COMMAND_TIMEOUT;
    use super::RegistryConf;
    let yaml = "registry: {type: redis, url: \"redis://10.0.0.7:6379\", key_prefix: fleet}\n\
        routes:\n  - { path_prefix: /a, upstream: a }\n  - { path_prefix: /, upstream: b }\n\
        upstreams:\n  a:\n    backends: [{ id: b1, addr: \"127.0.0.1:9\" }]\n  \
        b:\n    registry: {type: memory}\n    backends: [{ id: b1, addr: \"127.0.0.1:9\" }]\n";
    let c = parse(yaml, &Registry::builtin()).expect("valid config");
    let RegistryConf::Redis(r) = &c.upstreams[0].registry else {
        panic!(
            "a inherits the global registry: {:?}",
            c.upstreams[0].registry
        );
    };
    assert_eq!(r.urls, ["redis://10.0.0.7:6379"]);
    assert_eq!(r.key_prefix, "fleet");
    assert!(!r.cluster);
    assert_eq!(r.command_timeout, DEFAULT_COMMAND_TIMEOUT);
    // A quarter of the idle TTL (30m), at most a minute.
    assert_eq!(r.refresh_every(30 * 60 * 1000).as_secs(), 60);
    assert_eq!(r.refresh_every(8_000).as_secs(), 2);
    assert_eq!(c.upstreams[1].registry, RegistryConf::Memory);
    assert_eq!(config("").upstreams[0].registry, RegistryConf::Memory);
    let cluster = "registry: {type: redis, cluster: true, url: [\"redis://10.0.0.7:7000\", \"rediss://10.0.0.8:7000\"]}\n";
    let RegistryConf::Redis(r) = &config(cluster).upstreams[0].registry else {
        panic!("redis");
    };
    assert_eq!(r.urls.len(), 2);
    assert!(r.cluster);
}
