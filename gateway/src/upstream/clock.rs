//! The routing core's clock: it takes `now` as an argument, and this is where `now` comes from.
use berth_routing::Millis;
use std::time::Instant;

/// Milliseconds since the gateway started (or since the process it took over from started):
/// the `now` handed to the routing core.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    offset: Millis,
}

impl Clock {
    pub fn new() -> Self {
        Clock::continuing(0)
    }
    /// A clock that reads `from` now: an upgraded process continues its predecessor's clock,
    /// so handed-over times (drain deadlines, pin ages) keep their meaning.
    pub fn continuing(from: Millis) -> Self {
        Clock {
            start: Instant::now(),
            offset: from,
        }
    }
    pub fn now(&self) -> Millis {
        self.at(Instant::now())
    }
    /// `t` as a routing-core time (for a caller that also needs the `Instant`).
    pub fn at(&self, t: Instant) -> Millis {
        self.offset + t.saturating_duration_since(self.start).as_millis() as Millis
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}
