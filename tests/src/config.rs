//! Gateway configs for tests: one upstream `app` behind a catch-all route, with the affinity
//! plugins and backends a test names. [`crate::Gateway::start`] fills in `server:`, the
//! listener and the admin address.
use serde_yaml::{Mapping, Value};
use std::net::SocketAddr;

/// The upstream every helper config defines.
pub const UPSTREAM: &str = "app";
/// Signing secret of the cookie plugin in [`cookie_plugin`] (key id [`COOKIE_KID`]).
pub const COOKIE_SECRET: &str = "berth-e2e-cookie-secret-0123456789abcdef";
/// Key id of [`COOKIE_SECRET`].
pub const COOKIE_KID: &str = "k1";
/// Cookie name used by [`cookie_plugin`] (Berth's default).
pub const COOKIE_NAME: &str = "berth";
/// Cookie lifetime used by [`cookie_plugin`], in seconds.
pub const COOKIE_TTL_SECS: u64 = 3600;

/// A cookie plugin in insert mode, signing with [`COOKIE_SECRET`] as [`COOKIE_KID`].
pub fn cookie_plugin() -> String {
    format!(
        "type: cookie\nmode: insert\nname: {COOKIE_NAME}\nttl: {COOKIE_TTL_SECS}s\n\
         keys:\n  - id: {COOKIE_KID}\n    secret: \"{COOKIE_SECRET}\"\n"
    )
}

/// A header plugin keyed by `name`.
pub fn header_plugin(name: &str) -> String {
    format!("type: header\nname: {name}\n")
}

/// A client-IP plugin trusting `X-Forwarded-For` from `trusted` CIDRs.
pub fn ip_plugin(trusted: &[&str]) -> String {
    format!("type: ip\ntrusted_proxies: [{}]\n", trusted.join(", "))
}

/// A config with one route `*` `/` → upstream `app` (ketama) with `affinity` plugins (YAML
/// mappings, in order) and `backends` (`id`, `addr`, weight 1).
pub fn app_config(affinity: &[String], backends: &[(String, SocketAddr)]) -> String {
    let plugins: Vec<Value> = affinity
        .iter()
        .map(|p| serde_yaml::from_str(p).unwrap_or_else(|e| panic!("plugin YAML {p:?}: {e}")))
        .collect();
    let backends: Vec<Value> = backends
        .iter()
        .map(|(id, addr)| {
            map(&[
                ("id", Value::from(id.as_str())),
                ("addr", Value::from(addr.to_string())),
                ("weight", Value::from(1)),
            ])
        })
        .collect();
    let upstream = map(&[
        ("hashing", Value::from("ketama")),
        ("points_per_weight", Value::from(160)),
        ("affinity", Value::Sequence(plugins)),
        (
            "sessions",
            map(&[("idle_ttl", "30m".into()), ("max", Value::from(100_000))]),
        ),
        ("connect_timeout", "1s".into()),
        ("read_timeout", "10s".into()),
        ("connect_retries", Value::from(2)),
        ("backends", Value::Sequence(backends)),
    ]);
    let route = map(&[
        ("host", "*".into()),
        ("path_prefix", "/".into()),
        ("upstream", UPSTREAM.into()),
    ]);
    let doc = map(&[
        ("routes", Value::Sequence(vec![route])),
        ("upstreams", map(&[(UPSTREAM, upstream)])),
    ]);
    serde_yaml::to_string(&doc).expect("a YAML value serializes")
}

/// [`app_config`] with the header plugin on [`crate::sessions::HEADER`], then each
/// `(path, yaml)` of `patches` applied with [`set`] (e.g.
/// `("upstreams.app.sessions.idle_ttl", "2s")`).
pub fn header_app(backends: &[(String, SocketAddr)], patches: &[(&str, &str)]) -> String {
    let mut yaml = app_config(&[header_plugin(crate::sessions::HEADER)], backends);
    for (path, value) in patches {
        yaml = set(&yaml, path, value);
    }
    yaml
}

/// Set the value at dotted `path` (mapping keys; a number indexes a sequence) to the YAML
/// `value`, creating missing mappings on the way.
pub fn set(yaml: &str, path: &str, value: &str) -> String {
    let mut doc: Value = serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("config: {e}"));
    let new: Value =
        serde_yaml::from_str(value).unwrap_or_else(|e| panic!("value for {path}: {e}"));
    let mut at = &mut doc;
    for seg in path.split('.') {
        at = match (seg.parse::<usize>(), at) {
            (Ok(i), Value::Sequence(seq)) => seq
                .get_mut(i)
                .unwrap_or_else(|| panic!("{path}: no item {i}")),
            (_, Value::Mapping(m)) => m
                .entry(Value::from(seg))
                .or_insert_with(|| Value::Mapping(Mapping::new())),
            (_, other) => panic!("{path}: {seg:?} inside a non-mapping {other:?}"),
        };
    }
    *at = new;
    serde_yaml::to_string(&doc).expect("a YAML value serializes")
}

