//! Requests parked until their commit: on a shared store (a cluster), a hostname claim and a
//! held trust message are answered only once the database has committed them (first claim wins
//! across instances; nothing acknowledged is lost with an instance). The core does not wait for
//! that: the store queues the batch under a ticket ([`crate::registry::store::Store::apply_or_park`]),
//! the request is remembered here, and [`Registry::on_committed`] answers it when the result
//! comes back. Meanwhile every other request is served as usual.
//!
//! A store that commits synchronously (redb, memory) never parks: the answer goes out at once,
//! exactly as before. Parked requests are bounded by the store's write queue (a full queue
//! refuses the request with `internal`).

use super::{Ctx, Registry, Transmits};
use crate::identity::PublicKey;
use crate::mapping::Hostname;
use crate::registry::store::{HeldKind, StoreError};

/// Which request a parked claim answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Via {
    /// A `Register` naming a hostname: answered `Registered`, with the pushes held for it.
    Register,
    /// A `SetHostname`: answered `Ack` or `already_exists`.
    SetHostname,
}

/// A request waiting for its commit.
#[derive(Debug, Clone)]
pub(super) enum Parked {
    /// A hostname claim.
    Claim {
        /// The request.
        cx: Ctx,
        /// The name claimed.
        name: Hostname,
        /// How to answer.
        via: Via,
    },
    /// A trust message to hold for `target`.
    Hold {
        /// The request.
        cx: Ctx,
        /// Who it is for.
        target: PublicKey,
        /// Request or response.
        kind: HeldKind,
        /// The signed datagram, pushed verbatim.
        original: Vec<u8>,
    },
}

impl Registry {
    /// A fresh ticket for a batch that may be parked.
    pub(super) fn park_ticket(&mut self) -> u64 {
        self.next_ticket = self.next_ticket.wrapping_add(1);
        self.next_ticket
    }

    /// Requests waiting for their commit now.
    pub fn parked(&self) -> usize {
        self.parked.len()
    }

    /// The store has committed (or refused) the batch queued under `ticket`: answers the
    /// request that was waiting for it. An unknown ticket is ignored.
    pub fn on_committed(
        &mut self,
        now_ms: u64,
        ticket: u64,
        stored: Result<(), StoreError>,
    ) -> Transmits {
        let Some(p) = self.parked.remove(&ticket) else {
            return Vec::new();
        };
        match p {
            Parked::Claim { cx, name, via } => {
                let claimed = self.claimed(cx.sender, &name, stored);
                let out = match via {
                    Via::Register => self.registered(&cx, true, claimed),
                    Via::SetHostname => self.hostname_set(&cx, &name, claimed),
                };
                self.finish(&cx, out)
            }
            Parked::Hold {
                cx,
                target,
                kind,
                original,
            } => {
                let out = self.held_stored(&cx, now_ms, target, kind, original, stored);
                self.finish(&cx, out)
            }
        }
    }
}

#[cfg(test)]
mod tests;
