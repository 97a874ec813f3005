//! The daemon side of the registry protocol, sans-IO: feed it datagrams and time, take
//! datagrams and events out. The daemon owns the UDP socket (shared with WireGuard) and drives
//! this with [`Client::handle_datagram`], [`Client::handle_timeout`] at
//! [`Client::poll_timeout`], [`Client::poll_transmit`] and [`Client::poll_event`].
//!
//! What it does:
//! - registers with every configured registry, retrying with exponential backoff (capped at
//!   [`ClientConfig::max_backoff`], forever: a registry may come back);
//! - heartbeats every [`ClientConfig::heartbeat_interval`] (≤ 25 s keeps NAT mappings and the
//!   registry's 75 s online window); a heartbeat answered with `unknown_node` (the registry
//!   restarted) or unanswered after a few tries makes it register again;
//! - sends one-shot requests (lookup, hostname changes, trust messages, endpoint requests) to
//!   every registry, retries each with a fresh nonce and exponential backoff up to
//!   [`ClientConfig::max_attempts`], matches answers by nonce, and reports one outcome per
//!   operation ([`ClientEvent::Done`], [`ClientEvent::LookupResult`], ... or
//!   [`ClientEvent::Failed`]);
//! - learns its clock skew from a registry's `stale_timestamp` answer and corrects for it;
//! - checks every pushed trust message's own signature (the registry cannot forge one),
//!   acknowledges pushes so the registry stops holding them, and reports each once;
//! - answers endpoint requests only from peers the daemon marked trusted
//!   ([`Client::set_trusted`]); others are ignored and counted.
//!
//! Time: every call takes a monotonic `Instant`; wall-clock milliseconds (for request
//! timestamps) are derived from the pair given to [`Client::new`] and refreshed with
//! [`Client::sync_clock`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_core::RngCore;

use crate::error::{ErrorCode, PilotError};
use crate::identity::{Identity, PublicKey};
use crate::mapping::{Addr48, Hostname};
use crate::node::trust::{verify_trust_message, TrustMessage};
use crate::wire::registry::{
    Header, HostnameStatus, Nonce, Request, RequestBody, Response, ResponseBody, Status,
    TrustDecision,
};

/// How the client behaves.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The registries to register with (all of them; tunnels never depend on one).
    pub registries: Vec<SocketAddr>,
    /// The hostname to claim, if any.
    pub hostname: Option<Hostname>,
    /// Our local (LAN) endpoints, offered to trusted peers.
    pub candidates: Vec<SocketAddr>,
    /// Time between heartbeats (at most 25 s).
    pub heartbeat_interval: Duration,
    /// First retransmission timeout; doubled at each retry.
    pub initial_rto: Duration,
    /// Cap on the retransmission timeout.
    pub max_backoff: Duration,
    /// Sends of a one-shot request before it fails (heartbeats use 3).
    pub max_attempts: u32,
    /// How long to wait for a peer's endpoint answer after the registry forwarded our request.
    pub endpoint_answer_timeout: Duration,
    /// Registry keys pinned by configuration. A registry without a pinned key is trusted on
    /// first use: its key is learned from its first signed `Registered` answer.
    pub pinned_keys: HashMap<SocketAddr, PublicKey>,
}

impl ClientConfig {
    /// Defaults for the given registries.
    pub fn new(registries: Vec<SocketAddr>) -> Self {
        ClientConfig {
            registries,
            hostname: None,
            candidates: Vec::new(),
            heartbeat_interval: Duration::from_secs(20),
            initial_rto: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            max_attempts: 5,
            endpoint_answer_timeout: Duration::from_secs(10),
            pinned_keys: HashMap::new(),
        }
    }
}

/// Why a registry entry from configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrySpecError {
    /// No `:PORT`.
    #[error("registry `{0}` has no port")]
    NoPort(String),
    /// The text after `#` is not a public key.
    #[error("registry `{spec}`: the pinned key is invalid: {source}")]
    BadKey {
        /// The whole entry.
        spec: String,
        /// Why the key was refused.
        source: crate::identity::PublicKeyError,
    },
}

impl From<RegistrySpecError> for PilotError {
    fn from(e: RegistrySpecError) -> Self {
        let hint = match e {
            RegistrySpecError::NoPort(_) => {
                "write HOST:PORT, optionally followed by #KEY to pin the registry's key"
            }
            RegistrySpecError::BadKey { .. } => {
                "copy the key from the registry's log line `registry running ... key=...`"
            }
        };
        PilotError::invalid(e.to_string(), hint)
    }
}

/// Splits a registry entry from configuration, `HOST:PORT` or `HOST:PORT#KEY` (KEY = the
/// registry's public key, base64 or hex, as `pilotctl registry run` logs it), into the address
/// text (to resolve) and the pinned key, if any.
pub fn parse_registry_spec(spec: &str) -> Result<(String, Option<PublicKey>), RegistrySpecError> {
    let spec = spec.trim();
    let (addr, key) = match spec.split_once('#') {
        Some((a, k)) => (a.trim(), Some(k.trim())),
        None => (spec, None),
    };
    if addr.is_empty() || !addr.contains(':') {
        return Err(RegistrySpecError::NoPort(spec.to_string()));
    }
    let key = key
        .map(|k| {
            k.parse::<PublicKey>()
                .map_err(|source| RegistrySpecError::BadKey {
                    spec: spec.to_string(),
                    source,
                })
        })
        .transpose()?;
    Ok((addr.to_string(), key))
}

/// Why an operation failed at every registry. Protocol facts only; the user-facing code and
/// hint come from its `From` conversion into [`PilotError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// No registry is configured, so there is nobody to ask.
    #[error("no registry is configured")]
    NoRegistry,
    /// A registry did not answer any of our tries.
    #[error("registry {registry} did not answer {attempts} requests")]
    RegistryTimeout {
        /// Which registry.
        registry: SocketAddr,
        /// How many requests we sent.
        attempts: u32,
    },
    /// The peer did not answer the endpoint request the registry forwarded.
    #[error("{0} did not answer our endpoint request")]
    PeerTimeout(PublicKey),
    /// The request does not fit in a datagram.
    #[error("request too large to send")]
    TooLarge,
    /// A registry refused the request.
    #[error("registry {registry}: {message}")]
    Refused {
        /// Which registry.
        registry: SocketAddr,
        /// Its status.
        status: Status,
        /// Its message.
        message: String,
    },
    /// A registry answered a lookup with a record that does not match the question.
    #[error("registry {0} answered the lookup inconsistently")]
    InconsistentLookup(SocketAddr),
}

impl ClientError {
    /// Whether this is a timeout (a definite answer from another registry is more telling).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            ClientError::RegistryTimeout { .. } | ClientError::PeerTimeout(_)
        )
    }

    /// The stable code of this failure (the same as its [`PilotError`]'s).
    pub fn code(&self) -> ErrorCode {
        match self {
            ClientError::NoRegistry => ErrorCode::ConnectionFailed,
            ClientError::RegistryTimeout { .. } | ClientError::PeerTimeout(_) => ErrorCode::Timeout,
            ClientError::TooLarge => ErrorCode::InvalidArgument,
            ClientError::Refused { status, .. } => status.error_code(),
            ClientError::InconsistentLookup(_) => ErrorCode::Internal,
        }
    }

    /// What the user can do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            ClientError::NoRegistry => "add a registry address to the configuration",
            ClientError::RegistryTimeout { .. } => {
                "check that the registry runs and is reachable over UDP"
            }
            ClientError::PeerTimeout(_) => {
                "the peer must be online and trust us; check `pilotctl trust` on both sides"
            }
            ClientError::TooLarge => "shorten it",
            ClientError::Refused { status, .. } => match status {
                Status::NotFound => "check the name, or ask the peer to register",
                Status::AlreadyExists => "choose another hostname",
                Status::RateLimited | Status::QueueFull => "wait a little and retry",
                _ => "see the registry's log",
            },
            ClientError::InconsistentLookup(_) => "the registry may be faulty; try another",
        }
    }
}

