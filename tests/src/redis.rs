//! [`Redis`]: a `redis-server` of the test's own on a fresh 127.0.0.1 port (no persistence,
//! its files in a temp dir), stopped by PID; [`RedisCluster`]: three of them as a Redis
//! Cluster (`--cluster-enabled yes`, then `redis-cli --cluster create`). `make deps`
//! installs `redis-server` (Debian's `redis-server` package, which has `redis-cli`).
use crate::process::Proc;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `redis-server`.
#[derive(Debug)]
pub struct Redis {
    pub port: u16,
    proc: Option<Proc>,
    dir: tempfile::TempDir,
    cluster: bool,
    /// `requirepass` (AUTH), when set.
    password: Option<String>,
    /// TLS only (`--port 0 --tls-port`): the CA file clients trust, when set.
    tls_ca: Option<std::path::PathBuf>,
}

impl Redis {
    /// A standalone server on a fresh port.
    pub fn start() -> Redis {
        Redis::start_node(false, None, None)
    }

    /// A standalone server that requires AUTH with `password`.
    pub fn start_with_password(password: &str) -> Redis {
        Redis::start_node(false, Some(password), None)
    }

    /// A standalone server speaking TLS only (no plain port), with a certificate for
    /// 127.0.0.1 signed by `ca` (clients are not asked for one), and AUTH when `password`.
    pub fn start_tls(ca: &crate::tls::TestCa, password: Option<&str>) -> Redis {
        Redis::start_node(false, password, Some(ca))
    }

    fn start_node(cluster: bool, password: Option<&str>, ca: Option<&crate::tls::TestCa>) -> Redis {
        let dir = tempfile::Builder::new()
            .prefix("berth-redis-")
            .tempdir()
            .expect("create a temp dir");
        let mut r = Redis {
            port: crate::free_port(),
            proc: None,
            dir,
            cluster,
            password: password.map(str::to_string),
            tls_ca: None,
        };
        if let Some(ca) = ca {
            ca.leaf(&["127.0.0.1", "localhost"])
                .write(r.dir.path(), "server");
            let path = r.dir.path().join("ca.pem");
            ca.write(&path);
            r.tls_ca = Some(path);
        }
        r.launch();
        r
    }

    fn launch(&mut self) {
        let mut cmd = Command::new("redis-server");
        let port = self.port.to_string();
        match &self.tls_ca {
            None => cmd.args(["--port", &port]),
            Some(ca) => cmd
                .args(["--port", "0", "--tls-port", &port])
                .arg("--tls-cert-file")
                .arg(self.dir.path().join("server.pem"))
                .arg("--tls-key-file")
                .arg(self.dir.path().join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(ca)
                .args(["--tls-auth-clients", "no"]),
        };
        cmd.args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path());
        if let Some(pw) = &self.password {
            cmd.args(["--requirepass", pw]);
        }
        if self.cluster {
            cmd.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ]);
        }
        let log = std::fs::File::create(self.dir.path().join("redis.log")).expect("log file");
        let child = cmd
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (make deps)");
        self.proc = Some(Proc::Child(child));
        let deadline = Instant::now() + START_TIMEOUT;
        while self.cli(&["PING"]).trim() != "PONG" {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:<port>` (`rediss://` with TLS).
    pub fn url(&self) -> String {
        let s = if self.tls_ca.is_some() { "s" } else { "" };
        format!("redis{s}://127.0.0.1:{}", self.port)
    }

    /// The CA file a TLS server's certificate leads to.
    pub fn ca_file(&self) -> Option<&std::path::Path> {
        self.tls_ca.as_deref()
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    /// SIGKILL, by PID.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Start again on the same port (empty: nothing is persisted).
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// `redis-cli -p <port> <args>` (`-c`: follow cluster redirections); its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-c"])
            .args(self.tls_ca.iter().flat_map(|ca| {
                [
                    std::ffi::OsStr::new("--tls"),
                    "--cacert".as_ref(),
                    ca.as_os_str(),
                ]
            }))
            .args(
                self.password
                    .iter()
                    .flat_map(|pw| ["--no-auth-warning", "-a", pw.as_str()]),
            )
            .args(args)
            .output()
            .expect("redis-cli must be installed (make deps)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `INFO commandstats` as (command, calls), e.g. `("get", 12)`.
    pub fn command_calls(&self) -> Vec<(String, u64)> {
        self.cli(&["INFO", "commandstats"])
            .lines()
            .filter_map(|l| {
                let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = rest
                    .strip_prefix("calls=")?
                    .split(',')
                    .next()?
                    .parse()
                    .ok()?;
                Some((name.to_string(), calls))
            })
            .collect()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three masters as one Redis Cluster (no replicas).
#[derive(Debug)]
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let nodes: Vec<Redis> = (0..3)
            .map(|_| Redis::start_node(true, None, None))
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli must be installed (make deps)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + START_TIMEOUT;
        for n in &nodes {
            while !n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok") {
                assert!(Instant::now() < deadline, "the cluster did not become ok");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        RedisCluster { nodes }
    }

    /// Every node's URL (the seed list).
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Redis::url).collect()
    }
}
