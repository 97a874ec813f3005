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
//! - learns its clock skew from a registry's `stale_timestamp` answer and corrects for it
//!   (bounded by [`ClientConfig::max_clock_offset`]);
//! - believes an answer only if it matches a request in flight to that registry (by nonce,
//!   checked before any signature) and is signed by the registry's key: pinned in the config,
//!   or learned from the first `Registered` answer to one of our registrations and remembered
//!   ([`LearnedKeys`]); a key, once known, changes only by operator action;
//! - checks every pushed trust message's own signature (the registry cannot forge one),
//!   acknowledges pushes so the registry stops holding them, and reports each once;
//! - answers endpoint requests only from peers the daemon marked trusted
//!   ([`Client::set_trusted`]); others are ignored and counted.
//!
//! Time: every call takes a monotonic `Instant`; wall-clock milliseconds (for request
//! timestamps) are derived from the pair given to [`Client::new`] and refreshed with
//! [`Client::sync_clock`].
//!
//! # Modules
//! `config` (what the client is given), `error` ([`ClientError`]), `event` (what it reports),
//! `keys` (registry keys learned on first use, persisted), `requests` (requests in flight,
//! retries, outcomes) and `pushes` (what registries push).

mod authenticity;
mod config;
mod discovery;
mod error;
mod event;
mod home;
#[cfg(test)]
mod home_tests;
mod keys;
mod pushes;
mod requests;
mod status;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use self::config::{
    parse_registry_spec, ClientConfig, RegistrySpecError, DEFAULT_MAX_CLOCK_OFFSET,
};
pub use self::error::ClientError;
pub use self::event::{ClientCounters, ClientEvent, NodeInfo, OpId};
pub use self::keys::{KeysFileError, LearnedKeys, REGISTRY_KEYS_FILE};
pub use self::status::RegistryStatus;

use self::authenticity::initial_key;
use crate::identity::{Identity, PublicKey};
use crate::mapping::Hostname;
use crate::node::views::{RegistryKeySource, RegistryKeyView};
use rand_core::RngCore;

use crate::wire::registry::{Nonce, RequestBody, Response, ResponseBody, TrustDecision};

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
    /// When the last copy went out (a round trip is measured on answers to a first copy).
    sent_at: Instant,
}

#[derive(Debug, Clone)]
enum OpKind {
    Lookup(Hostname),
    SetHostname(Hostname),
    ReleaseHostname,
    TrustMessage,
    EndpointRequest(PublicKey),
    SetTags,
    Deregister,
    LookupNode(crate::mapping::PeerRef),
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
    /// The registry that forwarded our request (only it may bring the answer).
    registry: usize,
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
    /// Where `key` came from.
    source: KeySource,
    /// Whether we already logged that the registry answers with another key than `key`.
    warned_other_key: bool,
    /// The registry's latest return-routability cookie for our address, echoed in Register.
    cookie: Option<crate::wire::registry::Cookie>,
    /// The last round trip of a registration or heartbeat answered at its first copy.
    rtt: Option<Duration>,
    /// When the oldest request sent since the registry's latest answer went out.
    unanswered_since: Option<Instant>,
    /// False once a request stayed unanswered for `home_timeout` (until the next answer).
    answering: bool,
    /// Registered and answering, as last reported ([`ClientEvent::RelayUsable`]).
    usable: bool,
}

/// Where a registry's key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeySource {
    /// Not known yet: learned from the first `Registered` answer to our registration.
    Unknown,
    /// From the configuration (`HOST:PORT#KEY`).
    Pinned,
    /// Learned on first use and remembered in the state directory (now or in an earlier run).
    Persisted,
    /// Learned on first use, but saving it failed: believed for this run, yet hostnames it
    /// vouches for do not count for the allow-list.
    Unsaved,
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
    /// Our home relay (see `home`).
    home: Option<SocketAddr>,
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
            .map(|&addr| {
                let (key, source) = initial_key(&config, addr);
                RegistryState {
                    addr,
                    registered: false,
                    next_heartbeat: None,
                    reflexive: None,
                    offset_ms: 0,
                    key,
                    source,
                    warned_other_key: false,
                    cookie: None,
                    rtt: None,
                    unanswered_since: None,
                    answering: true,
                    usable: false,
                }
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
            home: None,
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

    /// Whether `registry`'s key comes from the configuration.
    pub fn registry_key_pinned(&self, registry: SocketAddr) -> bool {
        self.registries
            .iter()
            .any(|r| r.addr == registry && r.source == KeySource::Pinned)
    }

    /// Every configured registry with its key and where that key comes from.
    pub fn registry_keys(&self) -> Vec<RegistryKeyView> {
        self.registries
            .iter()
            .map(|r| RegistryKeyView {
                registry: r.addr,
                key: r.key,
                source: match r.source {
                    KeySource::Unknown => RegistryKeySource::Unknown,
                    KeySource::Pinned => RegistryKeySource::Pinned,
                    KeySource::Persisted => RegistryKeySource::Learned,
                    KeySource::Unsaved => RegistryKeySource::Unsaved,
                },
            })
            .collect()
    }

    /// Forgets the key learned for `registry` (operator action, e.g. after the registry's key
    /// really changed) and registers with it again, learning its key anew on first use. A
    /// pinned key is never forgotten: change the configuration instead.
    pub fn forget_registry_key(
        &mut self,
        now: Instant,
        registry: SocketAddr,
    ) -> Result<(), KeysFileError> {
        let Some(reg) = self.registries.iter().position(|r| r.addr == registry) else {
            return Ok(());
        };
        if self.registries[reg].source == KeySource::Pinned {
            return Ok(());
        }
        self.config.learned_keys.forget(&registry)?;
        let r = &mut self.registries[reg];
        r.key = None;
        r.source = KeySource::Unknown;
        r.warned_other_key = false;
        self.lose_registry(reg, now);
        Ok(())
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
        let home = self.home_deadline();
        retries.chain(beats).chain(waits).chain(home).min()
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
            home: self.home,
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
        if !self.authentic(reg, &resp, bytes) {
            return;
        }
        self.note_answer(reg);
        self.handle_response(now, reg, resp);
        self.refresh_home(now);
    }

    /// An authentic answer or push from registry `reg`.
    fn handle_response(&mut self, now: Instant, reg: usize, resp: Response) {
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
        self.refresh_home(now);
    }
}
