//! Held trust messages: kept per (target, sender, kind) until the target acknowledges them,
//! pushed at once to an online target and again at each of its heartbeats, expired after
//! [`super::Limits::held_expiry_ms`].

use std::net::SocketAddr;

use super::{encode, Ctx, Registry, Transmits};
use crate::identity::PublicKey;
use crate::mapping::Hostname;
use crate::registry::store::{HeldKind, HeldMessage, StoreOp};
use crate::wire::registry::{Nonce, Response, ResponseBody, Status};

/// A held message in memory (the store has the same record).
#[derive(Debug, Clone)]
pub(super) struct Held {
    pub(super) from: PublicKey,
    pub(super) kind: HeldKind,
    pub(super) received_ms: u64,
    pub(super) nonce: Nonce,
    pub(super) original: Vec<u8>,
}

/// (target, sender, kind byte): one held message per triple.
pub(super) type HeldKey = ([u8; 32], [u8; 32], u8);

impl Registry {
    pub(super) fn held_range<'a>(
        &'a self,
        target: &PublicKey,
    ) -> impl Iterator<Item = (&'a HeldKey, &'a Held)> {
        let t = *target.as_bytes();
        self.held.range((t, [0u8; 32], 0)..=(t, [0xffu8; 32], 0xff))
    }

    /// Holds a trust message for `target`, pushing it at once if the target is online.
    pub(super) fn hold(
        &mut self,
        cx: &Ctx,
        bytes: &[u8],
        target: PublicKey,
        kind: HeldKind,
    ) -> Transmits {
        let sender = cx.sender;
        if target == sender {
            return self.fail(
                cx,
                Status::InvalidArgument,
                "a node cannot address itself".into(),
            );
        }
        if !self.is_registered(&target) {
            self.counters.unknown_target += 1;
            return self.fail(
                cx,
                Status::NotFound,
                format!("{target} is not registered here"),
            );
        }
        let key = (*target.as_bytes(), *sender.as_bytes(), kind.to_byte());
        let replaces = self.held.contains_key(&key);
        if !replaces
            && (self.held_for(&target) >= self.limits.held_per_target
                || self.held.len() >= self.limits.held_total)
        {
            return self.fail(
                cx,
                Status::QueueFull,
                format!("{target} has too many pending messages; retry later"),
            );
        }
        let msg = HeldMessage {
            target,
            from: sender,
            kind,
            received_ms: cx.now_ms,
            original: bytes.to_vec(),
        };
        let ticket = self.park_ticket();
        match self.store.apply_or_park(&[StoreOp::PutHeld(msg)], ticket) {
            Some(r) => self.held_stored(cx, cx.now_ms, target, kind, bytes.to_vec(), r),
            None => {
                let p = super::parked::Parked::Hold {
                    cx: *cx,
                    target,
                    kind,
                    original: bytes.to_vec(),
                };
                self.parked.insert(ticket, p);
                Vec::new()
            }
        }
    }

    /// The answer to a trust message once the store has it (or failed to store it); pushes it
    /// to the target if it is online here at `now_ms`.
    pub(super) fn held_stored(
        &mut self,
        cx: &Ctx,
        now_ms: u64,
        target: PublicKey,
        kind: HeldKind,
        original: Vec<u8>,
        stored: Result<(), crate::registry::store::StoreError>,
    ) -> Transmits {
        if stored.is_err() {
            return self.fail(cx, Status::Internal, "cannot store the message".into());
        }
        let (sender, nonce) = (cx.sender, cx.nonce);
        let key = (*target.as_bytes(), *sender.as_bytes(), kind.to_byte());
        self.held.insert(
            key,
            Held {
                from: sender,
                kind,
                received_ms: cx.now_ms,
                nonce,
                original: original.clone(),
            },
        );
        let mut out = self.ack(cx);
        if let Some(to) = self.online_addr(&target, now_ms) {
            let hostname = self.owner.get(&sender).cloned();
            out.push((
                to,
                encode(&self.identity, &push(kind, hostname, nonce, original)),
            ));
            self.counters.pushed += 1;
        }
        out
    }

    /// Every message held for `target`, as pushes to `to`.
    pub(super) fn pushes_for(&mut self, target: &PublicKey, to: SocketAddr) -> Transmits {
        let out: Transmits = self
            .held_range(target)
            .map(|(_, h)| {
                let hostname = self.owner.get(&h.from).cloned();
                (
                    to,
                    encode(
                        &self.identity,
                        &push(h.kind, hostname, h.nonce, h.original.clone()),
                    ),
                )
            })
            .collect();
        self.counters.pushed += out.len() as u64;
        out
    }

    /// `Delivered`: the target acknowledged these pushes; forget them.
    pub(super) fn on_delivered(&mut self, cx: &Ctx, nonces: &[Nonce]) -> Transmits {
        let sender = cx.sender;
        let done: Vec<(HeldKey, PublicKey, HeldKind)> = self
            .held_range(&sender)
            .filter(|(_, h)| nonces.contains(&h.nonce))
            .map(|(k, h)| (*k, h.from, h.kind))
            .collect();
        let ops: Vec<StoreOp> = done
            .iter()
            .map(|(_, from, kind)| StoreOp::RemoveHeld {
                target: sender,
                from: *from,
                kind: *kind,
            })
            .collect();
        if !ops.is_empty() {
            if self.store.apply(&ops).is_err() {
                return self.fail(cx, Status::Internal, "cannot store the delivery".into());
            }
            for (k, _, _) in done {
                self.held.remove(&k);
            }
        }
        self.ack(cx)
    }

    /// Drops held messages older than the expiry (from the store first).
    pub(super) fn expire_held(&mut self, now_ms: u64) {
        let expiry = self.limits.held_expiry_ms;
        let expired: Vec<HeldKey> = self
            .held
            .iter()
            .filter(|(_, h)| h.received_ms.saturating_add(expiry) < now_ms)
            .map(|(k, _)| *k)
            .collect();
        if expired.is_empty() {
            return;
        }
        let ops: Vec<StoreOp> = expired
            .iter()
            .filter_map(|k| {
                let h = self.held.get(k)?;
                Some(StoreOp::RemoveHeld {
                    target: PublicKey::from_bytes(k.0).ok()?,
                    from: h.from,
                    kind: h.kind,
                })
            })
            .collect();
        match self.store.apply(&ops) {
            Ok(()) => {
                for k in expired {
                    self.held.remove(&k);
                    self.counters.expired += 1;
                }
            }
            Err(e) => tracing::warn!("cannot expire held messages: {e}"),
        }
    }
}

/// The push of a held message.
pub(super) fn push(
    kind: HeldKind,
    hostname: Option<Hostname>,
    nonce: Nonce,
    original: Vec<u8>,
) -> Response {
    Response {
        in_reply_to: nonce,
        body: match kind {
            HeldKind::TrustRequest => ResponseBody::PushTrustRequest { hostname, original },
            HeldKind::TrustResponse => ResponseBody::PushTrustResponse { hostname, original },
        },
    }
}
