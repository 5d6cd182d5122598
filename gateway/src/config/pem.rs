//! CA files (`ca_file` of `upstreams.<name>.tls` and of `registry:`): read and checked at load,
//! so `berth -t` reports an unreadable, malformed or empty one.
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// A PEM file of CA certificates: its text and each certificate (DER), each checked to parse.
pub(crate) fn read_ca(file: &str) -> Result<(Vec<u8>, Vec<Vec<u8>>), String> {
    let text = std::fs::read(file).map_err(|e| format!("cannot read {file:?}: {e}"))?;
    let mut out = Vec::new();
    for c in CertificateDer::pem_slice_iter(&text) {
        let c = c.map_err(|e| format!("{file:?} is not a valid PEM file: {e}"))?;
        if let Err(e) = x509_parser::parse_x509_certificate(&c) {
            return Err(format!(
                "{file:?} holds a certificate that cannot be parsed: {e}"
            ));
        }
        out.push(c.to_vec());
    }
    if out.is_empty() {
        return Err(format!(
            "{file:?} holds no certificate (expected PEM blocks \"BEGIN CERTIFICATE\")"
        ));
    }
    Ok((text, out))
}
