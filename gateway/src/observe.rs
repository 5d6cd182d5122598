//! What a request leaves in the metrics: when it ends, its count, duration and affinity
//! outcome; when a failover is decided, the backend it failed away from. Only pre-resolved
//! handles on this path (see [`crate::metrics`]): a failover away from a backend that is no
//! longer in the routing table — rare — resolves its label on the spot.
use crate::metrics::Outcome;
use crate::upstreams::{Routing, Table, Upstream};
use berth_routing::{Decision, Reason};
use std::time::Duration;

impl Routing {
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

impl Upstream {
    /// Count a finished request routed by `r` on `table`: `berth_requests_total`, its duration
    /// (`elapsed`, when known) and its affinity outcome.
    pub fn finished(
        &self,
        table: &Table,
        r: &Routing,
        status: Option<u16>,
        elapsed: Option<Duration>,
    ) {
        let Some(d) = r.decision else { return };
        table.backends[d.backend].metrics.request(d.reason, status);
        if let Some(e) = elapsed {
            self.metrics.duration(d.reason, e);
        }
        if let Some(o) = r.outcome() {
            self.metrics.affinity(o);
        }
    }

    /// Count failover decision `d` (reason `failover`) made while selecting: the session's
    /// pinned backend (`d.previous`) could not serve it. `named` is the backend a verified
    /// token named, for the label when `d.previous` is unknown to this process.
    pub(crate) fn count_failover(&self, table: &Table, d: &Decision, named: Option<&str>) {
        match d.previous.and_then(|id| table.router.index_of_id(id)) {
            Some(i) => table.backends[i].metrics.failovers.inc(),
            None => {
                let name = d.previous.and_then(|id| self.names.name(id));
                let label = name.as_deref().or(named).unwrap_or("");
                self.metrics.failover_from(&self.name, label);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::metrics::Outcome;
    use crate::upstreams::Routing;
    use berth_routing::{BackendId, Decision, Reason};

    fn routing(reason: Reason, previous: Option<u32>, invalid: bool) -> Routing {
        Routing {
            decision: Some(Decision {
                backend: 0,
                backup: None,
                reason,
                previous: previous.map(BackendId),
            }),
            invalid,
            ..Routing::default()
        }
    }

    #[test]
    fn outcomes() {
        let cases = [
            (routing(Reason::Sticky, None, false), Some(Outcome::Hit)),
            (routing(Reason::New, None, false), Some(Outcome::Miss)),
            (routing(Reason::Ring, None, false), None),
            (
                routing(Reason::Failover, Some(1), false),
                Some(Outcome::Reassigned),
            ),
            (
                routing(Reason::Spill, None, false),
                Some(Outcome::Reassigned),
            ),
            (
                routing(Reason::New, None, true),
                Some(Outcome::InvalidToken),
            ),
            (
                routing(Reason::Ring, None, true),
                Some(Outcome::InvalidToken),
            ),
            // Another plugin's key kept the session: the rejection is not its outcome.
            (routing(Reason::Sticky, None, true), Some(Outcome::Hit)),
            (
                routing(Reason::Failover, Some(1), true),
                Some(Outcome::Reassigned),
            ),
            (Routing::default(), None),
        ];
        for (r, want) in cases {
            assert_eq!(r.outcome(), want, "{r:?}");
        }
        let moved = Routing {
            moved_from: Some(BackendId(2)),
            ..routing(Reason::Sticky, None, false)
        };
        assert_eq!(moved.outcome(), Some(Outcome::Reassigned));
    }
}
