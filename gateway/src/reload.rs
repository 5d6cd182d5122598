//! `SIGHUP`: re-read the configuration file and apply backend changes (add, remove, weight,
//! address, drain) to the running upstreams — no restart, no dropped request, pinned sessions
//! on unchanged backends stay put. An invalid file changes nothing: every error is logged and
//! the previous configuration keeps serving. Changes beyond backends (listeners, routes,
//! plugins, new upstreams) need an upgrade (`berth -u`) and are reported as such.
use crate::access_log::AccessLog;
use crate::config;
use crate::gateway::Gateway;
use async_trait::async_trait;
use berth_plugins::Registry;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};

/// Listens for SIGHUP.
pub struct Reloader {
    pub gw: Arc<Gateway>,
    pub conf_path: String,
    pub registry: Registry,
    /// Reopened on SIGHUP (log rotation).
    pub access_log: Option<Arc<AccessLog>>,
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
        for u in &cfg.upstreams {
            match self.gw.upstreams.iter().find(|up| *up.name == *u.name) {
                Some(up) => up.reload_backends(&u.backends),
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
