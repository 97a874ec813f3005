//! The registry socket's batched I/O (quinn-udp, as the data plane's `wg/udp.rs`): one
//! `recvmmsg` takes up to [`BATCH_SIZE`] buffers, each of which may hold many equal-sized
//! datagrams of one sender coalesced by UDP GRO; relayed frames leave in UDP GSO sends of up to
//! 64 equal datagrams to one destination. Buffers are allocated once: the relay path does not
//! allocate per datagram.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};

use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState, BATCH_SIZE};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// One receive buffer: room for a GRO super-datagram (at most 64 KiB).
const SLOT: usize = 1 << 16;
/// Largest UDP payload one GSO send may carry.
const MAX_GSO_BYTES: usize = 65_507;
/// Most segments in one GSO send (the kernel allows 64 by default).
const MAX_GSO_SEGMENTS: usize = 64;
/// Waits for room in the send buffer before a datagram is dropped.
const SEND_TRIES: usize = 3;
/// Largest segment sent with GSO to an IPv6 destination (1500-byte MTU): GSO segments cannot
/// be fragmented, so larger ones leave one by one (and the kernel fragments them, as before).
const MAX_GSO_SEGMENT_V6: usize = 1452;

/// The socket, its quinn-udp state and the buffers of one receive batch.
pub(super) struct BatchSocket {
    socket: UdpSocket,
    state: UdpSocketState,
    rx: Vec<u8>,
    meta: [RecvMeta; BATCH_SIZE],
    v6: bool,
    /// Datagrams dropped because the send buffer stayed full, or the send failed.
    pub(super) send_failed: u64,
}

impl BatchSocket {
    /// Wraps a bound, non-blocking tokio socket (enables GRO where the kernel has it).
    pub(super) fn new(socket: UdpSocket) -> io::Result<Self> {
        let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
        let v6 = socket.local_addr()?.is_ipv6();
        // quinn-udp forbids fragmentation; the relay keeps allowing it (a relayed full-size
        // datagram exceeds a 1500-byte MTU over IPv6, see PROTOCOL.md "Relay (v1)").
        allow_fragments(&socket, v6);
        Ok(BatchSocket {
            socket,
            state,
            rx: vec![0u8; SLOT * BATCH_SIZE],
            meta: [RecvMeta::default(); BATCH_SIZE],
            v6,
            send_failed: 0,
        })
    }

    /// The tokio socket (readiness, single sends).
    pub(super) fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// Receives one batch without waiting; `Err(WouldBlock)` when nothing is queued (and the
    /// socket's readiness is then cleared, so `readable()` waits again).
    pub(super) fn recv(&mut self) -> io::Result<usize> {
        let BatchSocket {
            socket,
            state,
            rx,
            meta,
            ..
        } = self;
        let mut slots = rx.chunks_mut(SLOT).map(IoSliceMut::new);
        let mut iovs: [IoSliceMut<'_>; BATCH_SIZE] =
            std::array::from_fn(|_| slots.next().expect("BATCH_SIZE slots"));
        socket.try_io(Interest::READABLE, || {
            state.recv(UdpSockRef::from(&*socket), &mut iovs, meta)
        })
    }

    /// Buffer `i` of the last batch: its sender, its bytes and the size of each datagram in
    /// it (the last may be shorter).
    pub(super) fn received(&mut self, i: usize) -> (SocketAddr, &mut [u8], usize) {
        let (m, slot) = (&self.meta[i], self.slot(i));
        let stride = if m.stride == 0 { slot.len() } else { m.stride };
        (m.addr, &mut self.rx[slot], stride.max(1))
    }

    /// Bytes `start..end` of buffer `i` of the last batch (one datagram of it).
    pub(super) fn datagram(&self, i: usize, start: usize, end: usize) -> &[u8] {
        &self.rx[self.slot(i)][start..end]
    }

    /// Where in `rx` the bytes buffer `i` of the last batch received are.
    fn slot(&self, i: usize) -> std::ops::Range<usize> {
        let start = i * SLOT;
        start..start + self.meta[i].len.min(SLOT)
    }

    /// Sends `contents` to `dst`, as equal datagrams of `segment_size` bytes (GSO) when given.
    /// Waits for room in the send buffer a few times, then drops and counts.
    pub(super) async fn send(
        &mut self,
        dst: SocketAddr,
        contents: &[u8],
        segment_size: Option<usize>,
    ) {
        let destination = match (self.v6, dst) {
            (true, SocketAddr::V4(v4)) => {
                SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
            }
            _ => dst,
        };
        let segment_size = segment_size.filter(|s| *s < contents.len());
        if let Some(seg) = segment_size.filter(|s| *s > MAX_GSO_SEGMENT_V6 && is_v6(destination)) {
            for d in contents.chunks(seg) {
                self.send_one(destination, d, None).await;
            }
        } else {
            self.send_one(destination, contents, segment_size).await;
        }
    }

    /// One send system call (one datagram, or equal segments with GSO).
    async fn send_one(
        &mut self,
        destination: SocketAddr,
        contents: &[u8],
        segment_size: Option<usize>,
    ) {
        let t = Transmit {
            destination,
            ecn: None,
            contents,
            segment_size,
            src_ip: None,
        };
        for _ in 0..SEND_TRIES {
            let r = self.socket.try_io(Interest::WRITABLE, || {
                self.state.try_send(UdpSockRef::from(&self.socket), &t)
            });
            match r {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.socket.writable().await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::debug!(%destination, "send failed: {e}");
                    break;
                }
            }
        }
        self.send_failed += 1;
    }

