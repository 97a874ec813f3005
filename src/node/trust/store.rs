//! The per-peer trust states and the rules that move between them (see the module docs of
//! [`crate::node::trust`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::{AllowList, TrustCounters, TrustError, TrustLimits};
use crate::identity::PublicKey;
use crate::mapping::Hostname;
use crate::wire::registry::{Nonce, TrustDecision};

/// Where a peer stands with us.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TrustState {
    /// They asked us to trust them; we have not decided.
    Pending {
        /// Their justification.
        justification: String,
        /// Their request's nonce (base64), to answer it.
        request_nonce: String,
        /// When it arrived (unix ms).
        since_ms: u64,
    },
    /// We asked them; no answer yet.
    Requested {
        /// When we asked (unix ms).
        since_ms: u64,
    },
    /// Mutual trust.
    Trusted {
        /// Since when (unix ms).
        since_ms: u64,
    },
    /// Refused (by us or by them).
    Rejected {
        /// Whether we refused them (`true`) or they refused us.
        by_us: bool,
        /// When (unix ms).
        since_ms: u64,
    },
}

/// One peer's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerTrust {
    /// The peer's identity.
    pub key: PublicKey,
    /// Its hostname as last known (from the registry), for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<Hostname>,
    /// Where it stands.
    #[serde(flatten)]
    pub state: TrustState,
}

/// What the daemon must do after a trust change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustEffect {
    /// Send a signed trust request to the peer (through the registries, or directly).
    SendRequest {
        /// The peer.
        to: PublicKey,
        /// Our justification.
        justification: String,
    },
    /// Send a signed trust response (approve, reject or revoke) to the peer.
    SendResponse {
        /// The peer.
        to: PublicKey,
        /// The nonce of the request answered (zero for a revocation).
        in_reply_to: Nonce,
        /// The decision.
        decision: TrustDecision,
        /// Why.
        reason: String,
    },
    /// The peer is trusted now: add it to the data plane (`add_peer`).
    Trusted(PublicKey),
    /// Trust is gone: remove the peer from the data plane (`remove_peer`), tearing the tunnel down.
    Untrusted(PublicKey),
    /// A request waits for the user's decision (`pilotctl approve` / `reject`).
    AwaitingApproval {
        /// Who asks.
        from: PublicKey,
        /// Its hostname, if the registry knows one.
        hostname: Option<Hostname>,
        /// Its justification.
        justification: String,
    },
    /// The peer refused our request.
    RejectedBy(PublicKey),
}

/// The trust store: per-peer state, the allow-list, and the file they are kept in.
#[derive(Debug)]
pub struct TrustStore {
    pub(super) me: PublicKey,
    pub(super) path: Option<PathBuf>,
    pub(super) peers: BTreeMap<PublicKey, PeerTrust>,
    pub(super) watermarks: BTreeMap<PublicKey, u64>,
    pub(super) allow: AllowList,
    pub(super) limits: TrustLimits,
    pub(super) counters: TrustCounters,
    /// Changed since the last snapshot for the file ([`TrustStore::take_save`]).
    pub(super) dirty: bool,
}

fn b64(n: &Nonce) -> String {
    base64::engine::general_purpose::STANDARD.encode(n)
}

fn unb64(s: &str) -> Nonce {
    let mut n = [0u8; 16];
    if let Ok(v) = base64::engine::general_purpose::STANDARD.decode(s) {
        if v.len() == 16 {
            n.copy_from_slice(&v);
        }
    }
    n
}

impl TrustStore {
    /// A store that is not persisted (tests, tools).
    pub fn in_memory(me: PublicKey) -> Self {
        TrustStore {
            me,
            path: None,
            peers: BTreeMap::new(),
            watermarks: BTreeMap::new(),
            allow: AllowList::default(),
            limits: TrustLimits::default(),
            counters: TrustCounters::default(),
            dirty: false,
        }
    }

