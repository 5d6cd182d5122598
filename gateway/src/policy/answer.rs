//! Every answer Berth gives itself: status, `Retry-After` and a plain-text body that tells the
//! client (and whoever reads its logs) what happened and what to do (to a gRPC call: its
//! `grpc-status` and that text as `grpc-message`).
use super::Attempt;
use crate::headers;
use pingora_error::{Error, ErrorType, Result};
use pingora_proxy::{FailToProxy, Session};

/// Why the client-side limits refused a request (the `why` label of
/// `berth_requests_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    UriTooLong,
    TooManyHeaders,
    HeadersTooLarge,
    AmbiguousLength,
}

impl Limit {
    pub const ALL: [Limit; 4] = [
        Limit::UriTooLong,
        Limit::TooManyHeaders,
        Limit::HeadersTooLarge,
        Limit::AmbiguousLength,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Limit::UriTooLong => "uri_too_long",
            Limit::TooManyHeaders => "too_many_headers",
            Limit::HeadersTooLarge => "headers_too_large",
            Limit::AmbiguousLength => "te_and_cl",
        }
    }
}

/// An answer from Berth itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// No route matched the host and path (404).
    NoRoute,
    /// The client-side limits refused the request head.
    Refused(Limit),
    /// No backend of the upstream could take the request (503).
    NoBackend,
    /// Every backend is at its session cap: no new session now (503, the configured delay).
    Full { retry_after: u32 },
    /// The session's backend stayed at `max_connections` past `queue_timeout` (503).
    Busy,
    /// The backend failed before answering and the request was not replayed elsewhere
    /// because it is not idempotent.
    NotRetried { status: u16 },
    /// The backend failed before answering (502).
    BackendFailed,
    /// No TLS connection to the backend could be made: its certificate was not trusted or not
    /// for the configured name, or the handshake failed (502).
    BackendTls,
    /// Anything else that stopped the request before a response (status from the error).
    Failed { status: u16 },
}

impl Answer {
    /// The answer to a request that failed on its way to or from a backend with an error of
    /// status `status` (see [`headers::error_status`]).
    pub fn after_failure(status: u16, a: &Attempt) -> Answer {
        if a.not_retried {
            Answer::NotRetried { status }
        } else if a.busy {
            Answer::Busy
        } else {
            match status {
                503 => Answer::NoBackend,
                502 => Answer::BackendFailed,
                status => Answer::Failed { status },
            }
        }
    }

    pub fn status(self) -> u16 {
        match self {
            Answer::NoRoute => 404,
            Answer::Refused(Limit::UriTooLong) => 414,
            Answer::Refused(Limit::TooManyHeaders | Limit::HeadersTooLarge) => 431,
            Answer::Refused(Limit::AmbiguousLength) => 400,
            Answer::NoBackend | Answer::Full { .. } | Answer::Busy => 503,
            Answer::BackendFailed | Answer::BackendTls => 502,
            Answer::NotRetried { status } | Answer::Failed { status } => status,
        }
    }

    /// Seconds for `Retry-After`, on the answers that say "come back later".
    pub fn retry_after(self) -> Option<u32> {
        match self {
            Answer::Full { retry_after } => Some(retry_after),
            _ if self.status() == 503 => Some(1),
            _ => None,
        }
    }

    pub fn body(self) -> &'static str {
        match self {
            Answer::NoRoute => "no route for this host and path\n",
            Answer::Refused(Limit::UriTooLong) => "request target too long\n",
            Answer::Refused(Limit::TooManyHeaders) => "too many request header fields\n",
            Answer::Refused(Limit::HeadersTooLarge) => "request header fields too large\n",
            Answer::Refused(Limit::AmbiguousLength) => {
                "a request may not carry both Transfer-Encoding and Content-Length\n"
            }
            Answer::NoBackend => "no backend is available for this upstream; retry shortly\n",
            Answer::Full { .. } => {
                "every backend of this upstream is at its limit of active sessions, so no new \
                 session can start now; existing sessions are unaffected; retry after the \
                 Retry-After delay\n"
            }
            Answer::Busy => {
                "the backend serving this session is at its connection limit (max_connections); \
                 retry shortly\n"
            }
            Answer::NotRetried { .. } => {
                "the backend failed before responding; the request was not retried on another \
                 backend because it is not idempotent (send an Idempotency-Key header to allow \
                 it)\n"
            }
            Answer::BackendFailed => "the backend failed before responding\n",
            Answer::BackendTls => {
                "no TLS connection to the backend could be made: its certificate was not \
                 accepted (not trusted, or not for the configured name) or the handshake failed\n"
            }
            Answer::Failed { .. } => "the request could not be proxied\n",
        }
    }

    /// Writes the answer (and closes the connection after it); to a gRPC call, as its gRPC
    /// status ([`crate::grpc`]).
    pub async fn send(self, session: &mut Session) -> Result<()> {
        if crate::grpc::is_grpc(session.req_header()) {
            return crate::grpc::respond(session, self.status(), self.body()).await;
        }
        headers::respond(session, self.status(), self.retry_after(), self.body()).await
    }

    /// The request failed for good (Pingora's `fail_to_proxy`): the answer for `e`, unless a
    /// response already started.
    pub async fn after_error(session: &mut Session, e: &Error, a: &Attempt) -> FailToProxy {
        let code = headers::error_status(e);
        if code > 0 && session.response_written().is_none() {
            let answer = match e.etype() {
                ErrorType::TLSHandshakeFailure | ErrorType::InvalidCert if code == 502 => {
                    log::warn!("TLS to the backend failed: {e}");
                    Answer::BackendTls
                }
                _ => Answer::after_failure(code, a),
            };
            let sent = answer.send(session).await;
            sent.unwrap_or_else(|err| log::debug!("error response not sent: {err}"));
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_map_to_their_answers() {
        let attempt = |not_retried, busy| Attempt {
            not_retried,
            busy,
            ..Attempt::default()
        };
        let after =
            |status, not_retried, busy| Answer::after_failure(status, &attempt(not_retried, busy));
        assert_eq!(after(502, true, false), Answer::NotRetried { status: 502 });
        assert_eq!(after(503, false, true), Answer::Busy);
        assert_eq!(after(503, false, false), Answer::NoBackend);
        assert_eq!(after(502, false, false), Answer::BackendFailed);
        let other = after(408, false, false);
        assert_eq!((other.status(), other.retry_after()), (408, None));
        assert_eq!(Answer::Busy.retry_after(), Some(1));
        assert_eq!(Answer::Full { retry_after: 5 }.retry_after(), Some(5));
        assert_eq!(Answer::Refused(Limit::UriTooLong).status(), 414);
    }
}
