//! # berth-tests — end-to-end tests of Berth
//!
//! Every test starts its own processes on 127.0.0.1 with fresh ports and stops them by PID:
//!
//! * [`Backend`] — a `berth-demo-backend` (this crate's binary) that echoes what Berth sent it;
//! * [`Gateway`] — the real `berth` binary with a config written to a temp dir, ready once
//!   `/healthz` answers; its log is printed when a test panics;
//! * [`Client`], [`User`], [`CookieJar`] — a small blocking HTTP/1.1 client (keep-alive, chunked,
//!   source address 127.0.0.X) and a simulated browser;
//! * [`browser::Browser`] — headless Chromium over WebDriver (installed on demand);
//! * [`dns::DnsServer`] — a DNS server on 127.0.0.1 answering one name from a set the test
//!   changes (hickory-server);
//! * [`config`] — configs for one upstream `app`; [`token`] — craft signed cookie tokens;
//!   [`tls`] — test certificates (rcgen), TLS listener configs, curl as a TLS client;
//!   [`h2`] — an HTTP/2 client (h2c, or h2 over TLS);
//!   [`metrics`] — read `/metrics`; [`redis`] — a `redis-server` (or a 3-node Redis Cluster)
//!   of the test's own;
//! * [`upgrade`] — `berth -u` (also as a daemon with a pid file): the gateway becomes the new
//!   process, the old one is a [`upgrade::Retired`] to watch exit; [`process`] — pids, signals.
//!
//! The binaries must be built first: `make test` does that (`cargo build -p berth
//! -p berth-tests`, then `cargo test -p berth-tests`).
//!
//! ```no_run
//! use berth_tests::{config, Backend, Gateway};
//! let backends = Backend::start_many(3);
//! let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
//! let gw = Gateway::start(&config::app_config(&[config::cookie_plugin()], &specs));
//! let mut user = gw.user();
//! let first = user.get("/").unwrap();
//! assert_eq!(first.affinity(), "new");
//! assert_eq!(user.get("/").unwrap().backend(), first.backend());
//! ```
#![forbid(unsafe_code)]

pub mod admin;
pub mod backend;
pub mod browser;
pub mod client;
pub mod config;
pub mod deploy;
pub mod dns;
pub mod gateway;
pub mod grpc;
pub mod h2;
pub mod http;
pub mod metrics;
pub mod process;
pub mod redis;
pub mod sessions;
pub mod tls;
pub mod token;
pub mod upgrade;
pub mod websocket;

pub use backend::Backend;
pub use client::{Client, CookieJar, Request, Response, SetCookie, User};
pub use gateway::{berth_check, Gateway};

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A port that was free a moment ago on 127.0.0.1 (bound to port 0, read, released), and not
/// handed out before by this process: the kernel may give a released port again at once, and a
/// test that asks for two (a gateway's listener and its admin address) must get two. Pingora
/// cannot report the port it bound, so the harness picks ports for the gateway this way.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind 127.0.0.1:0");
        let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// `127.0.0.1:<free_port()>`.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A port on 127.0.0.1 that refuses connections for as long as this value lives: bound but
/// never listening, so no other process (or test) can be given it meanwhile. A dead backend.
#[derive(Debug)]
pub struct ClosedPort {
    pub addr: SocketAddr,
    _socket: socket2::Socket,
}

impl ClosedPort {
    pub fn new() -> ClosedPort {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
            .and_then(|s| {
                s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
                    .map(|_| s)
            })
            .expect("bind 127.0.0.1:0");
        let addr = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .expect("a bound IPv4 socket has an address");
        ClosedPort {
            addr,
            _socket: socket,
        }
    }
}

impl Default for ClosedPort {
    fn default() -> Self {
        ClosedPort::new()
    }
}

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `$CARGO_TARGET_DIR/debug`, or `<root>/target/debug`.
pub fn debug_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| {
            if t.is_relative() {
                workspace_root().join(t)
            } else {
                t
            }
        })
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("debug")
}

fn binary(env: &str, name: &str) -> PathBuf {
    let path = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| debug_dir().join(name));
    assert!(
        path.is_file(),
        "{} not found (set {env} to override): run `make test` (it builds the binaries first)",
        path.display()
    );
    path
}

/// `berth-test-plugins` (this crate's binary: `berth` with the test plugins of
/// `src/bin/test_plugins.rs` registered through `berth::Berth::builder`). Panics when missing.
pub fn test_plugins_bin() -> PathBuf {
    binary("BERTH_TEST_PLUGINS_BIN", "berth-test-plugins")
}

/// The JWT example's binary (`plugins/examples/jwt`, a crate outside the workspace built into
/// the same target directory by `make test`): `$BERTH_JWT_BIN`, else
/// `<target>/debug/berth-jwt`. Panics when it is missing.
pub fn jwt_bin() -> PathBuf {
    binary("BERTH_JWT_BIN", "berth-jwt")
}

/// The gateway binary: `$BERTH_BIN`, else `<target>/debug/berth`. Panics when it is missing.
pub fn berth_bin() -> PathBuf {
    binary("BERTH_BIN", "berth")
}

