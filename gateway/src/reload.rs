//! `SIGHUP`: re-read the configuration file and apply backend changes (add, remove, weight,
//! address, drain) to the running upstreams — no restart, no dropped request, pinned sessions
//! on unchanged backends stay put. An invalid file changes nothing: every error is logged and
//! the previous configuration keeps serving. Changes beyond backends (listeners, routes,
//! plugins, new upstreams) need an upgrade (`berth -u`) and are reported as such.
//!
//! The certificates of the TLS listeners are re-read too (from the files the re-read
//! configuration names for each running TLS listener) and swapped in for new handshakes;
//! connections already open keep theirs. A certificate that cannot be used (unreadable, key
//! not matching, expired) refuses the whole reload: nothing changes, the old certificates and
//! backends keep serving.
//!
//! A SIGHUP that arrives while Berth is still starting (before this service runs) is neither
//! fatal — SIGHUP's default action would end the process — nor lost: [`EarlyHangup`] catches it
//! from the start of `serve`, and the reloader applies it once it runs.
use crate::access_log::AccessLog;
use crate::config;
use crate::gateway::Gateway;
use crate::tls::Edge;
use async_trait::async_trait;
use berth_plugins::Registry;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};

/// Catches SIGHUP from the start of `serve` until the reloader listens for it.
#[derive(Debug)]
pub struct EarlyHangup {
    caught: Arc<AtomicBool>,
    id: signal_hook::SigId,
}

impl EarlyHangup {
    /// Install the catching action (it replaces SIGHUP's default: ending the process).
    pub fn catch() -> std::io::Result<Self> {
        let caught = Arc::new(AtomicBool::new(false));
        let id = signal_hook::flag::register(signal_hook::consts::SIGHUP, caught.clone())?;
        Ok(EarlyHangup { caught, id })
    }

    /// Stop catching (the caller listens by now); whether a SIGHUP came meanwhile.
    fn finish(&self) -> bool {
        signal_hook::low_level::unregister(self.id);
        self.caught.swap(false, Ordering::SeqCst)
    }
}

/// Listens for SIGHUP.
pub struct Reloader {
    pub gw: Arc<Gateway>,
    pub conf_path: String,
    pub registry: Registry,
    /// Reopened on SIGHUP (log rotation).
    pub access_log: Option<Arc<AccessLog>>,
    /// The TLS listeners, whose certificates are re-read.
    pub edge: Option<Arc<Edge>>,
    /// SIGHUPs that came before [`Reloader::start`] listened.
    pub early: Option<EarlyHangup>,
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot listen for SIGHUP, reload disabled: {e}");
                return;
            }
        };
        if self.early.as_ref().is_some_and(EarlyHangup::finish) {
            log::info!("SIGHUP received while starting");
            self.reload();
        }
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                got = hup.recv() => {
                    if got.is_none() {
                        break;
                    }
                    self.reload();
                }
            }
        }
    }
}

impl Reloader {
    /// Apply the file's backend lists; returns false when the file was refused.
    pub fn reload(&self) -> bool {
        log::info!("SIGHUP: reloading {}", self.conf_path);
        if let Some(access_log) = &self.access_log {
            access_log.reopen();
        }
        let cfg = match config::load_file(&self.conf_path, &self.registry) {
            Ok(c) => c,
            Err(errors) => {
                for e in &errors {
                    log::error!("reload refused: {e}");
                }
                log::error!(
                    "reload refused: {} error(s) in {}; still serving the previous configuration",
                    errors.len(),
                    self.conf_path
                );
                return false;
            }
        };
        if let Some(edge) = &self.edge {
            match edge.reload(&cfg.listeners) {
                Ok(n) => log::info!("reload: {n} TLS certificate(s) loaded"),
                Err(errors) => {
                    for e in &errors {
                        log::error!("reload refused: {e}");
                    }
                    log::error!(
                        "reload refused: {} certificate error(s); still serving the previous \
                         certificates and configuration",
                        errors.len()
                    );
                    return false;
                }
            }
        }
        let tls_running = |addr: &str| {
            self.edge
                .as_ref()
                .is_some_and(|e| e.listeners.iter().any(|l| l.addr == addr))
        };
        for l in &cfg.listeners {
            if l.tls.is_some() != tls_running(&l.addr) {
                log::warn!(
                    "reload: listener {} changed between TLS and plain: that needs an upgrade (berth -u)",
                    l.addr
                );
            }
        }
        for u in &cfg.upstreams {
            match self.gw.upstreams.iter().find(|up| *up.name == *u.name) {
                Some(up) => {
                    up.reload_backends(&u.backends);
                    // The fleet's stored admin state wins over the file's for the backends
                    // it names: read it again over what the reload changed.
                    if let Some(reg) = &up.redis {
                        reg.resync();
                    }
                }
                None => log::warn!(
                    "reload: new upstream {} needs an upgrade (berth -u)",
                    u.name
                ),
            }
        }
        for up in &self.gw.upstreams {
            if !cfg.upstreams.iter().any(|u| *u.name == *up.name) {
                log::warn!(
                    "reload: removing upstream {} needs an upgrade (berth -u)",
                    up.name
                );
            }
        }
        log::info!("reload of {} applied", self.conf_path);
        true
    }
}
