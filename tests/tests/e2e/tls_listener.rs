//! Issue 14, stage 1: TLS termination. curl (its own TLS stack) over HTTP/1.1 and HTTP/2 to a
//! TLS listener with two certificates generated at test time: cookie sessions stick, ALPN and
//! SNI pick what they should, TLS 1.0/1.1 are refused, cookies are Secure and the backend is
//! told https; certificate files are checked like the rest of the config; SIGHUP and `berth
//! -u` swap certificates under load without a failed request, and refuse a broken one.
use berth_tests::tls::{self, CertFiles, CertPair};
use berth_tests::{config, free_addr, par_map, wait_for, Backend, Gateway};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A gateway with a plain listener (the harness's) and a TLS one at `.1`, cookie affinity over
/// `backends`, serving `certs` (the first is the default).
fn tls_gateway(backends: &[Backend], certs: &[&CertFiles], extra: &str) -> (Gateway, SocketAddr) {
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let tls_addr = free_addr();
    let yaml = config::app_config(&[config::cookie_plugin()], &specs);
    let yaml = tls::with_listeners(&yaml, &[tls::listener(tls_addr, certs, extra)]);
    (Gateway::start(&yaml), tls_addr)
}

fn text(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One session in one curl run: `requests` requests on one connection with curl's cookie
/// engine (the first response's cookie goes with the next requests); per response
/// `status http_version backend forwarded_proto`, and the Set-Cookie headers seen.
fn curl_session(
    addr: SocketAddr,
    proto: &str,
    requests: usize,
    dir: &Path,
    n: usize,
) -> (Vec<String>, String) {
    let jar = dir.join(format!("jar-{proto}-{n}"));
    let headers = dir.join(format!("headers-{proto}-{n}"));
    let mut args: Vec<String> = [
        "-sSk",
        proto,
        "-c",
        jar.to_str().expect("utf-8 path"),
        "-b",
        jar.to_str().expect("utf-8 path"),
        "-D",
        headers.to_str().expect("utf-8 path"),
        "--max-time",
        "30",
        "-w",
        "%{http_code} %{http_version} %header{x-backend} %header{x-seen-forwarded-proto}\\n",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for _ in 0..requests {
        args.extend(["-o".into(), "/dev/null".into(), format!("https://{addr}/")]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = tls::curl(&args);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "curl {proto} failed: {stderr}");
    let seen = std::fs::read_to_string(&headers).unwrap_or_default();
    let mut lines: Vec<String> = stdout.lines().map(str::to_string).collect();
    if !stderr.trim().is_empty() {
        lines.push(format!("curl said: {}", stderr.trim()));
    }
    (lines, seen)
}

#[test]
fn curl_sessions_stick_over_tls_with_http1_and_http2() {
    let backends = Backend::start_many(3);
    let dir = tempfile::tempdir().expect("temp dir");
    let a = tls::self_signed(&["a.test"]).write(dir.path(), "a");
    let (gw, addr) = tls_gateway(&backends, &[&a], "");
    for (proto, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let sessions = par_map(200, 8, |n| curl_session(addr, proto, 4, dir.path(), n));
        let mut problems = Vec::new();
        for (n, (lines, headers)) in sessions.iter().enumerate() {
            let first: Vec<&str> = lines[0].split(' ').collect();
            for line in lines {
                let f: Vec<&str> = line.split(' ').collect();
                if f.len() != 4 || f[0] != "200" || f[1] != version || f[3] != "https" {
                    problems.push(format!("session {n}: {line:?}"));
                } else if f[2] != first[2] || f[2].is_empty() {
                    problems.push(format!("session {n} moved: {lines:?}"));
                }
            }
            let cookie = headers
                .lines()
                .find(|l| l.to_ascii_lowercase().starts_with("set-cookie: berth="));
            if !cookie.is_some_and(|c| c.contains("; Secure")) {
                problems.push(format!("session {n}: cookie without Secure: {cookie:?}"));
            }
        }
        assert!(
            problems.is_empty(),
            "{proto}: {} problem(s):\n  {}\nTLS handshake failures:\n{}",
            problems.len(),
            berth_tests::first_n(&problems, 10),
            gw.metrics()
                .lines()
                .filter(|l| l.starts_with("berth_tls_handshake_failures_total"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let used = berth_tests::tally(
            sessions
                .iter()
                .map(|(l, _)| l[0].split(' ').nth(2).expect("a backend field")),
        );
        assert_eq!(used.len(), 3, "{proto}: sessions spread over {used:?}");
    }
    let handshakes = |alpn: &str| {
        gw.metric(
            "berth_tls_handshakes_total",
            &[("listener", &addr.to_string()), ("alpn", alpn)],
        )
    };
    assert_eq!(handshakes("http/1.1"), 200.0);
    assert_eq!(handshakes("h2"), 200.0);
}

/// `curl -v` to the TLS listener as `name` (SNI), with extra arguments: (exit ok, stderr).
fn probe(addr: SocketAddr, name: Option<&str>, extra: &[&str]) -> (bool, String) {
    let mut args: Vec<String> = ["-skv", "--max-time", "20", "-o", "/dev/null"]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
    args.extend(tls::url_args(addr, name, "/"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = tls::curl(&args);
    (out.status.success(), text(&out).1)
}

/// A TLS 1.0 or 1.1 ClientHello (`minor` 1 or 2), no extensions, written by hand: what an old
/// client sends whatever the local TLS library still allows. Returns the server's first bytes.
fn old_client_hello(addr: SocketAddr, minor: u8) -> Vec<u8> {
    let mut body = vec![0x03, minor];
    body.extend([7u8; 32]); // random
    body.push(0); // no session id
    body.extend([0x00, 0x06, 0xc0, 0x13, 0x00, 0x2f, 0x00, 0x35]); // 3 CBC suites
    body.extend([0x01, 0x00]); // null compression
    let mut hs = vec![0x01, 0x00];
    hs.extend((body.len() as u16).to_be_bytes());
    hs.extend(body);
    let mut record = vec![0x16, 0x03, minor];
    record.extend((hs.len() as u16).to_be_bytes());
    record.extend(hs);
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.write_all(&record).expect("send the hello");
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    got
}

#[test]
fn sni_alpn_and_versions() {
    let backends = Backend::start_many(1);
    let dir = tempfile::tempdir().expect("temp dir");
    let a = tls::self_signed(&["a.test"]).write(dir.path(), "a");
    let b = tls::self_signed(&["b.test", "*.b.test"]).write(dir.path(), "b");
    let (gw, addr) = tls_gateway(&backends, &[&a, &b], "");
    for (name, want) in [
        (Some("a.test"), "a.test"),
        (Some("b.test"), "b.test"),
        (Some("x.b.test"), "b.test"),
        (Some("unknown.test"), "a.test"),
        (None, "a.test"),
    ] {
        let (ok, v) = probe(addr, name, &[]);
        assert!(ok, "SNI {name:?}: {v}");
        assert_eq!(
            tls::subject_cn(&v).as_deref(),
            Some(want),
            "SNI {name:?}: {v}"
        );
    }
    let (_, v) = probe(addr, Some("a.test"), &["--http2"]);
    assert_eq!(tls::alpn(&v).as_deref(), Some("h2"), "{v}");
    let (_, v) = probe(addr, Some("a.test"), &["--http1.1"]);
    assert_eq!(tls::alpn(&v).as_deref(), Some("http/1.1"), "{v}");

    let listener = addr.to_string();
    let failures = |reason: &str| {
        gw.metric(
            "berth_tls_handshake_failures_total",
            &[("listener", &listener), ("reason", reason)],
        )
    };
    for minor in [1, 2] {
        let got = old_client_hello(addr, minor);
        assert_eq!(
            got.first(),
            Some(&0x15),
            "TLS 1.{} hello: an alert, then close; got {got:?}",
            minor - 1
        );
    }
    // curl, when its TLS library still offers them.
    let (ok, v) = probe(
        addr,
        Some("a.test"),
        &[
            "--tlsv1.0",
            "--tls-max",
            "1.1",
            "--ciphers",
            "DEFAULT@SECLEVEL=0",
        ],
    );
    assert!(!ok, "TLS 1.0/1.1 must be refused: {v}");
    assert!(failures("protocol_version") >= 2.0);
    // Still serving.
    assert!(probe(addr, Some("a.test"), &[]).0);
}

#[test]
fn a_tls_1_3_only_listener_refuses_1_2_and_http2_can_be_off() {
    let backends = Backend::start_many(1);
    let dir = tempfile::tempdir().expect("temp dir");
    let a = tls::self_signed(&["a.test"]).write(dir.path(), "a");
    let (gw, addr) = tls_gateway(&backends, &[&a], ", min_version: \"1.3\", http2: false");
    let (ok, v) = probe(addr, Some("a.test"), &["--tls-max", "1.2"]);
    assert!(!ok, "TLS 1.2 accepted: {v}");
    let (ok, v) = probe(addr, Some("a.test"), &["--http2"]);
    assert!(ok, "{v}");
    assert_eq!(tls::alpn(&v).as_deref(), Some("http/1.1"), "{v}");
    assert!(
        gw.metric(
            "berth_tls_handshake_failures_total",
            &[("reason", "protocol_version")]
        ) >= 1.0
    );
}

#[test]
fn certificate_files_are_checked_as_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = tls::self_signed(&["a.test"]).write(dir.path(), "good");
    let other = tls::self_signed(&["b.test"]).write(dir.path(), "other");
    let old = tls::expired(&["old.test"]).write(dir.path(), "old");
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").expect("write");
    let missing = dir.path().join("missing.pem");
    let cases: Vec<(CertFiles, String)> = vec![
        (
            CertFiles {
                cert: missing.clone(),
                key: good.key.clone(),
            },
            format!("listeners[1].tls.certificates[0].cert: cannot read {missing:?}"),
        ),
        (
            CertFiles {
                cert: good.cert.clone(),
                key: dir.path().to_path_buf(),
            },
            format!(
                "listeners[1].tls.certificates[0].key: cannot read {:?}",
                dir.path()
            ),
        ),
        (
            CertFiles {
                cert: not_pem.clone(),
                key: good.key.clone(),
            },
            format!("listeners[1].tls.certificates[0].cert: {not_pem:?} holds no certificate"),
        ),
        (
            CertFiles {
                cert: good.cert.clone(),
                key: other.key.clone(),
            },
            format!(
                "listeners[1].tls.certificates[0].key: {:?} does not match the certificate in {:?}",
                other.key, good.cert
            ),
        ),
        (
            old.clone(),
            format!(
                "listeners[1].tls.certificates[0].cert: {:?} expired on",
                old.cert
            ),
        ),
    ];
    let backends = [("b1".to_string(), "127.0.0.1:9".parse().expect("addr"))];
    let base = config::app_config(&[], &backends);
    for (files, want) in cases {
        let yaml = tls::with_listeners(&base, &[tls::listener(free_addr(), &[&files], "")]);
        let path = dir.path().join("berth.yaml");
        std::fs::write(&path, &yaml).expect("write");
        let (code, stderr) = berth_tests::berth_check(&path);
        assert_eq!(code, 2, "{want}\n{stderr}");
        assert!(stderr.contains(&want), "want {want:?} in:\n{stderr}");
    }
    // And the good pair passes.
    let yaml = tls::with_listeners(&base, &[tls::listener(free_addr(), &[&good], "")]);
    let path = dir.path().join("berth.yaml");
    std::fs::write(&path, &yaml).expect("write");
    let (code, stderr) = berth_tests::berth_check(&path);
    assert_eq!(code, 0, "{stderr}");
}

/// Handshakes by several client threads, each a curl run of 3 requests on one new
/// connection, until `stop`: (start time, certificate CN, response lines) per run.
type Runs = Arc<Mutex<Vec<(Instant, Option<String>, Vec<String>)>>>;

fn load(
    addr: SocketAddr,
    threads: usize,
    stop: Arc<AtomicBool>,
    runs: Runs,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..threads)
        .map(|t| {
            let (stop, runs) = (stop.clone(), runs.clone());
            std::thread::spawn(move || {
                let proto = if t % 2 == 0 { "--http1.1" } else { "--http2" };
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    let mut args: Vec<String> =
                        ["-skv", proto, "--max-time", "30", "-w", "%{http_code}\\n"]
                            .iter()
                            .map(|s| s.to_string())
                            .collect();
                    for _ in 0..3 {
                        args.extend(["-o".into(), "/dev/null".into()]);
                        args.extend(tls::url_args(addr, Some("test.berth"), "/"));
                    }
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    let out = tls::curl(&args);
                    let (stdout, stderr) = text(&out);
                    let mut lines: Vec<String> = stdout.lines().map(str::to_string).collect();
                    if !out.status.success() {
                        lines.push(format!(
                            "curl failed: {}",
                            stderr.lines().last().unwrap_or("")
                        ));
                    }
                    runs.lock()
                        .expect("lock")
                        .push((start, tls::subject_cn(&stderr), lines));
                }
            })
        })
        .collect()
}

/// The CN a new handshake gets now.
fn served(addr: SocketAddr) -> Option<String> {
    let (_, v) = probe(addr, Some("test.berth"), &[]);
    tls::subject_cn(&v)
}

/// Wait until new handshakes get `cn`; the moment it was seen.
fn wait_served(gw: &Gateway, addr: SocketAddr, cn: &str) -> Instant {
    wait_for(Duration::from_secs(30), Duration::from_millis(50), || {
        (served(addr).as_deref() == Some(cn)).then(Instant::now)
    })
    .unwrap_or_else(|| panic!("new handshakes never got {cn}\n{}", gw.log_tail(30)))
}

fn check_runs(runs: &Runs, new_cn: &str, since: Instant) {
    let runs = runs.lock().expect("lock");
    assert!(runs.len() >= 10, "too little load: {} runs", runs.len());
    let mut problems = Vec::new();
    for (start, cn, lines) in runs.iter() {
        if lines.len() != 3 || lines.iter().any(|l| l != "200") {
            problems.push(format!("failed run: {lines:?}"));
        }
        if *start > since && cn.as_deref() != Some(new_cn) {
            problems.push(format!("a handshake after the swap got {cn:?}"));
        }
    }
    assert!(
        problems.is_empty(),
        "{} problem(s) in {} runs:\n  {}",
        problems.len(),
        runs.len(),
        berth_tests::first_n(&problems, 10)
    );
}

#[test]
fn sighup_swaps_certificates_under_load_and_refuses_a_broken_one() {
    let backends = Backend::start_many(2);
    let dir = tempfile::tempdir().expect("temp dir");
    let files = tls::self_signed(&["old.berth", "test.berth"]).write(dir.path(), "site");
    let (gw, addr) = tls_gateway(&backends, &[&files], "");
    assert_eq!(served(addr).as_deref(), Some("old.berth"));

    let stop = Arc::new(AtomicBool::new(false));
    let runs: Runs = Arc::default();
    let threads = load(addr, 4, stop.clone(), runs.clone());
    let some_runs = |n: usize| {
        wait_for(Duration::from_secs(60), Duration::from_millis(20), || {
            (runs.lock().expect("lock").len() >= n).then_some(())
        })
        .expect("the load runs")
    };
    some_runs(8);
    tls::self_signed(&["new.berth", "test.berth"]).write_to(&files);
    gw.sighup();
    let swapped = wait_served(&gw, addr, "new.berth");
    let n = runs.lock().expect("lock").len();
    some_runs(n + 8);

    // A broken replacement: a key that does not match. Refused; the new certificate stays.
    let broken = CertPair {
        key_pem: tls::self_signed(&["x.berth"]).key_pem,
        ..tls::self_signed(&["broken.berth", "test.berth"])
    };
    broken.write_to(&files);
    gw.sighup();
    wait_for(Duration::from_secs(30), Duration::from_millis(50), || {
        gw.log()
            .contains("does not match the certificate")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("the reload was not refused\n{}", gw.log_tail(30)));
    let n = runs.lock().expect("lock").len();
    some_runs(n + 8);
    assert_eq!(served(addr).as_deref(), Some("new.berth"));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("a load thread");
    }
    check_runs(&runs, "new.berth", swapped);
    assert!(gw.log().contains("reload refused"), "{}", gw.log_tail(30));
}

#[test]
fn an_upgrade_reads_the_certificates_again_and_refuses_broken_ones() {
    let backends = Backend::start_many(2);
    let dir = tempfile::tempdir().expect("temp dir");
    let files = tls::self_signed(&["old.berth", "test.berth"]).write(dir.path(), "site");
    let (mut gw, addr) = tls_gateway(&backends, &[&files], "");
    let stop = Arc::new(AtomicBool::new(false));
    let runs: Runs = Arc::default();
    let threads = load(addr, 4, stop.clone(), runs.clone());

    // A broken certificate: the upgrade is refused before it touches the running Berth.
    let saved = (
        std::fs::read_to_string(&files.cert).expect("read"),
        std::fs::read_to_string(&files.key).expect("read"),
    );
    tls::expired(&["test.berth"]).write_to(&files);
    let config_path = gw.config_path().to_path_buf();
    let (code, out) = gw.try_upgrade(&config_path);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("expired on"), "{out}");
    assert!(out.contains("upgrade refused"), "{out}");
    CertPair {
        cert_pem: saved.0,
        key_pem: saved.1,
    }
    .write_to(&files);
    assert_eq!(served(addr).as_deref(), Some("old.berth"));

    tls::self_signed(&["new.berth", "test.berth"]).write_to(&files);
    let mut old = gw.upgrade();
    wait_served(&gw, addr, "new.berth");
    // Until the old process has stopped accepting, a new connection may still reach it.
    let (status, _) = old.wait_exit(Duration::from_secs(60));
    assert!(status.is_some(), "the old process did not exit");
    let swapped = Instant::now();
    let n = runs.lock().expect("lock").len();
    wait_for(Duration::from_secs(60), Duration::from_millis(20), || {
        (runs.lock().expect("lock").len() >= n + 8).then_some(())
    })
    .expect("the load runs");
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("a load thread");
    }
    check_runs(&runs, "new.berth", swapped);
}

/// Two TLS listeners, each with its own certificate: a connection gets the certificate of the
/// listener it reached (Berth finds the listener by the socket's local address).
#[test]
fn each_tls_listener_serves_its_own_certificates() {
    let backends = Backend::start_many(1);
    let dir = tempfile::tempdir().expect("temp dir");
    let one = tls::self_signed(&["one.test"]).write(dir.path(), "one");
    let two = tls::self_signed(&["two.test"]).write(dir.path(), "two");
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let (addr1, addr2) = (free_addr(), free_addr());
    let yaml = config::app_config(&[], &specs);
    let yaml = tls::with_listeners(
        &yaml,
        &[
            tls::listener(addr1, &[&one], ""),
            tls::listener(addr2, &[&two], ", http2: false"),
        ],
    );
    let gw = Gateway::start(&yaml);
    for _ in 0..5 {
        for (addr, cn, alpn) in [(addr1, "one.test", "h2"), (addr2, "two.test", "http/1.1")] {
            let (ok, v) = probe(addr, None, &["--http2"]);
            assert!(ok, "{v}");
            assert_eq!(tls::subject_cn(&v).as_deref(), Some(cn), "{v}");
            assert_eq!(tls::alpn(&v).as_deref(), Some(alpn), "{v}");
        }
    }
    for addr in [addr1, addr2] {
        assert_eq!(
            gw.metric(
                "berth_tls_handshakes_total",
                &[("listener", &addr.to_string())]
            ),
            5.0
        );
    }
}
