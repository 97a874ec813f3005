//! The daemon's control plane: drives the registry client and the trust store, and applies
//! their decisions to the tunnels.
//!
//! One tokio task owns both sans-IO cores ([`crate::registry::client::Client`] and
//! [`crate::trust::TrustStore`]). Its inputs are control datagrams from the data-plane socket,
//! the client's timers, and commands from the local API; its outputs are datagrams on the same
//! socket and calls on [`Tunnels`] (add a trusted peer, remove an untrusted one, set an
//! endpoint). Nothing else changes trust, so there is no lock to get wrong.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::error::{ErrorCode, PilotError};
use crate::identity::{Identity, PublicKey};
use crate::mapping::{Hostname, NetworkPrefix, PeerRef};
use crate::registry::client::{Client, ClientConfig, ClientEvent, OpId};
use crate::registry::runner::unix_ms_now;
use crate::trust::{AllowList, TrustEffect, TrustError, TrustState, TrustStore};

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

/// The API side's handle on the control plane.
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
            Ok(Err(_)) => Err(PilotError::internal("the control plane dropped the request")),
            Err(_) => Err(PilotError::new(
                ErrorCode::Timeout,
                "no registry answered in time",
                "check that the registries are reachable (`pilotctl info` lists them); the request is still being retried",
            )),
        }
    }
}

/// Settings for the control plane.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// Registries (resolved).
    pub registries: Vec<SocketAddr>,
    /// Hostname to claim.
    pub hostname: Option<Hostname>,
    /// Our local candidates (LAN addresses with the tunnel port).
    pub candidates: Vec<SocketAddr>,
    /// Trust allow-list entries (keys or hostnames) from config.
    pub allow: Vec<String>,
    /// The overlay network (to print peers' IPv6 addresses).
    pub network: NetworkPrefix,
    /// Peers pinned in config: trusted without the store.
    pub static_peers: Vec<PublicKey>,
}

/// Builds the allow-list from config entries; each must be a public key or a hostname.
pub fn parse_allow_list(entries: &[String]) -> Result<AllowList, PilotError> {
    let mut allow = AllowList::default();
    for e in entries {
        if let Ok(k) = e.parse::<PublicKey>() {
            allow.keys.insert(k);
        } else if let Ok(h) = Hostname::new(e.strip_suffix(".pilot").unwrap_or(e)) {
            allow.hostnames.insert(h);
        } else {
            return Err(PilotError::invalid(
                format!("trust.allow: {e:?} is neither a public key nor a hostname"),
                "list base64 public keys or hostnames",
            ));
        }
    }
    Ok(allow)
}

/// What an API call is waiting for.
enum Waiting {
    /// A lookup whose result completes a command.
    Lookup { then: AfterLookup, reply: Reply },
    /// An operation whose `Done` answers the call with `data`.
    Op {
        data: serde_json::Value,
        reply: Reply,
    },
}

