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
use berth_tests::{berth_check, config, metrics, sessions, workspace_root, Backend, Gateway};
use serde::Deserialize;
use serde_yaml::Value as Yaml;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Metrics the deploy files may name although this Berth does not export them yet (none: every
/// name must be in a real scrape).
const NOT_YET_EXPORTED: &[&str] = &[];

/// Labels Prometheus attaches to every scraped series (target labels), plus `__name__`.
const TARGET_LABELS: &[&str] = &["instance", "job", "namespace", "pod", "__name__"];

fn deploy() -> PathBuf {
    workspace_root().join("deploy")
}

/// Every file under `dir`, recursively, sorted.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every document of a (multi-document) YAML file.
fn yaml_docs(path: &Path) -> Vec<Yaml> {
    let text = read(path);
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Yaml::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

fn yaml(rel: &str) -> Yaml {
    let mut docs = yaml_docs(&deploy().join(rel));
    assert_eq!(docs.len(), 1, "{rel}: expected one YAML document");
    docs.remove(0)
}

fn json(rel: &str) -> serde_json::Value {
    let path = deploy().join(rel);
    serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn is_yaml(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}

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

/// A PromQL expression and where it came from.
struct Query {
    from: String,
    expr: String,
}

/// Every PromQL expression (and metric name) the deploy files use.
fn queries() -> Vec<Query> {
    let mut out = Vec::new();
    let rules = yaml("prometheus/berth-rules.yml");
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            out.push(Query {
                from: format!("rule {}", rule["alert"].as_str().unwrap_or("?")),
                expr: rule["expr"].as_str().expect("expr").to_string(),
            });
        }
    }
    let dash = json("grafana/berth-dashboard.json");
    for panel in dash["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().into_iter().flatten() {
            out.push(Query {
                from: format!("panel {:?}", panel["title"]),
                expr: t["expr"].as_str().expect("expr").to_string(),
            });
        }
    }
    for var in dash["templating"]["list"].as_array().expect("templating") {
        if let Some(def) = var["definition"].as_str() {
            out.push(Query {
                from: format!("variable {}", var["name"]),
                // label_values(<selector>, label): the selector part is PromQL.
                expr: def
                    .trim_start_matches("label_values(")
                    .rsplit_once(',')
                    .map_or(def, |(sel, _)| sel)
                    .to_string(),
            });
        }
    }
    let hpa = yaml("k8s/hpa.yaml");
    for m in hpa["spec"]["metrics"].as_sequence().expect("metrics") {
        if let Some(name) = m["pods"]["metric"]["name"].as_str() {
            out.push(Query {
                from: "hpa".into(),
                expr: name.to_string(),
            });
        }
    }
    let adapter = yaml("k8s/prometheus-adapter/values.yaml");
    for rule in adapter["rules"]["custom"]
        .as_sequence()
        .expect("custom rules")
    {
        out.push(Query {
            from: "prometheus-adapter".into(),
            expr: rule["seriesQuery"]
                .as_str()
                .expect("seriesQuery")
                .to_string(),
        });
    }
    out
}

/// `berth_*` identifiers in `expr`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("berth_") {
        let start = i + pos;
        let boundary =
            start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        if boundary {
            names.insert(expr[start..end].to_string());
        }
        i = end;
    }
    names
}

/// Label names `expr` selects on (`{name op "..."}`) or groups by (`by (a, b)`).
fn label_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').map_or(rest.len(), |c| open + c);
        for matcher in rest[open + 1..close].split(',') {
            let name: String = matcher
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && !name.starts_with("<<") {
                out.insert(name);
            }
        }
        rest = &rest[close.min(rest.len())..];
        if rest.is_empty() {
            break;
        }
        rest = &rest[1..];
    }
    for kw in ["by (", "by(", "without ("] {
        let mut rest = expr;
        while let Some(p) = rest.find(kw) {
            let after = &rest[p + kw.len()..];
            let close = after.find(')').unwrap_or(after.len());
            out.extend(
                after[..close]
                    .split(',')
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with("<<"))
                    .map(str::to_string),
            );
            rest = &after[close..];
        }
    }
    out
}

/// Scrape a Berth that went through: sessions by cookie and by header, a forged cookie, a
/// backend killed under health checks (so lazily-created series exist).
fn scenario_scrape() -> String {
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
    let gw = Gateway::start_with_admin(&yaml);
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

/// `promtool`: on PATH, else installed from Debian's `prometheus` package.
fn promtool() -> PathBuf {
    let on_path = |p: &str| Path::new(p).join("promtool");
    let found = std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(on_path)
        .find(|p| p.is_file());
    if let Some(p) = found {
        return p;
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    let sudo = if root { "" } else { "sudo " };
    let script = format!(
        "{sudo}apt-get update -qq && DEBIAN_FRONTEND=noninteractive {sudo}apt-get install -y -qq prometheus"
    );
    let ok = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "`{script}` failed");
    PathBuf::from("/usr/bin/promtool")
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
