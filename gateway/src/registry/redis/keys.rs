//! The data model in Redis (README, "Fleet: sessions shared through Redis"):
//!
//! * `<prefix>:{<upstream>:<key>}:p` — a session's pin: the backend's id, `PX` = the idle TTL;
//! * `<prefix>:{<upstream>:<key>}:m` — a migration's one-time note: the backend it moved from;
//! * `<prefix>:{<upstream>}:on:<backend>` — the sessions pinned to a backend (a set of keys;
//!   stale members are dropped when read), what a migration through any gateway moves;
//! * `<prefix>:{<upstream>}:admin` — the admin state set through any gateway's admin API
//!   (a hash, field `<backend>:<attribute>`; `stored.rs`);
//! * `<prefix>:events` — the pub/sub channel of admin changes and pin invalidations.
//!
//! `<key>` is the 128-bit session key in hex (a hash of the affinity value: no session id is
//! stored). The braces are Redis Cluster hash tags: a session's pin and note share a slot (the
//! scripts touch both), while sessions spread over every slot.
use berth_routing::SessionKey;
use redis::Script;

/// Key names of one upstream.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    upstream: String,
}

impl Keys {
    pub fn new(prefix: &str, upstream: &str) -> Keys {
        Keys {
            prefix: prefix.to_string(),
            upstream: upstream.to_string(),
        }
    }

    pub fn pin(&self, key: SessionKey) -> String {
        format!("{}:{{{}:{:032x}}}:p", self.prefix, self.upstream, key.0)
    }

    pub fn moved(&self, key: SessionKey) -> String {
        format!("{}:{{{}:{:032x}}}:m", self.prefix, self.upstream, key.0)
    }

    pub fn on(&self, backend: &str) -> String {
        format!("{}:{{{}}}:on:{backend}", self.prefix, self.upstream)
    }

    /// The upstream's stored admin state (`stored.rs`).
    pub fn admin(&self) -> String {
        format!("{}:{{{}}}:admin", self.prefix, self.upstream)
    }

    pub fn channel(&self) -> String {
        format!("{}:events", self.prefix)
    }
}

/// A session key as stored in the per-backend sets.
pub fn hex(key: SessionKey) -> String {
    format!("{:032x}", key.0)
}

/// The session key of a per-backend set member.
pub fn parse_hex(s: &str) -> Option<SessionKey> {
    (s.len() == 32)
        .then(|| u128::from_str_radix(s, 16).ok())
        .flatten()
        .map(SessionKey)
}

/// First pin: `SET pin backend NX PX ttl`, returning the winner; an existing pin has its TTL
/// renewed, and a migration's note is handed to this caller alone (read and deleted).
/// KEYS: pin, note. ARGV: backend, ttl ms (0 = none). Returns `{winner, created, moved_from}`.
pub fn first_pin() -> Script {
    Script::new(
        r"
local cur = redis.call('GET', KEYS[1])
if cur then
  if ARGV[2] ~= '0' then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
  local from = redis.call('GET', KEYS[2])
  if from then redis.call('DEL', KEYS[2]) else from = '' end
  return {cur, 0, from}
end
if ARGV[2] ~= '0' then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
return {ARGV[1], 1, ''}
",
    )
}

/// A migration's move: only while the pin still names `from`, re-pin it to `to` and leave the
/// one-time note. KEYS: pin, note. ARGV: from, to, ttl ms (0 = none). Returns 1 when moved.
pub fn migrate() -> Script {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[3] ~= '0' then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[2])
  redis.call('SET', KEYS[2], ARGV[1])
end
return 1
",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_pin_and_note_share_a_hash_tag() {
        let k = Keys::new("berth", "app");
        let key = SessionKey(0xabc);
        let tag = |s: &str| s[s.find('{').unwrap()..=s.find('}').unwrap()].to_string();
        assert_eq!(tag(&k.pin(key)), tag(&k.moved(key)));
        assert_eq!(k.pin(key), "berth:{app:00000000000000000000000000000abc}:p");
        assert_eq!(k.on("b1"), "berth:{app}:on:b1");
        assert_eq!(k.admin(), "berth:{app}:admin");
        assert_eq!(parse_hex(&hex(key)), Some(key));
        assert_eq!(parse_hex("xyz"), None);
    }
}