enum AfterLookup {
    Find,
    Handshake { justification: String },
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

/// One trust record as the API shows it.
#[derive(Debug, Serialize)]
struct TrustView {
    public_key: String,
    address: String,
    ipv6: String,
    hostname: Option<String>,
    #[serde(flatten)]
    state: TrustState,
}

/// The control plane task's state.
pub struct ControlPlane<T: Tunnels> {
    client: Option<Client>,
    trust: TrustStore,
    tunnels: Arc<T>,
    config: ControlConfig,
    waiting: HashMap<OpId, Waiting>,
    /// Trusted peers whose endpoints we asked for and when.
    endpoint_asked: HashMap<PublicKey, Instant>,
}

/// How often to ask again for a trusted peer's endpoints while it has none.
const ENDPOINT_RETRY: Duration = Duration::from_secs(5);

impl<T: Tunnels> ControlPlane<T> {
    /// Starts the control plane task. Trusted peers from the store are given to the tunnels at
    /// once, so tunnels come back after a restart without asking anyone.
    pub fn spawn(
        identity: Arc<Identity>,
        trust: TrustStore,
        tunnels: Arc<T>,
        config: ControlConfig,
        control_rx: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
    ) -> ControlHandle {
        let now = Instant::now();
        let client = (!config.registries.is_empty()).then(|| {
            let mut cc = ClientConfig::new(config.registries.clone());
            cc.hostname = config.hostname.clone();
            cc.candidates = config.candidates.clone();
            Client::new(identity.clone(), cc, now, unix_ms_now())
        });
        let mut plane = ControlPlane {
            client,
            trust,
            tunnels,
            config,
            waiting: HashMap::new(),
            endpoint_asked: HashMap::new(),
        };
        let trusted: Vec<PublicKey> = plane.trust.trusted().copied().collect();
        for key in trusted {
            plane.on_trusted(now, key);
        }
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(plane.run(rx, control_rx));
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
                .client
                .as_ref()
                .and_then(|c| c.poll_timeout())
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
                    Some((from, bytes)) => {
                        if let Some(c) = self.client.as_mut() {
                            c.handle_datagram(Instant::now(), from, &bytes);
                        }
                    }
                    None => return,
                },
                _ = timer => {
                    if let Some(c) = self.client.as_mut() {
                        c.handle_timeout(Instant::now());
                    }
                }
                _ = clock_sync.tick() => {
                    if let Some(c) = self.client.as_mut() {
                        c.sync_clock(Instant::now(), unix_ms_now());
                    }
                }
                _ = housekeeping.tick() => self.retry_endpoints(Instant::now()),
            }
        }
    }

    /// Sends what the client queued and handles what it reported.
    fn flush(&mut self) {
        loop {
            let mut progressed = false;
            if let Some(c) = self.client.as_mut() {
                while let Some((dst, bytes)) = c.poll_transmit() {
                    self.tunnels.send_control(dst, &bytes);
                    progressed = true;
                }
            }
            while let Some(ev) = self.client.as_mut().and_then(|c| c.poll_event()) {
                self.event(ev);
                progressed = true;
            }
            if !progressed {
                return;
            }
        }
    }

    fn now_ms() -> u64 {
        unix_ms_now()
    }

    fn view(&self, key: &PublicKey) -> serde_json::Value {
        let rec = self.trust.get(key);
        serde_json::json!({
            "public_key": key.to_string(),
            "address": key.addr48().to_string(),
            "ipv6": self.config.network.ipv6(key.addr48()).to_string(),
            "hostname": rec.and_then(|r| r.hostname.as_ref()).map(|h| h.to_string()),
            "state": rec.map(|r| match r.state {
                TrustState::Pending { .. } => "pending",
                TrustState::Requested { .. } => "requested",
                TrustState::Trusted { .. } => "trusted",
                TrustState::Rejected { .. } => "rejected",
            }).unwrap_or("none"),
        })
    }

    fn apply(&mut self, effects: Vec<TrustEffect>) {
        let now = Instant::now();
        for e in effects {
            match e {
                TrustEffect::SendRequest { to, justification } => {
                    if let Some(c) = self.client.as_mut() {
                        c.send_trust_request(now, to, justification);
                    }
                }
                TrustEffect::SendResponse {
                    to,
                    in_reply_to,
                    decision,
                    reason,
                } => {
                    if let Some(c) = self.client.as_mut() {
                        c.respond_trust(now, to, in_reply_to, decision, reason);
                    }
                }
                TrustEffect::Trusted(key) => {
                    tracing::info!(peer = %key, "mutual trust established");
                    self.on_trusted(now, key);
                }
                TrustEffect::Untrusted(key) => {
                    tracing::info!(peer = %key, "trust withdrawn: tunnel torn down");
                    self.on_untrusted(key);
                }
                TrustEffect::AwaitingApproval {
                    from,
                    hostname,
                    justification,
                } => {
                    tracing::info!(
                        peer = %from,
                        hostname = hostname.as_ref().map(|h| h.as_str()).unwrap_or("-"),
                        justification = %justification,
                        "trust request waiting for approval (`pilotctl pending`)"
                    );
                }
                TrustEffect::RejectedBy(key) => {
                    tracing::info!(peer = %key, "our trust request was rejected");
                }
            }
        }
    }

    fn on_trusted(&mut self, now: Instant, key: PublicKey) {
        let hostname = self.trust.get(&key).and_then(|r| r.hostname.clone());
        self.tunnels.add_peer(key, hostname.as_ref());
        if let Some(c) = self.client.as_mut() {
            c.set_trusted(key, true);
            if !self.tunnels.has_endpoint(&key) {
                c.request_endpoints(now, key);
                self.endpoint_asked.insert(key, now);
            }
        }
    }

    fn on_untrusted(&mut self, key: PublicKey) {
        if self.config.static_peers.contains(&key) {
            return;
        }
        self.tunnels.remove_peer(&key);
        self.endpoint_asked.remove(&key);
        if let Some(c) = self.client.as_mut() {
            c.set_trusted(key, false);
        }
    }

    /// Trusted peers still without an endpoint are asked for again now and then.
    fn retry_endpoints(&mut self, now: Instant) {
        let Some(c) = self.client.as_mut() else {
            return;
        };
        if !c.is_registered() {
            return;
        }
        let keys: Vec<PublicKey> = self.trust.trusted().copied().collect();
        for key in keys {
            if self.tunnels.has_endpoint(&key) {
                continue;
            }
            let due = self
                .endpoint_asked
                .get(&key)
                .is_none_or(|t| now.duration_since(*t) >= ENDPOINT_RETRY);
            if due {
                c.request_endpoints(now, key);
                self.endpoint_asked.insert(key, now);
            }
        }
    }

    fn event(&mut self, ev: ClientEvent) {
        let now_ms = Self::now_ms();
        match ev {
            ClientEvent::Registered { registry } => {
                tracing::info!(%registry, "registered");
                self.endpoint_asked.clear();
                self.retry_endpoints(Instant::now());
            }
            ClientEvent::RegistryLost { registry } => {
                tracing::warn!(%registry, "registry lost; registering again");
            }
            ClientEvent::ReflexiveAddress { registry, addr } => {
                tracing::info!(%registry, %addr, "reflexive address");
            }
            ClientEvent::HostnameTaken { registry, hostname } => {
                tracing::warn!(%registry, %hostname, "hostname is held by another key");
            }
            ClientEvent::LookupResult {
                op, hostname, key, ..
            } => {
                if let Some(Waiting::Lookup { then, reply }) = self.waiting.remove(&op) {
                    match then {
                        AfterLookup::Find => {
                            let _ = reply.send(Ok(serde_json::json!({
                                "hostname": hostname.to_string(),
                                "public_key": key.to_string(),
                                "address": key.addr48().to_string(),
                                "ipv6": self.config.network.ipv6(key.addr48()).to_string(),
                            })));
                        }
                        AfterLookup::Handshake { justification } => {
                            self.handshake_key(key, Some(hostname), justification, reply)
                        }
                    }
                }
            }
            ClientEvent::TrustRequestReceived {
                from,
                hostname,
                justification,
                nonce,
                sent_ms,
            } => {
                match self
                    .trust
                    .on_request(from, hostname, &justification, nonce, sent_ms, now_ms)
                {
                    Ok(effects) => self.apply(effects),
                    Err(e) => tracing::error!(error = %e, "trust store"),
                }
            }
            ClientEvent::TrustResponseReceived {
                from,
                decision,
                sent_ms,
                ..
            } => match self.trust.on_response(from, decision, sent_ms, now_ms) {
                Ok(effects) => self.apply(effects),
                Err(e) => tracing::error!(error = %e, "trust store"),
            },
            ClientEvent::EndpointRequested { from, candidates }
            | ClientEvent::EndpointInfo {
                peer: from,
                candidates,
                ..
            } => {
                // Only trusted peers are answered by the client and only trusted peers'
                // answers reach us; check again anyway: endpoints go to trusted peers only.
                if self.trust.is_trusted(&from) || self.config.static_peers.contains(&from) {
                    if let Some(ep) = candidates.first() {
                        if !self.tunnels.has_endpoint(&from) {
                            tracing::info!(peer = %from, endpoint = %ep, "peer endpoint learned");
                            self.tunnels.set_endpoint(&from, *ep);
                        }
                    }
                }
            }
            ClientEvent::Done { op } => match self.waiting.remove(&op) {
                Some(Waiting::Op { data, reply }) => {
                    let _ = reply.send(Ok(data));
                }
                Some(other) => {
                    self.waiting.insert(op, other);
                }
                None => {}
            },
            ClientEvent::Failed { op, error } => {
                if let Some(w) = self.waiting.remove(&op) {
                    let reply = match w {
                        Waiting::Op { reply, .. } | Waiting::Lookup { reply, .. } => reply,
                    };
                    let _ = reply.send(Err(error));
                }
            }
        }
    }

    /// A peer reference to a key without asking the registries, if possible.
    fn resolve_local(&self, peer: &PeerRef) -> Option<PublicKey> {
        match peer {
            PeerRef::PublicKey(k) => Some(*k),
            PeerRef::Addr48(a) => self
                .trust
                .peers()
                .map(|p| p.key)
                .chain(self.config.static_peers.iter().copied())
                .find(|k| k.addr48() == *a),
            PeerRef::Hostname(h) => self
                .trust
                .peers()
                .find(|p| p.hostname.as_ref() == Some(h))
                .map(|p| p.key),
        }
    }

    fn not_found(peer: &PeerRef) -> PilotError {
        PilotError::new(
            ErrorCode::NotFound,
            format!("no known peer matches `{peer}`"),
            "name the peer by hostname (with a registry configured) or by public key",
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
        let now_ms = Self::now_ms();
        match cmd {
            ControlCommand::Handshake {
                peer,
                justification,
            } => {
                if justification.len() > crate::registry::wire::MAX_JUSTIFICATION {
                    let _ = reply.send(Err(PilotError::invalid(
                        format!(
                            "the justification is {} bytes; at most {} are allowed",
                            justification.len(),
                            crate::registry::wire::MAX_JUSTIFICATION
                        ),
                        "shorten it",
                    )));
                    return;
                }
                match (&peer, self.resolve_local(&peer)) {
                    (PeerRef::Hostname(h), _) if self.client.is_some() => {
                        // The registry's binding is authoritative for names.
                        let op = self
                            .client
                            .as_mut()
                            .expect("checked")
                            .lookup(now, h.clone());
                        self.waiting.insert(
                            op,
                            Waiting::Lookup {
                                then: AfterLookup::Handshake { justification },
                                reply,
                            },
                        );
                    }
                    (_, Some(key)) => self.handshake_key(key, None, justification, reply),
                    (_, None) => {
                        let _ = reply.send(Err(Self::not_found(&peer)));
                    }
                }
            }
            ControlCommand::Pending => {
                let pending: Vec<serde_json::Value> = self
                    .trust
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
                let Some(key) = self.resolve_local(&peer) else {
                    let _ = reply.send(Err(Self::not_found(&peer)));
                    return;
                };
                let r = self.trust.approve(&key, now_ms).map_err(trust_err);
                let r = r.map(|effects| {
                    self.apply(effects);
                    self.view(&key)
                });
                let _ = reply.send(r);
            }
            ControlCommand::Reject { peer, reason } => {
                let Some(key) = self.resolve_local(&peer) else {
                    let _ = reply.send(Err(Self::not_found(&peer)));
                    return;
                };
                let r = self.trust.reject(&key, &reason, now_ms).map_err(trust_err);
                let r = r.map(|effects| {
                    self.apply(effects);
                    self.view(&key)
                });
                let _ = reply.send(r);
            }
            ControlCommand::Untrust { peer } => {
                let Some(key) = self.resolve_local(&peer) else {
                    let _ = reply.send(Err(Self::not_found(&peer)));
                    return;
                };
                let r = self.trust.untrust(&key).map_err(trust_err);
                let r = r.map(|effects| {
                    self.apply(effects);
                    self.view(&key)
                });
                let _ = reply.send(r);
            }
            ControlCommand::TrustList => {
                let list: Vec<TrustView> = self
                    .trust
                    .peers()
                    .map(|p| TrustView {
                        public_key: p.key.to_string(),
                        address: p.key.addr48().to_string(),
                        ipv6: self.config.network.ipv6(p.key.addr48()).to_string(),
                        hostname: p.hostname.as_ref().map(|h| h.to_string()),
                        state: p.state.clone(),
                    })
                    .collect();
                let statics: Vec<String> = self
                    .config
                    .static_peers
                    .iter()
                    .map(|k| k.to_string())
                    .collect();
                let _ = reply.send(Ok(
                    serde_json::json!({ "peers": list, "static_peers": statics }),
                ));
            }
            ControlCommand::Find { hostname } => match self.client.as_mut() {
                Some(c) => {
                    let op = c.lookup(now, hostname);
                    self.waiting.insert(
                        op,
                        Waiting::Lookup {
                            then: AfterLookup::Find,
                            reply,
                        },
                    );
                }
                None => {
                    let _ = reply.send(Err(Self::no_registry()));
                }
            },
            ControlCommand::SetHostname { hostname } => match self.client.as_mut() {
                Some(c) => {
                    let op = c.set_hostname(now, hostname.clone());
                    self.waiting.insert(
                        op,
                        Waiting::Op {
                            data: serde_json::json!({ "hostname": hostname.to_string() }),
                            reply,
                        },
                    );
                }
                None => {
                    let _ =
                        reply.send(Ok(serde_json::json!({ "hostname": hostname.to_string() })));
                }
            },
        }
    }

    fn handshake_key(
        &mut self,
        key: PublicKey,
        hostname: Option<Hostname>,
        justification: String,
        reply: Reply,
    ) {
        let now_ms = Self::now_ms();
        match self.trust.request(key, hostname, &justification, now_ms) {
            Err(e) => {
                let _ = reply.send(Err(trust_err(e)));
            }
            Ok(effects) => {
                let sends_request = effects
                    .iter()
                    .any(|e| matches!(e, TrustEffect::SendRequest { .. }));
                if sends_request && self.client.is_none() {
                    let _ = reply.send(Err(Self::no_registry()));
                    return;
                }
                self.apply(effects);
                let _ = reply.send(Ok(self.view(&key)));
            }
        }
    }
}
