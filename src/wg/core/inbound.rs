//! The inbound path: one received UDP datagram becomes an inner packet, WireGuard bookkeeping,
//! a control datagram for the node core, or a counted drop. Relayed WireGuard is accepted from
//! configured registries only; an authenticated datagram may move the peer's path (roaming).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::{Packet, Tunn, TunnResult};

use super::counters::bump;
use super::limiter::{Source, Verdict};
use super::outbound::{count_tx, send_on};
use super::table::PeerTable;
use super::{normalize, Core};
use crate::mapping::Addr48;
use crate::wg::events::DataPlaneEvent;
use crate::wg::peer::{DropReason, Peer, PeerState};
use crate::wg::Path;
use crate::wire::classify::{classify, ControlDatagram, Datagram};

/// How young a session must be for an unknown receiver index from its peer's endpoint not to
/// start a new handshake (WireGuard's REKEY_TIMEOUT).
const REHANDSHAKE_AFTER: Duration = Duration::from_secs(5);

/// Why no peer takes a WireGuard message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Miss {
    /// An initiation that does not decrypt.
    Rejected,
    /// An initiation from a key not in the table.
    UnknownKey,
    /// A receiver index we did not hand out (stale or forged).
    UnknownIndex,
}

/// What became of one received UDP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxAction {
    /// A decapsulated inner packet of this length is at the start of the output buffer; write
    /// it to the inner side.
    Tunnel {
        /// Length of the inner packet.
        len: usize,
    },
    /// Handed to the control plane.
    Control,
    /// WireGuard bookkeeping (handshake, keepalive, cookie); any replies were sent.
    Consumed,
    /// Dropped and counted.
    Dropped,
}

impl Core {
    /// Handles one UDP datagram from `src`. A decapsulated packet lands at the start of `out`
    /// (`out` must hold the datagram's length and [`Core::out_room`]: a completed handshake
    /// encrypts the packets queued meanwhile into it; 65535 is always enough). Replies
    /// (handshake responses, cookies, queued packets) go out through `send`.
    pub fn on_datagram(
        &self,
        src: SocketAddr,
        datagram: &[u8],
        out: &mut [u8],
        send: &mut dyn FnMut(SocketAddr, &[u8]),
    ) -> RxAction {
        let src = normalize(src);
        let class = classify(datagram);
        if !matches!(class, Datagram::WireGuard(_)) {
            return self.on_not_wireguard(src, class, out, send);
        }
        let Ok(packet) = Tunn::parse_incoming_packet(datagram) else {
            bump(&self.counters.malformed);
            return RxAction::Dropped;
        };
        if let Packet::HandshakeInit(_) | Packet::HandshakeResponse(_) = packet {
            // Cheap MAC checks and rate limits before any Diffie-Hellman.
            if let Some(refused) = self.admit_direct_handshake(src, datagram, out, send) {
                return refused;
            }
        }
        let table = self.table.load();
        let peer = match self.lookup(&table, &packet) {
            Ok(p) => p,
            Err(Miss::UnknownIndex) if matches!(packet, Packet::PacketData(_)) => {
                // A peer that still sends on a session we forgot (we restarted): offer it a
                // new handshake at once instead of waiting for its rekey timeout.
                self.rehandshake_from(src, out, send);
                return self.miss(Miss::UnknownIndex);
            }
            Err(m) => return self.miss(m),
        };
        let is_data = matches!(packet, Packet::PacketData(_));
        self.decapsulate(peer, src, None, datagram, is_data, out, send)
    }

    /// Any datagram but a direct WireGuard message: relayed WireGuard (from a configured
    /// registry only), control messages and probes for the node core, or garbage.
    fn on_not_wireguard(
        &self,
        src: SocketAddr,
        class: Datagram<'_>,
        out: &mut [u8],
        send: &mut dyn FnMut(SocketAddr, &[u8]),
    ) -> RxAction {
        match class {
            Datagram::RelayedWireGuard { from, payload } if self.is_relay(&src) => {
                self.on_relayed(src, from, payload, out, send)
            }
            Datagram::RelayedProbe { .. } if !self.is_relay(&src) => {
                bump(&self.counters.rejected);
                RxAction::Dropped
            }
            Datagram::Control(_) | Datagram::Probe(_) | Datagram::RelayedProbe { .. } => {
                self.on_control(src, class)
            }
            _ => {
                bump(&self.counters.malformed);
                RxAction::Dropped
            }
        }
    }

