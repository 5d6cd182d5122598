//! The state socket's wire format: length-prefixed, versioned binary frames.
//!
//! ```text
//! frame   = len:u32 (big endian, of kind + payload; 1..=MAX_FRAME) kind:u8 payload
//! str     = len:u16 utf-8 bytes          entry = len:u16 fields (unknown trailing fields skipped)
//! HELLO    1  magic "BERTHSTA" version:u16 pid:u32 clock_ms:u64
//! MEMBERS  2  upstream:str n:u16 entry(backend)*n  n:u16 entry(backend state:u8 remaining_ms:u64 up:u8)*n
//!             n:u16 entry(backend:str remaining:u64 rate:u32)*n  n:u32 (key:u128 backend:str)*n
//!             backend = id:str addr:str weight:u32 drain:u8 max_sessions:u32 (0 = no cap);
//!             state 0 active 1 draining 2 drained;
//!             remaining_ms u64::MAX = no deadline
//! PINS     3  upstream:str n:u16 name:str*n record_size:u16 n:u32 record*n
//!             record = key:u128 backend:u16 backup:u16 (0xffff none) age_s:u32 idle_s:u32
//!                      flags:u8 (bit 0: placed by a missed lookup, not pinned explicitly) [more]
//! REMOVED  4  upstream:str n:u32 key:u128*n
//! END      5  pins:u64                     (end of the snapshot; changes follow)
//! BEAT     6  (nothing)                    (keep-alive: the old process is still there)
//! BYE      7  (nothing)                    (the old process is exiting: nothing follows)
//! REFUSED  8  reason:str
//! ```
//! Integers are big endian, keys included. A reader skips frame kinds it does not know and
//! bytes after the fields it knows (in frames, entries and records), so a newer sender with
//! the same [`VERSION`] can add both; a different version is refused whole. Counts are checked
//! against the bytes left before anything is allocated.
use crate::config::BackendConf;
use std::io::{self, Read, Write};

/// Identifies a Berth state socket.
pub const MAGIC: [u8; 8] = *b"BERTHSTA";
/// Protocol version; a peer speaking another one is refused.
pub const VERSION: u16 = 1;
/// Largest frame (kind + payload), bytes.
pub const MAX_FRAME: usize = 8 << 20;
/// Bytes of one pin record as this version writes it.
pub const RECORD_SIZE: u16 = 16 + 2 + 2 + 4 + 4 + 1;
/// Most records in one PINS frame (keeps frames under [`MAX_FRAME`]).
pub const MAX_RECORDS: usize = 1 << 16;
/// `backup` value of a record without backup.
const NO_BACKUP: u16 = u16::MAX;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the peer closed the connection")]
    Closed,
    #[error("not a Berth state socket (magic {0:02x?})")]
    Magic([u8; 8]),
    #[error("the peer speaks hand-over protocol v{theirs}, this Berth v{VERSION}")]
    Version { theirs: u16 },
    #[error("frame of {0} bytes is outside 1..={MAX_FRAME}")]
    Size(usize),
    #[error("{what}: truncated ({need} bytes needed, {left} left)")]
    Truncated {
        what: &'static str,
        need: usize,
        left: usize,
    },
    #[error("{what}: {why}")]
    Invalid { what: &'static str, why: String },
    #[error("the running Berth refused the hand-over: {0}")]
    Refused(String),
}

/// First frame each side sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub pid: u32,
    /// The sender's gateway clock ([`crate::upstreams::Clock`]), ms.
    pub clock_ms: u64,
}

/// Admin state of a handed-over backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireState {
    Active,
    Draining { remaining_ms: Option<u64> },
    Drained,
}

/// A backend of the old process's live list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveBackend {
    pub conf: BackendConf,
    pub state: WireState,
    pub up: bool,
}

/// A migration in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireMigration {
    pub backend: String,
    pub remaining: u64,
    pub rate: u32,
}

/// One upstream's membership: the file it last applied, its live list, migrations.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Members {
    pub upstream: String,
    pub file: Vec<BackendConf>,
    pub live: Vec<LiveBackend>,
    pub migrations: Vec<WireMigration>,
    /// Migrated sessions whose next request must say so: key → previous backend.
    pub moved: Vec<(u128, String)>,
}

/// One pin; backends are indexes into the frame's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub key: u128,
    pub backend: u16,
    pub backup: Option<u16>,
    pub age_s: u32,
    pub idle_s: u32,
    /// Placed by a lookup that missed (a ring pick), not pinned explicitly.
    pub placed: bool,
}

