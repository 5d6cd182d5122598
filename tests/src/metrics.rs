//! Reading Prometheus text exposition format (enough for assertions).

/// One sample: metric name, labels in order, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Every sample of a text exposition; comment lines and lines that do not parse are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inner)?;
        labels = parsed;
        rest = after;
    }
    let value_text = rest.split_whitespace().next()?;
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// `a="x",b="y\"z"}` → labels and the text after `}`.
fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        let (key, after_key) = s.split_once('=')?;
        let mut chars = after_key.strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        };
        labels.push((key.trim().to_string(), value));
        s = &after_key[1 + end + 1..];
    }
}

/// Sum of every sample named `name` whose labels include all of `labels` (other labels may be
/// present); `None` when no sample matches. Reading a metric as 0 when its series is missing is
/// how a misspelt name or label passes an `== 0` assertion: use [`sum`], which refuses that.
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for s in parse(text)
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| labels.iter().all(|(k, v)| s.label(k) == Some(v)))
    {
        *found.get_or_insert(0.0) += s.value;
    }
    found
}

/// [`value`] of a series that must exist: panics, saying which series the family has, when no
/// sample of `name` matches `labels`. So `sum(...) == 0.0` holds only for a real series at 0.
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(text, name, labels).unwrap_or_else(|| panic!("{}", missing(text, name, labels)))
}

/// Why [`value`] found nothing: the family is absent, or which label sets it has.
pub fn missing(text: &str, name: &str, labels: &[(&str, &str)]) -> String {
    let all = parse(text);
    let series: Vec<String> = all
        .iter()
        .filter(|s| s.name == name)
        .take(12)
        .map(|s| format!("{:?}", s.labels))
        .collect();
    if series.is_empty() {
        let mut families: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
        families.dedup();
        format!(
            "no series {name}{labels:?}: the scrape has no metric {name:?} (a misspelt name, or \
             a series the gateway creates on first use; see BORN_ON_FIRST_USE). Metrics: \
             {families:?}"
        )
    } else {
        format!(
            "no series {name}{labels:?} (a misspelt label or value?); its series include:\n  {}",
            series.join("\n  ")
        )
    }
}

/// Families the gateway creates a series of only when it first counts one (name, label
/// names): until then the scrape has no such series, so an assertion that one is 0 cannot
/// tell "nothing happened" from a misspelt name. [`zero_or_unborn`] is for these alone; every
/// other family is pre-registered and read with [`sum`]. `metrics::every_family_is_documented_
/// and_asserted` checks this list against a real gateway.
pub const BORN_ON_FIRST_USE: &[(&str, &[&str])] = &[
    // One series per (upstream, backend, to) at a backend's first health transition.
    (
        "berth_health_transitions_total",
        &["upstream", "backend", "to"],
    ),
    // One series per (upstream, backend, reason) at a backend's first failed check of it.
    (
        "berth_health_check_failures_total",
        &["upstream", "backend", "reason"],
    ),
    // Created by the first upgrade that hands sessions over / drops some.
    ("berth_upgrade_sessions_received_total", &["upstream"]),
    ("berth_upgrade_sessions_dropped_total", &["upstream", "why"]),
];

/// `Ok` when the series `name{labels}` of a [`BORN_ON_FIRST_USE`] family is absent or sums to
/// 0. `Err` when it is not 0, and panics when `name` is not such a family or a label name is
/// not one of its label names (so a misspelling cannot pass).
pub fn zero_or_unborn(text: &str, name: &str, labels: &[(&str, &str)]) -> Result<(), String> {
    let (_, names) = BORN_ON_FIRST_USE
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| {
            panic!(
                "{name} is not created on first use (BORN_ON_FIRST_USE): its series exist from \
                 the start; read it with metrics::sum"
            )
        });
    for (k, _) in labels {
        assert!(names.contains(k), "{name} has no label {k:?}: {names:?}");
    }
    match value(text, name, labels) {
        Some(v) if v != 0.0 => Err(format!("{name}{labels:?} = {v}, want 0 (or no series yet)")),
        _ => Ok(()),
    }
}