    /// An in-memory store that already trusts `peer` (our request at `unix_ms`, its approval
    /// right after): the starting point of tests that need a trusted peer.
    #[cfg(test)]
    pub(crate) fn trusting(me: PublicKey, peer: PublicKey, unix_ms: u64) -> Self {
        let mut s = Self::in_memory(me);
        s.request(peer, None, "", unix_ms).unwrap();
        s.on_response(
            peer,
            crate::wire::registry::TrustDecision::Approve,
            unix_ms + 1,
            unix_ms,
        )
        .unwrap();
        s
    }

    /// Replaces the allow-list (from config).
    pub fn set_allow_list(&mut self, allow: AllowList) {
        self.allow = allow;
    }

    /// Replaces the limits (from config).
    pub fn set_limits(&mut self, limits: TrustLimits) {
        self.limits = limits;
    }

    /// The limits in force.
    pub fn limits(&self) -> &TrustLimits {
        &self.limits
    }

    /// What the store dropped and evicted.
    pub fn counters(&self) -> &TrustCounters {
        &self.counters
    }

    /// Whether something changed that is not yet in a snapshot for the file (never for an
    /// in-memory store).
    pub fn is_dirty(&self) -> bool {
        self.dirty && self.path.is_some()
    }

    /// How many requests wait for a decision.
    pub fn pending_count(&self) -> usize {
        self.peers
            .values()
            .filter(|p| matches!(p.state, TrustState::Pending { .. }))
            .count()
    }

    /// How many per-peer watermarks are kept.
    pub fn watermark_count(&self) -> usize {
        self.watermarks.len()
    }

    /// Whether `key` is mutually trusted: the one question the data plane asks.
    pub fn is_trusted(&self, key: &PublicKey) -> bool {
        matches!(
            self.peers.get(key).map(|p| &p.state),
            Some(TrustState::Trusted { .. })
        )
    }

    /// The record of `key`, if any.
    pub fn get(&self, key: &PublicKey) -> Option<&PeerTrust> {
        self.peers.get(key)
    }

    /// Every record, ordered by key.
    pub fn peers(&self) -> impl Iterator<Item = &PeerTrust> {
        self.peers.values()
    }

    /// Keys of trusted peers (to add to the data plane at start).
    pub fn trusted(&self) -> impl Iterator<Item = &PublicKey> {
        self.peers
            .values()
            .filter(|p| matches!(p.state, TrustState::Trusted { .. }))
            .map(|p| &p.key)
    }

    /// We ask `to` for trust. If it already asked us, trust is complete at once.
    pub fn request(
        &mut self,
        to: PublicKey,
        hostname: Option<Hostname>,
        justification: &str,
        now_ms: u64,
    ) -> Result<Vec<TrustEffect>, TrustError> {
        if to == self.me {
            return Err(TrustError::SelfTrust);
        }
        if justification.len() > crate::wire::registry::MAX_JUSTIFICATION {
            return Err(TrustError::JustificationTooLong(justification.len()));
        }
        let hostname = hostname.or_else(|| self.peers.get(&to).and_then(|p| p.hostname.clone()));
        let effects = match self.peers.get(&to).map(|p| &p.state) {
            Some(TrustState::Trusted { .. }) => return Ok(Vec::new()),
            Some(TrustState::Pending { request_nonce, .. }) => {
                let in_reply_to = unb64(request_nonce);
                self.set(to, hostname, TrustState::Trusted { since_ms: now_ms });
                vec![
                    TrustEffect::SendResponse {
                        to,
                        in_reply_to,
                        decision: TrustDecision::Approve,
                        reason: String::new(),
                    },
                    TrustEffect::Trusted(to),
                ]
            }
            _ => {
                self.set(to, hostname, TrustState::Requested { since_ms: now_ms });
                vec![TrustEffect::SendRequest {
                    to,
                    justification: justification.to_string(),
                }]
            }
        };
        self.dirty = true;
        Ok(effects)
    }

