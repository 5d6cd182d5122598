//! `listeners:` — where clients connect, and what each listener speaks: plain HTTP/1.1, plus
//! HTTP/2 with prior knowledge (`h2c: true`), or TLS (`tls:`) with HTTP/2 offered by ALPN.
//! Only the file's shape is checked here; the certificate files themselves are read and
//! checked by the `tls` module (at `berth -t`, at start and on SIGHUP).
use super::super::{defaults, CertFiles, Listener, ListenerTls, TlsVersion};
use berth_plugins::params::Obj;
use std::net::SocketAddr;

pub(super) fn read_listeners(top: &mut Obj<'_, '_>) -> Vec<Listener> {
    let mut out: Vec<Listener> = Vec::new();
    let present = top.raw("listeners").is_some();
    top.list("listeners", |v, path, errors| {
        let Some(mut o) = Obj::new(v, path, errors) else {
            return;
        };
        let h2c = o.flag("h2c", defaults::H2C);
        let tls = o.raw("tls").and_then(|v| {
            let path = o.path_of("tls");
            read_tls(Obj::new(v, path, o.errors())?)
        });
        if h2c && tls.is_some() {
            o.error(
                "h2c",
                "is for plain listeners: a TLS listener offers HTTP/2 by ALPN (tls.http2)",
            );
        }
        if let Some(addr) = o.req::<String>("addr") {
            if addr.parse::<SocketAddr>().is_err() {
                o.error("addr", format!("{addr:?} is not ip:port"));
            } else if out.iter().any(|l| l.addr == addr) {
                o.error("addr", format!("{addr:?} is listed twice"));
            } else {
                out.push(Listener { addr, h2c, tls });
            }
        }
        o.finish();
    });
    if !present {
        out.push(Listener {
            addr: defaults::LISTEN.into(),
            h2c: defaults::H2C,
            tls: None,
        });
    }
    out
}

/// `listeners[i].tls:`; `None` when it cannot be used (errors recorded).
fn read_tls(mut o: Obj<'_, '_>) -> Option<ListenerTls> {
    let mut certificates = Vec::new();
    let before = o.errors().len();
    o.list("certificates", |v, path, errors| {
        let Some(mut c) = Obj::new(v, path.clone(), errors) else {
            return;
        };
        let cert = c.req::<String>("cert").filter(|p| !p.is_empty());
        let key = c.req::<String>("key").filter(|p| !p.is_empty());
        c.finish();
        if let (Some(cert), Some(key)) = (cert, key) {
            certificates.push(CertFiles {
                cert,
                key,
                at: path,
            });
        }
    });
    if certificates.is_empty() && o.errors().len() == before {
        o.error(
            "certificates",
            "is required: at least one {cert, key} pair (PEM files)",
        );
    }
    let http2 = o.flag("http2", defaults::TLS_HTTP2);
    let min_version = match o.opt::<String>("min_version").as_deref() {
        None => defaults::TLS_MIN_VERSION,
        Some("1.2") => TlsVersion::Tls12,
        Some("1.3") => TlsVersion::Tls13,
        Some(other) => {
            o.error(
                "min_version",
                format!("{other:?} is not one of: \"1.2\", \"1.3\" (TLS 1.0 and 1.1 are never accepted)"),
            );
            defaults::TLS_MIN_VERSION
        }
    };
    let ok = o.errors().len() == before;
    o.finish();
    ok.then_some(ListenerTls {
        certificates,
        http2,
        min_version,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, TlsVersion};
    use berth_plugins::Registry;

    const UPSTREAM: &str =
        "upstreams:\n  app:\n    backends:\n      - { id: b1, addr: \"127.0.0.1:9\" }\n";

    fn errors(listeners: &str) -> String {
        match parse(&format!("{listeners}{UPSTREAM}"), &Registry::builtin()) {
            Ok(_) => String::new(),
            Err(e) => e
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    #[test]
    fn plain_h2c_and_tls_listeners() {
        let yaml = format!(
            "listeners:\n  - addr: 127.0.0.1:8080\n  - addr: 127.0.0.1:8081\n    h2c: true\n  \
             - addr: 127.0.0.1:8443\n    tls:\n      certificates:\n        - {{cert: a.pem, key: a.key}}\n        \
             - {{cert: b.pem, key: b.key}}\n      min_version: \"1.3\"\n      http2: false\n{UPSTREAM}"
        );
        let c = parse(&yaml, &Registry::builtin()).expect("valid");
        assert_eq!(c.listeners.len(), 3);
        assert!(!c.listeners[0].h2c && c.listeners[0].tls.is_none());
        assert!(c.listeners[1].h2c);
        let tls = c.listeners[2].tls.as_ref().expect("tls");
        assert_eq!(tls.certificates.len(), 2);
        assert_eq!(tls.certificates[1].cert, "b.pem");
        assert_eq!(tls.certificates[1].at, "listeners[2].tls.certificates[1]");
        assert_eq!(tls.min_version, TlsVersion::Tls13);
        assert!(!tls.http2);
        let c = parse(UPSTREAM, &Registry::builtin()).expect("valid");
        assert_eq!(c.listeners[0].addr, "0.0.0.0:8080");
    }

    #[test]
    fn tls_mistakes_name_their_key() {
        let all = errors(
            "listeners:\n  - addr: 127.0.0.1:1\n    tls: {}\n  - addr: 127.0.0.1:2\n    h2c: true\n    \
             tls: {certificates: [{cert: a.pem}], min_version: \"1.1\", alpn: h2}\n",
        );
        for want in [
            "listeners[0].tls.certificates: is required",
            "listeners[1].tls.certificates[0].key: is required",
            "listeners[1].tls.min_version: \"1.1\" is not one of",
            "listeners[1].tls.alpn: unknown key",
        ] {
            assert!(all.contains(want), "{want:?} not in:\n{all}");
        }
        let all = errors(
            "listeners:\n  - addr: 127.0.0.1:2\n    h2c: true\n    tls: {certificates: [{cert: a.pem, key: a.key}]}\n",
        );
        assert!(
            all.contains("listeners[0].h2c: is for plain listeners"),
            "{all}"
        );
    }
}
