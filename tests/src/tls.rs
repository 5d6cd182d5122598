//! TLS for tests: certificates generated at test time with `rcgen` (no key is ever committed),
//! listener configs, and `curl` as the TLS client (HTTP/1.1 and HTTP/2, its own TLS stack).
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A certificate and its key, PEM.
#[derive(Debug, Clone)]
pub struct CertPair {
    /// The chain, leaf first.
    pub cert_pem: String,
    pub key_pem: String,
}

/// Files of a written [`CertPair`].
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertPair {
    /// Write `<dir>/<stem>.pem` and `<dir>/<stem>.key`.
    pub fn write(&self, dir: &Path, stem: &str) -> CertFiles {
        let files = CertFiles {
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}.key")),
        };
        self.write_to(&files);
        files
    }

    /// Replace `files` with this pair, each through a rename, so a reader never sees half.
    pub fn write_to(&self, files: &CertFiles) {
        for (path, text) in [(&files.cert, &self.cert_pem), (&files.key, &self.key_pem)] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).expect("write a test certificate file");
            std::fs::rename(&tmp, path).expect("rename a test certificate file");
        }
    }
}

fn params(names: &[&str]) -> CertificateParams {
    let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .expect("valid test names");
    p.distinguished_name.push(
        DnType::CommonName,
        names.first().copied().unwrap_or("berth-test"),
    );
    p
}

/// A self-signed certificate for `names` (the first is also its common name).
pub fn self_signed(names: &[&str]) -> CertPair {
    let key = KeyPair::generate().expect("generate a key");
    let cert = params(names).self_signed(&key).expect("self-sign");
    CertPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// A self-signed certificate for `names` that expired in 2021.
pub fn expired(names: &[&str]) -> CertPair {
    let key = KeyPair::generate().expect("generate a key");
    let mut p = params(names);
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let cert = p.self_signed(&key).expect("self-sign");
    CertPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// A test certificate authority: signs leaf certificates (e.g. for TLS backends).
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// Its certificate, PEM (what a client trusts).
    pub pem: String,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TestCa")
    }
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("generate a key");
        let mut p = params(&[]);
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = p.self_signed(&key).expect("self-sign the CA");
        TestCa {
            pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    /// A leaf certificate for `names` signed by this CA (chain: leaf, CA).
    pub fn leaf(&self, names: &[&str]) -> CertPair {
        let key = KeyPair::generate().expect("generate a key");
        let cert = params(names)
            .signed_by(&key, &self.issuer)
            .expect("sign a leaf");
        CertPair {
            cert_pem: format!("{}{}", cert.pem(), self.pem),
            key_pem: key.serialize_pem(),
        }
    }

    /// Write the CA certificate to `path`.
    pub fn write(&self, path: &Path) {
        std::fs::write(path, &self.pem).expect("write the CA certificate");
    }
}

/// A TLS listener entry for `listeners:` (YAML, one mapping).
pub fn listener(addr: SocketAddr, certs: &[&CertFiles], extra: &str) -> String {
    let list: Vec<String> = certs
        .iter()
        .map(|c| format!("{{cert: {:?}, key: {:?}}}", c.cert, c.key))
        .collect();
    format!(
        "{{addr: \"{addr}\", tls: {{certificates: [{}]{extra}}}}}",
        list.join(", ")
    )
}

/// `yaml` with `listeners:` set to a placeholder first listener (the harness gives it the
/// gateway's plain address) followed by `extra` (YAML mappings).
pub fn with_listeners(yaml: &str, extra: &[String]) -> String {
    let mut items = vec!["{addr: \"127.0.0.1:1\"}".to_string()];
    items.extend(extra.iter().cloned());
    crate::config::set(yaml, "listeners", &format!("[{}]", items.join(", ")))
}

/// Run `curl` with `args` (`-s`, `-k` for self-signed, ... as the test wants), capturing its
/// output. Panics when curl cannot be started.
pub fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run curl: {e}"))
}

/// `https://<name>:<port>/<path>` with `--resolve` sending `name` to 127.0.0.1: the arguments
/// that make curl use `name` as SNI. With `name` = `None`, the address itself (no SNI: curl
/// sends none for an IP address).
pub fn url_args(addr: SocketAddr, name: Option<&str>, path: &str) -> Vec<String> {
    match name {
        Some(n) => vec![
            "--resolve".into(),
            format!("{n}:{}:{}", addr.port(), addr.ip()),
            format!("https://{n}:{}{path}", addr.port()),
        ],
        None => vec![format!("https://{addr}{path}")],
    }
}

/// The common name of the certificate the server presented, from `curl -v` output.
pub fn subject_cn(verbose: &str) -> Option<String> {
    verbose.lines().find_map(|l| {
        let rest = l.split("subject:").nth(1)?;
        let cn = rest.split("CN=").nth(1)?;
        Some(cn.split([',', '/', ';']).next()?.trim().to_string())
    })
}

/// The ALPN protocol the server accepted, from `curl -v` output (`None`: no ALPN).
pub fn alpn(verbose: &str) -> Option<String> {
    verbose.lines().find_map(|l| {
        l.split("ALPN: server accepted ")
            .nth(1)
            .or_else(|| l.split("ALPN, server accepted to use ").nth(1))
            .map(|p| p.trim().to_string())
    })
}
