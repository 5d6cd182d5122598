//! `berth -d` with `server.daemon_wait_for_ready: true`: the launcher must survive the daemon's
//! "ready" signal.
//!
//! Pingora 0.9.1 (`server/daemon.rs`) has the daemon send SIGUSR1 to the launcher once its
//! bootstrap is done, but the launcher only starts listening for SIGUSR1 *after* the fork
//! (`wait_for_ready_or_exit`). A daemon that gets ready quickly signals first, SIGUSR1's default
//! action kills the launcher, and `berth -d` (a systemd `ExecReload`) fails although the daemon
//! serves. Berth installs its own SIGUSR1 action before Pingora forks: the launcher exits 0 on
//! the signal — which is what Pingora's wait does once it listens — whichever comes first.
//! The daemon inherits the action; it disarms it once it runs, so a stray SIGUSR1 sent to the
//! daemon later is ignored rather than ending it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The armed action; `disarm` in the daemon.
#[derive(Debug)]
pub struct ReadyExit {
    armed: Arc<AtomicBool>,
}

impl ReadyExit {
    /// Arm the action when this process is about to daemonize and wait for readiness.
    pub fn arm(daemon: bool, wait_for_ready: bool) -> Option<ReadyExit> {
        if !(daemon && wait_for_ready) {
            return None;
        }
        let armed = Arc::new(AtomicBool::new(true));
        match signal_hook::flag::register_conditional_shutdown(
            signal_hook::consts::SIGUSR1,
            0,
            armed.clone(),
        ) {
            Ok(_) => Some(ReadyExit { armed }),
            Err(e) => {
                log::warn!("cannot install the SIGUSR1 ready action ({e}); `berth -d` may fail");
                None
            }
        }
    }

    /// In the daemon: SIGUSR1 no longer ends the process.
    pub fn disarm(&self) {
        self.armed.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;

    const CHILD: &str = "BERTH_LAUNCHER_TEST_CHILD";

    /// Runs this test again in a child process that arms (or not, or disarms) and then gets
    /// SIGUSR1; returns how the child ended.
    fn child(mode: &str) -> std::process::ExitStatus {
        Command::new(std::env::current_exe().unwrap())
            .args([
                "launcher::tests::sigusr1_ends_the_launcher_with_0_only_while_armed",
                "--exact",
                "--test-threads=1",
            ])
            .env(CHILD, mode)
            .status()
            .unwrap()
    }

    #[test]
    fn sigusr1_ends_the_launcher_with_0_only_while_armed() {
        if let Ok(mode) = std::env::var(CHILD) {
            let armed = ReadyExit::arm(mode != "plain", true);
            if mode == "disarmed" {
                armed.as_ref().unwrap().disarm();
            }
            signal_hook::low_level::raise(signal_hook::consts::SIGUSR1).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(500));
            std::process::exit(3);
        }
        // Armed (the launcher): SIGUSR1 means ready, exit 0.
        assert_eq!(child("armed").code(), Some(0));
        // Disarmed (the daemon): the signal is ignored, the process goes on.
        assert_eq!(child("disarmed").code(), Some(3));
        // Not armed: SIGUSR1's default action ends the process — the race this module closes.
        assert_eq!(child("plain").signal(), Some(signal_hook::consts::SIGUSR1));
        assert!(ReadyExit::arm(true, false).is_none());
    }
}
