//! The tokio task that drives the sans-IO [`ControlPlane`] for the daemon.
//!
//! One task owns the control plane. Its inputs are control datagrams from the data-plane
//! socket, the control plane's timers, and commands from the local API; its outputs are
//! datagrams on the same socket and calls on [`Tunnels`] (add a trusted peer, remove an
//! untrusted one, set an endpoint). Nothing else changes trust, so there is no lock to get
//! wrong. API calls that need a registry's answer are answered when their operation completes.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::identity::Identity;
use crate::node::traversal::{Action, Path, PeerPath, Timing};
use crate::wire::probe::{self, Probe};
use crate::wire::relay;

use tokio::sync::{broadcast, mpsc, oneshot};

use crate::clock::unix_ms_now;
use crate::error::{ErrorCode, PilotError};
use crate::identity::PublicKey;
use crate::mapping::{Hostname, NetworkPrefix, PeerRef};
use crate::node::control::{ControlEvent, ControlPlane, TrustTarget};
use crate::node::registry_client::{ClientEvent, OpId};
use crate::node::trust::{TrustError, TrustState};
use crate::node::views::{
    HostnameClaim, Lookup, NodeEvent, PendingList, PendingView, PingReport, TrustList,
    TrustStanding, TrustView,
};

/// What the control plane needs from the data plane.
pub trait Tunnels: Send + Sync + 'static {
    /// Sends a control datagram from the tunnel socket.
    fn send_control(&self, dst: SocketAddr, bytes: &[u8]);
    /// Lets `key` build a tunnel with us (idempotent).
    fn add_peer(&self, key: PublicKey, hostname: Option<&Hostname>);
    /// Tears down `key`'s tunnel and forgets its endpoint.
    fn remove_peer(&self, key: &PublicKey);
    /// Sets where `key`'s datagrams go.
    fn set_endpoint(&self, key: &PublicKey, endpoint: SocketAddr);
    /// Sets how `key`'s datagrams travel (direct or through a relay).
    fn set_path(&self, key: &PublicKey, path: Path) {
        if let Path::Direct(a) = path {
            self.set_endpoint(key, a);
        }
    }
    /// `key`'s current path as the data plane has it (it follows roaming peers by itself).
    fn path(&self, _key: &PublicKey) -> Option<Path> {
        None
    }
    /// Records the round-trip time measured on `key`'s path.
    fn set_rtt(&self, _key: &PublicKey, _rtt: Option<Duration>) {}
    /// The registries whose relay deliveries the data plane accepts.
    fn set_relays(&self, _relays: Vec<SocketAddr>) {}
    /// Peers whose outbound packets found no path since the last call.
    fn take_wanted_paths(&self) -> Vec<PublicKey> {
        Vec::new()
    }
}

/// Where a command's answer goes.
pub type Reply<T> = oneshot::Sender<Result<T, PilotError>>;

/// A request from the local API to the control plane, with the channel for its answer.
#[derive(Debug)]
pub enum ControlCommand {
    /// Ask a peer for trust; answers the peer's trust once the request is delivered.
    Handshake {
        /// Whom.
        peer: PeerRef,
        /// Why.
        justification: String,
        /// The answer.
        reply: Reply<Option<TrustView>>,
    },
    /// Requests waiting for our decision.
    Pending {
        /// The answer.
        reply: Reply<PendingList>,
    },
    /// Approve a pending request.
    Approve {
        /// Whose.
        peer: PeerRef,
        /// The answer.
        reply: Reply<Option<TrustView>>,
    },
    /// Reject a pending request.
    Reject {
        /// Whose.
        peer: PeerRef,
        /// Why.
        reason: String,
        /// The answer.
        reply: Reply<Option<TrustView>>,
    },
    /// Withdraw trust.
    Untrust {
        /// From whom.
        peer: PeerRef,
        /// The answer.
        reply: Reply<Option<TrustView>>,
    },
    /// Every trust record.
    TrustList {
        /// The answer.
        reply: Reply<TrustList>,
    },
    /// Look a hostname up at the registries.
    Find {
        /// The name.
        hostname: Hostname,
        /// The answer.
        reply: Reply<Option<Lookup>>,
    },
    /// Claim a hostname at the registries.
    SetHostname {
        /// The name.
        hostname: Hostname,
        /// The answer.
        reply: Reply<HostnameClaim>,
    },
    /// Probe a trusted peer over its current path.
    Ping {
        /// Whom.
        peer: PeerRef,
        /// How many probes.
        count: u32,
        /// The answer.
        reply: Reply<PingReport>,
    },
}

