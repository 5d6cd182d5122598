//! Berth's end-to-end tests: ONE test binary (`cargo test -p berth-tests --test e2e`), one
//! module per file of this folder. Each test starts its own `berth` and backend processes on
//! fresh ports (see the `berth_tests` library), so tests share nothing but the machine.
//!
//! They were 27 binaries (`tests/tests/*.rs`) until issue 13: each linked the harness and its
//! dependencies again, and `cargo test` ran them one after another. A test's full name is
//! `<module>::<test>`, e.g. `cargo test -p berth-tests --test e2e health::` runs the health
//! tests and `... --test e2e -- --exact drain::a_drain_deadline_reassigns_what_is_left` one test.
//!
//! # Adding a test file
//!
//! 1. Put it here: `tests/tests/e2e/<name>.rs`, starting with a `//!` line that says what it
//!    proves, and `use berth_tests::...` as any other file here.
//! 2. Add `mod <name>;` below, in alphabetical order (one line per file). A file without its
//!    `mod` line is not compiled at all; [`layout::every_file_is_a_module`] fails then, and
//!    also when a test file is put directly in `tests/tests/` (which would be a binary of its
//!    own again).
//! 3. Helpers used by one file stay in it (or in `<name>/` as its submodules, like
//!    `upgrade/scenario.rs`); helpers used by several go into the library (`tests/src/`).
//!
//! Tests run two at a time in this one process (`make test` passes `--test-threads=2`), in
//! any pairing: a test may not depend on process-wide state (environment variables, the
//! current directory, statics) nor on fixed ports, and must not assume it runs alone on the
//! machine — give timing-sensitive configs generous timeouts and wait for conditions, never
//! for a fixed time (see `tests/README.md`).

mod access_log;
mod admin_api;
mod admin_status;
mod admin_surface;
mod conf_files;
mod conn_limits;
mod connection_affinity;
mod cookie_affinity;
mod dashboard;
mod deploy_files;
mod discovery;
mod drain;
mod failover;
mod fleet;
mod grpc;
mod harness_selftest;
mod header_affinity;
mod health;
mod hostile_edge;
mod hostile_http;
mod http2;
mod ip_affinity;
mod jwt;
mod kill_under_load;
mod live_membership;
mod load;
mod membership;
mod metrics;
mod migrate;
mod new_sessions;
mod plugin_sdk;
mod proxy_basics;
mod retries;
mod session_flood;
mod tls_listener;
mod token_security;
mod upgrade;
mod upgrade_drain;
mod upgrade_soak;
mod upstream_tls;
mod url_affinity;
mod websocket;
mod websocket_bad_input;
mod websocket_upgrade;

/// The layout of this test binary checks itself.
mod layout {
    use std::path::Path;

    /// Every `*.rs` file of `tests/tests/e2e/` has its `mod` line in `main.rs`, and no test
    /// file sits directly in `tests/tests/` (it would be compiled as a binary of its own).
    #[test]
    fn every_file_is_a_module() {
        let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
        let here = tests.join("e2e");
        let main = std::fs::read_to_string(here.join("main.rs")).expect("read main.rs");
        let declared: Vec<&str> = main
            .lines()
            .filter_map(|l| l.strip_prefix("mod ")?.strip_suffix(';'))
            .collect();
        let mut problems = Vec::new();
        for entry in std::fs::read_dir(&here).expect("read tests/tests/e2e") {
            let path = entry.expect("a directory entry").path();
            let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            if path.extension().is_some_and(|e| e == "rs")
                && stem != "main"
                && !declared.contains(&stem)
            {
                problems.push(format!(
                    "tests/tests/e2e/{stem}.rs has no `mod {stem};` in main.rs: it is not compiled"
                ));
            }
        }
        for name in &declared {
            if !here.join(format!("{name}.rs")).is_file() {
                problems.push(format!("main.rs declares `mod {name};` without {name}.rs"));
            }
        }
        for entry in std::fs::read_dir(&tests).expect("read tests/tests") {
            let path = entry.expect("a directory entry").path();
            if path.extension().is_some_and(|e| e == "rs") {
                problems.push(format!(
                    "{} is a test binary of its own: move it to tests/tests/e2e/ and add its \
                     `mod` line to main.rs",
                    path.display()
                ));
            }
        }
        let mut sorted = declared.clone();
        sorted.sort_unstable();
        if sorted != declared {
            problems.push(format!("keep the `mod` lines sorted: {sorted:?}"));
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}
