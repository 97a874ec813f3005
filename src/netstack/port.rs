//! The packet boundary: the data plane's side of the stack's channels, and the same port as
//! the data plane's inner side (`wg::Inner`).

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::device::HEADROOM;
use super::offload::{self, Coalescer};
use super::recycle::{Recycler, Spares, REFILL};
use super::{Counters, Packet};

/// The data plane's side of the packet boundary (see the module docs).
#[derive(Debug)]
pub struct PacketPort {
    /// Packets the stack sends: encrypt each to the peer owning its destination.
    pub from_stack: mpsc::Receiver<Packet>,
    /// Packets for the stack: decrypted, source already checked.
    pub to_stack: mpsc::Sender<Packet>,
    /// The stack's counters: packets dropped on the way in are counted there.
    pub(super) counters: Arc<Counters>,
    /// Buffers of inbound packets the stack has read (for `to_stack`'s next packets).
    pub(super) inbound: Arc<Recycler>,
    /// Spare buffers for the stack's outbound packets (`from_stack`'s were swapped for them).
    pub(super) outbound: Arc<Recycler>,
    /// Join the in-order TCP segments of a batch of decrypted packets (`offload.rs`): on with
    /// TCP offload when received checksums are not verified.
    pub(super) coalesce: bool,
    /// The stack's MTU ([`super::NetstackConfig::mtu`]): the largest packet the data plane
    /// takes, and what the stack's SYNs announce with TCP offload.
    pub(super) mtu: u16,
}

impl PacketPort {
    /// This port as the data plane's inner side ([`crate::wg::Inner`]), for
    /// `DataPlane::start`: its threads read what the stack sends (`from_stack`, waiting on
    /// `rt`'s timer) and write decrypted packets to the stack (`to_stack`; a full queue drops,
    /// as a full NIC ring would). Packets cross without a copy or an allocation: each side
    /// swaps the buffer it is given for a recycled one of the same size (`recycle.rs`). TCP
    /// segments larger than the stack's MTU (TCP offload) are cut into segments of that MTU on the
    /// way out, and in-order segments of a flow decrypted together are joined on the way in
    /// (`offload.rs`).
    pub fn into_inner(self, rt: tokio::runtime::Handle) -> crate::wg::Inner {
        crate::wg::Inner {
            reader: Box::new(StackReader {
                rx: self.from_stack,
                rt,
                back: Vec::with_capacity(REFILL),
                back_to: self.outbound,
                held: None,
                mtu: usize::from(self.mtu),
                counters: self.counters.clone(),
            }),
            writer: Box::new(StackWriter {
                tx: self.to_stack,
                counters: self.counters,
                spares: self.inbound.spares(),
                coalescer: self.coalesce.then(Coalescer::default),
            }),
            mtu: self.mtu,
        }
    }
}

struct StackReader {
    rx: mpsc::Receiver<Packet>,
    rt: tokio::runtime::Handle,
    /// The data plane's buffers we swapped packets into, to go back to the stack.
    back: Vec<Vec<u8>>,
    back_to: Arc<Recycler>,
    /// A large segment that did not fit the last batch's remaining buffers.
    held: Option<Packet>,
    /// The largest packet the data plane takes.
    mtu: usize,
    counters: Arc<Counters>,
}

/// Where [`StackReader::put`] left a packet.
enum Put {
    /// In this many buffers.
    Placed(usize),
    /// Nowhere: too few buffers left (it goes first in the next batch).
    NoRoom(Packet),
}

