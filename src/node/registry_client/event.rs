//! What the client reports to its driver, and what it counts.

use std::net::SocketAddr;

use super::ClientError;
use crate::identity::PublicKey;
use crate::mapping::{Addr48, Hostname};
use crate::wire::registry::{Nonce, TrustDecision};

/// Identifies an operation started by the caller; events about it carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(pub u64);

/// A node as a registry describes it (v1.3 `NodeInfo`): never an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Its key.
    pub key: PublicKey,
    /// Its address (checked against the key).
    pub addr48: Addr48,
    /// The hostname it holds at that registry.
    pub hostname: Option<Hostname>,
    /// Its tags.
    pub tags: Vec<String>,
}

/// What the client reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// A node lookup succeeded (`LookupNode`).
    NodeInfo {
        /// The lookup.
        op: OpId,
        /// What the registry said.
        info: NodeInfo,
    },
    /// A registry accepted our registration.
    Registered {
        /// Which registry.
        registry: SocketAddr,
    },
    /// A registry stopped answering heartbeats or forgot us; registering again.
    RegistryLost {
        /// Which registry.
        registry: SocketAddr,
    },
    /// Our home relay changed (v1.4): the first registry, in configuration order, where we are
    /// registered and that answers. Peers learn it from our next endpoint exchange.
    HomeChanged {
        /// The new home (`None`: no registry answers).
        home: Option<SocketAddr>,
        /// The home before.
        previous: Option<SocketAddr>,
    },
    /// A registry became usable as a relay for our frames (we are registered there and it
    /// answers), or stopped being usable (v1.4).
    RelayUsable {
        /// Which registry.
        registry: SocketAddr,
        /// Whether it is usable now.
        usable: bool,
    },
    /// Our address as a registry sees it (our NAT's public mapping) is new or changed.
    ReflexiveAddress {
        /// Which registry saw it.
        registry: SocketAddr,
        /// The address.
        addr: SocketAddr,
    },
    /// A registry says another key holds the hostname we asked for.
    HostnameTaken {
        /// Which registry.
        registry: SocketAddr,
        /// The name.
        hostname: Hostname,
    },
    /// A lookup succeeded (the key's address was checked against the key).
    LookupResult {
        /// The lookup.
        op: OpId,
        /// The name.
        hostname: Hostname,
        /// Its key.
        key: PublicKey,
        /// Its address.
        addr48: Addr48,
    },
    /// A verified trust request for us arrived (through a registry, or directly).
    TrustRequestReceived {
        /// Who asks.
        from: PublicKey,
        /// Its hostname as the registry has it (none when sent directly).
        hostname: Option<Hostname>,
        /// Why.
        justification: String,
        /// The request's nonce (to answer it).
        nonce: Nonce,
        /// The sender's timestamp (unix ms), for the trust store's replay watermark.
        sent_ms: u64,
    },
    /// A verified trust response (or revocation) for us arrived.
    TrustResponseReceived {
        /// Who answers.
        from: PublicKey,
        /// Its hostname as the registry has it.
        hostname: Option<Hostname>,
        /// The nonce of our request it answers (zero for a revocation).
        in_reply_to: Nonce,
        /// The decision.
        decision: TrustDecision,
        /// Why.
        reason: String,
        /// The sender's timestamp (unix ms).
        sent_ms: u64,
    },
    /// A trusted peer asked for our endpoints (answered already): it will start probing us, and
    /// we can probe these candidates of its own (issue 5, hole punching).
    EndpointRequested {
        /// The peer.
        from: PublicKey,
        /// Its reflexive address first, then its local candidates.
        candidates: Vec<SocketAddr>,
        /// The registry that forwarded it (which may now relay between us).
        registry: SocketAddr,
        /// The peer's home relay, as it signed it (v1.4; `None` from older peers).
        home: Option<SocketAddr>,
    },
    /// A peer answered our endpoint request.
    EndpointInfo {
        /// The endpoint request.
        op: OpId,
        /// The peer.
        peer: PublicKey,
        /// Its reflexive address first, then its local candidates.
        candidates: Vec<SocketAddr>,
        /// The registry that forwarded it (which may now relay between us).
        registry: SocketAddr,
        /// The peer's home relay, as it signed it (v1.4; `None` from older peers).
        home: Option<SocketAddr>,
    },
    /// An operation succeeded at (at least) one registry.
    Done {
        /// The operation.
        op: OpId,
    },
    /// An operation failed at every registry.
    Failed {
        /// The operation.
        op: OpId,
        /// Why (the most telling registry answer, or a timeout).
        error: ClientError,
    },
}

/// Counters of what the client refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCounters {
    /// Datagrams that are not valid registry messages.
    pub garbage: u64,
    /// Answers that match no request we sent.
    pub unmatched: u64,
    /// Pushed or direct messages whose inner signature, addressee or age is wrong.
    pub bad_push: u64,
    /// Endpoint requests from peers we do not trust (not answered).
    pub untrusted_endpoint_requests: u64,
    /// Retransmissions.
    pub retransmits: u64,
    /// Registry answers whose signature does not verify with the registry's key (or that came
    /// before any key was known), dropped.
    pub bad_signature: u64,
    /// Clock corrections from `stale_timestamp` answers beyond `max_clock_offset`, ignored.
    pub clock_offset_refused: u64,
    /// Hostnames in trust pushes from a registry whose key is neither pinned nor persisted,
    /// dropped (they must not count for the allow-list).
    pub unvouched_hostnames: u64,
}
