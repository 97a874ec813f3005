//! The inner side of the data plane: where outbound packets come from and where decapsulated
//! packets go. The TUN device ([`crate::tun`]) is one implementation; the userspace netstack
//! plugs in the same way, and [`channel`] gives an in-memory one for tests.
//!
//! Buffers carry [`INNER_OFFSET`] bytes of headroom before each packet, which the TUN device
//! uses for its virtio-net header (GSO/GRO offload); other implementations ignore it.

use std::io;
use std::sync::mpsc;
use std::time::Duration;

/// Headroom before every packet in inner buffers (= the virtio-net header length).
pub const INNER_OFFSET: usize = 10;

/// Reads outbound IP packets from the inner side. One thread owns it.
pub trait InnerReader: Send {
    /// Reads a batch of packets: packet `i` is `bufs[i][INNER_OFFSET..INNER_OFFSET + sizes[i]]`.
    /// Each `bufs[i]` is at least `INNER_OFFSET + mtu` long, and there are at least 128 of
    /// them (one offloaded TUN read may split into that many). The implementation may swap a
    /// buffer for one at least as long (the userspace netstack hands over the buffer it built
    /// the packet in). Waits at most `timeout` for the first packet and returns `Ok(0)` when
    /// none came.
    fn recv_batch(
        &mut self,
        bufs: &mut [Vec<u8>],
        sizes: &mut [usize],
        timeout: Duration,
    ) -> io::Result<usize>;

    /// A file descriptor that polls readable when a packet is waiting, for sides whose
    /// readiness the data plane may wait for without holding the reader (the TUN device).
    /// With one, the receive thread may also take a turn reading (see `wg::io`'s turnaround);
    /// `None` (the default) keeps the reader on its own thread.
    fn readable_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
}

/// Writes decapsulated IP packets to the inner side. One thread owns it.
pub trait InnerWriter: Send {
    /// Writes a batch: packet `i` is `bufs[i][INNER_OFFSET..]`. The implementation may reuse
    /// and resize the buffers (the TUN device coalesces TCP segments into the first buffer of a
    /// flow).
    fn send_batch(&mut self, bufs: &mut [Vec<u8>]) -> io::Result<()>;
}

/// Both halves of an inner side, plus its MTU.
pub struct Inner {
    /// Outbound packets.
    pub reader: Box<dyn InnerReader>,
    /// Decapsulated packets.
    pub writer: Box<dyn InnerWriter>,
    /// Largest inner packet.
    pub mtu: u16,
}

/// The far ends of a [`channel`] inner side.
pub struct ChannelEnds {
    /// Send an IP packet into the data plane (as if read from a TUN device).
    pub to_plane: mpsc::SyncSender<Vec<u8>>,
    /// IP packets the data plane decapsulated (as if written to a TUN device).
    pub from_plane: mpsc::Receiver<Vec<u8>>,
}

/// An in-memory inner side (allocates per packet: for tests and small tools, not speed).
pub fn channel(mtu: u16, depth: usize) -> (Inner, ChannelEnds) {
    let (to_plane, rx) = mpsc::sync_channel(depth);
    let (tx, from_plane) = mpsc::sync_channel(depth);
    (
        Inner {
            reader: Box::new(ChannelReader(rx)),
            writer: Box::new(ChannelWriter(tx)),
            mtu,
        },
        ChannelEnds {
            to_plane,
            from_plane,
        },
    )
}

/// An inner side that produces nothing and discards what it is given: the data plane runs
/// (handshakes, keepalives, control messages, counters) with nowhere to deliver packets. The
/// daemon uses it in userspace mode until the userspace network stack plugs in.
pub fn discard(mtu: u16) -> Inner {
    let (inner, ends) = channel(mtu, 1);
    drop(ends);
    inner
}

struct ChannelReader(mpsc::Receiver<Vec<u8>>);

impl InnerReader for ChannelReader {
    fn recv_batch(
        &mut self,
        bufs: &mut [Vec<u8>],
        sizes: &mut [usize],
        timeout: Duration,
    ) -> io::Result<usize> {
        let first = match self.0.recv_timeout(timeout) {
            Ok(p) => p,
            Err(mpsc::RecvTimeoutError::Timeout) => return Ok(0),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(timeout);
                return Ok(0);
            }
        };
        let mut n = 0;
        let mut next = Some(first);
        while let Some(p) = next {
            let room = bufs[n].len() - INNER_OFFSET;
            let len = p.len().min(room);
            bufs[n][INNER_OFFSET..INNER_OFFSET + len].copy_from_slice(&p[..len]);
            sizes[n] = len;
            n += 1;
            next = if n < bufs.len() {
                self.0.try_recv().ok()
            } else {
                None
            };
        }
        Ok(n)
    }
}

struct ChannelWriter(mpsc::SyncSender<Vec<u8>>);

impl InnerWriter for ChannelWriter {
    fn send_batch(&mut self, bufs: &mut [Vec<u8>]) -> io::Result<()> {
        for b in bufs.iter() {
            // A full or closed queue drops the packet, as a full TUN queue would.
            let _ = self.0.try_send(b[INNER_OFFSET..].to_vec());
        }
        Ok(())
    }
}
