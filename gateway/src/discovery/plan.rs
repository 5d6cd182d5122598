//! What discovery changes, decided from a snapshot: the upstream's members and the address
//! set DNS gave. Pure (no I/O, no clock): the loop in `mod.rs` applies the changes through the
//! upstream's own membership methods.
//!
//! A member is *discovered* when it is not a backend of the file and its id is the one its
//! address hashes to ([`backend_id`]): so a process that took the membership over in an upgrade
//! recognises the discovered backends without any state of its own, and every gateway names an
//! address alike.
use crate::config::{defaults, IdKey};
use crate::upstream::AdminState;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;

/// The id of the discovered backend at `addr`: `dns-` and 16 hex digits of HMAC-SHA-256
/// (keyed with `id_secret_env`, or an empty key) of `ip:port`. The same on every gateway with
/// the same key; it does not show the address (ids appear in cookies and headers).
pub fn backend_id(key: &IdKey, addr: SocketAddr) -> String {
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(&key.0).expect("HMAC accepts any key length");
    mac.update(addr.to_string().as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut id = String::with_capacity(defaults::DISCOVERED_ID_PREFIX.len() + 16);
    id.push_str(defaults::DISCOVERED_ID_PREFIX);
    for b in &digest[..8] {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

/// One member as discovery sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub id: String,
    pub addr: SocketAddr,
    pub state: AdminState,
    /// Discovered (not from the file, id derived from its address).
    pub discovered: bool,
}

/// One change to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A new address: add a backend (id from [`backend_id`]).
    Add { id: String, addr: SocketAddr },
    /// Its address is gone: drain it.
    Drain(String),
    /// Its address is back while discovery had it draining: take new sessions again.
    Restore(String),
    /// Drained and its address is gone: remove it.
    Remove(String),
}

/// The steps that make the discovered members follow `want`. `drained` are the backends this
/// discovery put in draining (only those are restored when their address comes back: a drain
/// made through the admin API stays). An address that a backend of the file (or one added
/// through the admin API under another id) already has is left to it.
pub fn plan(
    members: &[Seen],
    want: &BTreeSet<SocketAddr>,
    drained: &HashSet<String>,
    key: &IdKey,
) -> Vec<Step> {
    let mut steps = Vec::new();
    for &addr in want {
        if members.iter().any(|m| !m.discovered && m.addr == addr) {
            continue;
        }
        let id = backend_id(key, addr);
        match members.iter().find(|m| m.discovered && m.id == id) {
            None => steps.push(Step::Add { id, addr }),
            Some(m) if m.state != AdminState::Active && drained.contains(&m.id) => {
                steps.push(Step::Restore(id));
            }
            Some(_) => {}
        }
    }
    for m in members
        .iter()
        .filter(|m| m.discovered && !want.contains(&m.addr))
    {
        match m.state {
            AdminState::Active => steps.push(Step::Drain(m.id.clone())),
            AdminState::Draining { .. } => {}
            AdminState::Drained => steps.push(Step::Remove(m.id.clone())),
        }
    }
    steps
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
