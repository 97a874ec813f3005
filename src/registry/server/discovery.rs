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

#[cfg(test)]
mod tests {
    use super::super::tests::{memory_registry, register, TestNode, T0};
    use super::super::Limits;
    use crate::mapping::{Hostname, PeerRef};
    use crate::wire::registry::{RequestBody, Response, ResponseBody, Status};

    fn ask(r: &mut super::Registry, n: &mut TestNode, now: u64, body: RequestBody) -> ResponseBody {
        let bytes = n.signed(now, body);
        let out = r.handle(now, n.addr, &bytes);
        assert_eq!(out.len(), 1, "one answer");
        Response::decode(&out[0].1).unwrap().body
    }

    fn lookup(r: &mut super::Registry, n: &mut TestNode, now: u64, peer: PeerRef) -> ResponseBody {
        ask(r, n, now, RequestBody::LookupNode { peer })
    }

    fn status(b: &ResponseBody) -> Option<Status> {
        match b {
            ResponseBody::Error { status, .. } => Some(*status),
            _ => None,
        }
    }

    #[test]
    fn tags_show_in_lookups_by_key_address_and_name_and_deregistration_forgets_all() {
        let mut r = memory_registry(Limits::default(), T0);
        let mut a = TestNode::new(1, 1000);
        let mut b = TestNode::new(2, 1000);
        register(&mut r, &mut a, T0, None);
        register(&mut r, &mut b, T0, Some("worker-node"));
        let tags = vec!["gpu".to_string(), "vector-search".to_string()];
        let set = RequestBody::SetTags { tags: tags.clone() };
        assert!(matches!(
            ask(&mut r, &mut b, T0, set),
            ResponseBody::Ack { .. }
        ));
        let name = Hostname::new("worker-node").unwrap();
        for peer in [
            PeerRef::PublicKey(b.key()),
            PeerRef::Addr48(b.key().addr48()),
            PeerRef::Hostname(name.clone()),
        ] {
            match lookup(&mut r, &mut a, T0, peer.clone()) {
                ResponseBody::NodeInfo {
                    key,
                    hostname,
                    tags: t,
                    ..
                } => {
                    assert_eq!(key, b.key(), "{peer}");
                    assert_eq!(hostname.as_ref(), Some(&name));
                    assert_eq!(t, tags);
                }
                other => panic!("{peer}: {other:?}"),
            }
        }
        let clear = RequestBody::SetTags { tags: vec![] };
        ask(&mut r, &mut b, T0, clear);
        let ResponseBody::NodeInfo { tags: t, .. } =
            lookup(&mut r, &mut a, T0, PeerRef::Hostname(name.clone()))
        else {
            panic!("no node");
        };
        assert!(t.is_empty());

        assert!(matches!(
            ask(&mut r, &mut b, T0, RequestBody::Deregister),
            ResponseBody::Ack { .. }
        ));
        for peer in [PeerRef::PublicKey(b.key()), PeerRef::Hostname(name.clone())] {
            assert_eq!(
                status(&lookup(&mut r, &mut a, T0, peer)),
                Some(Status::NotFound)
            );
        }
        // The name is free for another key; tags need a registration.
        let mut c = TestNode::new(3, 1000);
        register(&mut r, &mut c, T0, Some("worker-node"));
        let ResponseBody::NodeInfo { key, .. } =
            lookup(&mut r, &mut a, T0, PeerRef::Hostname(name))
        else {
            panic!("no node");
        };
        assert_eq!(key, c.key());
        let set = RequestBody::SetTags {
            tags: vec!["x".into()],
        };
        assert_eq!(
            status(&ask(&mut r, &mut b, T0, set)),
            Some(Status::UnknownNode)
        );
    }
}