impl From<ClientError> for PilotError {
    fn from(e: ClientError) -> Self {
        PilotError::new(e.code(), e.to_string(), e.hint())
    }
}

/// Identifies an operation started by the caller; events about it carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(pub u64);

/// What the client reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// A registry accepted our registration.
    Registered {
        /// Which registry.
        registry: SocketAddr,
    },
    /// A registry stopped answering heartbeats or forgot us; registering again.
    RegistryLost {
        /// Which registry.
        registry: SocketAddr,
    },
    /// Our address as a registry sees it (our NAT's public mapping) is new or changed.
    ReflexiveAddress {
        /// Which registry saw it.
        registry: SocketAddr,
        /// The address.
        addr: SocketAddr,
    },
    /// A registry says another key holds the hostname we asked for.
    HostnameTaken {
        /// Which registry.
        registry: SocketAddr,
        /// The name.
        hostname: Hostname,
    },
    /// A lookup succeeded (the key's address was checked against the key).
    LookupResult {
        /// The lookup.
        op: OpId,
        /// The name.
        hostname: Hostname,
        /// Its key.
        key: PublicKey,
        /// Its address.
        addr48: Addr48,
    },
    /// A verified trust request for us arrived (through a registry, or directly).
    TrustRequestReceived {
        /// Who asks.
        from: PublicKey,
        /// Its hostname as the registry has it (none when sent directly).
        hostname: Option<Hostname>,
        /// Why.
        justification: String,
        /// The request's nonce (to answer it).
        nonce: Nonce,
        /// The sender's timestamp (unix ms), for the trust store's replay watermark.
        sent_ms: u64,
    },
    /// A verified trust response (or revocation) for us arrived.
    TrustResponseReceived {
        /// Who answers.
        from: PublicKey,
        /// Its hostname as the registry has it.
        hostname: Option<Hostname>,
        /// The nonce of our request it answers (zero for a revocation).
        in_reply_to: Nonce,
        /// The decision.
        decision: TrustDecision,
        /// Why.
        reason: String,
        /// The sender's timestamp (unix ms).
        sent_ms: u64,
    },
    /// A trusted peer asked for our endpoints (answered already): it will start probing us, and
    /// we can probe these candidates of its own (issue 5, hole punching).
    EndpointRequested {
        /// The peer.
        from: PublicKey,
        /// Its reflexive address first, then its local candidates.
        candidates: Vec<SocketAddr>,
        /// The registry that forwarded it (which may now relay between us).
        registry: SocketAddr,
    },
    /// A peer answered our endpoint request.
    EndpointInfo {
        /// The endpoint request.
        op: OpId,
        /// The peer.
        peer: PublicKey,
        /// Its reflexive address first, then its local candidates.
        candidates: Vec<SocketAddr>,
        /// The registry that forwarded it (which may now relay between us).
        registry: SocketAddr,
    },
    /// An operation succeeded at (at least) one registry.
    Done {
        /// The operation.
        op: OpId,
    },
    /// An operation failed at every registry.
    Failed {
        /// The operation.
        op: OpId,
        /// Why (the most telling registry answer, or a timeout).
        error: ClientError,
    },
}

/// Counters of what the client refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCounters {
    /// Datagrams that are not valid registry messages.
    pub garbage: u64,
    /// Answers that match no request we sent.
    pub unmatched: u64,
    /// Pushed or direct messages whose inner signature, addressee or age is wrong.
    pub bad_push: u64,
    /// Endpoint requests from peers we do not trust (not answered).
    pub untrusted_endpoint_requests: u64,
    /// Retransmissions.
    pub retransmits: u64,
    /// Registry answers whose signature does not verify with the registry's key (or that came
    /// before any key was known), dropped.
    pub bad_signature: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Register,
    Heartbeat,
    Op(OpId),
    /// Our answer to an endpoint request: retried, no event.
    Internal,
}

#[derive(Debug)]
struct InFlight {
    registry: usize,
    purpose: Purpose,
    body: RequestBody,
    nonces: Vec<Nonce>,
    attempts: u32,
    rto: Duration,
    retry_at: Instant,
}

#[derive(Debug, Clone)]
enum OpKind {
    Lookup(Hostname),
    SetHostname(Hostname),
    ReleaseHostname,
    TrustMessage,
    EndpointRequest(PublicKey),
}

#[derive(Debug)]
struct Op {
    kind: OpKind,
    outstanding: usize,
    done: bool,
    error: Option<ClientError>,
}

#[derive(Debug)]
struct EndpointWait {
    op: OpId,
    peer: PublicKey,
    expires: Instant,
}

#[derive(Debug)]
struct RegistryState {
    addr: SocketAddr,
    registered: bool,
    next_heartbeat: Option<Instant>,
    reflexive: Option<SocketAddr>,
    /// Correction learned from the registry's clock (ms, may be negative).
    offset_ms: i64,
    /// The key that signs this registry's answers: pinned, or learned on first use.
    key: Option<PublicKey>,
    /// Whether `key` came from configuration (never forgotten).
    pinned: bool,
}

/// Most push nonces remembered for deduplication.
const SEEN_CAPACITY: usize = 4096;
/// Heartbeat sends before a registry is considered lost.
const HEARTBEAT_ATTEMPTS: u32 = 3;

/// The registry client.
pub struct Client {
    identity: Arc<Identity>,
    config: ClientConfig,
    base: Instant,
    base_unix_ms: u64,
    registries: Vec<RegistryState>,
    inflight: HashMap<u64, InFlight>,
    by_nonce: HashMap<Nonce, u64>,
    next_id: u64,
    ops: HashMap<OpId, Op>,
    endpoint_waits: HashMap<Nonce, EndpointWait>,
    trusted: HashSet<PublicKey>,
    seen: HashSet<Nonce>,
    seen_order: VecDeque<Nonce>,
    transmits: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<ClientEvent>,
    counters: ClientCounters,
    rng: Box<dyn RngCore + Send>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("key", &self.identity.public_key())
            .field("registries", &self.registries)
            .field("inflight", &self.inflight.len())
            .field("counters", &self.counters)
            .finish()
    }
}

impl Client {
    /// A client for `identity`; registration with every registry starts at once (see
    /// [`Client::poll_transmit`]). `unix_ms` is the wall clock at `now`.
    pub fn new(identity: Arc<Identity>, config: ClientConfig, now: Instant, unix_ms: u64) -> Self {
        Self::with_rng(identity, config, now, unix_ms, Box::new(rand_core::OsRng))
    }

