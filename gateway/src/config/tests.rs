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
