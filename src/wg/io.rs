//! The I/O driver: dedicated OS threads with batched, mostly non-blocking syscalls around the
//! [`Core`].
//!
//! * `pilot-udp-rx`: recvmmsg (+ UDP GRO) → decapsulate → one batched write to the inner side
//!   (the TUN device coalesces TCP segments back into large packets, GRO); after a light
//!   pass it takes a turn at the outbound side and sends what the kernel answered inside that
//!   write (the turnaround: one wake-up fewer per round trip the kernel answers).
//! * `pilot-inner-rx`: batched read from the inner side (the TUN device splits large TCP
//!   packets, GSO) → encapsulate → UDP GSO sends of up to 64 equal datagrams per syscall.
//! * `pilot-timers`: WireGuard timers every 250 ms.
//!
//! No allocation per packet: every buffer is allocated once per thread.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use quinn_udp::RecvMeta;

use super::core::{Core, RxAction, TxAction};
use super::inner::{InnerReader, InnerWriter, INNER_OFFSET};
use super::udp::Udp;
use crate::health::Heartbeat;

/// How long a blocked thread sleeps before it checks for shutdown.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Timer period.
const TICK: Duration = Duration::from_millis(250);
/// UDP datagrams (or GRO trains) per recvmmsg.
const UDP_RX_BATCH: usize = 16;
/// Largest UDP payload (a GRO train or a GSO send).
const MAX_UDP: usize = 65535;
/// Decapsulated packets per write to the inner side.
const INNER_BATCH: usize = 128;
/// Packet buffers per read from the inner side: room for one more GSO super-packet (up to
/// 128 segments, the kernel's UDP_MAX_SEGMENTS) after what was already read.
const INNER_READ_BATCH: usize = 256;

/// The most packets a receive pass may have written and still take a turn at the outbound
/// side: lone packets and short exchanges (latency), not bulk (throughput).
const TURNAROUND_MAX: usize = 4;

/// The smallest inner packet buffer (the IPv6 minimum MTU).
const MIN_PACKET: usize = 1280;

/// The largest inner packet an inner side of MTU `mtu` hands over: its MTU, and never less
/// than 1280 (inner read buffers are never smaller).
pub(crate) fn max_packet(mtu: u16) -> usize {
    usize::from(mtu).max(MIN_PACKET)
}

/// What the threads share.
pub(crate) struct Shared {
    pub(crate) core: Arc<Core>,
    pub(crate) udp: Udp,
    pub(crate) stop: AtomicBool,
}

impl Shared {
    fn send(&self, dst: SocketAddr, data: &[u8]) {
        if let Err(e) = self.udp.send(dst, data, None) {
            self.core.count_send_error();
            tracing::debug!(%dst, error = %e, "UDP send failed");
        }
    }
}

