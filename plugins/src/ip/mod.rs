//! The `ip` plugin: the client's address (optionally masked to its network) is the session key.
//!
//! The client address is the TCP peer, unless the peer is one of `trusted_proxies`: then
//! `X-Forwarded-For` is read (every field, comma-separated entries, in order) from the right,
//! skipping addresses that are themselves trusted; the first untrusted one is the client; when
//! all are trusted, the leftmost. An unparsable entry stops the walk and the last address
//! accepted so far (the nearest trusted hop, or the peer) is the client. Empty list elements
//! are ignored (RFC 9110 §5.6.1). An untrusted peer's `X-Forwarded-For` is ignored entirely.
//!
//! Entries may be bare addresses, `1.2.3.4:port`, `[v6]` or `[v6]:port`. IPv4-mapped IPv6
//! (`::ffff:a.b.c.d`) is treated as IPv4, for peers, entries and `trusted_proxies` alike. The
//! key is `SessionKey::new(b"ip", masked address bytes)` (4 bytes for IPv4, 16 for IPv6). No
//! peer address → [`KeyOutcome::Skip`]. No allocation per request.
//!
//! Settings: `trusted_proxies` (CIDRs or bare addresses; default none), `ipv4_prefix` (32,
//! 0–32), `ipv6_prefix` (128, 0–128).
use crate::params::{show, Obj};
use crate::{Affinity, AffinityPlugin, KeyOutcome, PluginContext, RequestView};
use berth_routing::SessionKey;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde_yaml::Value;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// Namespace of the plugin's session keys.
const NAMESPACE: &[u8] = b"ip";

/// The `ip` plugin.
#[derive(Debug, Clone)]
pub struct IpPlugin {
    trusted: Vec<IpNet>,
    v4_prefix: u8,
    v6_prefix: u8,
}

impl IpPlugin {
    /// A plugin trusting `trusted` proxies and masking addresses to the given prefix lengths
    /// (clamped to 32 and 128).
    pub fn new(trusted: impl IntoIterator<Item = IpNet>, v4_prefix: u8, v6_prefix: u8) -> Self {
        IpPlugin {
            trusted: trusted.into_iter().map(canonical_net).collect(),
            v4_prefix: v4_prefix.min(32),
            v6_prefix: v6_prefix.min(128),
        }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|n| n.contains(&ip))
    }

    /// The client's address (unmasked, IPv4-mapped IPv6 as IPv4); `None` without a peer.
    pub fn client_addr(&self, req: &dyn RequestView) -> Option<IpAddr> {
        let peer = canonical(req.client_ip()?);
        if !self.is_trusted(peer) {
            return Some(peer);
        }
        let mut walk = Walk::default();
        req.for_each_header("x-forwarded-for", &mut |field| {
            for entry in field.split(|&c| c == b',') {
                let entry = entry.trim_ascii();
                if entry.is_empty() {
                    continue;
                }
                let ip = parse_entry(entry).map(canonical);
                walk.push(ip, ip.is_some_and(|ip| self.is_trusted(ip)));
            }
        });
        Some(walk.client(peer))
    }

    /// The session key of an address: masked to its prefix.
    pub fn key_of(&self, ip: IpAddr) -> SessionKey {
        match canonical(ip) {
            // Prefixes are checked when the plugin is built (a longer one masks nothing).
            IpAddr::V4(a) => {
                let net = Ipv4Net::new(a, self.v4_prefix).map_or(a, |n| n.network());
                SessionKey::new(NAMESPACE, &net.octets())
            }
            IpAddr::V6(a) => {
                let net = Ipv6Net::new(a, self.v6_prefix).map_or(a, |n| n.network());
                SessionKey::new(NAMESPACE, &net.octets())
            }
        }
    }
}

impl AffinityPlugin for IpPlugin {
    fn name(&self) -> &str {
        "ip"
    }

    fn sees_responses(&self) -> bool {
        false
    }

    fn session_key(&self, value: &[u8]) -> Option<SessionKey> {
        let ip: IpAddr = std::str::from_utf8(value).ok()?.trim().parse().ok()?;
        Some(self.key_of(ip))
    }

    fn key<'r>(&self, req: &'r dyn RequestView) -> KeyOutcome<'r> {
        match self.client_addr(req) {
            Some(ip) => KeyOutcome::Key(Affinity::Session(self.key_of(ip))),
            None => KeyOutcome::Skip,
        }
    }
}

/// The right-to-left walk of `X-Forwarded-For`, computed in one left-to-right pass: only the
/// rightmost entry that stops the walk (untrusted or unparsable) and what follows it matter.
#[derive(Default)]
struct Walk {
    /// The leftmost trusted entry (the answer when every entry is trusted).
    first: Option<IpAddr>,
    /// The rightmost entry that stops the walk so far: `Some(ip)` untrusted, `None` unparsable.
    stop: Option<Option<IpAddr>>,
    /// The first (trusted) entry after `stop`: the nearest trusted hop.
    after_stop: Option<IpAddr>,
}

impl Walk {
    fn push(&mut self, ip: Option<IpAddr>, trusted: bool) {
        match ip {
            Some(ip) if trusted => {
                self.first.get_or_insert(ip);
                self.after_stop.get_or_insert(ip);
            }
            _ => {
                self.stop = Some(ip);
                self.after_stop = None;
            }
        }
    }

    fn client(&self, peer: IpAddr) -> IpAddr {
        match self.stop {
            None => self.first.unwrap_or(peer),
            Some(Some(untrusted)) => untrusted,
            Some(None) => self.after_stop.unwrap_or(peer),
        }
    }
}

/// One `X-Forwarded-For` entry: `a.b.c.d`, `a.b.c.d:port`, `v6`, `[v6]`, `[v6]:port`.
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(entry).ok()?;
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

/// IPv4-mapped IPv6 as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// `::ffff:a.b.c.d/96+n` as `a.b.c.d/n`.
fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(n) = net {
        if let (Some(v4), Some(len)) = (n.addr().to_ipv4_mapped(), n.prefix_len().checked_sub(96)) {
            if let Ok(v4net) = Ipv4Net::new(v4, len) {
                return IpNet::V4(v4net);
            }
        }
    }
    net
}

/// Build an `ip` plugin from its settings.
pub fn factory(o: &mut Obj<'_, '_>, _ctx: &PluginContext<'_>) -> Option<Box<dyn AffinityPlugin>> {
    let before = o.errors().len();
    let mut trusted = Vec::new();
    o.list("trusted_proxies", |item, path, errors| {
        match parse_net(item) {
            Some(net) => trusted.push(net),
            None => errors.push(
                path,
                format!(
                    "expected a CIDR like 10.0.0.0/8 or an address, found {}",
                    show(item)
                ),
            ),
        }
    });
    let v4_prefix = prefix(o, "ipv4_prefix", 32);
    let v6_prefix = prefix(o, "ipv6_prefix", 128);
    if o.errors().len() > before {
        return None;
    }
    Some(Box::new(IpPlugin::new(trusted, v4_prefix, v6_prefix)))
}

/// A CIDR (`10.0.0.0/8`) or a bare address (as /32 or /128).
fn parse_net(v: &Value) -> Option<IpNet> {
    let s = v.as_str()?.trim();
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

fn prefix(o: &mut Obj<'_, '_>, key: &'static str, max: u8) -> u8 {
    match o.opt::<i64>(key) {
        None => max,
        Some(n) => match u8::try_from(n) {
            Ok(p) if p <= max => p,
            _ => {
                o.error(key, format!("must be between 0 and {max}, found {n}"));
                max
            }
        },
    }
}

#[cfg(test)]
mod tests;
