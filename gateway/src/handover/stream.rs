//! Old process: serve a successor on the state socket — a snapshot, then every change, until
//! this process exits (its last changes and a BYE are sent on the way out).
use super::state::{members_of, members_signature, Packer};
use super::wire::{read_frame, write_frame, Frame, Hello, WireError};
use crate::gateway::Gateway;
use parking_lot::{Condvar, Mutex};
use std::io::{self, BufWriter, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often membership changes are looked for (pin changes ring a bell and leave at once).
const TICK: Duration = Duration::from_millis(20);
/// Something is sent at least this often, so a successor notices a hung old process.
const BEAT: Duration = Duration::from_secs(1);
/// How long a successor may take to say hello, and a write may block.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The exit of this process, as the successor stream sees it.
#[derive(Default)]
pub struct Exit {
    state: Mutex<ExitState>,
    cv: Condvar,
}

#[derive(Default)]
struct ExitState {
    requested: bool,
    streaming: bool,
    /// An overlay journal has changes.
    rung: bool,
}

impl Exit {
    /// The server has stopped: a successor being served gets the last changes and a BYE.
    /// Waits up to `timeout` for that; false when it did not happen in time.
    pub fn finish(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = self.state.lock();
        s.requested = true;
        self.cv.notify_all();
        while s.streaming {
            if self.cv.wait_until(&mut s, deadline).timed_out() {
                return !s.streaming;
            }
        }
        true
    }

    /// Sleeps up to `d` or until a journal rings; true once the exit was requested.
    fn wait(&self, d: Duration) -> bool {
        let mut s = self.state.lock();
        if !s.requested && !s.rung {
            self.cv.wait_for(&mut s, d);
        }
        s.rung = false;
        s.requested
    }

    /// A journal has changes (called under an overlay shard lock: quick).
    fn ring(&self) {
        let mut s = self.state.lock();
        if !s.rung {
            s.rung = true;
            self.cv.notify_all();
        }
    }

    fn set_streaming(&self, on: bool) {
        self.state.lock().streaming = on;
        self.cv.notify_all();
    }
}

/// Accept successors for the life of the process (one at a time).
pub(super) fn accept_loop(listener: UnixListener, gw: Arc<Gateway>, exit: Arc<Exit>) {
    let busy = Arc::new(AtomicBool::new(false));
    for conn in listener.incoming() {
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                log::warn!("state socket: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if busy.swap(true, Ordering::AcqRel) {
            let why = "another new process is already taking over from this Berth";
            let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
            let _ = conn.set_write_timeout(Some(Duration::from_secs(1)));
            // Read its HELLO first: closing with unread bytes would reset the connection
            // before it reads why.
            let _ = read_frame(&mut &conn);
            let _ = write_frame(&mut &conn, &Frame::Refused(why.into()));
            continue;
        }
        let (gw, exit, busy) = (gw.clone(), exit.clone(), busy.clone());
        let spawned = std::thread::Builder::new()
            .name("berth-handover".into())
            .spawn(move || {
                match stream_to(&conn, &gw, &exit) {
                    Ok(s) => log::info!(
                        "upgrade: the new process (pid {} when it connected) followed to the \
                         end ({} changes, {} membership updates after the snapshot)",
                        s.pid,
                        s.changes,
                        s.member_updates
                    ),
                    Err(e) => log::warn!("upgrade: stopped streaming state to the successor: {e}"),
                }
                busy.store(false, Ordering::Release);
            });
        if let Err(e) = spawned {
            log::error!("state socket: cannot start a hand-over thread: {e}");
        }
    }
}

/// What one successor was sent after its snapshot.
struct Streamed {
    pid: u32,
    changes: u64,
    member_updates: u64,
}

/// Stops the overlays' journals and marks the stream done, however it ends.
struct Streaming<'a> {
    gw: &'a Gateway,
    exit: &'a Exit,
}

impl<'a> Streaming<'a> {
    fn start(gw: &'a Gateway, exit: &'a Arc<Exit>) -> Streaming<'a> {
        exit.set_streaming(true);
        for up in &gw.upstreams {
            let bell = exit.clone();
            up.overlay
                .journal_start(Some(Arc::new(move || bell.ring())));
        }
        Streaming { gw, exit }
    }
}

