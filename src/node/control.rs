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
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::PilotError;
use crate::identity::{Identity, PublicKey};
use crate::mapping::Hostname;
use crate::node::registry_client::{Client, ClientConfig, ClientEvent, OpId};
use crate::node::trust::{
    precheck_trust_message, source_bucket, RateLimiter, TrustCounters, TrustEffect, TrustError,
    TrustSave, TrustStore, DIRECT_PER_SOURCE_PER_SECOND, RATE_LIMITER_KEYS,
};

/// How long changes made by peers' trust messages may wait before the trust file is written:
/// any number of them in that time make one write. A user's decision is written at once.
pub const TRUST_SAVE_DELAY: Duration = Duration::from_millis(500);

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
    /// Verified trust messages per sender key.
    key_limit: RateLimiter<PublicKey>,
    /// Direct (not registry-relayed) control datagrams per source address.
    source_limit: RateLimiter<IpAddr>,
    /// Drops counted here (the store counts its own).
    counters: TrustCounters,
    /// When the trust file must be written next (when the store has changes).
    save_due: Option<Instant>,
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

    /// Joins an existing client and store (tests, custom random sources). The store's limits
    /// (set before) size the per-key rate limit.
    pub fn from_parts(mut client: Client, trust: TrustStore) -> Self {
        let mut events = VecDeque::new();
        for key in trust.trusted() {
            client.set_trusted(*key, true);
            events.push_back(ControlEvent::AddPeer(*key));
        }
        let per_minute = f64::from(trust.limits().messages_per_key_per_minute);
        let per_source = f64::from(DIRECT_PER_SOURCE_PER_SECOND);
        ControlPlane {
            client,
            trust,
            alias: HashMap::new(),
            internal: HashSet::new(),
            trust_lookups: HashMap::new(),
            events,
            key_limit: RateLimiter::new(per_minute / 60.0, per_minute, RATE_LIMITER_KEYS),
            source_limit: RateLimiter::new(per_source, 2.0 * per_source, RATE_LIMITER_KEYS),
            counters: TrustCounters::default(),
            save_due: None,
        }
    }

    /// What the control plane and its trust store dropped, evicted and wrote.
    pub fn counters(&self) -> TrustCounters {
        let s = self.trust.counters();
        TrustCounters {
            pending_evicted: s.pending_evicted,
            watermarks_evicted: s.watermarks_evicted,
            rejected_cooldown: s.rejected_cooldown,
            saves: s.saves,
            ..self.counters.clone()
        }
    }

    /// The trust file's new contents, once they are due (at once after a user's decision,
    /// [`TRUST_SAVE_DELAY`] after the first of peers' changes). The caller writes it off the
    /// async runtime; a failed write changes nothing in memory (the caller reports it).
    pub fn poll_save(&mut self, now: Instant) -> Option<TrustSave> {
        if self.save_due.is_some_and(|due| due <= now) {
            self.save_due = None;
            return self.trust.take_save();
        }
        None
    }

    /// Schedules a write of the trust file if the store changed: at once when `urgent`.
    fn schedule_save(&mut self, now: Instant, urgent: bool) {
        if !self.trust.is_dirty() {
            return;
        }
        let due = if urgent { now } else { now + TRUST_SAVE_DELAY };
        self.save_due = Some(self.save_due.map_or(due, |d| d.min(due)));
    }

    /// Cheap checks on a trust message sent to us directly (not through a registry), before
    /// its signature is verified: a per-source rate limit, then kind, addressee and age, then
    /// the claimed sender must be a peer we trust (the daemon itself sends trust messages
    /// only through registries). False, counted, when it is dropped.
    fn admit_direct(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> bool {
        if !self.source_limit.allow(now, &source_bucket(from)) {
            self.counters.source_rate_limited += 1;
            return false;
        }
        let me = self.client.public_key();
        let sender = match precheck_trust_message(bytes, &me, self.client.unix_ms_at(now)) {
            Ok(req) => req.header.sender,
            Err(_) => {
                self.counters.direct_invalid += 1;
                return false;
            }
        };
        if !self.trust.is_trusted(&sender) {
            self.counters.direct_untrusted += 1;
            return false;
        }
        true
    }

    /// Whether a verified trust message from `from` is within its key's rate (counted if not).
    fn within_key_rate(&mut self, now: Instant, from: &PublicKey) -> bool {
        let ok = self.key_limit.allow(now, from);
        if !ok {
            self.counters.key_rate_limited += 1;
        }
        ok
    }

    /// The registry client (lookups, hostnames, endpoint requests, counters).
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// The trust store (read-only: change it through this type so effects are applied).
    pub fn trust(&self) -> &TrustStore {
        &self.trust
    }

    /// Replaces the trust store's allow-list (a reload of `[trust] allow`).
    pub fn set_allow_list(&mut self, allow: crate::node::trust::AllowList) {
        self.trust.set_allow_list(allow);
    }

    /// Whether `key` may have a tunnel with us.
    pub fn is_trusted(&self, key: &PublicKey) -> bool {
        self.trust.is_trusted(key)
    }

    /// Next datagram to send (from the shared UDP socket).
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.client.poll_transmit()
    }

    /// When [`ControlPlane::handle_timeout`] (or [`ControlPlane::poll_save`]) must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.client.poll_timeout(), self.save_due]
            .into_iter()
            .flatten()
            .min()
    }

    /// Handles a control datagram (first byte 0x50). A request (a trust message sent to us
    /// directly rather than pushed by a registry) must pass [`ControlPlane::admit_direct`]
    /// first.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        if crate::wire::registry::is_request(bytes) == Some(true)
            && !self.admit_direct(now, from, bytes)
        {
            return;
        }
        self.client.handle_datagram(now, from, bytes);
        self.pump(now);
        self.schedule_save(now, false);
    }

    /// Fires timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.client.handle_timeout(now);
        self.pump(now);
        self.schedule_save(now, false);
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
                self.schedule_save(now, true);
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
        self.schedule_save(now, true);
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
        self.schedule_save(now, true);
        Ok(op)
    }

    /// Withdraws trust from `key` (the peer is told; the tunnel comes down). The tunnel comes
    /// down whatever becomes of writing the trust file.
    pub fn untrust(&mut self, now: Instant, key: &PublicKey) -> Result<OpId, TrustError> {
        let op = self.client.reserve_op_id();
        let fx = self.trust.untrust(key)?;
        self.apply(now, fx, Some(op));
        self.schedule_save(now, true);
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
            self.on_client_event(now, ev);
        }
    }

    /// One client event: into the trust store, or out as a control event.
    fn on_client_event(&mut self, now: Instant, ev: ClientEvent) {
        let now_ms = self.client.unix_ms_at(now);
        match ev {
            ClientEvent::TrustRequestReceived { from, .. }
            | ClientEvent::TrustResponseReceived { from, .. }
                if !self.within_key_rate(now, &from) => {}
            ClientEvent::TrustRequestReceived {
                from,
                hostname,
                justification,
                nonce,
                sent_ms,
            } => match self
                .trust
                .on_request(from, hostname, &justification, nonce, sent_ms, now_ms)
            {
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
                let (user_op, _, justification) = self.trust_lookups.remove(&op).expect("checked");
                match self
                    .trust
                    .request(key, Some(hostname), &justification, now_ms)
                {
                    Ok(fx) => {
                        self.apply(now, fx, Some(user_op));
                        self.schedule_save(now, true);
                    }
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

    /// A control plane for node 1 whose registry (`REG`, key of seed 200) is pinned, over
    /// `trust` with `limits`.
    fn pinned_plane(trust: TrustStore, now: Instant) -> ControlPlane {
        let me = Arc::new(Identity::from_seed([1; 32]));
        let mut cfg = ClientConfig::new(vec![reg()]);
        cfg.pinned_keys
            .insert(reg(), Identity::from_seed([200; 32]).public_key());
        ControlPlane::new(me, cfg, trust, now, T0)
    }

    fn reg() -> SocketAddr {
        "192.0.2.1:7000".parse().unwrap()
    }

    fn me() -> PublicKey {
        Identity::from_seed([1; 32]).public_key()
    }

    /// A trust request from `from` to us, signed at `ts`.
    fn trust_request(from: &Identity, ts: u64, nonce: [u8; 16]) -> Vec<u8> {
        use crate::wire::registry::{Header, Request, RequestBody};
        Request {
            header: Header {
                sender: from.public_key(),
                nonce,
                timestamp_ms: ts,
            },
            body: RequestBody::TrustRequest {
                target: me(),
                justification: String::new(),
            },
        }
        .encode_signed(from)
        .unwrap()
    }

    /// The registry's push of `original`.
    fn pushed(original: Vec<u8>, push_id: [u8; 16]) -> Vec<u8> {
        use crate::wire::registry::{Response, ResponseBody};
        Response {
            in_reply_to: push_id,
            body: ResponseBody::PushTrustRequest {
                hostname: None,
                original,
            },
        }
        .encode_signed(&Identity::from_seed([200; 32]))
        .unwrap()
    }

    fn drain(cp: &mut ControlPlane) -> Vec<ControlEvent> {
        while cp.poll_transmit().is_some() {}
        std::iter::from_fn(|| cp.poll_event())
            .filter(|e| !matches!(e, ControlEvent::Client(_)))
            .collect()
    }

    /// `n` distinct valid public keys, found without the cost of making identities.
    fn stranger_keys(n: usize) -> Vec<PublicKey> {
        (0u64..)
            .filter_map(|i| {
                let mut b = [0x5a; 32];
                b[..8].copy_from_slice(&i.to_le_bytes());
                PublicKey::from_bytes(b).ok()
            })
            .take(n)
            .collect()
    }

    #[test]
    fn ten_thousand_strangers_leave_memory_and_file_writes_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(crate::node::trust::TRUST_FILE);
        let mut trust = TrustStore::open(me(), &path).unwrap();
        trust.set_limits(crate::node::trust::TrustLimits {
            max_pending: 50,
            ..Default::default()
        });
        let t0 = Instant::now();
        let mut cp = pinned_plane(trust, t0);
        let mut writes = 0;
        const N: u64 = 10_000;
        // Verified requests (as the registry client reports them after checking each
        // signature; the signed path is covered by the tests below), one a millisecond, each
        // from a new key, for ten seconds.
        for (i, from) in (0..N).zip(stranger_keys(N as usize)) {
            let now = t0 + Duration::from_millis(i);
            let mut nonce = [0u8; 16];
            nonce[..8].copy_from_slice(&i.to_be_bytes());
            let ev = ClientEvent::TrustRequestReceived {
                from,
                hostname: None,
                justification: "x".repeat(200),
                nonce,
                sent_ms: T0 + i,
            };
            cp.on_client_event(now, ev);
            cp.schedule_save(now, false);
            drain(&mut cp);
            if let Some(save) = cp.poll_save(now) {
                save.write().unwrap();
                writes += 1;
            }
        }
        let end = t0 + Duration::from_millis(N);
        if let Some(save) = cp.poll_save(end + TRUST_SAVE_DELAY) {
            save.write().unwrap();
            writes += 1;
        }
        // Ten seconds at one write per TRUST_SAVE_DELAY at most, plus the last.
        let bound = u128::from(N) / TRUST_SAVE_DELAY.as_millis() + 2;
        assert!(writes as u128 <= bound, "{writes} writes");
        assert!(writes >= 10, "changes are written ({writes})");
        let store = cp.trust();
        assert_eq!(store.pending_count(), 50);
        assert_eq!(store.peers().count(), 50);
        assert!(
            store.watermark_count() <= 100,
            "{}",
            store.watermark_count()
        );
        assert_eq!(cp.counters().pending_evicted, N - 50);
        assert!(std::fs::metadata(&path).unwrap().len() < 64 * 1024);
        assert!(cp.key_limit.len() <= RATE_LIMITER_KEYS);
        assert!(cp.events.is_empty());
    }

    #[test]
    fn peers_changes_are_written_together_and_users_decisions_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(crate::node::trust::TRUST_FILE);
        let t0 = Instant::now();
        let mut cp = pinned_plane(TrustStore::open(me(), &path).unwrap(), t0);
        let a = Identity::from_seed([2; 32]);
        let b = Identity::from_seed([3; 32]);
        cp.handle_datagram(t0, reg(), &pushed(trust_request(&a, T0, [2; 16]), [2; 16]));
        cp.handle_datagram(t0, reg(), &pushed(trust_request(&b, T0, [3; 16]), [3; 16]));
        drain(&mut cp);
        assert!(cp.poll_save(t0).is_none(), "not yet");
        assert_eq!(cp.poll_timeout(), Some(t0 + TRUST_SAVE_DELAY));
        assert!(cp.poll_save(t0 + TRUST_SAVE_DELAY).is_some());
        assert!(
            cp.poll_save(t0 + TRUST_SAVE_DELAY * 2).is_none(),
            "one snapshot"
        );
        // The user's decision is due at once.
        cp.approve(t0, &a.public_key()).unwrap();
        assert!(cp.poll_save(t0).is_some());
    }

    #[test]
    fn direct_trust_messages_from_strangers_are_dropped_before_the_signature() {
        let t0 = Instant::now();
        let friend = Identity::from_seed([2; 32]);
        let trust = TrustStore::trusting(me(), friend.public_key(), T0 - 10);
        let mut cp = pinned_plane(trust, t0);
        drain(&mut cp);
        let stranger = Identity::from_seed([3; 32]);
        let src: SocketAddr = "198.51.100.9:4000".parse().unwrap();
        cp.handle_datagram(t0, src, &trust_request(&stranger, T0, [1; 16]));
        assert!(drain(&mut cp).is_empty());
        assert!(cp.trust().get(&stranger.public_key()).is_none());
        assert_eq!(cp.counters().direct_untrusted, 1);
        // Not for us: dropped as invalid before any signature is checked.
        let mut other = trust_request(&friend, T0, [2; 16]);
        let at = 3 + 32 + 16 + 8; // the target, after the header
        other[at] ^= 1;
        cp.handle_datagram(t0, src, &other);
        assert_eq!(cp.counters().direct_invalid, 1);
        // A trusted peer's direct message still reaches the store.
        let src2: SocketAddr = "198.51.100.10:4000".parse().unwrap();
        cp.handle_datagram(t0, src2, &trust_request(&friend, T0, [3; 16]));
        assert_eq!(cp.counters().direct_untrusted, 1);
        assert!(cp.trust().is_trusted(&friend.public_key()));
    }

    #[test]
    fn direct_datagrams_are_rate_limited_per_source() {
        let t0 = Instant::now();
        let mut cp = pinned_plane(TrustStore::in_memory(me()), t0);
        let stranger = Identity::from_seed([3; 32]);
        let src: SocketAddr = "[2001:db8::1]:4000".parse().unwrap();
        let dg = trust_request(&stranger, T0, [1; 16]);
        for _ in 0..100 {
            cp.handle_datagram(t0, src, &dg);
        }
        let burst = 2 * u64::from(DIRECT_PER_SOURCE_PER_SECOND);
        let c = cp.counters();
        assert_eq!(c.direct_untrusted, burst);
        assert_eq!(c.source_rate_limited, 100 - burst);
        // Another address of the same /64 shares the bucket; a second later it has refilled.
        let same64: SocketAddr = "[2001:db8::2]:9".parse().unwrap();
        cp.handle_datagram(t0, same64, &dg);
        assert_eq!(cp.counters().source_rate_limited, 101 - burst);
        cp.handle_datagram(t0 + Duration::from_secs(1), same64, &dg);
        assert_eq!(cp.counters().direct_untrusted, burst + 1);
    }

    #[test]
    fn trust_messages_are_rate_limited_per_key() {
        let t0 = Instant::now();
        let mut cp = pinned_plane(TrustStore::in_memory(me()), t0);
        let per_minute = cp.trust().limits().messages_per_key_per_minute;
        let stranger = Identity::from_seed([3; 32]);
        for i in 0..50u64 {
            let mut id = [9u8; 16];
            id[..8].copy_from_slice(&i.to_be_bytes());
            let dg = pushed(trust_request(&stranger, T0 + i, id), id);
            cp.handle_datagram(t0, reg(), &dg);
        }
        let events = drain(&mut cp);
        assert_eq!(events.len(), per_minute as usize, "{events:?}");
        assert_eq!(cp.counters().key_rate_limited, 50 - u64::from(per_minute));
        // Another key has its own budget.
        let other = Identity::from_seed([4; 32]);
        cp.handle_datagram(
            t0,
            reg(),
            &pushed(trust_request(&other, T0, [1; 16]), [1; 16]),
        );
        assert_eq!(drain(&mut cp).len(), 1);
    }

    #[test]
    fn untrust_tears_the_tunnel_down_even_when_the_file_cannot_be_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone").join(crate::node::trust::TRUST_FILE);
        let t0 = Instant::now();
        let peer = Identity::from_seed([2; 32]).public_key();
        let mut trust = TrustStore::open(me(), &path).unwrap();
        trust.request(peer, None, "", T0).unwrap();
        trust
            .on_response(
                peer,
                crate::wire::registry::TrustDecision::Approve,
                T0 + 1,
                T0,
            )
            .unwrap();
        let mut cp = pinned_plane(trust, t0);
        assert_eq!(drain(&mut cp), vec![ControlEvent::AddPeer(peer)]);
        let op = cp.untrust(t0, &peer).unwrap();
        let events = drain(&mut cp);
        assert!(
            events.contains(&ControlEvent::RemovePeer(peer)),
            "{events:?}"
        );
        assert!(!events
            .iter()
            .any(|e| matches!(e, ControlEvent::Failed { op: o, .. } if *o == op)));
        assert!(!cp.is_trusted(&peer));
        // The write fails and says which file; memory stays as decided.
        let err = cp.poll_save(t0).unwrap().write().unwrap_err();
        assert!(err.to_string().contains("gone"), "{err}");
        assert!(!cp.is_trusted(&peer));
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
