//! Active health checks: every `interval`, each backend of an upstream with a `health:` section
//! is probed (TCP connect, or an HTTP GET expecting a status) within `timeout`; results feed the
//! rise/fall state machine of each upstream's membership ([`crate::upstream`]).
use crate::config::{HealthConf, HealthKind};
use crate::gateway::Gateway;
use crate::headers::status_of;
use crate::upstream::Upstream;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
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

async fn check_loop(up: Arc<Upstream>, conf: HealthConf) {
    let mut tick = tokio::time::interval(conf.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let targets: Vec<(String, SocketAddr)> = up.read_members(|m| {
            m.list
                .iter()
                .map(|b| (b.conf.id.clone(), b.conf.addr))
                .collect()
        });
        let mut checks = JoinSet::new();
        for (id, addr) in targets {
            let conf = conf.clone();
            checks.spawn(async move {
                let ok = tokio::time::timeout(conf.timeout, probe(addr, &conf.kind))
                    .await
                    .unwrap_or(false);
                (id, ok)
            });
        }
        while let Some(done) = checks.join_next().await {
            if let Ok((id, ok)) = done {
                up.health_result(&id, ok, &conf);
            }
        }
    }
}

/// One probe: true when the backend passes.
pub async fn probe(addr: SocketAddr, kind: &HealthKind) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return false;
    };
    let HealthKind::Http {
        path,
        expect_status,
    } = kind
    else {
        return true;
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: berth-health-check\r\n\
         Connection: close\r\n\r\n"
    );
    if stream.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    let mut len = 0;
    while len < 12 {
        match stream.read(&mut buf[len..]).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => len += n,
        }
    }
    status_of(&buf[..len]) == Some(*expect_status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(status_of(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(status_of(b"HTTP/1.0 503 Service Unavailable"), Some(503));
        assert_eq!(status_of(b"HTTP/2 200"), None);
        assert_eq!(status_of(b"garbage"), None);
    }

    #[tokio::test]
    async fn probes_real_sockets() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let status = if buf.starts_with(b"GET /ok ") {
                    200
                } else {
                    500
                };
                let resp = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
                let _ = s.write_all(resp.as_bytes()).await;
            }
        });
        let http = |path: &str| HealthKind::Http {
            path: path.into(),
            expect_status: 200,
        };
        assert!(probe(addr, &HealthKind::Tcp).await);
        assert!(probe(addr, &http("/ok")).await);
        assert!(!probe(addr, &http("/bad")).await);
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        assert!(!probe(closed, &HealthKind::Tcp).await);
    }
}
