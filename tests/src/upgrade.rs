//! Zero-downtime upgrades of a [`Gateway`], as an operator does them:
//!
//! * [`Gateway::upgrade`] — `berth -u -c <same config>` in the foreground; once it listens on
//!   Pingora's upgrade socket, SIGQUIT to the running process; done when the admin listener
//!   answers from the new pid (`X-Berth-Pid`).
//! * [`Gateway::reload_like_systemd`] — run a unit's `ExecReload=` command lines (those of
//!   `deploy/systemd/berth.service`: `berth -u -d`, then `kill -QUIT $MAINPID`) as systemd
//!   does, then follow the pid file to the new daemon.
//! * [`Gateway::try_upgrade`] — `berth -u -c <file>` expected to fail before touching anything.
//!
//! The replaced process comes back as a [`Retired`], to watch it finish and exit. Sockets, pid
//! file and logs (`berth-<n>.log`, one per process) live in the gateway's temp dir.
use crate::client::{Client, Request, Response};
use crate::gateway::Gateway;
use crate::process::{self, Proc};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// How long a new process may take to get ready to take over, and then to serve.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(10);

/// A `berth` that was told to quit by an upgrade: it finishes its work, then exits.
#[derive(Debug)]
pub struct Retired {
    proc: Proc,
    pub pid: u32,
    log_path: PathBuf,
    /// When SIGQUIT was sent.
    pub quit_at: Instant,
}

impl Retired {
    /// Wait until it exits; its exit status (`None` for a daemon) and the time since SIGQUIT.
    /// Panics with its log after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> (Option<ExitStatus>, Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.proc.exited() {
                return (status, self.quit_at.elapsed());
            }
            assert!(
                Instant::now() < deadline,
                "the old berth (pid {}) still runs {:?} after SIGQUIT\n--- its log ---\n{}",
                self.pid,
                self.quit_at.elapsed(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    /// What it wrote to stdout and stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_else(|e| format!("(no log: {e})"))
    }
}

impl Drop for Retired {
    fn drop(&mut self) {
        self.proc.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- log of the old berth (pid {}) ---\n{}",
                self.pid,
                self.log()
            );
        }
    }
}

impl Gateway {
    /// Start `berth -d` (a daemon writing the config's `pid_file`); see [`Gateway::start`].
    pub fn start_daemon(yaml: &str, env: &[(&str, &str)]) -> Gateway {
        let (mut gw, full) = Gateway::prepare(yaml, env);
        let log = gw.log_path.clone();
        let pid = gw.launch_daemon(&["-d"], &log, None);
        gw.proc = Some(Proc::Daemon(pid));
        gw.ready_or_panic(&full)
    }

    /// Pingora's upgrade socket (`server.upgrade_sock` of the config).
    pub fn upgrade_sock(&self) -> PathBuf {
        self.server_path("upgrade_sock")
    }

    /// The pid file (`server.pid_file`), written by `berth -d`.
    pub fn pid_file(&self) -> PathBuf {
        self.server_path("pid_file")
    }

    fn server_path(&self, key: &str) -> PathBuf {
        let text = std::fs::read_to_string(self.config_path()).expect("read the config");
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("the config is YAML");
        let path = doc["server"][key]
            .as_str()
            .unwrap_or_else(|| panic!("server.{key} is not set in the config"));
        PathBuf::from(path)
    }

    /// Upgrade in the foreground: `berth -u`, SIGQUIT to the current process once the new one
    /// waits on the upgrade socket, until the new one serves. The gateway is then the new
    /// process; the old one is returned.
    pub fn upgrade(&mut self) -> Retired {
        let old = self.proc.take().expect("the gateway is running");
        let log = self.next_log();
        let _ = std::fs::remove_file(self.upgrade_sock());
        let child = self.launch(&["-u"], &log);
        let mut new = Proc::Child(child);
        let sock = self.upgrade_sock();
        let waiting = crate::wait_for(UPGRADE_TIMEOUT, POLL, || {
            if new.exited().is_some() {
                return Some(false);
            }
            is_socket(&sock).then_some(true)
        });
        if waiting != Some(true) {
            let why = match waiting {
                None => format!("{} did not appear", sock.display()),
                Some(_) => "it exited".to_string(),
            };
            new.kill();
            self.proc = Some(old);
            panic!(
                "berth -u did not get ready to take over: {why}\n--- its log ---\n{}",
                read(&log)
            );
        }
        self.hand_over(old, new, log, true)
    }

