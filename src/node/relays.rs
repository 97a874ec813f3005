//! Which registry relays our datagrams to a peer (v1.4, "Home relay" in docs/PROTOCOL.md).
//!
//! A peer tells its home relay in every endpoint request and answer it signs. We send relay
//! frames to a peer through its home when that registry is one of ours, has us registered and
//! answers (a registry relays only for senders it knows by their registration); otherwise
//! through the registry that introduced us (the one that forwarded the latest exchange), as
//! before v1.4. The choice is made again when the peer's home changes (next exchange) and when
//! our view of a registry changes (it stops or starts answering).

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::identity::PublicKey;

/// What we know of how to relay to one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerRelay {
    /// The peer's home relay as it signed it (`None` from a peer older than v1.4, or one
    /// without a home).
    pub home: Option<SocketAddr>,
    /// The registry that forwarded the latest endpoint exchange with the peer (the pair may
    /// relay there).
    pub introducer: SocketAddr,
}

impl PeerRelay {
    /// Where relay frames to the peer go: its home if `usable` (one of our registries where we
    /// are registered and that answers), else the introducer.
    pub fn target(&self, usable: impl Fn(SocketAddr) -> bool) -> SocketAddr {
        match self.home {
            Some(h) if usable(h) => h,
            _ => self.introducer,
        }
    }
}

/// The relay facts of every peer we exchanged endpoints with.
#[derive(Debug, Default)]
pub struct Relays {
    peers: HashMap<PublicKey, PeerRelay>,
}

impl Relays {
    /// Records the latest exchange with `peer` and returns where to relay to it now.
    pub fn learn(
        &mut self,
        peer: PublicKey,
        relay: PeerRelay,
        usable: impl Fn(SocketAddr) -> bool,
    ) -> SocketAddr {
        self.peers.insert(peer, relay);
        relay.target(usable)
    }

    /// Peers whose home is `registry` (their relay target may change with it), with the
    /// target they get now.
    pub fn homed_at(
        &self,
        registry: SocketAddr,
        usable: impl Fn(SocketAddr) -> bool,
    ) -> Vec<(PublicKey, SocketAddr)> {
        self.peers
            .iter()
            .filter(|(_, r)| r.home == Some(registry))
            .map(|(k, r)| (*k, r.target(&usable)))
            .collect()
    }

    /// What we know of `peer`.
    pub fn get(&self, peer: &PublicKey) -> Option<PeerRelay> {
        self.peers.get(peer).copied()
    }

    /// Forgets `peer` (no longer trusted).
    pub fn remove(&mut self, peer: &PublicKey) {
        self.peers.remove(peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_peer_is_relayed_through_its_home_when_we_can_send_there_else_its_introducer() {
        let (r1, r2) = (addr("203.0.113.1:7946"), addr("203.0.113.2:7946"));
        let mut usable = vec![r1, r2];
        let k = Identity::from_seed([3; 32]).public_key();
        let mut relays = Relays::default();
        let relay = PeerRelay {
            home: Some(r2),
            introducer: r1,
        };
        assert_eq!(relays.learn(k, relay, |a| usable.contains(&a)), r2);
        // Our view of r2 changes: it stops answering us; the introducer takes over.
        usable.retain(|a| *a != r2);
        assert_eq!(relays.homed_at(r2, |a| usable.contains(&a)), vec![(k, r1)]);
        assert!(relays.homed_at(r1, |_| true).is_empty());
        // An older peer (no home) is relayed through whoever introduced us.
        let old = PeerRelay {
            home: None,
            introducer: r2,
        };
        assert_eq!(relays.learn(k, old, |_| true), r2);
        relays.remove(&k);
        assert_eq!(relays.get(&k), None);
    }
}