/// Pins of one upstream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pins {
    pub upstream: String,
    pub names: Vec<String>,
    pub records: Vec<Record>,
}

/// Keys no longer pinned in one upstream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Removed {
    pub upstream: String,
    pub keys: Vec<u128>,
}

/// A frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Hello(Hello),
    Members(Members),
    Pins(Pins),
    Removed(Removed),
    End {
        pins: u64,
    },
    Beat,
    Bye,
    Refused(String),
    /// A kind this version does not know (skipped).
    Unknown(u8),
}

const HELLO: u8 = 1;
const MEMBERS: u8 = 2;
const PINS: u8 = 3;
const REMOVED: u8 = 4;
const END: u8 = 5;
const BEAT: u8 = 6;
const BYE: u8 = 7;
const REFUSED: u8 = 8;

/// Write one frame.
pub fn write_frame(w: &mut impl Write, f: &Frame) -> io::Result<()> {
    let mut out = Out(Vec::with_capacity(64));
    out.0.extend_from_slice(&[0; 4]);
    f.encode(&mut out);
    let len = out.0.len() - 4;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {len} bytes exceeds {MAX_FRAME}"),
        ));
    }
    out.0[..4].copy_from_slice(&(len as u32).to_be_bytes());
    w.write_all(&out.0)
}

/// Read one frame. [`WireError::Closed`] when the stream ends between frames.
pub fn read_frame(r: &mut impl Read) -> Result<Frame, WireError> {
    let mut len = [0u8; 4];
    if let Err(e) = r.read_exact(&mut len) {
        return Err(match e.kind() {
            io::ErrorKind::UnexpectedEof => WireError::Closed,
            _ => WireError::Io(e),
        });
    }
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(WireError::Size(len));
    }
    let mut data = vec![0u8; len];
    r.read_exact(&mut data)?;
    Frame::decode(&data)
}

mod codec;
use codec::{In, Out};

impl Frame {
    fn encode(&self, o: &mut Out) {
        match self {
            Frame::Hello(h) => {
                o.u8(HELLO);
                o.0.extend_from_slice(&MAGIC);
                o.u16(VERSION);
                o.u32(h.pid);
                o.u64(h.clock_ms);
            }
            Frame::Members(m) => encode_members(m, o),
            Frame::Pins(p) => {
                o.u8(PINS);
                o.str(&p.upstream);
                o.count16(p.names.len());
                p.names.iter().for_each(|n| o.str(n));
                o.u16(RECORD_SIZE);
                o.u32(p.records.len() as u32);
                for r in &p.records {
                    o.u128(r.key);
                    o.u16(r.backend);
                    o.u16(r.backup.unwrap_or(NO_BACKUP));
                    o.u32(r.age_s);
                    o.u32(r.idle_s);
                    o.u8(u8::from(r.placed));
                }
            }
            Frame::Removed(r) => {
                o.u8(REMOVED);
                o.str(&r.upstream);
                o.u32(r.keys.len() as u32);
                r.keys.iter().for_each(|k| o.u128(*k));
            }
            Frame::End { pins } => {
                o.u8(END);
                o.u64(*pins);
            }
            Frame::Beat => o.u8(BEAT),
            Frame::Bye => o.u8(BYE),
            Frame::Refused(why) => {
                o.u8(REFUSED);
                o.str(why);
            }
            Frame::Unknown(kind) => o.u8(*kind),
        }
    }

    fn decode(data: &[u8]) -> Result<Frame, WireError> {
        let (kind, rest) = (data[0], &data[1..]);
        let what = match kind {
            HELLO => "HELLO frame",
            MEMBERS => "MEMBERS frame",
            PINS => "PINS frame",
            REMOVED => "REMOVED frame",
            END => "END frame",
            REFUSED => "REFUSED frame",
            _ => "frame",
        };
        let mut i = In { data: rest, what };
        let frame = match kind {
            HELLO => {
                let magic = i.array::<8>()?;
                if magic != MAGIC {
                    return Err(WireError::Magic(magic));
                }
                let version = i.u16()?;
                if version != VERSION {
                    return Err(WireError::Version { theirs: version });
                }
                Frame::Hello(Hello {
                    pid: i.u32()?,
                    clock_ms: i.u64()?,
                })
            }
            MEMBERS => Frame::Members(decode_members(&mut i)?),
            PINS => Frame::Pins(decode_pins(&mut i)?),
            REMOVED => {
                let upstream = i.str()?;
                let n = i.u32()? as usize;
                let n = i.check_count(n, 16)?;
                let keys = (0..n).map(|_| i.u128()).collect::<Result<_, _>>()?;
                Frame::Removed(Removed { upstream, keys })
            }
            END => Frame::End { pins: i.u64()? },
            BEAT => Frame::Beat,
            BYE => Frame::Bye,
            REFUSED => Frame::Refused(i.str()?),
            other => return Ok(Frame::Unknown(other)),
        };
        Ok(frame)
    }
}

