//! The inbound path: one received UDP datagram becomes an inner packet, WireGuard bookkeeping,
//! a control datagram for the node core, or a counted drop. Relayed WireGuard is accepted from
//! configured registries only; an authenticated datagram may move the peer's path (roaming).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::{Packet, Tunn, TunnResult};

use super::counters::bump;
use super::outbound::{count_tx, send_on};
use super::table::PeerTable;
use super::{normalize, Core};
use crate::mapping::Addr48;
use crate::wg::events::DataPlaneEvent;
use crate::wg::peer::{DropReason, Peer, PeerState};
use crate::wg::Path;
use crate::wire::classify::{classify, ControlDatagram, Datagram};

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
    /// (`out` must hold at least the datagram's length; 65535 is always enough). Replies
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
        let table = self.table.load();
        let peer = match packet {
            Packet::HandshakeInit(ref init) => {
                // Cheap MAC check and rate limit before the Diffie-Hellman below.
                match self
                    .rate_limiter
                    .verify_packet(Some(src.ip()), datagram, out)
                {
                    Ok(_) => {}
                    Err(TunnResult::WriteToNetwork(cookie)) => {
                        send(src, cookie);
                        return RxAction::Consumed;
                    }
                    Err(_) => {
                        bump(&self.counters.rejected);
                        return RxAction::Dropped;
                    }
                }
                let Ok(half) = parse_handshake_anon(&self.secret, &self.public, init) else {
                    bump(&self.counters.rejected);
                    return RxAction::Dropped;
                };
                match table.by_wg_key.get(&half.peer_static_public) {
                    Some(p) => p,
                    None => {
                        bump(&self.counters.unknown_key_handshakes);
                        tracing::debug!(%src, "handshake from an untrusted key dropped");
                        return RxAction::Dropped;
                    }
                }
            }
            Packet::HandshakeResponse(ref p) => match table.by_index.get(&(p.receiver_idx >> 8)) {
                Some(p) => p,
                None => return self.unknown_index(),
            },
            Packet::PacketCookieReply(ref p) => match table.by_index.get(&(p.receiver_idx >> 8)) {
                Some(p) => p,
                None => return self.unknown_index(),
            },
            Packet::PacketData(ref p) => match table.by_index.get(&(p.receiver_idx >> 8)) {
                Some(p) => p,
                None => {
                    // A peer that still sends on a session we forgot (we restarted): offer it
                    // a new handshake at once instead of waiting for its rekey timeout.
                    self.rehandshake_from(&table, src, out, send);
                    return self.unknown_index();
                }
            },
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
        let table = self.table.load();
        let peer = match packet {
            Packet::HandshakeInit(ref init) => {
                let Ok(half) = parse_handshake_anon(&self.secret, &self.public, init) else {
                    bump(&self.counters.rejected);
                    return RxAction::Dropped;
                };
                match table.by_wg_key.get(&half.peer_static_public) {
                    Some(p) => p,
                    None => {
                        bump(&self.counters.unknown_key_handshakes);
                        return RxAction::Dropped;
                    }
                }
            }
            Packet::HandshakeResponse(ref p) => match table.by_index.get(&(p.receiver_idx >> 8)) {
                Some(p) => p,
                None => return self.unknown_index(),
            },
            Packet::PacketCookieReply(ref p) => match table.by_index.get(&(p.receiver_idx >> 8)) {
                Some(p) => p,
                None => return self.unknown_index(),
            },
            Packet::PacketData(ref p) => match table.by_index.get(&(p.receiver_idx >> 8)) {
                Some(p) => p,
                None => return self.unknown_index(),
            },
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

    /// Starts a handshake with the peer whose endpoint is `src`, unless one is in progress.
    fn rehandshake_from(
        &self,
        table: &PeerTable,
        src: SocketAddr,
        out: &mut [u8],
        send: &mut dyn FnMut(SocketAddr, &[u8]),
    ) {
        for peer in table.by_addr.values() {
            let mut st = peer.state.lock();
            if st.removed || st.path != Path::Direct(src) {
                continue;
            }
            if let TunnResult::WriteToNetwork(init) =
                st.tunn.format_handshake_initiation(out, false)
            {
                send(src, init);
            }
            return;
        }
    }

    fn unknown_index(&self) -> RxAction {
        bump(&self.counters.unknown_index);
        RxAction::Dropped
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
        peer: &Peer,
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
        match st.tunn.decapsulate(ip, datagram, out) {
            TunnResult::WriteToNetwork(reply) => {
                send_on(came_by, peer.addr48, reply, send);
                send_queued(&mut st, peer, came_by, out, send);
                let roamed = st.roam(came_by);
                drop(st);
                if !is_data {
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
                let len = pkt.len();
                debug_assert_eq!(pkt.as_ptr(), out.as_ptr());
                let roamed = st.roam(came_by);
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
                let roamed = is_data && st.roam(came_by);
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

/// Sends the packets WireGuard queued while a handshake ran, along `path`.
fn send_queued(
    st: &mut PeerState,
    peer: &Peer,
    path: Path,
    out: &mut [u8],
    send: &mut dyn FnMut(SocketAddr, &[u8]),
) {
    while let TunnResult::WriteToNetwork(p) = st.tunn.decapsulate(None, &[], out) {
        if p.first() == Some(&4) {
            count_tx(peer, p.len());
        }
        send_on(path, peer.addr48, p, send);
    }
}