    /// A WireGuard datagram relayed by the registry `relay` from the peer at `from`.
    fn on_relayed(
        &self,
        relay: SocketAddr,
        from: Addr48,
        datagram: &[u8],
        out: &mut [u8],
        send: &mut dyn FnMut(SocketAddr, &[u8]),
    ) -> RxAction {
        let Ok(packet) = Tunn::parse_incoming_packet(datagram) else {
            bump(&self.counters.malformed);
            return RxAction::Dropped;
        };
        if let Packet::HandshakeInit(_) | Packet::HandshakeResponse(_) = packet {
            if self.mac_check.verify_packet(None, datagram, out).is_err() {
                return self.miss(Miss::Rejected);
            }
            if self.handshakes.check(Source::Relayed(from)) != Verdict::Answer {
                bump(&self.counters.handshakes_limited);
                return RxAction::Dropped;
            }
        }
        let table = self.table.load();
        let peer = match self.lookup(&table, &packet) {
            Ok(p) => p,
            Err(m) => return self.miss(m),
        };
        // The relay names the sender; WireGuard proves it. A mismatch is a confused or lying
        // relay: drop.
        if peer.addr48 != from {
            bump(&self.counters.rejected);
            return RxAction::Dropped;
        }
        let is_data = matches!(packet, Packet::PacketData(_));
        self.decapsulate(peer, relay, Some(relay), datagram, is_data, out, send)
    }

    /// Applies the per-source handshake limits to a direct handshake message from `src`:
    /// `None` to go on, or what became of it (a bad MAC1, a cookie reply sent, limited).
    fn admit_direct_handshake(
        &self,
        src: SocketAddr,
        datagram: &[u8],
        out: &mut [u8],
        send: &mut dyn FnMut(SocketAddr, &[u8]),
    ) -> Option<RxAction> {
        let ip = src.ip();
        // MAC1 first: only messages made with our public key count against a source.
        if self
            .mac_check
            .verify_packet(Some(ip), datagram, out)
            .is_err()
        {
            return Some(self.miss(Miss::Rejected));
        }
        let source = Source::direct(ip);
        match self.handshakes.check(source) {
            Verdict::Answer => return None,
            Verdict::NeedsCookie => {}
            Verdict::Limited => {
                bump(&self.counters.handshakes_limited);
                return Some(RxAction::Dropped);
            }
        }
        match self.cookie_check.verify_packet(Some(ip), datagram, out) {
            Ok(_) if self.handshakes.check_proven(source) == Verdict::Answer => None,
            Ok(_) => {
                bump(&self.counters.handshakes_limited);
                Some(RxAction::Dropped)
            }
            Err(TunnResult::WriteToNetwork(cookie)) => {
                send(src, cookie);
                Some(RxAction::Consumed)
            }
            Err(_) => Some(self.miss(Miss::Rejected)),
        }
    }

    /// The peer a WireGuard message is for, found the same way whether it came direct or
    /// relayed: an initiation by the sender's static key (one Diffie-Hellman), anything else by
    /// the receiver index we handed out (one hash lookup; an unknown index costs nothing more).
    fn lookup<'t>(&self, table: &'t PeerTable, packet: &Packet<'_>) -> Result<&'t Arc<Peer>, Miss> {
        let receiver_idx = match packet {
            Packet::HandshakeInit(init) => {
                let half = parse_handshake_anon(&self.secret, &self.public, init)
                    .map_err(|_| Miss::Rejected)?;
                return table
                    .by_wg_key
                    .get(&half.peer_static_public)
                    .ok_or(Miss::UnknownKey);
            }
            Packet::HandshakeResponse(p) => p.receiver_idx,
            Packet::PacketCookieReply(p) => p.receiver_idx,
            Packet::PacketData(p) => p.receiver_idx,
        };
        table
            .by_index
            .get(&(receiver_idx >> 8))
            .ok_or(Miss::UnknownIndex)
    }

