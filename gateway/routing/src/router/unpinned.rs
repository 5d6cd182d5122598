//! Selections that pin nothing: a request bound to a backend by something other than the
//! overlay (connection affinity), and a request without a key (the ring alone).
use super::Router;
use crate::{Decision, Reason, Refusal};

impl Router {
    /// A request bound to backend `name` without a session in the overlay (connection
    /// affinity: every request of one client connection follows its first). While `name` is
    /// up it serves (reason `Sticky`, the backup the next ring node from `point`); otherwise
    /// the ring from `point` decides (reason `Failover`, `previous` = `name`'s id when known).
    /// Nothing is pinned, counted as a session or held in flight.
    pub fn select_bound(&self, name: &str, point: u32) -> Result<Decision, Refusal> {
        if let Some(i) = self.index_of(name).filter(|&i| self.is_up(i)) {
            return Ok(Decision {
                backend: i,
                backup: self.backup_after(point, i, &[]),
                reason: Reason::Sticky,
                previous: None,
            });
        }
        let (backend, backup) = self.pick(point, &[], false)?;
        Ok(Decision {
            backend,
            backup,
            reason: Reason::Failover,
            previous: self.names.get(name),
        })
    }

    /// No key: walk the ring from `point`, pin nothing; reason `Ring` (or `New` when the caller
    /// will issue a session for it — then caps and the load bound apply, as for any new
    /// session; [`Router::select_keyless`] places such sessions evenly instead).
    pub fn select_unpinned(&self, point: u32, new_session: bool) -> Result<Decision, Refusal> {
        let (backend, backup) = self.pick(point, &[], new_session)?;
        Ok(Decision {
            backend,
            backup,
            reason: if new_session {
                Reason::New
            } else {
                Reason::Ring
            },
            previous: None,
        })
    }
}
