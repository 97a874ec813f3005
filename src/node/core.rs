//! [`Node`]: the sans-IO node core. It joins the control plane (registry client and trust
//! store), one path machine per peer, probes and pings, and answers the local API.
//!
//! Inputs: [`Node::handle_command`], [`Node::handle_datagram`] (already classified by
//! [`crate::wire::classify`]), [`Node::handle_data_plane_event`], [`Node::handle_timeout`] and
//! [`Node::handle_clock_sync`]; every one takes `now`. Outputs, polled by the driver:
//! [`Node::poll_transmit`] (datagrams for the shared socket), [`Node::poll_effect`] (what the
//! data plane must do) and [`Node::poll_event`] (what the API's live stream shows). Randomness
//! comes from the seed given to [`Node::new`]. No sockets, no clock, no threads: tests run two
//! nodes and a registry in memory with a virtual clock.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{ErrorCode, PilotError};
use crate::identity::{Identity, PublicKey};
use crate::mapping::{Hostname, NetworkPrefix, PeerRef};
use crate::node::commands::{Reply, Waiting};
use crate::node::control::{ControlEvent, ControlPlane};
use crate::node::paths::Paths;
use crate::node::pings::Pings;
use crate::node::probes::{self, Incoming, ReplayWindow};
use crate::node::registry_client::{ClientEvent, OpId};
use crate::node::relays::{PeerRelay, Relays};
use crate::node::rng::NodeRng;
use crate::node::traversal::{Action, Path, Timing};
use crate::node::trust::TrustState;
use crate::node::views::{HostnameClaim, Lookup, NodeEvent, PingReport, TrustStanding, TrustView};
use crate::wg::DataPlaneEvent;
use crate::wire::classify::ControlKind;

/// How the node is set up.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The overlay network (to show peers' IPv6 addresses).
    pub network: NetworkPrefix,
    /// Peers pinned in config: trusted without the store, never removed.
    pub static_peers: Vec<PublicKey>,
    /// Whether any registry is configured.
    pub has_registry: bool,
}

/// What the data plane must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Let `key` build a tunnel with us (idempotent).
    AddPeer {
        /// The peer.
        key: PublicKey,
        /// Its hostname, shown in `pilotctl peers`.
        hostname: Option<Hostname>,
    },
    /// Tear down `key`'s tunnel.
    RemovePeer(PublicKey),
    /// Send `key`'s datagrams along `path`.
    SetPath {
        /// The peer.
        key: PublicKey,
        /// How.
        path: Path,
    },
    /// The round-trip time measured on `key`'s path.
    SetRtt {
        /// The peer.
        key: PublicKey,
        /// The time, if measured.
        rtt: Option<Duration>,
    },
    /// Accept relay deliveries from these registries.
    SetRelays(Vec<SocketAddr>),
}

/// Which of our trust records a hostname or address (not a key) may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// Peers we trust, asked ourselves, or pinned in config: what `handshake` and `ping` may
    /// reach. A stranger's pending request (whose hostname and address come from the stranger
    /// and the registry that pushed it) never resolves here, so naming it cannot complete
    /// trust.
    Established,
    /// Any record, but only if exactly one matches: `approve`, `reject` and `untrust` act on
    /// records the user sees listed, and a name that two records share is refused.
    Unique,
}

/// The node core.
pub struct Node {
    pub(super) plane: ControlPlane,
    pub(super) config: NodeConfig,
    pub(super) identity: Arc<Identity>,
    pub(super) rng: NodeRng,
    pub(super) waiting: HashMap<OpId, Waiting>,
    pub(super) paths: Paths,
    /// How to relay to each peer (its home relay, or the introducer).
    relays: Relays,
    pub(super) replay: ReplayWindow,
    pub(super) pings: Pings<Reply<PingReport>>,
    transmits: VecDeque<(SocketAddr, Vec<u8>)>,
    effects: VecDeque<Effect>,
    events: VecDeque<NodeEvent>,
    /// Peers whose session is up (reported `PeerUp`, not yet `PeerDown`).
    up: HashSet<PublicKey>,
    /// True while the peers the trust store held at start are being added: they get no path
    /// machine until there is something to carry (see [`Node::handle_data_plane_event`]).
    loading: bool,
}

