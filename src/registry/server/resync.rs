//! Catching up after the cluster listener was disconnected: the other instances' changes made
//! meanwhile were never announced to us, so the runner hands the core the whole store, read
//! after the new LISTEN ([`Registry::resync`]). What the store has is adopted; what only our
//! cache has is dropped, except what may be ours and newer than the read.

use super::{Registry, Transmits};
use crate::registry::store::Snapshot;

/// A held message only in our cache is kept if it arrived this close to the read (ms): it may
/// be our own, committed after the read began. Keeping one that was delivered elsewhere costs
/// one duplicate push, which the target acknowledges again.
const RESYNC_HELD_MARGIN_MS: u64 = 60_000;

impl Registry {
    /// Adopts `snapshot` (the whole shared store, read from `taken_ms` on) as the truth about
    /// other instances' changes; returns the pushes it means for nodes attached here (held
    /// messages we had not seen).
    pub fn resync(&mut self, now_ms: u64, snapshot: Snapshot, taken_ms: u64) -> Transmits {
        let Snapshot {
            names,
            held,
            seen,
            elsewhere,
        } = snapshot;
        for (key, t) in seen {
            let e = self.seen.entry(key).or_insert(t);
            *e = (*e).max(t);
            self.seen_persisted.insert(key, *e);
        }
        for (key, t) in elsewhere {
            let e = self.elsewhere.entry(key).or_insert(t);
            *e = (*e).max(t);
        }
        // Names released elsewhere meanwhile go; a name whose holder is attached here may be
        // a claim we committed after the read, and stays.
        let stored: std::collections::HashSet<_> = names.iter().map(|(n, _)| n.clone()).collect();
        let presence = &self.presence;
        let gone: Vec<_> = self
            .names
            .iter()
            .filter(|(n, k)| !stored.contains(*n) && !presence.contains_key(*k))
            .map(|(n, k)| (n.clone(), *k))
            .collect();
        for (name, key) in gone {
            self.names.remove(&name);
            if self.owner.get(&key) == Some(&name) {
                self.owner.remove(&key);
            }
        }
        for (name, key) in names {
            self.remote_set_name(name, key, now_ms);
        }
        self.resync_held(now_ms, held, taken_ms)
    }

    fn resync_held(
        &mut self,
        now_ms: u64,
        held: Vec<crate::registry::store::HeldMessage>,
        taken_ms: u64,
    ) -> Transmits {
        let stored: std::collections::HashSet<_> = held
            .iter()
            .map(|m| (*m.target.as_bytes(), *m.from.as_bytes(), m.kind.to_byte()))
            .collect();
        self.held.retain(|k, h| {
            stored.contains(k) || h.received_ms.saturating_add(RESYNC_HELD_MARGIN_MS) >= taken_ms
        });
        let mut out = Vec::new();
        for m in held {
            let k = (*m.target.as_bytes(), *m.from.as_bytes(), m.kind.to_byte());
            if self.held.contains_key(&k) {
                continue;
            }
            // New to us: held and pushed as a notification of it would have been.
            out.extend(self.remote_held(now_ms, m));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{register, registry_identity, TestNode, T0};
    use super::super::*;
    use crate::registry::store::{HeldKind, HeldMessage, MemoryStore};

    fn shared() -> Registry {
        struct Shared(MemoryStore);
        impl Store for Shared {
            fn load(&self) -> Result<Snapshot, StoreError> {
                self.0.load()
            }
            fn apply(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
                self.0.apply(ops)
            }
            fn shared(&self) -> bool {
                true
            }
        }
        let store = Box::new(Shared(MemoryStore::new()));
        Registry::new(registry_identity(), store, Limits::default(), T0).unwrap()
    }

    #[test]
    fn a_resync_adopts_what_other_instances_did_while_the_listener_was_down() {
        let mut r = shared();
        let now = T0 + 1000;
        let mut x = TestNode::new(1, 5001);
        register(&mut r, &mut x, now, Some("worker-node"));
        let (y, z) = (TestNode::new(2, 5002), TestNode::new(3, 5003));
        let name = |s: &str| Hostname::new(s).unwrap();
        // Before the outage we knew z as "old-name" and held an old message from z for x.
        r.apply_remote(
            now,
            StoreOp::SetName {
                name: name("old-name"),
                key: z.key(),
            },
        );
        let old = HeldMessage {
            target: x.key(),
            from: z.key(),
            kind: HeldKind::TrustRequest,
            received_ms: now - 120_000,
            original: vec![0x50; 60],
        };
        r.apply_remote(now, StoreOp::PutHeld(old));
        // Meanwhile (unannounced): z released its name (and the old message was delivered),
        // y claimed "orchestrator", and y asked x for trust through another instance.
        let fresh = HeldMessage {
            target: x.key(),
            from: y.key(),
            kind: HeldKind::TrustRequest,
            received_ms: now + 500,
            original: vec![0x51; 60],
        };
        let snap = Snapshot {
            names: vec![
                (name("worker-node"), x.key()),
                (name("orchestrator"), y.key()),
            ],
            held: vec![fresh],
            seen: vec![(x.key(), now), (y.key(), now + 500)],
            elsewhere: vec![(y.key(), now + 500)],
        };
        let out = r.resync(now + 1000, snap, now + 900);
        assert_eq!(r.names.get(&name("orchestrator")), Some(&y.key()));
        assert_eq!(r.names.get(&name("worker-node")), Some(&x.key()));
        assert!(!r.names.contains_key(&name("old-name")));
        assert!(r.online_elsewhere(&y.key(), now + 1000));
        // The new message is pushed to x (attached here); the delivered one is gone.
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, x.addr);
        assert_eq!(r.held_for(&x.key()), 1);
    }
}
