//! Issue 15, gRPC: calls through Berth (h2c listener) to gRPC echo backends spoken to over
//! HTTP/2 (`protocol: h2c`): unary and server-streaming calls with their trailers intact,
//! sticky by a metadata key (the header plugin), and `grpc-status` 14 (UNAVAILABLE) in a
//! trailers-only answer when Berth itself has no backend, instead of a text body.
use berth_tests::grpc::{call, Reply};
use berth_tests::h2::runtime;
use berth_tests::{config, sessions, Backend, Gateway};

const UNARY: &str = "/echo.Echo/Unary";
const STREAM: &str = "/echo.Echo/Stream";

fn gateway(backends: &[Backend]) -> Gateway {
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let yaml = config::header_app(
        &specs,
        &[
            ("listeners", "[{addr: \"127.0.0.1:0\", h2c: true}]"),
            ("upstreams.app.protocol", "h2c"),
        ],
    );
    Gateway::start_with_admin(&yaml)
}

fn ok(r: &Result<Reply, String>) -> &Reply {
    let r = r.as_ref().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.grpc_status(), Some("0"), "{r:?}");
    r
}

#[test]
fn unary_and_streaming_calls_keep_their_trailers_and_stick_to_their_session() {
    let backends = Backend::start_many(3);
    let gw = gateway(&backends);
    let rt = runtime();
    rt.block_on(async {
        let mut homes = Vec::new();
        for id in sessions::ids(0, 30) {
            let md = [(sessions::HEADER, id.as_str())];
            let first = call(gw.addr, UNARY, &md, b"hello").await;
            let r = ok(&first);
            let home = r.header("x-backend").to_string();
            assert_eq!(r.messages.len(), 1, "{r:?}");
            assert_eq!(r.messages[0], format!("{home}:hello").as_bytes(), "{r:?}");
            // Trailers intact: the backend's own, and its view of the session.
            assert_eq!(r.trailer("x-backend-trailer"), home, "{r:?}");
            assert_eq!(r.trailer("x-seen-affinity"), "new", "{r:?}");
            homes.push((id, home));
        }
        let used: std::collections::BTreeSet<_> = homes.iter().map(|(_, h)| h.clone()).collect();
        assert!(used.len() > 1, "30 sessions on one backend: {used:?}");
        for (id, home) in &homes {
            let md = [(sessions::HEADER, id.as_str())];
            let again = call(gw.addr, UNARY, &md, b"again").await;
            let r = ok(&again);
            assert_eq!(r.header("x-backend"), home, "{id}: {r:?}");
            assert_eq!(r.trailer("x-seen-affinity"), "sticky", "{id}: {r:?}");
            let streamed = call(gw.addr, STREAM, &md, b"25").await;
            let r = ok(&streamed);
            assert_eq!(r.header("x-backend"), home, "{id}: {r:?}");
            let want: Vec<Vec<u8>> = (0..25)
                .map(|i| format!("{home}:{i}").into_bytes())
                .collect();
            let got: Vec<Vec<u8>> = r.messages.iter().map(|m| m.to_vec()).collect();
            assert_eq!(got, want, "{id}");
            assert_eq!(r.trailer("x-backend-trailer"), home, "{id}: {r:?}");
        }
        // An unknown method: the backend's own trailers-only status passes through.
        let md = [(sessions::HEADER, homes[0].0.as_str())];
        let unknown = call(gw.addr, "/echo.Echo/Nope", &md, b"").await;
        let r = unknown.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.grpc_status(), Some("12"), "{r:?}");
    });
    assert!(gw.metric("berth_requests_total", &[("upstream", "app")]) >= 90.0);
}

#[test]
fn no_backend_is_grpc_status_14_not_a_text_body() {
    let backends = Backend::start_many(1);
    let gw = gateway(&backends);
    let r = gw.admin("POST", "/admin/backends/b1/drain", None);
    assert_eq!(r.status, 200, "{}", r.summary());
    let drained = |b: &berth_tests::admin::BackendInfo| b.state == "drained";
    gw.wait_backend("b1", "drained", std::time::Duration::from_secs(30), drained);
    let rt = runtime();
    rt.block_on(async {
        let md = [(sessions::HEADER, "s-new")];
        let reply = call(gw.addr, UNARY, &md, b"hello").await;
        let r = reply.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.trailers.is_none(), "trailers-only: {r:?}");
        assert_eq!(r.grpc_status(), Some("14"), "{r:?}");
        assert_eq!(r.header("content-type"), "application/grpc", "{r:?}");
        assert!(
            r.header("grpc-message")
                .starts_with("no backend is available"),
            "{r:?}"
        );
        assert!(r.messages.is_empty(), "{r:?}");
    });
    assert_eq!(
        gw.metric(
            "berth_requests_unrouted_total",
            &[("upstream", "app"), ("why", "no_backend")]
        ),
        1.0
    );
}

/// `protocol: h2`: HTTP/2 over TLS to the backend — here a second Berth terminating TLS (ALPN
/// h2, certificate for `backend.test` from a test CA) in front of a gRPC echo spoken to over
/// h2c. Calls and their trailers cross both.
#[test]
fn h2_over_tls_to_the_backends_carries_calls_and_trailers() {
    use berth_tests::tls::{self, TestCa};
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new("berth grpc CA");
    let ca_file = dir.path().join("ca.pem");
    ca.write(&ca_file);
    let demo = Backend::start("d1");
    let cert = ca.leaf(&["backend.test"]).write(dir.path(), "backend");
    let backend_addr = berth_tests::free_addr();
    let inner = config::app_config(&[], &[demo.spec()]);
    let inner = config::set(&inner, "upstreams.app.protocol", "h2c");
    let inner = tls::with_listeners(&inner, &[tls::listener(backend_addr, &[&cert], "")]);
    let backend = Gateway::start(&inner);
    let yaml = config::app_config(
        &[config::header_plugin(sessions::HEADER)],
        &[("g1".to_string(), backend_addr)],
    );
    let mut yaml = config::set(&yaml, "listeners", "[{addr: \"127.0.0.1:0\", h2c: true}]");
    for (path, value) in [
        ("upstreams.app.protocol", "h2".to_string()),
        (
            "upstreams.app.tls",
            format!("{{sni: backend.test, ca_file: {ca_file:?}}}"),
        ),
    ] {
        yaml = config::set(&yaml, path, &value);
    }
    let gw = Gateway::start(&yaml);
    let rt = runtime();
    rt.block_on(async {
        for id in sessions::ids(0, 5) {
            let md = [(sessions::HEADER, id.as_str())];
            let unary = call(gw.addr, UNARY, &md, b"over tls").await;
            let r = ok(&unary);
            assert_eq!(r.messages[0], &b"d1:over tls"[..], "{r:?}");
            assert_eq!(r.trailer("x-backend-trailer"), "d1", "{r:?}");
            let streamed = call(gw.addr, STREAM, &md, b"10").await;
            let r = ok(&streamed);
            assert_eq!(r.messages.len(), 10, "{r:?}");
        }
    });
    // The front Berth reached its backend over TLS with ALPN h2.
    let handshakes = backend.metric("berth_tls_handshakes_total", &[("alpn", "h2")]);
    assert!(handshakes >= 1.0, "{handshakes}");
}
