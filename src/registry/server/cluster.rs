//! Several instances over one shared store (a cluster): presence is written to the store
//! (throttled), a datagram for a node attached to another instance goes out as a
//! [`StoreOp::Forward`], and the changes other instances made reach this core through
//! [`Registry::apply_remote`] (the runner feeds them from the store's notifications), so each
//! instance's tables stay a faithful cache of the store.
//!
//! Held trust messages need no forward: the other instances learn the [`StoreOp::PutHeld`]
//! itself and push it to the target if it is attached to them.

use std::net::SocketAddr;

use super::endpoints::PendingEndpoint;
use super::held::Held;
use super::{original_nonce, Registry, Transmits};
use crate::identity::PublicKey;
use crate::mapping::Hostname;
use crate::registry::store::{ForwardedEndpoint, HeldMessage, StoreOp};

impl Registry {
    /// Whether other instances share our store.
    pub fn is_clustered(&self) -> bool {
        self.cluster
    }

    /// Whether `key` was heard at another instance within the online window.
    pub(super) fn online_elsewhere(&self, key: &PublicKey, now_ms: u64) -> bool {
        self.elsewhere
            .get(key)
            .is_some_and(|t| t + self.limits.online_timeout_ms >= now_ms)
    }

    /// Nodes online at other instances (as far as we know).
    pub fn online_elsewhere_count(&self, now_ms: u64) -> usize {
        let online = self.limits.online_timeout_ms;
        self.elsewhere
            .values()
            .filter(|t| **t + online >= now_ms)
            .count()
    }

    /// Writes a node's presence to the shared store when it is new, moved, or a third of the
    /// online window old; returns when it was last written.
    pub(super) fn share_presence(
        &mut self,
        key: PublicKey,
        addr: SocketAddr,
        now_ms: u64,
        written_ms: Option<u64>,
    ) -> Option<u64> {
        let every = self.limits.online_timeout_ms / 3;
        if written_ms.is_some_and(|w| w.saturating_add(every) > now_ms) {
            return written_ms;
        }
        let op = StoreOp::Presence {
            key,
            addr,
            unix_ms: now_ms,
        };
        match self.store.apply(&[op]) {
            Ok(()) => Some(now_ms),
            Err(e) => {
                tracing::warn!("cannot share the presence of {key}: {e}");
                written_ms
            }
        }
    }

    /// Hands `datagram` to the other instances for `target`, if it is online at one of them.
    /// Returns whether it went out.
    pub(super) fn forward(
        &mut self,
        now_ms: u64,
        target: PublicKey,
        datagram: Vec<u8>,
        endpoint: Option<ForwardedEndpoint>,
    ) -> bool {
        if !self.cluster || !self.online_elsewhere(&target, now_ms) {
            return false;
        }
        let op = StoreOp::Forward {
            target,
            datagram,
            endpoint,
        };
        match self.store.apply(&[op]) {
            Ok(()) => {
                self.counters.cluster_forwarded += 1;
                true
            }
            Err(e) => {
                tracing::warn!("cannot forward to {target}: {e}");
                false
            }
        }
    }

    /// Applies a change another instance made to the shared store; returns the datagrams it
    /// means for nodes attached here (a held message pushed at once, a forwarded datagram).
    pub fn apply_remote(&mut self, now_ms: u64, op: StoreOp) -> Transmits {
        self.counters.cluster_applied += 1;
        match op {
            StoreOp::SetName { name, key } => {
                self.remote_set_name(name, key, now_ms);
                Vec::new()
            }
            StoreOp::RemoveName { name } => {
                if let Some(k) = self.names.remove(&name) {
                    if self.owner.get(&k) == Some(&name) {
                        self.owner.remove(&k);
                    }
                }
                Vec::new()
            }
            StoreOp::PutHeld(m) => self.remote_held(now_ms, m),
            StoreOp::RemoveHeld { target, from, kind } => {
                let k = (*target.as_bytes(), *from.as_bytes(), kind.to_byte());
                self.held.remove(&k);
                Vec::new()
            }
            StoreOp::Seen { key, unix_ms } => {
                let t = self.seen.entry(key).or_insert(unix_ms);
                *t = (*t).max(unix_ms);
                self.seen_persisted.insert(key, *t);
                Vec::new()
            }
            StoreOp::Forget { key } => {
                if !self.presence.contains_key(&key) {
                    self.seen.remove(&key);
                    self.seen_persisted.remove(&key);
                }
                Vec::new()
            }
            StoreOp::Presence { key, unix_ms, .. } => {
                let t = self.elsewhere.entry(key).or_insert(unix_ms);
                *t = (*t).max(unix_ms);
                Vec::new()
            }
            StoreOp::Forward {
                target,
                datagram,
                endpoint,
            } => self.remote_forward(now_ms, target, datagram, endpoint),
        }
    }

