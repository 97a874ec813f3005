//! The control plane, sans-IO: the registry [`Client`] and the [`TrustStore`] joined, so the
//! daemon only moves datagrams and applies [`ControlEvent::AddPeer`] /
//! [`ControlEvent::RemovePeer`] to the data plane.
//!
//! It turns the client's verified trust messages into trust-store transitions, and the store's
//! effects into signed messages (through the registries), keeps the client's list of trusted
//! peers (who may learn our endpoints) in step with the store, and resolves hostnames before
//! asking a peer for trust.
//!
//! Operation ids: every user action returns an [`OpId`]; exactly one [`ControlEvent::Done`] or
//! [`ControlEvent::Failed`] (or, for lookups, [`ClientEvent::LookupResult`]) follows for it.
//! Messages sent on our own initiative (approvals owed to allow-listed peers, ...) report no
//! outcome; their failures are logged.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::error::PilotError;
use crate::identity::{Identity, PublicKey};
use crate::mapping::Hostname;
use crate::node::registry_client::{Client, ClientConfig, ClientEvent, OpId};
use crate::node::trust::{TrustEffect, TrustError, TrustStore};

/// What the daemon must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlEvent {
    /// The peer is trusted: add it to the data plane (`add_peer`), which may now accept its
    /// handshakes and, with issue 5, punch towards it.
    AddPeer(PublicKey),
    /// Trust is gone: remove the peer from the data plane (`remove_peer`), tearing the tunnel
    /// down.
    RemovePeer(PublicKey),
    /// A trust request waits for the user (`pilotctl approve` / `reject`).
    AwaitingApproval {
        /// Who asks.
        from: PublicKey,
        /// Its hostname at the registry, if any.
        hostname: Option<Hostname>,
        /// Why.
        justification: String,
    },
    /// A peer refused our trust request.
    RejectedBy(PublicKey),
    /// A user operation succeeded.
    Done {
        /// The operation.
        op: OpId,
    },
    /// A user operation failed.
    Failed {
        /// The operation.
        op: OpId,
        /// Why.
        error: PilotError,
    },
    /// Anything else the client reports (registration, reflexive address, lookups, endpoints).
    Client(ClientEvent),
}

/// Who to ask for trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustTarget {
    /// A key: asked at once.
    Key(PublicKey),
    /// A hostname: looked up first, then asked.
    Name(Hostname),
}

/// The joined control plane.
#[derive(Debug)]
pub struct ControlPlane {
    client: Client,
    trust: TrustStore,
    /// Client operation → the user operation it serves.
    alias: HashMap<OpId, OpId>,
    /// Client operations started on our own initiative: outcomes are logged, not reported.
    internal: HashSet<OpId>,
    /// Lookups that precede a trust request: lookup op → (user op, name, justification).
    trust_lookups: HashMap<OpId, (OpId, Hostname, String)>,
    events: VecDeque<ControlEvent>,
}

impl ControlPlane {
    /// Joins a new registry client for `identity` with `trust`. Every peer the store trusts is
    /// reported as [`ControlEvent::AddPeer`] at once, so the data plane starts complete.
    pub fn new(
        identity: Arc<Identity>,
        config: ClientConfig,
        trust: TrustStore,
        now: Instant,
        unix_ms: u64,
    ) -> Self {
        Self::from_parts(Client::new(identity, config, now, unix_ms), trust)
    }

    /// Joins an existing client and store (tests, custom random sources).
    pub fn from_parts(mut client: Client, trust: TrustStore) -> Self {
        let mut events = VecDeque::new();
        for key in trust.trusted() {
            client.set_trusted(*key, true);
            events.push_back(ControlEvent::AddPeer(*key));
        }
        ControlPlane {
            client,
            trust,
            alias: HashMap::new(),
            internal: HashSet::new(),
            trust_lookups: HashMap::new(),
            events,
        }
    }

    /// The registry client (lookups, hostnames, endpoint requests, counters).
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// The trust store (read-only: change it through this type so effects are applied).
    pub fn trust(&self) -> &TrustStore {
        &self.trust
    }

    /// Whether `key` may have a tunnel with us.
    pub fn is_trusted(&self, key: &PublicKey) -> bool {
        self.trust.is_trusted(key)
    }

