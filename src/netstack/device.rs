//! The device: smoltcp's view of the packet channels.

use std::collections::VecDeque;
use std::sync::Arc;

use smoltcp::phy::{Device, DeviceCapabilities};
use tokio::sync::mpsc;

use super::offload;
use super::recycle::{Recycler, Spares};
use super::Packet;

/// Headroom before each outgoing packet in its buffer: the data plane's (`wg::INNER_OFFSET`),
/// so its encrypting thread can take the buffer as it is.
pub(super) const HEADROOM: usize = crate::wg::INNER_OFFSET;
/// Bytes cleared before smoltcp writes a packet: the IPv6 header and the longest TCP header.
/// smoltcp writes every field, but leaves the padding after a TCP option list's end as it
/// finds it, and a recycled buffer holds an earlier packet's bytes.
const CLEARED: usize = 40 + 60;

pub(super) struct QueueDevice {
    pub(super) rx: VecDeque<Packet>,
    /// Buffers of inbound packets smoltcp has read: they go back to the data plane.
    pub(super) used: Vec<Vec<u8>>,
    /// Where `used` goes.
    pub(super) used_to: Arc<Recycler>,
    pub(super) out: Out,
    pub(super) caps: DeviceCapabilities,
    pub(super) saw_syn: bool,
}

/// The sending half of the device. Packets wait in `pending` until the driver's round ends
/// ([`Out::flush`]), so the data plane's thread wakes once per round and finds them all there,
/// rather than once for each packet as it is made.
pub(super) struct Out {
    pub(super) tx: mpsc::Sender<Packet>,
    pub(super) permit: Option<mpsc::OwnedPermit<Packet>>,
    /// Packets made this round (never more than `tx` has room for).
    pub(super) pending: Vec<Packet>,
    pub(super) sent: u64,
    pub(super) dropped: u64,
    /// Buffers to build outgoing packets in.
    pub(super) spare: Spares,
    /// The length of a new buffer: headroom and the MTU.
    pub(super) buf_len: usize,
    /// With TCP offload, the tunnel MTU: SYNs' MSS options are rewritten both ways
    /// (`offload::clamp_syn_mss` here, `offload::raise_syn_mss` on the way in).
    pub(super) offload_mtu: Option<usize>,
}

impl QueueDevice {
    pub(super) fn can_transmit(&self) -> bool {
        self.out.room() > self.out.pending.len()
    }

    /// Hands the buffers of the packets smoltcp read back to the data plane.
    pub(super) fn recycle_used(&mut self) {
        self.used_to.put_all(&mut self.used);
    }
}

impl Out {
    /// Packets `tx` takes now.
    fn room(&self) -> usize {
        self.tx.capacity() + usize::from(self.permit.is_some())
    }

    /// Hands this round's packets to the data plane.
    pub(super) fn flush(&mut self) {
        for p in self.pending.drain(..) {
            if let Some(permit) = self.permit.take() {
                permit.send(p);
                self.sent += 1;
                continue;
            }
            match self.tx.try_send(p) {
                Ok(()) => self.sent += 1,
                Err(e) => {
                    // Only replies to inbound packets go past `room` (transmit() checks it);
                    // TCP recovers from their loss.
                    self.dropped += 1;
                    self.spare.push(e.into_inner().into_buffer());
                }
            }
        }
    }

    /// A buffer with room for `HEADROOM + len` bytes, without allocating when a spare one is
    /// there.
    fn buffer(&mut self, len: usize) -> Vec<u8> {
        let mut buf = self.spare.pop().unwrap_or_default();
        let need = HEADROOM + len;
        if buf.len() < need {
            buf.resize(need.max(self.buf_len), 0);
        }
        buf
    }
}

/// True for a TCP SYN without ACK in a plain IPv6 packet (no extension headers).
fn is_tcp_syn(p: &[u8]) -> bool {
    p.len() >= 54 && p[0] >> 4 == 6 && p[6] == 6 && p[53] & 0x12 == 0x02
}

pub(super) struct RxTok<'a> {
    p: Packet,
    used: &'a mut Vec<Vec<u8>>,
}

impl smoltcp::phy::RxToken for RxTok<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let r = f(&self.p);
        self.used.push(self.p.into_buffer());
        r
    }
}

pub(super) struct TxTok<'a>(&'a mut Out);