    /// Most segments one GSO send may carry here (1 without GSO).
    pub(super) fn max_segments(&self) -> usize {
        self.state.max_gso_segments().clamp(1, MAX_GSO_SEGMENTS)
    }
}

/// Whether `a` is a real IPv6 destination (not an IPv4 one mapped into IPv6).
fn is_v6(a: SocketAddr) -> bool {
    match a {
        SocketAddr::V4(_) => false,
        SocketAddr::V6(v6) => v6.ip().to_ipv4_mapped().is_none(),
    }
}

/// Lets the kernel fragment datagrams larger than the path MTU (best effort).
fn allow_fragments(socket: &UdpSocket, v6: bool) {
    use std::os::fd::AsRawFd;
    let set = |level, name, value: libc::c_int| {
        // SAFETY: setsockopt on a valid descriptor with a c_int value of the stated size.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    set(
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_DONT,
    );
    if v6 {
        set(
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_DONT,
        );
    }
}

/// Relayed datagrams waiting to leave together: equal-sized ones to one destination become
/// one GSO send (the last may be shorter, as GSO allows).
pub(super) struct GsoOut {
    buf: Vec<u8>,
    dst: Option<SocketAddr>,
    seg: usize,
    segs: usize,
    /// Datagrams sent, and the sends (syscalls) they took.
    pub(super) datagrams: u64,
    pub(super) sends: u64,
}

impl Default for GsoOut {
    fn default() -> Self {
        GsoOut {
            buf: Vec::with_capacity(MAX_GSO_BYTES),
            dst: None,
            seg: 0,
            segs: 0,
            datagrams: 0,
            sends: 0,
        }
    }
}

impl GsoOut {
    /// Queues `datagram` for `dst`, sending what was queued first when it cannot join it.
    #[cfg(test)]
    pub(super) async fn push(&mut self, io: &mut BatchSocket, dst: SocketAddr, datagram: &[u8]) {
        let max = io.max_segments();
        if !self.joins(dst, datagram.len(), max) {
            self.flush(io).await;
        }
        if self.append(dst, datagram, max) {
            self.flush(io).await;
        }
    }

    /// Whether a datagram of `len` bytes for `dst` can join what is queued.
    pub(super) fn joins(&self, dst: SocketAddr, len: usize, max_segments: usize) -> bool {
        self.dst.is_none()
            || (self.dst == Some(dst)
                && len <= self.seg
                && self.segs < max_segments
                && self.buf.len() + len <= MAX_GSO_BYTES)
    }

    /// Appends a datagram that [`Self::joins`]; returns whether the send is now complete (a
    /// shorter datagram ends a GSO send; so does a full one) and should be flushed.
    pub(super) fn append(&mut self, dst: SocketAddr, datagram: &[u8], max_segments: usize) -> bool {
        if self.dst.is_none() {
            self.dst = Some(dst);
            self.seg = datagram.len();
        }
        self.buf.extend_from_slice(datagram);
        self.segs += 1;
        datagram.len() < self.seg || self.segs >= max_segments
    }

    /// Sends what is queued.
    pub(super) async fn flush(&mut self, io: &mut BatchSocket) {
        let Some(dst) = self.dst.take() else {
            return;
        };
        io.send(dst, &self.buf, Some(self.seg)).await;
        self.datagrams += self.segs as u64;
        self.sends += 1;
        self.buf.clear();
        self.segs = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loopback: a burst of equal datagrams goes out in few sends and arrives intact and in
    /// order, whatever the kernel's GSO/GRO support.
    #[tokio::test]
    async fn a_burst_leaves_in_few_sends_and_arrives_intact() {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = b.local_addr().unwrap();
        let mut io = BatchSocket::new(a).unwrap();
        let mut rx = BatchSocket::new(b).unwrap();
        let mut out = GsoOut::default();
        for i in 0..40u8 {
            out.push(&mut io, to, &[i; 1200]).await;
        }
        out.push(&mut io, to, &[99; 100]).await;
        out.flush(&mut io).await;
        assert_eq!(out.datagrams, 41);
        if io.max_segments() > 1 {
            assert!(out.sends <= 2, "{} sends", out.sends);
        }
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < 41 && tokio::time::Instant::now() < deadline {
            rx.socket().readable().await.unwrap();
            let Ok(n) = rx.recv() else { continue };
            for i in 0..n {
                let (_, bytes, stride) = rx.received(i);
                got.extend(bytes.chunks(stride).map(|d| d.to_vec()));
            }
        }
        assert_eq!(got.len(), 41);
        for (i, d) in got[..40].iter().enumerate() {
            assert_eq!(d, &vec![i as u8; 1200]);
        }
        assert_eq!(got[40], vec![99; 100]);
    }
}
