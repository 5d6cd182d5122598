//! `/metrics` on a gateway with a TLS listener: handshakes, failures by reason, certificate
//! expiry. Part of `metrics.rs` (its coverage test reads this file too).
use super::scrape;
use berth_tests::metrics::sum;
use berth_tests::{config, Backend, Gateway};

/// The TLS families, on a gateway with a TLS listener: a handshake over HTTP/2 and one over
/// HTTP/1.1, a plain-HTTP request to the TLS port (not_tls), the certificate's notAfter.
#[test]
fn tls_handshakes_failures_and_certificate_expiry() {
    use berth_tests::tls;
    let backends = Backend::start_many(1);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let cert = tls::self_signed(&["metrics.test"]).write(dir.path(), "m");
    let tls_addr = berth_tests::free_addr();
    let yaml = tls::with_listeners(
        &config::header_app(&specs, &[]),
        &[tls::listener(tls_addr, &[&cert], "")],
    );
    let yaml = config::set(&yaml, "listeners.0.h2c", "true");
    let gw = Gateway::start(&yaml);
    // An HTTP/2 protocol error (DATA on stream 0, over h2c): a GOAWAY, counted.
    assert_eq!(
        sum(
            &gw.metrics(),
            "berth_http2_errors_total",
            &[("reason", "protocol_error")]
        ),
        0.0
    );
    {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(gw.addr).expect("connect");
        c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0\0\0\x01\0\x01\0\0\0\0x")
            .expect("write");
        let _ = c.read_to_end(&mut Vec::new());
    }
    gw.wait_metric(
        "berth_http2_errors_total",
        &[("reason", "protocol_error")],
        |v| v == 1.0,
    );
    for proto in ["--http2", "--http1.1"] {
        let out = tls::curl(&[
            "-sk",
            proto,
            "-o",
            "/dev/null",
            &format!("https://{tls_addr}/"),
        ]);
        assert!(out.status.success(), "curl {proto}");
    }
    let plain = tls::curl(&["-s", "--max-time", "10", &format!("http://{tls_addr}/")]);
    assert!(!plain.status.success(), "plain HTTP answered on a TLS port");
    let listener = tls_addr.to_string();
    let l = ("listener", listener.as_str());
    let text = scrape(&gw);
    assert_eq!(sum(&text, "berth_tls_handshakes_total", &[l]), 2.0);
    assert_eq!(
        sum(
            &text,
            "berth_tls_handshakes_total",
            &[l, ("alpn", "h2"), ("version", "1.3")]
        ),
        1.0
    );
    gw.wait_metric(
        "berth_tls_handshake_failures_total",
        &[l, ("reason", "not_tls")],
        |v| v == 1.0,
    );
    assert_eq!(
        sum(
            &text,
            "berth_tls_handshake_failures_total",
            &[l, ("reason", "timeout")]
        ),
        0.0
    );
    let not_after = sum(
        &text,
        "berth_tls_certificate_not_after_seconds",
        &[l, ("certificate", cert.cert.to_str().expect("utf-8"))],
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    // rcgen's default validity ends in 4096.
    assert!(not_after > now + 86400.0 * 365.0, "notAfter {not_after}");
}
