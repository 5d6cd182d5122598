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