/// The API side's handle on the control task.
#[derive(Clone)]
pub struct ControlHandle {
    tx: mpsc::Sender<ControlCommand>,
}

/// How long an API call waits for the registries before answering `timeout`.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

impl ControlHandle {
    /// Runs the command `make` builds around its reply channel, and waits for the answer.
    pub async fn call<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> ControlCommand,
    ) -> Result<T, PilotError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| PilotError::internal("the control plane has stopped"))?;
        match tokio::time::timeout(CALL_TIMEOUT, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(PilotError::internal(
                "the control plane dropped the request",
            )),
            Err(_) => Err(PilotError::new(
                ErrorCode::Timeout,
                "no registry answered in time",
                "check that the registries are reachable; the request is still being retried",
            )),
        }
    }
}

/// Settings for the control task.
#[derive(Debug, Clone)]
pub struct ControlTaskConfig {
    /// The overlay network (to print peers' IPv6 addresses).
    pub network: NetworkPrefix,
    /// Peers pinned in config: trusted without the store, never removed.
    pub static_peers: Vec<PublicKey>,
    /// Whether any registry is configured.
    pub has_registry: bool,
}

/// What an API call is waiting for.
enum Waiting {
    /// A lookup (`find`).
    Find(Reply<Option<Lookup>>),
    /// An operation about `peer` (known key, or a hostname still being looked up).
    Op {
        peer: Result<PublicKey, Hostname>,
        reply: Reply<Option<TrustView>>,
    },
    /// A hostname claim.
    Hostname(Hostname, Reply<HostnameClaim>),
}

fn trust_err(e: TrustError) -> PilotError {
    let code = match e {
        TrustError::NoPendingRequest(_) | TrustError::NotFound(_) => ErrorCode::NotFound,
        TrustError::SelfTrust | TrustError::JustificationTooLong(_) => ErrorCode::InvalidArgument,
        TrustError::InsecurePermissions { .. } => ErrorCode::Unauthorized,
        _ => ErrorCode::Internal,
    };
    let hint = e.hint();
    PilotError::new(code, e.to_string(), hint)
}

/// Between two probes of `pilotctl ping`.
const PING_INTERVAL: Duration = Duration::from_millis(250);
/// How long `pilotctl ping` waits for the last reply.
const PING_WAIT: Duration = Duration::from_secs(1);
/// Most probe transaction ids remembered against replays.
const PROBE_SEEN_MAX: usize = 65_536;

/// A running `pilotctl ping`.
struct PingSession {
    key: PublicKey,
    count: u32,
    sent: Vec<(u64, Instant)>,
    rtts: Vec<Option<Duration>>,
    next_send: Instant,
    path: Path,
    reply: Reply<PingReport>,
}

impl PingSession {
    /// When this session needs attention next.
    fn deadline(&self) -> Instant {
        if (self.sent.len() as u32) < self.count {
            self.next_send
        } else {
            self.sent
                .last()
                .map_or(self.next_send, |(_, t)| *t + PING_WAIT)
        }
    }
}

/// The control task's state.
pub struct ControlTask<T: Tunnels> {
    plane: ControlPlane,
    tunnels: Arc<T>,
    config: ControlTaskConfig,
    waiting: HashMap<OpId, Waiting>,
    identity: Arc<Identity>,
    /// One path machine per trusted peer (with a registry configured).
    paths: HashMap<PublicKey, PeerPath>,
    /// Probes seen (sender, txid) → expiry (unix ms), against replays.
    probes_seen: HashMap<(PublicKey, u64), u64>,
    probes_seen_order: VecDeque<(PublicKey, u64)>,
    pings: Vec<PingSession>,
    /// Where node events go (the local API's live stream); nobody listening is fine.
    events: broadcast::Sender<NodeEvent>,
}