fn map(entries: &[(&str, Value)]) -> Value {
    let mut m = Mapping::new();
    for (k, v) in entries {
        m.insert(Value::from(*k), v.clone());
    }
    Value::Mapping(m)
}

/// Complete a config for one test run: `server:` keys the test left out get test defaults
/// (2 threads, 1 s grace, upgrade socket and pid file in `dir`); the first listener's address
/// becomes `listen` (a config without `listeners` gets that one listener) and `admin.listen`
/// the `admin` address (whatever the YAML said).
pub fn complete(
    yaml: &str,
    listen: SocketAddr,
    admin: SocketAddr,
    dir: &std::path::Path,
) -> String {
    let mut doc: Value =
        serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("test config: {e}\n{yaml}"));
    let root = doc
        .as_mapping_mut()
        .expect("test config must be a YAML mapping");
    let server = root
        .entry("server".into())
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    let server = server.as_mapping_mut().expect("`server` must be a mapping");
    let defaults = [
        ("threads", Value::from(2)),
        ("grace_period_seconds", Value::from(1)),
        ("graceful_shutdown_timeout_seconds", Value::from(1)),
        (
            "upgrade_sock",
            dir.join("upgrade.sock").display().to_string().into(),
        ),
        (
            "pid_file",
            dir.join("berth.pid").display().to_string().into(),
        ),
    ];
    for (k, v) in defaults {
        server.entry(k.into()).or_insert(v);
    }
    // The first listener is the gateway's `listen` address; a test may give it other keys (e.g.
    // `h2c: true`) and add listeners of its own after it (e.g. TLS ones, see `crate::tls`).
    match root.get_mut("listeners") {
        Some(Value::Sequence(list)) if !list.is_empty() => {
            list[0]
                .as_mapping_mut()
                .expect("a listener is a mapping")
                .insert("addr".into(), listen.to_string().into());
        }
        _ => {
            root.insert(
                "listeners".into(),
                Value::Sequence(vec![map(&[("addr", listen.to_string().into())])]),
            );
        }
    }
    let admin_map = root
        .entry("admin".into())
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    admin_map
        .as_mapping_mut()
        .expect("`admin` must be a mapping")
        .insert("listen".into(), admin.to_string().into());
    serde_yaml::to_string(&doc).expect("a YAML value serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_config_is_complete_yaml() {
        let yaml = app_config(
            &[cookie_plugin(), header_plugin("X-Session-Id")],
            &[("b1".into(), "127.0.0.1:9001".parse().unwrap())],
        );
        let full = complete(
            &yaml,
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
            std::path::Path::new("/tmp/x"),
        );
        let v: Value = serde_yaml::from_str(&full).unwrap();
        assert_eq!(v["server"]["threads"], Value::from(2));
        assert_eq!(
            v["server"]["upgrade_sock"],
            Value::from("/tmp/x/upgrade.sock")
        );
        assert_eq!(v["listeners"][0]["addr"], Value::from("127.0.0.1:1"));
        assert_eq!(v["admin"]["listen"], Value::from("127.0.0.1:2"));
        let app = &v["upstreams"]["app"];
        assert_eq!(
            app["affinity"][0]["keys"][0]["secret"],
            Value::from(COOKIE_SECRET)
        );
        assert_eq!(app["affinity"][1]["name"], Value::from("X-Session-Id"));
        assert_eq!(app["backends"][0]["addr"], Value::from("127.0.0.1:9001"));
        assert_eq!(v["routes"][0]["upstream"], Value::from("app"));
    }

    #[test]
    fn set_patches_paths() {
        let yaml = header_app(
            &[("b1".into(), "127.0.0.1:9001".parse().unwrap())],
            &[
                ("upstreams.app.sessions.idle_ttl", "2s"),
                ("upstreams.app.health", "{type: tcp, interval: 200ms}"),
                ("upstreams.app.backends.0.drain", "true"),
            ],
        );
        let v: Value = serde_yaml::from_str(&yaml).unwrap();
        let app = &v["upstreams"]["app"];
        assert_eq!(app["sessions"]["idle_ttl"], Value::from("2s"));
        assert_eq!(app["sessions"]["max"], Value::from(100_000));
        assert_eq!(app["health"]["interval"], Value::from("200ms"));
        assert_eq!(app["backends"][0]["drain"], Value::from(true));
        assert_eq!(app["affinity"][0]["name"], Value::from("X-Session-Id"));
    }
}
