//! Discovery (v1.3): a node's tags, looking a node up by key, address or hostname, and
//! deregistration.
//!
//! Tags are soft state, like presence: kept in memory for a registered key, dropped when the
//! key deregisters or its registration expires, and not persisted (the node sends them again
//! after every registration, so a restarted registry has them back within one registration).
//! There is no listing by tag: a lookup names one node, so tags cannot enumerate nodes.

use super::{Ctx, Registry, Transmits};
use crate::identity::PublicKey;
use crate::mapping::PeerRef;
use crate::registry::store::StoreOp;
use crate::wire::registry::{ResponseBody, Status};

impl Registry {
    /// `SetTags`: replaces the sender's tags (validated at decoding); empty clears them.
    pub(super) fn on_set_tags(&mut self, cx: &Ctx, tags: &[String]) -> Transmits {
        if !self.is_registered(&cx.sender) {
            return self.fail(cx, Status::UnknownNode, "register first".into());
        }
        if tags.is_empty() {
            self.tags.remove(&cx.sender);
        } else {
            self.tags.insert(cx.sender, tags.to_vec());
        }
        self.ack(cx)
    }

    /// `Deregister`: forgets the sender's hostname, tags, registration and presence.
    pub(super) fn on_deregister(&mut self, cx: &Ctx) -> Transmits {
        let mut ops = vec![StoreOp::Forget { key: cx.sender }];
        if let Some(name) = self.owner.get(&cx.sender) {
            ops.push(StoreOp::RemoveName { name: name.clone() });
        }
        if self.store.apply(&ops).is_err() {
            return self.fail(
                cx,
                Status::Internal,
                "cannot store the deregistration".into(),
            );
        }
        let out = self.ack(cx);
        self.forget_node(&cx.sender);
        out
    }

    /// Drops everything held in memory about `key`.
    fn forget_node(&mut self, key: &PublicKey) {
        if let Some(name) = self.owner.remove(key) {
            self.names.remove(&name);
        }
        self.tags.remove(key);
        self.seen.remove(key);
        self.seen_persisted.remove(key);
        if let Some(p) = self.presence.remove(key) {
            self.by_addr.remove(&p.addr);
        }
        self.by_addr48.retain(|_, k| k != key);
    }

    /// `LookupNode`: key, address, hostname and tags of one registered node (an address finds
    /// only an online node); rate-limited like `Lookup`.
    pub(super) fn on_lookup_node(&mut self, cx: &Ctx, peer: &PeerRef) -> Transmits {
        if !self.take_query(cx.sender, cx.now_ms) {
            self.counters.rate_limited += 1;
            return self.fail(
                cx,
                Status::RateLimited,
                "too many lookups; retry later".into(),
            );
        }
        let key = match peer {
            PeerRef::PublicKey(k) => Some(*k).filter(|k| self.is_registered(k)),
            PeerRef::Addr48(a) => self.by_addr48.get(a).copied(),
            PeerRef::Hostname(h) => self.names.get(h).copied(),
        };
        let Some(key) = key else {
            return self.fail(cx, Status::NotFound, format!("no node here is {peer}"));
        };
        self.reply(
            cx,
            ResponseBody::NodeInfo {
                key,
                addr48: key.addr48(),
                hostname: self.owner.get(&key).cloned(),
                tags: self.tags.get(&key).cloned().unwrap_or_default(),
            },
        )
    }
}
