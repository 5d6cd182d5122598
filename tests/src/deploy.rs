//! Reading `deploy/`: its files, and the PromQL expressions (with the metric and label names
//! they use) in the Prometheus rules, the Grafana dashboard and the prometheus-adapter/HPA
//! manifests. Used by `tests/tests/e2e/deploy_files.rs`.
use crate::workspace_root;
use serde::Deserialize;
use serde_yaml::Value as Yaml;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub fn deploy() -> PathBuf {
    workspace_root().join("deploy")
}

/// Every file under `dir`, recursively, sorted.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
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

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every document of a (multi-document) YAML file.
pub fn yaml_docs(path: &Path) -> Vec<Yaml> {
    let text = read(path);
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Yaml::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

pub fn yaml(rel: &str) -> Yaml {
    let mut docs = yaml_docs(&deploy().join(rel));
    assert_eq!(docs.len(), 1, "{rel}: expected one YAML document");
    docs.remove(0)
}

pub fn json(rel: &str) -> serde_json::Value {
    let path = deploy().join(rel);
    serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn is_yaml(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}

/// A PromQL expression and where it came from.
pub struct Query {
    pub from: String,
    pub expr: String,
}

/// Every PromQL expression (and metric name) the deploy files use.
pub fn queries() -> Vec<Query> {
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
pub fn metric_names(expr: &str) -> BTreeSet<String> {
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
pub fn label_names(expr: &str) -> BTreeSet<String> {
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
