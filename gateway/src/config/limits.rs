//! `limits:` — what a client may send and how slowly (see `limits` for the checks
//! and `client_deadlines` for the timeouts below HTTP).
//!
//! | key | default | what |
//! |---|---|---|
//! | `header_timeout` | 10s | a request head must arrive whole within this of its first byte |
//! | `keepalive_timeout` | 60s | a connection idle this long between requests (or before its first) is closed |
//! | `body_timeout` | 60s | the longest pause between two reads of a request body |
//! | `max_header_bytes` | 65536 | request line + header fields, in bytes → 431 |
//! | `max_headers` | 100 | header fields → 431 |
//! | `max_uri_bytes` | 8192 | request target → 414 |
//! | `read_buffer_bytes` | 0 | user-space read buffer of each client connection (Pingora's default: 65536); 0 = none, reads go straight to the parser's buffer |
use super::defaults;
use berth_plugins::params::Obj;
use std::time::Duration;

/// Checked `limits:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    pub header_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub body_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_uri_bytes: usize,
    /// The read buffer Pingora puts in front of each client connection's socket (kept for the
    /// connection's life, idle or not).
    pub read_buffer_bytes: usize,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            header_timeout: defaults::HEADER_TIMEOUT,
            keepalive_timeout: defaults::KEEPALIVE_TIMEOUT,
            body_timeout: defaults::BODY_TIMEOUT,
            max_header_bytes: defaults::MAX_HEADER_BYTES,
            max_headers: defaults::MAX_HEADERS,
            max_uri_bytes: defaults::MAX_URI_BYTES,
            read_buffer_bytes: defaults::READ_BUFFER_BYTES,
        }
    }
}

/// Pingora's own ceilings: a head over 1 MiB or with more than 256 fields is refused (400)
/// before Berth sees it, so Berth's limits must stay below.
const PINGORA_MAX_HEAD: usize = 1_048_575;
const PINGORA_MAX_HEADERS: usize = 256;

/// Read `limits:` (all keys optional).
pub(super) fn read(top: &mut Obj<'_, '_>) -> ClientLimits {
    let mut l = ClientLimits::default();
    let Some(v) = top.raw("limits") else {
        return l;
    };
    let path = top.path_of("limits");
    let Some(mut o) = Obj::new(v, path, top.errors()) else {
        return l;
    };
    for (key, slot) in [
        ("header_timeout", &mut l.header_timeout),
        ("keepalive_timeout", &mut l.keepalive_timeout),
        ("body_timeout", &mut l.body_timeout),
    ] {
        if let Some(d) = o.duration(key) {
            if d < Duration::from_millis(100) {
                o.error(key, "must be at least 100ms");
            }
            *slot = d;
        }
    }
    if l.keepalive_timeout.subsec_millis() != 0 {
        // Pingora keeps keep-alive timeouts in whole seconds.
        o.error("keepalive_timeout", "must be a whole number of seconds");
    }
    for (key, slot, lo, hi) in [
        (
            "max_header_bytes",
            &mut l.max_header_bytes,
            1024,
            PINGORA_MAX_HEAD,
        ),
        ("max_headers", &mut l.max_headers, 8, PINGORA_MAX_HEADERS),
        ("max_uri_bytes", &mut l.max_uri_bytes, 64, PINGORA_MAX_HEAD),
        ("read_buffer_bytes", &mut l.read_buffer_bytes, 0, 1 << 20),
    ] {
        if let Some(n) = o.opt::<usize>(key) {
            if !(lo..=hi).contains(&n) {
                o.error(key, format!("{n} is out of range {lo}..={hi}"));
            }
            *slot = n;
        }
    }
    o.finish();
    l
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_plugins::params::Errors;

    fn parse(yaml: &str) -> (ClientLimits, Vec<String>) {
        let v: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
        let mut errors = Errors::default();
        let mut top = Obj::new(&v, String::new(), &mut errors).unwrap();
        let l = read(&mut top);
        let _ = top.raw("other");
        top.finish();
        (l, errors.0.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn defaults_and_values() {
        assert_eq!(parse("other: 1").0, ClientLimits::default());
        let (l, errs) = parse(
            "limits: {header_timeout: 2s, keepalive_timeout: 5s, body_timeout: 500ms, \
             max_header_bytes: 4096, max_headers: 20, max_uri_bytes: 1024, read_buffer_bytes: 16384}",
        );
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(l.header_timeout, Duration::from_secs(2));
        assert_eq!(l.body_timeout, Duration::from_millis(500));
        assert_eq!(
            (l.max_header_bytes, l.max_headers, l.max_uri_bytes),
            (4096, 20, 1024)
        );
        assert_eq!(l.read_buffer_bytes, 16384);
        assert_eq!(ClientLimits::default().read_buffer_bytes, 0);
    }

    #[test]
    fn bad_values_are_reported() {
        let (_, errs) = parse(
            "limits: {header_timeout: 0s, keepalive_timeout: 1500ms, max_headers: 1000, \
             max_header_bytes: 10, typo: 1}",
        );
        let all = errs.join("\n");
        for want in [
            "limits.header_timeout: must be at least 100ms",
            "limits.keepalive_timeout: must be a whole number of seconds",
            "limits.max_headers: 1000 is out of range 8..=256",
            "limits.max_header_bytes: 10 is out of range 1024..=1048575",
            "limits.typo",
        ] {
            assert!(all.contains(want), "{want:?} not in:\n{all}");
        }
    }
}