    /// Like [`Client::new`] with a given random source for nonces (deterministic tests).
    pub fn with_rng(
        identity: Arc<Identity>,
        config: ClientConfig,
        now: Instant,
        unix_ms: u64,
        rng: Box<dyn RngCore + Send>,
    ) -> Self {
        let registries = config
            .registries
            .iter()
            .map(|&addr| RegistryState {
                addr,
                registered: false,
                next_heartbeat: None,
                reflexive: None,
                offset_ms: 0,
                key: config.pinned_keys.get(&addr).copied(),
                pinned: config.pinned_keys.contains_key(&addr),
            })
            .collect();
        let mut c = Client {
            identity,
            config,
            base: now,
            base_unix_ms: unix_ms,
            registries,
            inflight: HashMap::new(),
            by_nonce: HashMap::new(),
            next_id: 0,
            ops: HashMap::new(),
            endpoint_waits: HashMap::new(),
            trusted: HashSet::new(),
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counters: ClientCounters::default(),
            rng,
        };
        for i in 0..c.registries.len() {
            c.start_register(i, now);
        }
        c
    }

    /// Our public key.
    pub fn public_key(&self) -> PublicKey {
        self.identity.public_key()
    }

    /// Our identity (to sign peer probes).
    pub fn identity(&self) -> Arc<Identity> {
        self.identity.clone()
    }

    /// The configured registries' addresses.
    pub fn registries(&self) -> Vec<SocketAddr> {
        self.registries.iter().map(|r| r.addr).collect()
    }

    /// Refreshes the wall clock (call now and then; the skew learned from registries stays).
    pub fn sync_clock(&mut self, now: Instant, unix_ms: u64) {
        self.base = now;
        self.base_unix_ms = unix_ms;
    }

    /// Our wall clock at `now` (unix ms), as used for request timestamps (before any
    /// per-registry skew correction).
    pub fn unix_ms_at(&self, now: Instant) -> u64 {
        self.unix_ms(now, 0)
    }

    /// A fresh operation id that no request of this client uses, for callers that track
    /// composite operations (e.g. a lookup followed by a trust request).
    pub fn reserve_op_id(&mut self) -> OpId {
        self.next_id += 1;
        OpId(self.next_id)
    }

    /// Marks `key` trusted or not; endpoint requests are answered for trusted peers only.
    pub fn set_trusted(&mut self, key: PublicKey, trusted: bool) {
        if trusted {
            self.trusted.insert(key);
        } else {
            self.trusted.remove(&key);
        }
    }

    /// Changes the local candidates offered in registrations and endpoint answers.
    pub fn set_candidates(&mut self, candidates: Vec<SocketAddr>) {
        self.config.candidates = candidates;
    }

    /// The key that signs `registry`'s answers, pinned or learned (to log or persist it).
    pub fn registry_key(&self, registry: SocketAddr) -> Option<PublicKey> {
        self.registries
            .iter()
            .find(|r| r.addr == registry)
            .and_then(|r| r.key)
    }

    /// Whether at least one registry has us registered.
    pub fn is_registered(&self) -> bool {
        self.registries.iter().any(|r| r.registered)
    }

    /// Our reflexive address as the first registry that saw one reports it.
    pub fn reflexive_address(&self) -> Option<SocketAddr> {
        self.registries.iter().find_map(|r| r.reflexive)
    }

    /// What the client refused so far.
    pub fn counters(&self) -> &ClientCounters {
        &self.counters
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// When [`Client::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let retries = self.inflight.values().map(|f| f.retry_at);
        let beats = self.registries.iter().filter_map(|r| r.next_heartbeat);
        let waits = self.endpoint_waits.values().map(|w| w.expires);
        retries.chain(beats).chain(waits).min()
    }

    /// Resolves `hostname` to a key and address.
    pub fn lookup(&mut self, now: Instant, hostname: Hostname) -> OpId {
        let body = RequestBody::Lookup {
            hostname: hostname.clone(),
        };
        self.start_op(now, OpKind::Lookup(hostname), body)
    }

    /// Claims `hostname` (and keeps claiming it when registering again).
    pub fn set_hostname(&mut self, now: Instant, hostname: Hostname) -> OpId {
        self.config.hostname = Some(hostname.clone());
        let body = RequestBody::SetHostname {
            hostname: hostname.clone(),
        };
        self.start_op(now, OpKind::SetHostname(hostname), body)
    }

    /// Gives up our hostname.
    pub fn release_hostname(&mut self, now: Instant) -> OpId {
        self.config.hostname = None;
        self.start_op(now, OpKind::ReleaseHostname, RequestBody::ReleaseHostname)
    }

    /// Asks `target` for trust through the registries.
    pub fn send_trust_request(
        &mut self,
        now: Instant,
        target: PublicKey,
        justification: String,
    ) -> OpId {
        let body = RequestBody::TrustRequest {
            target,
            justification,
        };
        self.start_op(now, OpKind::TrustMessage, body)
    }

    /// Answers (or revokes) trust towards `target` through the registries.
    pub fn respond_trust(
        &mut self,
        now: Instant,
        target: PublicKey,
        in_reply_to: Nonce,
        decision: TrustDecision,
        reason: String,
    ) -> OpId {
        let body = RequestBody::TrustResponse {
            target,
            in_reply_to,
            decision,
            reason,
        };
        self.start_op(now, OpKind::TrustMessage, body)
    }

    /// Asks for `target`'s endpoints (answered only if it trusts us); reports
    /// [`ClientEvent::EndpointInfo`] or [`ClientEvent::Failed`].
    pub fn request_endpoints(&mut self, now: Instant, target: PublicKey) -> OpId {
        let body = RequestBody::EndpointRequest {
            target,
            candidates: self.config.candidates.clone(),
        };
        self.start_op(now, OpKind::EndpointRequest(target), body)
    }

    /// Signs a trust request or response for sending directly to a reachable peer (the same
    /// bytes a registry would forward). `None` if `body` is not a trust message or too large.
    pub fn sign_direct(&mut self, now: Instant, body: RequestBody) -> Option<Vec<u8>> {
        if !matches!(
            body,
            RequestBody::TrustRequest { .. } | RequestBody::TrustResponse { .. }
        ) {
            return None;
        }
        let ts = self.unix_ms(now, 0);
        self.sign(ts, body).ok().map(|(_, b)| b)
    }

