//! What registries push to us: trust messages (checked against their own signatures) and
//! endpoint requests and answers (answered only for trusted peers).

use std::net::SocketAddr;
use std::time::Instant;

use super::{Client, ClientEvent, Purpose, SEEN_CAPACITY};
use crate::mapping::Hostname;
use crate::node::trust::{verify_trust_message, TrustMessage};
use crate::wire::registry::{Nonce, Request, RequestBody};

impl Client {
    /// Whether a push id is new; remembers it (bounded).
    pub(super) fn first_sighting(&mut self, nonce: Nonce) -> bool {
        if !self.seen.insert(nonce) {
            return false;
        }
        self.seen_order.push_back(nonce);
        if self.seen_order.len() > SEEN_CAPACITY {
            if let Some(old) = self.seen_order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }

    pub(super) fn on_trust_push(
        &mut self,
        now: Instant,
        reg: usize,
        push_id: Nonce,
        hostname: Option<Hostname>,
        original: &[u8],
    ) {
        // Acknowledge whatever it is, so the registry stops holding it (retried if lost).
        let ack = RequestBody::Delivered {
            nonces: vec![push_id],
        };
        self.send(reg, now, Purpose::Internal, ack);
        // A hostname counts (for display and the allow-list) only from a registry whose key is
        // pinned or was persisted when learned.
        let hostname = match hostname {
            Some(_) if !self.vouched(reg) => {
                self.counters.unvouched_hostnames += 1;
                None
            }
            h => h,
        };
        let me = self.identity.public_key();
        match verify_trust_message(original, &me, self.unix_ms(now, 0)) {
            Ok(msg) => self.report_trust(msg, hostname),
            Err(_) => self.counters.bad_push += 1,
        }
    }

    pub(super) fn handle_direct(&mut self, now: Instant, bytes: &[u8]) {
        let me = self.identity.public_key();
        match verify_trust_message(bytes, &me, self.unix_ms(now, 0)) {
            Ok(msg) => self.report_trust(msg, None),
            Err(_) => self.counters.bad_push += 1,
        }
    }

    pub(super) fn report_trust(&mut self, msg: TrustMessage, hostname: Option<Hostname>) {
        match msg {
            TrustMessage::Request {
                from,
                nonce,
                sent_ms,
                justification,
            } => {
                if self.first_sighting(nonce) {
                    self.events.push_back(ClientEvent::TrustRequestReceived {
                        from,
                        hostname,
                        justification,
                        nonce,
                        sent_ms,
                    });
                }
            }
            TrustMessage::Response {
                from,
                in_reply_to,
                sent_ms,
                decision,
                reason,
            } => {
                // Responses have no nonce of their own in the event; dedupe on (from, sent_ms).
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&from.as_bytes()[..8]);
                id[8..].copy_from_slice(&sent_ms.to_be_bytes());
                if self.first_sighting(id) {
                    self.events.push_back(ClientEvent::TrustResponseReceived {
                        from,
                        hostname,
                        in_reply_to,
                        decision,
                        reason,
                        sent_ms,
                    });
                }
            }
        }
    }

    pub(super) fn on_endpoint_push(
        &mut self,
        now: Instant,
        reg: usize,
        observed: SocketAddr,
        original: &[u8],
    ) {
        let me = self.identity.public_key();
        let Ok(req) = Request::decode_verified(original) else {
            self.counters.bad_push += 1;
            return;
        };
        let RequestBody::EndpointRequest {
            target,
            candidates,
            home,
        } = req.body
        else {
            self.counters.bad_push += 1;
            return;
        };
        if target != me {
            self.counters.bad_push += 1;
            return;
        }
        let from = req.header.sender;
        if !self.trusted.contains(&from) {
            self.counters.untrusted_endpoint_requests += 1;
            return;
        }
        let answer = RequestBody::EndpointResponse {
            target: from,
            in_reply_to: req.header.nonce,
            candidates: self.config.candidates.clone(),
            home: self.home,
        };
        self.send(reg, now, Purpose::Internal, answer);
        if self.first_sighting(req.header.nonce) {
            let mut all = reachable(observed);
            all.extend(candidates.into_iter().filter(|c| *c != observed));
            self.events.push_back(ClientEvent::EndpointRequested {
                from,
                candidates: all,
                registry: self.registries[reg].addr,
                home,
            });
        }
    }

    pub(super) fn on_endpoint_info(
        &mut self,
        reg: usize,
        in_reply_to: Nonce,
        observed: SocketAddr,
        original: &[u8],
    ) {
        let Some(wait) = self.endpoint_waits.get(&in_reply_to) else {
            self.counters.unmatched += 1;
            return;
        };
        let (op, peer) = (wait.op, wait.peer);
        let me = self.identity.public_key();
        let valid = Request::decode_verified(original)
            .ok()
            .and_then(|r| match r.body {
                RequestBody::EndpointResponse {
                    target,
                    in_reply_to: answered,
                    candidates,
                    home,
                } if r.header.sender == peer && target == me && answered == in_reply_to => {
                    Some((candidates, home))
                }
                _ => None,
            });
        let Some((candidates, home)) = valid else {
            self.counters.bad_push += 1;
            return;
        };
        self.endpoint_waits.remove(&in_reply_to);
        if self.mark_done(op) {
            let mut all = reachable(observed);
            all.extend(candidates.into_iter().filter(|c| *c != observed));
            self.events.push_back(ClientEvent::EndpointInfo {
                op,
                peer,
                candidates: all,
                registry: self.registries[reg].addr,
                home,
            });
        }
    }
}

/// The registry's view of a peer as a candidate: none when the peer is attached over TLS (its
/// address is then the name of a TLS connection, not a UDP endpoint; issue 14).
fn reachable(observed: SocketAddr) -> Vec<SocketAddr> {
    if crate::wire::stream::is_connection_address(&observed) {
        Vec::new()
    } else {
        vec![observed]
    }
}
