//! What the local API asks of the node: [`NodeCommand`], each with its typed reply
//! channel, and what a call waits for while its registry operation runs. How the node answers
//! is in [`crate::node::answers`].

use std::net::SocketAddr;

use tokio::sync::oneshot;

use crate::error::PilotError;
use crate::identity::PublicKey;
use crate::mapping::{Hostname, PeerRef};
use crate::node::views::{
    HostnameClaim, Lookup, NodeView, PendingList, PingReport, Registration, RegistryKeyView,
    TrustList, TrustView,
};

/// Where a command's answer goes.
pub type Reply<T> = oneshot::Sender<Result<T, PilotError>>;

/// A request from the local API to the node, with the channel for its answer.
#[derive(Debug)]
pub enum NodeCommand {
    /// Ask a peer for trust; answers the peer's trust once the request is delivered.
    Handshake {
        /// Whom.
        peer: PeerRef,
        /// Why.
        justification: String,
        /// The answer.
        reply: Reply<Option<TrustView>>,
    },
    /// Requests waiting for our decision.
    Pending {
        /// The answer.
        reply: Reply<PendingList>,
    },
    /// Approve a pending request.
    Approve {
        /// Whose.
        peer: PeerRef,
        /// The answer.
        reply: Reply<Option<TrustView>>,
    },
    /// Reject a pending request.
    Reject {
        /// Whose.
        peer: PeerRef,
        /// Why.
        reason: String,
        /// The answer.
        reply: Reply<Option<TrustView>>,
    },
    /// Withdraw trust.
    Untrust {
        /// From whom.
        peer: PeerRef,
        /// The answer.
        reply: Reply<Option<TrustView>>,
    },
    /// Every trust record.
    TrustList {
        /// The answer.
        reply: Reply<TrustList>,
    },
    /// Look a hostname up at the registries.
    Find {
        /// The name.
        hostname: Hostname,
        /// The answer.
        reply: Reply<Option<Lookup>>,
    },
    /// Claim a hostname at the registries.
    SetHostname {
        /// The name.
        hostname: Hostname,
        /// The answer.
        reply: Reply<HostnameClaim>,
    },
    /// Probe a trusted peer over its current path.
    Ping {
        /// Whom.
        peer: PeerRef,
        /// How many probes.
        count: u32,
        /// The answer.
        reply: Reply<PingReport>,
    },
    /// Every configured registry's key and where it comes from.
    RegistryKeys {
        /// The answer.
        reply: Reply<Vec<RegistryKeyView>>,
    },
    /// Forget the key learned for a registry (operator action) and register with it again;
    /// a pinned key is refused (change the config instead).
    ForgetRegistryKey {
        /// The registry's address.
        registry: SocketAddr,
        /// The answer: the registry after forgetting.
        reply: Reply<RegistryKeyView>,
    },
    /// Replace the allow-list (`[trust] allow`, re-read by a reload): requests that arrive
    /// from now on are judged by it; decisions already made stay.
    SetAllowList {
        /// The new list.
        allow: crate::node::trust::AllowList,
        /// The answer.
        reply: Reply<()>,
    },
    /// Discovery at the registries (lookup, tags, clear-hostname, deregister).
    Discovery(DiscoveryCommand),
    /// Each registry's reachability, our reflexive address there, clock offset and RTT.
    RegistryStatus {
        /// The answer.
        reply: Reply<Vec<crate::node::registry_client::RegistryStatus>>,
    },
}

/// What an API call is waiting for.
pub(super) enum Waiting {
    /// A lookup (`find`).
    Find(Reply<Option<Lookup>>),
    /// An operation about `peer` (known key, or a hostname still being looked up).
    Op {
        peer: Result<PublicKey, Hostname>,
        reply: Reply<Option<TrustView>>,
    },
    /// A hostname claim.
    Hostname(Hostname, Reply<HostnameClaim>),
    /// A discovery call.
    Discovery(DiscoveryWait),
}

/// A discovery request from the local API.
#[derive(Debug)]
pub enum DiscoveryCommand {
    /// Describe a node at the registries.
    Lookup {
        /// Whom.
        peer: PeerRef,
        /// The answer.
        reply: Reply<NodeView>,
    },
    /// Replace our tags (empty clears them).
    SetTags {
        /// The tags, already checked.
        tags: Vec<String>,
        /// The answer.
        reply: Reply<Registration>,
    },
    /// Give up our hostname.
    ClearHostname {
        /// The answer.
        reply: Reply<Registration>,
    },
    /// Ask every registry to forget us.
    Deregister {
        /// The answer.
        reply: Reply<Registration>,
    },
}

/// What a discovery call waits for.
pub(crate) enum DiscoveryWait {
    /// A node lookup.
    Lookup(Reply<NodeView>),
    /// A change; the registration it leads to.
    Change(Registration, Reply<Registration>),
}