/// Lowers the window of an outgoing TCP segment (not a SYN) by one unit of its scale, and
/// fixes the checksum (RFC 1624).
///
/// smoltcp advertises `floor(free space >> scale)`, so its right window edge can move back by
/// up to `2^scale - 1` bytes from one ACK to the next, and it then rejects segments beyond the
/// newest edge that the previous ACK allowed. A peer sending at full window (any bulk transfer)
/// loses the tails of such segments (a duplicate-ACK storm), and a FIN that arrives behind the
/// hole is disregarded and waits for the 1 s retransmission timeout. Offering
/// one unit less keeps every edge a sender may use at or below smoltcp's own newest edge:
/// the true edge (bytes read + buffer size) never moves back, and each advertised edge is
/// within one unit of it.
fn clamp_tcp_window(p: &mut [u8]) {
    if p.len() < 60 || p[0] >> 4 != 6 || p[6] != 6 {
        return;
    }
    if p[40 + 13] & 0x02 != 0 {
        return; // SYN and SYN-ACK carry an unscaled window.
    }
    let old = u16::from_be_bytes([p[54], p[55]]);
    if old == 0 {
        return;
    }
    offload::set_tcp_word(p, 54, old - 1);
}

impl smoltcp::phy::TxToken for TxTok<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let out = self.0;
        let mut buf = out.buffer(len);
        let end = HEADROOM + len;
        let pkt = &mut buf[HEADROOM..end];
        pkt[..len.min(CLEARED)].fill(0);
        let r = f(pkt);
        clamp_tcp_window(pkt);
        if let Some(mtu) = out.offload_mtu {
            offload::clamp_syn_mss(pkt, mtu);
        }
        out.pending.push(Packet::in_buffer(buf, HEADROOM, end));
        r
    }
}

impl Device for QueueDevice {
    type RxToken<'a> = RxTok<'a>;
    type TxToken<'a> = TxTok<'a>;

    fn receive(
        &mut self,
        _now: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let mut p = self.rx.pop_front()?;
        self.saw_syn |= is_tcp_syn(&p);
        if let Some(mtu) = self.out.offload_mtu {
            offload::raise_syn_mss(&mut p, mtu);
        }
        Some((
            RxTok {
                p,
                used: &mut self.used,
            },
            TxTok(&mut self.out),
        ))
    }

    fn transmit(&mut self, _now: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        if !self.can_transmit() {
            return None;
        }
        Some(TxTok(&mut self.out))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.caps.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::super::offload::tests::tcp_checksum;
    use super::*;

    #[test]
    fn syn_detection_reads_the_tcp_flags_of_plain_ipv6() {
        let mut p = vec![0u8; 60];
        p[0] = 0x60;
        p[6] = 6;
        p[53] = 0x02;
        assert!(is_tcp_syn(&p));
        p[53] = 0x12; // SYN+ACK
        assert!(!is_tcp_syn(&p));
        p[53] = 0x02;
        p[6] = 17; // UDP
        assert!(!is_tcp_syn(&p));
        assert!(!is_tcp_syn(&p[..40]));
    }

    fn tcp_packet(flags: u8, window: u16) -> Vec<u8> {
        let mut p = vec![0u8; 40 + 20 + 7];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&27u16.to_be_bytes());
        p[6] = 6;
        p[8] = 0xfd;
        p[23] = 1;
        p[24] = 0xfd;
        p[39] = 2;
        p[40 + 12] = 5 << 4;
        p[40 + 13] = flags;
        p[40 + 14..40 + 16].copy_from_slice(&window.to_be_bytes());
        p[60..].copy_from_slice(b"payload");
        let c = tcp_checksum(&p);
        p[40 + 16..40 + 18].copy_from_slice(&c.to_be_bytes());
        assert_eq!(tcp_checksum(&p), 0);
        p
    }

    #[test]
    fn window_clamping_lowers_the_window_by_one_and_keeps_the_checksum_valid() {
        for w in [1u16, 2, 0x00ff, 0x0100, 0x8000, 0xffff] {
            let mut p = tcp_packet(0x10, w);
            clamp_tcp_window(&mut p);
            assert_eq!(u16::from_be_bytes([p[54], p[55]]), w - 1);
            assert_eq!(tcp_checksum(&p), 0, "window {w}");
        }
    }

    #[test]
    fn window_clamping_leaves_syns_and_zero_windows_alone() {
        for (flags, w) in [(0x02, 1000), (0x12, 1000), (0x10, 0)] {
            let p0 = tcp_packet(flags, w);
            let mut p = p0.clone();
            clamp_tcp_window(&mut p);
            assert_eq!(p, p0);
        }
    }
}