    /// Counts a datagram no peer takes.
    fn miss(&self, miss: Miss) -> RxAction {
        bump(match miss {
            Miss::Rejected => &self.counters.rejected,
            Miss::UnknownKey => &self.counters.unknown_key_handshakes,
            Miss::UnknownIndex => &self.counters.unknown_index,
        });
        RxAction::Dropped
    }

    /// Starts a handshake with the peer whose direct endpoint is `src` (one lookup in the
    /// endpoint index, one peer lock), unless one is in progress or a session is younger than
    /// [`REHANDSHAKE_AFTER`] (so a spoofer replaying stale indices cannot keep us rekeying).
    fn rehandshake_from(
        &self,
        src: SocketAddr,
        out: &mut [u8],
        send: &mut dyn FnMut(SocketAddr, &[u8]),
    ) {
        let Some(peer) = self.peer_at(src) else {
            return;
        };
        let mut st = peer.state.lock();
        if st.removed || st.path != Path::Direct(src) {
            return;
        }
        let tunn = self.tunn(&peer, &mut st);
        if tunn
            .time_since_last_handshake()
            .is_some_and(|d| d < REHANDSHAKE_AFTER)
        {
            return;
        }
        if let TunnResult::WriteToNetwork(init) = tunn.format_handshake_initiation(out, false) {
            send(src, init);
        }
    }

    fn is_relay(&self, src: &SocketAddr) -> bool {
        self.relays.load().contains(src)
    }

    fn on_control(&self, src: SocketAddr, class: Datagram<'_>) -> RxAction {
        let Some((kind, bytes)) = class.control() else {
            bump(&self.counters.malformed);
            return RxAction::Dropped;
        };
        let delivered = self.control.as_ref().is_some_and(|c| {
            let d = ControlDatagram {
                from: src,
                kind,
                bytes: bytes.to_vec(),
            };
            c.send(d, self.is_relay(&src))
        });
        if delivered {
            bump(&self.counters.control_received);
            RxAction::Control
        } else {
            bump(&self.counters.control_dropped);
            RxAction::Dropped
        }
    }

