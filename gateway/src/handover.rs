//! Zero-downtime upgrade with state hand-over.
//!
//! Pingora hands the listening sockets over (`berth -u`, `server.upgrade_sock`, SIGQUIT to the
//! old process); this module hands over what lives only in Berth's memory: the sticky overlay
//! of every upstream (key, backend, backup, age, idle time), admin states (draining with
//! deadline, drained), backends added or removed through the admin API, health as last seen,
//! migrations in progress. It travels over a second Unix socket next to Pingora's,
//! `<upgrade_sock>.state` ([`state_sock_path`]), in the frames of [`wire`].
//!
//! ```text
//! old process (serving)                        new process: berth -u -c FILE
//!  listens on <upgrade_sock>.state              config validated (invalid → exit 2, nothing sent)
//!      ◄──────────── HELLO ─────────────────────  connects
//!  HELLO (pid, clock) ──────────────────────────►  continues the old clock
//!  journals on; MEMBERS, PINS…, END ────────────►  merges membership, imports pins: BEFORE serving
//!  changed pins, removals (as they happen),      ─► applied as they come (own thread)
//!    membership changes (20 ms), BEAT each second  Pingora bootstrap: waits on upgrade_sock
//!  SIGQUIT ─► sends listening fds ─────────────────► serves; listens on <upgrade_sock>.state
//!  keeps serving 5 s, then grace period, then       (for the next upgrade)
//!    (its first half: held connections answered
//!    with Connection: close, see client_deadlines)
//!    drains runtimes; sends the last changes, BYE ─► stops following
//!  exits
//! ```
//! Membership is merged like a SIGHUP reload: the old live list, plus the differences between
//! the file the old process loaded and the new file. Pins are imported where the backend still
//! exists; the rest is dropped and counted (`berth_upgrade_sessions_dropped_total`). For the
//! seconds both processes serve, a pin the old process *placed* by its ring (a key it did not
//! know) never overrides one the new process pinned explicitly (a learned session id).
//! Without a reachable state socket (an older Berth, a crashed one) the new process starts
//! without state and says so. One successor at a time: a second one is refused (it exits 1).
pub mod wire;

mod receive;
mod state;
mod stream;

pub use receive::Predecessor;
pub use stream::Exit;

use crate::gateway::Gateway;
use crate::upstream::Clock;
use async_trait::async_trait;
use parking_lot::Mutex;
use pingora_core::server::{Server, ShutdownWatch};
use pingora_core::services::background::{background_service, BackgroundService};
use pingora_core::services::ServiceHandle;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// The state socket that goes with Pingora's `upgrade_sock`.
pub fn state_sock_path(upgrade_sock: &str) -> PathBuf {
    PathBuf::from(format!("{upgrade_sock}.state"))
}

/// New process, before it serves: take the running Berth's state from `path` into `gw` (its
/// clock continues the old one). `Ok(None)`, logged, when there is nothing to take over from
/// or the hand-over failed (whatever was applied before the failure stays). `Err` when the
/// running Berth refused (another upgrade is taking over from it): this process should not
/// go on.
pub fn inherit(path: &Path, gw: &mut Gateway) -> Result<Option<Predecessor>, String> {
    let started = Instant::now();
    let mut pred = match Predecessor::connect(path) {
        Ok(p) => p,
        Err(wire::WireError::Refused(why)) => return Err(why),
        Err(e) => {
            log::warn!(
                "upgrade: no state from a running Berth on {} ({e}); starting with the \
                 configuration only: sessions, drains and admin changes are not taken over",
                path.display()
            );
            return Ok(None);
        }
    };
    gw.clock = Clock::continuing(pred.hello.clock_ms);
    let pid = pred.hello.pid;
    match pred.receive_snapshot(gw) {
        Ok(t) => {
            let dropped: Vec<String> = t.dropped.iter().map(|(w, n)| format!("{n} {w}")).collect();
            log::info!(
                "upgrade: took over from pid {pid} in {:?}: {} sessions, membership of {} \
                 upstream(s); dropped: {}",
                started.elapsed(),
                t.sessions,
                t.upstreams,
                if dropped.is_empty() {
                    "none".to_string()
                } else {
                    dropped.join(", ")
                }
            );
            Ok(Some(pred))
        }
        Err(e) => {
            log::error!(
                "upgrade: the state from pid {pid} broke off ({e}); serving with what arrived"
            );
            Ok(None)
        }
    }
}

/// Add the lifecycle services: the state socket (once `bootstrap` has the listeners, so the
/// next upgrade talks to this process) and, after an upgrade, the follower of the old
/// process's changes. Returns what the exit path calls once the server has stopped.
pub fn install(
    server: &mut Server,
    gw: &Arc<Gateway>,
    path: PathBuf,
    predecessor: Option<Predecessor>,
    bootstrap: &ServiceHandle,
) -> Arc<Exit> {
    let exit = Arc::new(Exit::default());
    let state = StateServer {
        gw: gw.clone(),
        path,
        exit: exit.clone(),
    };
    let handle = server.add_service(background_service("berth state socket", state));
    handle.add_dependency(bootstrap);
    if let Some(pred) = predecessor {
        let follower = Follower {
            gw: gw.clone(),
            pred: Mutex::new(Some(pred)),
        };
        server.add_service(background_service("berth upgrade follower", follower));
    }
    exit
}

/// Listens on the state socket and streams to successors (on threads of their own, which
/// outlive the service runtimes: a successor gets changes until the process exits).
struct StateServer {
    gw: Arc<Gateway>,
    path: PathBuf,
    exit: Arc<Exit>,
}

#[async_trait]
impl BackgroundService for StateServer {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        match bind(&self.path) {
            Ok(listener) => {
                let (gw, exit) = (self.gw.clone(), self.exit.clone());
                let spawned = std::thread::Builder::new()
                    .name("berth-state".into())
                    .spawn(move || stream::accept_loop(listener, gw, exit));
                match spawned {
                    Ok(_) => log::info!("state socket on {}", self.path.display()),
                    Err(e) => log::error!("cannot start the state socket thread: {e}"),
                }
            }
            Err(e) => log::error!(
                "cannot listen on the state socket {}: {e}; an upgrade will not take over \
                 this process's sessions and drains",
                self.path.display()
            ),
        }
        let _ = shutdown.changed().await;
    }
}

/// Binds `path`, replacing a socket left there (by an exited Berth, or by the one this
/// process takes over from: that one keeps its already accepted connection).
fn bind(path: &Path) -> std::io::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a socket",
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    // Session keys and backend names: for this user only.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Applies the old process's changes on a thread of its own (started after a daemon fork).
struct Follower {
    gw: Arc<Gateway>,
    pred: Mutex<Option<Predecessor>>,
}

#[async_trait]
impl BackgroundService for Follower {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if let Some(pred) = self.pred.lock().take() {
            let gw = self.gw.clone();
            let spawned = std::thread::Builder::new()
                .name("berth-upgrade-follow".into())
                .spawn(move || pred.follow(&gw));
            if let Err(e) = spawned {
                log::error!("upgrade: cannot follow the old process's changes: {e}");
            }
        }
        let _ = shutdown.changed().await;
    }
}

#[cfg(test)]
mod tests;
