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
