//! How an upstream's backends are spoken to: `upstreams.<name>.protocol` (HTTP/1.1, or HTTP/2
//! for gRPC: `h2` over `tls:`, `h2c` in clear text) and `websocket:` (how long an upgraded
//! connection may stay idle, and how long it may wait for a client that takes no data).
use super::super::{defaults, UpstreamProtocol, WebSocketConf};
use berth_plugins::params::Obj;

/// `protocol` (default `http1`); `tls` tells whether the upstream has `tls:`.
pub(super) fn read_protocol(up: &mut Obj<'_, '_>, tls: bool) -> UpstreamProtocol {
    let Some(p) = up.opt::<String>("protocol") else {
        return UpstreamProtocol::Http1;
    };
    let protocol = match p.as_str() {
        "http1" => UpstreamProtocol::Http1,
        "h2" => UpstreamProtocol::H2,
        "h2c" => UpstreamProtocol::H2c,
        other => {
            up.error(
                "protocol",
                format!("{other:?} is not one of: http1, h2 (HTTP/2 over tls:), h2c (HTTP/2 in clear text)"),
            );
            return UpstreamProtocol::Http1;
        }
    };
    match protocol {
        UpstreamProtocol::H2 if !tls => up.error(
            "protocol",
            "h2 is HTTP/2 over TLS and needs tls: (use h2c for HTTP/2 in clear text)",
        ),
        UpstreamProtocol::H2c if tls => up.error(
            "protocol",
            "h2c is HTTP/2 in clear text, but the upstream has tls: (use h2)",
        ),
        _ => {}
    }
    protocol
}

pub(super) fn read_websocket(up: &mut Obj<'_, '_>) -> WebSocketConf {
    let mut cfg = WebSocketConf {
        idle_timeout: defaults::WEBSOCKET_IDLE_TIMEOUT,
        send_timeout: defaults::WEBSOCKET_SEND_TIMEOUT,
    };
    let Some(v) = up.raw("websocket") else {
        return cfg;
    };
    let path = up.path_of("websocket");
    let Some(mut o) = Obj::new(v, path, up.errors()) else {
        return cfg;
    };
    for (key, value) in [
        ("idle_timeout", &mut cfg.idle_timeout),
        ("send_timeout", &mut cfg.send_timeout),
    ] {
        if let Some(d) = o.duration(key) {
            if d.is_zero() {
                o.error(key, "must be above 0");
            }
            *value = d;
        }
    }
    o.finish();
    cfg
}
