//! Plain proxying through Berth: request bodies, routes by host and path prefix, the admin
//! listener.
use berth_tests::{config, http, Backend, Client, Gateway, Request};

fn start(routes_yaml: Option<&str>) -> (Vec<Backend>, Gateway) {
    let backends = Backend::start_many(2);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&config::app_config(
        &[config::header_plugin("X-Session-Id")],
        &specs,
    ))
    .expect("config YAML");
    if let Some(routes) = routes_yaml {
        doc["routes"] = serde_yaml::from_str(routes).expect("routes YAML");
    }
    let gw = Gateway::start(&serde_yaml::to_string(&doc).expect("YAML"));
    (backends, gw)
}

#[test]
fn request_bodies_reach_the_backend() {
    let (_backends, gw) = start(None);
    let mut c = gw.client();
    for len in [0usize, 1, 100_000] {
        let r = c.send(&Request::new("POST", "/upload").body(vec![b'a'; len]));
        assert_eq!(r.status, 200, "{}", r.summary());
        assert_eq!(
            r.header("x-seen-body-length"),
            Some(len.to_string().as_str()),
            "{}",
            r.summary()
        );
    }
    let chunked = http::encode_chunked(&[b'c'; 50_000], 4096);
    let r = c.send(
        &Request::new("POST", "/chunked")
            .header("Transfer-Encoding", "chunked")
            .body(chunked),
    );
    assert_eq!(
        (r.status, r.header("x-seen-body-length")),
        (200, Some("50000")),
        "{}",
        r.summary()
    );
    assert_eq!(
        c.connections_opened(),
        1,
        "every request on one keep-alive connection"
    );
}

#[test]
fn routes_match_host_and_path_prefix() {
    let routes = r#"[{host: api.example, path_prefix: /api, upstream: app}]"#;
    let (_backends, gw) = start(Some(routes));
    let mut c = gw.client();
    let cases = [
        ("api.example", "/api/users", 200),
        ("API.Example:8080", "/api", 200),
        ("api.example", "/other", 404),
        ("www.example", "/api/users", 404),
    ];
    for (host, path, status) in cases {
        let r = c.send(&Request::get(path).header("Host", host));
        assert_eq!(r.status, status, "Host {host} {path}: {}", r.summary());
        if status == 200 {
            assert!(!r.backend().is_empty(), "{}", r.summary());
        }
    }
}

#[test]
fn admin_listener_answers_health_and_metrics() {
    let (_backends, gw) = start(None);
    let mut admin = Client::new(gw.admin_addr);
    let h = admin.get("/healthz");
    assert_eq!((h.status, h.text().trim()), (200, "ok"), "{}", h.summary());
    gw.client().get("/");
    let m = gw.wait_metric(
        "berth_requests_total",
        &[("upstream", "app"), ("class", "2xx")],
        |v| v >= 1.0,
    );
    assert_eq!(m, 1.0, "{}", gw.metrics());
    let text = gw.metrics();
    assert!(
        text.contains("# TYPE berth_requests_total counter"),
        "{text}"
    );
}
