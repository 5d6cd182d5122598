//! Issue #5, item 5: the files under `deploy/` are what they claim to be.
//!
//! * Every YAML (multi-document) and JSON file parses.
//! * Every Berth metric named by the Prometheus rules, the Grafana dashboard, the HPA and the
//!   prometheus-adapter rules appears in a real scrape of a running Berth (after a scenario that
//!   makes the lazily-created series exist), with the labels the queries select on — except an
//!   explicit allow-list of metrics being added elsewhere.
//! * The embedded Berth configurations (the k8s ConfigMap, deploy/docker/berth.yaml) pass
//!   `berth -t`; ports, probe paths, names and grace periods agree across the manifests, the
//!   Dockerfile and those configurations.
//! * `promtool` accepts the scrape config and the rules, the rule unit tests pass, and every
//!   Grafana query is valid PromQL (Debian's `prometheus` package is installed when promtool
//!   is missing).
use berth_tests::deploy::{
    deploy, is_yaml, json, label_names, metric_names, queries, read, walk, yaml, yaml_docs,
};
use berth_tests::metrics::promtool;
use berth_tests::{berth_check, config, metrics, sessions, Backend, Gateway};
use serde_yaml::Value as Yaml;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Metrics the deploy files may name although this Berth does not export them yet (none: every
/// name must be in a real scrape).
const NOT_YET_EXPORTED: &[&str] = &[];

/// Labels Prometheus attaches to every scraped series (target labels), plus `__name__`.
const TARGET_LABELS: &[&str] = &["instance", "job", "namespace", "pod", "__name__"];

#[test]
fn every_yaml_and_json_file_parses() {
    let files = walk(&deploy());
    let mut parsed = Vec::new();
    for f in &files {
        let rel = f
            .strip_prefix(deploy())
            .expect("under deploy/")
            .display()
            .to_string();
        if is_yaml(f) {
            let docs = yaml_docs(f);
            assert!(!docs.is_empty(), "{rel}: no YAML document");
            for d in &docs {
                assert!(d.is_mapping(), "{rel}: a document is not a mapping");
            }
            parsed.push(rel);
        } else if f.extension().is_some_and(|e| e == "json") {
            json(&rel);
            parsed.push(rel);
        }
    }
    println!("parsed: {parsed:?}");
    for want in [
        "k8s/deployment.yaml",
        "k8s/service.yaml",
        "k8s/configmap.yaml",
        "k8s/hpa.yaml",
        "prometheus/berth-rules.yml",
        "prometheus/prometheus.yml",
        "grafana/berth-dashboard.json",
        "docker/berth.yaml",
    ] {
        assert!(
            parsed.iter().any(|p| p == want),
            "{want} missing: {parsed:?}"
        );
    }
    // Every Kubernetes manifest names its kind and itself.
    for f in walk(&deploy().join("k8s")).iter().filter(|f| is_yaml(f)) {
        if f.ends_with("prometheus-adapter/values.yaml") {
            continue; // Helm values, not a manifest
        }
        for d in yaml_docs(f) {
            for key in ["apiVersion", "kind"] {
                assert!(d[key].is_string(), "{}: no {key}", f.display());
            }
            if d["kind"] != "Kustomization" {
                assert!(
                    d["metadata"]["name"].is_string(),
                    "{}: no name",
                    f.display()
                );
            }
        }
    }
}

/// Scrape a Berth with a TLS listener and a Redis session registry that went through: sessions by cookie and by header, a
/// forged cookie, a backend killed under health checks (so lazily-created series exist).
fn scenario_scrape() -> String {
    let certs = tempfile::tempdir().expect("temp dir");
    let cert = berth_tests::tls::self_signed(&["deploy.test"]).write(certs.path(), "deploy");
    let mut backends = Backend::start_many(2);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let yaml = config::app_config(
        &[
            config::cookie_plugin(),
            config::header_plugin(sessions::HEADER),
        ],
        &specs,
    );
    let yaml = config::set(
        &yaml,
        "upstreams.app.health",
        "{type: tcp, interval: 100ms, timeout: 500ms, rise: 1, fall: 1}",
    );
    // A shared registry: the registry families (and their alert rules) exist only then.
    let redis = berth_tests::redis::Redis::start();
    let registry = format!("{{type: redis, url: {}}}", redis.url());
    let yaml = config::set(&yaml, "upstreams.app.registry", &registry);
    let tls = berth_tests::tls::listener(berth_tests::free_addr(), &[&cert], "");
    let yaml = berth_tests::tls::with_listeners(&yaml, &[tls]);
    let gw = Gateway::start_with_admin(&yaml);
    gw.wait_metric("berth_registry_up", &[], |v| v == 1.0);
    let mut user = gw.user();
    for _ in 0..3 {
        assert_eq!(user.get("/").expect("GET /").status, 200);
    }
    sessions::open(&gw, &sessions::ids(0, 20), 2);
    let forged = berth_tests::Request::get("/").header("Cookie", "berth=v1.k1.b1.1.forged");
    assert_eq!(gw.client().send(&forged).status, 200);
    backends[1].kill();
    gw.wait_backend("b2", "down", Duration::from_secs(10), |b| {
        b.health == "down"
    });
    gw.metrics()
}

#[test]
fn every_metric_the_deploy_files_use_is_exported() {
    let text = scenario_scrape();
    let mut labels: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in metrics::parse(&text) {
        labels
            .entry(s.name.clone())
            .or_default()
            .extend(s.labels.into_iter().map(|(k, _)| k));
    }
    let queries = queries();
    assert!(
        queries.len() > 20,
        "too few queries found: {}",
        queries.len()
    );
    let mut used = BTreeSet::new();
    let mut problems = Vec::new();
    for q in &queries {
        let names = metric_names(&q.expr);
        let mut known: BTreeSet<String> = TARGET_LABELS.iter().map(|l| l.to_string()).collect();
        for name in &names {
            used.insert(name.clone());
            match labels.get(name) {
                Some(l) => known.extend(l.iter().cloned()),
                None if NOT_YET_EXPORTED.contains(&name.as_str()) => {}
                None => problems.push(format!("{}: {name} is not in the scrape", q.from)),
            }
        }
        let exported = names.iter().all(|n| labels.contains_key(n));
        if exported && !names.is_empty() {
            for l in label_names(&q.expr) {
                if !known.contains(&l) {
                    problems.push(format!("{}: label {l:?} is on none of {names:?}", q.from));
                }
            }
        }
    }
    println!("metrics used by deploy/: {used:?}");
    assert!(
        problems.is_empty(),
        "{}\n--- scrape ---\n{text}",
        problems.join("\n")
    );
    // The core signals are really covered (the checks above are not vacuous).
    for core in [
        "berth_backend_up",
        "berth_sessions",
        "berth_requests_total",
        "berth_pins_total",
        "berth_sessions_active",
    ] {
        assert!(used.contains(core), "{core} is used nowhere in deploy/");
    }
}

/// The configuration embedded in the ConfigMap.
fn configmap_berth_yaml() -> String {
    let cm = yaml("k8s/configmap.yaml");
    cm["data"]["berth.yaml"]
        .as_str()
        .expect("data.berth.yaml")
        .to_string()
}

#[test]
fn embedded_berth_configs_pass_berth_t() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cm = dir.path().join("configmap-berth.yaml");
    std::fs::write(&cm, configmap_berth_yaml()).expect("write");
    for path in [cm, deploy().join("docker/berth.yaml")] {
        let (code, stderr) = berth_check(&path);
        assert_eq!(code, 0, "berth -t -c {}: {stderr}", path.display());
    }
    // And `berth -t` does reject a broken one (the check is not vacuous).
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        configmap_berth_yaml().replace("10.96.100.10:8000", "nowhere"),
    )
    .expect("write");
    let (code, stderr) = berth_check(&bad);
    assert_eq!(code, 2, "{stderr}");
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("{addr:?} has no port"))
}

