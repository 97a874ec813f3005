//! Diverting the datagrams for some registries to a stream transport (the TLS transport of
//! issue 14), and watching whether those registries answer over UDP.
//!
//! The data plane's one socket stays the only door: [`super::udp::Udp::send`] hands datagrams
//! for a diverted registry to the transport instead of the network, and
//! [`super::udp::Udp::recv`] returns the datagrams the transport received as if they had
//! arrived over UDP from that registry. So the node core, the WireGuard core and the relay path
//! do not know which transport carries them.
//!
//! The two directions are Unix datagram socket pairs (bounded by the kernel, no lock, and
//! pollable next to the UDP socket). Each message is the registry's address (16 bytes of IPv6,
//! IPv4 mapped, and a 2-byte port) followed by the datagram. When the transport's queue is
//! full, datagrams are dropped and counted, as a full UDP send buffer would drop them.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use quinn_udp::RecvMeta;

use super::core::normalize;
use crate::wire::{relay, CONTROL_MAGIC};

/// Bytes of the address before each datagram on the socket pairs.
pub const ADDR_LEN: usize = 18;
/// Socket buffer of each direction: room for bursts of relayed datagrams.
const PAIR_BUFFER: usize = 4 << 20;

/// A registry watched for answers over UDP.
#[derive(Debug)]
struct Watch {
    addr: SocketAddr,
    /// When a datagram from it last arrived over UDP (ms since `origin` + 1; 0: never).
    heard: AtomicU64,
    /// When a request to it went out over UDP with no datagram from it since (0: none).
    unanswered: AtomicU64,
}

/// What the data plane knows about a registry's UDP path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpHealth {
    /// When a datagram from it last arrived over UDP.
    pub last_heard: Option<Instant>,
    /// Since when a request to it has gone unanswered over UDP.
    pub unanswered_since: Option<Instant>,
}

/// The transport's ends of the socket pairs.
#[derive(Debug)]
pub struct DivertPort {
    /// Datagrams the data plane sends to diverted registries (address + datagram).
    pub from_plane: UnixDatagram,
    /// Datagrams received from registries, for the data plane (address + datagram).
    pub to_plane: UnixDatagram,
}

/// The data plane's side: which registries are diverted, which are watched.
#[derive(Debug)]
pub struct Diversion {
    origin: Instant,
    any: AtomicBool,
    diverted: ArcSwap<Vec<SocketAddr>>,
    watched: ArcSwap<Vec<Arc<Watch>>>,
    out_tx: UnixDatagram,
    in_rx: UnixDatagram,
    port: Mutex<Option<DivertPort>>,
    dropped: AtomicU64,
}

fn pair() -> io::Result<(UnixDatagram, UnixDatagram)> {
    let (a, b) = UnixDatagram::pair()?;
    for s in [&a, &b] {
        s.set_nonblocking(true)?;
        let s2 = socket2::SockRef::from(s);
        let _ = s2.set_send_buffer_size(PAIR_BUFFER);
        let _ = s2.set_recv_buffer_size(PAIR_BUFFER);
    }
    Ok((a, b))
}

/// Writes `addr` in the first [`ADDR_LEN`] bytes of `buf`.
pub fn put_addr(buf: &mut [u8], addr: SocketAddr) {
    let ip = match addr.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    buf[..16].copy_from_slice(&ip.octets());
    buf[16..ADDR_LEN].copy_from_slice(&addr.port().to_be_bytes());
}

/// The address in the first [`ADDR_LEN`] bytes of `msg` (IPv4 unmapped).
pub fn get_addr(msg: &[u8]) -> Option<SocketAddr> {
    let ip: [u8; 16] = msg.get(..16)?.try_into().ok()?;
    let port = u16::from_be_bytes([*msg.get(16)?, *msg.get(17)?]);
    Some(normalize(SocketAddr::new(
        IpAddr::V6(Ipv6Addr::from(ip)),
        port,
    )))
}