/// The metric family names of a scrape (`# TYPE` lines), in order.
pub fn families(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The `promtool` binary: on `PATH`, else installed with `apt-get install prometheus`
/// (Debian's package ships it; needs root, as in CI). Panics when it still cannot be found:
/// a test that needs it fails rather than skips.
pub fn promtool() -> std::path::PathBuf {
    use std::sync::OnceLock;
    static FOUND: OnceLock<Result<std::path::PathBuf, String>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        if let Some(p) = find_promtool() {
            return Ok(p);
        }
        crate::apt_install(&["prometheus"], false)?;
        find_promtool().ok_or_else(|| {
            "promtool still missing after installing Debian's prometheus; run `make deps`"
                .to_string()
        })
    });
    found.clone().unwrap_or_else(|e| panic!("{e}"))
}

fn find_promtool() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("promtool"))
        .find(|p| p.is_file())
}

/// `promtool check metrics` on `text` (the exposition read from stdin): `Err` with its output
/// when it reports any problem or exits non-zero.
pub fn promtool_check(text: &str) -> Result<(), String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run promtool: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("no stdin for promtool")?;
    stdin
        .write_all(text.as_bytes())
        .map_err(|e| format!("writing to promtool: {e}"))?;
    drop(stdin);
    let out = child
        .wait_with_output()
        .map_err(|e| format!("promtool: {e}"))?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("promtool check metrics: {}\n{said}", out.status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP berth_requests_total Requests.
# TYPE berth_requests_total counter
berth_requests_total{upstream="app",backend="b1",reason="new",class="2xx"} 3
berth_requests_total{upstream="app",backend="b2",reason="new",class="2xx"} 4
berth_requests_total{upstream="app",backend="b2",reason="sticky",class="2xx"} 10
berth_affinity_invalid_total{upstream="app",plugin="cookie",why="bad_signature"} 1
odd{a="x\"y,}",b="2"} 5 1700000000
plain 2.5
# TYPE zero counter
zero 0
"#;

    #[test]
    fn sums_matching_series() {
        assert_eq!(sum(TEXT, "berth_requests_total", &[]), 17.0);
        assert_eq!(sum(TEXT, "berth_requests_total", &[("reason", "new")]), 7.0);
        assert_eq!(
            sum(
                TEXT,
                "berth_requests_total",
                &[("backend", "b2"), ("reason", "new")]
            ),
            4.0
        );
        assert_eq!(sum(TEXT, "plain", &[]), 2.5);
        assert_eq!(sum(TEXT, "odd", &[("a", "x\"y,}"), ("b", "2")]), 5.0);
        assert_eq!(sum(TEXT, "zero", &[]), 0.0);
    }

    #[test]
    fn a_missing_series_is_none_not_zero() {
        assert_eq!(
            value(TEXT, "berth_affinity_invalid_total", &[("why", "expired")]),
            None
        );
        assert_eq!(value(TEXT, "missing", &[]), None);
        assert_eq!(value(TEXT, "zero", &[]), Some(0.0));
        assert_eq!(value(TEXT, "plain", &[]), Some(2.5));
    }

    #[test]
    fn sum_refuses_a_misspelt_name_or_label() {
        for (name, labels) in [
            ("berth_request_total", &[][..]),
            ("berth_requests_total", &[("reason", "nwe")][..]),
            ("berth_requests_total", &[("reson", "new")][..]),
        ] {
            let caught = std::panic::catch_unwind(|| sum(TEXT, name, labels));
            assert!(caught.is_err(), "{name}{labels:?} read as a value");
        }
        assert!(missing(TEXT, "berth_requests_total", &[("reason", "nwe")]).contains("reason"));
    }

    #[test]
    fn zero_or_unborn_is_only_for_families_created_on_first_use() {
        let t = "berth_health_transitions_total{upstream=\"app\",backend=\"b1\",to=\"down\"} 1\n";
        let f = "berth_health_transitions_total";
        assert_eq!(
            zero_or_unborn(t, f, &[("backend", "b1"), ("to", "up")]),
            Ok(())
        );
        assert_eq!(zero_or_unborn("", f, &[]), Ok(()));
        assert!(zero_or_unborn(t, f, &[("to", "down")]).is_err());
        assert!(std::panic::catch_unwind(|| zero_or_unborn(t, f, &[("too", "up")])).is_err());
        assert!(
            std::panic::catch_unwind(|| zero_or_unborn(t, "berth_requests_total", &[])).is_err()
        );
    }

    #[test]
    fn families_are_the_type_lines() {
        assert_eq!(
            families(TEXT),
            ["berth_requests_total", "zero"].map(String::from)
        );
    }
}
