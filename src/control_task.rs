//! The tokio task that drives the sans-IO [`ControlPlane`] for the daemon.
//!
//! One task owns the control plane. Its inputs are control datagrams from the data-plane
//! socket, the control plane's timers, and commands from the local API; its outputs are
//! datagrams on the same socket and calls on [`Tunnels`] (add a trusted peer, remove an
//! untrusted one, set an endpoint). Nothing else changes trust, so there is no lock to get
//! wrong. API calls that need a registry's answer are answered when their operation completes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::control::{ControlEvent, ControlPlane, TrustTarget};
use crate::error::{ErrorCode, PilotError};
use crate::identity::PublicKey;
use crate::mapping::{Hostname, NetworkPrefix, PeerRef};
use crate::registry::client::{ClientEvent, OpId};
use crate::registry::runner::unix_ms_now;
use crate::trust::{TrustError, TrustState};

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
    /// Whether `key` has an endpoint already.
    fn has_endpoint(&self, key: &PublicKey) -> bool;
}

/// A request from the local API to the control plane.
#[derive(Debug)]
pub enum ControlCommand {
    /// Ask a peer for trust.
    Handshake {
        /// Whom.
        peer: PeerRef,
        /// Why.
        justification: String,
    },
    /// Requests waiting for our decision.
    Pending,
    /// Approve a pending request.
    Approve {
        /// Whose.
        peer: PeerRef,
    },
    /// Reject a pending request.
    Reject {
        /// Whose.
        peer: PeerRef,
        /// Why.
        reason: String,
    },
    /// Withdraw trust.
    Untrust {
        /// From whom.
        peer: PeerRef,
    },
    /// Every trust record.
    TrustList,
    /// Look a hostname up at the registries.
    Find {
        /// The name.
        hostname: Hostname,
    },
    /// Claim a hostname at the registries.
    SetHostname {
        /// The name.
        hostname: Hostname,
    },
}

type Reply = oneshot::Sender<Result<serde_json::Value, PilotError>>;

/// The API side's handle on the control task.
#[derive(Clone)]
pub struct ControlHandle {
    tx: mpsc::Sender<(ControlCommand, Reply)>,
}

/// How long an API call waits for the registries before answering `timeout`.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