    /// `relayed`: the registry that relayed the datagram (then `src` is that registry).
    #[allow(clippy::too_many_arguments)]
    fn decapsulate(
        &self,
        peer: &Arc<Peer>,
        src: SocketAddr,
        relayed: Option<SocketAddr>,
        datagram: &[u8],
        is_data: bool,
        out: &mut [u8],
        send: &mut dyn FnMut(SocketAddr, &[u8]),
    ) -> RxAction {
        let mut st = peer.state.lock();
        if st.removed {
            peer.counters.drop_one(DropReason::Removed);
            return RxAction::Dropped;
        }
        // Where this datagram came from, as a path: replies go back the same way.
        let came_by = relayed.map_or(Path::Direct(src), Path::Relay);
        let ip = relayed.is_none().then_some(src.ip());
        if st.tunn.is_none() && datagram.first() != Some(&1) {
            // Only an initiation can be meant for a peer without a `Tunn` (none of our
            // sessions or handshakes exists); making one for anything else would let junk
            // wake idle peers.
            drop(st);
            peer.counters.drop_one(DropReason::Rejected);
            bump(&self.counters.rejected);
            return RxAction::Dropped;
        }
        match self.tunn(peer, &mut st).decapsulate(ip, datagram, out) {
            TunnResult::WriteToNetwork(reply) => {
                send_on(came_by, peer.addr48, reply, send);
                send_queued(&mut st, peer, came_by, self.out_room(), out, send);
                let roamed = self.roam(peer, &mut st, came_by);
                drop(st);
                if !is_data {
                    bump(&self.counters.handshakes_completed);
                    self.emit(DataPlaneEvent::HandshakeDone(peer.public_key));
                }
                self.roamed(peer, roamed, came_by);
                RxAction::Consumed
            }
            TunnResult::WriteToTunnelV6(pkt, inner_src) => {
                if inner_src != peer.ipv6 {
                    drop(st);
                    peer.counters.drop_one(DropReason::Spoofed);
                    bump(&self.counters.spoofed);
                    return RxAction::Dropped;
                }
                // Only our own address: never another local address of the host, nor onward
                // (TUN mode with forwarding on). boringtun checked the header is complete.
                if pkt.get(24..40) != Some(&self.own_ip.octets()[..]) {
                    drop(st);
                    peer.counters.drop_one(DropReason::NotForUs);
                    bump(&self.counters.not_for_us);
                    return RxAction::Dropped;
                }
                let len = pkt.len();
                debug_assert_eq!(pkt.as_ptr(), out.as_ptr());
                let roamed = self.roam(peer, &mut st, came_by);
                drop(st);
                self.roamed(peer, roamed, came_by);
                peer.counters
                    .rx_bytes
                    .fetch_add(len as u64, Ordering::Relaxed);
                peer.counters.rx_packets.fetch_add(1, Ordering::Relaxed);
                RxAction::Tunnel { len }
            }
            TunnResult::WriteToTunnelV4(..) => {
                drop(st);
                peer.counters.drop_one(DropReason::Spoofed);
                bump(&self.counters.spoofed);
                RxAction::Dropped
            }
            TunnResult::Done => {
                // A keepalive (authenticated data packet) also proves the endpoint.
                let roamed = is_data && self.roam(peer, &mut st, came_by);
                drop(st);
                self.roamed(peer, roamed, came_by);
                RxAction::Consumed
            }
            TunnResult::Err(e) => {
                drop(st);
                tracing::trace!(peer = %peer.addr48, error = ?e, "datagram rejected");
                peer.counters.drop_one(DropReason::Rejected);
                bump(&self.counters.rejected);
                RxAction::Dropped
            }
        }
    }

    /// Moves the peer's path to `came_by` if roaming allows it (see [`PeerState::roam`]),
    /// keeping the endpoint index in step. True if the path moved.
    fn roam(&self, peer: &Arc<Peer>, st: &mut PeerState, came_by: Path) -> bool {
        let old = st.path;
        let moved = st.roam(came_by);
        if moved {
            self.reindex_endpoint(peer, old, came_by);
        }
        moved
    }

    /// Reports a path the data plane took by itself.
    fn roamed(&self, peer: &Peer, roamed: bool, path: Path) {
        if roamed {
            self.emit(DataPlaneEvent::Roamed {
                key: peer.public_key,
                path,
            });
        }
    }
}

impl PeerState {
    /// An authenticated datagram came by `came_by`. A direct path follows the peer to its new
    /// address (roaming); a peer without a path takes the one that works. A relayed path is
    /// changed only by the node core, which probes before it switches. True if the path moved.
    fn roam(&mut self, came_by: Path) -> bool {
        let moves = match (self.path, came_by) {
            (Path::None, _) => true,
            (Path::Direct(cur), Path::Direct(new)) => cur != new,
            _ => false,
        };
        if moves {
            self.set_path(came_by);
        }
        moves
    }
}

/// Sends the packets WireGuard queued while a handshake ran, along `path`. `out` must hold
/// `room` bytes (the largest packet the core queues, encrypted): boringtun panics on a shorter
/// buffer, so a caller that breaks the contract leaves the queue for later instead.
fn send_queued(
    st: &mut PeerState,
    peer: &Peer,
    path: Path,
    room: usize,
    out: &mut [u8],
    send: &mut dyn FnMut(SocketAddr, &[u8]),
) {
    if out.len() < room {
        debug_assert!(false, "output buffer {} < {room}", out.len());
        tracing::error!(
            have = out.len(),
            room,
            "output buffer too small to drain the queue"
        );
        return;
    }
    let Some(tunn) = st.tunn.as_mut() else {
        return;
    };
    while let TunnResult::WriteToNetwork(p) = tunn.decapsulate(None, &[], out) {
        if p.first() == Some(&4) {
            count_tx(peer, p.len());
        }
        send_on(path, peer.addr48, p, send);
    }
}