impl Drop for Streaming<'_> {
    fn drop(&mut self) {
        for up in &self.gw.upstreams {
            up.overlay.journal_stop();
        }
        self.exit.set_streaming(false);
    }
}

fn stream_to(conn: &UnixStream, gw: &Gateway, exit: &Arc<Exit>) -> Result<Streamed, WireError> {
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    let pid = match read_frame(&mut &*conn)? {
        Frame::Hello(h) => h.pid,
        other => {
            return Err(WireError::Invalid {
                what: "first frame",
                why: format!("expected HELLO, got {other:?}"),
            })
        }
    };
    let mut w = BufWriter::with_capacity(256 * 1024, conn);
    let hello = Hello {
        pid: std::process::id(),
        clock_ms: gw.clock.now(),
    };
    write_frame(&mut w, &Frame::Hello(hello))?;
    // The journals start before the export, so what changes during it is sent again after.
    let _streaming = Streaming::start(gw, exit);
    let started = Instant::now();
    let pins = snapshot(gw, &mut w)?;
    log::info!(
        "upgrade: sent {pins} sessions and the membership of {} upstream(s) to the new process \
         (pid {pid} when it connected) in {:?}",
        gw.upstreams.len(),
        started.elapsed()
    );
    let mut s = Streamed {
        pid,
        changes: 0,
        member_updates: 0,
    };
    follow(gw, exit, &mut w, &mut s)?;
    Ok(s)
}

/// Every upstream's membership and pins, then END. Returns the number of pins.
fn snapshot(gw: &Gateway, w: &mut impl Write) -> Result<u64, WireError> {
    let now = gw.clock.now();
    let mut pins = 0u64;
    let mut err: Option<io::Error> = None;
    let mut records = Vec::new();
    for up in &gw.upstreams {
        write_frame(w, &Frame::Members(members_of(up, now)))?;
        let mut packer = Packer::new(up);
        let mut emit = |f: Frame| {
            if err.is_none() {
                err = write_frame(w, &f).err();
            }
        };
        for shard in 0..up.overlay.shards() {
            records.clear();
            up.overlay.export_shard(shard, now, &mut records);
            pins += records.len() as u64;
            for r in &records {
                packer.pin(r, &mut emit);
            }
        }
        packer.finish(&mut emit);
        if let Some(e) = err.take() {
            return Err(e.into());
        }
    }
    write_frame(w, &Frame::End { pins })?;
    w.flush()?;
    Ok(pins)
}

/// Changes (journals, membership) every tick until the process exits, then BYE.
fn follow(
    gw: &Gateway,
    exit: &Exit,
    w: &mut impl Write,
    s: &mut Streamed,
) -> Result<(), WireError> {
    let mut signatures: Vec<_> = gw.upstreams.iter().map(|u| members_signature(u)).collect();
    let mut changes = Vec::new();
    let mut last_write = Instant::now();
    loop {
        let last = exit.wait(TICK);
        let now = gw.clock.now();
        let mut wrote = false;
        let mut err: Option<io::Error> = None;
        for (up, sig) in gw.upstreams.iter().zip(signatures.iter_mut()) {
            let current = members_signature(up);
            if current != *sig {
                write_frame(w, &Frame::Members(members_of(up, now)))?;
                *sig = current;
                s.member_updates += 1;
                wrote = true;
            }
            changes.clear();
            let taken = up.overlay.journal_take(now, &mut changes);
            if taken.overflowed_shards > 0 {
                log::warn!(
                    "upgrade: {} change journal(s) of {} overflowed; resending those shards",
                    taken.overflowed_shards,
                    up.name
                );
            }
            if changes.is_empty() {
                continue;
            }
            s.changes += changes.len() as u64;
            let mut packer = Packer::new(up);
            let mut emit = |f: Frame| {
                if err.is_none() {
                    err = write_frame(w, &f).err();
                }
            };
            for c in &changes {
                packer.change(c, &mut emit);
            }
            packer.finish(&mut emit);
            wrote = true;
        }
        if let Some(e) = err {
            return Err(e.into());
        }
        if last {
            write_frame(w, &Frame::Bye)?;
            w.flush()?;
            return Ok(());
        }
        if !wrote && last_write.elapsed() >= BEAT {
            write_frame(w, &Frame::Beat)?;
            wrote = true;
        }
        if wrote {
            w.flush()?;
            last_write = Instant::now();
        }
    }
}