/// Where `make run`'s self-signed certificate lives (relative to the workspace root, as
/// conf/berth.yaml names it).
pub const DEMO_TLS_DIR: &str = "target/demo-tls";

/// Generate the demo certificate of conf/berth.yaml when missing (`berth-demo-cert`, as `make
/// demo-cert` does). Panics when the binary fails.
pub fn ensure_demo_cert() {
    static DONE: std::sync::Once = std::sync::Once::new();
    DONE.call_once(make_demo_cert);
}

fn make_demo_cert() {
    let bin = binary("BERTH_DEMO_CERT_BIN", "berth-demo-cert");
    let out = std::process::Command::new(&bin)
        .arg(DEMO_TLS_DIR)
        .current_dir(workspace_root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    assert!(
        out.status.success(),
        "berth-demo-cert failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The demo backend binary: `$BERTH_DEMO_BACKEND_BIN`, else `<target>/debug/berth-demo-backend`.
pub fn demo_backend_bin() -> PathBuf {
    binary("BERTH_DEMO_BACKEND_BIN", "berth-demo-backend")
}

/// `<target>/test-output/<test>`: where a test saves files worth looking at (screenshots),
/// created if missing.
pub fn test_output_dir(test: &str) -> PathBuf {
    let dir = debug_dir()
        .parent()
        .map_or_else(|| workspace_root().join("target"), Path::to_path_buf)
        .join("test-output")
        .join(test);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// `f(0..n)` on `threads` threads; results in index order.
pub fn par_map<T: Send>(n: usize, threads: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let threads = threads.clamp(1, n.max(1));
    let f = &f;
    let mut parts: Vec<Vec<(usize, T)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| s.spawn(move || (t..n).step_by(threads).map(|i| (i, f(i))).collect()))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut all: Vec<(usize, T)> = parts.drain(..).flatten().collect();
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, t)| t).collect()
}

/// Call `f` every `every` until it returns `Some` or `timeout` passes (`None`); `f` runs at
/// least once.
pub fn wait_for<T>(
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(t) = f() {
            return Some(t);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// How many times each value occurs.
pub fn tally<'a>(values: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for v in values {
        *m.entry(v.to_string()).or_insert(0) += 1;
    }
    m
}

/// Check that each of `names` got between `lo` and `hi` (inclusive) of `counts` and nothing
/// else got any; `Err` describes the spread.
pub fn check_spread(
    counts: &BTreeMap<String, usize>,
    names: &[&str],
    lo: usize,
    hi: usize,
) -> Result<(), String> {
    let bad: Vec<String> = names
        .iter()
        .map(|n| (n, counts.get(*n).copied().unwrap_or(0)))
        .filter(|(_, c)| *c < lo || *c > hi)
        .map(|(n, c)| format!("{n}={c}"))
        .chain(
            counts
                .iter()
                .filter(|(k, _)| !names.contains(&k.as_str()))
                .map(|(k, c)| format!("unexpected {k:?}={c}")),
        )
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "spread {counts:?} outside [{lo}, {hi}] per backend: {}",
            bad.join(", ")
        ))
    }
}

/// At most `n` items of a list of failures, for assertion messages.
pub fn first_n(items: &[String], n: usize) -> String {
    let mut s: Vec<&str> = items.iter().take(n).map(String::as_str).collect();
    if items.len() > n {
        s.push("…");
    }
    s.join("\n  ")
}

/// Install Debian `packages` with apt-get (through `sudo` unless root, as CI is), with their
/// recommended packages or not. `Err` with the command and its output when it fails. For tools
/// a test needs and must not skip without.
pub fn apt_install(packages: &[&str], recommends: bool) -> Result<(), String> {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    let sudo = if root { "" } else { "sudo " };
    let script =
        format!(
        "{sudo}apt-get update -qq && DEBIAN_FRONTEND=noninteractive {sudo}apt-get install -y -qq \
         {}{}",
        if recommends { "" } else { "--no-install-recommends " },
        packages.join(" ")
    );
    eprintln!("installing: {script}");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .output()
        .map_err(|e| format!("cannot run `{script}`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{script}` failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn par_map_keeps_order() {
        assert_eq!(
            par_map(10, 3, |i| i * 2),
            (0..10).map(|i| i * 2).collect::<Vec<_>>()
        );
        assert!(par_map(0, 4, |i| i).is_empty());
    }

    #[test]
    fn spread_check() {
        let c = tally(["a", "b", "b", "c"]);
        assert!(check_spread(&c, &["a", "b", "c"], 1, 2).is_ok());
        assert!(check_spread(&c, &["a", "b"], 1, 2).is_err());
        assert!(check_spread(&c, &["a", "b", "c", "d"], 1, 2).is_err());
        assert!(check_spread(&c, &["a", "b", "c"], 2, 2).is_err());
    }

    #[test]
    fn free_ports_are_bindable() {
        let p = free_port();
        assert_ne!(p, 0);
        TcpListener::bind(("127.0.0.1", p)).expect("the port is free");
    }
}
