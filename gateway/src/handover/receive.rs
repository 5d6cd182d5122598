//! New process: connect to the running Berth's state socket, apply its snapshot before
//! serving, then follow its changes until it exits.
use super::state::{Applier, Tally};
use super::wire::{read_frame, write_frame, Frame, Hello, WireError};
use crate::gateway::Gateway;
use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Longest wait for any frame: the old process sends one at least every second.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The running Berth this process takes over from.
pub struct Predecessor {
    reader: BufReader<UnixStream>,
    /// What it said first (its pid and clock).
    pub hello: Hello,
    applier: Applier,
    path: PathBuf,
    /// Set once it said BYE (during the snapshot already, when it was exiting).
    done: bool,
}

impl Predecessor {
    /// Connect to the state socket at `path` and exchange HELLOs.
    pub fn connect(path: &Path) -> Result<Predecessor, WireError> {
        let conn = UnixStream::connect(path)?;
        conn.set_read_timeout(Some(IO_TIMEOUT))?;
        conn.set_write_timeout(Some(IO_TIMEOUT))?;
        let hello = Hello {
            pid: std::process::id(),
            clock_ms: 0,
        };
        let sent = write_frame(&mut &conn, &Frame::Hello(hello));
        let mut reader = BufReader::with_capacity(256 * 1024, conn);
        // A refusal may be there to read even when sending failed.
        let answer = read_frame(&mut reader);
        if answer.is_err() {
            sent?;
        }
        let hello = match answer? {
            Frame::Hello(h) => h,
            Frame::Refused(why) => return Err(WireError::Refused(why)),
            other => {
                return Err(WireError::Invalid {
                    what: "first frame",
                    why: format!("expected HELLO, got {other:?}"),
                })
            }
        };
        Ok(Predecessor {
            reader,
            hello,
            applier: Applier::default(),
            path: path.to_path_buf(),
            done: false,
        })
    }

    /// Read and apply the snapshot (memberships, then pins) up to its END.
    pub fn receive_snapshot(&mut self, gw: &Gateway) -> Result<&Tally, WireError> {
        loop {
            match read_frame(&mut self.reader)? {
                Frame::End { .. } => return Ok(&self.applier.tally),
                Frame::Bye => {
                    self.done = true;
                    return Ok(&self.applier.tally);
                }
                f => self.apply(gw, f, true)?,
            }
        }
    }

    fn apply(&mut self, gw: &Gateway, f: Frame, snapshot: bool) -> Result<(), WireError> {
        let now = gw.clock.now();
        match f {
            Frame::Members(m) => self.applier.members(gw, m, snapshot, now),
            Frame::Pins(p) => self.applier.pins(gw, &p, now),
            Frame::Removed(r) => self.applier.removed(gw, &r),
            Frame::Beat | Frame::End { .. } | Frame::Bye => {}
            Frame::Unknown(kind) => log::debug!("upgrade: skipped a frame of unknown kind {kind}"),
            Frame::Hello(_) | Frame::Refused(_) => {
                return Err(WireError::Invalid {
                    what: "state stream",
                    why: "HELLO or REFUSED after the start".into(),
                })
            }
        }
        Ok(())
    }

    /// Apply the old process's changes until it says BYE (it is exiting), goes away or stays
    /// silent too long. Blocks: run it on its own thread.
    pub fn follow(mut self, gw: &Gateway) {
        let before = self.applier.tally.clone();
        let started = Instant::now();
        let end = loop {
            if self.done {
                break Ok(());
            }
            match read_frame(&mut self.reader) {
                Ok(Frame::Bye) => break Ok(()),
                Ok(f) => {
                    if let Err(e) = self.apply(gw, f, false) {
                        break Err(e);
                    }
                }
                Err(e) => break Err(e),
            }
        };
        let t = &self.applier.tally;
        let summary = format!(
            "{} sessions changed, {} removed, {} dropped, {} ring picks not applied over a \
             pin of this process, over {:?}",
            t.sessions - before.sessions,
            t.removed - before.removed,
            t.dropped_total() - before.dropped_total(),
            t.kept - before.kept,
            started.elapsed()
        );
        match end {
            Ok(()) => log::info!(
                "upgrade: pid {} has finished; followed its last changes: {summary}",
                self.hello.pid
            ),
            Err(e) => log::warn!(
                "upgrade: stopped following pid {} on {}: {e} ({summary})",
                self.hello.pid,
                self.path.display()
            ),
        }
    }
}