impl<T: Tunnels> ControlTask<T> {
    /// Starts the task. Static peers are marked trusted at the client (they may learn our
    /// endpoints); peers the store trusts reach the tunnels through the plane's first events.
    pub fn spawn(
        mut plane: ControlPlane,
        tunnels: Arc<T>,
        config: ControlTaskConfig,
        control_rx: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
        events: broadcast::Sender<NodeEvent>,
    ) -> ControlHandle {
        for k in &config.static_peers {
            plane.client().set_trusted(*k, true);
        }
        tunnels.set_relays(plane.client().registries());
        let identity = plane.client().identity();
        let task = ControlTask {
            plane,
            tunnels,
            config,
            waiting: HashMap::new(),
            identity,
            paths: HashMap::new(),
            probes_seen: HashMap::new(),
            probes_seen_order: VecDeque::new(),
            pings: Vec::new(),
            events,
        };
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(task.run(rx, control_rx));
        ControlHandle { tx }
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<ControlCommand>,
        mut datagrams: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
    ) {
        let mut clock_sync = tokio::time::interval(Duration::from_secs(60));
        let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
        loop {
            self.flush();
            let deadline = self
                .plane
                .poll_timeout()
                .into_iter()
                .chain(self.paths.values().filter_map(|p| p.poll_timeout()))
                .chain(self.pings.iter().map(|p| p.deadline()))
                .min()
                .map(tokio::time::Instant::from_std);
            let timer = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    None => return,
                },
                dg = datagrams.recv() => match dg {
                    Some((from, bytes)) => self.datagram(Instant::now(), from, &bytes),
                    None => return,
                },
                _ = timer => self.timeout(Instant::now()),
                _ = clock_sync.tick() => self.plane.client().sync_clock(Instant::now(), unix_ms_now()),
                _ = housekeeping.tick() => self.housekeeping(Instant::now()),
            }
        }
    }

    /// Sends what the plane queued and handles what it reported, until both are empty.
    fn flush(&mut self) {
        loop {
            let mut progressed = false;
            while let Some((dst, bytes)) = self.plane.poll_transmit() {
                self.tunnels.send_control(dst, &bytes);
                progressed = true;
            }
            while let Some(ev) = self.plane.poll_event() {
                self.event(ev);
                progressed = true;
            }
            if !progressed {
                return;
            }
        }
    }

    /// Publishes a node event (dropped when nobody listens).
    fn emit(&self, event: NodeEvent) {
        let _ = self.events.send(event);
    }

    fn is_allowed(&self, key: &PublicKey) -> bool {
        self.plane.is_trusted(key) || self.config.static_peers.contains(key)
    }

    /// How the API shows one peer's trust.
    fn view(&self, key: &PublicKey) -> TrustView {
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

    /// Starts traversal towards a trusted peer (when a registry can introduce us).
    fn connect(&mut self, now: Instant, key: PublicKey) {
        if !self.config.has_registry {
            return;
        }
        let seed = rand_core::RngCore::next_u64(&mut rand_core::OsRng);
        let m = self
            .paths
            .entry(key)
            .or_insert_with(|| PeerPath::new(Timing::default(), seed));
        m.connect(now);
        self.drive(now, key);
    }

    /// Carries out what `key`'s path machine asks for.
    fn drive(&mut self, now: Instant, key: PublicKey) {
        loop {
            let Some(m) = self.paths.get_mut(&key) else {
                return;
            };
            let Some(action) = m.poll_action() else {
                let rtt = m.rtt();
                self.tunnels.set_rtt(&key, rtt);
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
                    self.tunnels.set_path(&key, path);
                    self.emit(NodeEvent::PathChanged {
                        peer: key,
                        path: path.kind().to_string(),
                        endpoint: path.addr(),
                    });
                }
            }
        }
    }

    /// Sends a signed probe (or reply) to `key` along `via`.
    fn send_probe(&mut self, now: Instant, key: PublicKey, via: Path, txid: u64, reply: bool) {
        let bytes = Probe {
            reply,
            sender: self.identity.public_key(),
            target: key,
            txid,
            timestamp_ms: self.plane.client().unix_ms_at(now),
        }
        .encode(&self.identity);
        match via {
            Path::Direct(a) => self.tunnels.send_control(a, &bytes),
            Path::Relay(r) => {
                let f = relay::frame(relay::RELAY_SEND, key.addr48(), &bytes);
                self.tunnels.send_control(r, &f);
            }
            Path::None => {}
        }
    }

    /// A control datagram: a peer probe (direct or relayed) or a registry message.
    fn datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        if let Some((sender48, payload)) = relay::parse(bytes, relay::RELAY_DELIVER) {
            let from_registry = self.plane.client().registries().contains(&from);
            if from_registry && probe::is_probe(payload) {
                self.on_probe(now, from, Some(sender48), payload);
            }
            return;
        }
        if probe::is_probe(bytes) {
            self.on_probe(now, from, None, bytes);
            return;
        }
        self.plane.handle_datagram(now, from, bytes);
    }

    /// A probe or probe reply from `src` (a registry when `relayed` names the sender).
    /// Untrusted senders, wrong targets, stale or replayed probes and bad signatures are
    /// dropped without an answer.
    fn on_probe(
        &mut self,
        now: Instant,
        src: SocketAddr,
        relayed: Option<crate::mapping::Addr48>,
        bytes: &[u8],
    ) {
        let Some(p) = Probe::decode_unverified(bytes) else {
            return;
        };
        let me = self.identity.public_key();
        if p.target != me || !self.is_allowed(&p.sender) {
            return;
        }
        if relayed.is_some_and(|a| a != p.sender.addr48()) {
            return;
        }
        let now_ms = self.plane.client().unix_ms_at(now);
        if p.timestamp_ms.abs_diff(now_ms) > probe::MAX_SKEW_MS || !p.verify(bytes) {
            return;
        }
        let via = match relayed {
            Some(_) => Path::Relay(src),
            None => Path::Direct(src),
        };
        if !p.reply {
            if !self.first_probe(p.sender, p.txid, now_ms) {
                return;
            }
            self.send_probe(now, p.sender, via, p.txid, true);
            if relayed.is_none() {
                if let Some(m) = self.paths.get_mut(&p.sender) {
                    m.on_probe_from(now, src);
                    self.drive(now, p.sender);
                }
            }
            return;
        }
        for s in &mut self.pings {
            if s.key == p.sender {
                if let Some(i) = s.sent.iter().position(|(t, _)| *t == p.txid) {
                    if s.rtts[i].is_none() {
                        s.rtts[i] = Some(now.saturating_duration_since(s.sent[i].1));
                    }
                    return;
                }
            }
        }
        if let Some(m) = self.paths.get_mut(&p.sender) {
            m.on_probe_reply(now, src, p.txid);
            self.drive(now, p.sender);
        }
    }

    /// Remembers a probe's (sender, txid) for the replay window; false if seen before.
    fn first_probe(&mut self, sender: PublicKey, txid: u64, now_ms: u64) -> bool {
        while let Some(k) = self.probes_seen_order.front().copied() {
            let expired = self.probes_seen.get(&k).is_none_or(|e| *e < now_ms);
            if expired || self.probes_seen_order.len() >= PROBE_SEEN_MAX {
                self.probes_seen_order.pop_front();
                self.probes_seen.remove(&k);
            } else {
                break;
            }
        }
        if self.probes_seen.contains_key(&(sender, txid)) {
            return false;
        }
        self.probes_seen
            .insert((sender, txid), now_ms + 2 * probe::MAX_SKEW_MS);
        self.probes_seen_order.push_back((sender, txid));
        true
    }

    /// Timers of the registry client, the path machines and running pings.
    fn timeout(&mut self, now: Instant) {
        self.plane.handle_timeout(now);
        let due: Vec<PublicKey> = self
            .paths
            .iter()
            .filter(|(_, m)| m.poll_timeout().is_some_and(|t| t <= now))
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            if let Some(m) = self.paths.get_mut(&key) {
                m.handle_timeout(now);
            }
            self.drive(now, key);
        }
        self.run_pings(now);
    }

    /// Once a second: connect peers whose traffic found no path, and follow the data plane
    /// where it moved a path by itself (a roaming peer).
    fn housekeeping(&mut self, now: Instant) {
        for key in self.tunnels.take_wanted_paths() {
            if let Some(m) = self.paths.get_mut(&key) {
                m.on_traffic_without_path(now);
                self.drive(now, key);
            }
        }
        let keys: Vec<PublicKey> = self.paths.keys().copied().collect();
        for key in keys {
            if let Some(p) = self.tunnels.path(&key) {
                if let Some(m) = self.paths.get_mut(&key) {
                    m.on_data_plane_path(now, p);
                }
            }
        }
    }

    fn run_pings(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.pings.len() {
            let s = &mut self.pings[i];
            if (s.sent.len() as u32) < s.count && now >= s.next_send {
                let txid = rand_core::RngCore::next_u64(&mut rand_core::OsRng);
                s.sent.push((txid, now));
                s.rtts.push(None);
                s.next_send = now + PING_INTERVAL;
                let (key, path) = (s.key, s.path);
                self.send_probe(now, key, path, txid, false);
                continue;
            }
            let s = &self.pings[i];
            let all_sent = s.sent.len() as u32 >= s.count;
            let all_back = s.rtts.iter().all(|r| r.is_some());
            if all_sent && (all_back || now >= s.deadline()) {
                let s = self.pings.remove(i);
                let ms: Vec<f64> = s
                    .rtts
                    .iter()
                    .flatten()
                    .map(|d| d.as_secs_f64() * 1e3)
                    .collect();
                let n = ms.len();
                let stat = |f: fn(f64, f64) -> f64| ms.iter().copied().reduce(f);
                let v = PingReport {
                    peer: s.key,
                    address: s.key.addr48(),
                    path: s.path.kind().to_string(),
                    endpoint: s.path.addr(),
                    sent: s.sent.len(),
                    received: n,
                    rtt_ms: s
                        .rtts
                        .iter()
                        .map(|r| r.map(|d| d.as_secs_f64() * 1e3))
                        .collect(),
                    min_ms: stat(f64::min),
                    max_ms: stat(f64::max),
                    avg_ms: (n > 0).then(|| ms.iter().sum::<f64>() / n as f64),
                };
                let _ = s.reply.send(Ok(v));
                continue;
            }
            i += 1;
        }
    }

    fn ping(&mut self, now: Instant, peer: &PeerRef, count: u32, reply: Reply<PingReport>) {
        let Some(key) = self.resolve_local(peer).filter(|k| self.is_allowed(k)) else {
            let _ = reply.send(Err(Self::not_found(peer)));
            return;
        };
        let path = self
            .tunnels
            .path(&key)
            .or_else(|| self.paths.get(&key).map(|m| m.path()))
            .unwrap_or(Path::None);
        if path == Path::None {
            self.connect(now, key);
            let _ = reply.send(Err(PilotError::new(
                ErrorCode::ConnectionFailed,
                format!("no path to {} yet", key.addr48()),
                "a path is being set up (hole punching, then relay); retry in a few seconds",
            )));
            return;
        }
        self.pings.push(PingSession {
            key,
            count: count.clamp(1, 100),
            sent: Vec::new(),
            rtts: Vec::new(),
            next_send: now,
            path,
            reply,
        });
        self.run_pings(now);
    }

    fn reply_op(&mut self, op: OpId, result: Result<(), PilotError>) {
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
            Waiting::Op { peer, reply } => {
                let key = match &peer {
                    Ok(k) => Some(*k),
                    Err(name) => self
                        .plane
                        .trust()
                        .peers()
                        .find(|p| p.hostname.as_ref() == Some(name))
                        .map(|p| p.key),
                };
                let _ = reply.send(result.map(|_| key.map(|k| self.view(&k))));
            }
        }
    }

    fn event(&mut self, ev: ControlEvent) {
        let now = Instant::now();
        match ev {
            ControlEvent::AddPeer(key) => {
                tracing::info!(peer = %key, "peer trusted: tunnel allowed");
                let hostname = self
                    .plane
                    .trust()
                    .get(&key)
                    .and_then(|r| r.hostname.clone());
                self.tunnels.add_peer(key, hostname.as_ref());
                self.emit(NodeEvent::PeerTrusted { peer: key });
                self.connect(now, key);
            }
            ControlEvent::RemovePeer(key) => {
                self.paths.remove(&key);
                if !self.config.static_peers.contains(&key) {
                    tracing::info!(peer = %key, "trust withdrawn: tunnel torn down");
                    self.tunnels.remove_peer(&key);
                    self.emit(NodeEvent::PeerUntrusted { peer: key });
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
            ControlEvent::Client(ev) => self.client_event(now, ev),
        }
    }

    fn client_event(&mut self, now: Instant, ev: ClientEvent) {
        match ev {
            ClientEvent::Registered { registry } => {
                tracing::info!(%registry, "registered");
                let keys: Vec<PublicKey> = self
                    .plane
                    .trust()
                    .trusted()
                    .copied()
                    .filter(|k| self.paths.get(k).is_none_or(|m| m.path() == Path::None))
                    .collect();
                for key in keys {
                    // A punch started before we were registered could not ask for candidates.
                    if self.paths.get(&key).is_some_and(|m| m.is_punching()) {
                        self.plane.client().request_endpoints(now, key);
                    } else {
                        self.connect(now, key);
                    }
                }
            }
            ClientEvent::RegistryLost { registry } => {
                tracing::warn!(%registry, "registry lost; registering again")
            }
            ClientEvent::ReflexiveAddress { registry, addr } => {
                tracing::info!(%registry, %addr, "reflexive address");
                // Our NAT mapping changed (or is first known): punch again.
                let keys: Vec<PublicKey> = self.paths.keys().copied().collect();
                for key in keys {
                    if let Some(m) = self.paths.get_mut(&key) {
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
            }
            | ClientEvent::EndpointInfo {
                peer,
                candidates,
                registry,
                ..
            } => {
                // Endpoints are exchanged between trusted peers only; check again anyway.
                if self.is_allowed(&peer) {
                    tracing::debug!(%peer, ?candidates, "peer candidates");
                    let seed = rand_core::RngCore::next_u64(&mut rand_core::OsRng);
                    self.paths
                        .entry(peer)
                        .or_insert_with(|| PeerPath::new(Timing::default(), seed))
                        .on_candidates(now, &candidates, registry);
                    self.drive(now, peer);
                }
            }
            ClientEvent::Done { op } => self.reply_op(op, Ok(())),
            ClientEvent::Failed { op, error } => self.reply_op(op, Err(error.into())),
            ClientEvent::TrustRequestReceived { .. }
            | ClientEvent::TrustResponseReceived { .. } => {}
        }
    }

    /// A peer reference to a key without asking the registries, if possible.
    fn resolve_local(&self, peer: &PeerRef) -> Option<PublicKey> {
        let trust = self.plane.trust();
        match peer {
            PeerRef::PublicKey(k) => Some(*k),
            PeerRef::Addr48(a) => trust
                .peers()
                .map(|p| p.key)
                .chain(self.config.static_peers.iter().copied())
                .find(|k| k.addr48() == *a),
            PeerRef::Hostname(h) => trust
                .peers()
                .find(|p| p.hostname.as_ref() == Some(h))
                .map(|p| p.key),
        }
    }

    fn not_found(peer: &PeerRef) -> PilotError {
        PilotError::new(
            ErrorCode::NotFound,
            format!("no known peer matches `{peer}`"),
            "name the peer by hostname (with a registry configured), by address of a peer you know, or by public key",
        )
    }

    fn no_registry() -> PilotError {
        PilotError::new(
            ErrorCode::ConnectionFailed,
            "no registry is configured",
            "start the daemon with --registry HOST:PORT (or PILOT_REGISTRY, or `registries` in config)",
        )
    }

    fn command(&mut self, cmd: ControlCommand) {
        let now = Instant::now();
        match cmd {
            ControlCommand::Handshake {
                peer,
                justification,
                reply,
            } => self.handshake(now, peer, &justification, reply),
            ControlCommand::Pending { reply } => {
                let _ = reply.send(Ok(self.pending()));
            }
            ControlCommand::Approve { peer, reply } => {
                self.decide(now, &peer, reply, |p, now, k| p.approve(now, k))
            }
            ControlCommand::Reject {
                peer,
                reason,
                reply,
            } => self.decide(now, &peer, reply, |p, now, k| p.reject(now, k, &reason)),
            ControlCommand::Untrust { peer, reply } => {
                self.decide(now, &peer, reply, |p, now, k| p.untrust(now, k))
            }
            ControlCommand::TrustList { reply } => {
                let peers = self
                    .plane
                    .trust()
                    .peers()
                    .map(|p| self.view(&p.key))
                    .chain(self.config.static_peers.iter().map(|k| self.view(k)))
                    .collect();
                let _ = reply.send(Ok(TrustList { peers }));
            }
            ControlCommand::Find { hostname, reply } => {
                if !self.config.has_registry {
                    let _ = reply.send(Err(Self::no_registry()));
                    return;
                }
                let op = self.plane.client().lookup(now, hostname);
                self.waiting.insert(op, Waiting::Find(reply));
            }
            ControlCommand::SetHostname { hostname, reply } => {
                if !self.config.has_registry {
                    let _ = reply.send(Ok(HostnameClaim { hostname }));
                    return;
                }
                let op = self.plane.client().set_hostname(now, hostname.clone());
                self.waiting.insert(op, Waiting::Hostname(hostname, reply));
            }
            ControlCommand::Ping { peer, count, reply } => self.ping(now, &peer, count, reply),
        }
    }

    /// Asks `peer` for trust: by name through the registries when one is configured, else by
    /// a key we know.
    fn handshake(
        &mut self,
        now: Instant,
        peer: PeerRef,
        justification: &str,
        reply: Reply<Option<TrustView>>,
    ) {
        let target = match (&peer, self.resolve_local(&peer)) {
            (PeerRef::Hostname(h), _) if self.config.has_registry => TrustTarget::Name(h.clone()),
            (_, Some(k)) => TrustTarget::Key(k),
            (_, None) => {
                let _ = reply.send(Err(Self::not_found(&peer)));
                return;
            }
        };
        let who = match &target {
            TrustTarget::Key(k) => Ok(*k),
            TrustTarget::Name(h) => Err(h.clone()),
        };
        if let Ok(k) = who {
            if self.config.static_peers.contains(&k) {
                let _ = reply.send(Ok(Some(self.view(&k))));
                return;
            }
        }
        match self.plane.request_trust(now, target, justification) {
            Ok(op) => {
                self.waiting.insert(op, Waiting::Op { peer: who, reply });
            }
            Err(e) => {
                let _ = reply.send(Err(trust_err(e)));
            }
        }
    }

    /// Trust requests waiting for our decision.
    fn pending(&self) -> PendingList {
        let pending = self
            .plane
            .trust()
            .peers()
            .filter_map(|p| match &p.state {
                TrustState::Pending {
                    justification,
                    since_ms,
                    ..
                } => Some(PendingView {
                    peer: self.view(&p.key),
                    justification: justification.clone(),
                    since_ms: *since_ms,
                }),
                _ => None,
            })
            .collect();
        PendingList { pending }
    }

    /// Approve, reject or untrust: resolve the peer, change the store, answer when the peer has
    /// been told (or at once when no message is needed).
    fn decide(
        &mut self,
        now: Instant,
        peer: &PeerRef,
        reply: Reply<Option<TrustView>>,
        f: impl FnOnce(&mut ControlPlane, Instant, &PublicKey) -> Result<OpId, TrustError>,
    ) {
        let Some(key) = self.resolve_local(peer) else {
            let _ = reply.send(Err(Self::not_found(peer)));
            return;
        };
        match f(&mut self.plane, now, &key) {
            Ok(op) => {
                self.waiting.insert(
                    op,
                    Waiting::Op {
                        peer: Ok(key),
                        reply,
                    },
                );
            }
            Err(e) => {
                let _ = reply.send(Err(trust_err(e)));
            }
        }
    }
}