impl Diversion {
    /// A diversion with nothing diverted or watched.
    pub fn new() -> io::Result<Diversion> {
        let (out_tx, from_plane) = pair()?;
        let (to_plane, in_rx) = pair()?;
        Ok(Diversion {
            origin: Instant::now(),
            any: AtomicBool::new(false),
            diverted: ArcSwap::from_pointee(Vec::new()),
            watched: ArcSwap::from_pointee(Vec::new()),
            out_tx,
            in_rx,
            port: Mutex::new(Some(DivertPort {
                from_plane,
                to_plane,
            })),
            dropped: AtomicU64::new(0),
        })
    }

    /// The transport's ends; `None` after the first call.
    pub fn take_port(&self) -> Option<DivertPort> {
        self.port.lock().take()
    }

    /// Datagrams for these registries go to the transport from now on (and no others).
    pub fn set_diverted(&self, registries: Vec<SocketAddr>) {
        let v: Vec<_> = registries.into_iter().map(normalize).collect();
        self.any.store(!v.is_empty(), Ordering::Release);
        self.diverted.store(Arc::new(v));
    }

    /// Whether datagrams to `dst` go to the transport.
    pub fn is_diverted(&self, dst: SocketAddr) -> bool {
        self.any.load(Ordering::Acquire) && self.diverted.load().contains(&normalize(dst))
    }

    /// Watches these registries' answers over UDP (see [`Diversion::health`]).
    pub fn watch(&self, registries: Vec<SocketAddr>) {
        let v = registries
            .into_iter()
            .map(|a| {
                Arc::new(Watch {
                    addr: normalize(a),
                    heard: AtomicU64::new(0),
                    unanswered: AtomicU64::new(0),
                })
            })
            .collect();
        self.watched.store(Arc::new(v));
    }

    /// What the data plane saw of `registry` over UDP.
    pub fn health(&self, registry: SocketAddr) -> UdpHealth {
        let at = |ms: u64| (ms > 0).then(|| self.origin + std::time::Duration::from_millis(ms - 1));
        let w = self.watched.load();
        match w.iter().find(|w| w.addr == normalize(registry)) {
            Some(w) => UdpHealth {
                last_heard: at(w.heard.load(Ordering::Relaxed)),
                unanswered_since: at(w.unanswered.load(Ordering::Relaxed)),
            },
            None => UdpHealth {
                last_heard: None,
                unanswered_since: None,
            },
        }
    }

    /// Forgets an unanswered request to `registry` (after a change of transport).
    pub fn reset_unanswered(&self, registry: SocketAddr) {
        if let Some(w) = self
            .watched
            .load()
            .iter()
            .find(|w| w.addr == normalize(registry))
        {
            w.unanswered.store(0, Ordering::Relaxed);
        }
    }

