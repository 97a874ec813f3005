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

mod counters;
mod inbound;
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
pub use self::outbound::{inner_dst, TxAction};
pub use self::table::{PeerId, PeerTableError};

/// Handshakes per second (over all peers) before boringtun asks initiators for a cookie.
const HANDSHAKE_RATE_LIMIT: u64 = 100;

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

    /// Data-plane events dropped because the node core's queue was full.
    pub fn events_dropped(&self) -> u64 {
        self.events.as_ref().map_or(0, |e| e.dropped())
    }

    fn emit(&self, ev: DataPlaneEvent) {
        if let Some(e) = &self.events {
            e.send(ev);
        }
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
