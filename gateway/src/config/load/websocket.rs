//! `upstreams.<name>.websocket`: how long an upgraded connection (WebSocket) may stay idle, and
//! how long it may wait for a client that takes no data.
use super::super::{defaults, WebSocketConf};
use berth_plugins::params::Obj;

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
