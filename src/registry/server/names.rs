//! Hostnames: first key to claim a name holds it; exact-name lookups, rate-limited per key.

use super::{Bucket, Ctx, Registry, Transmits};
use crate::identity::PublicKey;
use crate::mapping::Hostname;
use crate::registry::store::{StoreError, StoreOp};
use crate::wire::registry::{ResponseBody, Status};

impl Registry {
    /// `SetHostname`: claims the name for a registered key, unless another key holds it.
    pub(super) fn on_set_hostname(&mut self, cx: &Ctx, hostname: &Hostname) -> Transmits {
        if !self.is_registered(&cx.sender) {
            return self.fail(cx, Status::UnknownNode, "register first".into());
        }
        match self.claim(cx, hostname, super::parked::Via::SetHostname) {
            Some(r) => self.hostname_set(cx, hostname, r),
            // Answered when the store has decided (see `parked`).
            None => Vec::new(),
        }
    }

    /// The answer to a `SetHostname` once its claim is decided.
    pub(super) fn hostname_set(
        &mut self,
        cx: &Ctx,
        hostname: &Hostname,
        claimed: Result<(), Status>,
    ) -> Transmits {
        match claimed {
            Ok(()) => self.ack(cx),
            Err(Status::AlreadyExists) => self.fail(
                cx,
                Status::AlreadyExists,
                format!("hostname {hostname} belongs to another key"),
            ),
            Err(s) => self.fail(cx, s, "cannot store the hostname".into()),
        }
    }

    /// `ReleaseHostname`: frees the sender's name, if it has one.
    pub(super) fn on_release_hostname(&mut self, cx: &Ctx) -> Transmits {
        if let Some(name) = self.owner.get(&cx.sender).cloned() {
            if self
                .store
                .apply(&[StoreOp::RemoveName { name: name.clone() }])
                .is_err()
            {
                return self.fail(cx, Status::Internal, "cannot store the release".into());
            }
            self.owner.remove(&cx.sender);
            self.names.remove(&name);
        }
        self.ack(cx)
    }

    /// `Lookup`: key and address of the name's holder (never an endpoint).
    pub(super) fn on_lookup(&mut self, cx: &Ctx, hostname: &Hostname) -> Transmits {
        if !self.take_query(cx.sender, cx.now_ms) {
            self.counters.rate_limited += 1;
            return self.fail(
                cx,
                Status::RateLimited,
                "too many lookups; retry later".into(),
            );
        }
        match self.names.get(hostname) {
            Some(key) => self.reply(
                cx,
                ResponseBody::LookupResult {
                    hostname: hostname.clone(),
                    key: *key,
                    addr48: key.addr48(),
                },
            ),
            None => self.fail(cx, Status::NotFound, format!("no node holds {hostname}")),
        }
    }

    /// Takes a token from `key`'s query bucket (lookups and endpoint requests).
    pub(super) fn take_query(&mut self, key: PublicKey, now_ms: u64) -> bool {
        let (burst, per_sec) = (self.limits.query_burst, self.limits.query_per_sec);
        self.query_buckets
            .entry(key)
            .or_insert_with(|| Bucket::full(burst, now_ms))
            .take(burst, per_sec, now_ms)
    }

    /// Binds `name` to the sender of `cx` (releasing its previous name), unless another key
    /// holds it. `None`: the store decides later (a shared store), and the request is parked
    /// until then (`via` says how to answer it).
    pub(super) fn claim(
        &mut self,
        cx: &Ctx,
        name: &Hostname,
        via: super::parked::Via,
    ) -> Option<Result<(), Status>> {
        let key = cx.sender;
        match self.names.get(name) {
            Some(k) if *k == key => return Some(Ok(())),
            Some(_) => return Some(Err(Status::AlreadyExists)),
            None => {}
        }
        let mut ops = Vec::new();
        if let Some(old) = self.owner.get(&key) {
            ops.push(StoreOp::RemoveName { name: old.clone() });
        }
        ops.push(StoreOp::SetName {
            name: name.clone(),
            key,
        });
        let ticket = self.park_ticket();
        match self.store.apply_or_park(&ops, ticket) {
            Some(r) => Some(self.claimed(key, name, r)),
            None => {
                let p = super::parked::Parked::Claim {
                    cx: *cx,
                    name: name.clone(),
                    via,
                };
                self.parked.insert(ticket, p);
                None
            }
        }
    }

    /// Records a claim the store has decided: `name` is now `key`'s (its previous name freed).
    pub(super) fn claimed(
        &mut self,
        key: PublicKey,
        name: &Hostname,
        stored: Result<(), StoreError>,
    ) -> Result<(), Status> {
        match stored {
            Ok(()) => {}
            // Another instance of the cluster claimed it first.
            Err(StoreError::Conflict { .. }) => return Err(Status::AlreadyExists),
            Err(e) => {
                tracing::warn!("cannot store hostname {name}: {e}");
                return Err(Status::Internal);
            }
        }
        if let Some(old) = self.owner.insert(key, name.clone()) {
            if old != *name && self.names.get(&old) == Some(&key) {
                self.names.remove(&old);
            }
        }
        if let Some(prev) = self.names.insert(name.clone(), key) {
            if prev != key && self.owner.get(&prev) == Some(name) {
                self.owner.remove(&prev);
            }
        }
        Ok(())
    }
}
