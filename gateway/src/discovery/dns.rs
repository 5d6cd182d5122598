//! [`DnsDiscovery`]: pingora-load-balancing's `ServiceDiscovery` over DNS, with
//! hickory-resolver. One resolution asks for the name's A and AAAA records; every address, at
//! the configured port, is a backend. Each backend carries, in its `ext`, when the answer's
//! TTL runs out ([`ValidUntil`]), so the caller can resolve again then.
//!
//! The resolver's cache is off (and cleared before each query): every resolution asks the
//! server, so `interval` is how stale a set can be, whatever TTL the records carry.
use crate::config::DiscoveryConf;
use async_trait::async_trait;
use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;
use pingora_error::{Error, ErrorType, Result};
use pingora_load_balancing::discovery::ServiceDiscovery;
use pingora_load_balancing::Backend;
use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

/// When the answer a backend came from expires (its records' smallest TTL), in `Backend::ext`.
#[derive(Debug, Clone, Copy)]
pub struct ValidUntil(pub Instant);

/// The backends of one upstream's `discovery:` name.
pub struct DnsDiscovery {
    name: String,
    port: u16,
    resolver: TokioResolver,
}

impl DnsDiscovery {
    /// A resolver for `conf`: its `resolver` address (UDP, and TCP for long answers), or the
    /// system's configuration. Fails only when the system configuration cannot be read.
    pub fn new(conf: &DiscoveryConf) -> std::result::Result<DnsDiscovery, String> {
        let provider = TokioConnectionProvider::default();
        let mut builder = match conf.resolver {
            Some(addr) => {
                let mut c = ResolverConfig::new();
                c.add_name_server(NameServerConfig::new(addr, Protocol::Udp));
                c.add_name_server(NameServerConfig::new(addr, Protocol::Tcp));
                TokioResolver::builder_with_config(c, provider)
            }
            None => TokioResolver::builder(provider)
                .map_err(|e| format!("cannot read the system's DNS configuration: {e}"))?,
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.timeout = conf.timeout;
        opts.attempts = 1;
        opts.cache_size = 0;
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        opts.use_hosts_file = ResolveHosts::Never;
        Ok(DnsDiscovery {
            name: conf.dns.clone(),
            port: conf.port,
            resolver: builder.build(),
        })
    }
}

#[async_trait]
impl ServiceDiscovery for DnsDiscovery {
    /// The name's addresses as backends (weight 1; the upstream's `discovery.weight` is applied
    /// when they are added). No record at all (NXDOMAIN, or no A/AAAA) is an empty set; no
    /// answer is an error.
    async fn discover(&self) -> Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        self.resolver.clear_cache();
        let lookup = match self.resolver.lookup_ip(self.name.as_str()).await {
            Ok(l) => l,
            Err(e) if e.is_no_records_found() => return Ok((BTreeSet::new(), HashMap::new())),
            Err(e) => {
                return Error::e_explain(
                    ErrorType::ConnectError,
                    format!("resolving {}: {e}", self.name),
                )
            }
        };
        let until = ValidUntil(lookup.valid_until());
        let backends = lookup
            .iter()
            .map(|ip| {
                let mut b = Backend {
                    addr: pingora_core::protocols::l4::socket::SocketAddr::Inet(
                        std::net::SocketAddr::new(ip, self.port),
                    ),
                    weight: 1,
                    ext: http::Extensions::new(),
                };
                b.ext.insert(until);
                b
            })
            .collect();
        Ok((backends, HashMap::new()))
    }
}
