//! The data-plane core: peer table, trust and anti-spoofing rules around boringtun's `Tunn`.
//!
//! No sockets and no threads here: the I/O driver (see [`super::io`]) feeds datagrams and inner
//! packets in and sends what comes out, so the same code runs in unit tests with two cores
//! exchanging datagrams through in-memory queues.
//!
//! * `counters`: the counters of traffic that belongs to no peer.
//! * `table`: the peer table (adding and removing peers, lookups by key, address, IP,
//!   hostname and receiver index).
//! * `inbound`: received datagrams: WireGuard (direct or relayed), control hand-off.
//! * `outbound`: inner packets to encapsulate, and sending on a peer's path.
//! * `timers`: WireGuard timers.
//! * `limiter`: handshake rate limits per source.

mod counters;
mod inbound;
mod limiter;
mod outbound;
mod table;
#[cfg(test)]
mod tests;
mod timers;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use boringtun::noise::rate_limiter::RateLimiter;
use parking_lot::Mutex;

use self::table::PeerTable;
use super::events::{DataPlaneEvent, EventSender};
use crate::identity::{Identity, PublicKey};
use crate::mapping::{Addr48, NetworkPrefix};

pub use self::counters::{CountersSnapshot, GlobalCounters};
pub use self::inbound::RxAction;
pub use self::limiter::{DEFAULT_HANDSHAKES_GLOBAL, DEFAULT_HANDSHAKES_PER_SOURCE};
pub use self::outbound::{inner_dst, TxAction};
pub use self::table::{PeerId, PeerTableError};

/// WireGuard data message overhead: header 16 + authentication tag 16.
pub const WG_DATA_OVERHEAD: usize = 32;
/// The largest WireGuard handshake message (an initiation).
pub const WG_MAX_HANDSHAKE: usize = 148;
/// The largest inner packet a core accepts unless told otherwise
/// ([`Core::with_max_packet`]).
pub const DEFAULT_MAX_PACKET: usize = 1500;

/// Where control datagrams (registry messages and probes, already classified) go.
pub type ControlSender = crate::wire::classify::ControlSender;

/// Called with the destination addr48 when an outbound packet has no peer (a later issue turns
/// this into a registry lookup). Must be cheap and must not block: it runs on the hot path.
pub type NoPeerHook = Arc<dyn Fn(Addr48) + Send + Sync>;

/// The data-plane core. Cheap to share (`Arc<Core>`); every method takes `&self`.
///
/// Locking: the peer table is an immutable snapshot swapped atomically on change (readers never
/// lock); each peer has its own lock around its `Tunn` and endpoint.
pub struct Core {
    secret: x25519_dalek::StaticSecret,
    public: x25519_dalek::PublicKey,
    own_key: PublicKey,
    /// Our overlay IPv6 address: the only inner destination a peer may send to.
    own_ip: std::net::Ipv6Addr,
    network: NetworkPrefix,
    keepalive: Option<u16>,
    table: ArcSwap<PeerTable>,
    table_writer: Mutex<()>,
    /// Checks MAC1 only (never asks for a cookie); every `Tunn` shares it, so the rate limits
    /// are ours ([`limiter`]), per source, not boringtun's global count.
    mac_check: Arc<RateLimiter>,
    /// Checks MAC2 (the cookie) of every message it sees, and formats cookie replies.
    cookie_check: RateLimiter,
    handshakes: limiter::HandshakeLimiter,
    counters: GlobalCounters,
    control: Option<ControlSender>,
    no_peer_hook: Option<NoPeerHook>,
    /// Where data-plane events go (needs a path, roamed, handshake done).
    events: Option<EventSender>,
    /// Registries whose relay deliveries we accept.
    relays: ArcSwap<Vec<SocketAddr>>,
    /// Peers by direct endpoint (for the unknown-index rehandshake: one lookup, not a scan).
    /// Locked after a peer's own lock, never before it.
    endpoints: Mutex<std::collections::HashMap<SocketAddr, Arc<crate::wg::peer::Peer>>>,
    /// The largest inner packet accepted for sending (and so the largest WireGuard may queue).
    max_packet: usize,
    /// The timer set: peers with a live `Tunn`, by local index. [`Core::tick`] visits these
    /// only, so idle peers cost no work per tick. Locked after a peer's own lock, never
    /// before it.
    active: Mutex<std::collections::HashMap<u32, Arc<crate::wg::peer::Peer>>>,
    /// Peers by hostname (names resolve without a scan of the table). Locked after a peer's
    /// hostname lock, never before it.
    hostnames: Mutex<std::collections::HashMap<String, Arc<crate::wg::peer::Peer>>>,
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
            mac_check: Arc::new(RateLimiter::new(&public, u64::MAX)),
            cookie_check: RateLimiter::new(&public, 0),
            handshakes: limiter::HandshakeLimiter::new(
                DEFAULT_HANDSHAKES_PER_SOURCE,
                DEFAULT_HANDSHAKES_GLOBAL,
            ),
            secret,
            public,
            own_key: identity.public_key(),
            own_ip: network.ipv6(identity.addr48()),
            network,
            keepalive: (keepalive_secs > 0).then_some(keepalive_secs),
            table: ArcSwap::from_pointee(PeerTable::default()),
            table_writer: Mutex::new(()),
            counters: GlobalCounters::default(),
            control,
            no_peer_hook,
            events,
            relays: ArcSwap::from_pointee(Vec::new()),
            endpoints: Mutex::new(Default::default()),
            max_packet: DEFAULT_MAX_PACKET,
            active: Mutex::new(Default::default()),
            hostnames: Mutex::new(Default::default()),
        }
    }

    /// Sets the largest inner packet accepted for sending (longer ones are dropped and counted
    /// as `oversize`); the data plane passes its inner side's MTU.
    pub fn with_max_packet(mut self, max_packet: usize) -> Self {
        self.max_packet = max_packet;
        self
    }

    /// Sets the handshake rate limits: messages per second answered per source, and answered
    /// without a cookie in all (see the `limiter` module).
    pub fn with_handshake_limits(mut self, per_source: u32, global: u32) -> Self {
        self.handshakes = limiter::HandshakeLimiter::new(per_source, global);
        self
    }

    /// The largest inner packet accepted for sending.
    pub fn max_packet(&self) -> usize {
        self.max_packet
    }

    /// The room every output buffer given to [`Core::on_datagram`] (besides the datagram's own
    /// length), [`Core::on_outbound`] and [`Core::tick`] must have: the largest datagram one
    /// call can write. A completed handshake drains the packets WireGuard queued meanwhile into
    /// the *receive* buffer, so that buffer must hold a full-size data message (plus a relay
    /// header), however small the datagram it received.
    pub fn out_room(&self) -> usize {
        (self.max_packet + WG_DATA_OVERHEAD).max(WG_MAX_HANDSHAKE) + crate::wire::relay::HEADER_LEN
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

    /// Data-plane events dropped because the node core's queue was full.
    pub fn events_dropped(&self) -> u64 {
        self.events.as_ref().map_or(0, |e| e.dropped())
    }

    fn emit(&self, ev: DataPlaneEvent) {
        if let Some(e) = &self.events {
            e.send(ev);
        }
    }

    /// Queues an event for the node from outside the data plane's threads (the stream
    /// transport's change of path to a registry).
    pub fn emit_event(&self, ev: DataPlaneEvent) {
        self.emit(ev);
    }
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