/// Receives UDP, decapsulates, writes to the inner side.
///
/// Every output buffer is grown to `INNER_OFFSET + max(datagram, Core::out_room)` before each
/// datagram: a completed handshake encrypts the packets WireGuard queued meanwhile into it, so
/// its size must not follow the last (maybe small) packet it held. The capacity is reserved
/// once, so growing never allocates.
/// With `turn` (a pollable inner side), a pass that wrote at most [`TURNAROUND_MAX`] packets
/// then takes a turn at the outbound side ([`Outbound::turnaround`]); bulk passes do not, so
/// the receive thread keeps its time for receiving.
pub(crate) fn udp_rx_loop(
    shared: Arc<Shared>,
    mut writer: Box<dyn InnerWriter>,
    turn: Option<Arc<Mutex<Outbound>>>,
    hb: Heartbeat,
) {
    let mut rx: Vec<Vec<u8>> = (0..UDP_RX_BATCH).map(|_| vec![0u8; MAX_UDP]).collect();
    let mut meta = [RecvMeta::default(); UDP_RX_BATCH];
    let room = shared.core.out_room();
    // Capacity for a full 64 KiB coalesced TCP packet, so GRO can build one in place.
    let mut out: Vec<Vec<u8>> = (0..INNER_BATCH)
        .map(|_| {
            let mut v = Vec::with_capacity(MAX_UDP.max(room) + 2 * INNER_OFFSET + 64);
            v.resize(INNER_OFFSET + room, 0);
            v
        })
        .collect();
    let send = |dst: SocketAddr, d: &[u8]| shared.send(dst, d);
    let mut send = send;
    while !shared.stop.load(Ordering::Relaxed) {
        hb.beat();
        let n = {
            let mut it = rx.iter_mut();
            let mut iovs: [IoSliceMut<'_>; UDP_RX_BATCH] =
                std::array::from_fn(|_| IoSliceMut::new(it.next().expect("UDP_RX_BATCH buffers")));
            match shared.udp.recv(&mut iovs, &mut meta) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    shared.udp.wait_readable(POLL_INTERVAL);
                    continue;
                }
                Err(e) => {
                    // ICMP errors (ECONNREFUSED, ...) surface here; they are not fatal.
                    tracing::trace!(error = %e, "UDP recv");
                    continue;
                }
            }
        };
        let mut k = 0;
        let mut written = 0;
        for (m, buf) in meta[..n].iter().zip(rx.iter()) {
            let stride = if m.stride == 0 { m.len } else { m.stride };
            for dgram in buf[..m.len].chunks(stride.max(1)) {
                let need = INNER_OFFSET + dgram.len().max(room);
                let o = &mut out[k];
                if o.len() < need {
                    o.resize(need, 0);
                }
                match shared
                    .core
                    .on_datagram(m.addr, dgram, &mut o[INNER_OFFSET..], &mut send)
                {
                    RxAction::Tunnel { len } => {
                        o.truncate(INNER_OFFSET + len);
                        k += 1;
                        written += 1;
                        if k == INNER_BATCH {
                            flush_inner(&mut *writer, &mut out[..k]);
                            k = 0;
                        }
                    }
                    RxAction::Control | RxAction::Consumed | RxAction::Dropped => {}
                }
            }
        }
        if k > 0 {
            flush_inner(&mut *writer, &mut out[..k]);
        }
        if let Some(side) = turn
            .as_deref()
            .filter(|_| (1..=TURNAROUND_MAX).contains(&written))
        {
            Outbound::turnaround(side, &shared);
        }
    }
}

fn flush_inner(writer: &mut dyn InnerWriter, bufs: &mut [Vec<u8>]) {
    if let Err(e) = writer.send_batch(bufs) {
        tracing::debug!(error = %e, "inner write failed");
    }
}

/// A UDP GSO batch being built: equal-sized datagrams to one destination.
struct GsoBatch {
    buf: Vec<u8>,
    used: usize,
    dst: Option<SocketAddr>,
    seg: usize,
    segs: usize,
    max_segs: usize,
}

impl GsoBatch {
    /// Adds the datagram of `len` bytes just written at `start` to the batch, flushing first
    /// when it cannot join it and after it when it ends the train.
    fn push(&mut self, shared: &Shared, dst: SocketAddr, start: usize, len: usize) {
        let fits = self.dst == Some(dst) && len <= self.seg && self.segs < self.max_segs;
        if self.dst.is_some() && !fits {
            self.flush(shared);
            self.buf.copy_within(start..start + len, 0);
        }
        if self.dst.is_none() {
            self.dst = Some(dst);
            self.seg = len;
        }
        self.used += len;
        self.segs += 1;
        // A shorter datagram can only end a GSO train.
        if len < self.seg || self.max_segs == 1 {
            self.flush(shared);
        }
    }

    fn flush(&mut self, shared: &Shared) {
        if let Some(dst) = self.dst.take() {
            let seg = (self.segs > 1).then_some(self.seg);
            if let Err(e) = shared.udp.send(dst, &self.buf[..self.used], seg) {
                shared.core.count_send_error();
                tracing::debug!(%dst, error = %e, "UDP send failed");
            }
        }
        self.used = 0;
        self.segs = 0;
        self.seg = 0;
    }
}

/// The outbound side: the inner reader, its packet buffers and the GSO batch being built. The
/// TUN reader thread owns it; the UDP receive thread may take a turn (see
/// [`Outbound::turnaround`]). Reading and sending under one lock keeps each flow in order.
pub(crate) struct Outbound {
    reader: Box<dyn InnerReader>,
    bufs: Vec<Vec<u8>>,
    sizes: Vec<usize>,
    gso: GsoBatch,
    room: usize,
    /// The last pass read more than [`TURNAROUND_MAX`] packets: bulk is flowing out, and the
    /// receive thread leaves it to the reader thread (what the kernel "answers" to the ACKs
    /// it writes is more bulk, which would stall its receiving).
    bulk: bool,
}

