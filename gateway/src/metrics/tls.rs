//! The TLS listeners' families: handshakes, handshake failures by reason, and each served
//! certificate's expiry. Created with the first TLS listener (a Berth without one exports none
//! of them); every series of a listener is resolved up front, so a failure that never
//! happened reads as 0.
use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Why a TLS handshake failed (`berth_tls_handshake_failures_total{reason}`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// Not done within `limits.header_timeout` of the connection being accepted.
    Timeout,
    /// The client closed or reset the connection before the handshake was done.
    Closed,
    /// The bytes were not a TLS handshake: garbage, or plain HTTP sent to a TLS port.
    NotTls,
    /// The client offered no TLS version Berth accepts (TLS 1.0/1.1, or 1.2 under
    /// `min_version: "1.3"`).
    ProtocolVersion,
    /// No cipher suite, key-exchange group, signature scheme or ALPN protocol in common.
    NoCommonParameters,
    /// The client rejected Berth's certificate (it sent an alert: unknown CA, bad
    /// certificate, ...).
    ClientRejected,
    /// Anything else (a malformed handshake, a decryption error, an I/O error).
    Other,
}

impl HandshakeFailure {
    pub const ALL: [HandshakeFailure; 7] = [
        HandshakeFailure::Timeout,
        HandshakeFailure::Closed,
        HandshakeFailure::NotTls,
        HandshakeFailure::ProtocolVersion,
        HandshakeFailure::NoCommonParameters,
        HandshakeFailure::ClientRejected,
        HandshakeFailure::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Closed => "closed",
            HandshakeFailure::NotTls => "not_tls",
            HandshakeFailure::ProtocolVersion => "protocol_version",
            HandshakeFailure::NoCommonParameters => "no_common_parameters",
            HandshakeFailure::ClientRejected => "client_rejected",
            HandshakeFailure::Other => "other",
        }
    }
}

/// What a completed handshake negotiated, as labels.
pub const VERSIONS: [&str; 2] = ["1.2", "1.3"];
/// ALPN outcomes: `h2`, `http/1.1`, or `none` (the client offered no ALPN).
pub const ALPNS: [&str; 3] = ["h2", "http/1.1", "none"];

/// The families (registered once, at the first TLS listener).
#[derive(Clone)]
pub struct TlsFamilies {
    handshakes: IntCounterVec,
    failures: IntCounterVec,
    /// `berth_tls_certificate_not_after_seconds{listener, certificate}`: set by the gateway
    /// when certificates are (re)loaded.
    pub not_after: IntGaugeVec,
}

/// The handles of one TLS listener.
pub struct TlsListenerMetrics {
    /// `[version][alpn]`, indexes of [`VERSIONS`] and [`ALPNS`].
    pub handshakes: [[IntCounter; 3]; 2],
    /// By [`HandshakeFailure`] as index.
    pub failures: [IntCounter; 7],
}

impl TlsFamilies {
    pub(super) fn register(r: &Registry) -> prometheus::Result<TlsFamilies> {
        let handshakes = IntCounterVec::new(
            Opts::new(
                "berth_tls_handshakes_total",
                "TLS handshakes completed on a TLS listener, by negotiated version and ALPN protocol.",
            ),
            &["listener", "version", "alpn"],
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                "berth_tls_handshake_failures_total",
                "TLS handshakes that failed on a TLS listener, by reason: timeout, closed, not_tls, protocol_version, no_common_parameters, client_rejected, other.",
            ),
            &["listener", "reason"],
        )?;
        let not_after = IntGaugeVec::new(
            Opts::new(
                "berth_tls_certificate_not_after_seconds",
                "When a certificate a TLS listener serves expires (its notAfter), in seconds since the Unix epoch; certificate = its cert file as configured.",
            ),
            &["listener", "certificate"],
        )?;
        r.register(Box::new(handshakes.clone()))?;
        r.register(Box::new(failures.clone()))?;
        r.register(Box::new(not_after.clone()))?;
        Ok(TlsFamilies {
            handshakes,
            failures,
            not_after,
        })
    }

    /// Resolve (and so create at 0) every series of one listener.
    pub fn listener(&self, listener: &str) -> TlsListenerMetrics {
        TlsListenerMetrics {
            handshakes: VERSIONS
                .map(|v| ALPNS.map(|a| self.handshakes.with_label_values(&[listener, v, a]))),
            failures: HandshakeFailure::ALL
                .map(|f| self.failures.with_label_values(&[listener, f.as_str()])),
        }
    }
}
