//! The HTTP/2 frames a connection's server side writes, read only as far as needed to count
//! the connections Berth's HTTP/2 server closes for a client's error: a GOAWAY frame with an
//! error code (protocol error, flow-control error, `ENHANCE_YOUR_CALM` after a flood of
//! resets or small frames, ...), counted in `berth_http2_errors_total{reason}`. Only
//! connections that may speak HTTP/2 carry a scanner; it reads 9-byte frame headers and skips
//! payloads, except the 8 bytes of a GOAWAY's that hold its error code.
//!
//! The frames the client sends are scanned the same way for one thing the HTTP/2 server does
//! not limit: SETTINGS and PING frames (each makes the server queue an ACK). A client that
//! reads its ACKs can send them as fast as it likes; one that does not only stalls its own
//! connection. [`ControlBudget`] allows a burst of [`CONTROL_BURST`] of them, refilled at
//! [`CONTROL_PER_SECOND`] and whole whenever the server sends a DATA or HEADERS frame; a
//! connection over it is cut and counted as `control_flood`. The clock is read only when such
//! a frame arrives.
use crate::metrics::Http2Errors;
use std::sync::Arc;
use tokio::time::Instant;

/// SETTINGS frames and PINGs (not their ACKs) a client may send at once.
pub const CONTROL_BURST: u32 = 100;
/// ... and per second after that burst.
pub const CONTROL_PER_SECOND: u32 = 10;

/// SETTINGS (RFC 9113 §6.5) and PING (§6.7); the ACK flag.
const SETTINGS: u8 = 0x4;
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PING: u8 = 0x6;
const ACK: u8 = 0x1;

/// GOAWAY (RFC 9113 §6.8).
const GOAWAY: u8 = 0x7;

/// A scanner of one connection's written and read frames, with where to count.
#[derive(Debug)]
pub struct H2Watch {
    scan: FrameScan,
    read: FrameScan,
    budget: ControlBudget,
    /// Went over the budget: every later read fails.
    flooded: bool,
    errors: Arc<Http2Errors>,
}

impl H2Watch {
    pub fn new(errors: Arc<Http2Errors>) -> H2Watch {
        H2Watch {
            scan: FrameScan::default(),
            read: FrameScan::default(),
            budget: ControlBudget::default(),
            flooded: false,
            errors,
        }
    }

    /// Bytes the server wrote (in order, each exactly once). A DATA or HEADERS frame refills
    /// the control-frame budget: a client may ping once per response it is receiving (gRPC's
    /// bandwidth-delay probes do), the rule gRPC servers apply to pings too.
    pub fn written(&mut self, bytes: &[u8]) {
        let errors = &self.errors;
        let mut answered = false;
        self.scan.feed(
            bytes,
            |kind, _| answered |= kind == DATA || kind == HEADERS,
            |code| {
                if code != 0 {
                    errors.count(code);
                }
            },
        );
        if answered {
            self.budget.refill();
        }
    }

    /// Frame bytes the client sent, after the preface (in order, each exactly once). `Err`
    /// (counted) when they go over the control-frame budget: the connection is to be cut.
    pub fn read(&mut self, bytes: &[u8]) -> Result<(), ControlFlood> {
        let budget = &mut self.budget;
        let mut over = false;
        self.read.feed(
            bytes,
            |kind, flags| {
                if (kind == SETTINGS || kind == PING) && flags & ACK == 0 {
                    over |= !budget.take(Instant::now());
                }
            },
            |_| {},
        );
        if over && !self.flooded {
            self.flooded = true;
            self.errors.count_control_flood();
        }
        if self.flooded {
            return Err(ControlFlood);
        }
        Ok(())
    }

    /// True once the client went over the control-frame budget.
    pub fn flooded(&self) -> bool {
        self.flooded
    }
}

/// A connection sent more SETTINGS/PING frames than [`ControlBudget`] allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlFlood;