    /// A verified trust request from `from` arrived (sent at `sent_ms`, their clock).
    pub fn on_request(
        &mut self,
        from: PublicKey,
        hostname: Option<Hostname>,
        justification: &str,
        request_nonce: Nonce,
        sent_ms: u64,
        now_ms: u64,
    ) -> Result<Vec<TrustEffect>, TrustError> {
        if from == self.me || self.in_reject_cooldown(&from, now_ms) {
            return Ok(Vec::new());
        }
        if !self.advance_watermark(from, sent_ms) {
            return Ok(Vec::new());
        }
        let hostname = hostname.or_else(|| self.peers.get(&from).and_then(|p| p.hostname.clone()));
        let approve = TrustEffect::SendResponse {
            to: from,
            in_reply_to: request_nonce,
            decision: TrustDecision::Approve,
            reason: String::new(),
        };
        let effects = match self.peers.get(&from).map(|p| &p.state) {
            // They may have lost their state: confirm again.
            Some(TrustState::Trusted { .. }) => vec![approve],
            Some(TrustState::Requested { .. }) => {
                self.set(from, hostname, TrustState::Trusted { since_ms: now_ms });
                vec![approve, TrustEffect::Trusted(from)]
            }
            _ if self.allow.allows(&from, hostname.as_ref()) => {
                self.set(from, hostname, TrustState::Trusted { since_ms: now_ms });
                vec![approve, TrustEffect::Trusted(from)]
            }
            _ => {
                self.make_room_for_pending(&from);
                self.set(
                    from,
                    hostname.clone(),
                    TrustState::Pending {
                        justification: justification.to_string(),
                        request_nonce: b64(&request_nonce),
                        since_ms: now_ms,
                    },
                );
                vec![TrustEffect::AwaitingApproval {
                    from,
                    hostname,
                    justification: justification.to_string(),
                }]
            }
        };
        self.dirty = true;
        Ok(effects)
    }

    /// A verified trust response (or revocation) from `from` arrived (sent at `sent_ms`).
    pub fn on_response(
        &mut self,
        from: PublicKey,
        decision: TrustDecision,
        sent_ms: u64,
        now_ms: u64,
    ) -> Result<Vec<TrustEffect>, TrustError> {
        // A response from a key we keep no record of changes nothing: it leaves no watermark
        // behind either (strangers could grow the map).
        if from == self.me || !self.peers.contains_key(&from) {
            return Ok(Vec::new());
        }
        if !self.advance_watermark(from, sent_ms) {
            return Ok(Vec::new());
        }
        let state = self.peers.get(&from).map(|p| p.state.clone());
        let hostname = self.peers.get(&from).and_then(|p| p.hostname.clone());
        let effects = match (decision, state) {
            (TrustDecision::Approve, Some(TrustState::Requested { .. })) => {
                self.set(from, hostname, TrustState::Trusted { since_ms: now_ms });
                vec![TrustEffect::Trusted(from)]
            }
            (TrustDecision::Reject, Some(TrustState::Requested { .. })) => {
                self.set(
                    from,
                    hostname,
                    TrustState::Rejected {
                        by_us: false,
                        since_ms: now_ms,
                    },
                );
                vec![TrustEffect::RejectedBy(from)]
            }
            (TrustDecision::Revoke, Some(TrustState::Trusted { .. })) => {
                self.peers.remove(&from);
                vec![TrustEffect::Untrusted(from)]
            }
            (TrustDecision::Revoke, Some(_)) => {
                self.peers.remove(&from);
                Vec::new()
            }
            // Unsolicited approvals and rejections change nothing.
            _ => Vec::new(),
        };
        self.dirty = true;
        Ok(effects)
    }

    /// The user approves `key`'s pending request: trust is mutual now.
    pub fn approve(
        &mut self,
        key: &PublicKey,
        now_ms: u64,
    ) -> Result<Vec<TrustEffect>, TrustError> {
        let Some(TrustState::Pending { request_nonce, .. }) = self.peers.get(key).map(|p| &p.state)
        else {
            return Err(TrustError::NoPendingRequest(*key));
        };
        let in_reply_to = unb64(request_nonce);
        let hostname = self.peers.get(key).and_then(|p| p.hostname.clone());
        self.set(*key, hostname, TrustState::Trusted { since_ms: now_ms });
        self.dirty = true;
        Ok(vec![
            TrustEffect::SendResponse {
                to: *key,
                in_reply_to,
                decision: TrustDecision::Approve,
                reason: String::new(),
            },
            TrustEffect::Trusted(*key),
        ])
    }

