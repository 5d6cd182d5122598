//! [`Backend`]: a `berth-demo-backend` process on 127.0.0.1 with an OS-chosen port.
use crate::client::{Client, Request};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a demo backend may take to print `READY`.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running demo backend. Killed (by PID) when dropped.
#[derive(Debug)]
pub struct Backend {
    /// The name it answers with (`X-Backend`); tests use it as the backend id too.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    child: Option<Child>,
}

impl Backend {
    /// Start `berth-demo-backend <name> 127.0.0.1:0` and wait for its `READY <addr>` line.
    pub fn start(name: &str) -> Backend {
        match Backend::spawn(name, "127.0.0.1:0") {
            Ok(b) => b,
            Err(why) => panic!("demo backend {name}: {why}"),
        }
    }

    /// Start a backend on a given address, e.g. the address of one that was just killed (to
    /// bring "the same" backend back). Binding is retried for a few seconds while the address
    /// is still taken.
    pub fn start_on(name: &str, addr: SocketAddr) -> Backend {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match Backend::spawn(name, &addr.to_string()) {
                Ok(b) => return b,
                Err(why) if Instant::now() > deadline => {
                    panic!("demo backend {name} on {addr}: {why}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Kill this backend (if running) and start it again on the same address.
    pub fn restart(&mut self) {
        self.kill();
        *self = Backend::start_on(&self.name, self.addr);
    }

    fn spawn(name: &str, addr: &str) -> Result<Backend, String> {
        let bin = crate::demo_backend_bin();
        let mut child = Command::new(&bin)
            .arg(name)
            .arg(addr)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no READY line within {READY_TIMEOUT:?}"));
            }
        };
        let Some(addr) = line
            .trim()
            .strip_prefix("READY ")
            .and_then(|a| a.parse().ok())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("expected `READY <addr>`, got {line:?}"));
        };
        Ok(Backend {
            name: name.to_string(),
            addr,
            child: Some(child),
        })
    }

    /// Start several backends named `b1`, `b2`, …
    pub fn start_many(n: usize) -> Vec<Backend> {
        (1..=n).map(|i| Backend::start(&format!("b{i}"))).collect()
    }

    /// `(id, addr)` for a gateway config; the id is the backend's name.
    pub fn spec(&self) -> (String, SocketAddr) {
        (self.name.clone(), self.addr)
    }

    /// The process id (`None` once killed).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Requests served so far, not counting the special paths (`/__count`, `/__health…`);
    /// asked directly, not via the gateway.
    pub fn count(&self) -> u64 {
        self.ask_count("/__count")
    }

    /// Connections that carried at least one request counted by [`Backend::count`].
    pub fn connections(&self) -> u64 {
        self.ask_count("/__count?connections")
    }

    /// Requests it refused with 400: a malformed request line or framing (e.g. bytes left
    /// on a connection after a request's end).
    pub fn bad_requests(&self) -> u64 {
        self.ask_count("/__count?bad")
    }

    /// WebSockets it accepted on `/ws` so far.
    pub fn ws_total(&self) -> u64 {
        self.ask_count("/__count?ws")
    }

    /// WebSockets open on it now.
    pub fn ws_open(&self) -> u64 {
        self.ask_count("/__count?ws_open")
    }

    /// The most `/__slow` requests it was answering at once.
    pub fn max_in_flight(&self) -> u64 {
        self.ask_count("/__count?max_in_flight")
    }

    /// Of [`Backend::count`], the requests with `method` (e.g. `POST`); dropped ones included.
    pub fn count_method(&self, method: &str) -> u64 {
        self.ask_count(&format!("/__count?method={method}"))
    }

    /// Requests received for `path` (without query), including `/__health` checks.
    pub fn count_path(&self, path: &str) -> u64 {
        self.ask_count(&format!("/__count?path={path}"))
    }

    /// Health checks (`GET /__health`) received so far.
    pub fn health_checks(&self) -> u64 {
        self.count_path("/__health")
    }

    /// Make `GET /__health` answer only after `delay` (until [`Backend::set_healthy`]).
    pub fn set_health_slow(&self, delay: std::time::Duration) {
        let path = format!("/__health/slow?ms={}", delay.as_millis());
        let resp = Client::new(self.addr)
            .fresh_connections()
            .send(&Request::new("POST", &path));
        assert_eq!(
            resp.status,
            204,
            "backend {}: {}",
            self.name,
            resp.summary()
        );
    }

    fn ask_count(&self, target: &str) -> u64 {
        let resp = Client::new(self.addr).fresh_connections().get(target);
        resp.text().trim().parse().unwrap_or_else(|_| {
            panic!(
                "backend {}: bad {target} answer {}",
                self.name,
                resp.summary()
            )
        })
    }

    /// Make `GET /__health` answer 503 (`false`) or 200 (`true`), by asking the backend itself.
    pub fn set_healthy(&self, healthy: bool) {
        let path = if healthy {
            "/__health/ok"
        } else {
            "/__health/fail"
        };
        let resp = Client::new(self.addr)
            .fresh_connections()
            .send(&Request::new("POST", path));
        assert_eq!(
            resp.status,
            204,
            "backend {}: {}",
            self.name,
            resp.summary()
        );
    }

    /// Kill the process now (SIGKILL) and reap it; its port is closed when this returns.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}