impl StackReader {
    /// Puts `p` in `bufs` from the first: a packet within the MTU in one buffer
    /// ([`StackReader::place`]), a larger TCP segment cut into as many as it needs. `whole`:
    /// `bufs` is all of a batch's buffers. A packet that cannot be cut, or that needs more
    /// buffers than a whole batch has, is dropped and counted (`packets_dropped`).
    fn put(
        &mut self,
        mut p: Packet,
        bufs: &mut [Vec<u8>],
        sizes: &mut [usize],
        whole: bool,
    ) -> Put {
        if p.len() <= self.mtu {
            sizes[0] = self.place(p, &mut bufs[0]);
            return Put::Placed(1);
        }
        let placed = match offload::segment_count(&p, self.mtu) {
            Some(k) if k > bufs.len() && !whole => return Put::NoRoom(p),
            Some(k) if k <= bufs.len() => offload::split(&mut p, self.mtu, &mut bufs[..k], sizes),
            _ => Ok(0),
        };
        let placed = placed.unwrap_or_else(|e| {
            tracing::debug!(error = %e, len = p.len(), "outbound segment not split");
            0
        });
        if placed == 0 {
            self.counters
                .packets_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
        self.back.push(p.into_buffer());
        Put::Placed(placed)
    }

    /// Puts `p` in `buf` (the data plane's buffer): by swapping when `p` sits in a buffer
    /// like the data plane's (the stack's own packets do), else by copying. Returns its size.
    fn place(&mut self, p: Packet, buf: &mut Vec<u8>) -> usize {
        let len = p.len();
        if p.start() == HEADROOM && p.buffer_len() >= buf.len() {
            let mut b = p.into_buffer();
            std::mem::swap(buf, &mut b);
            self.back.push(b);
            return len;
        }
        let room = buf.len().saturating_sub(HEADROOM);
        let len = len.min(room);
        buf[HEADROOM..HEADROOM + len].copy_from_slice(&p[..len]);
        self.back.push(p.into_buffer());
        len
    }
}

impl crate::wg::InnerReader for StackReader {
    fn recv_batch(
        &mut self,
        bufs: &mut [Vec<u8>],
        sizes: &mut [usize],
        timeout: Duration,
    ) -> io::Result<usize> {
        if bufs.is_empty() {
            return Ok(0);
        }
        let first = match self
            .held
            .take()
            .map(Ok)
            .unwrap_or_else(|| self.rx.try_recv())
        {
            Ok(p) => Some(p),
            Err(mpsc::error::TryRecvError::Empty) => {
                let rx = &mut self.rx;
                self.rt
                    .block_on(async { tokio::time::timeout(timeout, rx.recv()).await })
                    .ok()
                    .flatten()
            }
            Err(mpsc::error::TryRecvError::Disconnected) => {
                std::thread::sleep(timeout);
                None
            }
        };
        let mut n = 0;
        let mut next = first;
        while let Some(p) = next {
            match self.put(p, &mut bufs[n..], &mut sizes[n..], n == 0) {
                Put::Placed(k) => n += k,
                Put::NoRoom(p) => {
                    self.held = Some(p);
                    break;
                }
            }
            next = if n < bufs.len() {
                self.rx.try_recv().ok()
            } else {
                None
            };
        }
        self.back_to.put_all(&mut self.back);
        Ok(n)
    }
}

struct StackWriter {
    tx: mpsc::Sender<Packet>,
    counters: Arc<Counters>,
    /// Recycled buffers to swap for the data plane's.
    spares: Spares,
    coalescer: Option<Coalescer>,
}

/// A buffer to give the data plane in exchange for `buf`: at least as large a capacity, so that
/// growing it again never allocates (the data plane reserves its buffers once).
fn exchange_for(spares: &mut Spares, buf: &Vec<u8>) -> Vec<u8> {
    match spares.pop() {
        Some(b) if b.capacity() >= buf.capacity() => b,
        _ => Vec::with_capacity(buf.capacity()),
    }
}

impl crate::wg::InnerWriter for StackWriter {
    fn send_batch(&mut self, bufs: &mut [Vec<u8>]) -> io::Result<()> {
        if let Some(c) = &mut self.coalescer {
            c.coalesce(bufs);
        }
        for b in bufs.iter_mut() {
            // Empty: not a packet, or one joined to an earlier one.
            if b.len() <= HEADROOM {
                continue;
            }
            let Ok(permit) = self.tx.try_reserve() else {
                self.counters
                    .packets_in_dropped
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let mut packet = exchange_for(&mut self.spares, b);
            std::mem::swap(b, &mut packet);
            let end = packet.len();
            permit.send(Packet::in_buffer(packet, HEADROOM, end));
        }
        Ok(())
    }
}
