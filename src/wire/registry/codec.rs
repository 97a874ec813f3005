//! The field encoders and the bounds-checked reader both message kinds use.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{WireError, MAX_CANDIDATES, MAX_DATAGRAM};
use crate::identity::PublicKey;
use crate::mapping::Hostname;

pub(super) fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

pub(super) fn put_hostname(w: &mut Vec<u8>, h: Option<&Hostname>) {
    match h {
        None => w.push(0),
        Some(h) => {
            // Hostnames are validated to 1..=63 bytes, so the length fits in a byte.
            w.push(h.as_str().len() as u8);
            w.extend_from_slice(h.as_str().as_bytes());
        }
    }
}

pub(super) fn put_text(w: &mut Vec<u8>, s: &str, max: usize) -> Result<(), WireError> {
    if s.len() > max {
        return Err(WireError::Invalid("text too long"));
    }
    w.extend_from_slice(&(s.len() as u16).to_be_bytes());
    w.extend_from_slice(s.as_bytes());
    Ok(())
}

pub(super) fn put_blob(w: &mut Vec<u8>, b: &[u8]) -> Result<(), WireError> {
    if b.len() > MAX_DATAGRAM {
        return Err(WireError::TooLarge);
    }
    w.extend_from_slice(&(b.len() as u16).to_be_bytes());
    w.extend_from_slice(b);
    Ok(())
}

pub(super) fn put_addr(w: &mut Vec<u8>, a: &SocketAddr) {
    match a.ip() {
        IpAddr::V4(ip) => {
            w.push(4);
            w.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            w.push(6);
            w.extend_from_slice(&ip.octets());
        }
    }
    w.extend_from_slice(&a.port().to_be_bytes());
}

pub(super) fn put_addrs(w: &mut Vec<u8>, addrs: &[SocketAddr]) -> Result<(), WireError> {
    if addrs.len() > MAX_CANDIDATES {
        return Err(WireError::Invalid("too many candidates"));
    }
    w.push(addrs.len() as u8);
    for a in addrs {
        put_addr(w, a);
    }
    Ok(())
}

/// A bounds-checked cursor: every read returns `Truncated` instead of panicking.
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(WireError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(WireError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    pub(super) fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    pub(super) fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(super) fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub(super) fn key(&mut self) -> Result<PublicKey, WireError> {
        PublicKey::from_bytes(self.array()?).map_err(|_| WireError::Invalid("public key"))
    }

    pub(super) fn hostname(&mut self) -> Result<Option<Hostname>, WireError> {
        let n = self.u8()? as usize;
        if n == 0 {
            return Ok(None);
        }
        let s = std::str::from_utf8(self.take(n)?).map_err(|_| WireError::Invalid("hostname"))?;
        Hostname::new(s)
            .map(Some)
            .map_err(|_| WireError::Invalid("hostname"))
    }

    pub(super) fn text(&mut self, max: usize) -> Result<String, WireError> {
        let n = self.u16()? as usize;
        if n > max {
            return Err(WireError::Invalid("text too long"));
        }
        let s = std::str::from_utf8(self.take(n)?).map_err(|_| WireError::Invalid("utf-8"))?;
        Ok(s.to_string())
    }

    pub(super) fn blob(&mut self) -> Result<Vec<u8>, WireError> {
        let n = self.u16()? as usize;
        Ok(self.take(n)?.to_vec())
    }

    pub(super) fn addr(&mut self) -> Result<SocketAddr, WireError> {
        let ip = match self.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
            _ => return Err(WireError::Invalid("address family")),
        };
        Ok(SocketAddr::new(ip, self.u16()?))
    }

    pub(super) fn addrs(&mut self) -> Result<Vec<SocketAddr>, WireError> {
        let n = self.u8()? as usize;
        if n > MAX_CANDIDATES {
            return Err(WireError::Invalid("too many candidates"));
        }
        (0..n).map(|_| self.addr()).collect()
    }

    /// An optional trailing address: `None` when every byte has been read.
    pub(super) fn optional_addr(&mut self) -> Result<Option<SocketAddr>, WireError> {
        if self.is_empty() {
            return Ok(None);
        }
        self.addr().map(Some)
    }

    /// Whether every byte has been read (an optional trailing field is absent).
    pub(super) fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }

    pub(super) fn finish(&self) -> Result<(), WireError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(WireError::TrailingBytes)
        }
    }
}