    /// Next datagram to send (from the shared UDP socket).
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.client.poll_transmit()
    }

    /// When [`ControlPlane::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.client.poll_timeout()
    }

    /// Handles a control datagram (first byte 0x50).
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.client.handle_datagram(now, from, bytes);
        self.pump(now);
    }

    /// Fires timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.client.handle_timeout(now);
        self.pump(now);
    }

    /// Next event for the daemon.
    pub fn poll_event(&mut self) -> Option<ControlEvent> {
        self.events.pop_front()
    }

    /// Asks a peer (by key, or by hostname after a lookup) to trust us.
    pub fn request_trust(
        &mut self,
        now: Instant,
        target: TrustTarget,
        justification: &str,
    ) -> Result<OpId, TrustError> {
        let op = self.client.reserve_op_id();
        match target {
            TrustTarget::Key(key) => {
                let fx =
                    self.trust
                        .request(key, None, justification, self.client.unix_ms_at(now))?;
                self.apply(now, fx, Some(op));
            }
            TrustTarget::Name(name) => {
                if justification.len() > crate::wire::registry::MAX_JUSTIFICATION {
                    return Err(TrustError::JustificationTooLong(justification.len()));
                }
                let lookup = self.client.lookup(now, name.clone());
                self.trust_lookups
                    .insert(lookup, (op, name, justification.to_string()));
            }
        }
        Ok(op)
    }

    /// Approves `key`'s pending request.
    pub fn approve(&mut self, now: Instant, key: &PublicKey) -> Result<OpId, TrustError> {
        let op = self.client.reserve_op_id();
        let fx = self.trust.approve(key, self.client.unix_ms_at(now))?;
        self.apply(now, fx, Some(op));
        Ok(op)
    }

    /// Rejects `key`'s pending request.
    pub fn reject(
        &mut self,
        now: Instant,
        key: &PublicKey,
        reason: &str,
    ) -> Result<OpId, TrustError> {
        let op = self.client.reserve_op_id();
        let fx = self
            .trust
            .reject(key, reason, self.client.unix_ms_at(now))?;
        self.apply(now, fx, Some(op));
        Ok(op)
    }

    /// Withdraws trust from `key` (the peer is told; the tunnel comes down).
    pub fn untrust(&mut self, now: Instant, key: &PublicKey) -> Result<OpId, TrustError> {
        let op = self.client.reserve_op_id();
        let fx = self.trust.untrust(key)?;
        self.apply(now, fx, Some(op));
        Ok(op)
    }

    /// Applies trust effects: sends messages, updates the client's trusted set, reports.
    /// The first message sent reports its outcome as `user_op`; if none is sent, `user_op` is
    /// done at once.
    fn apply(&mut self, now: Instant, effects: Vec<TrustEffect>, mut user_op: Option<OpId>) {
        for fx in effects {
            match fx {
                TrustEffect::SendRequest { to, justification } => {
                    let op = self.client.send_trust_request(now, to, justification);
                    self.track(op, &mut user_op);
                }
                TrustEffect::SendResponse {
                    to,
                    in_reply_to,
                    decision,
                    reason,
                } => {
                    let op = self
                        .client
                        .respond_trust(now, to, in_reply_to, decision, reason);
                    self.track(op, &mut user_op);
                }
                TrustEffect::Trusted(k) => {
                    self.client.set_trusted(k, true);
                    self.events.push_back(ControlEvent::AddPeer(k));
                }
                TrustEffect::Untrusted(k) => {
                    self.client.set_trusted(k, false);
                    self.events.push_back(ControlEvent::RemovePeer(k));
                }
                TrustEffect::AwaitingApproval {
                    from,
                    hostname,
                    justification,
                } => self.events.push_back(ControlEvent::AwaitingApproval {
                    from,
                    hostname,
                    justification,
                }),
                TrustEffect::RejectedBy(k) => self.events.push_back(ControlEvent::RejectedBy(k)),
            }
        }
        if let Some(op) = user_op {
            self.events.push_back(ControlEvent::Done { op });
        }
    }

    fn track(&mut self, client_op: OpId, user_op: &mut Option<OpId>) {
        match user_op.take() {
            Some(u) => {
                self.alias.insert(client_op, u);
            }
            None => {
                self.internal.insert(client_op);
            }
        }
    }

    /// Moves client events into the trust store and out as control events.
    fn pump(&mut self, now: Instant) {
        while let Some(ev) = self.client.poll_event() {
            let now_ms = self.client.unix_ms_at(now);
            match ev {
                ClientEvent::TrustRequestReceived {
                    from,
                    hostname,
                    justification,
                    nonce,
                    sent_ms,
                } => match self.trust.on_request(
                    from,
                    hostname,
                    &justification,
                    nonce,
                    sent_ms,
                    now_ms,
                ) {
                    Ok(fx) => self.apply(now, fx, None),
                    Err(e) => tracing::warn!("cannot record a trust request from {from}: {e}"),
                },
                ClientEvent::TrustResponseReceived {
                    from,
                    decision,
                    sent_ms,
                    ..
                } => match self.trust.on_response(from, decision, sent_ms, now_ms) {
                    Ok(fx) => self.apply(now, fx, None),
                    Err(e) => tracing::warn!("cannot record a trust response from {from}: {e}"),
                },
                ClientEvent::LookupResult {
                    op, hostname, key, ..
                } if self.trust_lookups.contains_key(&op) => {
                    let (user_op, _, justification) =
                        self.trust_lookups.remove(&op).expect("checked");
                    match self
                        .trust
                        .request(key, Some(hostname), &justification, now_ms)
                    {
                        Ok(fx) => self.apply(now, fx, Some(user_op)),
                        Err(e) => self.events.push_back(ControlEvent::Failed {
                            op: user_op,
                            error: e.into(),
                        }),
                    }
                }
                ClientEvent::Failed { op, error } if self.trust_lookups.contains_key(&op) => {
                    let (user_op, _, _) = self.trust_lookups.remove(&op).expect("checked");
                    self.events.push_back(ControlEvent::Failed {
                        op: user_op,
                        error: error.into(),
                    });
                }
                ClientEvent::Done { op } | ClientEvent::Failed { op, .. }
                    if self.internal.contains(&op) =>
                {
                    self.internal.remove(&op);
                    if let ClientEvent::Failed { error, .. } = ev {
                        tracing::warn!("a trust message could not be delivered: {error}");
                    }
                }
                ClientEvent::Done { op } => {
                    let op = self.alias.remove(&op).unwrap_or(op);
                    self.events.push_back(ControlEvent::Done { op });
                }
                ClientEvent::Failed { op, error } => {
                    let op = self.alias.remove(&op).unwrap_or(op);
                    self.events.push_back(ControlEvent::Failed {
                        op,
                        error: error.into(),
                    });
                }
                other => self.events.push_back(ControlEvent::Client(other)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::trust::AllowList;
    use crate::registry::server::{Limits, Registry};
    use std::time::Duration;

    const T0: u64 = 1_750_000_000_000;

    /// A registry core and control planes in memory, with a virtual clock.
    struct Net {
        registry: Registry,
        registry_addr: SocketAddr,
        nodes: Vec<(ControlPlane, SocketAddr)>,
        start: Instant,
        now: Instant,
    }

    impl Net {
        fn new(names: &[&str], allow: &[AllowList]) -> Self {
            let start = Instant::now();
            let registry_addr: SocketAddr = "192.0.2.1:7000".parse().unwrap();
            let nodes = names
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let id = Arc::new(Identity::from_seed([i as u8 + 1; 32]));
                    let mut cfg = ClientConfig::new(vec![registry_addr]);
                    cfg.hostname = Some(Hostname::new(name).unwrap());
                    let mut trust = TrustStore::in_memory(id.public_key());
                    if let Some(a) = allow.get(i) {
                        trust.set_allow_list(a.clone());
                    }
                    let addr = SocketAddr::from(([203, 0, 113, i as u8 + 1], 40000));
                    (ControlPlane::new(id, cfg, trust, start, T0), addr)
                })
                .collect();
            let registry = crate::registry::server::tests::memory_registry(Limits::default(), T0);
            let mut net = Net {
                registry,
                registry_addr,
                nodes,
                start,
                now: start,
            };
            net.run();
            net
        }

        fn key(&self, i: usize) -> PublicKey {
            self.nodes[i].0.client.public_key()
        }

        fn run(&mut self) {
            for _ in 0..100 {
                let mut moved = false;
                let now_ms = T0 + (self.now - self.start).as_millis() as u64;
                let mut out = Vec::new();
                for (c, addr) in &mut self.nodes {
                    while let Some((to, bytes)) = c.poll_transmit() {
                        assert_eq!(to, self.registry_addr);
                        moved = true;
                        out.extend(self.registry.handle(now_ms, *addr, &bytes));
                    }
                }
                for (to, bytes) in out {
                    if let Some((c, _)) = self.nodes.iter_mut().find(|(_, a)| *a == to) {
                        c.handle_datagram(self.now, self.registry_addr, &bytes);
                    }
                }
                if !moved {
                    return;
                }
            }
            panic!("did not settle");
        }

        fn advance(&mut self, d: Duration) {
            self.now += d;
            let now = self.now;
            for (c, _) in &mut self.nodes {
                c.handle_timeout(now);
            }
            self.run();
        }

        /// Events other than passthrough client events.
        fn events(&mut self, i: usize) -> Vec<ControlEvent> {
            std::iter::from_fn(|| self.nodes[i].0.poll_event())
                .filter(|e| !matches!(e, ControlEvent::Client(_)))
                .collect()
        }
    }

    #[test]
    fn trust_by_hostname_then_approval_adds_the_peer_on_both_sides() {
        let mut net = Net::new(&["orchestrator", "worker-node"], &[]);
        let (ka, kb) = (net.key(0), net.key(1));
        let now = net.now;
        let op = net.nodes[0]
            .0
            .request_trust(
                now,
                TrustTarget::Name(Hostname::new("worker-node").unwrap()),
                "jobs",
            )
            .unwrap();
        net.run();
        assert_eq!(net.events(0), vec![ControlEvent::Done { op }]);
        assert_eq!(
            net.events(1),
            vec![ControlEvent::AwaitingApproval {
                from: ka,
                hostname: Some(Hostname::new("orchestrator").unwrap()),
                justification: "jobs".into()
            }]
        );
        net.advance(Duration::from_secs(1));
        let now = net.now;
        let op = net.nodes[1].0.approve(now, &ka).unwrap();
        net.run();
        assert_eq!(
            net.events(1),
            vec![ControlEvent::AddPeer(ka), ControlEvent::Done { op }]
        );
        assert_eq!(net.events(0), vec![ControlEvent::AddPeer(kb)]);

        // Untrust on one side removes the peer on both.
        net.advance(Duration::from_secs(1));
        let now = net.now;
        let op = net.nodes[0].0.untrust(now, &kb).unwrap();
        net.run();
        assert_eq!(
            net.events(0),
            vec![ControlEvent::RemovePeer(kb), ControlEvent::Done { op }]
        );
        assert_eq!(net.events(1), vec![ControlEvent::RemovePeer(ka)]);
        assert!(!net.nodes[0].0.is_trusted(&kb) && !net.nodes[1].0.is_trusted(&ka));
    }

    #[test]
    fn allow_listed_requester_is_trusted_without_asking() {
        let mut allow = AllowList::default();
        allow
            .hostnames
            .insert(Hostname::new("orchestrator").unwrap());
        let mut net = Net::new(
            &["orchestrator", "worker-node"],
            &[AllowList::default(), allow],
        );
        let (ka, kb) = (net.key(0), net.key(1));
        let now = net.now;
        net.nodes[0]
            .0
            .request_trust(now, TrustTarget::Key(kb), "")
            .unwrap();
        net.run();
        assert_eq!(net.events(1), vec![ControlEvent::AddPeer(ka)]);
        assert!(net.events(0).contains(&ControlEvent::AddPeer(kb)));
    }

    #[test]
    fn trust_by_unknown_hostname_fails_with_not_found() {
        let mut net = Net::new(&["orchestrator"], &[]);
        let now = net.now;
        let op = net.nodes[0]
            .0
            .request_trust(now, TrustTarget::Name(Hostname::new("nobody").unwrap()), "")
            .unwrap();
        net.run();
        let ev = net.events(0);
        assert!(
            matches!(&ev[..], [ControlEvent::Failed { op: o, error }]
            if *o == op && error.code == crate::error::ErrorCode::NotFound),
            "{ev:?}"
        );
    }

    #[test]
    fn trusted_peers_from_the_store_are_added_at_start() {
        let me = Arc::new(Identity::from_seed([1; 32]));
        let peer = Identity::from_seed([2; 32]).public_key();
        let trust = TrustStore::trusting(me.public_key(), peer, T0);
        let mut cp = ControlPlane::new(me, ClientConfig::new(vec![]), trust, Instant::now(), T0);
        assert_eq!(cp.poll_event(), Some(ControlEvent::AddPeer(peer)));
    }
}
