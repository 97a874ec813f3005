//! The data-plane core: peer table, trust and anti-spoofing rules around boringtun's `Tunn`.
//!
//! No sockets and no threads here: the I/O driver (see [`super::io`]) feeds datagrams and inner
//! packets in and sends what comes out, so the same code runs in unit tests with two cores
//! exchanging datagrams through in-memory queues.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use parking_lot::Mutex;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};

use super::events::{DataPlaneEvent, EventSender};
use super::peer::{DropReason, Peer, PeerState, PeerStatus};
use crate::identity::{Identity, PublicKey};
use crate::mapping::{Addr48, NetworkPrefix};
use crate::wg::Path;
use crate::wire::classify::{classify, ControlDatagram, Datagram};
use crate::wire::relay;
use std::time::SystemTime;

/// Handshakes per second (over all peers) before boringtun asks initiators for a cookie.
const HANDSHAKE_RATE_LIMIT: u64 = 100;

/// Where control datagrams (registry messages and probes, already classified) go.
pub type ControlSender = tokio::sync::mpsc::Sender<ControlDatagram>;

/// Called with the destination addr48 when an outbound packet has no peer (a later issue turns
/// this into a registry lookup). Must be cheap and must not block: it runs on the hot path.
pub type NoPeerHook = Arc<dyn Fn(Addr48) + Send + Sync>;

/// Counters that belong to no known peer.
#[derive(Debug, Default)]
pub struct GlobalCounters {
    unknown_key_handshakes: AtomicU64,
    malformed: AtomicU64,
    spoofed: AtomicU64,
    no_peer: AtomicU64,
    not_overlay: AtomicU64,
    unknown_index: AtomicU64,
    rejected: AtomicU64,
    control_received: AtomicU64,
    control_dropped: AtomicU64,
    send_errors: AtomicU64,
}

/// Who a trusted peer is, as a lookup in the peer table answers: no counters, no paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerId {
    /// The peer's Ed25519 public key.
    pub public_key: PublicKey,
    /// Its overlay address.
    pub addr48: Addr48,
    /// Its overlay IPv6 address.
    pub ipv6: Ipv6Addr,
    /// Its hostname, if one is known.
    pub hostname: Option<String>,
}

impl PeerId {
    fn of(p: &Peer) -> Self {
        PeerId {
            public_key: p.public_key,
            addr48: p.addr48,
            ipv6: p.ipv6,
            hostname: p.hostname.lock().clone(),
        }
    }
}

/// A snapshot of [`GlobalCounters`] for status output.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct CountersSnapshot {
    /// Handshake initiations from keys that are not in the peer table (untrusted).
    pub unknown_key_handshakes: u64,
    /// Datagrams that are neither WireGuard nor control, or do not parse.
    pub malformed: u64,
    /// Decapsulated packets whose inner source was not the sending peer's address.
    pub spoofed: u64,
    /// Outbound packets to an overlay address with no peer.
    pub no_peer: u64,
    /// Outbound packets to an address outside the overlay /80.
    pub not_overlay: u64,
    /// WireGuard messages naming a receiver index we did not hand out (stale or forged).
    pub unknown_index: u64,
    /// Datagrams WireGuard refused (bad MAC, replay, no session, rate limit).
    pub rejected: u64,
    /// Control datagrams handed to the control plane.
    pub control_received: u64,
    /// Control datagrams dropped because the control plane's queue was full or closed.
    pub control_dropped: u64,
    /// UDP sends the kernel refused (buffer full for too long, unreachable); one GSO send of
    /// many datagrams counts once.
    #[serde(default)]
    pub send_errors: u64,
    /// Data-plane events (needs a path, roamed, handshake done) dropped because the node
    /// core's queue was full.
    #[serde(default)]
    pub events_dropped: u64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl GlobalCounters {
    /// Reads all counters.
    pub fn snapshot(&self) -> CountersSnapshot {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CountersSnapshot {
            unknown_key_handshakes: l(&self.unknown_key_handshakes),
            malformed: l(&self.malformed),
            spoofed: l(&self.spoofed),
            no_peer: l(&self.no_peer),
            not_overlay: l(&self.not_overlay),
            unknown_index: l(&self.unknown_index),
            rejected: l(&self.rejected),
            control_received: l(&self.control_received),
            control_dropped: l(&self.control_dropped),
            send_errors: l(&self.send_errors),
            events_dropped: 0,
        }
    }
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

/// Errors from changing the peer table.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeerTableError {
    /// The key is our own.
    #[error("{0} is this node's own key; a node cannot be its own peer")]
    OwnKey(PublicKey),
    /// Another key already owns this addr48 (a 48-bit collision).
    #[error("address {addr} is already taken by peer {existing}; refusing {new}")]
    AddressCollision {
        /// The contested address.
        addr: Addr48,
        /// The peer that has it.
        existing: PublicKey,
        /// The key that was refused.
        new: PublicKey,
    },
    /// The key is not in the table.
    #[error("no peer with key {0}")]
    NotFound(PublicKey),
}

