//! TCP segmentation and receive coalescing at the packet boundary: smoltcp works in segments of
//! up to 64 KiB, as the kernel's TCP does behind a TUN device with offload (GSO/GRO).
//!
//! With [`NetstackConfig::tcp_offload`](super::NetstackConfig::tcp_offload) the stack's device
//! MTU is [`OFFLOAD_MTU`], so smoltcp sends and accepts TCP segments of up to 64 KiB. Each
//! inner packet is one WireGuard datagram, so the boundary (`port.rs`) cuts an outgoing segment
//! larger than the tunnel's MTU into segments of that MTU ([`split`]: tun-rs's `gso_split`,
//! the code that splits the TUN device's offloaded reads; sequence numbers, lengths, flags and
//! checksums per segment), and joins the in-order segments of one flow in a batch of decrypted
//! packets into one packet before the stack reads it ([`Coalescer`]). smoltcp's work per segment
//! (its socket walk, dispatch, the ACK it sends) and the channel operations then happen once
//! per 64 KiB rather than once per tunnel MTU.
//!
//! The MSS option of SYNs is rewritten both ways so that no peer gets a segment larger than
//! its own tunnel packets: our SYNs announce what one tunnel packet carries
//! ([`clamp_syn_mss`]), and a peer's SYN whose MSS fills our tunnel packets is raised to the
//! offload MSS ([`raise_syn_mss`]): smoltcp then sends large segments, cut to our MTU, which
//! the peer takes. A peer with a smaller MTU announces a smaller MSS, which is kept, and smoltcp
//! sends segments within it.
//!
//! A joined packet's TCP checksum is left as the first segment's (not valid for the whole):
//! the stack does not verify received checksums with offload on, every segment having come out
//! of an authenticated WireGuard tunnel (the kernel's WireGuard marks decrypted packets
//! `CHECKSUM_UNNECESSARY` for the same reason).

use std::io;

use crate::wg::INNER_OFFSET as HEADROOM;

/// The stack's device MTU with TCP offload: the largest IPv6 packet.
pub const OFFLOAD_MTU: usize = 65535;

const IPV6_HEADER: usize = 40;
const NEXT_HEADER_TCP: u8 = 6;
const MAX_IPV6_PAYLOAD: usize = 65535;

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;
const URG: u8 = 0x20;
const ECE: u8 = 0x40;
const CWR: u8 = 0x80;

/// The TCP header length of `p` when it is a plain IPv6 TCP segment (no extension headers)
/// whose IPv6 payload length is the rest of `p`.
fn tcp_header_len(p: &[u8]) -> Option<usize> {
    if p.len() < IPV6_HEADER + 20 || p[0] >> 4 != 6 || p[6] != NEXT_HEADER_TCP {
        return None;
    }
    if usize::from(u16::from_be_bytes([p[4], p[5]])) != p.len() - IPV6_HEADER {
        return None;
    }
    let thl = usize::from(p[IPV6_HEADER + 12] >> 4) * 4;
    (thl >= 20 && IPV6_HEADER + thl <= p.len()).then_some(thl)
}

/// How many packets of at most `mtu` bytes [`split`] cuts the IPv6 packet `p` into; `None` when it cannot (not
/// a plain IPv6 TCP segment, or no room for data after its headers).
pub fn segment_count(p: &[u8], mtu: usize) -> Option<usize> {
    let thl = tcp_header_len(p)?;
    let mss = mtu.checked_sub(IPV6_HEADER + thl).filter(|&m| m > 0)?;
    Some((p.len() - IPV6_HEADER - thl).div_ceil(mss).max(1))
}

/// Cuts the TCP segment `p` into segments of at most `mtu` bytes: segment `i` at
/// `bufs[i][HEADROOM..HEADROOM + sizes[i]]` (`HEADROOM` = [`crate::wg::INNER_OFFSET`], the data
/// plane's). `bufs` needs [`segment_count`] buffers of at least `HEADROOM + mtu` bytes.
/// Returns how many it filled.
pub fn split(
    p: &mut [u8],
    mtu: usize,
    bufs: &mut [Vec<u8>],
    sizes: &mut [usize],
) -> io::Result<usize> {
    let thl = tcp_header_len(p).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "not a plain IPv6 TCP segment")
    })?;
    let hdr_len = IPV6_HEADER + thl;
    let gso_size = mtu
        .checked_sub(hdr_len)
        .filter(|&m| m > 0)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "MTU below TCP headers"))?;
    let hdr = tun_rs::VirtioNetHdr {
        flags: 1, // VIRTIO_NET_HDR_F_NEEDS_CSUM: a checksum per segment
        gso_type: tun_rs::VIRTIO_NET_HDR_GSO_TCPV6,
        hdr_len: hdr_len as u16,
        gso_size: gso_size.min(usize::from(u16::MAX)) as u16,
        csum_start: IPV6_HEADER as u16,
        csum_offset: 16,
    };
    tun_rs::gso_split(p, hdr, bufs, sizes, HEADROOM, true)
}

