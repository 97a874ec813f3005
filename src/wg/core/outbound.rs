//! The outbound path: one inner packet becomes a WireGuard datagram for its peer's path, and
//! datagrams go out on a path (straight, or wrapped in a relay frame).

use std::net::{Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering;

use boringtun::noise::TunnResult;

use super::counters::bump;
use super::Core;
use crate::mapping::Addr48;
use crate::wg::peer::{DropReason, Peer};
use crate::wg::Path;
use crate::wire::relay;

/// What became of one outbound inner packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxAction {
    /// Send the first `len` bytes of the output buffer to `dst`.
    Send {
        /// The peer's endpoint, or the relay (the datagram is then a relay frame).
        dst: SocketAddr,
        /// Length of the datagram.
        len: usize,
    },
    /// Queued inside WireGuard until the handshake completes.
    Queued,
    /// Not for the overlay and not worth counting (kernel link-local/multicast chatter).
    Ignored,
    /// Dropped and counted.
    Dropped,
}

impl Core {
    /// Handles one outbound inner packet. The datagram to send lands at the start of `out`
    /// (`out` must hold [`Core::out_room`] bytes). A packet longer than the core's largest
    /// packet is dropped and counted (`oversize`): WireGuard may queue it, and whatever it
    /// queues must fit the buffers that drain the queue later.
    pub fn on_outbound(&self, packet: &[u8], out: &mut [u8]) -> TxAction {
        let Some(dst) = inner_dst(packet) else {
            return TxAction::Ignored;
        };
        if packet.len() > self.max_packet {
            bump(&self.counters.oversize);
            return TxAction::Dropped;
        }
        let Some(addr) = self.network.addr48_of(dst) else {
            bump(&self.counters.not_overlay);
            return TxAction::Dropped;
        };
        let table = self.table.load();
        let Some(peer) = table.by_addr.get(&addr) else {
            bump(&self.counters.no_peer);
            if let Some(hook) = &self.no_peer_hook {
                hook(addr);
            }
            return TxAction::Dropped;
        };
        let mut st = peer.state.lock();
        if st.removed {
            drop(st);
            peer.counters.drop_one(DropReason::Removed);
            return TxAction::Dropped;
        }
        let (dst, off) = match st.path {
            Path::Direct(a) => (a, 0),
            Path::Relay(r) => (r, relay::HEADER_LEN),
            Path::None => {
                // Queue it inside WireGuard (it goes out once a path is set) and ask for one.
                let _ = self.tunn(peer, &mut st).encapsulate(packet, out);
                drop(st);
                if let Some(e) = &self.events {
                    e.needs_path(peer.public_key, &peer.needs_path_queued);
                }
                peer.counters.drop_one(DropReason::NoEndpoint);
                return TxAction::Dropped;
            }
        };
        match self
            .tunn(peer, &mut st)
            .encapsulate(packet, &mut out[off..])
        {
            TunnResult::WriteToNetwork(d) => {
                let len = d.len();
                drop(st);
                if out[off] == 4 {
                    count_tx(peer, packet.len());
                }
                if off > 0 {
                    relay::encode_header(out, relay::RELAY_SEND, peer.addr48);
                }
                TxAction::Send {
                    dst,
                    len: len + off,
                }
            }
            TunnResult::Done => TxAction::Queued,
            TunnResult::Err(e) => {
                drop(st);
                tracing::trace!(peer = %peer.addr48, error = ?e, "encapsulate failed");
                peer.counters.drop_one(DropReason::Rejected);
                TxAction::Dropped
            }
            TunnResult::WriteToTunnelV4(..) | TunnResult::WriteToTunnelV6(..) => TxAction::Dropped,
        }
    }
}

/// Sends a WireGuard datagram for `peer` along `path` (wrapped in a relay frame when relayed).
pub(super) fn send_on(
    path: Path,
    peer: Addr48,
    data: &[u8],
    send: &mut dyn FnMut(SocketAddr, &[u8]),
) {
    match path {
        Path::None => {}
        Path::Direct(a) => send(a, data),
        Path::Relay(r) => {
            // Handshakes, keepalives and drained queues only (the fast path frames in place):
            // a stack buffer, or a heap one for a jumbo packet, never a silent drop.
            let n = relay::HEADER_LEN + data.len();
            let mut stack = [0u8; 2048];
            let mut heap = Vec::new();
            let buf: &mut [u8] = if n <= stack.len() {
                &mut stack[..n]
            } else {
                heap.resize(n, 0);
                &mut heap
            };
            relay::encode_header(buf, relay::RELAY_SEND, peer);
            buf[relay::HEADER_LEN..].copy_from_slice(data);
            send(r, buf);
        }
    }
}

pub(super) fn count_tx(peer: &Peer, len: usize) {
    peer.counters
        .tx_bytes
        .fetch_add(len as u64, Ordering::Relaxed);
    peer.counters.tx_packets.fetch_add(1, Ordering::Relaxed);
}

/// The destination of an outbound IPv6 packet, or `None` for anything that is not ours to send:
/// not IPv6, truncated, multicast (`ff00::/8`) or from a link-local source (`fe80::/10`) —
/// the kernel's own chatter on the interface.
pub fn inner_dst(packet: &[u8]) -> Option<Ipv6Addr> {
    if packet.len() < 40 || packet[0] >> 4 != 6 {
        return None;
    }
    if packet[24] == 0xff || (packet[8] == 0xfe && packet[9] & 0xc0 == 0x80) {
        return None;
    }
    let mut d = [0u8; 16];
    d.copy_from_slice(&packet[24..40]);
    Some(Ipv6Addr::from(d))
}
