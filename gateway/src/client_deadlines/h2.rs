//! The HTTP/2 frames a connection's server side writes, read only as far as needed to count
//! the connections Berth's HTTP/2 server closes for a client's error: a GOAWAY frame with an
//! error code (protocol error, flow-control error, `ENHANCE_YOUR_CALM` after a flood of
//! resets or small frames, ...), counted in `berth_http2_errors_total{reason}`. Only
//! connections that may speak HTTP/2 carry a scanner; it reads 9-byte frame headers and skips
//! payloads, except the 8 bytes of a GOAWAY's that hold its error code.
use crate::metrics::Http2Errors;
use std::sync::Arc;

/// GOAWAY (RFC 9113 §6.8).
const GOAWAY: u8 = 0x7;

/// A scanner of one connection's written frames, with where to count.
#[derive(Debug)]
pub struct H2Watch {
    scan: FrameScan,
    errors: Arc<Http2Errors>,
}

impl H2Watch {
    pub fn new(errors: Arc<Http2Errors>) -> H2Watch {
        H2Watch {
            scan: FrameScan::default(),
            errors,
        }
    }

    /// Bytes the server wrote (in order, each exactly once).
    pub fn written(&mut self, bytes: &[u8]) {
        let errors = &self.errors;
        self.scan.feed(bytes, |code| {
            if code != 0 {
                errors.count(code);
            }
        });
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
    /// Feed written bytes; `on_goaway(code)` for every GOAWAY whose error code they complete.
    pub fn feed(&mut self, mut bytes: &[u8], mut on_goaway: impl FnMut(u32)) {
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
                scan.feed(piece, |c| codes.push(c));
            }
            assert_eq!(codes, [11, 0], "chunks of {chunk}");
        }
    }
}