    /// Handles a control datagram (first byte 0x50) from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        match crate::wire::registry::is_request(bytes) {
            Some(true) => return self.handle_direct(now, bytes),
            Some(false) => {}
            None => {
                self.counters.garbage += 1;
                return;
            }
        }
        let Ok(resp) = Response::decode(bytes) else {
            self.counters.garbage += 1;
            return;
        };
        let Some(reg) = self.registries.iter().position(|r| r.addr == from) else {
            self.counters.unmatched += 1;
            return;
        };
        let verified = match (&self.registries[reg].key, &resp.body) {
            (Some(key), _) => Response::verify(bytes, key),
            // Trust on first use: a Registered answer signed by the key it carries.
            (None, ResponseBody::Registered { registry_key, .. }) => {
                let ok = Response::verify(bytes, registry_key);
                if ok {
                    self.registries[reg].key = Some(*registry_key);
                }
                ok
            }
            // Before the key is known, a clock correction is taken on the nonce alone (it must
            // answer a request we sent): otherwise a node with a skewed clock could never
            // register to learn the key. It can only make our timestamps wrong, which an
            // attacker able to see our nonces could achieve by dropping packets anyway.
            (
                None,
                ResponseBody::Error {
                    status: Status::StaleTimestamp,
                    ..
                },
            ) => true,
            (None, _) => false,
        };
        if !verified {
            self.counters.bad_signature += 1;
            return;
        }
        match resp.body {
            ResponseBody::PushTrustRequest { hostname, original }
            | ResponseBody::PushTrustResponse { hostname, original } => {
                self.on_trust_push(now, reg, resp.in_reply_to, hostname, &original)
            }
            ResponseBody::PushEndpointRequest { observed, original } => {
                self.on_endpoint_push(now, reg, observed, &original)
            }
            ResponseBody::EndpointInfo { observed, original } => {
                self.on_endpoint_info(reg, resp.in_reply_to, observed, &original)
            }
            body => self.on_answer(now, reg, resp.in_reply_to, body),
        }
    }

    /// Retransmits, heartbeats and expires; call at [`Client::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<u64> = self
            .inflight
            .iter()
            .filter(|(_, f)| f.retry_at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(f) = self.inflight.get(&id) else {
                continue;
            };
            let limit = match f.purpose {
                Purpose::Register => u32::MAX,
                Purpose::Heartbeat => HEARTBEAT_ATTEMPTS,
                Purpose::Op(_) | Purpose::Internal => self.config.max_attempts,
            };
            if f.attempts < limit {
                self.counters.retransmits += 1;
                self.transmit(id, now);
                continue;
            }
            let f = self.finish(id).expect("present");
            match f.purpose {
                Purpose::Heartbeat => self.lose_registry(f.registry, now),
                Purpose::Op(op) => {
                    let error = ClientError::RegistryTimeout {
                        registry: self.registries[f.registry].addr,
                        attempts: f.attempts,
                    };
                    self.op_failed_at_one(op, error);
                }
                Purpose::Register | Purpose::Internal => {}
            }
        }
        for i in 0..self.registries.len() {
            let r = &self.registries[i];
            if r.registered && r.next_heartbeat.is_some_and(|t| t <= now) {
                self.registries[i].next_heartbeat = None;
                self.send(i, now, Purpose::Heartbeat, RequestBody::Heartbeat);
            }
        }
        let expired: Vec<Nonce> = self
            .endpoint_waits
            .iter()
            .filter(|(_, w)| w.expires <= now)
            .map(|(n, _)| *n)
            .collect();
        for n in expired {
            if let Some(w) = self.endpoint_waits.remove(&n) {
                let error = ClientError::PeerTimeout(w.peer);
                self.op_failed_at_one(w.op, error);
            }
        }
    }

    // ---- internals ----

    fn unix_ms(&self, now: Instant, offset_ms: i64) -> u64 {
        let elapsed = now.saturating_duration_since(self.base).as_millis() as u64;
        (self.base_unix_ms + elapsed).saturating_add_signed(offset_ms)
    }

    fn sign(&mut self, ts: u64, body: RequestBody) -> Result<(Nonce, Vec<u8>), ()> {
        let mut nonce = [0u8; 16];
        self.rng.fill_bytes(&mut nonce);
        let req = Request {
            header: Header {
                sender: self.identity.public_key(),
                nonce,
                timestamp_ms: ts,
            },
            body,
        };
        req.encode_signed(&self.identity)
            .map(|b| (nonce, b))
            .map_err(|_| ())
    }

    fn start_register(&mut self, reg: usize, now: Instant) {
        let body = RequestBody::Register {
            hostname: self.config.hostname.clone(),
            candidates: self.config.candidates.clone(),
        };
        // One registration in flight per registry.
        let existing: Vec<u64> = self
            .inflight
            .iter()
            .filter(|(_, f)| {
                f.registry == reg && matches!(f.purpose, Purpose::Register | Purpose::Heartbeat)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in existing {
            self.finish(id);
        }
        self.send(reg, now, Purpose::Register, body);
    }

    fn start_op(&mut self, now: Instant, kind: OpKind, body: RequestBody) -> OpId {
        self.next_id += 1;
        let op = OpId(self.next_id);
        let targets: Vec<usize> = (0..self.registries.len()).collect();
        self.ops.insert(
            op,
            Op {
                kind,
                outstanding: targets.len(),
                done: false,
                error: None,
            },
        );
        if targets.is_empty() {
            self.op_failed_at_one(op, ClientError::NoRegistry);
        }
        for reg in targets {
            self.send(reg, now, Purpose::Op(op), body.clone());
        }
        op
    }

    /// Starts tracking a request and sends its first copy.
    fn send(&mut self, registry: usize, now: Instant, purpose: Purpose, body: RequestBody) {
        self.next_id += 1;
        let id = self.next_id;
        self.inflight.insert(
            id,
            InFlight {
                registry,
                purpose,
                body,
                nonces: Vec::new(),
                attempts: 0,
                rto: self.config.initial_rto,
                retry_at: now,
            },
        );
        self.transmit(id, now);
    }

    /// Signs the request `id` afresh (new nonce and timestamp) and queues it.
    fn transmit(&mut self, id: u64, now: Instant) {
        let Some(f) = self.inflight.get(&id) else {
            return;
        };
        let reg = f.registry;
        let body = f.body.clone();
        let ts = self.unix_ms(now, self.registries[reg].offset_ms);
        let Ok((nonce, bytes)) = self.sign(ts, body) else {
            // Only a body over the size bounds fails to encode: fail it at once.
            if let Some(f) = self.finish(id) {
                if let Purpose::Op(op) = f.purpose {
                    self.op_failed_at_one(op, ClientError::TooLarge);
                }
            }
            return;
        };
        let cap = self.config.max_backoff;
        let f = self.inflight.get_mut(&id).expect("present");
        f.attempts += 1;
        f.nonces.push(nonce);
        f.retry_at = now + f.rto;
        f.rto = (f.rto * 2).min(cap);
        self.by_nonce.insert(nonce, id);
        let addr = self.registries[reg].addr;
        self.transmits.push_back((addr, bytes));
    }

    fn finish(&mut self, id: u64) -> Option<InFlight> {
        let f = self.inflight.remove(&id)?;
        for n in &f.nonces {
            self.by_nonce.remove(n);
        }
        Some(f)
    }

    fn lose_registry(&mut self, reg: usize, now: Instant) {
        let r = &mut self.registries[reg];
        let was = r.registered;
        r.registered = false;
        r.next_heartbeat = None;
        if !r.pinned {
            // A registry that lost its state may come back with a new key.
            r.key = None;
        }
        if was {
            self.events
                .push_back(ClientEvent::RegistryLost { registry: r.addr });
        }
        self.start_register(reg, now);
    }

    fn observe(&mut self, reg: usize, observed: SocketAddr) {
        let r = &mut self.registries[reg];
        if r.reflexive != Some(observed) {
            r.reflexive = Some(observed);
            self.events.push_back(ClientEvent::ReflexiveAddress {
                registry: r.addr,
                addr: observed,
            });
        }
    }

    fn on_answer(&mut self, now: Instant, reg: usize, nonce: Nonce, body: ResponseBody) {
        let Some(&id) = self.by_nonce.get(&nonce) else {
            self.counters.unmatched += 1;
            return;
        };
        if self.inflight.get(&id).map(|f| f.registry) != Some(reg) {
            self.counters.unmatched += 1;
            return;
        }
        if let ResponseBody::Error {
            status: Status::StaleTimestamp,
            registry_time_ms,
            ..
        } = body
        {
            // Correct our clock for this registry and try again at once (counts as an attempt).
            let ours = self.unix_ms(now, 0);
            self.registries[reg].offset_ms = registry_time_ms as i64 - ours as i64;
            let retry = self
                .inflight
                .get(&id)
                .is_some_and(|f| f.attempts < self.config.max_attempts.max(2));
            if retry {
                self.transmit(id, now);
                return;
            }
        }
        if let ResponseBody::Error {
            status: Status::RateLimited,
            ..
        } = body
        {
            // Back off: the retry timer is already armed; just wait for it.
            let limit = self.config.max_attempts;
            if self.inflight.get(&id).is_some_and(|f| f.attempts < limit) {
                return;
            }
        }
        let purpose = self.inflight.get(&id).map(|f| f.purpose);
        if purpose == Some(Purpose::Register) && !matches!(body, ResponseBody::Registered { .. }) {
            // Refused: the retry timer (with backoff) sends it again.
            return;
        }
        let f = self.finish(id).expect("present");
        let registry = self.registries[reg].addr;
        match (f.purpose, body) {
            (
                Purpose::Register,
                ResponseBody::Registered {
                    observed, hostname, ..
                },
            ) => {
                self.registries[reg].registered = true;
                self.registries[reg].next_heartbeat = Some(now + self.config.heartbeat_interval);
                self.events.push_back(ClientEvent::Registered { registry });
                self.observe(reg, observed);
                if hostname == HostnameStatus::Taken {
                    if let Some(h) = self.config.hostname.clone() {
                        self.events.push_back(ClientEvent::HostnameTaken {
                            registry,
                            hostname: h,
                        });
                    }
                }
            }
            (Purpose::Register, _) => unreachable!("refusals keep the registration in flight"),
            (Purpose::Heartbeat, ResponseBody::Ack { observed }) => {
                self.registries[reg].next_heartbeat = Some(now + self.config.heartbeat_interval);
                self.observe(reg, observed);
            }
            (Purpose::Heartbeat, _) => self.lose_registry(reg, now),
            (Purpose::Internal, _) => {}
            (Purpose::Op(op), body) => self.on_op_answer(now, reg, op, nonce, body),
        }
    }

    fn on_op_answer(
        &mut self,
        now: Instant,
        reg: usize,
        op: OpId,
        nonce: Nonce,
        body: ResponseBody,
    ) {
        let registry = self.registries[reg].addr;
        let Some(kind) = self.ops.get(&op).map(|o| o.kind.clone()) else {
            return;
        };
        match body {
            ResponseBody::Error {
                status, message, ..
            } => {
                if let (Status::AlreadyExists, OpKind::SetHostname(h)) = (status, &kind) {
                    self.events.push_back(ClientEvent::HostnameTaken {
                        registry,
                        hostname: h.clone(),
                    });
                }
                let error = ClientError::Refused {
                    registry,
                    status,
                    message,
                };
                self.op_failed_at_one(op, error);
            }
            ResponseBody::LookupResult {
                hostname,
                key,
                addr48,
            } => {
                let asked = matches!(&kind, OpKind::Lookup(h) if *h == hostname);
                if !asked || key.addr48() != addr48 {
                    self.counters.bad_push += 1;
                    let error = ClientError::InconsistentLookup(registry);
                    self.op_failed_at_one(op, error);
                    return;
                }
                if self.mark_done(op) {
                    self.events.push_back(ClientEvent::LookupResult {
                        op,
                        hostname,
                        key,
                        addr48,
                    });
                }
            }
            ResponseBody::Ack { observed } => {
                self.observe(reg, observed);
                if let OpKind::EndpointRequest(peer) = kind {
                    // Forwarded: now wait for the peer's answer.
                    self.endpoint_waits.insert(
                        nonce,
                        EndpointWait {
                            op,
                            peer,
                            expires: now + self.config.endpoint_answer_timeout,
                        },
                    );
                } else if self.mark_done(op) {
                    self.events.push_back(ClientEvent::Done { op });
                }
            }
            _ => self.counters.unmatched += 1,
        }
    }

    /// Marks `op` done; true the first time (so exactly one success event goes out).
    fn mark_done(&mut self, op: OpId) -> bool {
        match self.ops.get_mut(&op) {
            Some(o) if !o.done => {
                o.done = true;
                o.outstanding = o.outstanding.saturating_sub(1);
                if o.outstanding == 0 {
                    self.ops.remove(&op);
                }
                true
            }
            Some(o) => {
                o.outstanding = o.outstanding.saturating_sub(1);
                if o.outstanding == 0 {
                    self.ops.remove(&op);
                }
                false
            }
            None => false,
        }
    }

    /// One registry failed `op`; when all have failed and none succeeded, report it.
    fn op_failed_at_one(&mut self, op: OpId, error: ClientError) {
        let Some(o) = self.ops.get_mut(&op) else {
            return;
        };
        o.outstanding = o.outstanding.saturating_sub(1);
        // Prefer a definite answer (not found, taken) over a timeout.
        let better = match &o.error {
            None => true,
            Some(e) => e.is_timeout() && !error.is_timeout(),
        };
        if better {
            o.error = Some(error);
        }
        if o.outstanding == 0 {
            let o = self.ops.remove(&op).expect("present");
            if !o.done {
                // Every registry that was asked recorded an error before this point.
                if let Some(error) = o.error {
                    self.events.push_back(ClientEvent::Failed { op, error });
                }
            }
        }
    }

    /// Whether a push id is new; remembers it (bounded).
    fn first_sighting(&mut self, nonce: Nonce) -> bool {
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

    fn on_trust_push(
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
        let me = self.identity.public_key();
        match verify_trust_message(original, &me, self.unix_ms(now, 0)) {
            Ok(msg) => self.report_trust(msg, hostname),
            Err(_) => self.counters.bad_push += 1,
        }
    }

    fn handle_direct(&mut self, now: Instant, bytes: &[u8]) {
        let me = self.identity.public_key();
        match verify_trust_message(bytes, &me, self.unix_ms(now, 0)) {
            Ok(msg) => self.report_trust(msg, None),
            Err(_) => self.counters.bad_push += 1,
        }
    }

    fn report_trust(&mut self, msg: TrustMessage, hostname: Option<Hostname>) {
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

    fn on_endpoint_push(
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
        let RequestBody::EndpointRequest { target, candidates } = req.body else {
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
        };
        self.send(reg, now, Purpose::Internal, answer);
        if self.first_sighting(req.header.nonce) {
            let mut all = vec![observed];
            all.extend(candidates.into_iter().filter(|c| *c != observed));
            self.events.push_back(ClientEvent::EndpointRequested {
                from,
                candidates: all,
                registry: self.registries[reg].addr,
            });
        }
    }

    fn on_endpoint_info(
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
                } if r.header.sender == peer && target == me && answered == in_reply_to => {
                    Some(candidates)
                }
                _ => None,
            });
        let Some(candidates) = valid else {
            self.counters.bad_push += 1;
            return;
        };
        self.endpoint_waits.remove(&in_reply_to);
        if self.mark_done(op) {
            let mut all = vec![observed];
            all.extend(candidates.into_iter().filter(|c| *c != observed));
            self.events.push_back(ClientEvent::EndpointInfo {
                op,
                peer,
                candidates: all,
                registry: self.registries[reg].addr,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::trust::{TrustEffect, TrustStore};
    use crate::registry::server::{Limits, Registry};
    use crate::registry::store::MemoryStore;

    const T0: u64 = 1_750_000_000_000;

    /// A registry core and client cores wired in memory, with a virtual clock.
    struct Sim {
        registry: Registry,
        registry_addr: SocketAddr,
        registry_up: bool,
        clients: Vec<(Client, SocketAddr)>,
        start: Instant,
        now: Instant,
        /// Every datagram the clients sent to the registry: (time since start, bytes).
        sent_to_registry: Vec<(Duration, Vec<u8>)>,
    }

    impl Sim {
        fn new(n: u8) -> Self {
            let start = Instant::now();
            let registry_addr: SocketAddr = "192.0.2.1:7000".parse().unwrap();
            let registry = Registry::new(
                crate::registry::server::tests::registry_identity(),
                Box::new(MemoryStore::new()),
                Limits::default(),
                T0,
            )
            .unwrap();
            let clients = (1..=n)
                .map(|i| {
                    let id = Arc::new(Identity::from_seed([i; 32]));
                    let mut cfg = ClientConfig::new(vec![registry_addr]);
                    cfg.candidates = vec![SocketAddr::from(([10, 0, 0, i], 51820))];
                    let addr = SocketAddr::from(([203, 0, 113, i], 40000 + i as u16));
                    (Client::new(id, cfg, start, T0), addr)
                })
                .collect();
            let mut sim = Sim {
                registry,
                registry_addr,
                registry_up: true,
                clients,
                start,
                now: start,
                sent_to_registry: Vec::new(),
            };
            sim.run();
            sim
        }

        fn unix(&self) -> u64 {
            T0 + (self.now - self.start).as_millis() as u64
        }

        fn key(&self, i: usize) -> PublicKey {
            self.clients[i].0.public_key()
        }

        /// Delivers datagrams until nothing moves (bounded).
        fn run(&mut self) {
            for _ in 0..100 {
                let mut moved = false;
                let mut to_registry = Vec::new();
                let mut direct = Vec::new();
                for (c, addr) in &mut self.clients {
                    while let Some((to, bytes)) = c.poll_transmit() {
                        moved = true;
                        if to == self.registry_addr {
                            to_registry.push((*addr, bytes));
                        } else {
                            direct.push((*addr, to, bytes));
                        }
                    }
                }
                let now_ms = self.unix();
                for (from, bytes) in to_registry {
                    self.sent_to_registry
                        .push((self.now - self.start, bytes.clone()));
                    if !self.registry_up {
                        continue;
                    }
                    for (to, out) in self.registry.handle(now_ms, from, &bytes) {
                        if let Some((c, _)) = self.clients.iter_mut().find(|(_, a)| *a == to) {
                            c.handle_datagram(self.now, self.registry_addr, &out);
                        }
                    }
                }
                for (from, to, bytes) in direct {
                    if let Some((c, _)) = self.clients.iter_mut().find(|(_, a)| *a == to) {
                        c.handle_datagram(self.now, from, &bytes);
                    }
                }
                if !moved {
                    return;
                }
            }
            panic!("the simulation did not settle");
        }

        /// Moves the clock forward in steps of at most 500 ms, firing timers.
        fn advance(&mut self, d: Duration) {
            let end = self.now + d;
            while self.now < end {
                self.now = (self.now + Duration::from_millis(500)).min(end);
                let now = self.now;
                for (c, _) in &mut self.clients {
                    if c.poll_timeout().is_some_and(|t| t <= now) {
                        c.handle_timeout(now);
                    }
                }
                let ms = self.unix();
                self.registry.handle_timeout(ms);
                self.run();
            }
        }

        fn events(&mut self, i: usize) -> Vec<ClientEvent> {
            std::iter::from_fn(|| self.clients[i].0.poll_event()).collect()
        }
    }

    #[test]
    fn client_registers_and_learns_its_reflexive_address() {
        let mut sim = Sim::new(1);
        let ev = sim.events(0);
        let reg = sim.registry_addr;
        let addr = sim.clients[0].1;
        assert_eq!(
            ev,
            vec![
                ClientEvent::Registered { registry: reg },
                ClientEvent::ReflexiveAddress {
                    registry: reg,
                    addr
                }
            ]
        );
        assert!(sim.clients[0].0.is_registered());
        assert_eq!(sim.clients[0].0.reflexive_address(), Some(addr));
    }

    #[test]
    fn client_heartbeats_at_most_every_25_seconds() {
        let mut sim = Sim::new(1);
        sim.advance(Duration::from_secs(100));
        let beats: Vec<Duration> = sim
            .sent_to_registry
            .iter()
            .filter(|(_, b)| b[2] == 0x02)
            .map(|(t, _)| *t)
            .collect();
        assert!(beats.len() >= 4, "{beats:?}");
        assert!(beats[0] <= Duration::from_secs(25));
        for w in beats.windows(2) {
            assert!(w[1] - w[0] <= Duration::from_secs(25));
        }
        assert!(sim.registry.is_online(&sim.key(0), sim.unix()));
    }

    #[test]
    fn client_re_registers_after_registry_restart() {
        let mut sim = Sim::new(1);
        sim.clients[0]
            .0
            .set_hostname(sim.now, Hostname::new("worker-node").unwrap());
        sim.run();
        sim.events(0);
        // The registry restarts from an empty store: no presence, no names.
        let restarted_at = sim.unix();
        sim.registry = Registry::new(
            crate::registry::server::tests::registry_identity(),
            Box::new(MemoryStore::new()),
            Limits::default(),
            restarted_at,
        )
        .unwrap();
        sim.advance(Duration::from_secs(25));
        let ev = sim.events(0);
        assert!(
            ev.contains(&ClientEvent::RegistryLost {
                registry: sim.registry_addr
            }),
            "{ev:?}"
        );
        assert!(
            ev.contains(&ClientEvent::Registered {
                registry: sim.registry_addr
            }),
            "{ev:?}"
        );
        assert!(sim.registry.is_online(&sim.key(0), sim.unix()));
        // It claimed its hostname again when it registered.
        let name = Hostname::new("worker-node").unwrap();
        let op = sim.clients[0].0.lookup(sim.now, name);
        sim.run();
        assert!(sim
            .events(0)
            .iter()
            .any(|e| matches!(e, ClientEvent::LookupResult { op: o, .. } if *o == op)));
    }

    #[test]
    fn lookup_reports_key_and_address_or_not_found() {
        let mut sim = Sim::new(2);
        sim.clients[0]
            .0
            .set_hostname(sim.now, Hostname::new("worker-node").unwrap());
        sim.run();
        let op = sim.clients[1]
            .0
            .lookup(sim.now, Hostname::new("worker-node").unwrap());
        sim.run();
        let key0 = sim.key(0);
        let ev = sim.events(1);
        assert!(ev.contains(&ClientEvent::LookupResult {
            op,
            hostname: Hostname::new("worker-node").unwrap(),
            key: key0,
            addr48: key0.addr48(),
        }));
        let op = sim.clients[1]
            .0
            .lookup(sim.now, Hostname::new("nobody").unwrap());
        sim.run();
        let ev = sim.events(1);
        assert!(
            ev.iter().any(|e| matches!(e,
            ClientEvent::Failed { op: o, error } if *o == op && error.code() == ErrorCode::NotFound))
        );
    }

    #[test]
    fn hostname_taken_is_reported() {
        let mut sim = Sim::new(2);
        let name = Hostname::new("worker-node").unwrap();
        sim.clients[0].0.set_hostname(sim.now, name.clone());
        sim.run();
        let op = sim.clients[1].0.set_hostname(sim.now, name.clone());
        sim.run();
        let ev = sim.events(1);
        assert!(ev.contains(&ClientEvent::HostnameTaken {
            registry: sim.registry_addr,
            hostname: name
        }));
        assert!(ev.iter().any(|e| matches!(e,
            ClientEvent::Failed { op: o, error } if *o == op && error.code() == ErrorCode::AlreadyExists)));
    }

    /// Feeds client events into a trust store and its effects back into the client.
    fn apply_trust(sim: &mut Sim, i: usize, store: &mut TrustStore) -> Vec<TrustEffect> {
        let now_ms = sim.unix();
        let mut all = Vec::new();
        for ev in sim.events(i) {
            let fx = match ev {
                ClientEvent::TrustRequestReceived {
                    from,
                    hostname,
                    justification,
                    nonce,
                    sent_ms,
                } => store
                    .on_request(from, hostname, &justification, nonce, sent_ms, now_ms)
                    .unwrap(),
                ClientEvent::TrustResponseReceived {
                    from,
                    decision,
                    sent_ms,
                    ..
                } => store.on_response(from, decision, sent_ms, now_ms).unwrap(),
                _ => continue,
            };
            all.extend(fx);
        }
        for fx in &all {
            drive_effect(sim, i, fx);
        }
        all
    }

    fn drive_effect(sim: &mut Sim, i: usize, fx: &TrustEffect) {
        let now = sim.now;
        let c = &mut sim.clients[i].0;
        match fx {
            TrustEffect::SendRequest { to, justification } => {
                c.send_trust_request(now, *to, justification.clone());
            }
            TrustEffect::SendResponse {
                to,
                in_reply_to,
                decision,
                reason,
            } => {
                c.respond_trust(now, *to, *in_reply_to, *decision, reason.clone());
            }
            TrustEffect::Trusted(k) => c.set_trusted(*k, true),
            TrustEffect::Untrusted(k) => c.set_trusted(*k, false),
            _ => {}
        }
    }

    #[test]
    fn trust_request_and_approval_travel_through_the_registry_to_mutual_trust() {
        let mut sim = Sim::new(2);
        let (ka, kb) = (sim.key(0), sim.key(1));
        let mut a = TrustStore::in_memory(ka);
        let mut b = TrustStore::in_memory(kb);
        sim.events(0);
        sim.events(1);
        for fx in a.request(kb, None, "I run your jobs", sim.unix()).unwrap() {
            drive_effect(&mut sim, 0, &fx);
        }
        sim.run();
        let fx = apply_trust(&mut sim, 1, &mut b);
        assert!(
            matches!(&fx[..], [TrustEffect::AwaitingApproval { from, justification, .. }]
            if *from == ka && justification == "I run your jobs")
        );
        sim.advance(Duration::from_secs(1));
        for fx in b.approve(&ka, sim.unix()).unwrap() {
            drive_effect(&mut sim, 1, &fx);
        }
        sim.run();
        let fx = apply_trust(&mut sim, 0, &mut a);
        assert_eq!(fx, vec![TrustEffect::Trusted(kb)]);
        assert!(a.is_trusted(&kb) && b.is_trusted(&ka));
        // Everything was acknowledged: nothing stays held.
        assert_eq!(sim.registry.held_for(&ka), 0);
        assert_eq!(sim.registry.held_for(&kb), 0);
    }

    #[test]
    fn trust_request_for_an_offline_peer_arrives_when_it_comes_online() {
        let mut sim = Sim::new(2);
        let kb = sim.key(1);
        // Take b offline: it stops heartbeating and the registry forgets it.
        let b = sim.clients.pop().unwrap();
        sim.advance(Duration::from_secs(80));
        assert!(!sim.registry.is_online(&kb, sim.unix()));
        sim.clients[0]
            .0
            .send_trust_request(sim.now, kb, "hello".into());
        sim.run();
        assert_eq!(sim.registry.held_for(&kb), 1);
        // b comes back (a new process: it registers from scratch).
        let id = Arc::new(Identity::from_seed([2; 32]));
        let cfg = ClientConfig::new(vec![sim.registry_addr]);
        let unix = sim.unix();
        sim.clients.push((Client::new(id, cfg, sim.now, unix), b.1));
        sim.run();
        let ev = sim.events(1);
        assert!(ev.iter().any(|e| matches!(e,
            ClientEvent::TrustRequestReceived { justification, .. } if justification == "hello")));
        assert_eq!(sim.registry.held_for(&kb), 0);
    }

    #[test]
    fn endpoint_request_is_answered_only_when_the_target_trusts_the_asker() {
        let mut sim = Sim::new(2);
        let (ka, kb) = (sim.key(0), sim.key(1));
        sim.events(0);
        let op = sim.clients[0].0.request_endpoints(sim.now, kb);
        sim.run();
        assert_eq!(sim.clients[1].0.counters().untrusted_endpoint_requests, 1);
        sim.advance(Duration::from_secs(11));
        let ev = sim.events(0);
        assert!(
            ev.iter().any(|e| matches!(e,
            ClientEvent::Failed { op: o, error } if *o == op && error.code() == ErrorCode::Timeout)),
            "{ev:?}"
        );

        sim.clients[1].0.set_trusted(ka, true);
        let op = sim.clients[0].0.request_endpoints(sim.now, kb);
        sim.run();
        let ev = sim.events(0);
        let b_public = sim.clients[1].1;
        assert!(
            ev.contains(&ClientEvent::EndpointInfo {
                op,
                peer: kb,
                candidates: vec![b_public, "10.0.0.2:51820".parse().unwrap()],
                registry: sim.registry_addr,
            }),
            "{ev:?}"
        );
        let ev = sim.events(1);
        let a_public = sim.clients[0].1;
        assert!(
            ev.contains(&ClientEvent::EndpointRequested {
                from: ka,
                candidates: vec![a_public, "10.0.0.1:51820".parse().unwrap()],
                registry: sim.registry_addr,
            }),
            "{ev:?}"
        );
    }

    #[test]
    fn requests_are_retried_with_exponential_backoff_then_fail() {
        let mut sim = Sim::new(1);
        sim.events(0);
        sim.registry_up = false;
        sim.sent_to_registry.clear();
        let op = sim.clients[0]
            .0
            .lookup(sim.now, Hostname::new("worker-node").unwrap());
        sim.run();
        sim.advance(Duration::from_secs(40));
        let lookups: Vec<Duration> = sim
            .sent_to_registry
            .iter()
            .filter(|(_, b)| b[2] == 0x05)
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(lookups.len(), 5, "{lookups:?}");
        let gaps: Vec<u64> = lookups
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs())
            .collect();
        assert_eq!(gaps, vec![1, 2, 4, 8]);
        // Each retry is a fresh signed request (new nonce), never a replay.
        let nonces: HashSet<&[u8]> = sim
            .sent_to_registry
            .iter()
            .filter(|(_, b)| b[2] == 0x05)
            .map(|(_, b)| &b[35..51])
            .collect();
        assert_eq!(nonces.len(), 5);
        let ev = sim.events(0);
        assert!(ev.iter().any(|e| matches!(e,
            ClientEvent::Failed { op: o, error } if *o == op && error.code() == ErrorCode::Timeout)));
        // Heartbeats went unanswered too: the registry is lost and registration retries are
        // spaced by a backoff capped at 30 s.
        assert!(ev.contains(&ClientEvent::RegistryLost {
            registry: sim.registry_addr
        }));
        sim.sent_to_registry.clear();
        sim.advance(Duration::from_secs(300));
        let registers: Vec<Duration> = sim
            .sent_to_registry
            .iter()
            .filter(|(_, b)| b[2] == 0x01)
            .map(|(t, _)| *t)
            .collect();
        assert!(registers.len() < 20, "{registers:?}");
        for w in registers.windows(2) {
            assert!(w[1] - w[0] <= Duration::from_secs(31));
        }
        // When the registry is back, the client registers again.
        sim.registry_up = true;
        sim.advance(Duration::from_secs(31));
        assert!(sim.registry.is_online(&sim.key(0), sim.unix()));
    }

    #[test]
    fn clock_skew_is_corrected_from_the_registrys_answer() {
        let mut sim = Sim::new(0);
        let id = Arc::new(Identity::from_seed([9; 32]));
        let cfg = ClientConfig::new(vec![sim.registry_addr]);
        // This client's clock is five minutes fast.
        let fast = sim.unix() + 300_000;
        let addr: SocketAddr = "203.0.113.9:1000".parse().unwrap();
        sim.clients
            .push((Client::new(id, cfg, sim.now, fast), addr));
        sim.run();
        assert!(sim.clients[0].0.is_registered());
        assert_eq!(sim.registry.counters().stale, 1);
    }

    #[test]
    fn trust_messages_can_go_directly_to_a_reachable_peer() {
        let mut sim = Sim::new(2);
        let kb = sim.key(1);
        sim.events(1);
        let bytes = sim.clients[0]
            .0
            .sign_direct(
                sim.now,
                RequestBody::TrustRequest {
                    target: kb,
                    justification: "direct".into(),
                },
            )
            .unwrap();
        let from = sim.clients[0].1;
        sim.clients[1].0.handle_datagram(sim.now, from, &bytes);
        // The same datagram again (a replay) is reported once.
        sim.clients[1].0.handle_datagram(sim.now, from, &bytes);
        let ev = sim.events(1);
        assert_eq!(ev.len(), 1);
        assert!(
            matches!(&ev[0], ClientEvent::TrustRequestReceived { justification, .. } if justification == "direct")
        );
        assert!(sim.clients[0]
            .0
            .sign_direct(sim.now, RequestBody::Heartbeat)
            .is_none());
    }

    proptest::proptest! {
        #[test]
        fn client_never_panics_on_random_datagrams(
            datagrams in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), 1..20),
            magic in proptest::prelude::any::<bool>(),
        ) {
            let mut sim = Sim::new(1);
            let reg = sim.registry_addr;
            for mut d in datagrams {
                if magic && d.len() >= 2 {
                    d[0] = 0x50;
                    d[1] = 1;
                }
                sim.clients[0].0.handle_datagram(sim.now, reg, &d);
            }
            sim.advance(Duration::from_secs(1));
        }
    }

    #[test]
    fn the_registry_key_is_learned_on_first_use_and_enforced_after() {
        let mut sim = Sim::new(1);
        let reg = sim.registry_addr;
        let key = crate::registry::server::tests::registry_identity().public_key();
        assert_eq!(sim.clients[0].0.registry_key(reg), Some(key));
        // An answer signed by anyone else is dropped.
        let impostor = Identity::from_seed([77; 32]);
        let forged = Response {
            in_reply_to: [0; 16],
            body: ResponseBody::Error {
                status: Status::UnknownNode,
                registry_time_ms: 0,
                message: String::new(),
            },
        }
        .encode_signed(&impostor)
        .unwrap();
        sim.clients[0].0.handle_datagram(sim.now, reg, &forged);
        assert_eq!(sim.clients[0].0.counters().bad_signature, 1);
    }

    #[test]
    fn a_registry_that_does_not_sign_with_the_pinned_key_is_never_believed() {
        let mut sim = Sim::new(0);
        let id = Arc::new(Identity::from_seed([9; 32]));
        let mut cfg = ClientConfig::new(vec![sim.registry_addr]);
        cfg.pinned_keys.insert(
            sim.registry_addr,
            Identity::from_seed([78; 32]).public_key(),
        );
        let addr: SocketAddr = "203.0.113.9:1000".parse().unwrap();
        let unix = sim.unix();
        sim.clients
            .push((Client::new(id, cfg, sim.now, unix), addr));
        sim.run();
        assert!(!sim.clients[0].0.is_registered());
        assert!(sim.clients[0].0.counters().bad_signature >= 1);
    }

    #[test]
    fn registry_specs_may_pin_a_key() {
        let key = Identity::from_seed([1; 32]).public_key();
        assert_eq!(
            parse_registry_spec("registry.example:7000").unwrap(),
            ("registry.example:7000".to_string(), None)
        );
        assert_eq!(
            parse_registry_spec(&format!("192.0.2.1:7000#{key}")).unwrap(),
            ("192.0.2.1:7000".to_string(), Some(key))
        );
        assert!(parse_registry_spec("192.0.2.1:7000#nope").is_err());
        assert!(parse_registry_spec("no-port").is_err());
    }

    #[test]
    fn client_errors_carry_one_code_and_hint() {
        let reg: SocketAddr = "192.0.2.1:7000".parse().unwrap();
        let e: PilotError = ClientError::Refused {
            registry: reg,
            status: Status::AlreadyExists,
            message: "hostname taken".into(),
        }
        .into();
        assert_eq!(e.code, ErrorCode::AlreadyExists);
        assert!(e.message.contains("192.0.2.1:7000"), "{e:?}");
        assert_eq!(e.hint, "choose another hostname");
        let t = ClientError::RegistryTimeout {
            registry: reg,
            attempts: 5,
        };
        assert!(t.is_timeout());
        assert_eq!(PilotError::from(t).code, ErrorCode::Timeout);
        assert_eq!(
            PilotError::from(ClientError::NoRegistry).code,
            ErrorCode::ConnectionFailed
        );
        let bad = PilotError::from(parse_registry_spec("no-port").unwrap_err());
        assert_eq!(bad.code, ErrorCode::InvalidArgument);
        assert!(bad.hint.contains("HOST:PORT"));
    }

    #[test]
    fn forged_pushes_are_refused() {
        let mut sim = Sim::new(2);
        let kb = sim.key(1);
        sim.events(1);
        // A push whose inner request is signed by someone other than its sender field.
        let mallory = Identity::from_seed([66; 32]);
        let mut inner = Request {
            header: Header {
                sender: mallory.public_key(),
                nonce: [1; 16],
                timestamp_ms: sim.unix(),
            },
            body: RequestBody::TrustRequest {
                target: kb,
                justification: "trust me".into(),
            },
        }
        .encode_signed(&mallory)
        .unwrap();
        let victim = sim.key(0);
        inner[3..35].copy_from_slice(victim.as_bytes());
        let push = Response {
            in_reply_to: [1; 16],
            body: ResponseBody::PushTrustRequest {
                hostname: None,
                original: inner,
            },
        }
        .encode_signed(&crate::registry::server::tests::registry_identity())
        .unwrap();
        let reg = sim.registry_addr;
        sim.clients[1].0.handle_datagram(sim.now, reg, &push);
        assert!(sim.events(1).is_empty());
        assert_eq!(sim.clients[1].0.counters().bad_push, 1);
        // Answers from an address that is not a registry are ignored.
        sim.clients[1]
            .0
            .handle_datagram(sim.now, "192.0.2.99:1".parse().unwrap(), &push);
        assert_eq!(sim.clients[1].0.counters().unmatched, 1);
        sim.clients[1]
            .0
            .handle_datagram(sim.now, reg, b"P\x01\x80junk");
        assert_eq!(sim.clients[1].0.counters().garbage, 1);
    }
}
