//! Active health checks: every `interval`, each backend of an upstream with a `health:` section
//! is probed within `timeout`, and the result feeds the rise/fall state machine of the
//! upstream's membership ([`crate::upstream`]). The probes are pingora-load-balancing's
//! `TcpHealthCheck` (connect) and `HttpHealthCheck` (`GET path`, expecting a status), each
//! asked for one result at a time (their own thresholds at 1: Berth's `rise`/`fall` decide).
//! They connect through Pingora's connector, so with the upstream's `tls:` they speak TLS with
//! the same name, CA and verification as requests do. A failed probe is counted by reason
//! (`berth_health_check_failures_total`).
use crate::config::{HealthConf, HealthKind, UpstreamSettings};
use crate::gateway::Gateway;
use crate::metrics::CheckFailure;
use crate::upstream::Upstream;
use async_trait::async_trait;
use pingora_core::protocols::tls::CaType;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_core::upstreams::peer::PeerOptions;
use pingora_error::{Error, ErrorType};
use pingora_http::RequestHeader;
use pingora_load_balancing::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora_load_balancing::Backend;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::task::JoinSet;

/// Runs the checks of every upstream that has them.
pub struct HealthChecker {
    pub gw: Arc<Gateway>,
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut loops = JoinSet::new();
        for up in &self.gw.upstreams {
            if let Some(conf) = up.settings.health.clone() {
                loops.spawn(check_loop(up.clone(), conf));
            }
        }
        if loops.is_empty() {
            return;
        }
        let _ = shutdown.changed().await;
        loops.abort_all();
    }
}

type Probe = dyn HealthCheck + Send + Sync;

async fn check_loop(up: Arc<Upstream>, conf: HealthConf) {
    let mut tick = tokio::time::interval(conf.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One probe per backend address, made at its first check (a TLS probe names the
    // backend's address when the upstream sets no `tls.sni`).
    let mut probes: HashMap<SocketAddr, Arc<Probe>> = HashMap::new();
    loop {
        tick.tick().await;
        let targets: Vec<(String, SocketAddr)> = up.read_members(|m| {
            m.list
                .iter()
                .map(|b| (b.conf.id.clone(), b.conf.addr))
                .collect()
        });
        probes.retain(|addr, _| targets.iter().any(|(_, a)| a == addr));
        let mut checks = JoinSet::new();
        for (id, addr) in targets {
            let probe = probes
                .entry(addr)
                .or_insert_with(|| probe(&up.settings, &conf, up.tls_ca(), addr).into())
                .clone();
            let timeout = conf.timeout;
            checks.spawn(async move {
                let result = match Backend::new(&addr.to_string()) {
                    Ok(target) => match tokio::time::timeout(timeout, probe.check(&target)).await {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(e)) => Err(failure(&e)),
                        Err(_) => Err(CheckFailure::Timeout),
                    },
                    Err(_) => Err(CheckFailure::Other),
                };
                (id, result)
            });
        }
        while let Some(done) = checks.join_next().await {
            if let Ok((id, result)) = done {
                if let Err(why) = result {
                    up.health_check_failed(&id, why);
                }
                up.health_result(&id, result.is_ok(), &conf);
            }
        }
    }
}

/// Why a probe failed, from Pingora's error.
fn failure(e: &Error) -> CheckFailure {
    match e.etype() {
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
            CheckFailure::Timeout
        }
        ErrorType::TLSHandshakeFailure | ErrorType::InvalidCert | ErrorType::TLSWantX509Lookup => {
            CheckFailure::Tls
        }
        ErrorType::ConnectRefused | ErrorType::ConnectNoRoute | ErrorType::ConnectError => {
            CheckFailure::Connect
        }
        ErrorType::CustomCode(..) => CheckFailure::Status,
        _ => CheckFailure::Other,
    }
}

/// The probe of the backend at `addr`.
pub fn probe(
    s: &UpstreamSettings,
    conf: &HealthConf,
    ca: Option<&Arc<CaType>>,
    addr: SocketAddr,
) -> Box<Probe> {
    let tls = s.tls.as_ref();
    // The name TLS probes send and verify, as requests do: `tls.sni`, else the address.
    let name = tls.map(|t| t.sni.clone().unwrap_or_else(|| addr.ip().to_string()));
    let options = |o: &mut PeerOptions| {
        o.connection_timeout = Some(conf.timeout);
        o.total_connection_timeout = Some(conf.timeout);
        o.read_timeout = Some(conf.timeout);
        o.write_timeout = Some(conf.timeout);
        if let Some(t) = tls {
            o.verify_cert = t.verify;
            o.verify_hostname = t.verify;
            o.ca = ca.cloned();
        }
    };
    match &conf.kind {
        HealthKind::Tcp => {
            let mut hc = TcpHealthCheck::new();
            hc.peer_template.sni = name.unwrap_or_default();
            options(&mut hc.peer_template.options);
            hc
        }
        HealthKind::Http {
            path,
            expect_status,
        } => {
            let host = name.clone().unwrap_or_else(|| addr.to_string());
            let mut hc = HttpHealthCheck::new(&host, tls.is_some());
            options(&mut hc.peer_template.options);
            if let Ok(mut req) = RequestHeader::build("GET", path.as_bytes(), None) {
                let _ = req.append_header("Host", host.as_str());
                let _ = req.append_header("User-Agent", "berth-health-check");
                hc.req = req;
            }
            let want = *expect_status;
            hc.validator = Some(Box::new(move |resp| {
                if resp.status.as_u16() == want {
                    Ok(())
                } else {
                    Error::e_explain(
                        ErrorType::CustomCode("unexpected status", resp.status.as_u16()),
                        "health check",
                    )
                }
            }));
            Box::new(hc)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, HealthConf};
    use berth_plugins::Registry;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn settings() -> UpstreamSettings {
        let yaml = "upstreams:\n  app:\n    backends:\n      - { id: b1, addr: \"127.0.0.1:9\" }\n";
        let mut c = parse(yaml, &Registry::builtin()).expect("valid");
        c.upstreams.remove(0).settings
    }

    fn conf(kind: HealthKind) -> HealthConf {
        HealthConf {
            kind,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            rise: 1,
            fall: 1,
        }
    }

    async fn check(kind: HealthKind, addr: SocketAddr) -> Result<(), CheckFailure> {
        let p = probe(&settings(), &conf(kind), None, addr);
        let target = Backend::new(&addr.to_string()).expect("ip:port");
        p.check(&target).await.map_err(|e| failure(&e))
    }

    #[tokio::test]
    async fn probes_real_sockets() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 512];
                    let _ = s.read(&mut buf).await;
                    let status = if buf.starts_with(b"GET /ok ") {
                        200
                    } else {
                        500
                    };
                    let resp = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        let http = |path: &str| HealthKind::Http {
            path: path.into(),
            expect_status: 200,
        };
        assert_eq!(check(HealthKind::Tcp, addr).await, Ok(()));
        assert_eq!(check(http("/ok"), addr).await, Ok(()));
        assert_eq!(check(http("/bad"), addr).await, Err(CheckFailure::Status));
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        assert_eq!(
            check(HealthKind::Tcp, closed).await,
            Err(CheckFailure::Connect)
        );
        assert_eq!(check(http("/ok"), closed).await, Err(CheckFailure::Connect));
    }
}
