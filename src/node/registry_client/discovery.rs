//! Discovery (v1.3) on the node's side: our tags (sent again after every registration, since
//! registries keep them as soft state), deregistration, and looking a node up by key, address
//! or hostname.

use std::net::SocketAddr;
use std::time::Instant;

use super::{Client, ClientEvent, OpId, OpKind, Purpose};
use crate::mapping::PeerRef;
use crate::wire::registry::RequestBody;

impl Client {
    /// The hostname we claim, if any.
    pub fn hostname(&self) -> Option<crate::mapping::Hostname> {
        self.config.hostname.clone()
    }

    /// Our tags.
    pub fn tags(&self) -> &[String] {
        &self.config.tags
    }

    /// Replaces our tags at every registry (empty clears them), and keeps them for later
    /// registrations. The tags must pass [`crate::wire::registry::check_tags`].
    pub fn set_tags(&mut self, now: Instant, tags: Vec<String>) -> OpId {
        self.config.tags = tags.clone();
        self.start_op(now, OpKind::SetTags, RequestBody::SetTags { tags })
    }

    /// Asks every registry to forget us: hostname, tags, registration. We stop registering
    /// (no heartbeats) until [`Client::register_again`].
    pub fn deregister(&mut self, now: Instant) -> OpId {
        self.config.hostname = None;
        self.config.tags.clear();
        for r in &mut self.registries {
            r.registered = false;
            r.next_heartbeat = None;
        }
        let registering: Vec<u64> = self
            .inflight
            .iter()
            .filter(|(_, f)| matches!(f.purpose, Purpose::Register | Purpose::Heartbeat))
            .map(|(id, _)| *id)
            .collect();
        for id in registering {
            self.finish(id);
        }
        self.refresh_home(now);
        self.start_op(now, OpKind::Deregister, RequestBody::Deregister)
    }

    /// Registers with every registry again (after [`Client::deregister`]).
    pub fn register_again(&mut self, now: Instant) {
        for reg in 0..self.registries.len() {
            self.start_register(reg, now);
        }
    }

    /// Registers with `registry` again at once (its transport changed: UDP or TLS, issue 14),
    /// so it learns our new address (after a return-routability challenge) before the next
    /// heartbeat. Unknown registries are ignored.
    pub fn reregister(&mut self, now: Instant, registry: SocketAddr) {
        if let Some(reg) = self.registries.iter().position(|r| r.addr == registry) {
            self.start_register(reg, now);
        }
    }

    /// Describes a node: key, address, hostname and tags (never an endpoint).
    pub fn lookup_node(&mut self, now: Instant, peer: PeerRef) -> OpId {
        let body = RequestBody::LookupNode { peer: peer.clone() };
        self.start_op(now, OpKind::LookupNode(peer), body)
    }

    /// After a registration: our tags go to that registry again.
    pub(super) fn resend_tags(&mut self, reg: usize, now: Instant) {
        if !self.config.tags.is_empty() {
            let tags = self.config.tags.clone();
            self.send(reg, now, Purpose::Internal, RequestBody::SetTags { tags });
        }
    }

    /// A `NodeInfo` answer to `op`: checked to match what was asked and its key's address.
    pub(super) fn on_node_info(
        &mut self,
        registry: std::net::SocketAddr,
        op: OpId,
        kind: &OpKind,
        info: super::NodeInfo,
    ) {
        let OpKind::LookupNode(asked) = kind else {
            self.counters.unmatched += 1;
            return;
        };
        let matches = match asked {
            PeerRef::PublicKey(k) => *k == info.key,
            PeerRef::Addr48(a) => *a == info.key.addr48(),
            PeerRef::Hostname(h) => info.hostname.as_ref() == Some(h),
        };
        if !matches || info.addr48 != info.key.addr48() {
            self.counters.bad_push += 1;
            self.op_failed_at_one(op, super::ClientError::InconsistentLookup(registry));
            return;
        }
        if self.mark_done(op) {
            self.events.push_back(ClientEvent::NodeInfo { op, info });
        }
    }
}
