//! One request's attempt: the routing decision and everything that follows from it — the
//! backends that failed, the retry budget and the rule that spends it, and what the request
//! came to for the metrics. Filled in by `upstream` (`decide`, `failover`), read by
//! the proxy's hooks.
use crate::metrics::Outcome;
use berth_routing::{BackendId, BackendIdx, Decision, Reason, Refusal, SessionKey};
use pingora_error::RetryType;

/// Per-request routing state (lives in the proxy's context).
#[derive(Debug, Default, Clone)]
pub struct Attempt {
    pub decision: Option<Decision>,
    /// Index of the plugin whose key decided, if any.
    pub decided_by: Option<usize>,
    /// The session's position on the ring (for failover walks).
    pub point: u32,
    /// The overlay key, when the session lives in the overlay.
    pub key: Option<SessionKey>,
    /// Expiry of the token that decided (cookie insert mode), for its refresh rule.
    pub key_expires: Option<u64>,
    /// Backends that failed for this request, in order.
    pub failed: Failed,
    /// Other backends this request may still be sent to after a failure (`connect_retries`).
    pub budget: usize,
    /// Set when a connect failed and Pingora will call `upstream_peer` again.
    pub retrying: bool,
    /// Set when a failed request was not retried because it is not idempotent.
    pub not_retried: bool,
    /// Refused because the backend stayed at `max_connections` past `queue_timeout`.
    pub busy: bool,
    /// A plugin rejected the key the request presented (forged, expired ...).
    pub invalid: bool,
    /// A migration moved this session here; its first request says so.
    pub moved_from: Option<BackendId>,
    /// Why no backend was chosen (the request is answered with a 503).
    pub refused: Option<Refusal>,
    /// The selection counted this request in flight on `key` (released when it ends).
    pub acquired: bool,
    /// A new session placed without the shared registry, which did not answer (the access
    /// log's reason `degraded`; counted in `berth_registry_degraded_total`).
    pub degraded: bool,
    /// A token's session not in this gateway's cache before this request (a shared registry
    /// is asked where it lives: a migration or another gateway may have moved it).
    pub token_unseen: bool,
}

/// What to do after a request failed on its way to or from a backend.
#[derive(Debug, PartialEq, Eq)]
pub enum AfterError {
    /// Answer the client with the error; `not_retried` when only non-idempotency stopped a
    /// retry (the 502 body says so).
    GiveUp { not_retried: bool },
    /// Retry on a new connection to the same backend (a stale pooled connection).
    SameBackend,
    /// Retry on the next backend.
    NextBackend,
}

impl Attempt {
    /// Whether the budget allows one more backend.
    fn may_try_another(&self) -> bool {
        self.failed.len() < self.budget
    }

    /// A connect failed (nothing reached the backend, so any request may move): true when the
    /// next `upstream_peer` is to pick another backend.
    pub fn connect_failed(&mut self) -> bool {
        self.retrying = self.may_try_another();
        self.retrying
    }

    /// The retry rule after a failure while proxying: a non-idempotent (or already partly
    /// answered) request is never replayed; a failure on a pooled connection that Pingora marks
    /// retryable (`Decided(true)` or `ReusedOnly`) is retried once more on the same backend;
    /// otherwise the next backend, while the budget lasts. Never calls `RetryType::retry()`,
    /// which panics on `ReusedOnly`.
    pub fn proxy_failed(
        &mut self,
        retriable: bool,
        upstream_reused: bool,
        retry: &RetryType,
    ) -> AfterError {
        let after = if !retriable {
            AfterError::GiveUp { not_retried: true }
        } else if upstream_reused && !matches!(retry, RetryType::Decided(false)) {
            AfterError::SameBackend
        } else if self.may_try_another() {
            AfterError::NextBackend
        } else {
            AfterError::GiveUp { not_retried: false }
        };
        match after {
            AfterError::GiveUp { not_retried } => self.not_retried = not_retried,
            AfterError::NextBackend => self.retrying = true,
            AfterError::SameBackend => {}
        }
        after
    }

    /// The affinity outcome of a routed request, in this order:
    /// * `reassigned` — the session changed backend (failover, spill, or its first request
    ///   after a migration): what `X-Berth-Affinity: reassigned` tells the backend;
    /// * `invalid_token` — a plugin rejected the key the request presented and no other key
    ///   kept the session where it was (the request was routed as new, or by the ring);
    /// * `hit` — the session's pin held (reason `sticky`);
    /// * `miss` — no live pin: a new session was placed (reason `new`).
    ///
    /// `None` for a request without a session (reason `ring`, nothing rejected) or without a
    /// decision (no backend available).
    pub fn outcome(&self) -> Option<Outcome> {
        let d = self.decision?;
        if d.reason.is_reassignment() || d.previous.is_some() || self.moved_from.is_some() {
            return Some(Outcome::Reassigned);
        }
        if self.invalid && d.reason != Reason::Sticky {
            return Some(Outcome::InvalidToken);
        }
        match d.reason {
            Reason::Sticky => Some(Outcome::Hit),
            Reason::New => Some(Outcome::Miss),
            _ => None,
        }
    }
}

/// Backends that failed during one request; small and allocation-free.
#[derive(Debug, Default, Clone)]
pub struct Failed {
    items: [BackendIdx; 8],
    len: usize,
}

impl Failed {
    pub fn push(&mut self, b: BackendIdx) {
        if self.len < self.items.len() {
            self.items[self.len] = b;
            self.len += 1;
        }
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn as_slice(&self) -> &[BackendIdx] {
        &self.items[..self.len]
    }
}

#[cfg(test)]
#[path = "attempt_tests.rs"]
mod tests;
