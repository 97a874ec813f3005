//! Endpoint exchange and relay: an endpoint request goes to an online target only, and only
//! the answer to a forwarded request comes back; a pair that completed an exchange may relay
//! sealed datagrams through us for a while, within per-sender budgets.

use std::net::SocketAddr;

use super::{encode, Ctx, Registry, Transmits};
use crate::identity::PublicKey;
use crate::registry::store::ForwardedEndpoint;
use crate::wire::registry::{Nonce, Response, ResponseBody, Status};

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
        // Remembered even when the target is attached to another instance: its answer comes
        // back through us (a `Forward`), and we have then seen the whole exchange.
        self.endpoint_requests.insert(
            cx.nonce,
            PendingEndpoint {
                asker: cx.sender,
                target: *target,
                expires_ms: cx.now_ms + self.limits.endpoint_answer_timeout_ms,
            },
        );
        let Some(to) = self.online_addr(target, cx.now_ms) else {
            // Attached to another instance of the cluster? That one delivers it and accepts
            // the answer.
            let endpoint = Some(ForwardedEndpoint {
                nonce: cx.nonce,
                asker: cx.sender,
            });
            let push = encode(&self.identity, &push);
            if !self.forward(cx.now_ms, *target, push, endpoint) {
                self.endpoint_requests.remove(&cx.nonce);
            }
            return out;
        };
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
            // The asker may be attached to another instance of the cluster. The exchange
            // passed through us all the same: the pair may relay here (v1.4, home relays),
            // for instance once the asker registers here too.
            let info = encode(&self.identity, &info);
            if self.forward(cx.now_ms, *target, info, None) {
                self.permit_pair(&sender, target, cx.now_ms);
                return self.ack(cx);
            }
            return self.fail(cx, Status::NotFound, format!("{target} is not online"));
        };
        // The target answered, so it trusts the asker, who asked, so it trusts the
        // target: the pair may relay through us for a while.
        self.permit_pair(&sender, target, cx.now_ms);
        let mut out = self.ack(cx);
        out.push((to, encode(&self.identity, &info)));
        out
    }

    /// Lets `a` and `b` relay through us for `relay_pair_ttl_ms` (an exchange between them
    /// passed through us), within `max_relay_pairs`.
    pub(super) fn permit_pair(&mut self, a: &PublicKey, b: &PublicKey, now_ms: u64) {
        let p = pair(a, b);
        if self.relay_pairs.contains_key(&p) || self.relay_pairs.len() < self.limits.max_relay_pairs
        {
            self.relay_pairs
                .insert(p, now_ms + self.limits.relay_pair_ttl_ms);
        }
    }

    /// A forwarded `EndpointInfo` for `asker` came back from the instance its target is
    /// attached to: if it answers a request we forwarded, the exchange passed through us and
    /// the pair may relay here too.
    pub(super) fn forwarded_answer(&mut self, asker: &PublicKey, datagram: &[u8], now_ms: u64) {
        let Ok(resp) = Response::decode(datagram) else {
            return;
        };
        if !matches!(resp.body, ResponseBody::EndpointInfo { .. }) {
            return;
        }
        let target = match self.endpoint_requests.get(&resp.in_reply_to) {
            Some(p) if p.asker == *asker => p.target,
            _ => return,
        };
        self.endpoint_requests.remove(&resp.in_reply_to);
        self.permit_pair(asker, &target, now_ms);
    }

    /// Whether `a` and `b` may relay through us now.
    pub fn relay_allowed(&self, a: &PublicKey, b: &PublicKey, now_ms: u64) -> bool {
        self.relay_pairs
            .get(&pair(a, b))
            .is_some_and(|until| *until >= now_ms)
    }

    /// Relays a `RelaySend` frame as a `RelayDeliver` to its target (see
    /// [`Registry::relay_in_place`], the runner's allocation-free path).
    pub(super) fn relay(&mut self, now_ms: u64, from: SocketAddr, bytes: &[u8]) -> Transmits {
        let mut frame = bytes.to_vec();
        match self.relay_in_place(now_ms, from, &mut frame) {
            Some(to) => vec![(to, frame)],
            None => Vec::new(),
        }
    }
}