impl ControlHandle {
    /// Runs a command and waits for its answer.
    pub async fn call(&self, cmd: ControlCommand) -> Result<serde_json::Value, PilotError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((cmd, tx))
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
    Find(Reply),
    /// An operation about `peer` (known key, or a hostname still being looked up).
    Op {
        peer: Result<PublicKey, Hostname>,
        reply: Reply,
    },
    /// A hostname claim.
    Hostname(Hostname, Reply),
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

/// How often to ask again for a trusted peer's endpoints while it has none.
const ENDPOINT_RETRY: Duration = Duration::from_secs(5);

/// The control task's state.
pub struct ControlTask<T: Tunnels> {
    plane: ControlPlane,
    tunnels: Arc<T>,
    config: ControlTaskConfig,
    waiting: HashMap<OpId, Waiting>,
    /// Trusted peers whose endpoints we asked for, and when.
    endpoint_asked: HashMap<PublicKey, Instant>,
}

impl<T: Tunnels> ControlTask<T> {
    /// Starts the task. Static peers are marked trusted at the client (they may learn our
    /// endpoints); peers the store trusts reach the tunnels through the plane's first events.
    pub fn spawn(
        mut plane: ControlPlane,
        tunnels: Arc<T>,
        config: ControlTaskConfig,
        control_rx: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
    ) -> ControlHandle {
        for k in &config.static_peers {
            plane.client().set_trusted(*k, true);
        }
        let task = ControlTask {
            plane,
            tunnels,
            config,
            waiting: HashMap::new(),
            endpoint_asked: HashMap::new(),
        };
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(task.run(rx, control_rx));
        ControlHandle { tx }
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<(ControlCommand, Reply)>,
        mut datagrams: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
    ) {
        let mut clock_sync = tokio::time::interval(Duration::from_secs(60));
        let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
        loop {
            self.flush();
            let deadline = self
                .plane
                .poll_timeout()
                .map(tokio::time::Instant::from_std);
            let timer = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some((cmd, reply)) => self.command(cmd, reply),
                    None => return,
                },
                dg = datagrams.recv() => match dg {
                    Some((from, bytes)) => self.plane.handle_datagram(Instant::now(), from, &bytes),
                    None => return,
                },
                _ = timer => self.plane.handle_timeout(Instant::now()),
                _ = clock_sync.tick() => self.plane.client().sync_clock(Instant::now(), unix_ms_now()),
                _ = housekeeping.tick() => self.retry_endpoints(Instant::now()),
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

    fn is_allowed(&self, key: &PublicKey) -> bool {
        self.plane.is_trusted(key) || self.config.static_peers.contains(key)
    }

    /// How the API shows one peer's trust.
    fn view(&self, key: &PublicKey) -> serde_json::Value {
        let rec = self.plane.trust().get(key);
        let state = match rec.map(|r| &r.state) {
            Some(TrustState::Pending { .. }) => "pending",
            Some(TrustState::Requested { .. }) => "requested",
            Some(TrustState::Trusted { .. }) => "trusted",
            Some(TrustState::Rejected { .. }) => "rejected",
            None if self.config.static_peers.contains(key) => "static",
            None => "none",
        };
        serde_json::json!({
            "public_key": key.to_string(),
            "address": key.addr48().to_string(),
            "ipv6": self.config.network.ipv6(key.addr48()).to_string(),
            "hostname": rec.and_then(|r| r.hostname.as_ref()).map(|h| h.to_string()),
            "state": state,
        })
    }

    fn ask_endpoints(&mut self, now: Instant, key: PublicKey) {
        if self.config.has_registry && !self.tunnels.has_endpoint(&key) {
            self.plane.client().request_endpoints(now, key);
            self.endpoint_asked.insert(key, now);
        }
    }

    /// Trusted peers still without an endpoint are asked for again now and then.
    fn retry_endpoints(&mut self, now: Instant) {
        if !self.config.has_registry || !self.plane.client().is_registered() {
            return;
        }
        let keys: Vec<PublicKey> = self.plane.trust().trusted().copied().collect();
        for key in keys {
            let due = self
                .endpoint_asked
                .get(&key)
                .is_none_or(|t| now.duration_since(*t) >= ENDPOINT_RETRY);
            if due {
                self.ask_endpoints(now, key);
            }
        }
    }

    fn reply_op(&mut self, op: OpId, result: Result<(), PilotError>) {
        let Some(w) = self.waiting.remove(&op) else {
            return;
        };
        match w {
            Waiting::Find(reply) => {
                let _ = reply.send(result.map(|_| serde_json::Value::Null));
            }
            Waiting::Hostname(h, reply) => {
                let _ =
                    reply.send(result.map(|_| serde_json::json!({ "hostname": h.to_string() })));
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
                let _ = reply.send(result.map(|_| match key {
                    Some(k) => self.view(&k),
                    None => serde_json::Value::Null,
                }));
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
                self.ask_endpoints(now, key);
            }
            ControlEvent::RemovePeer(key) => {
                self.endpoint_asked.remove(&key);
                if !self.config.static_peers.contains(&key) {
                    tracing::info!(peer = %key, "trust withdrawn: tunnel torn down");
                    self.tunnels.remove_peer(&key);
                }
            }
            ControlEvent::AwaitingApproval {
                from,
                hostname,
                justification,
            } => tracing::info!(
                peer = %from,
                hostname = hostname.as_ref().map(|h| h.as_str()).unwrap_or("-"),
                justification = %justification,
                "trust request waiting for approval (`pilotctl pending`)"
            ),
            ControlEvent::RejectedBy(key) => {
                tracing::info!(peer = %key, "our trust request was rejected")
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
                self.endpoint_asked.clear();
                self.retry_endpoints(now);
            }
            ClientEvent::RegistryLost { registry } => {
                tracing::warn!(%registry, "registry lost; registering again")
            }
            ClientEvent::ReflexiveAddress { registry, addr } => {
                tracing::info!(%registry, %addr, "reflexive address")
            }
            ClientEvent::HostnameTaken { registry, hostname } => {
                tracing::warn!(%registry, %hostname, "hostname is held by another key")
            }
            ClientEvent::LookupResult {
                op, hostname, key, ..
            } => {
                if let Some(Waiting::Find(reply)) = self.waiting.remove(&op) {
                    let _ = reply.send(Ok(serde_json::json!({
                        "hostname": hostname.to_string(),
                        "public_key": key.to_string(),
                        "address": key.addr48().to_string(),
                        "ipv6": self.config.network.ipv6(key.addr48()).to_string(),
                    })));
                }
            }
            ClientEvent::EndpointRequested {
                from: peer,
                candidates,
            }
            | ClientEvent::EndpointInfo {
                peer, candidates, ..
            } => {
                // Endpoints are exchanged between trusted peers only; check again anyway.
                if self.is_allowed(&peer) && !self.tunnels.has_endpoint(&peer) {
                    if let Some(ep) = candidates.first() {
                        tracing::info!(%peer, endpoint = %ep, "peer endpoint learned");
                        self.tunnels.set_endpoint(&peer, *ep);
                    }
                }
            }
            ClientEvent::Done { op } => self.reply_op(op, Ok(())),
            ClientEvent::Failed { op, error } => self.reply_op(op, Err(error)),
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

    fn command(&mut self, cmd: ControlCommand, reply: Reply) {
        let now = Instant::now();
        match cmd {
            ControlCommand::Handshake {
                peer,
                justification,
            } => {
                let target = match (&peer, self.resolve_local(&peer)) {
                    (PeerRef::Hostname(h), _) if self.config.has_registry => {
                        TrustTarget::Name(h.clone())
                    }
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
                        let _ = reply.send(Ok(self.view(&k)));
                        return;
                    }
                }
                match self.plane.request_trust(now, target, &justification) {
                    Ok(op) => {
                        self.waiting.insert(op, Waiting::Op { peer: who, reply });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(trust_err(e)));
                    }
                }
            }
            ControlCommand::Pending => {
                let pending: Vec<serde_json::Value> = self
                    .plane
                    .trust()
                    .peers()
                    .filter_map(|p| match &p.state {
                        TrustState::Pending {
                            justification,
                            since_ms,
                            ..
                        } => {
                            let mut v = self.view(&p.key);
                            v["justification"] = justification.clone().into();
                            v["since_ms"] = (*since_ms).into();
                            Some(v)
                        }
                        _ => None,
                    })
                    .collect();
                let _ = reply.send(Ok(serde_json::json!({ "pending": pending })));
            }
            ControlCommand::Approve { peer } => {
                self.decide(now, &peer, reply, |p, now, k| p.approve(now, k))
            }
            ControlCommand::Reject { peer, reason } => {
                self.decide(now, &peer, reply, |p, now, k| p.reject(now, k, &reason))
            }
            ControlCommand::Untrust { peer } => {
                self.decide(now, &peer, reply, |p, now, k| p.untrust(now, k))
            }
            ControlCommand::TrustList => {
                let peers: Vec<serde_json::Value> = self
                    .plane
                    .trust()
                    .peers()
                    .map(|p| self.view(&p.key))
                    .chain(self.config.static_peers.iter().map(|k| self.view(k)))
                    .collect();
                let _ = reply.send(Ok(serde_json::json!({ "peers": peers })));
            }
            ControlCommand::Find { hostname } => {
                if !self.config.has_registry {
                    let _ = reply.send(Err(Self::no_registry()));
                    return;
                }
                let op = self.plane.client().lookup(now, hostname);
                self.waiting.insert(op, Waiting::Find(reply));
            }
            ControlCommand::SetHostname { hostname } => {
                if !self.config.has_registry {
                    let _ = reply.send(Ok(serde_json::json!({ "hostname": hostname.to_string() })));
                    return;
                }
                let op = self.plane.client().set_hostname(now, hostname.clone());
                self.waiting.insert(op, Waiting::Hostname(hostname, reply));
            }
        }
    }

    /// Approve, reject or untrust: resolve the peer, change the store, answer when the peer has
    /// been told (or at once when no message is needed).
    fn decide(
        &mut self,
        now: Instant,
        peer: &PeerRef,
        reply: Reply,
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
