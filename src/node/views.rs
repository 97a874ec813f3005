//! What the node answers about trust, names and paths: typed records shared by the node core,
//! the local API and its clients (the CLI, the SDKs). Field names are the JSON names of the API.

use std::net::{Ipv6Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::identity::PublicKey;
use crate::mapping::{Addr48, Hostname};

/// How a peer stands with us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TrustStanding {
    /// It asked us; we have not decided.
    Pending,
    /// We asked it; it has not decided.
    Requested,
    /// Mutual trust: a tunnel may form.
    Trusted,
    /// One side rejected the other.
    Rejected,
    /// Pinned in the config file (`[[peer]]`): trusted without the store.
    Static,
    /// No relation.
    None,
}

/// One peer's trust, as `trust`, `handshake`, `approve`, `reject` and `untrust` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TrustView {
    /// The peer's Ed25519 public key (base64).
    pub public_key: PublicKey,
    /// Its overlay address.
    pub address: Addr48,
    /// Its overlay IPv6 address.
    #[schema(value_type = String)]
    pub ipv6: Ipv6Addr,
    /// Its hostname at the registry, if known.
    pub hostname: Option<Hostname>,
    /// Where the relation stands.
    pub state: TrustStanding,
}

/// A trust request waiting for our decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PendingView {
    /// Who asks.
    #[serde(flatten)]
    pub peer: TrustView,
    /// Why, in the requester's words (untrusted text: escape before printing).
    pub justification: String,
    /// When the request arrived (unix ms).
    pub since_ms: u64,
}

/// `pending`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PendingList {
    /// Requests waiting for `approve` or `reject`.
    pub pending: Vec<PendingView>,
}

/// `trust`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TrustList {
    /// Every trust record, then the static peers.
    pub peers: Vec<TrustView>,
}

/// A hostname found at a registry (`find`): key and address, never an endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Lookup {
    /// The name looked up.
    pub hostname: Hostname,
    /// The key that owns it.
    pub public_key: PublicKey,
    /// That key's overlay address.
    pub address: Addr48,
    /// That key's overlay IPv6 address.
    #[schema(value_type = String)]
    pub ipv6: Ipv6Addr,
}

/// Where the key that signs a registry's answers comes from (`info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RegistryKeySource {
    /// Pinned in the config (`registries = ["HOST:PORT#KEY"]`); only the config changes it.
    Pinned,
    /// Learned on first use and remembered in `registry_keys.json` (this run or an earlier
    /// one); `pilotctl registry forget-key HOST:PORT` forgets it.
    Learned,
    /// Learned on first use but saving it failed: believed for this run only.
    Unsaved,
    /// Not known yet: it is learned from the registry's first answer to our registration.
    Unknown,
}

/// One configured registry and the key we hold for it (`info`, `registry forget-key`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RegistryKeyView {
    /// The registry's UDP address (as resolved when the daemon started).
    #[schema(value_type = String)]
    pub registry: SocketAddr,
    /// Its Ed25519 public key (public; `null` while unknown).
    pub key: Option<PublicKey>,
    /// Where the key comes from.
    pub source: RegistryKeySource,
}

/// The hostname this node claims (`set-hostname`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostnameClaim {
    /// The name.
    pub hostname: Hostname,
}

/// The outcome of `ping`: signed probes over the peer's current path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PingReport {
    /// The peer's public key.
    pub peer: PublicKey,
    /// Its overlay address.
    pub address: Addr48,
    /// `direct` or `relay`.
    pub path: String,
    /// Where the probes went (the peer's endpoint, or the relay).
    #[schema(value_type = Option<String>)]
    pub endpoint: Option<SocketAddr>,
    /// Probes sent.
    pub sent: usize,
    /// Replies received.
    pub received: usize,
    /// Each probe's round trip in ms, `null` where no reply came.
    pub rtt_ms: Vec<Option<f64>>,
    /// Fastest reply, ms.
    pub min_ms: Option<f64>,
    /// Slowest reply, ms.
    pub max_ms: Option<f64>,
    /// Mean of the replies, ms.
    pub avg_ms: Option<f64>,
}

/// Something that happened to this node, for the local API's live event stream (and, later,
/// webhooks). Serialised with a `type` tag, e.g. `{"type":"trust_request","from":…}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NodeEvent {
    /// A peer asks for our trust (see `pending`).
    TrustRequest {
        /// Who asks.
        from: PublicKey,
        /// Its hostname at the registry, if any.
        hostname: Option<Hostname>,
        /// Why (untrusted text).
        justification: String,
    },
    /// A peer refused our trust request.
    TrustRejected {
        /// Who refused.
        peer: PublicKey,
    },
    /// Trust is mutual: a tunnel with this peer is allowed.
    PeerTrusted {
        /// The peer.
        peer: PublicKey,
    },
    /// Trust is gone: the tunnel is torn down.
    PeerUntrusted {
        /// The peer.
        peer: PublicKey,
    },
    /// The path to a peer changed (direct, relay, or none).
    PathChanged {
        /// The peer.
        peer: PublicKey,
        /// `direct`, `relay` or `none`.
        path: String,
        /// Where its datagrams now go.
        #[schema(value_type = Option<String>)]
        endpoint: Option<SocketAddr>,
    },
    /// A WireGuard session with the peer came up (its first handshake, or the first after it
    /// went down): traffic flows.
    PeerUp {
        /// The peer.
        peer: PublicKey,
    },
    /// The peer is down: no path is left to it, or trust was withdrawn.
    PeerDown {
        /// The peer.
        peer: PublicKey,
    },
}

/// A node as the registries describe it (`lookup`): never an endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeView {
    /// Its key.
    pub public_key: PublicKey,
    /// Its overlay address.
    pub address: Addr48,
    /// Its overlay IPv6.
    #[schema(value_type = String)]
    pub ipv6: Ipv6Addr,
    /// The hostname it holds, if any.
    pub hostname: Option<Hostname>,
    /// Its tags (short lowercase words it chose to be known by).
    pub tags: Vec<String>,
}

/// What the registries hold for us after a change (`set-tags`, `clear-tags`,
/// `clear-hostname`, `deregister`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Registration {
    /// False after `deregister` (until the daemon restarts).
    pub registered: bool,
    /// Our hostname there, if any.
    pub hostname: Option<Hostname>,
    /// Our tags there.
    pub tags: Vec<String>,
}
