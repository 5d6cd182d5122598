//! `X-Forwarded-For` parsing of the `ip` plugin: arbitrary fields, peers and prefixes.
//!
//! Properties: never panics; an untrusted peer's `X-Forwarded-For` is ignored (the client is
//! the peer); a field with no address in it cannot change the client; the admin look-up key
//! of the address found equals the key the request path derives.
#![no_main]
use arbitrary::Arbitrary;
use berth_plugins::ip::IpPlugin;
use berth_plugins::testing::FakeRequest;
use berth_plugins::{Affinity, AffinityPlugin, KeyOutcome};
use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    fields: Vec<&'a [u8]>,
    peer: Peer,
    /// Trusted networks: (address, prefix length).
    trusted: Vec<(Peer, u8)>,
    v4_prefix: u8,
    v6_prefix: u8,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Peer {
    V4([u8; 4]),
    V6([u8; 16]),
}

impl Peer {
    fn ip(self) -> IpAddr {
        match self {
            Peer::V4(b) => IpAddr::from(b),
            Peer::V6(b) => IpAddr::from(b),
        }
    }
}

/// IPv4-mapped IPv6 as IPv4 (what the plugin compares).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A network of IPv4-mapped IPv6 addresses as the IPv4 network (what the plugin compares).
fn canonical_net(net: ipnet::IpNet) -> ipnet::IpNet {
    match (net, canonical(net.addr())) {
        (ipnet::IpNet::V6(n), IpAddr::V4(a)) if n.prefix_len() >= 96 => {
            ipnet::Ipv4Net::new(a, n.prefix_len() - 96).map_or(net, ipnet::IpNet::V4)
        }
        _ => net,
    }
}

fuzz_target!(|input: Input<'_>| {
    let trusted = input.trusted.iter().take(8).filter_map(|(p, len)| {
        let max = if matches!(p, Peer::V4(_)) { 32 } else { 128 };
        let net = ipnet::IpNet::new(p.ip(), len % (max + 1)).ok()?;
        Some(canonical_net(net))
    });
    let trusted: Vec<ipnet::IpNet> = trusted.collect();
    let plugin = IpPlugin::new(trusted.clone(), input.v4_prefix, input.v6_prefix);
    let mut req = FakeRequest::new();
    req.client = Some(input.peer.ip());
    for f in &input.fields {
        req = req.header("x-forwarded-for", f);
    }
    let client = plugin.client_addr(&req).expect("a peer gives an address");
    let peer = canonical(input.peer.ip());
    let peer_trusted = trusted.iter().any(|n| n.contains(&peer));
    if !peer_trusted {
        assert_eq!(client, peer, "X-Forwarded-For of an untrusted peer was used");
    }
    let no_address = input
        .fields
        .iter()
        .all(|f| !f.iter().any(|c| c.is_ascii_hexdigit() || *c == b':'));
    if no_address {
        assert_eq!(client, peer);
    }
    let KeyOutcome::Key(Affinity::Session(k)) = plugin.key(&req) else {
        panic!("the ip plugin always yields a session with a peer")
    };
    assert_eq!(plugin.session_key(client.to_string().as_bytes()), Some(k));
});
