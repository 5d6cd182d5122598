//! [`Gateway`]: the real `berth` binary on fresh ports, its config and log in a temp dir.
use crate::admin::{self, BackendInfo, SessionInfo};
use crate::client::{Client, Request, Response, User};
use crate::process::Proc;
use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long `berth` may take to answer `/healthz` after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause between readiness polls.
const POLL: Duration = Duration::from_millis(20);
/// How many times [`Gateway::start_with_env`] starts `berth` on fresh ports when one was taken.
pub const PORT_TRIES: u32 = 5;

/// Why a started `berth` is not ready.
#[derive(Debug)]
pub(crate) enum NotReady {
    /// One of its ports is another process's: start again on other ports.
    PortTaken(String),
    Other(String),
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::PortTaken(s) | NotReady::Other(s) => f.write_str(s),
        }
    }
}

/// How long [`Gateway::wait_metric`] waits for a metric to reach its value.
const METRIC_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `berth -c <tempdir>/berth.yaml`. Killed (by PID) when dropped; when that happens
/// during a panic, its log is printed to help debug the failure. After an upgrade
/// ([`Gateway::upgrade`]) it is the new process.
#[derive(Debug)]
pub struct Gateway {
    /// The client-facing listener.
    pub addr: SocketAddr,
    /// The admin listener (`/healthz`, `/metrics`).
    pub admin_addr: SocketAddr,
    /// The config's other listeners (e.g. TLS ones), which must accept connections too before
    /// the gateway counts as ready (each kind of listener is a Pingora service of its own).
    pub other_listeners: Vec<SocketAddr>,
    pub(crate) proc: Option<Proc>,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) log_path: PathBuf,
    config_path: PathBuf,
    /// The environment given to every `berth` started for this gateway.
    pub(crate) env: Vec<(String, String)>,
    /// `berth` processes started so far (names their logs).
    pub(crate) launches: u32,
    /// The binary started: [`crate::berth_bin`], or a custom one built with `berth`'s
    /// builder ([`Gateway::start_binary`]).
    pub(crate) bin: PathBuf,
}

impl Gateway {
    /// Start `berth` with `yaml` (see [`crate::config::complete`] for what is filled in) and wait
    /// until `/healthz` answers 200 and the listener accepts connections. Panics with the
    /// gateway's log when it does not come up.
    pub fn start(yaml: &str) -> Gateway {
        Gateway::start_with_env(yaml, &[])
    }

    /// [`Gateway::start`] with the admin API enabled: `BERTH_ADMIN_TOKEN` = [`admin::TOKEN`].
    pub fn start_with_admin(yaml: &str) -> Gateway {
        Gateway::start_with_env(yaml, &[(admin::TOKEN_ENV, admin::TOKEN)])
    }

    /// [`Gateway::start`] with extra environment variables for the process (the test's own
    /// `BERTH_ADMIN_TOKEN` is never inherited).
    ///
    /// The ports come from [`crate::free_addr`]: free a moment before `berth` binds them, so
    /// another process (another test's backend) may take one first. Then `berth` retries the
    /// bind in the background while the other process answers; this is detected (its log
    /// says so, or the port's listening socket is not `berth`'s) and `berth` is started again
    /// on fresh ports, up to [`PORT_TRIES`] times.
    pub fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> Gateway {
        Gateway::start_binary(&crate::berth_bin(), yaml, env)
    }