    /// Reload as systemd does: each of `commands` (shell command lines) runs in order with
    /// `MAINPID` = the current pid and this gateway's environment, and must succeed (systemd
    /// stops a reload at the first failure); then the new daemon's pid comes from the pid
    /// file. The commands are expected to start the new process and signal the old one.
    pub fn reload_like_systemd(&mut self, commands: &[String]) -> Retired {
        let old = self.proc.take().expect("the gateway is running");
        let log = self.next_log();
        self.launches += 1;
        for cmd in commands {
            let out = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .expect("open the log");
            let mut child = std::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .env("MAINPID", old.pid().to_string())
                .env_remove(crate::admin::TOKEN_ENV)
                .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .stdin(std::process::Stdio::null())
                .stdout(out.try_clone().expect("dup"))
                .stderr(out)
                .spawn()
                .expect("run sh");
            let status = crate::wait_for(UPGRADE_TIMEOUT, POLL, || child.try_wait().ok().flatten());
            if !status.is_some_and(|s| s.success()) {
                let _ = child.kill();
                self.proc = Some(old);
                panic!(
                    "reload command `{cmd}` ended with {status:?}\n--- log ---\n{}",
                    read(&log)
                );
            }
        }
        let pid_file = self.pid_file();
        let pid = crate::wait_for(UPGRADE_TIMEOUT, POLL, || {
            process::read_pid_file(&pid_file).filter(|p| *p != old.pid())
        })
        .unwrap_or_else(|| {
            panic!(
                "no new pid in {}\n--- log ---\n{}",
                pid_file.display(),
                read(&log)
            )
        });
        self.hand_over(old, Proc::Daemon(pid), log, false)
    }

    /// `berth -u -c <config>` expected to give up before touching the running process: its
    /// exit code and output. Panics when it is still running after 20 s (it would be waiting
    /// for the sockets: it did not refuse).
    pub fn try_upgrade(&mut self, config: &Path) -> (i32, String) {
        let log = self.next_log();
        let file = std::fs::File::create(&log).expect("create a log");
        let mut child = std::process::Command::new(crate::berth_bin())
            .arg("-u")
            .arg("-c")
            .arg(config)
            .env_remove(crate::admin::TOKEN_ENV)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(std::process::Stdio::null())
            .stdout(file.try_clone().expect("dup"))
            .stderr(file)
            .spawn()
            .expect("start berth -u");
        let status = crate::wait_for(UPGRADE_TIMEOUT, POLL, || child.try_wait().ok().flatten());
        let Some(status) = status else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "berth -u -c {} did not give up\n--- its log ---\n{}",
                config.display(),
                read(&log)
            );
        };
        (status.code().unwrap_or(-1), read(&log))
    }

    /// An admin request answered by process `pid` (during an upgrade two processes share the
    /// admin socket; other answers are retried).
    pub fn admin_on(&self, pid: u32, method: &str, path: &str, body: Option<&str>) -> Response {
        let want = pid.to_string();
        let found = crate::wait_for(UPGRADE_TIMEOUT, POLL, || {
            let r = self.admin(method, path, body);
            (r.header("x-berth-pid") == Some(want.as_str())).then_some(r)
        });
        found.unwrap_or_else(|| panic!("{method} {path}: no answer from pid {pid}"))
    }

    fn next_log(&self) -> PathBuf {
        self.dir().join(format!("berth-{}.log", self.launches + 1))
    }

    /// Run `berth <args>` whose launcher exits once it forked a daemon; the daemon's pid from
    /// the pid file (other than `not`).
    fn launch_daemon(&mut self, args: &[&str], log: &Path, not: Option<u32>) -> u32 {
        let mut launcher = self.launch(args, log);
        let status = crate::wait_for(UPGRADE_TIMEOUT, POLL, || launcher.try_wait().ok().flatten());
        match status {
            Some(s) if s.success() => {}
            other => {
                let _ = launcher.kill();
                panic!(
                    "berth {args:?}: launcher ended with {other:?}\n--- log ---\n{}",
                    read(log)
                );
            }
        }
        let pid_file = self.pid_file();
        crate::wait_for(UPGRADE_TIMEOUT, POLL, || {
            process::read_pid_file(&pid_file).filter(|p| Some(*p) != not)
        })
        .unwrap_or_else(|| {
            panic!(
                "no daemon pid in {}\n--- log ---\n{}",
                pid_file.display(),
                read(log)
            )
        })
    }

    /// SIGQUIT to `old` (unless it was sent already); wait until `new` answers the admin
    /// listener.
    fn hand_over(&mut self, old: Proc, new: Proc, log: PathBuf, quit: bool) -> Retired {
        let old_log = std::mem::replace(&mut self.log_path, log);
        let new_pid = new.pid();
        if quit {
            old.signal("QUIT");
        }
        let quit_at = Instant::now();
        self.proc = Some(new);
        let retired = Retired {
            pid: old.pid(),
            proc: old,
            log_path: old_log,
            quit_at,
        };
        let want = new_pid.to_string();
        let serving = crate::wait_for(UPGRADE_TIMEOUT, POLL, || {
            if !self.is_running() {
                return Some(false);
            }
            let r = Client::new(self.admin_addr)
                .fresh_connections()
                .timeout(Duration::from_secs(2))
                .try_send(&Request::get("/healthz"));
            r.ok()
                .filter(|r| r.header("x-berth-pid") == Some(want.as_str()))
                .map(|_| true)
        });
        assert_eq!(
            serving,
            Some(true),
            "the new berth (pid {new_pid}) does not serve after SIGQUIT to pid {}\n--- its log \
             ---\n{}",
            retired.pid,
            self.log()
        );
        retired
    }
}

fn is_socket(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket())
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| format!("(no log: {e})"))
}
