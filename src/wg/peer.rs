//! One trusted peer: its keys, its overlay address, its WireGuard state machine and endpoint,
//! and the counters `pilotctl peers` shows.

use std::collections::BTreeMap;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use boringtun::noise::Tunn;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::identity::PublicKey;
use crate::mapping::Addr48;
use crate::wg::Path;

/// Why a packet to or from a known peer was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// A decapsulated packet's inner source was not the peer's overlay address (or not IPv6).
    Spoofed,
    /// WireGuard refused the datagram (bad MAC, replay, no session, expired, ...).
    Rejected,
    /// An outbound packet for a peer with no path yet (it waits inside WireGuard for the
    /// handshake that follows the first path, and the control plane is asked to find one).
    NoEndpoint,
    /// The peer was being removed while the packet was in flight.
    Removed,
    /// A decapsulated packet's inner destination was not our own overlay address.
    NotForUs,
}

impl DropReason {
    /// Every reason, in the order counters are stored.
    pub const ALL: [DropReason; 5] = [
        DropReason::Spoofed,
        DropReason::Rejected,
        DropReason::NoEndpoint,
        DropReason::Removed,
        DropReason::NotForUs,
    ];

    /// The reason as it appears in `pilotctl peers --json` (`drops.<name>`).
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Spoofed => "spoofed",
            DropReason::Rejected => "rejected",
            DropReason::NoEndpoint => "no_endpoint",
            DropReason::Removed => "removed",
            DropReason::NotForUs => "not_for_us",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Traffic counters of one peer (lock-free; updated from the worker threads).
#[derive(Debug, Default)]
pub struct PeerCounters {
    /// Decapsulated bytes handed to the inner side.
    pub rx_bytes: AtomicU64,
    /// Decapsulated packets handed to the inner side.
    pub rx_packets: AtomicU64,
    /// Inner bytes encapsulated and sent.
    pub tx_bytes: AtomicU64,
    /// Inner packets encapsulated and sent.
    pub tx_packets: AtomicU64,
    drops: [AtomicU64; DropReason::ALL.len()],
}

impl PeerCounters {
    /// Counts one dropped packet.
    pub fn drop_one(&self, reason: DropReason) {
        self.drops[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Number of packets dropped for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()].load(Ordering::Relaxed)
    }
}

/// The mutable part of a peer, behind one per-peer lock (never a global one).
pub(crate) struct PeerState {
    /// Its WireGuard state machine, made on first use (a packet to or from it, a path): an
    /// idle peer holds none, and one whose handshakes expired drops its own.
    pub(crate) tunn: Option<Tunn>,
    /// Whether it is in the core's timer set (it has a `Tunn` that timers must drive).
    pub(crate) active: bool,
    /// How its datagrams travel: straight to an endpoint, or through a relay.
    pub(crate) path: Path,
    /// When `path` last changed.
    pub(crate) last_change: Option<SystemTime>,
    /// Set by `remove_peer`: from then on nothing passes, even for a worker that still holds
    /// the peer from an older table.
    pub(crate) removed: bool,
}

/// A trusted peer in the data plane.
pub struct Peer {
    /// The peer's identity.
    pub public_key: PublicKey,
    /// Its X25519 key (derived from `public_key`).
    pub(crate) wg_public: [u8; 32],
    /// Its overlay address.
    pub addr48: Addr48,
    /// Its overlay IPv6 address (the only inner source it may use).
    pub ipv6: Ipv6Addr,
    /// Our local WireGuard index for it (24 bits; boringtun puts it in the top bits of the
    /// receiver index it hands out).
    pub(crate) index: u32,
    pub(crate) hostname: Mutex<Option<String>>,
    pub(crate) state: Mutex<PeerState>,
    /// Its counters.
    pub counters: PeerCounters,
    /// Latest round-trip time on its path in microseconds (`u64::MAX` = not measured), set by
    /// the control plane from probe replies.
    pub(crate) rtt_us: AtomicU64,
    /// Set while a `NeedsPath` event for this peer waits in the node core's queue (so a flood
    /// of packets without a path queues one event).
    pub(crate) needs_path_queued: std::sync::atomic::AtomicBool,
}

/// What `pilotctl peers` shows for one peer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct PeerStatus {
    /// The peer's public key (base64).
    pub public_key: String,
    /// Its addr48 in canonical text form.
    pub address: String,
    /// Its overlay IPv6 address.
    #[schema(value_type = String)]
    pub ipv6: Ipv6Addr,
    /// Its hostname, if one is known.
    pub hostname: Option<String>,
    /// Where its datagrams go: its UDP endpoint (direct), or the registry relaying them.
    #[schema(value_type = Option<String>)]
    pub endpoint: Option<SocketAddr>,
    /// How packets reach it: `"direct"`, `"relay"`, or `"none"` (no path yet).
    pub path: String,
    /// Round-trip time of the latest probe on the path, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Unix time (seconds) the path last changed.
    pub last_change: Option<u64>,
    /// Unix time (seconds) of the last completed handshake, if any.
    pub last_handshake: Option<u64>,
    /// Bytes received from it (inner packets).
    pub rx_bytes: u64,
    /// Bytes sent to it (inner packets).
    pub tx_bytes: u64,
    /// Packets received from it.
    pub rx_packets: u64,
    /// Packets sent to it.
    pub tx_packets: u64,
    /// Dropped packets by reason (only reasons with a non-zero count).
    pub drops: BTreeMap<String, u64>,
}

impl Peer {
    /// A snapshot for status output.
    pub fn status(&self) -> PeerStatus {
        let (path, changed, since) = {
            let st = self.state.lock();
            (
                st.path,
                st.last_change,
                st.tunn.as_ref().and_then(|t| t.time_since_last_handshake()),
            )
        };
        let rtt = self.rtt_us.load(Ordering::Relaxed);
        let last_handshake = since.and_then(|d| {
            SystemTime::now()
                .checked_sub(d)
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|t: Duration| t.as_secs())
        });
        let c = &self.counters;
        let drops = DropReason::ALL
            .iter()
            .filter_map(|r| {
                let n = c.drops(*r);
                (n > 0).then(|| (r.as_str().to_string(), n))
            })
            .collect();
        PeerStatus {
            public_key: self.public_key.to_base64(),
            address: self.addr48.to_string(),
            ipv6: self.ipv6,
            hostname: self.hostname.lock().clone(),
            endpoint: path.addr(),
            path: path.kind().to_string(),
            rtt_ms: (rtt != u64::MAX).then(|| rtt as f64 / 1000.0),
            last_change: changed
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs()),
            last_handshake,
            rx_bytes: c.rx_bytes.load(Ordering::Relaxed),
            tx_bytes: c.tx_bytes.load(Ordering::Relaxed),
            rx_packets: c.rx_packets.load(Ordering::Relaxed),
            tx_packets: c.tx_packets.load(Ordering::Relaxed),
            drops,
        }
    }
}