    /// [`Gateway::start_with_env`] with another binary than `berth`: a custom one built with
    /// `berth::Berth::builder()` (its plugins registered), taking the same command line.
    pub fn start_binary(bin: &Path, yaml: &str, env: &[(&str, &str)]) -> Gateway {
        for attempt in 1..=PORT_TRIES {
            let (mut gw, full) = Gateway::prepare(yaml, env);
            gw.bin = bin.to_path_buf();
            let log_path = gw.log_path.clone();
            let child = gw.launch(&[], &log_path);
            gw.proc = Some(Proc::Child(child));
            match gw.wait_ready() {
                Ok(()) => return gw,
                Err(NotReady::PortTaken(why)) if attempt < PORT_TRIES => {
                    eprintln!("berth-tests: {why}; starting berth again on other ports");
                }
                Err(why) => gw.fail_start(&full, why),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Start `berth` with `yaml`, and as soon as it has written its first log line (it is
    /// still starting: the configuration read, Pingora's services not yet running) replace its
    /// config with `then` and send SIGHUP; then wait until it serves, as [`Gateway::start`].
    /// A SIGHUP this early must be a reload, not the end of the process.
    pub fn start_with_early_sighup(yaml: &str, then: &str, env: &[(&str, &str)]) -> Gateway {
        let (mut gw, full) = Gateway::prepare(yaml, env);
        let log_path = gw.log_path.clone();
        let child = gw.launch(&[], &log_path);
        let pid = child.id();
        gw.proc = Some(Proc::Child(child));
        crate::wait_for(START_TIMEOUT, Duration::from_millis(1), || {
            std::fs::metadata(&log_path)
                .is_ok_and(|m| m.len() > 0)
                .then_some(())
        })
        .unwrap_or_else(|| panic!("berth (pid {pid}) wrote no log line in {START_TIMEOUT:?}"));
        gw.rewrite_config(then);
        crate::process::signal(pid, "HUP");
        gw.ready_or_panic(&full)
    }

    /// A gateway not started yet: temp dir, ports, config file written. Also returns the
    /// completed config.
    pub(crate) fn prepare(yaml: &str, env: &[(&str, &str)]) -> (Gateway, String) {
        let dir = tempfile::Builder::new()
            .prefix("berth-e2e-")
            .tempdir()
            .expect("create a temp dir");
        let addr = crate::free_addr();
        let admin_addr = crate::free_addr();
        let config_path = dir.path().join("berth.yaml");
        let full = crate::config::complete(yaml, addr, admin_addr, dir.path());
        let doc: serde_yaml::Value = serde_yaml::from_str(&full).expect("the config is YAML");
        let other_listeners = doc["listeners"]
            .as_sequence()
            .map(|l| {
                l.iter()
                    .skip(1)
                    .filter_map(|l| l["addr"].as_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        std::fs::write(&config_path, &full).expect("write the gateway config");
        let log_path = dir.path().join("berth.log");
        let gw = Gateway {
            addr,
            admin_addr,
            other_listeners,
            proc: None,
            dir,
            log_path,
            config_path,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            launches: 0,
            bin: crate::berth_bin(),
        };
        (gw, full)
    }

    /// Wait until it serves, or panic with the config and the log.
    pub(crate) fn ready_or_panic(mut self, full: &str) -> Gateway {
        if let Err(why) = self.wait_ready() {
            self.fail_start(full, why);
        }
        self
    }

    fn fail_start(self, full: &str, why: NotReady) -> ! {
        let log = self.log();
        drop(self); // not while panicking: the log is in the message below, once
        panic!("berth did not come up: {why}\n--- config ---\n{full}\n--- berth log ---\n{log}");
    }

    /// Start `berth <args> -c <config>` with this gateway's environment, output to `log`.
    pub(crate) fn launch(&mut self, args: &[&str], log: &Path) -> Child {
        self.launches += 1;
        let file = File::create(log).expect("create a gateway log");
        let bin = self.bin.clone();
        Command::new(&bin)
            .args(args)
            .arg("-c")
            .arg(&self.config_path)
            .env_remove(admin::TOKEN_ENV)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup the log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()))
    }

    /// Ready: `/healthz` answers 200 from this `berth` (`X-Berth-Pid`), and both listening
    /// sockets are its own.
    pub(crate) fn wait_ready(&mut self) -> Result<(), NotReady> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let Some(proc) = self.proc.as_mut() else {
                return Err(NotReady::Other("no berth process".into()));
            };
            match proc.exited() {
                Some(Some(status)) => {
                    return Err(NotReady::Other(format!("berth exited with {status}")))
                }
                Some(None) => return Err(NotReady::Other("berth is gone".into())),
                None => {}
            }
            let pid = proc.pid();
            if let Some(line) = self
                .log()
                .lines()
                .find(|l| l.contains("is in use, will try again"))
            {
                return Err(NotReady::PortTaken(format!("a port was taken: {line}")));
            }
            let health = Client::new(self.admin_addr)
                .fresh_connections()
                .timeout(Duration::from_secs(2))
                .try_send(&Request::get("/healthz"));
            let last = match health {
                Ok(r) if r.status == 200 && r.header("x-berth-pid") != Some(&pid.to_string()) => {
                    return Err(NotReady::PortTaken(format!(
                        "{} is another process's (answered {})",
                        self.admin_addr,
                        r.summary()
                    )))
                }
                Ok(r) if r.status == 200 => {
                    match [self.addr, self.admin_addr]
                        .into_iter()
                        .chain(self.other_listeners.iter().copied())
                        .find(|a| !crate::process::listens_on(pid, a.port()))
                    {
                        None => return Ok(()),
                        Some(a)
                            if TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok() =>
                        {
                            return Err(NotReady::PortTaken(format!(
                                "{a} accepts connections but is not berth's (pid {pid})"
                            )))
                        }
                        Some(a) => format!("/healthz is 200 but berth does not listen on {a} yet"),
                    }
                }
                Ok(r) => format!("/healthz answered {}", r.summary()),
                Err(e) => format!("/healthz on {}: {e}", self.admin_addr),
            };
            if Instant::now() > deadline {
                return Err(NotReady::Other(format!(
                    "not ready after {START_TIMEOUT:?} (last: {last})"
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Everything the gateway wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_else(|e| format!("(no log: {e})"))
    }

    /// The last `n` lines of [`Gateway::log`], for assertion messages.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The temp dir holding config, log, upgrade socket and pid file.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process id (`None` once stopped).
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    /// A keep-alive client of the proxy listener.
    pub fn client(&self) -> Client {
        Client::new(self.addr)
    }

    /// A simulated browser with its own connection and cookie jar.
    pub fn user(&self) -> User {
        User::new(self.client())
    }

    /// The `/metrics` text (panics with the log when the admin listener does not answer 200).
    pub fn metrics(&self) -> String {
        let resp = Client::new(self.admin_addr)
            .fresh_connections()
            .try_send(&Request::get("/metrics"));
        match resp {
            Ok(r) if r.status == 200 => r.text(),
            other => panic!(
                "GET /metrics on {}: {other:?}\n--- berth log ---\n{}",
                self.admin_addr,
                self.log_tail(50)
            ),
        }
    }

    /// Sum of the samples of metric `name` whose labels include `labels`. Panics (with the
    /// series the family has) when none matches: a missing series never reads as 0, see
    /// [`crate::metrics::sum`].
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        crate::metrics::sum(&self.metrics(), name, labels)
    }

    /// Poll [`Gateway::metric`] until `ok(value)` holds (metrics are recorded after the
    /// response is sent, so a test may be a moment ahead of them) or 10 s pass; the last value.
    /// A series that does not exist yet counts as not there yet; one that still does not
    /// exist at the deadline panics, as in [`Gateway::metric`].
    pub fn wait_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        ok: impl Fn(f64) -> bool,
    ) -> f64 {
        let deadline = Instant::now() + METRIC_TIMEOUT;
        loop {
            let text = self.metrics();
            match crate::metrics::value(&text, name, labels) {
                Some(v) if ok(v) => return v,
                Some(v) if Instant::now() > deadline => return v,
                None if Instant::now() > deadline => {
                    panic!("{}", crate::metrics::missing(&text, name, labels))
                }
                _ => std::thread::sleep(POLL),
            }
        }
    }

    /// An admin request with `Authorization: <auth>` when given (the full header value) and a
    /// JSON body when given. Panics (with the log) when the exchange fails.
    pub fn admin_send(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        auth: Option<&str>,
    ) -> Response {
        let mut req = Request::new(method, path);
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.as_bytes().to_vec());
        }
        let resp = Client::new(self.admin_addr)
            .fresh_connections()
            .timeout(Duration::from_secs(10))
            .try_send(&req);
        match resp {
            Ok(r) => r,
            Err(e) => panic!(
                "{method} {path} on the admin listener {}: {e}\n--- berth log ---\n{}",
                self.admin_addr,
                self.log_tail(50)
            ),
        }
    }

    /// An admin request with the bearer token [`admin::TOKEN`].
    pub fn admin(&self, method: &str, path: &str, body: Option<&str>) -> Response {
        let auth = format!("Bearer {}", admin::TOKEN);
        self.admin_send(method, path, body, Some(&auth))
    }

    /// `GET /admin/backends` as raw JSON (panics unless 200 with a JSON body).
    pub fn backends_json(&self) -> serde_json::Value {
        let r = self.admin("GET", "/admin/backends", None);
        assert_eq!(r.status, 200, "GET /admin/backends: {}", r.summary());
        r.json()
            .unwrap_or_else(|e| panic!("GET /admin/backends: {e}"))
    }

    /// `GET /admin/backends`, parsed (panics unless 200 with the contract's shape).
    pub fn backends(&self) -> Vec<BackendInfo> {
        let v = self.backends_json();
        BackendInfo::list_from_json(&v).unwrap_or_else(|e| panic!("GET /admin/backends: {e}"))
    }

    /// The row of backend `id` in [`Gateway::backends`] (panics when it is not listed).
    pub fn backend_info(&self, id: &str) -> BackendInfo {
        let all = self.backends();
        all.iter()
            .find(|b| b.id == id)
            .cloned()
            .unwrap_or_else(|| panic!("backend {id} not in GET /admin/backends: {all:?}"))
    }

    /// Poll `GET /admin/backends` every 50 ms until `ok(rows)` holds; the rows, or `Err` with
    /// the last rows after `timeout`.
    pub fn wait_backends(
        &self,
        timeout: Duration,
        ok: impl Fn(&[BackendInfo]) -> bool,
    ) -> Result<Vec<BackendInfo>, Vec<BackendInfo>> {
        let deadline = Instant::now() + timeout;
        loop {
            let rows = self.backends();
            if ok(&rows) {
                return Ok(rows);
            }
            if Instant::now() > deadline {
                return Err(rows);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Poll until backend `id`'s row satisfies `ok` (described by `what` in the panic message,
    /// which also shows the last rows and the log); the row and the time it took.
    pub fn wait_backend(
        &self,
        id: &str,
        what: &str,
        timeout: Duration,
        ok: impl Fn(&BackendInfo) -> bool,
    ) -> (BackendInfo, Duration) {
        let start = Instant::now();
        match self.wait_backends(timeout, |rows| rows.iter().any(|b| b.id == id && ok(b))) {
            Ok(rows) => (
                rows.into_iter()
                    .find(|b| b.id == id)
                    .expect("found by the predicate"),
                start.elapsed(),
            ),
            Err(rows) => panic!(
                "backend {id}: not {what} within {timeout:?}; last GET /admin/backends: \
                 {rows:?}\n--- berth log ---\n{}",
                self.log_tail(40)
            ),
        }
    }

    /// `GET /admin/sessions/{value}` (value percent-encoded): `None` on 404, panics on any
    /// other status than 200 or a body of the wrong shape.
    pub fn session_info(&self, value: &str) -> Option<SessionInfo> {
        let path = format!("/admin/sessions/{}", admin::pct_encode(value));
        let r = self.admin("GET", &path, None);
        match r.status {
            404 => None,
            200 => Some(
                r.json()
                    .and_then(|v| SessionInfo::from_json(&v))
                    .unwrap_or_else(|e| panic!("GET {path}: {e}")),
            ),
            _ => panic!("GET {path}: {}", r.summary()),
        }
    }

    /// Replace the config file with `yaml`, completed like at start (same listeners, admin
    /// address and temp dir). Written to a temp file and renamed, so a reader never sees half.
    pub fn rewrite_config(&self, yaml: &str) {
        let full = crate::config::complete(yaml, self.addr, self.admin_addr, self.dir.path());
        self.write_config_raw(&full);
    }

    /// Replace the config file with exactly `text` (e.g. an invalid config).
    pub fn write_config_raw(&self, text: &str) {
        let tmp = self.dir.path().join("berth.yaml.new");
        std::fs::write(&tmp, text).expect("write the new config");
        std::fs::rename(&tmp, &self.config_path).expect("replace the config");
    }

    /// Send SIGHUP (by PID, with `kill -HUP`) once the process handles it (Berth catches it
    /// from the start of its `main`; a SIGHUP before that would end the process).
    pub fn sighup(&self) {
        let proc = self.proc.as_ref().expect("the gateway is running");
        let pid = proc.pid();
        crate::wait_for(START_TIMEOUT, POLL, || {
            crate::process::catches(pid, 1).then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "berth (pid {pid}) installed no SIGHUP handler in {START_TIMEOUT:?}\n--- berth \
                 log ---\n{}",
                self.log_tail(40)
            )
        });
        proc.signal("HUP");
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(Proc::is_running)
    }

    /// Kill the process (SIGKILL, by PID) and reap it. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "--- berth log ({}), last 80 lines ---\n{}\n--- end of berth log ---",
                self.log_path.display(),
                self.log_tail(80)
            );
        }
    }
}

/// `berth -t -c path` run in the workspace root (as `make run` and `make check-conf` run it,
/// so relative paths in shipped configs resolve the same): the exit code (-1 when killed by a
/// signal) and stderr. `BERTH_COOKIE_SECRET` is set to a test value unless the environment has
/// it, so configs that read the cookie secret from it (like conf/berth.yaml) can validate; the
/// demo certificate conf/berth.yaml serves is generated first when missing (`make demo-cert`).
pub fn berth_check(path: &Path) -> (i32, String) {
    crate::ensure_demo_cert();
    let mut cmd = Command::new(crate::berth_bin());
    cmd.arg("-t")
        .arg("-c")
        .arg(path)
        .current_dir(crate::workspace_root())
        .stdin(Stdio::null());
    if std::env::var_os("BERTH_COOKIE_SECRET").is_none() {
        cmd.env("BERTH_COOKIE_SECRET", crate::config::COOKIE_SECRET);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run berth -t -c {}: {e}", path.display()));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
