//! Which registry datagrams are believed, and how a registry's key becomes known.
//!
//! Cheap checks come first: an answer (anything a registry does not push on its own) must
//! match a request in flight to that registry by its 16-byte nonce, which an off-path spoofer
//! cannot guess, before any signature is checked or any key learned. Then the signature: with
//! the registry's known key, or, while no key is known, a `Registered` answer to one of our
//! registrations signed by the key it carries (trust on first use). A learned key is
//! remembered ([`super::LearnedKeys`]) and never replaced by what the network says.

use std::net::SocketAddr;

use super::{Client, ClientConfig, KeySource, Purpose};
use crate::identity::PublicKey;
use crate::wire::registry::{Nonce, Response, ResponseBody, Status};

/// The key a registry starts with: pinned in the config, else remembered from an earlier run.
pub(super) fn initial_key(
    config: &ClientConfig,
    addr: SocketAddr,
) -> (Option<PublicKey>, KeySource) {
    if let Some(k) = config.pinned_keys.get(&addr) {
        return (Some(*k), KeySource::Pinned);
    }
    match config.learned_keys.get(&addr) {
        Some(k) => {
            tracing::warn!(
                registry = %addr,
                key = %k,
                "registry key not pinned; using the key learned on first use earlier. Pin it: registries = [\"{addr}#{k}\"]"
            );
            (Some(k), KeySource::Persisted)
        }
        None => {
            tracing::warn!(
                registry = %addr,
                "registry key not pinned: it will be learned from the registry's first answer. Pin it with registries = [\"{addr}#KEY\"] (KEY from the registry's log line `registry running ... key=...`)"
            );
            (None, KeySource::Unknown)
        }
    }
}

/// Whether `body` is something a registry sends on its own (not an answer to our request).
fn is_push(body: &ResponseBody) -> bool {
    matches!(
        body,
        ResponseBody::PushTrustRequest { .. }
            | ResponseBody::PushTrustResponse { .. }
            | ResponseBody::PushEndpointRequest { .. }
    )
}

impl Client {
    /// Whether the datagram `bytes` (decoded as `resp`) from registry `reg` is believed;
    /// counts what is not. May learn the registry's key (see the module documentation).
    pub(super) fn authentic(&mut self, reg: usize, resp: &Response, bytes: &[u8]) -> bool {
        if !is_push(&resp.body) && !self.answers_request(reg, &resp.in_reply_to, &resp.body) {
            self.counters.unmatched += 1;
            return false;
        }
        let ok = match (self.registries[reg].key, &resp.body) {
            // A return-routability challenge is unsigned (v1.2, so a registry can afford one
            // per spoofed registration): taken on the echoed nonce alone, matched above. A
            // forged one only makes us echo a wrong cookie and be challenged again.
            (_, ResponseBody::Challenge { .. }) => true,
            (Some(key), body) => {
                let ok = Response::verify(bytes, &key);
                if let ResponseBody::Registered { registry_key, .. } = body {
                    if *registry_key != key {
                        self.note_other_key(reg, *registry_key, bytes);
                    }
                }
                ok
            }
            // Trust on first use: a Registered answer to our registration (nonce matched
            // above), signed by the key it carries.
            (None, ResponseBody::Registered { registry_key, .. }) => {
                let ok = self.answers_registration(reg, &resp.in_reply_to)
                    && Response::verify(bytes, registry_key);
                if ok {
                    self.learn_key(reg, *registry_key);
                }
                ok
            }
            // Before the key is known, a clock correction is taken on the nonce alone (it
            // answers a request we sent, matched above): otherwise a node with a skewed clock
            // could never register to learn the key. The correction is bounded
            // (`max_clock_offset`), and only someone who sees our nonces can send it.
            (
                None,
                ResponseBody::Error {
                    status: Status::StaleTimestamp,
                    ..
                },
            ) => true,
            (None, _) => false,
        };
        if !ok {
            self.counters.bad_signature += 1;
        }
        ok
    }

    /// Whether `nonce` names a request we have in flight to registry `reg` (for an endpoint
    /// answer: an endpoint request that `reg` forwarded).
    fn answers_request(&self, reg: usize, nonce: &Nonce, body: &ResponseBody) -> bool {
        if matches!(body, ResponseBody::EndpointInfo { .. }) {
            return self
                .endpoint_waits
                .get(nonce)
                .is_some_and(|w| w.registry == reg);
        }
        self.by_nonce
            .get(nonce)
            .and_then(|id| self.inflight.get(id))
            .is_some_and(|f| f.registry == reg)
    }

    /// Whether `nonce` names a registration we have in flight to registry `reg`.
    fn answers_registration(&self, reg: usize, nonce: &Nonce) -> bool {
        self.by_nonce
            .get(nonce)
            .and_then(|id| self.inflight.get(id))
            .is_some_and(|f| f.registry == reg && f.purpose == Purpose::Register)
    }

    /// Takes `key` as registry `reg`'s key and remembers it.
    fn learn_key(&mut self, reg: usize, key: PublicKey) {
        let addr = self.registries[reg].addr;
        self.registries[reg].key = Some(key);
        self.registries[reg].source = match self.config.learned_keys.learn(addr, key) {
            Ok(()) => {
                tracing::warn!(
                    registry = %addr,
                    %key,
                    "registry key learned on first use and remembered; pin it: registries = [\"{addr}#{key}\"]"
                );
                KeySource::Persisted
            }
            Err(e) => {
                tracing::warn!(
                    registry = %addr,
                    %key,
                    "registry key learned on first use but not remembered ({e}); until it is pinned, \
                     hostnames from this registry do not count for the trust allow-list"
                );
                KeySource::Unsaved
            }
        };
    }

    /// A `Registered` answer to our registration carries another key than the one we know:
    /// if that key really signed it, the registry's key changed (or someone on the path
    /// answers). Logged once; only the operator can change the key.
    fn note_other_key(&mut self, reg: usize, other: PublicKey, bytes: &[u8]) {
        let r = &self.registries[reg];
        if r.warned_other_key || r.key == Some(other) || !Response::verify(bytes, &other) {
            return;
        }
        tracing::warn!(
            registry = %r.addr,
            known = ?r.key.map(|k| k.to_string()),
            offered = %other,
            "the registry answers with another key than the one pinned or learned; its answers are refused. \
             If its key really changed, pin the new key (registries = [\"HOST:PORT#KEY\"]) or remove the \
             registry from registry_keys.json in the state directory while the daemon is stopped"
        );
        self.registries[reg].warned_other_key = true;
    }

    /// Whether hostnames that registry `reg` vouches for (in trust pushes) may count for the
    /// allow-list: its key is pinned, or was learned and persisted.
    pub(super) fn vouched(&self, reg: usize) -> bool {
        matches!(
            self.registries[reg].source,
            KeySource::Pinned | KeySource::Persisted
        )
    }
}