impl From<PeerTableError> for crate::error::PilotError {
    fn from(e: PeerTableError) -> Self {
        crate::error::PilotError::invalid(e.to_string(), "fix the [[peer]] entries in the config")
    }
}

#[derive(Default, Clone)]
struct PeerTable {
    by_addr: HashMap<Addr48, Arc<Peer>>,
    by_index: HashMap<u32, Arc<Peer>>,
    by_wg_key: HashMap<[u8; 32], Arc<Peer>>,
}

/// The data-plane core. Cheap to share (`Arc<Core>`); every method takes `&self`.
///
/// Locking: the peer table is an immutable snapshot swapped atomically on change (readers never
/// lock); each peer has its own lock around its `Tunn` and endpoint.
pub struct Core {
    secret: x25519_dalek::StaticSecret,
    public: x25519_dalek::PublicKey,
    own_key: PublicKey,
    network: NetworkPrefix,
    keepalive: Option<u16>,
    table: ArcSwap<PeerTable>,
    table_writer: Mutex<()>,
    rate_limiter: Arc<RateLimiter>,
    counters: GlobalCounters,
    control: Option<ControlSender>,
    no_peer_hook: Option<NoPeerHook>,
    /// Where data-plane events go (needs a path, roamed, handshake done).
    events: Option<EventSender>,
    /// Registries whose relay deliveries we accept.
    relays: ArcSwap<Vec<SocketAddr>>,
}

