//! Registered nodes: a key that registered here (and proved its address) is remembered, with
//! the time it was last heard, for [`super::Limits::registration_expiry_ms`]. Only a registered
//! key may hold a hostname or be sent held messages; a key silent for longer is forgotten and
//! its hostname released, so neither names nor held messages pile up for keys nobody uses.

use super::{Registry, StoreOp};
use crate::identity::PublicKey;

/// A node's last-heard time is written to the store at most this often (ms): heartbeats come
/// every 20 s, and the expiry is counted in days.
pub(super) const SEEN_WRITE_INTERVAL_MS: u64 = 3600 * 1000;

impl Registry {
    /// Whether `key` is registered here (heard within the registration expiry).
    pub(super) fn is_registered(&self, key: &PublicKey) -> bool {
        self.seen.contains_key(key)
    }

    /// Whether a new key may register (the table of registered keys has room).
    pub(super) fn has_room_for(&self, key: &PublicKey) -> bool {
        self.seen.contains_key(key) || self.seen.len() < self.limits.max_registered
    }

    /// Notes that `key` was heard at `now_ms`; persists it when new or an hour old. A failed
    /// write is logged: the registration stands (at worst it is forgotten one expiry early).
    pub(super) fn refresh_seen(&mut self, key: PublicKey, now_ms: u64) {
        self.seen.insert(key, now_ms);
        let due = self
            .seen_persisted
            .get(&key)
            .is_none_or(|w| w.saturating_add(SEEN_WRITE_INTERVAL_MS) <= now_ms);
        if due {
            self.seen_persisted.insert(key, now_ms);
            if let Err(e) = self.store.apply(&[StoreOp::Seen {
                key,
                unix_ms: now_ms,
            }]) {
                tracing::warn!("cannot store the registration of {key}: {e}");
            }
        }
    }

    /// Forgets keys silent past the registration expiry (not online), releasing their names.
    pub(super) fn expire_registrations(&mut self, now_ms: u64) {
        let expiry = self.limits.registration_expiry_ms;
        let gone: Vec<PublicKey> = self
            .seen
            .iter()
            .filter(|(k, t)| {
                t.saturating_add(expiry) < now_ms
                    && !self.presence.contains_key(*k)
                    && !self.elsewhere.contains_key(*k)
            })
            .map(|(k, _)| *k)
            .collect();
        if gone.is_empty() {
            return;
        }
        let mut ops = Vec::new();
        for key in &gone {
            ops.push(StoreOp::Forget { key: *key });
            if let Some(name) = self.owner.get(key) {
                ops.push(StoreOp::RemoveName { name: name.clone() });
            }
        }
        if let Err(e) = self.store.apply(&ops) {
            tracing::warn!("cannot expire registrations: {e}");
            return;
        }
        for key in gone {
            self.seen.remove(&key);
            self.seen_persisted.remove(&key);
            self.tags.remove(&key);
            if let Some(name) = self.owner.remove(&key) {
                self.names.remove(&name);
                self.counters.names_expired += 1;
            }
        }
    }
}
