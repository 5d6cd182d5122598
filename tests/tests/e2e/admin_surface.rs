//! The admin surface: not on the public address, a token required, failed attempts counted.
use berth_tests::admin::TOKEN;
use berth_tests::{config, Backend, Gateway, Request};
use std::path::Path;

#[test]
fn shipped_configs_keep_the_admin_listener_on_loopback() {
    let root = berth_tests::workspace_root();
    let mut files: Vec<_> = ["conf", "conf/examples"]
        .iter()
        .flat_map(|d| std::fs::read_dir(root.join(d)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.push(root.join("deploy/docker/berth.yaml"));
    assert!(files.len() > 5, "{files:?}");
    for f in &files {
        let doc: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        let listen = doc["admin"]["listen"].as_str().unwrap_or("127.0.0.1:9180");
        let ip: std::net::SocketAddr = listen.parse().unwrap();
        let container = f.ends_with(Path::new("docker/berth.yaml"));
        assert!(
            ip.ip().is_loopback() || container,
            "{}: admin.listen {listen} is not loopback",
            f.display()
        );
    }
}

#[test]
fn the_proxy_listener_does_not_serve_the_admin_api() {
    let b = Backend::start("b1");
    let gw = Gateway::start_with_admin(&config::app_config(&[], &[b.spec()]));
    for path in ["/admin/backends", "/metrics", "/readyz", "/admin/ring"] {
        let r = gw
            .client()
            .fresh_connections()
            .send(&Request::get(path).header("Authorization", &format!("Bearer {TOKEN}")));
        // Proxied to the application like any path: the backend answers, not the admin API.
        assert_eq!(
            (r.status, r.backend()),
            (200, "b1"),
            "{path}: {}",
            r.summary()
        );
        assert!(!r.text().contains("berth_"), "{path}: {}", r.text());
        assert!(
            !r.text().contains(&b.addr.to_string()),
            "{path}: {}",
            r.text()
        );
    }
}

#[test]
fn failed_admin_attempts_are_counted_and_a_valid_token_is_not() {
    let b = Backend::start("b1");
    let gw = Gateway::start_with_admin(&config::app_config(&[], &[b.spec()]));
    let denied = |gw: &Gateway| gw.metric("berth_admin_denied_total", &[]);
    assert_eq!(denied(&gw), 0.0);
    let wrong = [
        None,
        Some("Bearer nope".to_string()),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
        Some(format!("bearer {TOKEN}")),
        Some(TOKEN.to_string()),
    ];
    for auth in &wrong {
        let r = gw.admin_send("GET", "/admin/backends", None, auth.as_deref());
        assert_eq!(r.status, 401, "{auth:?}: {}", r.summary());
        assert!(!r.text().contains(&b.addr.to_string()));
    }
    assert_eq!(denied(&gw), wrong.len() as f64);
    for _ in 0..3 {
        assert_eq!(gw.admin("GET", "/admin/backends", None).status, 200);
    }
    assert_eq!(
        denied(&gw),
        wrong.len() as f64,
        "valid calls were counted as denied"
    );
}
