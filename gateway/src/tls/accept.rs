//! [`Terminate`]: the [`ServerApp`] of the TLS listeners. Pingora accepts the TCP connection
//! (the TLS listeners are plain TCP endpoints to it); this app picks the connection's listener,
//! runs the TLS handshake within `limits.header_timeout`, counts it (by version and ALPN, or
//! the failure by reason) and hands the decrypted stream to the slow-client guard, telling it
//! whether ALPN chose HTTP/2.
use super::{Edge, TlsListener};
use crate::client_deadlines::Guarded;
use crate::metrics::tls::HandshakeFailure;
use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{Ssl, Stream, ALPN};
use pingora_core::server::ShutdownWatch;
use pingora_error::Error;
use std::sync::Arc;
use std::time::Duration;

/// TLS in front of a guarded HTTP app.
pub struct Terminate<A> {
    pub edge: Arc<Edge>,
    pub guarded: Arc<Guarded<A>>,
    /// The longest a handshake may take from the connection's acceptance.
    pub handshake_timeout: Duration,
}

#[async_trait]
impl<A: pingora_core::apps::HttpServerApp + Send + Sync + 'static> ServerApp for Terminate<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let local = if self.edge.listeners.len() > 1 {
            stream
                .get_socket_digest()
                .and_then(|d| d.local_addr().and_then(|a| a.as_inet()).copied())
        } else {
            None
        };
        let Some(listener) = self.edge.find(local) else {
            log::error!("tls: a connection to {local:?} matches no TLS listener; closed");
            return None;
        };
        // Pingora hands over its TCP stream boxed; the handshake takes the stream itself.
        let raw = match stream.into_any().downcast::<L4Stream>() {
            Ok(raw) => *raw,
            Err(_) => {
                log::error!("tls {}: not a TCP connection; closed", listener.addr);
                return None;
            }
        };
        let tls =
            tokio::time::timeout(self.handshake_timeout, listener.acceptor.tls_handshake(raw));
        let tls = match tls.await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                listener.failed(classify(&e), &e);
                return None;
            }
            Err(_) => {
                listener.failed(HandshakeFailure::Timeout, &"no handshake in time");
                return None;
            }
        };
        let h2 = matches!(tls.selected_alpn_proto(), Some(ALPN::H2));
        listener.handshake(&tls, h2);
        self.guarded.serve(Box::new(tls), h2, shutdown).await
    }

    async fn cleanup(&self) {
        self.guarded.cleanup().await
    }
}

impl TlsListener {
    fn handshake(&self, tls: &dyn Ssl, h2: bool) {
        let v13 = tls
            .get_ssl_digest()
            .is_some_and(|d| d.version.ends_with('3'));
        let alpn = match tls.selected_alpn_proto() {
            _ if h2 => 0,
            Some(_) => 1,
            None => 2,
        };
        self.metrics.handshakes[usize::from(v13)][alpn].inc();
    }

    fn failed(&self, why: HandshakeFailure, detail: &dyn std::fmt::Display) {
        self.metrics.failures[why as usize].inc();
        log::debug!(
            "tls {}: handshake failed ({}): {detail}",
            self.addr,
            why.as_str()
        );
    }
}

/// Why a handshake failed. Pingora 0.9.1 keeps only the text of the rustls or I/O error
/// (`explain_err(TLSHandshakeFailure, |e| format!("tls connect error: {e}"))` in its rustls
/// stream), so the reason is read from rustls' messages; the unit tests below hold them to the
/// rustls in use.
pub fn classify(e: &Error) -> HandshakeFailure {
    let text = e.to_string().to_ascii_lowercase();
    let has = |s: &str| text.contains(s);
    if has("received corrupt message") || has("received unexpected message") {
        HandshakeFailure::NotTls
    } else if has("peer is incompatible: supportedversionsextensionrequired")
        || has("peer is incompatible: tls12notoffered")
        // rustls checks the signature algorithms extension before the version: a TLS 1.0/1.1
        // client hello has none.
        || has("peer is incompatible: signaturealgorithmsextensionrequired")
        || has("peer is incompatible: serverdoesnotsupporttls12or13")
    {
        HandshakeFailure::ProtocolVersion
    } else if has("peer is incompatible") || has("peer doesn't support any known protocol") {
        HandshakeFailure::NoCommonParameters
    } else if has("received fatal alert") {
        HandshakeFailure::ClientRejected
    } else if has("tls handshake eof")
        || has("unexpected end of file")
        || has("early eof")
        || has("connection reset")
        || has("broken pipe")
    {
        HandshakeFailure::Closed
    } else {
        HandshakeFailure::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_error::ErrorType::TLSHandshakeFailure;
    use rustls::{AlertDescription, Error as E, InvalidMessage, PeerIncompatible as P};
    use std::io;

    /// As Pingora reports it: the rustls error inside tokio-rustls' I/O error, as text.
    fn pingora(e: impl std::fmt::Display) -> Box<Error> {
        Error::explain(TLSHandshakeFailure, format!("tls connect error: {e}"))
    }

    fn rustls(e: E) -> Box<Error> {
        pingora(io::Error::new(io::ErrorKind::InvalidData, e))
    }

    #[test]
    fn reasons_from_rustls_errors() {
        let cases = [
            (
                rustls(E::InvalidMessage(InvalidMessage::InvalidContentType)),
                HandshakeFailure::NotTls,
            ),
            (
                rustls(E::PeerIncompatible(P::SignatureAlgorithmsExtensionRequired)),
                HandshakeFailure::ProtocolVersion,
            ),
            (
                rustls(E::PeerIncompatible(P::Tls12NotOfferedOrEnabled)),
                HandshakeFailure::ProtocolVersion,
            ),
            (
                rustls(E::PeerIncompatible(P::SupportedVersionsExtensionRequired)),
                HandshakeFailure::ProtocolVersion,
            ),
            (
                rustls(E::PeerIncompatible(P::NoCipherSuitesInCommon)),
                HandshakeFailure::NoCommonParameters,
            ),
            (
                rustls(E::NoApplicationProtocol),
                HandshakeFailure::NoCommonParameters,
            ),
            (
                rustls(E::AlertReceived(AlertDescription::UnknownCA)),
                HandshakeFailure::ClientRejected,
            ),
            (
                pingora(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "tls handshake eof",
                )),
                HandshakeFailure::Closed,
            ),
            (
                pingora(io::Error::from(io::ErrorKind::ConnectionReset)),
                HandshakeFailure::Closed,
            ),
            (rustls(E::DecryptError), HandshakeFailure::Other),
        ];
        for (e, want) in cases {
            assert_eq!(classify(&e), want, "{e}");
        }
    }
}