    pub(super) fn remote_set_name(&mut self, name: Hostname, key: PublicKey, now_ms: u64) {
        if let Some(old) = self.owner.insert(key, name.clone()) {
            if old != name && self.names.get(&old) == Some(&key) {
                self.names.remove(&old);
            }
        }
        if let Some(prev) = self.names.insert(name.clone(), key) {
            if prev != key && self.owner.get(&prev) == Some(&name) {
                self.owner.remove(&prev);
            }
        }
        self.seen.entry(key).or_insert(now_ms);
    }

    pub(super) fn remote_held(&mut self, now_ms: u64, m: HeldMessage) -> Transmits {
        let key = (*m.target.as_bytes(), *m.from.as_bytes(), m.kind.to_byte());
        let nonce = original_nonce(&m.original);
        self.seen.entry(m.target).or_insert(now_ms);
        self.held.insert(
            key,
            Held {
                from: m.from,
                kind: m.kind,
                received_ms: m.received_ms,
                nonce,
                original: m.original.clone(),
            },
        );
        let Some(to) = self.online_addr(&m.target, now_ms) else {
            return Vec::new();
        };
        let hostname = self.owner.get(&m.from).cloned();
        self.counters.pushed += 1;
        self.counters.cluster_delivered += 1;
        vec![(
            to,
            super::encode(
                &self.identity,
                &super::held::push(m.kind, hostname, nonce, m.original),
            ),
        )]
    }

    fn remote_forward(
        &mut self,
        now_ms: u64,
        target: PublicKey,
        datagram: Vec<u8>,
        endpoint: Option<ForwardedEndpoint>,
    ) -> Transmits {
        let Some(to) = self.online_addr(&target, now_ms) else {
            return Vec::new();
        };
        if endpoint.is_none() {
            self.forwarded_answer(&target, &datagram, now_ms);
        }
        if let Some(ep) = endpoint {
            if self.endpoint_requests.len() < self.limits.max_nodes {
                self.endpoint_requests.insert(
                    ep.nonce,
                    PendingEndpoint {
                        asker: ep.asker,
                        target,
                        expires_ms: now_ms + self.limits.endpoint_answer_timeout_ms,
                    },
                );
            }
        }
        self.counters.cluster_delivered += 1;
        vec![(to, datagram)]
    }
}

/// How much state a registry holds, for status reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sizes {
    /// Nodes attached here and online.
    pub online: usize,
    /// Nodes online at other instances of the cluster (as far as we know).
    pub online_elsewhere: usize,
    /// Registered nodes (heard within the registration expiry).
    pub registered: usize,
    /// Hostnames bound.
    pub names: usize,
    /// Trust messages held.
    pub held: usize,
}

impl Registry {
    /// How much state it holds at `now_ms`.
    pub fn sizes(&self, now_ms: u64) -> Sizes {
        Sizes {
            online: self.presence.len(),
            online_elsewhere: self.online_elsewhere_count(now_ms),
            registered: self.seen.len(),
            names: self.names.len(),
            held: self.held.len(),
        }
    }
}

#[cfg(test)]
mod tests;