    /// The user rejects `key`'s pending request.
    pub fn reject(
        &mut self,
        key: &PublicKey,
        reason: &str,
        now_ms: u64,
    ) -> Result<Vec<TrustEffect>, TrustError> {
        let Some(TrustState::Pending { request_nonce, .. }) = self.peers.get(key).map(|p| &p.state)
        else {
            return Err(TrustError::NoPendingRequest(*key));
        };
        let in_reply_to = unb64(request_nonce);
        let hostname = self.peers.get(key).and_then(|p| p.hostname.clone());
        self.set(
            *key,
            hostname,
            TrustState::Rejected {
                by_us: true,
                since_ms: now_ms,
            },
        );
        self.dirty = true;
        Ok(vec![TrustEffect::SendResponse {
            to: *key,
            in_reply_to,
            decision: TrustDecision::Reject,
            reason: reason.to_string(),
        }])
    }

    /// We withdraw trust from `key` (or a request, or a pending entry): the entry is removed and
    /// the peer is told. Returns [`TrustEffect::Untrusted`] if a tunnel must come down.
    pub fn untrust(&mut self, key: &PublicKey) -> Result<Vec<TrustEffect>, TrustError> {
        let Some(old) = self.peers.remove(key) else {
            return Err(TrustError::NotFound(*key));
        };
        self.dirty = true;
        let mut effects = vec![TrustEffect::SendResponse {
            to: *key,
            in_reply_to: [0; 16],
            decision: TrustDecision::Revoke,
            reason: String::new(),
        }];
        if matches!(old.state, TrustState::Trusted { .. }) {
            effects.push(TrustEffect::Untrusted(*key));
        }
        Ok(effects)
    }

    fn set(&mut self, key: PublicKey, hostname: Option<Hostname>, state: TrustState) {
        self.dirty = true;
        self.peers.insert(
            key,
            PeerTrust {
                key,
                hostname,
                state,
            },
        );
    }

    /// Records `sent_ms` as the newest message from `key`; false if it is not newer. Keeps at
    /// most `max_pending` watermarks beyond one per record (the oldest go first).
    fn advance_watermark(&mut self, key: PublicKey, sent_ms: u64) -> bool {
        let w = self.watermarks.entry(key).or_insert(0);
        if sent_ms <= *w {
            return false;
        }
        *w = sent_ms;
        self.dirty = true;
        while self.watermarks.len() > self.peers.len() + self.limits.max_pending {
            let oldest = self
                .watermarks
                .iter()
                .filter(|(k, _)| **k != key && !self.peers.contains_key(*k))
                .min_by_key(|(_, ts)| **ts)
                .map(|(k, _)| *k);
            let Some(k) = oldest else { break };
            self.watermarks.remove(&k);
            self.counters.watermarks_evicted += 1;
        }
        true
    }

    /// Whether `from` is a key we rejected less than the cooldown ago (counted when it is).
    fn in_reject_cooldown(&mut self, from: &PublicKey, now_ms: u64) -> bool {
        let Some(TrustState::Rejected {
            by_us: true,
            since_ms,
        }) = self.peers.get(from).map(|p| &p.state)
        else {
            return false;
        };
        let cooling = now_ms < since_ms.saturating_add(self.limits.reject_cooldown_ms);
        if cooling {
            self.counters.rejected_cooldown += 1;
        }
        cooling
    }