    /// Datagrams dropped because the transport's queue was full or gone.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64 + 1
    }

    /// Notes a datagram sent over UDP: a registry request starts the unanswered clock.
    pub(crate) fn note_sent(&self, dst: SocketAddr, contents: &[u8]) {
        if contents.first() != Some(&CONTROL_MAGIC) || relay::is_relay(contents) {
            return;
        }
        let w = self.watched.load();
        if w.is_empty() {
            return;
        }
        if let Some(w) = w.iter().find(|w| w.addr == normalize(dst)) {
            let _ = w.unanswered.compare_exchange(
                0,
                self.now_ms(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// Notes datagrams received over UDP: one from a watched registry answers it.
    pub(crate) fn note_received(&self, meta: &[RecvMeta], bufs: &[IoSliceMut<'_>]) {
        let w = self.watched.load();
        if w.is_empty() {
            return;
        }
        for (m, b) in meta.iter().zip(bufs) {
            if m.len == 0 || b[0] != CONTROL_MAGIC {
                continue;
            }
            if let Some(w) = w.iter().find(|w| w.addr == normalize(m.addr)) {
                w.heard.store(self.now_ms(), Ordering::Relaxed);
                w.unanswered.store(0, Ordering::Relaxed);
            }
        }
    }

    /// Hands `contents` (one datagram, or equal segments of `segment_size`) for `dst` to the
    /// transport.
    pub(crate) fn send(&self, dst: SocketAddr, contents: &[u8], segment_size: Option<usize>) {
        let mut msg = [0u8; ADDR_LEN + crate::wire::stream::MAX_FRAME];
        put_addr(&mut msg, dst);
        let seg = segment_size.unwrap_or(contents.len()).max(1);
        for d in contents.chunks(seg) {
            let Some(room) = msg.get_mut(ADDR_LEN..ADDR_LEN + d.len()) else {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            room.copy_from_slice(d);
            if self.out_tx.send(&msg[..ADDR_LEN + d.len()]).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Moves datagrams the transport received into `bufs`/`meta` (at most `max`), as if they
    /// had come over UDP; how many.
    pub(crate) fn recv(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta]) -> usize {
        let mut k = 0;
        for (b, m) in bufs.iter_mut().zip(meta.iter_mut()) {
            let n = match self.in_rx.recv(b) {
                Ok(n) => n,
                Err(_) => break,
            };
            let Some(addr) = get_addr(&b[..n]).filter(|_| n > ADDR_LEN) else {
                continue;
            };
            b.copy_within(ADDR_LEN..n, 0);
            *m = RecvMeta::default();
            m.addr = addr;
            m.len = n - ADDR_LEN;
            m.stride = m.len;
            k += 1;
        }
        k
    }

    /// The descriptor to poll for datagrams from the transport.
    pub(crate) fn fd(&self) -> RawFd {
        self.in_rx.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_with_ipv4_unmapped() {
        let mut b = [0u8; ADDR_LEN];
        for a in ["198.51.100.1:443", "[2001:db8::1]:7000"] {
            let a: SocketAddr = a.parse().unwrap();
            put_addr(&mut b, a);
            assert_eq!(get_addr(&b), Some(a));
        }
    }

    #[test]
    fn diverted_datagrams_reach_the_port_split_into_segments_and_come_back() {
        let d = Diversion::new().unwrap();
        let reg: SocketAddr = "198.51.100.1:7000".parse().unwrap();
        assert!(!d.is_diverted(reg));
        d.set_diverted(vec![reg]);
        assert!(d.is_diverted("[::ffff:198.51.100.1]:7000".parse().unwrap()));
        let port = d.take_port().unwrap();
        d.send(reg, &[1u8; 300], Some(100));
        let mut buf = [0u8; 4096];
        for _ in 0..3 {
            let n = port.from_plane.recv(&mut buf).unwrap();
            assert_eq!(n, ADDR_LEN + 100);
            assert_eq!(get_addr(&buf), Some(reg));
        }
        let mut msg = vec![0u8; ADDR_LEN];
        put_addr(&mut msg, reg);
        msg.extend_from_slice(b"\x50hello");
        port.to_plane.send(&msg).unwrap();
        let mut a = vec![0u8; 2048];
        let mut bufs = [IoSliceMut::new(&mut a)];
        let mut meta = [RecvMeta::default()];
        assert_eq!(d.recv(&mut bufs, &mut meta), 1);
        assert_eq!((meta[0].addr, meta[0].len), (reg, 6));
        assert_eq!(&bufs[0][..6], b"\x50hello");
    }

    #[test]
    fn a_registry_request_without_an_answer_starts_the_unanswered_clock() {
        let d = Diversion::new().unwrap();
        let reg: SocketAddr = "198.51.100.1:7000".parse().unwrap();
        d.watch(vec![reg]);
        d.note_sent(reg, &[CONTROL_MAGIC, 1, 2]);
        let h = d.health(reg);
        assert!(h.unanswered_since.is_some() && h.last_heard.is_none());
        d.note_sent(
            reg,
            &relay::frame(
                relay::RELAY_SEND,
                crate::mapping::Addr48::from_bytes([1; 6]),
                b"x",
            ),
        );
        let mut a = vec![CONTROL_MAGIC; 10];
        let bufs = [IoSliceMut::new(&mut a)];
        let mut m = RecvMeta::default();
        m.addr = reg;
        m.len = 10;
        d.note_received(&[m], &bufs);
        let h = d.health(reg);
        assert!(h.unanswered_since.is_none() && h.last_heard.is_some());
    }
}