/// A token bucket of control frames: [`CONTROL_BURST`] at once, [`CONTROL_PER_SECOND`] after.
#[derive(Debug)]
pub struct ControlBudget {
    tokens: u32,
    /// When the last token was added (or the first frame came).
    refilled: Option<Instant>,
}

impl Default for ControlBudget {
    fn default() -> Self {
        ControlBudget {
            tokens: CONTROL_BURST,
            refilled: None,
        }
    }
}

impl ControlBudget {
    /// The whole burst again.
    pub fn refill(&mut self) {
        self.tokens = CONTROL_BURST;
    }

    /// One control frame at `now`: false when none is left.
    pub fn take(&mut self, now: Instant) -> bool {
        let last = *self.refilled.get_or_insert(now);
        let step = std::time::Duration::from_secs(1) / CONTROL_PER_SECOND;
        let earned = now.saturating_duration_since(last).as_nanos() / step.as_nanos();
        if earned >= u128::from(CONTROL_BURST) {
            self.tokens = CONTROL_BURST;
            self.refilled = Some(now);
        } else if earned > 0 {
            // Both below CONTROL_BURST: no overflow. The remainder of a step is kept.
            let earned = earned as u32;
            self.tokens = (self.tokens + earned).min(CONTROL_BURST);
            self.refilled = Some(last + step * earned);
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// Where the scan is in the frame stream.
#[derive(Debug, Default)]
pub struct FrameScan {
    /// The current frame's header, `have` bytes of it so far (9 = complete).
    head: [u8; 9],
    have: usize,
    /// Payload bytes of the current frame still to come.
    left: usize,
    /// In a GOAWAY: payload bytes seen so far, and its error code's bytes.
    goaway: Option<(usize, [u8; 4])>,
}

impl FrameScan {
    /// Feed bytes of the frame stream: `on_frame(type, flags)` for every frame header they
    /// complete, `on_goaway(code)` for every GOAWAY whose error code they complete.
    pub fn feed(
        &mut self,
        mut bytes: &[u8],
        mut on_frame: impl FnMut(u8, u8),
        mut on_goaway: impl FnMut(u32),
    ) {
        while !bytes.is_empty() {
            if self.have < 9 {
                let take = (9 - self.have).min(bytes.len());
                self.head[self.have..self.have + take].copy_from_slice(&bytes[..take]);
                self.have += take;
                bytes = &bytes[take..];
                if self.have == 9 {
                    let h = self.head;
                    self.left =
                        usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                    self.goaway = (h[3] == GOAWAY).then_some((0, [0; 4]));
                    on_frame(h[3], h[4]);
                    if self.left == 0 {
                        self.have = 0;
                    }
                }
                continue;
            }
            let take = self.left.min(bytes.len());
            if let Some((pos, code)) = &mut self.goaway {
                for (i, &b) in bytes[..take].iter().enumerate() {
                    if let Some(slot) = (*pos + i).checked_sub(4).and_then(|k| code.get_mut(k)) {
                        *slot = b;
                    }
                }
                let before = *pos;
                *pos += take;
                if before < 8 && *pos >= 8 {
                    on_goaway(u32::from_be_bytes(*code));
                }
            }
            self.left -= take;
            bytes = &bytes[take..];
            if self.left == 0 {
                self.have = 0;
                self.goaway = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let n = payload.len();
        let mut f = vec![
            (n >> 16) as u8,
            (n >> 8) as u8,
            n as u8,
            kind,
            0,
            0,
            0,
            0,
            0,
        ];
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn goaway_codes_are_found_across_any_split() {
        let mut stream = frame(0x4, &[0, 3, 0, 0, 0, 100]); // SETTINGS
        stream.extend(frame(0x4, &[])); // SETTINGS ACK
        stream.extend(frame(0x0, &[b'x'; 300])); // DATA
        stream.extend(frame(GOAWAY, &[0, 0, 0, 1, 0, 0, 0, 11, b'd', b'b', b'g']));
        stream.extend(frame(GOAWAY, &[0, 0, 0, 1, 0, 0, 0, 0])); // NO_ERROR
        for chunk in [1, 2, 3, 5, 8, 9, 10, 64, 1000] {
            let mut scan = FrameScan::default();
            let mut codes = Vec::new();
            for piece in stream.chunks(chunk) {
                scan.feed(piece, |_, _| {}, |c| codes.push(c));
            }
            assert_eq!(codes, [11, 0], "chunks of {chunk}");
        }
    }

    #[test]
    fn frame_headers_are_reported_across_any_split() {
        let mut stream = frame(0x4, &[0, 3, 0, 0, 0, 100]);
        stream.extend(frame(0x6, &[7; 8]));
        stream.extend(frame(0x0, &[b'x'; 300]));
        stream.extend(frame(0x1, &[1, 2, 3]));
        for chunk in [1, 2, 8, 9, 10, 64, 1000] {
            let mut scan = FrameScan::default();
            let mut kinds = Vec::new();
            for piece in stream.chunks(chunk) {
                scan.feed(piece, |k, _| kinds.push(k), |_| {});
            }
            assert_eq!(kinds, [0x4, 0x6, 0x0, 0x1], "chunks of {chunk}");
        }
    }

    #[test]
    fn the_control_budget_is_a_burst_then_a_rate() {
        let t0 = Instant::now();
        let mut b = ControlBudget::default();
        for i in 0..CONTROL_BURST {
            assert!(b.take(t0), "frame {i} of the burst");
        }
        assert!(!b.take(t0), "over the burst");
        let step = std::time::Duration::from_secs(1) / CONTROL_PER_SECOND;
        // Half a step later: nothing earned; a step later: one.
        assert!(!b.take(t0 + step / 2));
        assert!(b.take(t0 + step));
        assert!(!b.take(t0 + step));
        // Fractions of a step add up: 1.5 steps, then 2 steps after the start: one more.
        assert!(!b.take(t0 + step * 3 / 2));
        assert!(b.take(t0 + step * 2));
        // A long pause refills the burst, no more.
        let later = t0 + std::time::Duration::from_secs(3600);
        for i in 0..CONTROL_BURST {
            assert!(b.take(later), "frame {i} after an hour");
        }
        assert!(!b.take(later));
    }

    fn watch() -> (H2Watch, Arc<Http2Errors>) {
        let metrics = crate::metrics::Metrics::new();
        let errors = metrics.http2_errors.clone();
        (H2Watch::new(errors.clone()), errors)
    }

    #[test]
    fn a_settings_or_ping_flood_is_cut_and_counted_and_acks_are_free() {
        let (mut w, errors) = watch();
        let ack = {
            let mut f = frame(0x4, &[]);
            f[4] = ACK;
            f
        };
        // ACKs and other frames do not count.
        for _ in 0..1000 {
            w.read(&ack).unwrap();
            w.read(&frame(0x8, &[0, 0, 1, 0])).unwrap(); // WINDOW_UPDATE
        }
        let mut burst = Vec::new();
        for i in 0..CONTROL_BURST {
            burst.extend(frame(if i % 2 == 0 { SETTINGS } else { PING }, &[0; 6]));
        }
        w.read(&burst).unwrap();
        assert_eq!(errors.control_floods(), 0);
        // The server sends a response: the budget is whole again (gRPC pings per DATA).
        w.written(&frame(HEADERS, &[0x88]));
        w.read(&burst).unwrap();
        w.written(&frame(DATA, b"body"));
        w.read(&burst).unwrap();
        assert_eq!(errors.control_floods(), 0);
        // 10,000 more at once: over the budget unless 1,000 s passed since the burst.
        assert_eq!(
            w.read(&frame(PING, &[0; 8]).repeat(10_000)),
            Err(ControlFlood)
        );
        assert_eq!(errors.control_floods(), 1);
        // Cut for good: counted once.
        w.written(&frame(DATA, b"late"));
        assert_eq!(w.read(&frame(PING, &[0; 8])), Err(ControlFlood));
        assert_eq!(errors.control_floods(), 1);
    }
}
