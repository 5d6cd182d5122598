//! Reading one certificate of a TLS listener: the PEM chain and key files, checked the way an
//! operator needs it checked before anything serves — readable, parseable, key matching the
//! leaf certificate, not expired — with every error naming the key path and the file.
//!
//! Parsing: `rustls-pki-types`' PEM reader (the one rustls itself builds on) for the files,
//! rustls' ring provider to load the key and compare it with the certificate
//! (`CertifiedKey::keys_match`), and `x509-parser` (already in Pingora's dependency tree) for
//! the names and the validity period.
use crate::config::{CertFiles, ConfError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::sync::Arc;
use x509_parser::extensions::GeneralName;

/// A certificate ready to serve.
#[derive(Debug)]
pub struct Loaded {
    pub key: Arc<CertifiedKey>,
    /// The names it answers to, lower case: its DNS subject alternative names (wildcards as
    /// `*.example.com`), or its subject's common name when it has none.
    pub names: Vec<String>,
    /// Its `notAfter`, in seconds since the Unix epoch.
    pub not_after: i64,
    /// The cert file as configured (the metric label).
    pub file: String,
}

/// Read and check `files`; `now` in seconds since the Unix epoch. Every problem is one error
/// at `<at>.cert` or `<at>.key`.
pub fn load(files: &CertFiles, now: i64) -> Result<Loaded, Vec<ConfError>> {
    let err = |key: &str, message: String| ConfError {
        path: format!("{}.{key}", files.at),
        message,
    };
    let chain = read_chain(&files.cert).map_err(|m| err("cert", m));
    let key = read_key(&files.key).map_err(|m| err("key", m));
    let (chain, key) = match (chain, key) {
        (Ok(c), Ok(k)) => (c, k),
        (c, k) => return Err([c.err(), k.err()].into_iter().flatten().collect()),
    };
    let (names, not_before, not_after) =
        describe(&chain[0]).map_err(|m| vec![err("cert", format!("{:?}: {m}", files.cert))])?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider.key_provider.load_private_key(key).map_err(|e| {
        vec![err(
            "key",
            format!("{:?}: unsupported private key ({e})", files.key),
        )]
    })?;
    let certified = CertifiedKey::new(chain, signing);
    if certified.keys_match().is_err() {
        return Err(vec![err(
            "key",
            format!(
                "{:?} does not match the certificate in {:?}",
                files.key, files.cert
            ),
        )]);
    }
    if not_after.timestamp() < now {
        return Err(vec![err(
            "cert",
            format!("{:?} expired on {not_after}", files.cert),
        )]);
    }
    if not_before.timestamp() > now {
        log::warn!(
            "{}.cert: {:?} is not valid before {not_before}: clients will refuse it until then",
            files.at,
            files.cert
        );
    }
    Ok(Loaded {
        key: Arc::new(certified),
        names,
        not_after: not_after.timestamp(),
        file: files.cert.clone(),
    })
}

fn read_chain(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {path:?}: {e}"))?;
    let chain = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{path:?} is not a valid PEM certificate chain: {e}"))?;
    if chain.is_empty() {
        return Err(format!(
            "{path:?} holds no certificate (expected PEM blocks \"BEGIN CERTIFICATE\")"
        ));
    }
    Ok(chain)
}

fn read_key(path: &str) -> Result<PrivateKeyDer<'static>, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {path:?}: {e}"))?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!(
            "{path:?} holds no private key (expected a PEM block \"BEGIN PRIVATE KEY\", \"BEGIN RSA \
             PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\")"
        ),
        e => format!("{path:?} is not a valid PEM private key: {e}"),
    })
}

type Validity = (
    Vec<String>,
    x509_parser::time::ASN1Time,
    x509_parser::time::ASN1Time,
);

/// The leaf's names and validity period.
fn describe(leaf: &CertificateDer<'_>) -> Result<Validity, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| format!("the first certificate cannot be parsed: {e}"))?;
    let mut names: Vec<String> = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        if let Some(cn) = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
        {
            names.push(cn.to_ascii_lowercase());
        }
    }
    let v = cert.validity();
    Ok((names, v.not_before, v.not_after))
}