impl Core {
    /// A core for `identity` in `network`. `keepalive_secs` = 0 disables persistent keepalive.
    /// Control datagrams go to `control`, data-plane events to `events`.
    pub fn new(
        identity: &Identity,
        network: NetworkPrefix,
        keepalive_secs: u16,
        control: Option<ControlSender>,
        no_peer_hook: Option<NoPeerHook>,
        events: Option<EventSender>,
    ) -> Self {
        let secret = identity.wg_secret();
        let public = x25519_dalek::PublicKey::from(&secret);
        Core {
            rate_limiter: Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT)),
            secret,
            public,
            own_key: identity.public_key(),
            network,
            keepalive: (keepalive_secs > 0).then_some(keepalive_secs),
            table: ArcSwap::from_pointee(PeerTable::default()),
            table_writer: Mutex::new(()),
            counters: GlobalCounters::default(),
            control,
            no_peer_hook,
            events,
            relays: ArcSwap::from_pointee(Vec::new()),
        }
    }

    /// Sets the registries whose relay deliveries (`RelayDeliver` frames) are accepted.
    pub fn set_relays(&self, relays: Vec<SocketAddr>) {
        self.relays
            .store(Arc::new(relays.into_iter().map(normalize).collect()));
    }

    /// Our overlay network.
    pub fn network(&self) -> NetworkPrefix {
        self.network
    }

    /// Global counters.
    pub fn counters(&self) -> CountersSnapshot {
        CountersSnapshot {
            events_dropped: self.events_dropped(),
            ..self.counters.snapshot()
        }
    }

    /// Adds a trusted peer (or updates the endpoint of an existing one). Traffic flows at once.
    pub fn add_peer(
        &self,
        key: PublicKey,
        endpoint: Option<SocketAddr>,
    ) -> Result<(), PeerTableError> {
        if key == self.own_key {
            return Err(PeerTableError::OwnKey(key));
        }
        let _w = self.table_writer.lock();
        let cur = self.table.load();
        let addr = key.addr48();
        if let Some(existing) = cur.by_addr.get(&addr) {
            if existing.public_key != key {
                return Err(PeerTableError::AddressCollision {
                    addr,
                    existing: existing.public_key,
                    new: key,
                });
            }
            if let Some(ep) = endpoint {
                existing.state.lock().set_path(Path::Direct(normalize(ep)));
            }
            return Ok(());
        }
        let index = loop {
            let i = OsRng.next_u32() & 0x00ff_ffff;
            if !cur.by_index.contains_key(&i) {
                break i;
            }
        };
        let wg_public = key.wg_public();
        let tunn = Tunn::new(
            self.secret.clone(),
            wg_public,
            None,
            self.keepalive,
            index,
            Some(Arc::clone(&self.rate_limiter)),
        );
        let peer = Arc::new(Peer {
            public_key: key,
            wg_public: wg_public.to_bytes(),
            addr48: addr,
            ipv6: self.network.ipv6(addr),
            index,
            hostname: Mutex::new(None),
            state: Mutex::new(PeerState {
                tunn,
                path: endpoint.map_or(Path::None, |e| Path::Direct(normalize(e))),
                last_change: endpoint.map(|_| SystemTime::now()),
                removed: false,
            }),
            counters: Default::default(),
            rtt_us: AtomicU64::new(u64::MAX),
            needs_path_queued: AtomicBool::new(false),
        });
        let mut next = PeerTable::clone(&cur);
        next.by_addr.insert(addr, Arc::clone(&peer));
        next.by_index.insert(index, Arc::clone(&peer));
        next.by_wg_key.insert(peer.wg_public, peer);
        self.table.store(Arc::new(next));
        Ok(())
    }

    /// Removes a peer. From the moment this returns nothing passes to or from it.
    pub fn remove_peer(&self, key: &PublicKey) -> Result<(), PeerTableError> {
        let _w = self.table_writer.lock();
        let cur = self.table.load();
        let Some(peer) = cur
            .by_addr
            .get(&key.addr48())
            .filter(|p| p.public_key == *key)
        else {
            return Err(PeerTableError::NotFound(*key));
        };
        let peer = Arc::clone(peer);
        let mut next = PeerTable::clone(&cur);
        next.by_addr.remove(&peer.addr48);
        next.by_index.remove(&peer.index);
        next.by_wg_key.remove(&peer.wg_public);
        self.table.store(Arc::new(next));
        // Workers that loaded the old table check this flag under the peer's lock.
        peer.state.lock().removed = true;
        Ok(())
    }

    /// Sets (or clears) a peer's endpoint.
    pub fn set_endpoint(
        &self,
        key: &PublicKey,
        endpoint: Option<SocketAddr>,
    ) -> Result<(), PeerTableError> {
        let peer = self.peer(key).ok_or(PeerTableError::NotFound(*key))?;
        peer.state
            .lock()
            .set_path(endpoint.map_or(Path::None, |e| Path::Direct(normalize(e))));
        Ok(())
    }

    /// Sets how a peer's datagrams travel. On a change, a handshake starts at once over the new
    /// path if there is no session (so packets queued meanwhile flow), or a keepalive goes out
    /// on it (so the peer sees the new path); both go through `send`.
    pub fn set_path(
        &self,
        key: &PublicKey,
        path: Path,
        send: &mut dyn FnMut(SocketAddr, &[u8]),
    ) -> Result<(), PeerTableError> {
        let peer = self.peer(key).ok_or(PeerTableError::NotFound(*key))?;
        let path = match path {
            Path::Direct(a) => Path::Direct(normalize(a)),
            Path::Relay(a) => Path::Relay(normalize(a)),
            Path::None => Path::None,
        };
        let mut st = peer.state.lock();
        if st.removed || st.path == path {
            return Ok(());
        }
        st.set_path(path);
        let mut buf = [0u8; 256];
        let has_session = st
            .tunn
            .time_since_last_handshake()
            .is_some_and(|d| d < std::time::Duration::from_secs(170));
        let r = if has_session {
            st.tunn.encapsulate(&[], &mut buf)
        } else {
            st.tunn.format_handshake_initiation(&mut buf, true)
        };
        if let TunnResult::WriteToNetwork(p) = r {
            send_on(path, peer.addr48, p, send);
        }
        Ok(())
    }

    /// Records the round-trip time measured on a peer's path (`None` clears it).
    pub fn set_rtt(&self, key: &PublicKey, rtt: Option<std::time::Duration>) {
        if let Some(p) = self.peer(key) {
            let v = rtt.map_or(u64::MAX, |d| d.as_micros().min(u64::MAX as u128 - 1) as u64);
            p.rtt_us.store(v, Ordering::Relaxed);
        }
    }

    /// The node core took a `NeedsPath` for `key`: the next packet without a path may report
    /// again.
    pub fn rearm_needs_path(&self, key: &PublicKey) {
        if let Some(p) = self.peer(key) {
            p.needs_path_queued.store(false, Ordering::Release);
        }
    }

    /// Data-plane events dropped because the node core's queue was full.
    pub fn events_dropped(&self) -> u64 {
        self.events.as_ref().map_or(0, |e| e.dropped())
    }

    fn emit(&self, ev: DataPlaneEvent) {
        if let Some(e) = &self.events {
            e.send(ev);
        }
    }

    /// A peer's current path.
    pub fn path(&self, key: &PublicKey) -> Option<Path> {
        self.peer(key).map(|p| p.state.lock().path)
    }

    /// Sets the hostname shown for a peer.
    pub fn set_hostname(
        &self,
        key: &PublicKey,
        hostname: Option<String>,
    ) -> Result<(), PeerTableError> {
        let peer = self.peer(key).ok_or(PeerTableError::NotFound(*key))?;
        *peer.hostname.lock() = hostname;
        Ok(())
    }

    /// The peer with this key, if trusted.
    pub fn peer(&self, key: &PublicKey) -> Option<Arc<Peer>> {
        self.table
            .load()
            .by_addr
            .get(&key.addr48())
            .filter(|p| p.public_key == *key)
            .cloned()
    }

    /// The trusted peer with this overlay IPv6 address: its key and hostname.
    pub fn peer_by_ip(&self, ip: &Ipv6Addr) -> Option<PeerId> {
        let addr = self.network.addr48_of(*ip)?;
        let table = self.table.load();
        table
            .by_addr
            .get(&addr)
            .filter(|p| p.ipv6 == *ip)
            .map(|p| PeerId::of(p))
    }

    /// The trusted peer with this key: its key and hostname.
    pub fn peer_by_key(&self, key: &PublicKey) -> Option<PeerId> {
        self.peer(key).map(|p| PeerId::of(&p))
    }

    /// The trusted peer known by this hostname (a scan of the table, building no status).
    pub fn peer_by_hostname(&self, hostname: &str) -> Option<PeerId> {
        let table = self.table.load();
        let found = table
            .by_addr
            .values()
            .find(|p| p.hostname.lock().as_deref() == Some(hostname))
            .map(|p| PeerId::of(p));
        found
    }

    /// Status of every peer, sorted by address.
    pub fn peers(&self) -> Vec<PeerStatus> {
        let table = self.table.load();
        let mut v: Vec<PeerStatus> = table.by_addr.values().map(|p| p.status()).collect();
        v.sort_by(|a, b| a.address.cmp(&b.address));
        v
    }

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
            c.try_send(ControlDatagram {
                from: src,
                kind,
                bytes: bytes.to_vec(),
            })
            .is_ok()
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

    /// Handles one outbound inner packet. The datagram to send lands at the start of `out`
    /// (`out` must hold `packet.len() + 32` and at least 148 bytes).
    pub fn on_outbound(&self, packet: &[u8], out: &mut [u8]) -> TxAction {
        let Some(dst) = inner_dst(packet) else {
            return TxAction::Ignored;
        };
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
                let _ = st.tunn.encapsulate(packet, out);
                drop(st);
                if let Some(e) = &self.events {
                    e.needs_path(peer.public_key, &peer.needs_path_queued);
                }
                peer.counters.drop_one(DropReason::NoEndpoint);
                return TxAction::Dropped;
            }
        };
        match st.tunn.encapsulate(packet, &mut out[off..]) {
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

    /// Drives WireGuard timers (handshake retries, rekeys, keepalives). Call every ~250 ms;
    /// `reset_rate_limit` once a second. `buf` must hold at least 148 bytes.
    pub fn tick(
        &self,
        reset_rate_limit: bool,
        buf: &mut [u8],
        send: &mut dyn FnMut(SocketAddr, &[u8]),
    ) {
        if reset_rate_limit {
            self.rate_limiter.reset_count();
        }
        let table = self.table.load();
        for peer in table.by_addr.values() {
            let mut st = peer.state.lock();
            if st.removed {
                continue;
            }
            let path = st.path;
            match st.tunn.update_timers(buf) {
                TunnResult::WriteToNetwork(p) => send_on(path, peer.addr48, p, send),
                TunnResult::Err(e) => {
                    tracing::trace!(peer = %peer.addr48, error = ?e, "timer");
                }
                _ => {}
            }
        }
    }

    /// Counts a UDP send the kernel refused.
    pub fn count_send_error(&self) {
        bump(&self.counters.send_errors);
    }

    /// Number of peers.
    pub fn peer_count(&self) -> usize {
        self.table.load().by_addr.len()
    }
}

