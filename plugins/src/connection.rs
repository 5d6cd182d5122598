//! The `connection` plugin: every request on one client connection goes where the
//! connection's first request went — for applications that keep state per TCP connection
//! (NTLM-style authentication) and clients that send no cookie.
//!
//! The first request of a connection is not decided by this plugin (the next plugin of the
//! chain, or the ring); when its response is on the way, the backend that served it is kept
//! in the connection's [`ConnectionContext`]. Every later request of the connection is
//! [`Affinity::Bound`] to it: nothing is pinned in the overlay, nothing counts as a session,
//! and it all ends with the connection (a new connection may land elsewhere). While that
//! backend is down or gone, the ring from the connection's own point decides, the same node
//! for every request of the connection.
//!
//! HTTP/1.x only: on HTTP/2 every stream is routed on its own and the plugin finds nothing
//! ([`RequestView::connection`] is `None`). No settings. Cost per request: a look-up in the
//! connection's few values; per connection: one string (the backend's name).
//!
//! Written against the public plugin API only (a worked example of [`ConnectionContext`]).
use crate::{Affinity, AffinityPlugin, ConnectionContext, DecisionView, KeyOutcome, Params};
use crate::{Rejected, RequestView, ResponseView, SessionKey, Slot};

/// Where a connection's first request went.
#[derive(Debug)]
struct First {
    backend: Box<str>,
    point: u32,
}

/// The `connection` plugin.
#[derive(Debug, Default)]
pub struct ConnectionPlugin {
    first: Slot<First>,
}

impl ConnectionPlugin {
    /// A plugin with a slot of its own in every connection.
    pub fn new() -> Self {
        Self::default()
    }
}

/// A connection's own ring point.
fn point(conn: &ConnectionContext) -> u32 {
    SessionKey::new(b"connection", &conn.id().to_le_bytes()).ring_point()
}

impl AffinityPlugin for ConnectionPlugin {
    fn name(&self) -> &str {
        "connection"
    }

    fn key<'r>(&self, req: &'r dyn RequestView) -> KeyOutcome<'r> {
        match req.connection().and_then(|c| c.get(&self.first)) {
            Some(first) => KeyOutcome::Key(Affinity::Bound {
                name: &first.backend,
                point: first.point,
            }),
            None => KeyOutcome::Skip,
        }
    }

    fn on_response(&self, d: &DecisionView<'_>, _: &mut dyn ResponseView) -> Option<SessionKey> {
        if let Some(conn) = d.connection {
            if conn.get(&self.first).is_none() {
                let first = First {
                    backend: d.backend.into(),
                    point: point(conn),
                };
                // Full (another plugin took every value): the connection is not bound.
                let _ = conn.set(&self.first, first);
            }
        }
        None
    }
}

/// Build a `connection` plugin (it has no settings).
pub fn factory(_: &mut Params<'_>) -> Result<Box<dyn AffinityPlugin>, Rejected> {
    Ok(Box::new(ConnectionPlugin::new()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{outcome, FakeRequest, FakeResponse, Outcome};
    use crate::{Reason, Registry};
    use std::sync::Arc;

    fn respond(p: &dyn AffinityPlugin, conn: Option<&ConnectionContext>, backend: &str) {
        let d = DecisionView {
            connection: conn,
            ..DecisionView::new("app", backend, Reason::Ring, 1)
        };
        assert_eq!(p.on_response(&d, &mut FakeResponse::new()), None);
    }

    #[test]
    fn later_requests_follow_the_first() {
        let p = Registry::builtin()
            .build_str("type: connection", "app")
            .expect("valid");
        let conn = Arc::new(ConnectionContext::new(41));
        let req = FakeRequest::new().on(&conn);
        assert_eq!(
            outcome(&*p, &req),
            Outcome::Skip,
            "first request: not decided"
        );
        respond(&*p, Some(&conn), "b2");
        let bound = Outcome::Bound {
            name: "b2".into(),
            point: point(&conn),
        };
        assert_eq!(outcome(&*p, &req), bound);
        // Later responses (even from elsewhere, after a failover) do not move it.
        respond(&*p, Some(&conn), "b3");
        assert_eq!(outcome(&*p, &req), bound);
        // Another connection is another story; so is another plugin instance.
        let other = Arc::new(ConnectionContext::new(42));
        assert_eq!(outcome(&*p, &FakeRequest::new().on(&other)), Outcome::Skip);
        let second = ConnectionPlugin::new();
        assert_eq!(outcome(&second, &req), Outcome::Skip);
        assert_ne!(point(&conn), point(&other));
    }

    #[test]
    fn without_a_connection_nothing() {
        let p = ConnectionPlugin::new();
        assert_eq!(outcome(&p, &FakeRequest::new()), Outcome::Skip);
        respond(&p, None, "b1");
        assert!(p.sees_responses());
        let e = Registry::builtin().build_str("type: connection\nx: 1", "app");
        assert!(e.is_err());
    }
}