fn encode_members(m: &Members, o: &mut Out) {
    o.u8(MEMBERS);
    o.str(&m.upstream);
    o.count16(m.file.len());
    for b in m.file.iter().take(usize::from(u16::MAX)) {
        o.entry(|o| o.backend(b));
    }
    o.count16(m.live.len());
    for b in m.live.iter().take(usize::from(u16::MAX)) {
        o.entry(|o| {
            o.backend(&b.conf);
            let (state, remaining) = match b.state {
                WireState::Active => (0, u64::MAX),
                WireState::Draining { remaining_ms } => (1, remaining_ms.unwrap_or(u64::MAX)),
                WireState::Drained => (2, u64::MAX),
            };
            o.u8(state);
            o.u64(remaining);
            o.u8(u8::from(b.up));
        });
    }
    o.count16(m.migrations.len());
    for g in m.migrations.iter().take(usize::from(u16::MAX)) {
        o.entry(|o| {
            o.str(&g.backend);
            o.u64(g.remaining);
            o.u32(g.rate);
        });
    }
    o.u32(m.moved.len() as u32);
    for (key, from) in &m.moved {
        o.u128(*key);
        o.str(from);
    }
}

fn decode_members(i: &mut In<'_>) -> Result<Members, WireError> {
    let mut m = Members {
        upstream: i.str()?,
        ..Members::default()
    };
    let n = usize::from(i.u16()?);
    for _ in 0..i.check_count(n, 2)? {
        m.file.push(i.entry()?.backend()?);
    }
    let n = usize::from(i.u16()?);
    for _ in 0..i.check_count(n, 2)? {
        let mut e = i.entry()?;
        let conf = e.backend()?;
        let state = e.u8()?;
        let remaining = e.u64()?;
        let state = match state {
            0 => WireState::Active,
            1 => WireState::Draining {
                remaining_ms: (remaining != u64::MAX).then_some(remaining),
            },
            2 => WireState::Drained,
            s => return Err(e.invalid(format!("backend {:?}: unknown state {s}", conf.id))),
        };
        m.live.push(LiveBackend {
            conf,
            state,
            up: e.u8()? != 0,
        });
    }
    let n = usize::from(i.u16()?);
    for _ in 0..i.check_count(n, 2)? {
        let mut e = i.entry()?;
        m.migrations.push(WireMigration {
            backend: e.str()?,
            remaining: e.u64()?,
            rate: e.u32()?,
        });
    }
    let n = i.u32()? as usize;
    for _ in 0..i.check_count(n, 18)? {
        m.moved.push((i.u128()?, i.str()?));
    }
    Ok(m)
}

fn decode_pins(i: &mut In<'_>) -> Result<Pins, WireError> {
    let upstream = i.str()?;
    let n = usize::from(i.u16()?);
    let names = (0..i.check_count(n, 2)?)
        .map(|_| i.str())
        .collect::<Result<Vec<_>, _>>()?;
    let size = usize::from(i.u16()?);
    if size < usize::from(RECORD_SIZE) {
        return Err(i.invalid(format!(
            "records of {size} bytes, at least {RECORD_SIZE} needed"
        )));
    }
    let n = i.u32()? as usize;
    let n = i.check_count(n, size)?;
    let mut records = Vec::with_capacity(n);
    for _ in 0..n {
        let mut r = In {
            data: i.take(size)?,
            what: "PINS record",
        };
        let rec = Record {
            key: r.u128()?,
            backend: r.u16()?,
            backup: Some(r.u16()?).filter(|b| *b != NO_BACKUP),
            age_s: r.u32()?,
            idle_s: r.u32()?,
            placed: r.u8()? & 1 != 0,
        };
        let known = |b: u16| usize::from(b) < names.len();
        if !known(rec.backend) || rec.backup.is_some_and(|b| !known(b)) {
            return Err(i.invalid(format!(
                "a record names backend #{} of {} names",
                rec.backend,
                names.len()
            )));
        }
        records.push(rec);
    }
    Ok(Pins {
        upstream,
        names,
        records,
    })
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