impl Node {
    /// A node around `plane`, with randomness from `seed`. Static peers are marked trusted at
    /// the registry client (they may learn our endpoints); peers the store trusts are added
    /// from the plane's first events, handled here at `now`.
    pub fn new(plane: ControlPlane, config: NodeConfig, seed: [u8; 32], now: Instant) -> Self {
        Self::with_timing(plane, config, seed, now, Timing::default())
    }

    /// [`Node::new`] with other path timers (tests shorten them).
    pub fn with_timing(
        mut plane: ControlPlane,
        config: NodeConfig,
        seed: [u8; 32],
        now: Instant,
        timing: Timing,
    ) -> Self {
        for k in &config.static_peers {
            plane.client().set_trusted(*k, true);
        }
        let identity = plane.client().identity();
        let relays = plane.client().registries();
        let mut node = Node {
            plane,
            config,
            identity,
            rng: NodeRng::from_seed(seed),
            waiting: HashMap::new(),
            paths: Paths::new(timing),
            relays: Relays::default(),
            replay: ReplayWindow::default(),
            pings: Pings::default(),
            transmits: VecDeque::new(),
            effects: VecDeque::from([Effect::SetRelays(relays)]),
            events: VecDeque::new(),
            up: HashSet::new(),
            loading: true,
        };
        node.pump(now);
        node.loading = false;
        node
    }

    /// Tells the node the path the data plane already has for `key` (a configured endpoint),
    /// before any event about it; a path machine for `key` adopts it.
    pub fn set_known_path(&mut self, now: Instant, key: PublicKey, path: Path) {
        self.paths.set(key, path);
        self.paths.adopt_data_plane_path(now, &key);
    }