impl Outbound {
    /// The outbound side over `reader`, with its buffers allocated once.
    pub(crate) fn new(shared: &Shared, reader: Box<dyn InnerReader>) -> Outbound {
        let room = shared.core.out_room();
        Outbound {
            reader,
            bufs: (0..INNER_READ_BATCH)
                .map(|_| vec![0u8; INNER_OFFSET + shared.core.max_packet()])
                .collect(),
            sizes: vec![0usize; INNER_READ_BATCH],
            gso: GsoBatch {
                buf: vec![0u8; MAX_UDP.max(room)],
                used: 0,
                dst: None,
                seg: 0,
                segs: 0,
                max_segs: shared.udp.max_gso_segments().clamp(1, 64),
            },
            room,
            bulk: false,
        }
    }

    /// One pass: reads a batch (waiting at most `timeout` for its first packet), encapsulates
    /// and sends it. Returns how many packets were read.
    fn pump(&mut self, shared: &Shared, timeout: Duration) -> io::Result<usize> {
        let n = self
            .reader
            .recv_batch(&mut self.bufs, &mut self.sizes, timeout)?;
        self.bulk = n > TURNAROUND_MAX;
        let gso = &mut self.gso;
        for (b, &size) in self.bufs[..n].iter().zip(self.sizes.iter()) {
            let pkt = &b[INNER_OFFSET..INNER_OFFSET + size];
            if gso.used + self.room > gso.buf.len() {
                gso.flush(shared);
            }
            let start = gso.used;
            match shared.core.on_outbound(pkt, &mut gso.buf[start..]) {
                TxAction::Send { dst, len } => gso.push(shared, dst, start, len),
                TxAction::Queued | TxAction::Ignored | TxAction::Dropped => {}
            }
        }
        gso.flush(shared);
        Ok(n)
    }

    /// The receive thread's turn, right after it wrote packets to the inner side: the kernel
    /// answers some packets inside that very write (ICMP echo replies, TCP SYN-ACKs and ACKs,
    /// RSTs), so one non-blocking read here sends the answer at once instead of waking the
    /// reader thread for it: one wake-up fewer per round trip the kernel answers. Never waits:
    /// when the reader thread holds the side it is already sending, and while bulk flows out.
    fn turnaround(side: &Mutex<Outbound>, shared: &Shared) {
        if let Some(mut out) = side.try_lock().filter(|o| !o.bulk) {
            if let Err(e) = out.pump(shared, Duration::ZERO) {
                tracing::debug!(error = %e, "inner read failed (turnaround)");
            }
        }
    }
}

/// Reads the inner side, encapsulates, sends UDP. With a pollable inner side it waits for
/// readiness without holding [`Outbound`], so the receive thread can take turns.
pub(crate) fn inner_rx_loop(shared: Arc<Shared>, side: Arc<Mutex<Outbound>>, hb: Heartbeat) {
    let fd = side.lock().reader.readable_fd();
    while !shared.stop.load(Ordering::Relaxed) {
        hb.beat();
        let timeout = match fd {
            Some(fd) => {
                if !super::udp::poll_fd(fd, libc::POLLIN, POLL_INTERVAL) {
                    continue;
                }
                Duration::ZERO
            }
            None => POLL_INTERVAL,
        };
        let mut out = side.lock();
        if let Err(e) = out.pump(&shared, timeout) {
            drop(out);
            tracing::debug!(error = %e, "inner read failed");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Drives WireGuard timers until shutdown.
pub(crate) fn timer_loop(shared: Arc<Shared>, hb: Heartbeat) {
    let mut buf = vec![0u8; shared.core.out_room()];
    let mut last_reset = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        hb.beat();
        std::thread::sleep(TICK);
        let reset = last_reset.elapsed() >= Duration::from_secs(1);
        if reset {
            last_reset = Instant::now();
        }
        shared
            .core
            .tick(reset, &mut buf, &mut |dst, d| shared.send(dst, d));
    }
}
