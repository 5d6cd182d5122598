//! Golden tests of the shipped configs: every `conf/*.yaml` and `conf/examples/*.yaml` passes
//! `berth -t`; every `conf/invalid/*.yaml` is refused with exit status 2 and prints every line
//! its `# expect: <text>` comments give.
use berth_tests::{berth_check, workspace_root};
use std::path::{Path, PathBuf};

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let dir = workspace_root().join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    files
}

fn name(p: &Path) -> String {
    p.strip_prefix(workspace_root())
        .unwrap_or(p)
        .display()
        .to_string()
}

#[test]
fn shipped_configs_are_valid() {
    let mut files = yaml_files("conf");
    assert!(!files.is_empty(), "no conf/*.yaml at all");
    files.extend(yaml_files("conf/examples"));
    let failures: Vec<String> = files
        .iter()
        .filter_map(|f| match berth_check(f) {
            (0, _) => None,
            (code, stderr) => Some(format!("{}: exit {code}\n{stderr}", name(f))),
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} configs fail `berth -t -c`:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

/// The `# expect: <text>` lines of a file.
fn expectations(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim_start().strip_prefix("# expect:"))
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty())
        .collect()
}

#[test]
fn invalid_configs_are_refused_with_every_expected_error() {
    let files = yaml_files("conf/invalid");
    assert!(
        !files.is_empty(),
        "conf/invalid holds no *.yaml: nothing would be checked"
    );
    let mut failures = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", name(f)));
        let expected = expectations(&text);
        if expected.is_empty() {
            failures.push(format!("{}: no `# expect: <text>` line", name(f)));
            continue;
        }
        let (code, stderr) = berth_check(f);
        if code != 2 {
            failures.push(format!("{}: exit {code}, want 2\n{stderr}", name(f)));
            continue;
        }
        let missing: Vec<&String> = expected
            .iter()
            .filter(|e| !stderr.lines().any(|l| l.contains(e.as_str())))
            .collect();
        if !missing.is_empty() {
            failures.push(format!(
                "{}: stderr lacks {missing:?}\n--- stderr ---\n{stderr}",
                name(f)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} invalid configs misreported:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn expect_lines_are_parsed() {
    let text = "# what\n# expect: a.b: bad\n#expect: not this\n  # expect:   c: d  \nkey: 1\n";
    assert_eq!(expectations(text), vec!["a.b: bad", "c: d"]);
}