fn int(v: &Yaml) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("not an integer: {v:?}"))
}

#[test]
fn kubernetes_manifests_agree_with_each_other_and_the_config() {
    let conf: Yaml = serde_yaml::from_str(&configmap_berth_yaml()).expect("berth.yaml");
    let proxy_port = port_of(conf["listeners"][0]["addr"].as_str().expect("listener"));
    let admin_listen = conf["admin"]["listen"].as_str().expect("admin.listen");
    assert!(
        admin_listen.starts_with("0.0.0.0:"),
        "probes need the pod IP: {admin_listen}"
    );
    let admin_port = port_of(admin_listen);

    let cm = yaml("k8s/configmap.yaml");
    let dep = yaml("k8s/deployment.yaml");
    let pod = &dep["spec"]["template"];
    let labels = pod["metadata"]["labels"].as_mapping().expect("pod labels");
    assert_eq!(
        &dep["spec"]["selector"]["matchLabels"],
        &pod["metadata"]["labels"]
    );
    let c = &pod["spec"]["containers"][0];
    let ports: BTreeMap<String, u64> = c["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().expect("port name").to_string(),
                int(&p["containerPort"]),
            )
        })
        .collect();
    assert_eq!(ports.get("http"), Some(&u64::from(proxy_port)), "{ports:?}");
    assert_eq!(
        ports.get("admin"),
        Some(&u64::from(admin_port)),
        "{ports:?}"
    );
    for (probe, path) in [
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/healthz"),
        ("startupProbe", "/healthz"),
    ] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "admin", "{probe}");
    }
    // Config: the ConfigMap mounted where the args point.
    let volumes = pod["spec"]["volumes"].as_sequence().expect("volumes");
    let cfg_vol = volumes
        .iter()
        .find(|v| v["configMap"]["name"] == cm["metadata"]["name"])
        .expect("a volume from the ConfigMap");
    let mount = c["volumeMounts"]
        .as_sequence()
        .expect("mounts")
        .iter()
        .find(|m| m["name"] == cfg_vol["name"])
        .expect("the config volume is mounted");
    let conf_path = format!(
        "{}/berth.yaml",
        mount["mountPath"].as_str().expect("mountPath")
    );
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(args, ["-c", conf_path.as_str()]);
    // Pingora writes its socket and pid file under a writable mount.
    if c["securityContext"]["readOnlyRootFilesystem"] == Yaml::Bool(true) {
        for key in ["upgrade_sock", "pid_file"] {
            let p = conf["server"][key].as_str().expect(key);
            let writable = c["volumeMounts"]
                .as_sequence()
                .expect("mounts")
                .iter()
                .any(|m| {
                    m["readOnly"] != Yaml::Bool(true)
                        && p.starts_with(m["mountPath"].as_str().unwrap_or("?"))
                });
            assert!(
                writable,
                "server.{key} {p} is on the read-only root filesystem"
            );
        }
    }
    // Stopping: preStop sleep + Berth's grace + shutdown timeout < terminationGracePeriodSeconds.
    let sleep: u64 = c["lifecycle"]["preStop"]["exec"]["command"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("preStop: [sleep, N]");
    assert_eq!(c["lifecycle"]["preStop"]["exec"]["command"][0], "sleep");
    let grace = int(&conf["server"]["grace_period_seconds"])
        + int(&conf["server"]["graceful_shutdown_timeout_seconds"]);
    let termination = int(&pod["spec"]["terminationGracePeriodSeconds"]);
    assert!(
        sleep + grace < termination,
        "{sleep} + {grace} >= {termination}"
    );
    // Secrets: both variables the config reads come from the Secret.
    assert_eq!(conf["admin"]["token_env"], "BERTH_ADMIN_TOKEN");
    assert!(c["envFrom"][0]["secretRef"]["name"].is_string());

    let svc = yaml("k8s/service.yaml");
    for (k, v) in svc["spec"]["selector"].as_mapping().expect("selector") {
        assert_eq!(labels.get(k), Some(v), "the Service selects other pods");
    }
    for p in svc["spec"]["ports"].as_sequence().expect("ports") {
        let target = p["targetPort"].as_str().expect("named targetPort");
        assert!(
            ports.contains_key(target),
            "targetPort {target} is not a container port"
        );
        assert_ne!(
            target, "admin",
            "the admin port must not be exposed by the Service"
        );
    }
    let hpa = yaml("k8s/hpa.yaml");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], dep["kind"]);
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"],
        dep["metadata"]["name"]
    );
    let pdb = yaml("k8s/pdb.yaml");
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        dep["spec"]["selector"]["matchLabels"]
    );
    // The kustomization lists every manifest in k8s/ (and only existing ones).
    let kust = yaml("k8s/kustomization.yaml");
    let listed: BTreeSet<&str> = kust["resources"]
        .as_sequence()
        .expect("resources")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    let present: BTreeSet<String> = std::fs::read_dir(deploy().join("k8s"))
        .expect("k8s/")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    assert_eq!(
        listed,
        present.iter().map(String::as_str).collect::<BTreeSet<_>>()
    );
    // The Kubernetes scrape config keeps the port the Deployment calls "admin".
    let scrape = yaml("prometheus/prometheus-kubernetes.yml");
    let relabel = scrape["scrape_configs"][0]["relabel_configs"]
        .as_sequence()
        .expect("relabel");
    let keeps: Vec<(&str, &str)> = relabel
        .iter()
        .filter(|r| r["action"] == "keep")
        .map(|r| {
            (
                r["source_labels"][0].as_str().unwrap_or(""),
                r["regex"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(
        keeps.contains(&("__meta_kubernetes_pod_container_port_name", "admin")),
        "{keeps:?}"
    );
    let app = labels
        .get("app.kubernetes.io/name")
        .and_then(Yaml::as_str)
        .expect("app label");
    assert!(
        keeps.contains(&("__meta_kubernetes_pod_label_app_kubernetes_io_name", app)),
        "{keeps:?}"
    );
    for target in ["namespace", "pod"] {
        assert!(
            relabel.iter().any(|r| r["target_label"] == target),
            "no {target} label"
        );
    }
}

#[test]
fn dockerfile_agrees_with_the_container_config() {
    let docker = read(&deploy().join("docker/Dockerfile"));
    let conf = yaml("docker/berth.yaml");
    let proxy = port_of(conf["listeners"][0]["addr"].as_str().expect("listener"));
    let admin = conf["admin"]["listen"].as_str().expect("admin.listen");
    assert!(admin.starts_with("0.0.0.0:"), "{admin}");
    let admin = port_of(admin);
    let line =
        |prefix: &str| -> Vec<&str> { docker.lines().filter(|l| l.starts_with(prefix)).collect() };
    let expose: Vec<u16> = line("EXPOSE ")
        .iter()
        .flat_map(|l| l[7..].split_whitespace())
        .map(|p| p.parse().expect("EXPOSE port"))
        .collect();
    assert!(
        expose.contains(&proxy) && expose.contains(&admin),
        "EXPOSE {expose:?}"
    );
    assert!(
        docker.contains(&format!("http://127.0.0.1:{admin}/healthz")),
        "HEALTHCHECK"
    );
    assert_eq!(
        line("FROM ").len(),
        2,
        "multi-stage: a build and a runtime stage"
    );
    let user = line("USER ");
    assert!(
        user.len() == 1 && !user[0].contains(" 0") && !user[0].contains("root"),
        "{user:?}"
    );
    assert!(docker.contains(r#"CMD ["-c", "/etc/berth/berth.yaml"]"#));
}

fn run_promtool(args: &[&str], dir: &Path) -> String {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn promtool_accepts_the_prometheus_files_and_the_rules_fire() {
    let dir = deploy().join("prometheus");
    // (prometheus-kubernetes.yml: Debian's promtool has no Kubernetes discovery; its structure
    // is checked in kubernetes_manifests_agree_with_each_other_and_the_config.)
    run_promtool(&["check", "config", "prometheus.yml"], &dir);
    run_promtool(&["check", "rules", "berth-rules.yml"], &dir);
    let out = run_promtool(&["test", "rules", "berth-rules.test.yml"], &dir);
    assert!(out.contains("SUCCESS"), "{out}");

    // Every Grafana query is valid PromQL: wrap them as recording rules and check those.
    let tmp = tempfile::tempdir().expect("temp dir");
    let dash = json("grafana/berth-dashboard.json");
    let mut rules = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"]
                .as_str()
                .expect("expr")
                .replace("$__rate_interval", "5m")
                .replace("$upstream", ".*")
                .replace("$instance", ".*");
            rules.push(serde_json::json!({ "record": format!("grafana:panel{}", rules.len()), "expr": expr }));
        }
    }
    let file = serde_json::json!({ "groups": [{ "name": "grafana", "rules": rules }] });
    std::fs::write(tmp.path().join("grafana.yml"), file.to_string()).expect("write");
    let out = run_promtool(&["check", "rules", "grafana.yml"], tmp.path());
    assert!(
        out.contains(&format!("{} rules found", rules.len())),
        "{out}"
    );
}
