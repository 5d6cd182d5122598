use super::*;
use crate::testing::{outcome, FakeRequest, Outcome};
use crate::{Invalid, Registry};

fn build(yaml: &str) -> Result<Box<dyn AffinityPlugin>, Vec<String>> {
    let v: serde_yaml::Value = serde_yaml::from_str(yaml).expect("test yaml");
    Registry::builtin()
        .build_one(&v, "up.affinity[2]", "app")
        .map_err(|es| es.iter().map(ToString::to_string).collect())
}

fn proxies() -> IpPlugin {
    let nets = ["10.0.0.0/8", "192.168.1.1/32", "2001:db8:ffff::/48"];
    IpPlugin::new(nets.iter().map(|n| n.parse().unwrap()), 32, 128)
}

fn client(p: &IpPlugin, req: &FakeRequest) -> Option<String> {
    p.client_addr(req).map(|ip| ip.to_string())
}

fn via(peer: &str, xff: &[&str]) -> FakeRequest {
    xff.iter().fold(FakeRequest::new().client(peer), |r, f| {
        r.header("x-forwarded-for", f)
    })
}

fn ip_key(ip: &str) -> Outcome {
    let ip: IpAddr = ip.parse().unwrap();
    let bytes = match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    Outcome::Session(SessionKey::new(b"ip", &bytes))
}

#[test]
fn no_peer_skips() {
    let p = proxies();
    assert_eq!(outcome(&p, &FakeRequest::new()), Outcome::Skip);
    let xff_only = FakeRequest::new().header("x-forwarded-for", "1.2.3.4");
    assert_eq!(outcome(&p, &xff_only), Outcome::Skip);
}

#[test]
fn untrusted_peer_ignores_xff() {
    let p = proxies();
    let req = via("203.0.113.9", &["1.2.3.4"]);
    assert_eq!(client(&p, &req).as_deref(), Some("203.0.113.9"));
    assert_eq!(outcome(&p, &req), ip_key("203.0.113.9"));
    // Without trusted proxies nobody may tell.
    let none = IpPlugin::new([], 32, 128);
    assert_eq!(
        client(&none, &via("10.0.0.1", &["1.2.3.4"])).as_deref(),
        Some("10.0.0.1")
    );
}

#[test]
fn trusted_peer_walks_from_the_right() {
    let p = proxies();
    let one = via("10.0.0.1", &["1.2.3.4"]);
    assert_eq!(client(&p, &one).as_deref(), Some("1.2.3.4"));
    assert_eq!(outcome(&p, &one), ip_key("1.2.3.4"));
    // A spoofed leftmost entry is not believed: the first untrusted from the right wins.
    let spoofed = via("10.0.0.1", &["6.6.6.6, 1.2.3.4, 10.1.1.1"]);
    assert_eq!(client(&p, &spoofed).as_deref(), Some("1.2.3.4"));
    // No header: the peer.
    assert_eq!(
        client(&p, &via("10.0.0.1", &[])).as_deref(),
        Some("10.0.0.1")
    );
    assert_eq!(
        client(&p, &via("10.0.0.1", &[""])).as_deref(),
        Some("10.0.0.1")
    );
}

#[test]
fn multi_hop_and_several_fields() {
    let p = proxies();
    // Fields are one list, in order: "6.6.6.6, 1.2.3.4" then "192.168.1.1, 10.2.2.2".
    let req = via("10.0.0.1", &["6.6.6.6, 1.2.3.4", "192.168.1.1 ,10.2.2.2"]);
    assert_eq!(client(&p, &req).as_deref(), Some("1.2.3.4"));
    // All trusted: the leftmost.
    let all = via("10.0.0.1", &["10.9.9.9, 192.168.1.1", "10.2.2.2"]);
    assert_eq!(client(&p, &all).as_deref(), Some("10.9.9.9"));
    // Empty elements are ignored.
    let gaps = via("10.0.0.1", &[" , 1.2.3.4,, 10.2.2.2 ,"]);
    assert_eq!(client(&p, &gaps).as_deref(), Some("1.2.3.4"));
}

#[test]
fn malformed_entry_stops_the_walk() {
    let p = proxies();
    // Unparsable right after the peer: the peer.
    let at_peer = via("10.0.0.1", &["1.2.3.4, garbage"]);
    assert_eq!(client(&p, &at_peer).as_deref(), Some("10.0.0.1"));
    // Unparsable behind a trusted hop: that hop.
    let behind = via("10.0.0.1", &["1.2.3.4, unknown, 10.3.3.3, 10.4.4.4"]);
    assert_eq!(client(&p, &behind).as_deref(), Some("10.3.3.3"));
    // An untrusted entry right of the garbage is found before the walk reaches it.
    let before = via("10.0.0.1", &["garbage, 1.2.3.4, 10.4.4.4"]);
    assert_eq!(client(&p, &before).as_deref(), Some("1.2.3.4"));
    // Non-UTF-8 and a huge entry are unparsable too.
    let bytes = FakeRequest::new()
        .client("10.0.0.1")
        .header("x-forwarded-for", b"1.2.3.4, \xff\xfe, 10.5.5.5");
    assert_eq!(client(&p, &bytes).as_deref(), Some("10.5.5.5"));
    let huge = via("10.0.0.1", &[&"9".repeat(10_000)]);
    assert_eq!(client(&p, &huge).as_deref(), Some("10.0.0.1"));
    // Never an Invalid outcome: the ip plugin always has an address.
    assert_ne!(outcome(&p, &huge), Outcome::Invalid(Invalid::Malformed));
}

