//! Endpoint exchange and relay: an endpoint request goes to an online target only, and only
//! the answer to a forwarded request comes back; a pair that completed an exchange may relay
//! sealed datagrams through us for a while, within per-sender budgets.

use std::net::SocketAddr;

use super::{encode, Bucket, Ctx, Registry, Transmits};
use crate::identity::PublicKey;
use crate::registry::store::ForwardedEndpoint;
use crate::wire::registry::{Nonce, Response, ResponseBody, Status};
use crate::wire::relay;

/// An endpoint request forwarded and not yet answered.
#[derive(Debug, Clone)]
pub(super) struct PendingEndpoint {
    pub(super) asker: PublicKey,
    pub(super) target: PublicKey,
    pub(super) expires_ms: u64,
}

/// An unordered pair of keys (the smaller first).
pub(super) type Pair = ([u8; 32], [u8; 32]);

fn pair(a: &PublicKey, b: &PublicKey) -> Pair {
    let (a, b) = (*a.as_bytes(), *b.as_bytes());
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

/// A node's relay budget: packets and bytes.
#[derive(Debug, Clone)]
pub(super) struct RelayBudget {
    pub(super) packets: Bucket,
    pub(super) bytes: Bucket,
}

impl Registry {
    /// `EndpointRequest`: forwarded to the target if it is online (rate-limited per asker).
    /// The asker gets the same `Ack` whether the target is online, offline or unknown: only
    /// the target's answer (sent only to peers it trusts) tells it anything.
    pub(super) fn on_endpoint_request(
        &mut self,
        cx: &Ctx,
        bytes: &[u8],
        target: &PublicKey,
    ) -> Transmits {
        if !self.take_query(cx.sender, cx.now_ms) {
            self.counters.rate_limited += 1;
            return self.fail(
                cx,
                Status::RateLimited,
                "too many endpoint requests; retry later".into(),
            );
        }
        if self.endpoint_requests.len() >= self.limits.max_nodes {
            return self.fail(cx, Status::RateLimited, "too many endpoint requests".into());
        }
        let mut out = self.ack(cx);
        let push = Response {
            in_reply_to: cx.nonce,
            body: ResponseBody::PushEndpointRequest {
                observed: cx.from,
                original: bytes.to_vec(),
            },
        };
        let Some(to) = self.online_addr(target, cx.now_ms) else {
            // Attached to another instance of the cluster? That one delivers it and accepts
            // the answer.
            let endpoint = Some(ForwardedEndpoint {
                nonce: cx.nonce,
                asker: cx.sender,
            });
            let push = encode(&self.identity, &push);
            self.forward(cx.now_ms, *target, push, endpoint);
            return out;
        };
        self.endpoint_requests.insert(
            cx.nonce,
            PendingEndpoint {
                asker: cx.sender,
                target: *target,
                expires_ms: cx.now_ms + self.limits.endpoint_answer_timeout_ms,
            },
        );
        out.push((to, encode(&self.identity, &push)));
        out
    }

    /// `EndpointResponse`: forwarded to the asker only if it answers a request we forwarded;
    /// the pair may then relay through us.
    pub(super) fn on_endpoint_response(
        &mut self,
        cx: &Ctx,
        bytes: &[u8],
        target: &PublicKey,
        in_reply_to: &Nonce,
    ) -> Transmits {
        let sender = cx.sender;
        let answers = self
            .endpoint_requests
            .get(in_reply_to)
            .is_some_and(|p| p.asker == *target && p.target == sender);
        if !answers {
            return self.fail(
                cx,
                Status::NotFound,
                "no such endpoint request is waiting for an answer".into(),
            );
        }
        self.endpoint_requests.remove(in_reply_to);
        let info = Response {
            in_reply_to: *in_reply_to,
            body: ResponseBody::EndpointInfo {
                observed: cx.from,
                original: bytes.to_vec(),
            },
        };
        let Some(to) = self.online_addr(target, cx.now_ms) else {
            // The asker may be attached to another instance of the cluster.
            let info = encode(&self.identity, &info);
            if self.forward(cx.now_ms, *target, info, None) {
                return self.ack(cx);
            }
            return self.fail(cx, Status::NotFound, format!("{target} is not online"));
        };
        // The target answered, so it trusts the asker, who asked, so it trusts the
        // target: the pair may relay through us for a while.
        let p = pair(&sender, target);
        if self.relay_pairs.contains_key(&p) || self.relay_pairs.len() < self.limits.max_relay_pairs
        {
            self.relay_pairs
                .insert(p, cx.now_ms + self.limits.relay_pair_ttl_ms);
        }
        let mut out = self.ack(cx);
        out.push((to, encode(&self.identity, &info)));
        out
    }

    /// Whether `a` and `b` may relay through us now.
    pub fn relay_allowed(&self, a: &PublicKey, b: &PublicKey, now_ms: u64) -> bool {
        self.relay_pairs
            .get(&pair(a, b))
            .is_some_and(|until| *until >= now_ms)
    }

    /// Relays a `RelaySend` frame as a `RelayDeliver` to its target, if the sender (known by
    /// its address) and the target are online, the pair completed an endpoint exchange here,
    /// and the sender is within its budget. Refusals are silent and counted.
    pub(super) fn relay(&mut self, now_ms: u64, from: SocketAddr, bytes: &[u8]) -> Transmits {
        let Some((to48, payload)) = relay::parse(bytes, relay::RELAY_SEND) else {
            self.counters.relay_refused += 1;
            return Vec::new();
        };
        let sender = self.by_addr.get(&from).copied();
        let target = self.by_addr48.get(&to48).copied();
        let (Some(sender), Some(target)) = (sender, target) else {
            self.counters.relay_refused += 1;
            return Vec::new();
        };
        let to = match self.online_addr(&target, now_ms) {
            Some(to) if self.is_online(&sender, now_ms) => to,
            _ => {
                self.counters.relay_refused += 1;
                return Vec::new();
            }
        };
        if !self.relay_allowed(&sender, &target, now_ms) {
            self.counters.relay_refused += 1;
            return Vec::new();
        }
        if !self.take_relay_budget(sender, payload.len(), now_ms) {
            self.counters.relay_limited += 1;
            return Vec::new();
        }
        self.counters.relayed_packets += 1;
        self.counters.relayed_bytes += payload.len() as u64;
        vec![(
            to,
            relay::frame(relay::RELAY_DELIVER, sender.addr48(), payload),
        )]
    }

    /// Takes one packet of `len` bytes from `sender`'s relay budget.
    fn take_relay_budget(&mut self, sender: PublicKey, len: usize, now_ms: u64) -> bool {
        let l = &self.limits;
        let budget = self
            .relay_budgets
            .entry(sender)
            .or_insert_with(|| RelayBudget {
                packets: Bucket::full(l.relay_packet_burst, now_ms),
                bytes: Bucket::full(l.relay_byte_burst, now_ms),
            });
        budget
            .packets
            .take(l.relay_packet_burst, l.relay_packets_per_sec, now_ms)
            && budget.bytes.take_n(
                len as u64,
                l.relay_byte_burst,
                l.relay_bytes_per_sec,
                now_ms,
            )
    }
}
