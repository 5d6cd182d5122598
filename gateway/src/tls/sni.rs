//! Certificate selection by SNI: rustls asks [`SniResolver`] for a certificate at each client
//! hello (Pingora 0.9.1's `TlsAccept::certificate_callback` is never called under rustls). The
//! certificates live in an [`ArcSwap`]: a reload swaps the whole set in one store, handshakes
//! in progress keep the set they loaded, and the hello path takes no lock.
use super::certs::Loaded;
use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::Arc;

/// One version of a listener's certificates.
#[derive(Debug)]
pub struct CertSet {
    /// Exact names.
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` certificates by `example.com`: a wildcard covers one label.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// For clients without SNI, or with a name no certificate has: the first certificate.
    default: Arc<CertifiedKey>,
}

impl CertSet {
    /// `certs` in file order (at least one). A name two certificates share goes to the first.
    pub fn new(certs: &[Loaded]) -> CertSet {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for c in certs {
            for name in &c.names {
                let (map, key) = match name.strip_prefix("*.") {
                    Some(parent) => (&mut wildcard, parent),
                    None => (&mut exact, name.as_str()),
                };
                map.entry(key.to_string()).or_insert_with(|| c.key.clone());
            }
        }
        CertSet {
            exact,
            wildcard,
            default: certs[0].key.clone(),
        }
    }

    /// The certificate for `sni` (lower case, as rustls hands it over).
    pub fn pick(&self, sni: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(name) = sni else {
            return &self.default;
        };
        if let Some(k) = self.exact.get(name) {
            return k;
        }
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .unwrap_or(&self.default)
    }
}

/// The resolver of one TLS listener.
#[derive(Debug)]
pub struct SniResolver {
    set: ArcSwap<CertSet>,
}

impl SniResolver {
    pub fn new(set: CertSet) -> SniResolver {
        SniResolver {
            set: ArcSwap::from_pointee(set),
        }
    }

    /// Serve `set` from the next client hello on.
    pub fn replace(&self, set: CertSet) {
        self.set.store(Arc::new(set));
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.set.load().pick(hello.server_name()).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(names: &[&str], tag: u8) -> Loaded {
        let cert = rustls::pki_types::CertificateDer::from(vec![tag]);
        let key = no_key();
        Loaded {
            key: Arc::new(CertifiedKey::new(vec![cert], key)),
            names: names.iter().map(|n| n.to_string()).collect(),
            not_after: 0,
            file: format!("{tag}.pem"),
        }
    }

    /// The tests pick certificates, they never sign: a key that cannot.
    fn no_key() -> Arc<dyn rustls::sign::SigningKey> {
        Arc::new(NoKey)
    }

    #[derive(Debug)]
    struct NoKey;
    impl rustls::sign::SigningKey for NoKey {
        fn choose_scheme(
            &self,
            _: &[rustls::SignatureScheme],
        ) -> Option<Box<dyn rustls::sign::Signer>> {
            None
        }
        fn algorithm(&self) -> rustls::SignatureAlgorithm {
            rustls::SignatureAlgorithm::ECDSA
        }
    }

    fn tag(k: &Arc<CertifiedKey>) -> u8 {
        k.cert[0].as_ref()[0]
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_default() {
        let set = CertSet::new(&[
            loaded(&["a.example"], 1),
            loaded(&["b.example", "*.b.example"], 2),
            loaded(&["a.example", "c.example"], 3),
        ]);
        assert_eq!(
            tag(set.pick(Some("a.example"))),
            1,
            "first listed wins a shared name"
        );
        assert_eq!(tag(set.pick(Some("c.example"))), 3);
        assert_eq!(tag(set.pick(Some("b.example"))), 2);
        assert_eq!(tag(set.pick(Some("x.b.example"))), 2);
        assert_eq!(
            tag(set.pick(Some("y.x.b.example"))),
            1,
            "a wildcard covers one label"
        );
        assert_eq!(tag(set.pick(Some("unknown.example"))), 1);
        assert_eq!(tag(set.pick(None)), 1);
    }

    #[test]
    fn replace_swaps_the_set() {
        let r = SniResolver::new(CertSet::new(&[loaded(&["a.example"], 1)]));
        assert_eq!(tag(r.set.load().pick(None)), 1);
        r.replace(CertSet::new(&[loaded(&["a.example"], 9)]));
        assert_eq!(tag(r.set.load().pick(Some("a.example"))), 9);
    }
}