#[test]
fn entry_forms_and_ipv6() {
    let p = proxies();
    let cases = [
        ("1.2.3.4:5678", "1.2.3.4"),
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("::ffff:1.2.3.4", "1.2.3.4"),
    ];
    for (entry, want) in cases {
        assert_eq!(
            client(&p, &via("10.0.0.1", &[entry])).as_deref(),
            Some(want),
            "{entry}"
        );
    }
    // An IPv6 trusted proxy, and a trusted hop written as IPv4-mapped IPv6.
    let v6 = via("2001:db8:ffff::5", &["1.2.3.4, ::ffff:10.0.0.7"]);
    assert_eq!(client(&p, &v6).as_deref(), Some("1.2.3.4"));
    // An IPv4-mapped peer inside an IPv4 CIDR is trusted.
    let mapped_peer = via("::ffff:10.0.0.1", &["1.2.3.4"]);
    assert_eq!(client(&p, &mapped_peer).as_deref(), Some("1.2.3.4"));
    // An IPv4-mapped untrusted peer is keyed as IPv4.
    let mapped = FakeRequest::new().client("::ffff:203.0.113.9");
    assert_eq!(outcome(&p, &mapped), ip_key("203.0.113.9"));
}

#[test]
fn prefix_masking() {
    let p = IpPlugin::new([], 24, 64);
    let a = outcome(&p, &FakeRequest::new().client("203.0.113.9"));
    let b = outcome(&p, &FakeRequest::new().client("203.0.113.200"));
    let c = outcome(&p, &FakeRequest::new().client("203.0.114.9"));
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(a, ip_key("203.0.113.0"));
    let x = outcome(&p, &FakeRequest::new().client("2001:db8:1:2:aaaa::1"));
    let y = outcome(&p, &FakeRequest::new().client("2001:db8:1:2:bbbb::2"));
    let z = outcome(&p, &FakeRequest::new().client("2001:db8:1:3::1"));
    assert_eq!(x, y);
    assert_ne!(x, z);
    assert_eq!(x, ip_key("2001:db8:1:2::"));
    // /0 puts every client of a family into one session; /32 and /128 keep them apart.
    let all = IpPlugin::new([], 0, 0);
    assert_eq!(
        outcome(&all, &FakeRequest::new().client("1.1.1.1")),
        outcome(&all, &FakeRequest::new().client("9.9.9.9"))
    );
    assert_eq!(
        outcome(&all, &FakeRequest::new().client("1.1.1.1")),
        ip_key("0.0.0.0")
    );
    assert_eq!(
        outcome(&all, &FakeRequest::new().client("2001:db8::1")),
        ip_key("::")
    );
    let exact = proxies();
    assert_ne!(
        outcome(&exact, &FakeRequest::new().client("1.1.1.1")),
        outcome(&exact, &FakeRequest::new().client("1.1.1.2"))
    );
}

#[test]
fn from_config() {
    let p = build(
        "type: ip\ntrusted_proxies: [10.0.0.0/8, 127.0.0.1, '::1', '::ffff:192.168.0.0/112']\n\
         ipv4_prefix: 24\nipv6_prefix: 64",
    )
    .expect("valid");
    assert_eq!(p.name(), "ip");
    let loopback = via("127.0.0.1", &["203.0.113.9"]);
    assert_eq!(outcome(&*p, &loopback), ip_key("203.0.113.0"));
    let v6_loopback = via("::1", &["203.0.113.9"]);
    assert_eq!(outcome(&*p, &v6_loopback), ip_key("203.0.113.0"));
    let mapped_net = via("192.168.3.4", &["203.0.113.9"]);
    assert_eq!(outcome(&*p, &mapped_net), ip_key("203.0.113.0"));
    let not_trusted = via("127.0.0.2", &["203.0.113.9"]);
    assert_eq!(outcome(&*p, &not_trusted), ip_key("127.0.0.0"));
    // Defaults: nobody trusted, exact addresses.
    let d = build("type: ip").expect("valid");
    assert_eq!(
        outcome(&*d, &via("10.0.0.1", &["1.2.3.4"])),
        ip_key("10.0.0.1")
    );
}

#[test]
fn config_errors() {
    let e = build("type: ip\ntrusted_proxies: [10.0.0.0/8, 10.0.0.0/33, nope, 5]").unwrap_err();
    assert_eq!(
        e,
        [
            "up.affinity[2].trusted_proxies[1]: expected a CIDR like 10.0.0.0/8 or an address, found \"10.0.0.0/33\"",
            "up.affinity[2].trusted_proxies[2]: expected a CIDR like 10.0.0.0/8 or an address, found \"nope\"",
            "up.affinity[2].trusted_proxies[3]: expected a CIDR like 10.0.0.0/8 or an address, found 5",
        ]
    );
    let e = build("type: ip\ntrusted_proxies: 10.0.0.0/8").unwrap_err();
    assert_eq!(
        e,
        ["up.affinity[2].trusted_proxies: expected a list, found a string"]
    );
    let e = build("type: ip\nipv4_prefix: 33\nipv6_prefix: -1").unwrap_err();
    assert_eq!(
        e,
        [
            "up.affinity[2].ipv4_prefix: must be between 0 and 32, found 33",
            "up.affinity[2].ipv6_prefix: must be between 0 and 128, found -1",
        ]
    );
    let e = build("type: ip\nipv6_prefix: 129").unwrap_err();
    assert_eq!(
        e,
        ["up.affinity[2].ipv6_prefix: must be between 0 and 128, found 129"]
    );
    let e = build("type: ip\nipv4_prefix: wide").unwrap_err();
    assert!(e[0].starts_with("up.affinity[2].ipv4_prefix: "), "{e:?}");
}