    /// The next datagram to send on the shared socket.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.transmits
            .pop_front()
            .or_else(|| self.plane.poll_transmit())
    }

    /// The next thing the data plane must do.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// The next event for the local API's live stream.
    pub fn poll_event(&mut self) -> Option<NodeEvent> {
        self.events.pop_front()
    }

    /// The trust file's new contents once due; the driver writes them off the async runtime.
    pub fn poll_trust_save(&mut self, now: Instant) -> Option<crate::node::trust::TrustSave> {
        self.plane.poll_save(now)
    }

    /// When [`Node::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.plane.poll_timeout(),
            self.paths.poll_timeout(),
            self.pings.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Timers of the registry client, the path machines and running pings.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.plane.handle_timeout(now);
        for key in self.paths.due(now) {
            if let Some(m) = self.paths.machine(&key) {
                m.handle_timeout(now);
            }
            self.drive(now, key);
        }
        self.run_pings(now);
        self.pump(now);
    }

    /// The wall clock read at `now` (unix ms), to keep timestamps right across suspends.
    pub fn handle_clock_sync(&mut self, now: Instant, unix_ms: u64) {
        self.plane.client().sync_clock(now, unix_ms);
    }

    /// A datagram the data plane classified for us: a registry message or a probe.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        kind: ControlKind,
        bytes: &[u8],
    ) {
        match kind {
            ControlKind::Control => self.plane.handle_datagram(now, from, bytes),
            ControlKind::Probe => self.on_probe(now, from, None, bytes),
            ControlKind::RelayedProbe(a) => self.on_probe(now, from, Some(a), bytes),
        }
        self.pump(now);
    }

    /// Something the data plane noticed.
    pub fn handle_data_plane_event(&mut self, now: Instant, ev: DataPlaneEvent) {
        match ev {
            DataPlaneEvent::NeedsPath(key) => {
                if let Some(m) = self.path_machine(key) {
                    m.on_traffic_without_path(now);
                    self.paths.adopt_data_plane_path(now, &key);
                    self.drive(now, key);
                }
            }
            DataPlaneEvent::Roamed { key, path } => {
                if self.paths.current(&key) != path {
                    tracing::info!(peer = %key, path = path.kind(), addr = ?path.addr(), "peer roamed");
                    self.paths.roamed(now, key, path);
                    self.path_changed(key, path);
                }
            }
            DataPlaneEvent::HandshakeDone(key) => {
                tracing::debug!(peer = %key, "handshake done");
                if self.is_allowed(&key) && self.up.insert(key) {
                    self.emit(NodeEvent::PeerUp { peer: key });
                }
            }
            DataPlaneEvent::TransportChanged { registry } => {
                tracing::info!(%registry, "registry transport changed: registering again");
                self.plane.client().reregister(now, registry);
            }
        }
        self.pump(now);
    }

    /// `key`'s path machine, made on first need for a peer the trust store trusts (when a
    /// registry can introduce us). Peers loaded at start get none until then: 10,000 idle
    /// peers cost no timer, probe or registry request.
    fn path_machine(&mut self, key: PublicKey) -> Option<&mut crate::node::traversal::PeerPath> {
        if self.config.has_registry && !self.paths.has_machine(&key) && self.plane.is_trusted(&key)
        {
            let rng = &mut self.rng;
            self.paths.machine_or_new(key, || rng.next_u64());
        }
        self.paths.machine(&key)
    }

    /// Whether `key` may use a tunnel with us (trusted, or pinned in config).
    pub fn is_allowed(&self, key: &PublicKey) -> bool {
        self.plane.is_trusted(key) || self.config.static_peers.contains(key)
    }

    /// The control plane (trust store and registry client), for reading.
    pub fn plane(&self) -> &ControlPlane {
        &self.plane
    }

    /// The path the node has for `key` (the data plane's as last set or heard).
    pub fn path(&self, key: &PublicKey) -> Path {
        self.paths.current(key)
    }

    /// How the API shows one peer's trust.
    pub fn view(&self, key: &PublicKey) -> TrustView {
        let rec = self.plane.trust().get(key);
        let state = match rec.map(|r| &r.state) {
            Some(TrustState::Pending { .. }) => TrustStanding::Pending,
            Some(TrustState::Requested { .. }) => TrustStanding::Requested,
            Some(TrustState::Trusted { .. }) => TrustStanding::Trusted,
            Some(TrustState::Rejected { .. }) => TrustStanding::Rejected,
            None if self.config.static_peers.contains(key) => TrustStanding::Static,
            None => TrustStanding::None,
        };
        TrustView {
            public_key: *key,
            address: key.addr48(),
            ipv6: self.config.network.ipv6(key.addr48()),
            hostname: rec.and_then(|r| r.hostname.clone()),
            state,
        }
    }

    /// The key `peer` names among our own records (see [`Naming`]); a key names itself.
    /// `Err` when a name or address matches more than one record and `naming` wants one.
    pub fn resolve_known(
        &self,
        peer: &PeerRef,
        naming: Naming,
    ) -> Result<Option<PublicKey>, PilotError> {
        let matches = |k: &PublicKey, hostname: Option<&Hostname>| match peer {
            PeerRef::PublicKey(p) => p == k,
            PeerRef::Addr48(a) => k.addr48() == *a,
            PeerRef::Hostname(h) => hostname == Some(h),
        };
        if let PeerRef::PublicKey(k) = peer {
            return Ok(Some(*k));
        }
        let records = self.plane.trust().peers().filter(|p| match naming {
            Naming::Established => matches!(
                p.state,
                TrustState::Trusted { .. } | TrustState::Requested { .. }
            ),
            Naming::Unique => true,
        });
        let mut found: Vec<PublicKey> = records
            .filter(|p| matches(&p.key, p.hostname.as_ref()))
            .map(|p| p.key)
            .chain(
                self.config
                    .static_peers
                    .iter()
                    .filter(|k| matches(k, None))
                    .copied(),
            )
            .collect();
        found.sort();
        found.dedup();
        match found[..] {
            [] => Ok(None),
            [k] => Ok(Some(k)),
            _ => Err(PilotError::invalid(
                format!("`{peer}` matches {} peers", found.len()),
                "name the peer by its public key (see `pilotctl trust` and `pilotctl pending`)",
            )),
        }
    }

    /// Answers the API call waiting for `op`.
    pub(super) fn reply_op(&mut self, op: OpId, result: Result<(), PilotError>) {
        let Some(w) = self.waiting.remove(&op) else {
            return;
        };
        match w {
            Waiting::Find(reply) => {
                let _ = reply.send(result.map(|_| None));
            }
            Waiting::Hostname(hostname, reply) => {
                let _ = reply.send(result.map(|_| HostnameClaim { hostname }));
            }
            Waiting::Discovery(wait) => self.discovery_done(wait, result),
            Waiting::Op { peer, reply } => {
                let key = match &peer {
                    Ok(k) => Some(*k),
                    // A handshake by name: the record it made (requested or trusted), never a
                    // stranger's pending request that carries the same name.
                    Err(name) => self
                        .resolve_known(&PeerRef::Hostname(name.clone()), Naming::Established)
                        .ok()
                        .flatten(),
                };
                let _ = reply.send(result.map(|_| key.map(|k| self.view(&k))));
            }
        }
    }

    pub(super) fn emit(&mut self, event: NodeEvent) {
        self.events.push_back(event);
    }

    pub(super) fn effect(&mut self, effect: Effect) {
        self.effects.push_back(effect);
    }

    fn path_changed(&mut self, key: PublicKey, path: Path) {
        self.emit(NodeEvent::PathChanged {
            peer: key,
            path: path.kind().to_string(),
            endpoint: path.addr(),
        });
        if path == Path::None {
            self.peer_down(key);
        }
    }

    /// Reports `key` down once, if it was up.
    fn peer_down(&mut self, key: PublicKey) {
        if self.up.remove(&key) {
            self.emit(NodeEvent::PeerDown { peer: key });
        }
    }

    /// Handles what the control plane reported, until it has nothing more.
    pub(super) fn pump(&mut self, now: Instant) {
        while let Some(ev) = self.plane.poll_event() {
            self.on_control_event(now, ev);
        }
    }

    /// Starts traversal towards a trusted peer (when a registry can introduce us).
    pub(super) fn connect(&mut self, now: Instant, key: PublicKey) {
        if !self.config.has_registry {
            return;
        }
        let rng = &mut self.rng;
        self.paths
            .machine_or_new(key, || rng.next_u64())
            .connect(now);
        self.paths.adopt_data_plane_path(now, &key);
        self.drive(now, key);
    }

    /// Carries out what `key`'s path machine asks for.
    fn drive(&mut self, now: Instant, key: PublicKey) {
        loop {
            let Some(m) = self.paths.machine(&key) else {
                return;
            };
            let Some(action) = m.poll_action() else {
                let rtt = m.rtt();
                self.effect(Effect::SetRtt { key, rtt });
                return;
            };
            match action {
                Action::RequestEndpoints => {
                    if self.plane.client().is_registered() {
                        self.plane.client().request_endpoints(now, key);
                    }
                }
                Action::Probe { via, txid } => self.send_probe(now, key, via, txid, false),
                Action::SetPath(path) => {
                    tracing::info!(peer = %key, path = path.kind(), addr = ?path.addr(), "path");
                    self.paths.set(key, path);
                    self.effect(Effect::SetPath { key, path });
                    self.path_changed(key, path);
                }
            }
        }
    }

    /// Queues a signed probe (or reply) to `key` along `via`.
    fn send_probe(&mut self, now: Instant, key: PublicKey, via: Path, txid: u64, reply: bool) {
        let ts = self.plane.client().unix_ms_at(now);
        if let Some(t) = probes::datagram(&self.identity, key, via, txid, reply, ts) {
            self.transmits.push_back(t);
        }
    }

    /// A probe or probe reply (relayed when `relayed` names the sender). Untrusted senders,
    /// wrong targets, stale or replayed probes and bad signatures are dropped without an
    /// answer.
    fn on_probe(
        &mut self,
        now: Instant,
        src: SocketAddr,
        relayed: Option<crate::mapping::Addr48>,
        bytes: &[u8],
    ) {
        let incoming = Incoming {
            bytes,
            src,
            relayed_from: relayed,
        };
        let now_ms = self.plane.client().unix_ms_at(now);
        let registries = self.plane.client().registries();
        let me = self.identity.public_key();
        let checked = probes::check(
            &incoming,
            &me,
            |k| self.is_allowed(k),
            |a| registries.contains(a),
            now_ms,
        );
        let p = match checked {
            Ok(p) => p,
            Err(why) => {
                tracing::trace!(%src, ?why, "probe dropped");
                return;
            }
        };
        if !p.reply {
            if !self.replay.first_sight(p.sender, p.txid, now_ms) {
                tracing::trace!(%src, "replayed probe dropped");
                return;
            }
            self.send_probe(now, p.sender, incoming.came_by(), p.txid, true);
            if relayed.is_none() {
                if let Some(m) = self.path_machine(p.sender) {
                    m.on_probe_from(now, src);
                    self.paths.adopt_data_plane_path(now, &p.sender);
                    self.drive(now, p.sender);
                }
            }
            return;
        }
        if self.pings.on_reply(now, p.sender, p.txid) {
            self.run_pings(now);
            return;
        }
        if let Some(m) = self.paths.machine(&p.sender) {
            m.on_probe_reply(now, src, p.txid);
            self.drive(now, p.sender);
        }
    }

    /// Sends the probes running pings want, and answers the pings that finished.
    pub(super) fn run_pings(&mut self, now: Instant) {
        let paths = &self.paths;
        for reply in self.pings.start_waiting(now, |key| paths.current(key)) {
            let _ = reply.send(Err(PilotError::new(
                ErrorCode::ConnectionFailed,
                "no path to the peer: hole punching and the relay both failed so far",
                "check that the peer is online (pilotctl peers) and retry in a few seconds",
            )));
        }
        let rng = &mut self.rng;
        let (due, done) = self.pings.poll(now, || rng.next_u64());
        for p in due {
            self.send_probe(now, p.key, p.path, p.txid, false);
        }
        for (reply, report) in done {
            let _ = reply.send(Ok(report));
        }
    }

    fn on_control_event(&mut self, now: Instant, ev: ControlEvent) {
        match ev {
            ControlEvent::AddPeer(key) => {
                tracing::info!(peer = %key, "peer trusted: tunnel allowed");
                let hostname = self
                    .plane
                    .trust()
                    .get(&key)
                    .and_then(|r| r.hostname.clone());
                self.paths.added(key);
                self.effect(Effect::AddPeer { key, hostname });
                if !self.loading {
                    self.emit(NodeEvent::PeerTrusted { peer: key });
                    self.connect(now, key);
                }
            }
            ControlEvent::RemovePeer(key) => {
                let pinned = self.config.static_peers.contains(&key);
                self.paths.remove(&key, pinned);
                self.relays.remove(&key);
                if !pinned {
                    tracing::info!(peer = %key, "trust withdrawn: tunnel torn down");
                    self.effect(Effect::RemovePeer(key));
                    self.emit(NodeEvent::PeerUntrusted { peer: key });
                    self.peer_down(key);
                }
            }
            ControlEvent::AwaitingApproval {
                from,
                hostname,
                justification,
            } => {
                tracing::info!(
                    peer = %from,
                    hostname = hostname.as_ref().map(|h| h.as_str()).unwrap_or("-"),
                    justification = %justification.escape_debug(),
                    "trust request waiting for approval (`pilotctl pending`)"
                );
                self.emit(NodeEvent::TrustRequest {
                    from,
                    hostname,
                    justification,
                });
            }
            ControlEvent::RejectedBy(key) => {
                tracing::info!(peer = %key, "our trust request was rejected");
                self.emit(NodeEvent::TrustRejected { peer: key });
            }
            ControlEvent::Done { op } => self.reply_op(op, Ok(())),
            ControlEvent::Failed { op, error } => self.reply_op(op, Err(error)),
            ControlEvent::Client(ev) => self.on_client_event(now, ev),
        }
    }

    fn on_client_event(&mut self, now: Instant, ev: ClientEvent) {
        match ev {
            ClientEvent::Registered { registry } => {
                tracing::info!(%registry, "registered");
                self.on_registered(now);
            }
            ClientEvent::RegistryLost { registry } => {
                tracing::warn!(%registry, "registry lost; registering again")
            }
            ClientEvent::HomeChanged { home, previous } => {
                self.on_home_changed(now, home, previous)
            }
            ClientEvent::RelayUsable { registry, usable } => {
                tracing::debug!(%registry, usable, "registry usable as a relay");
                self.retarget_relays(now, registry);
            }
            ClientEvent::ReflexiveAddress { registry, addr } => {
                tracing::info!(%registry, %addr, "reflexive address");
                // Our NAT mapping changed (or is first known): punch again.
                for key in self.paths.keys() {
                    if let Some(m) = self.paths.machine(&key) {
                        m.on_reflexive_changed(now);
                    }
                    self.drive(now, key);
                }
            }
            ClientEvent::HostnameTaken { registry, hostname } => {
                tracing::warn!(%registry, %hostname, "hostname is held by another key")
            }
            ClientEvent::LookupResult {
                op, hostname, key, ..
            } => {
                if let Some(Waiting::Find(reply)) = self.waiting.remove(&op) {
                    let _ = reply.send(Ok(Some(Lookup {
                        hostname,
                        public_key: key,
                        address: key.addr48(),
                        ipv6: self.config.network.ipv6(key.addr48()),
                    })));
                }
            }
            ClientEvent::EndpointRequested {
                from: peer,
                candidates,
                registry,
                home,
            }
            | ClientEvent::EndpointInfo {
                peer,
                candidates,
                registry,
                home,
                ..
            } => {
                let relay = PeerRelay {
                    home,
                    introducer: registry,
                };
                self.on_candidates(now, peer, &candidates, relay)
            }
            ClientEvent::NodeInfo { op, info } => self.on_node_info(op, info),
            ClientEvent::Done { op } => self.reply_op(op, Ok(())),
            ClientEvent::Failed { op, error } => self.reply_op(op, Err(error.into())),
            ClientEvent::TrustRequestReceived { .. }
            | ClientEvent::TrustResponseReceived { .. } => {}
        }
    }

    /// Registered: connect every peer we are dealing with (it has a path machine) that has
    /// no path yet. Peers loaded at start and idle since wait for traffic (or for the peer to
    /// ask for our endpoints), so a registration costs nothing per idle peer.
    fn on_registered(&mut self, now: Instant) {
        let keys: Vec<PublicKey> = self
            .paths
            .keys()
            .into_iter()
            .filter(|k| self.plane.is_trusted(k))
            .filter(|k| self.paths.machine_path(k).is_none_or(|p| p == Path::None))
            .collect();
        for key in keys {
            // A punch started before we were registered could not ask for candidates.
            if self.paths.machine(&key).is_some_and(|m| m.is_punching()) {
                self.plane.client().request_endpoints(now, key);
            } else {
                self.connect(now, key);
            }
        }
    }

    /// A peer's candidates from an endpoint exchange: punch towards them, relaying through
    /// the peer's home relay when we can (see [`crate::node::relays`]).
    fn on_candidates(
        &mut self,
        now: Instant,
        peer: PublicKey,
        candidates: &[SocketAddr],
        relay: PeerRelay,
    ) {
        // Endpoints are exchanged between trusted peers only; check again anyway.
        if !self.is_allowed(&peer) {
            return;
        }
        let client = self.plane.client();
        let target = self.relays.learn(peer, relay, |r| client.is_answering(r));
        tracing::debug!(%peer, ?candidates, home = ?relay.home, relay = %target, "peer candidates");
        let rng = &mut self.rng;
        self.paths
            .machine_or_new(peer, || rng.next_u64())
            .on_candidates(now, candidates, target);
        self.paths.adopt_data_plane_path(now, &peer);
        self.drive(now, peer);
    }
}

