//! `upstreams.<name>.tls:` — TLS to the backends: the name their certificates must carry, the
//! CA they must lead to, and whether to verify at all. The CA file is read here, so `berth -t`
//! reports an unreadable or empty one.
use super::super::UpstreamTls;
use berth_plugins::params::Obj;
use rustls::pki_types::ServerName;
use std::sync::Arc;

pub(super) fn read(up: &mut Obj<'_, '_>) -> Option<UpstreamTls> {
    let v = up.raw("tls")?;
    let path = up.path_of("tls");
    let mut o = Obj::new(v, path, up.errors())?;
    let sni = o.opt::<String>("sni");
    if let Some(name) = &sni {
        if name.is_empty() || ServerName::try_from(name.as_str()).is_err() {
            o.error(
                "sni",
                format!("{name:?} is not a DNS name or an IP address"),
            );
        }
    }
    let ca = o
        .opt::<String>("ca_file")
        .and_then(|file| match crate::config::pem::read_ca(&file) {
            Ok((_, certs)) => Some(Arc::new(certs)),
            Err(e) => {
                o.error("ca_file", e);
                None
            }
        });
    let verify = o.flag("verify", true);
    o.finish();
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(sni.as_deref().unwrap_or("").as_bytes());
    h.update(&[0, u8::from(verify)]);
    for c in ca.iter().flat_map(|c| c.iter()) {
        h.update(c);
    }
    Some(UpstreamTls {
        sni,
        ca,
        verify,
        digest: h.digest(),
    })
}
