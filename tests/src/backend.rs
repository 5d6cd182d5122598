//! [`Backend`]: a `berth-demo-backend` process on 127.0.0.1 with an OS-chosen port.
use crate::client::Client;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

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
        let bin = crate::demo_backend_bin();
        let mut child = Command::new(&bin)
            .arg(name)
            .arg("127.0.0.1:0")
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
                panic!("demo backend {name}: no READY line within {READY_TIMEOUT:?}");
            }
        };
        let addr = line
            .trim()
            .strip_prefix("READY ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                let _ = child.wait();
                panic!("demo backend {name}: expected `READY <addr>`, got {line:?}")
            });
        Backend {
            name: name.to_string(),
            addr,
            child: Some(child),
        }
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

    /// Requests served so far, not counting `/__count` (asked directly, not via the gateway).
    pub fn count(&self) -> u64 {
        let resp = Client::new(self.addr).fresh_connections().get("/__count");
        resp.text().trim().parse().unwrap_or_else(|_| {
            panic!(
                "backend {}: bad /__count answer {}",
                self.name,
                resp.summary()
            )
        })
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
