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
/// present). 0 when none matches.
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    parse(text)
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| labels.iter().all(|(k, v)| s.label(k) == Some(v)))
        .map(|s| s.value)
        .sum()
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
        assert_eq!(
            sum(TEXT, "berth_affinity_invalid_total", &[("why", "expired")]),
            0.0
        );
        assert_eq!(sum(TEXT, "plain", &[]), 2.5);
        assert_eq!(sum(TEXT, "odd", &[("a", "x\"y,}"), ("b", "2")]), 5.0);
        assert_eq!(sum(TEXT, "missing", &[]), 0.0);
    }
}