    /// Before `from` is recorded as pending: evicts the oldest pending requests (never
    /// `from`'s own) until there is room for one more.
    fn make_room_for_pending(&mut self, from: &PublicKey) {
        let max = self.limits.max_pending.max(1);
        let mut pending: Vec<(u64, PublicKey)> = self
            .peers
            .values()
            .filter(|p| p.key != *from)
            .filter_map(|p| match p.state {
                TrustState::Pending { since_ms, .. } => Some((since_ms, p.key)),
                _ => None,
            })
            .collect();
        if pending.len() < max {
            return;
        }
        pending.sort_unstable();
        let excess = pending.len() + 1 - max;
        for (_, k) in pending.into_iter().take(excess) {
            self.peers.remove(&k);
            self.watermarks.remove(&k);
            self.counters.pending_evicted += 1;
            self.dirty = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::trust::test_util::{key, NOW};

    #[test]
    fn their_request_and_our_approval_make_mutual_trust() {
        let mut s = TrustStore::in_memory(key(1));
        let fx = s
            .on_request(key(2), None, "please", [5; 16], NOW, NOW)
            .unwrap();
        assert!(matches!(fx[..], [TrustEffect::AwaitingApproval { .. }]));
        assert!(!s.is_trusted(&key(2)));
        let fx = s.approve(&key(2), NOW).unwrap();
        assert_eq!(
            fx,
            vec![
                TrustEffect::SendResponse {
                    to: key(2),
                    in_reply_to: [5; 16],
                    decision: TrustDecision::Approve,
                    reason: String::new()
                },
                TrustEffect::Trusted(key(2))
            ]
        );
        assert!(s.is_trusted(&key(2)));
    }

    #[test]
    fn our_request_and_their_approval_make_mutual_trust() {
        let mut s = TrustStore::in_memory(key(1));
        let fx = s.request(key(2), None, "hi", NOW).unwrap();
        assert!(matches!(fx[..], [TrustEffect::SendRequest { .. }]));
        let fx = s
            .on_response(key(2), TrustDecision::Approve, NOW + 1, NOW)
            .unwrap();
        assert_eq!(fx, vec![TrustEffect::Trusted(key(2))]);
        assert!(s.is_trusted(&key(2)));
    }

    #[test]
    fn a_request_towards_a_peer_that_already_asked_us_completes_trust_at_once() {
        let mut s = TrustStore::in_memory(key(1));
        s.on_request(key(2), None, "", [7; 16], NOW, NOW).unwrap();
        let fx = s.request(key(2), None, "", NOW).unwrap();
        assert!(fx.contains(&TrustEffect::Trusted(key(2))));
        assert!(s.is_trusted(&key(2)));
    }

    #[test]
    fn mutual_requests_complete_trust_at_once_on_both_sides() {
        let mut a = TrustStore::in_memory(key(1));
        let mut b = TrustStore::in_memory(key(2));
        a.request(key(2), None, "", NOW).unwrap();
        b.request(key(1), None, "", NOW).unwrap();
        // Each one's request reaches the other, who had asked too.
        let fx = a.on_request(key(2), None, "", [1; 16], NOW, NOW).unwrap();
        assert!(fx.contains(&TrustEffect::Trusted(key(2))));
        let fx = b.on_request(key(1), None, "", [2; 16], NOW, NOW).unwrap();
        assert!(fx.contains(&TrustEffect::Trusted(key(1))));
        assert!(a.is_trusted(&key(2)) && b.is_trusted(&key(1)));
    }

    #[test]
    fn untrust_by_either_side_removes_trust() {
        let mut s = TrustStore::in_memory(key(1));
        s.request(key(2), None, "", NOW).unwrap();
        s.on_response(key(2), TrustDecision::Approve, NOW + 1, NOW)
            .unwrap();
        s.request(key(3), None, "", NOW).unwrap();
        s.on_response(key(3), TrustDecision::Approve, NOW + 1, NOW)
            .unwrap();
        // We untrust 2: revocation sent, tunnel down.
        let fx = s.untrust(&key(2)).unwrap();
        assert!(matches!(
            fx[0],
            TrustEffect::SendResponse {
                decision: TrustDecision::Revoke,
                ..
            }
        ));
        assert_eq!(fx[1], TrustEffect::Untrusted(key(2)));
        assert!(!s.is_trusted(&key(2)));
        assert!(matches!(s.untrust(&key(2)), Err(TrustError::NotFound(_))));
        // 3 revokes us.
        let fx = s
            .on_response(key(3), TrustDecision::Revoke, NOW + 2, NOW)
            .unwrap();
        assert_eq!(fx, vec![TrustEffect::Untrusted(key(3))]);
        assert!(!s.is_trusted(&key(3)));
    }

    #[test]
    fn a_replayed_old_revocation_changes_nothing() {
        let mut s = TrustStore::in_memory(key(1));
        s.request(key(2), None, "", NOW).unwrap();
        s.on_response(key(2), TrustDecision::Approve, NOW + 10, NOW)
            .unwrap();
        let fx = s
            .on_response(key(2), TrustDecision::Revoke, NOW + 5, NOW)
            .unwrap();
        assert!(fx.is_empty());
        assert!(s.is_trusted(&key(2)));
    }

    #[test]
    fn unsolicited_approval_creates_no_trust() {
        let mut s = TrustStore::in_memory(key(1));
        let fx = s
            .on_response(key(2), TrustDecision::Approve, NOW, NOW)
            .unwrap();
        assert!(fx.is_empty());
        assert!(!s.is_trusted(&key(2)));
    }

    #[test]
    fn rejection_is_recorded_both_ways() {
        let mut s = TrustStore::in_memory(key(1));
        s.on_request(key(2), None, "", [1; 16], NOW, NOW).unwrap();
        let fx = s.reject(&key(2), "no", NOW).unwrap();
        assert!(matches!(
            fx[0],
            TrustEffect::SendResponse {
                decision: TrustDecision::Reject,
                ..
            }
        ));
        assert!(matches!(
            s.approve(&key(2), NOW),
            Err(TrustError::NoPendingRequest(_))
        ));
        s.request(key(3), None, "", NOW).unwrap();
        let fx = s
            .on_response(key(3), TrustDecision::Reject, NOW + 1, NOW)
            .unwrap();
        assert_eq!(fx, vec![TrustEffect::RejectedBy(key(3))]);
        assert!(!s.is_trusted(&key(3)));
    }

    #[test]
    fn allow_list_auto_approves_by_key_or_hostname() {
        let mut s = TrustStore::in_memory(key(1));
        let mut allow = AllowList::default();
        allow.keys.insert(key(2));
        allow
            .hostnames
            .insert(Hostname::new("orchestrator").unwrap());
        s.set_allow_list(allow);
        let fx = s.on_request(key(2), None, "", [1; 16], NOW, NOW).unwrap();
        assert!(fx.contains(&TrustEffect::Trusted(key(2))));
        let fx = s
            .on_request(
                key(3),
                Some(Hostname::new("orchestrator").unwrap()),
                "",
                [2; 16],
                NOW,
                NOW,
            )
            .unwrap();
        assert!(fx.contains(&TrustEffect::Trusted(key(3))));
        let fx = s.on_request(key(4), None, "", [3; 16], NOW, NOW).unwrap();
        assert!(matches!(fx[..], [TrustEffect::AwaitingApproval { .. }]));
        assert!(s.is_trusted(&key(2)) && s.is_trusted(&key(3)) && !s.is_trusted(&key(4)));
    }

    fn limited(max_pending: usize) -> TrustStore {
        let mut s = TrustStore::in_memory(key(1));
        s.set_limits(TrustLimits {
            max_pending,
            ..TrustLimits::default()
        });
        s
    }

    #[test]
    fn pending_requests_are_capped_and_the_oldest_is_evicted() {
        let mut s = limited(3);
        for n in 10..20u8 {
            let t = NOW + u64::from(n);
            s.on_request(key(n), None, "", [n; 16], t, t).unwrap();
        }
        assert_eq!(s.pending_count(), 3);
        assert_eq!(s.counters().pending_evicted, 7);
        // The newest three are kept.
        for n in 17..20u8 {
            assert!(s.get(&key(n)).is_some());
        }
        assert!(s.get(&key(10)).is_none());
        // A stranger already pending asking again evicts nobody.
        s.on_request(key(19), None, "again", [1; 16], NOW + 50, NOW + 50)
            .unwrap();
        assert_eq!(s.counters().pending_evicted, 7);
        // Trusted peers are never evicted.
        let mut s = limited(1);
        s.request(key(2), None, "", NOW).unwrap();
        s.on_response(key(2), TrustDecision::Approve, NOW + 1, NOW)
            .unwrap();
        for n in 10..20u8 {
            s.on_request(key(n), None, "", [n; 16], NOW + 1, NOW + 1)
                .unwrap();
        }
        assert!(s.is_trusted(&key(2)));
        assert_eq!(s.pending_count(), 1);
        assert!(s.watermark_count() <= 1 + 1 + 1, "{}", s.watermark_count());
    }

    #[test]
    fn strangers_cannot_grow_the_watermarks() {
        let mut s = limited(4);
        for n in 10..200u8 {
            // Unsolicited answers from strangers leave nothing behind.
            s.on_response(key(n), TrustDecision::Approve, NOW, NOW)
                .unwrap();
            // A request then its own revocation leaves no record, and a bounded watermark.
            s.on_request(key(n), None, "", [n; 16], NOW, NOW).unwrap();
            s.on_response(key(n), TrustDecision::Revoke, NOW + 1, NOW)
                .unwrap();
        }
        assert_eq!(s.peers().count(), 0);
        assert!(s.watermark_count() <= 4, "{}", s.watermark_count());
        assert!(s.counters().watermarks_evicted > 0);
    }

    #[test]
    fn a_rejected_key_cannot_ask_again_during_the_cooldown() {
        let mut s = TrustStore::in_memory(key(1));
        let cooldown = s.limits().reject_cooldown_ms;
        s.on_request(key(2), None, "", [1; 16], NOW, NOW).unwrap();
        s.reject(&key(2), "no", NOW).unwrap();
        // At once, and until the cooldown ends: dropped, counted, still rejected.
        for t in [NOW + 1, NOW + cooldown - 1] {
            let fx = s.on_request(key(2), None, "", [2; 16], t, t).unwrap();
            assert!(fx.is_empty());
        }
        assert_eq!(s.counters().rejected_cooldown, 2);
        assert!(matches!(
            s.get(&key(2)).unwrap().state,
            TrustState::Rejected { by_us: true, .. }
        ));
        // After it, the request waits for a decision again.
        let t = NOW + cooldown;
        let fx = s.on_request(key(2), None, "", [3; 16], t, t).unwrap();
        assert!(matches!(fx[..], [TrustEffect::AwaitingApproval { .. }]));
        // The cooldown does not overflow at the end of time.
        let mut s = TrustStore::in_memory(key(1));
        s.on_request(key(2), None, "", [1; 16], NOW, NOW).unwrap();
        s.reject(&key(2), "no", u64::MAX - 2).unwrap();
        assert!(s
            .on_request(key(2), None, "", [2; 16], u64::MAX - 1, u64::MAX - 1)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn untrust_takes_effect_in_memory_and_marks_the_file_for_writing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("trust.json");
        let mut s = TrustStore::open(key(1), &path).unwrap();
        s.request(key(2), None, "", NOW).unwrap();
        s.on_response(key(2), TrustDecision::Approve, NOW + 1, NOW)
            .unwrap();
        assert!(s.take_save().unwrap().write().is_err());
        // The file cannot be written, yet untrust returns the tunnel's removal.
        let fx = s.untrust(&key(2)).unwrap();
        assert!(fx.contains(&TrustEffect::Untrusted(key(2))));
        assert!(!s.is_trusted(&key(2)));
        assert!(s.is_dirty());
    }

    #[test]
    fn self_trust_is_refused() {
        let mut s = TrustStore::in_memory(key(1));
        assert!(matches!(
            s.request(key(1), None, "", NOW),
            Err(TrustError::SelfTrust)
        ));
    }
}