/// The MSS a peer may send us in one tunnel packet of `mtu` bytes (IPv6 and TCP headers).
fn wire_mss(mtu: usize) -> u16 {
    mtu.saturating_sub(IPV6_HEADER + 20)
        .min(usize::from(u16::MAX)) as u16
}

/// Where the value of the MSS option of `p` is, when `p` is a plain IPv6 TCP SYN (or SYN-ACK)
/// with a well-formed option list that has one.
fn mss_option(p: &[u8]) -> Option<usize> {
    let thl = tcp_header_len(p)?;
    if p[IPV6_HEADER + 13] & SYN == 0 {
        return None;
    }
    let end = IPV6_HEADER + thl;
    let mut i = IPV6_HEADER + 20;
    while i < end {
        match p[i] {
            0 => return None,
            1 => i += 1,
            kind => {
                let len = usize::from(*p.get(i + 1).filter(|_| i + 1 < end)?);
                if len < 2 || i + len > end {
                    return None;
                }
                if kind == 2 && len == 4 {
                    return Some(i + 2);
                }
                i += len;
            }
        }
    }
    None
}

/// Writes `new` as the 16-bit word at `at` of the plain IPv6 TCP segment `p` and updates its
/// checksum to match (RFC 1624; a word at an odd offset of the TCP header counts byte-swapped).
pub(super) fn set_tcp_word(p: &mut [u8], at: usize, new: u16) {
    let old = u16::from_be_bytes([p[at], p[at + 1]]);
    p[at..at + 2].copy_from_slice(&new.to_be_bytes());
    let (old, new) = if (at - IPV6_HEADER) % 2 == 1 {
        (old.swap_bytes(), new.swap_bytes())
    } else {
        (old, new)
    };
    let c = IPV6_HEADER + 16;
    let hc = u16::from_be_bytes([p[c], p[c + 1]]);
    let mut sum = u32::from(!hc) + u32::from(!old) + u32::from(new);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[c..c + 2].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

/// On the way out: the MSS of our SYN says what one tunnel packet of `mtu` bytes carries, not
/// what smoltcp takes with offload, so that every peer (a kernel behind TUN, an older pilot, a
/// pilot with a smaller MTU) sends segments that fit a tunnel packet.
pub fn clamp_syn_mss(p: &mut [u8], mtu: usize) {
    if let Some(at) = mss_option(p) {
        let mss = u16::from_be_bytes([p[at], p[at + 1]]);
        if mss > wire_mss(mtu) {
            set_tcp_word(p, at, wire_mss(mtu));
        }
    }
}

/// On the way in: a peer's SYN whose MSS fills our tunnel packets of `mtu` bytes is given the
/// offload MSS, so smoltcp sends large segments that the boundary cuts to `mtu`, which the peer
/// takes. A smaller MSS (the peer's MTU is below ours) is kept, and smoltcp's segments fit it
/// as they are.
pub fn raise_syn_mss(p: &mut [u8], mtu: usize) {
    if let Some(at) = mss_option(p) {
        let mss = u16::from_be_bytes([p[at], p[at + 1]]);
        if mss >= wire_mss(mtu) {
            set_tcp_word(p, at, wire_mss(OFFLOAD_MTU));
        }
    }
}

/// A run of segments of one flow being joined into the packet in `bufs[head]`.
struct Run {
    head: usize,
    /// The sequence number the next segment must start with.
    next_seq: u32,
}

/// Joins the in-order TCP segments of each flow in a batch of decrypted packets (see the module
/// docs). Holds no packet between batches.
#[derive(Default)]
pub struct Coalescer {
    runs: Vec<Run>,
}

/// Flows whose runs a batch tracks at once; a further flow ends the oldest run.
const MAX_RUNS: usize = 8;

/// `(tcp header length, payload length)` of `p` when it may join or start a run: a plain IPv6
/// TCP segment with data and ACK, and none of SYN, FIN, RST, URG, ECE and CWR (PSH may only end
/// a run).
fn joinable(p: &[u8]) -> Option<(usize, usize)> {
    let thl = tcp_header_len(p)?;
    let flags = p[IPV6_HEADER + 13];
    let data = p.len() - IPV6_HEADER - thl;
    let plain = flags & (FIN | SYN | RST | URG | ECE | CWR) == 0 && flags & ACK != 0;
    (plain && data > 0).then_some((thl, data))
}

fn seq(p: &[u8]) -> u32 {
    u32::from_be_bytes(
        p[IPV6_HEADER + 4..IPV6_HEADER + 8]
            .try_into()
            .expect("4 bytes"),
    )
}

/// Same addresses and ports (both are plain IPv6 TCP segments).
fn same_flow(a: &[u8], b: &[u8]) -> bool {
    a[8..IPV6_HEADER + 4] == b[8..IPV6_HEADER + 4]
}

impl Coalescer {
    /// Joins, in `bufs` (packet `i` is `bufs[i][HEADROOM..]`, as the data plane writes them:
    /// `HEADROOM` = [`crate::wg::INNER_OFFSET`]), each TCP segment that continues
    /// a run of its flow earlier in the batch to that run's first packet; a joined segment's
    /// buffer is left with no packet (`HEADROOM` long). Packets of other kinds, and the order
    /// of each flow's packets, are left as they are. Returns how many segments were joined.
    pub fn coalesce(&mut self, bufs: &mut [Vec<u8>]) -> usize {
        self.runs.clear();
        let mut joined = 0;
        for j in 0..bufs.len() {
            let Some(p) = bufs[j].get(HEADROOM..) else {
                continue;
            };
            if tcp_header_len(p).is_none() {
                continue;
            }
            let run = self
                .runs
                .iter()
                .position(|r| same_flow(&bufs[r.head][HEADROOM..], &bufs[j][HEADROOM..]));
            if let Some(r) = run {
                if self.join(bufs, r, j) {
                    joined += 1;
                    continue;
                }
                // Any other packet of the flow ends its run: nothing passes it.
                self.runs.remove(r);
            }
            let p = &bufs[j][HEADROOM..];
            if let Some((_, data)) = joinable(p).filter(|_| p[IPV6_HEADER + 13] & PSH == 0) {
                if self.runs.len() == MAX_RUNS {
                    self.runs.remove(0);
                }
                self.runs.push(Run {
                    head: j,
                    next_seq: seq(p).wrapping_add(data as u32),
                });
            }
        }
        joined
    }

    /// Appends segment `j` to run `r`'s packet when it continues it; true if it did.
    fn join(&mut self, bufs: &mut [Vec<u8>], r: usize, j: usize) -> bool {
        let head_at = self.runs[r].head;
        let (before, rest) = bufs.split_at_mut(j);
        let head = &mut before[head_at];
        let p = &rest[0][HEADROOM..];
        let Some((thl, data)) = joinable(p) else {
            return false;
        };
        let h = &head[HEADROOM..];
        let payload = h.len() - IPV6_HEADER + data;
        let fits = payload <= MAX_IPV6_PAYLOAD && head.len() + data <= head.capacity();
        let continues = seq(p) == self.runs[r].next_seq
            && usize::from(h[IPV6_HEADER + 12] >> 4) * 4 == thl
            // Version, traffic class, flow label; hop limit; acknowledgement; options.
            && h[..4] == p[..4]
            && h[7] == p[7]
            && h[IPV6_HEADER + 8..IPV6_HEADER + 12] == p[IPV6_HEADER + 8..IPV6_HEADER + 12]
            && h[IPV6_HEADER + 20..IPV6_HEADER + thl] == p[IPV6_HEADER + 20..IPV6_HEADER + thl];
        if !(fits && continues) {
            return false;
        }
        let push = p[IPV6_HEADER + 13] & PSH != 0;
        let window = [p[IPV6_HEADER + 14], p[IPV6_HEADER + 15]];
        head.extend_from_slice(&p[IPV6_HEADER + thl..]);
        let h = &mut head[HEADROOM..];
        h[4..6].copy_from_slice(&(payload as u16).to_be_bytes());
        // The newest window; PSH from the segment that ends the run.
        h[IPV6_HEADER + 14..IPV6_HEADER + 16].copy_from_slice(&window);
        if push {
            h[IPV6_HEADER + 13] |= PSH;
            self.runs.remove(r);
        } else {
            self.runs[r].next_seq = self.runs[r].next_seq.wrapping_add(data as u32);
        }
        rest[0].truncate(HEADROOM);
        true
    }
}

#[cfg(test)]
pub(super) mod tests;