impl Node {
    /// Our home relay moved: say so, and start an endpoint exchange with every relayed peer,
    /// so that it learns the new home (our request carries it) and relays through it.
    fn on_home_changed(
        &mut self,
        now: Instant,
        home: Option<SocketAddr>,
        previous: Option<SocketAddr>,
    ) {
        match home {
            Some(h) => tracing::warn!(home = %h, previous = ?previous, "home relay"),
            None => tracing::warn!(previous = ?previous, "no home relay: no registry answers"),
        }
        if home.is_none() || previous.is_none() {
            return;
        }
        let relayed: Vec<PublicKey> = self
            .paths
            .keys()
            .into_iter()
            .filter(|k| matches!(self.paths.machine_path(k), Some(Path::Relay(_))))
            .collect();
        for key in relayed {
            self.plane.client().request_endpoints(now, key);
        }
    }

    /// `registry` started or stopped being usable for our relay frames: peers whose home it
    /// is move to it, or away to their introducer. A relayed peer that moves also gets an
    /// endpoint exchange: it renews the pair's permission at the new relay (a registry that
    /// came back after a restart has forgotten it).
    fn retarget_relays(&mut self, now: Instant, registry: SocketAddr) {
        let client = self.plane.client();
        let moves = self.relays.homed_at(registry, |r| client.is_answering(r));
        for (key, target) in moves {
            let Some(m) = self.paths.machine(&key) else {
                continue;
            };
            let moved = m.relay() != Some(target);
            m.set_relay(now, target);
            let relayed = matches!(m.path(), Path::Relay(_));
            if moved && relayed && self.plane.client().is_registered() {
                self.plane.client().request_endpoints(now, key);
            }
            self.drive(now, key);
        }
    }
}
