//! The byte codec of the hand-over frames: fixed-width little-endian integers and
//! length-prefixed strings written to a buffer ([`Out`]) and read back with bounds checks
//! ([`In`]).
use super::WireError;
use crate::config::BackendConf;
use std::net::SocketAddr;

pub(super) struct Out(pub(super) Vec<u8>);

impl Out {
    pub(super) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(super) fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub(super) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub(super) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub(super) fn u128(&mut self, v: u128) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    /// Strings longer than u16::MAX bytes are cut (ids and names are short by validation).
    pub(super) fn str(&mut self, s: &str) {
        let mut end = s.len().min(usize::from(u16::MAX));
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.u16(end as u16);
        self.0.extend_from_slice(&s.as_bytes()[..end]);
    }
    pub(super) fn count16(&mut self, n: usize) {
        self.u16(u16::try_from(n).unwrap_or(u16::MAX));
    }
    /// A length-prefixed entry.
    pub(super) fn entry(&mut self, f: impl FnOnce(&mut Out)) {
        let at = self.0.len();
        self.u16(0);
        f(self);
        let len = u16::try_from(self.0.len() - at - 2).unwrap_or(u16::MAX);
        self.0[at..at + 2].copy_from_slice(&len.to_be_bytes());
    }
    pub(super) fn backend(&mut self, b: &BackendConf) {
        self.str(&b.id);
        self.str(&b.addr.to_string());
        self.u32(b.weight);
        self.u8(u8::from(b.drain));
        self.u32(b.max_sessions.unwrap_or(0));
    }
}

/// A cursor over one frame's bytes.
pub(super) struct In<'a> {
    pub(super) data: &'a [u8],
    pub(super) what: &'static str,
}

impl<'a> In<'a> {
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.data.len() < n {
            return Err(WireError::Truncated {
                what: self.what,
                need: n,
                left: self.data.len(),
            });
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }
    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    pub(super) fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    pub(super) fn u16(&mut self) -> Result<u16, WireError> {
        self.array().map(u16::from_be_bytes)
    }
    pub(super) fn u32(&mut self) -> Result<u32, WireError> {
        self.array().map(u32::from_be_bytes)
    }
    pub(super) fn u64(&mut self) -> Result<u64, WireError> {
        self.array().map(u64::from_be_bytes)
    }
    pub(super) fn u128(&mut self) -> Result<u128, WireError> {
        self.array().map(u128::from_be_bytes)
    }
    pub(super) fn str(&mut self) -> Result<String, WireError> {
        let n = usize::from(self.u16()?);
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.invalid("a string is not UTF-8"))
    }
    pub(super) fn invalid(&self, why: impl Into<String>) -> WireError {
        WireError::Invalid {
            what: self.what,
            why: why.into(),
        }
    }
    /// `n` items of at least `min` bytes each must fit in what is left (so a bad count cannot
    /// make the reader allocate more than the frame holds).
    pub(super) fn check_count(&self, n: usize, min: usize) -> Result<usize, WireError> {
        if n.saturating_mul(min) > self.data.len() {
            return Err(WireError::Truncated {
                what: self.what,
                need: n.saturating_mul(min),
                left: self.data.len(),
            });
        }
        Ok(n)
    }
    pub(super) fn entry(&mut self) -> Result<In<'a>, WireError> {
        let n = usize::from(self.u16()?);
        Ok(In {
            data: self.take(n)?,
            what: self.what,
        })
    }
    pub(super) fn backend(&mut self) -> Result<BackendConf, WireError> {
        let id = self.str()?;
        let addr = self.str()?;
        let addr: SocketAddr = addr
            .parse()
            .map_err(|_| self.invalid(format!("backend {id:?}: {addr:?} is not ip:port")))?;
        let weight = self.u32()?;
        let drain = self.u8()? != 0;
        let max_sessions = Some(self.u32()?).filter(|&m| m > 0);
        Ok(BackendConf {
            id,
            addr,
            weight,
            max_sessions,
            drain,
            // Not handed over: the upstream's default applies (`Table::new`), and backends of
            // the new process's file get theirs from it.
            max_connections: None,
        })
    }
}
