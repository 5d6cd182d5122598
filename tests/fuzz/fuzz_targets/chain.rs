//! The affinity chain (every built-in plugin) over arbitrary request headers and client
//! addresses, then the response side over arbitrary backend headers.
//!
//! Properties: never panics; the deciding plugin is one of the chain's; a backend is only ever
//! named through a verified token (a valid id); the admin look-up key of a header value equals
//! the key the request path derives from it.
#![no_main]
use arbitrary::Arbitrary;
use berth_plugins::testing::{FakeRequest, FakeResponse};
use berth_plugins::token::valid_id;
use berth_plugins::{Affinity, Chain, DecisionView, Registry};
use berth_routing::Reason;
use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;
use std::sync::OnceLock;

/// Header names the plugins read, plus a few others; index 255 means "use the raw name".
const NAMES: [&str; 8] = [
    "cookie",
    "x-session-id",
    "x-forwarded-for",
    "host",
    "set-cookie",
    "content-length",
    "transfer-encoding",
    "connection",
];

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    headers: Vec<(u8, &'a str, &'a [u8])>,
    peer: Option<Peer>,
    now: u64,
    /// Which chain: the plugins in one of a few orders.
    order: u8,
    response: Vec<(u8, &'a [u8])>,
    reason: u8,
}

#[derive(Arbitrary, Debug)]
enum Peer {
    V4([u8; 4]),
    V6([u8; 16]),
}

const PLUGINS: [&str; 4] = [
    "type: cookie\nkeys: [{id: k1, secret: fuzz-secret-0123456789abcdef0123456789}]",
    "type: header\nname: X-Session-Id\nmax_len: 64",
    "type: cookie\nmode: learn\nname: JSESSIONID",
    "type: ip\ntrusted_proxies: [10.0.0.0/8, \"::1\", 127.0.0.1]\nipv4_prefix: 24\nipv6_prefix: 64",
];

fn chains() -> &'static Vec<Chain> {
    static C: OnceLock<Vec<Chain>> = OnceLock::new();
    C.get_or_init(|| {
        let registry = Registry::builtin();
        let orders: [&[usize]; 4] = [&[0, 1, 2, 3], &[3, 2, 1, 0], &[1, 0], &[2, 3]];
        orders
            .iter()
            .map(|order| {
                let plugins = order
                    .iter()
                    .map(|&i| {
                        let v: serde_yaml::Value = serde_yaml::from_str(PLUGINS[i]).expect("yaml");
                        registry.build_one(&v, "fuzz", "app").expect("valid plugin")
                    })
                    .collect();
                Chain::new(plugins)
            })
            .collect()
    })
}

fuzz_target!(|input: Input<'_>| {
    let chain = &chains()[usize::from(input.order) % chains().len()];
    let mut req = FakeRequest::new().at(input.now);
    for (i, raw, value) in &input.headers {
        let name = NAMES.get(usize::from(*i)).copied().unwrap_or(raw);
        req = req.header(name, value);
    }
    req.client = input.peer.map(|p| match p {
        Peer::V4(b) => IpAddr::from(b),
        Peer::V6(b) => IpAddr::from(b),
    });
    let found = chain.key(&req);
    if let Some(i) = found.decided_by {
        assert!(i < chain.plugins().len());
        assert!(found.affinity.is_some());
    }
    if let Some((i, _)) = found.invalid {
        assert!(i < chain.plugins().len());
    }
    // The chain catches a plugin's panic (the gateway counts it): none may happen here.
    assert_eq!(found.panicked, None, "a plugin panicked");
    if let Some(Affinity::Backend { name, .. }) = found.affinity {
        assert!(valid_id(name.as_bytes()), "unverified backend {name:?}");
    }
    // The admin look-up of a header session agrees with the request path.
    if let (Some(i), Some(Affinity::Session(k))) = (found.decided_by, found.affinity) {
        let p = &chain.plugins()[i];
        if p.name() == "header" {
            let v = req.headers.iter().find(|(n, _)| n == "x-session-id").map(|(_, v)| v);
            assert_eq!(v.and_then(|v| p.session_key(v)), Some(k));
        }
    }
    let mut resp = FakeResponse::new();
    for (i, value) in &input.response {
        let name = NAMES.get(usize::from(*i) % NAMES.len()).copied().unwrap_or("set-cookie");
        resp = resp.header(name, value);
    }
    let reasons = [Reason::Sticky, Reason::New, Reason::Ring, Reason::Failover, Reason::Spill];
    let d = DecisionView {
        upstream: "app",
        backend: "b1",
        reason: reasons[usize::from(input.reason) % reasons.len()],
        decided_by_me: false,
        now_unix: input.now,
        key_expires: found.key_expires(),
        session: found.affinity.and_then(|a| a.session_key()),
        tls: input.now % 2 == 0,
        connection: None,
    };
    let panicked = |i| panic!("plugin {i} panicked");
    chain.on_response(&d, found.decided_by, &mut resp, |_, _| {}, panicked);
    for (_, v) in &resp.added {
        assert!(!v.bytes().any(|b| b == b'\r' || b == b'\n'), "header injection: {v:?}");
    }
});