/// Sends a WireGuard datagram for `peer` along `path` (wrapped in a relay frame when relayed).
fn send_on(path: Path, peer: Addr48, data: &[u8], send: &mut dyn FnMut(SocketAddr, &[u8])) {
    match path {
        Path::None => {}
        Path::Direct(a) => send(a, data),
        Path::Relay(r) => {
            let mut buf = [0u8; 2048];
            let n = relay::HEADER_LEN + data.len();
            if n <= buf.len() {
                relay::encode_header(&mut buf, relay::RELAY_SEND, peer);
                buf[relay::HEADER_LEN..n].copy_from_slice(data);
                send(r, &buf[..n]);
            }
        }
    }
}

impl PeerState {
    fn set_path(&mut self, path: Path) {
        if self.path != path {
            self.path = path;
            self.last_change = Some(SystemTime::now());
        }
    }

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

fn count_tx(peer: &Peer, len: usize) {
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

/// IPv4-mapped IPv6 socket addresses become plain IPv4 ones, so one endpoint has one form.
pub fn normalize(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => a,
        },
        SocketAddr::V4(_) => a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::classify::ControlKind;
    use proptest::prelude::*;
    use std::collections::VecDeque;
    use std::sync::atomic::AtomicUsize;

    /// A node in the simulated network: a core, its outer address, what reached its inner side.
    struct Node {
        core: Arc<Core>,
        addr: SocketAddr,
        ip: Ipv6Addr,
        delivered: Vec<Vec<u8>>,
    }

    fn node(seed: u8, addr: &str) -> (Node, PublicKey) {
        let id = Identity::from_seed([seed; 32]);
        let ip = DEFAULT_NET.ipv6(id.addr48());
        let n = Node {
            core: Arc::new(Core::new(&id, DEFAULT_NET, 25, None, None, None)),
            addr: addr.parse().unwrap(),
            ip,
            delivered: Vec::new(),
        };
        (n, id.public_key())
    }

    const DEFAULT_NET: NetworkPrefix = crate::mapping::DEFAULT_NETWORK;

    /// A node whose core reports data-plane events (on a queue of 4).
    fn node_with_events(
        seed: u8,
        addr: &str,
    ) -> (Node, PublicKey, crate::wg::events::EventReceiver) {
        let (mut n, key) = node(seed, addr);
        let id = Identity::from_seed([seed; 32]);
        let (tx, rx) = crate::wg::events::channel(4);
        n.core = Arc::new(Core::new(&id, DEFAULT_NET, 25, None, None, Some(tx)));
        let rx = rx(Arc::clone(&n.core));
        (n, key, rx)
    }

    /// Two datagram queues between nodes, like a wire.
    type Wire = VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>;

    fn ipv6_packet(src: Ipv6Addr, dst: Ipv6Addr, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
        p[6] = 59; // no next header
        p[7] = 64;
        p[8..24].copy_from_slice(&src.octets());
        p[24..40].copy_from_slice(&dst.octets());
        p.extend_from_slice(payload);
        p
    }

    fn send_inner(n: &Node, packet: &[u8], wire: &mut Wire) -> TxAction {
        let mut out = vec![0u8; 65535];
        let a = n.core.on_outbound(packet, &mut out);
        if let TxAction::Send { dst, len } = a {
            wire.push_back((n.addr, dst, out[..len].to_vec()));
        }
        a
    }

    /// Delivers datagrams until the wire is quiet (bounded).
    fn pump(nodes: &mut [&mut Node], wire: &mut Wire) {
        let mut out = vec![0u8; 65535];
        for _ in 0..100 {
            let Some((from, to, d)) = wire.pop_front() else {
                return;
            };
            let Some(n) = nodes.iter_mut().find(|n| n.addr == to) else {
                continue;
            };
            let me = n.addr;
            let mut replies = Vec::new();
            let a = n.core.on_datagram(from, &d, &mut out, &mut |dst, p| {
                replies.push((me, dst, p.to_vec()))
            });
            if let RxAction::Tunnel { len } = a {
                n.delivered.push(out[..len].to_vec());
            }
            wire.extend(replies);
        }
        panic!("the wire did not go quiet");
    }

    fn pair() -> (Node, Node, PublicKey, PublicKey) {
        let (a, ka) = node(1, "198.51.100.1:51820");
        let (b, kb) = node(2, "198.51.100.2:51820");
        a.core.add_peer(kb, Some(b.addr)).unwrap();
        b.core.add_peer(ka, Some(a.addr)).unwrap();
        (a, b, ka, kb)
    }

    #[test]
    fn handshake_completes_and_the_queued_packet_arrives() {
        let (mut a, mut b, _, _) = pair();
        let mut wire = Wire::new();
        let pkt = ipv6_packet(a.ip, b.ip, b"hello");
        // No session yet: the packet waits and a handshake initiation goes out.
        assert!(matches!(
            send_inner(&a, &pkt, &mut wire),
            TxAction::Send { len: 148, .. }
        ));
        pump(&mut [&mut a, &mut b], &mut wire);
        assert_eq!(b.delivered, vec![pkt.clone()]);
        assert!(a.core.peers()[0].last_handshake.is_some());
        assert!(b.core.peers()[0].last_handshake.is_some());
        // Now a packet goes straight through, both ways.
        let back = ipv6_packet(b.ip, a.ip, b"world");
        send_inner(&b, &back, &mut wire);
        pump(&mut [&mut a, &mut b], &mut wire);
        assert_eq!(a.delivered, vec![back.clone()]);
        let sa = &b.core.peers()[0];
        assert_eq!(sa.rx_bytes, pkt.len() as u64);
        assert_eq!(sa.tx_bytes, back.len() as u64);
    }

    #[test]
    fn the_peer_table_answers_lookups_by_ip_key_and_hostname() {
        let (a, b, _, kb) = pair();
        a.core.set_hostname(&kb, Some("node-b".into())).unwrap();
        let found = a.core.peer_by_ip(&b.ip).unwrap();
        assert_eq!(found.public_key, kb);
        assert_eq!(found.ipv6, b.ip);
        assert_eq!(found.hostname.as_deref(), Some("node-b"));
        assert_eq!(a.core.peer_by_key(&kb), Some(found.clone()));
        assert_eq!(a.core.peer_by_hostname("node-b"), Some(found));
        assert_eq!(a.core.peer_count(), 1);
        // Our own address, an unknown key and a name nobody has are no peers.
        assert_eq!(a.core.peer_by_ip(&a.ip), None);
        let (_, kc) = node(3, "198.51.100.3:51820");
        assert_eq!(a.core.peer_by_key(&kc), None);
        assert_eq!(a.core.peer_by_hostname("node-c"), None);
        // An address outside the overlay is no peer either.
        assert_eq!(a.core.peer_by_ip(&"2001:db8::1".parse().unwrap()), None);
    }

    #[test]
    fn a_handshake_from_an_unknown_key_is_dropped_and_counted() {
        let (mut a, mut b, _, kb) = pair();
        let (mut c, _) = node(3, "198.51.100.3:51820");
        c.core.add_peer(kb, Some(b.addr)).unwrap();
        let mut wire = Wire::new();
        send_inner(&c, &ipv6_packet(c.ip, b.ip, b"let me in"), &mut wire);
        pump(&mut [&mut a, &mut b, &mut c], &mut wire);
        assert!(b.delivered.is_empty());
        assert_eq!(b.core.counters().unknown_key_handshakes, 1);
        assert!(c.core.peers()[0].last_handshake.is_none());
    }

    #[test]
    fn a_spoofed_inner_source_is_dropped_and_counted() {
        let (mut a, mut b, _, _) = pair();
        let (c, _) = node(3, "198.51.100.3:51820");
        let mut wire = Wire::new();
        send_inner(&a, &ipv6_packet(a.ip, b.ip, b"hi"), &mut wire);
        pump(&mut [&mut a, &mut b], &mut wire);
        // A claims to be C inside its own tunnel.
        send_inner(&a, &ipv6_packet(c.ip, b.ip, b"i am c"), &mut wire);
        pump(&mut [&mut a, &mut b], &mut wire);
        assert_eq!(b.delivered.len(), 1);
        assert_eq!(b.core.counters().spoofed, 1);
        assert_eq!(b.core.peers()[0].drops.get("spoofed"), Some(&1));
    }

    #[test]
    fn a_removed_peer_gets_nothing_through_at_once() {
        let (mut a, mut b, ka, _) = pair();
        let mut wire = Wire::new();
        send_inner(&a, &ipv6_packet(a.ip, b.ip, b"1"), &mut wire);
        pump(&mut [&mut a, &mut b], &mut wire);
        b.core.remove_peer(&ka).unwrap();
        send_inner(&a, &ipv6_packet(a.ip, b.ip, b"2"), &mut wire);
        pump(&mut [&mut a, &mut b], &mut wire);
        assert_eq!(b.delivered.len(), 1);
        assert_eq!(b.core.counters().unknown_index, 1);
        assert_eq!(
            send_inner(&b, &ipv6_packet(b.ip, a.ip, b"3"), &mut wire),
            TxAction::Dropped
        );
        assert_eq!(b.core.counters().no_peer, 1);
    }

    #[test]
    fn an_authenticated_packet_from_a_new_address_moves_the_endpoint() {
        let (mut a, mut b, ka, _) = pair();
        let mut wire = Wire::new();
        send_inner(&a, &ipv6_packet(a.ip, b.ip, b"1"), &mut wire);
        pump(&mut [&mut a, &mut b], &mut wire);
        a.addr = "198.51.100.9:4000".parse().unwrap();
        send_inner(&a, &ipv6_packet(a.ip, b.ip, b"2"), &mut wire);
        pump(&mut [&mut a, &mut b], &mut wire);
        assert_eq!(b.delivered.len(), 2);
        let ep = b.core.peer(&ka).unwrap().status().endpoint;
        assert_eq!(ep, Some(a.addr));
        // Garbage from a third address does not move it.
        let mut out = vec![0u8; 2048];
        let junk = [4u8; 64];
        let other: SocketAddr = "198.51.100.66:1".parse().unwrap();
        b.core.on_datagram(other, &junk, &mut out, &mut |_, _| {});
        assert_eq!(b.core.peer(&ka).unwrap().status().endpoint, Some(a.addr));
    }

    #[test]
    fn a_restarted_node_offers_a_new_handshake_to_a_peer_on_a_stale_session() {
        let (mut a, mut b, ka, kb) = pair();
        let mut wire = Wire::new();
        send_inner(&a, &ipv6_packet(a.ip, b.ip, b"1"), &mut wire);
        pump(&mut [&mut a, &mut b], &mut wire);
        // B restarts: same key, empty state.
        let (mut b2, _) = node(2, "198.51.100.2:51820");
        b2.core.add_peer(ka, Some(a.addr)).unwrap();
        send_inner(&a, &ipv6_packet(a.ip, b2.ip, b"lost"), &mut wire);
        pump(&mut [&mut a, &mut b2], &mut wire);
        assert!(b2.delivered.is_empty());
        assert_eq!(b2.core.counters().unknown_index, 1);
        // The handshake B offered completed, so A's next packet arrives.
        send_inner(&a, &ipv6_packet(a.ip, b2.ip, b"2"), &mut wire);
        pump(&mut [&mut a, &mut b2], &mut wire);
        assert_eq!(b2.delivered.len(), 1, "{:?}", b2.core.counters());
        let _ = kb;
    }

    #[test]
    fn outbound_to_an_unknown_overlay_address_is_counted_and_reported() {
        let id = Identity::from_seed([1; 32]);
        let calls = Arc::new(AtomicUsize::new(0));
        let c2 = Arc::clone(&calls);
        let hook: NoPeerHook = Arc::new(move |_| {
            c2.fetch_add(1, Ordering::Relaxed);
        });
        let core = Core::new(&id, DEFAULT_NET, 25, None, Some(hook), None);
        let me = DEFAULT_NET.ipv6(id.addr48());
        let other = DEFAULT_NET.ipv6(Addr48::from_bytes([1, 2, 3, 4, 5, 6]));
        let mut out = vec![0u8; 2048];
        assert_eq!(
            core.on_outbound(&ipv6_packet(me, other, b"x"), &mut out),
            TxAction::Dropped
        );
        assert_eq!(core.counters().no_peer, 1);
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        // Outside the overlay: counted apart.
        let outside: Ipv6Addr = "2001:db8::1".parse().unwrap();
        core.on_outbound(&ipv6_packet(me, outside, b"x"), &mut out);
        assert_eq!(core.counters().not_overlay, 1);
    }

    #[test]
    fn kernel_chatter_is_ignored_without_counting() {
        let (a, _) = node(1, "198.51.100.1:1");
        let mut out = vec![0u8; 2048];
        let ll: Ipv6Addr = "fe80::1".parse().unwrap();
        let mc: Ipv6Addr = "ff02::2".parse().unwrap();
        assert_eq!(
            a.core.on_outbound(&ipv6_packet(ll, a.ip, b""), &mut out),
            TxAction::Ignored
        );
        assert_eq!(
            a.core.on_outbound(&ipv6_packet(a.ip, mc, b""), &mut out),
            TxAction::Ignored
        );
        assert_eq!(a.core.counters(), CountersSnapshot::default());
    }

    #[test]
    fn control_datagrams_go_to_the_control_plane() {
        let id = Identity::from_seed([1; 32]);
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let core = Core::new(&id, DEFAULT_NET, 25, Some(tx), None, None);
        let src: SocketAddr = "198.51.100.7:9".parse().unwrap();
        let mut out = vec![0u8; 2048];
        let a = core.on_datagram(src, b"Phello", &mut out, &mut |_, _| {});
        assert_eq!(a, RxAction::Control);
        assert_eq!(
            rx.try_recv().unwrap(),
            ControlDatagram {
                from: src,
                kind: ControlKind::Control,
                bytes: b"Phello".to_vec()
            }
        );
        assert_eq!(
            core.on_datagram(src, b"Xhello", &mut out, &mut |_, _| {}),
            RxAction::Dropped
        );
        assert_eq!(core.counters().malformed, 1);
    }

    /// Plays the registry's relay for frames on `wire` addressed to `reg`: RelaySend from a
    /// node becomes RelayDeliver to the node it names.
    fn relay_through(reg: SocketAddr, nodes: &[(&Node, PublicKey)], wire: &mut Wire) {
        for (from, to, d) in wire.iter_mut() {
            if *to != reg {
                continue;
            }
            let (target, payload) = relay::parse(d, relay::RELAY_SEND).expect("relay frame");
            let sender = nodes.iter().find(|(n, _)| n.addr == *from).unwrap().1;
            let dst = nodes
                .iter()
                .find(|(_, k)| k.addr48() == target)
                .unwrap()
                .0
                .addr;
            *d = relay::frame(relay::RELAY_DELIVER, sender.addr48(), payload);
            *from = reg;
            *to = dst;
        }
    }

    #[test]
    fn relayed_packets_reach_the_peer_and_replies_go_back_through_the_relay() {
        let reg: SocketAddr = "203.0.113.10:7946".parse().unwrap();
        let (mut a, ka, mut a_events) = node_with_events(1, "10.0.0.1:51820");
        let (mut b, kb, mut b_events) = node_with_events(2, "10.0.0.2:51820");
        a.core.add_peer(kb, None).unwrap();
        b.core.add_peer(ka, None).unwrap();
        a.core.set_relays(vec![reg]);
        b.core.set_relays(vec![reg]);
        let mut wire = Wire::new();
        // A packet with no path is queued and reported, once however many follow.
        let pkt = ipv6_packet(a.ip, b.ip, b"via the relay");
        assert_eq!(send_inner(&a, &pkt, &mut wire), TxAction::Dropped);
        assert_eq!(send_inner(&a, &pkt, &mut wire), TxAction::Dropped);
        wire.clear();
        assert_eq!(a_events.try_recv(), Some(DataPlaneEvent::NeedsPath(kb)));
        assert_eq!(a_events.try_recv(), None);
        // Taken: the next packet without a path reports again.
        assert_eq!(send_inner(&a, &pkt, &mut wire), TxAction::Dropped);
        wire.clear();
        assert_eq!(a_events.try_recv(), Some(DataPlaneEvent::NeedsPath(kb)));
        // The control plane sets the relay: the handshake goes out through it at once.
        a.core
            .set_path(&kb, Path::Relay(reg), &mut |dst, d| {
                wire.push_back((a.addr, dst, d.to_vec()))
            })
            .unwrap();
        for _ in 0..4 {
            relay_through(reg, &[(&a, ka), (&b, kb)], &mut wire);
            let mut out = vec![0u8; 65535];
            let mut next = Wire::new();
            while let Some((from, to, d)) = wire.pop_front() {
                let n = if to == a.addr { &mut a } else { &mut b };
                let me = n.addr;
                if let RxAction::Tunnel { len } =
                    n.core.on_datagram(from, &d, &mut out, &mut |dst, p| {
                        next.push_back((me, dst, p.to_vec()))
                    })
                {
                    n.delivered.push(out[..len].to_vec());
                }
            }
            wire = next;
        }
        assert_eq!(b.delivered, vec![pkt; 3], "the queued packets arrived");
        // B had no path: it took the relay the handshake came by, and said so.
        assert_eq!(b.core.path(&ka), Some(Path::Relay(reg)));
        let b_saw: Vec<_> = std::iter::from_fn(|| b_events.try_recv()).collect();
        assert!(
            b_saw.contains(&DataPlaneEvent::Roamed {
                key: ka,
                path: Path::Relay(reg)
            }),
            "{b_saw:?}"
        );
        assert!(
            b_saw.contains(&DataPlaneEvent::HandshakeDone(ka)),
            "{b_saw:?}"
        );
        let st = b.core.peer(&ka).unwrap().status();
        assert_eq!((st.path.as_str(), st.endpoint), ("relay", Some(reg)));
        // A relay delivery from an address that is not a configured registry is not taken as
        // WireGuard.
        let mut out = vec![0u8; 2048];
        let frame = relay::frame(relay::RELAY_DELIVER, ka.addr48(), &[4u8; 64]);
        let other: SocketAddr = "192.0.2.7:7946".parse().unwrap();
        assert_eq!(
            b.core.on_datagram(other, &frame, &mut out, &mut |_, _| {}),
            RxAction::Dropped,
            "no control channel in this test, so it is dropped as control"
        );
    }

    #[test]
    fn a_node_cannot_add_itself() {
        let (a, ka) = node(1, "198.51.100.1:1");
        assert_eq!(a.core.add_peer(ka, None), Err(PeerTableError::OwnKey(ka)));
    }

    proptest! {
        #[test]
        fn random_datagrams_never_panic(first in 0u8..6, body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let (a, b, _, _) = pair();
            let mut d = body;
            if !d.is_empty() { d[0] = first; }
            let mut out = vec![0u8; 2048];
            let r = b.core.on_datagram(a.addr, &d, &mut out, &mut |_, _| {});
            prop_assert!(matches!(r, RxAction::Dropped | RxAction::Consumed));
        }

        #[test]
        fn random_inner_packets_never_panic(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let (a, _, _, _) = pair();
            let mut out = vec![0u8; 2048];
            let _ = a.core.on_outbound(&body, &mut out);
        }
    }
}
