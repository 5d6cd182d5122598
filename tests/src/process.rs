//! [`Proc`]: a process the harness started, either its own child or a daemon it only knows by
//! pid (`berth -d` forks and the launcher exits; the daemon's pid is in its pid file).
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// A started process.
#[derive(Debug)]
pub enum Proc {
    /// A child of the test process (reaped by it).
    Child(Child),
    /// A daemon: known by pid only, reaped by someone else.
    Daemon(u32),
}

impl Proc {
    pub fn pid(&self) -> u32 {
        match self {
            Proc::Child(c) => c.id(),
            Proc::Daemon(pid) => *pid,
        }
    }

    /// `Some(status)` once a child exited; `Some(None)` once a daemon is gone; `None` while
    /// running.
    pub fn exited(&mut self) -> Option<Option<ExitStatus>> {
        match self {
            Proc::Child(c) => match c.try_wait() {
                Ok(Some(s)) => Some(Some(s)),
                Ok(None) => None,
                Err(_) => Some(None),
            },
            Proc::Daemon(pid) => (!alive(*pid)).then_some(None),
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.exited().is_none()
    }

    /// Send a signal by name (`QUIT`, `HUP`, `KILL`, …) with `kill`.
    pub fn signal(&self, sig: &str) {
        signal(self.pid(), sig);
    }

    /// Kill (SIGKILL) and wait until it is gone. Idempotent.
    pub fn kill(&mut self) {
        match self {
            Proc::Child(c) => {
                let _ = c.kill();
                let _ = c.wait();
            }
            Proc::Daemon(pid) => {
                if alive(*pid) {
                    let _ = Command::new("kill")
                        .arg("-KILL")
                        .arg(pid.to_string())
                        .status();
                    wait_gone(*pid, Duration::from_secs(10));
                }
            }
        }
    }
}

/// `kill -<sig> <pid>`; panics when it fails.
pub fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} {pid}: {status}");
}

/// True when process `pid` has a handler installed for signal number `signum` (its `SigCgt`
/// mask in `/proc/<pid>/status`): a signal sent before that would be lost (ignored when the
/// process inherited SIG_IGN) or kill it (the default action of e.g. SIGHUP).
pub fn catches(pid: u32, signum: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let mask = s.lines().find_map(|l| l.strip_prefix("SigCgt:"))?;
            u64::from_str_radix(mask.trim(), 16).ok()
        })
        .is_some_and(|mask| mask & (1 << (signum - 1)) != 0)
}

/// True when process `pid` holds a listening TCP socket on `port` (any local address): its
/// open files (`/proc/<pid>/fd`) include the socket inode `/proc/net/tcp{,6}` lists in state
/// LISTEN for that port.
pub fn listens_on(pid: u32, port: u16) -> bool {
    let want = format!(":{port:04X}");
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|t| {
            t.lines()
                .skip(1)
                .filter_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    // sl local_address rem_address st ... inode (column 9); 0A = LISTEN.
                    (f.len() > 9 && f[1].ends_with(&want) && f[3] == "0A").then(|| f[9].to_string())
                })
                .collect::<Vec<_>>()
        })
        .collect();
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            l.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(str::to_string)
        })
        .any(|inode| inodes.contains(&inode))
}

/// True while `pid` exists and is not a zombie (a daemon's zombie lingers until whoever
/// adopted it reaps it).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// Wait until `pid` is gone; false after `timeout`.
pub fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// The pid in a pid file, once it holds one of a live process.
pub fn read_pid_file(path: &Path) -> Option<u32> {
    let pid = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
    alive(pid).then_some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_socket_is_found_and_a_bound_one_is_not() {
        let me = std::process::id();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("bound").port();
        assert!(listens_on(me, port));
        drop(listener);
        assert!(!listens_on(me, port));
        let closed = crate::ClosedPort::new();
        assert!(!listens_on(me, closed.addr.port()), "bound, not listening");
    }

    #[test]
    fn caught_signals_are_read_from_proc() {
        // Rust's runtime handles SIGSEGV (stack overflow reports); nothing here handles SIGHUP.
        let me = std::process::id();
        assert!(catches(me, 11), "SIGSEGV");
        assert!(!catches(me, 1), "SIGHUP");
    }
}
