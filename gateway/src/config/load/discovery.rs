//! `upstreams.<name>.discovery:` — backends found in DNS: the name, the port, how often it is
//! re-resolved, which server is asked, how long a vanished backend drains, and the key of the
//! hash that names discovered backends. Checked here so `berth -t` reports every mistake;
//! nothing is resolved at validation time (DNS may be unreachable from where a file is checked).
use super::super::{defaults, DiscoveryConf, IdKey};
use berth_plugins::params::Obj;
use std::net::SocketAddr;
use std::time::Duration;

/// Shortest `interval`: below it a resolver would be asked more often than any record changes.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Shortest key of `id_secret_env`, as for the cookie plugin's signing keys.
const MIN_ID_SECRET_LEN: usize = berth_plugins::token::MIN_SECRET_LEN;

pub(super) fn read(up: &mut Obj<'_, '_>) -> Option<DiscoveryConf> {
    let v = up.raw("discovery")?;
    let path = up.path_of("discovery");
    let mut o = Obj::new(v, path, up.errors())?;
    let dns = o.req::<String>("dns");
    if let Some(name) = &dns {
        if let Err(why) = check_name(name) {
            o.error("dns", why);
        }
    }
    let port = o.req::<u16>("port");
    if port == Some(0) {
        o.error("port", "must be 1-65535");
    }
    let interval = o
        .duration("interval")
        .unwrap_or(defaults::DISCOVERY_INTERVAL);
    if interval < MIN_INTERVAL {
        o.error("interval", "must be at least 100ms");
    }
    let resolver = o
        .opt::<String>("resolver")
        .and_then(|r| match r.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                o.error(
                    "resolver",
                    format!("{r:?} is not ip:port (e.g. \"10.96.0.10:53\")"),
                );
                None
            }
        });
    let timeout = o.duration("timeout").unwrap_or(defaults::DISCOVERY_TIMEOUT);
    if timeout < Duration::from_millis(10) {
        o.error("timeout", "must be at least 10ms");
    }
    let drain_deadline = o
        .duration("drain_deadline")
        .unwrap_or(defaults::DISCOVERY_DRAIN_DEADLINE);
    let weight = o.opt::<u32>("weight").unwrap_or(defaults::WEIGHT);
    if !(1..=10_000).contains(&weight) {
        o.error("weight", format!("{weight} is out of range 1..=10000"));
    }
    let id_key = match o.opt::<String>("id_secret_env") {
        None => IdKey::default(),
        Some(var) => match secret(&var) {
            Ok(key) => IdKey(key),
            Err(why) => {
                o.error("id_secret_env", why);
                IdKey::default()
            }
        },
    };
    o.finish();
    Some(DiscoveryConf {
        dns: dns?,
        port: port?,
        interval,
        resolver,
        timeout,
        drain_deadline,
        weight,
        id_key,
    })
}

/// A DNS name: dot-separated labels of letters, digits, `-` and `_` (1-63 bytes each, 253 in
/// all; a final dot makes it absolute). An IP address is not a name.
fn check_name(name: &str) -> Result<(), String> {
    let bare = name.strip_suffix('.').unwrap_or(name);
    let bad = || format!("{name:?} is not a DNS name");
    if bare.is_empty() || bare.len() > 253 || bare.parse::<std::net::IpAddr>().is_ok() {
        return Err(bad());
    }
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if bare.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(bad())
    }
}

/// The key named by `id_secret_env`, read now; the error never shows the value.
fn secret(var: &str) -> Result<Vec<u8>, String> {
    if var.is_empty() || var.contains(['=', '\0']) {
        return Err(format!("{var:?} is not a valid environment variable name"));
    }
    let value =
        std::env::var_os(var).ok_or_else(|| format!("environment variable {var} is not set"))?;
    let value = value.into_encoded_bytes();
    if value.len() < MIN_ID_SECRET_LEN {
        return Err(format!(
            "environment variable {var} holds {} bytes; use at least {MIN_ID_SECRET_LEN}",
            value.len()
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::check_name;

    #[test]
    fn names() {
        for ok in [
            "app",
            "app.default.svc.cluster.local",
            "app.test.",
            "_http._tcp.x",
            "a-1.b",
        ] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            ".",
            "10.0.0.1",
            "::1",
            "a..b",
            "-a.b",
            "a b",
            "a:80",
            &"x".repeat(64),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
