//! The registry state machine, sans-IO: [`Registry::handle`] takes the current time (unix ms),
//! the sender's address and a datagram, and returns the datagrams to send;
//! [`Registry::handle_timeout`] expires state. No sockets, no clock, no tokio: the tokio driver
//! is [`super::runner`], and tests drive this in memory.
//!
//! # Rules
//! - A request is processed only if its signature verifies, its timestamp is within
//!   [`Limits::max_clock_skew_ms`] of our clock (and not older than our own start, since the
//!   nonces seen before a restart are forgotten), and its nonce was not seen in that window.
//!   Garbage, bad signatures and replays are dropped silently (answering them would help
//!   reflection attacks) and counted; a stale timestamp is answered with our clock so an honest
//!   node can correct its skew.
//! - A hostname belongs to the first key that claims it until that key releases it or claims
//!   another; a second key gets `already_exists`. A key holds at most one hostname.
//! - Lookups are exact-name only (there is no listing) and rate-limited per key (token bucket);
//!   they return key and address, never an endpoint.
//! - Trust requests and responses are held per (target, sender, kind), pushed at once when the
//!   target is online (heartbeat within [`Limits::online_timeout_ms`]), pushed again on each of
//!   its heartbeats until it acknowledges them with `Delivered`, and dropped after
//!   [`Limits::held_expiry_ms`]. At most [`Limits::held_per_target`] per target.
//! - An endpoint request is forwarded to an online target only; the target answers it only if it
//!   trusts the asker, and the registry forwards an answer only for a request it forwarded.
//! - All datagrams from one source IP share a token bucket, checked before any signature work.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::store::{HeldKind, HeldMessage, Snapshot, Store, StoreError, StoreOp};
use crate::identity::{Identity, PublicKey};
use crate::mapping::{Addr48, Hostname};
use crate::wire::registry::{
    HostnameStatus, Nonce, Request, RequestBody, Response, ResponseBody, Status, WireError,
};
use crate::wire::relay;
use std::sync::Arc;

/// Tunable bounds of a registry. Every table it keeps in memory is bounded by one of these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// How far a request's timestamp may be from our clock, either way (ms).
    pub max_clock_skew_ms: u64,
    /// A node is online if it registered or heartbeat within this time (ms).
    pub online_timeout_ms: u64,
    /// Most presence records (online nodes).
    pub max_nodes: usize,
    /// Most nonces remembered; beyond it new requests are refused (fail closed).
    pub max_nonces: usize,
    /// Most messages held for one target.
    pub held_per_target: usize,
    /// Most messages held in total.
    pub held_total: usize,
    /// How long a held message waits for its target (ms).
    pub held_expiry_ms: u64,
    /// Lookups and endpoint requests per key: bucket size.
    pub query_burst: u32,
    /// Lookups and endpoint requests per key: tokens per second.
    pub query_per_sec: u32,
    /// Datagrams per source IP: bucket size.
    pub ip_burst: u32,
    /// Datagrams per source IP: tokens per second.
    pub ip_per_sec: u32,
    /// Most source IPs tracked for rate limiting (idle ones are forgotten each second);
    /// datagrams from further new IPs are dropped.
    pub max_tracked_ips: usize,
    /// How long a forwarded endpoint request may wait for its answer (ms).
    pub endpoint_answer_timeout_ms: u64,
    /// How long a successful endpoint exchange allows the pair to relay through us (ms);
    /// every new exchange renews it.
    pub relay_pair_ttl_ms: u64,
    /// Most pairs allowed to relay at once.
    pub max_relay_pairs: usize,
    /// Relayed datagrams per sending node: bucket size.
    pub relay_packet_burst: u32,
    /// Relayed datagrams per sending node: per second.
    pub relay_packets_per_sec: u32,
    /// Relayed payload bytes per sending node: bucket size.
    pub relay_byte_burst: u32,
    /// Relayed payload bytes per sending node: per second.
    pub relay_bytes_per_sec: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_clock_skew_ms: 60_000,
            online_timeout_ms: 75_000,
            max_nodes: 100_000,
            max_nonces: 1_000_000,
            held_per_target: 64,
            held_total: 100_000,
            held_expiry_ms: 7 * 24 * 3600 * 1000,
            query_burst: 10,
            query_per_sec: 1,
            ip_burst: 200,
            ip_per_sec: 50,
            max_tracked_ips: 1_000_000,
            endpoint_answer_timeout_ms: 30_000,
            relay_pair_ttl_ms: 10 * 60 * 1000,
            max_relay_pairs: 1_000_000,
            relay_packet_burst: 4096,
            relay_packets_per_sec: 20_000,
            relay_byte_burst: 4 << 20,
            relay_bytes_per_sec: 25_000_000,
        }
    }
}

/// What the registry did with the datagrams it got. Exposed for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Requests processed (whatever the answer).
    pub accepted: u64,
    /// Datagrams that do not decode.
    pub garbage: u64,
    /// Requests whose signature does not verify.
    pub bad_signature: u64,
    /// Requests whose nonce was seen before.
    pub replayed: u64,
    /// Requests whose timestamp is outside the window.
    pub stale: u64,
    /// Datagrams or queries over their rate limit.
    pub rate_limited: u64,
    /// Valid requests answered with an error (name taken, queue full, unknown node ...).
    pub refused: u64,
    /// Trust messages pushed (including re-pushes).
    pub pushed: u64,
    /// Held messages that expired undelivered.
    pub expired: u64,
    /// Datagrams relayed between nodes.
    pub relayed_packets: u64,
    /// Payload bytes relayed between nodes.
    pub relayed_bytes: u64,
    /// Relay frames refused: unknown sender address, unknown or offline target, no endpoint
    /// exchange between the pair, or malformed.
    pub relay_refused: u64,
    /// Relay frames dropped over the sender's packet or byte budget.
    pub relay_limited: u64,
}

/// A token bucket in milli-tokens, refilled from the time passed in.
#[derive(Debug, Clone)]
struct Bucket {
    milli: u64,
    last_ms: u64,
}

impl Bucket {
    fn full(burst: u32, now_ms: u64) -> Self {
        Bucket {
            milli: burst as u64 * 1000,
            last_ms: now_ms,
        }
    }

    /// Takes one token if there is one.
    fn take(&mut self, burst: u32, per_sec: u32, now_ms: u64) -> bool {
        self.take_n(1, burst, per_sec, now_ms)
    }

    /// Takes `n` tokens if there are that many.
    fn take_n(&mut self, n: u64, burst: u32, per_sec: u32, now_ms: u64) -> bool {
        let cap = burst as u64 * 1000;
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.milli = (self.milli + elapsed.saturating_mul(per_sec as u64)).min(cap);
        self.last_ms = now_ms.max(self.last_ms);
        if self.milli >= n * 1000 {
            self.milli -= n * 1000;
            true
        } else {
            false
        }
    }

    fn is_full_at(&self, burst: u32, per_sec: u32, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.milli + elapsed.saturating_mul(per_sec as u64) >= burst as u64 * 1000
    }
}

/// Presence of a node: where its datagrams come from and when it was last heard.
#[derive(Debug, Clone)]
struct Presence {
    addr: SocketAddr,
    last_seen_ms: u64,
}

/// A held message in memory (the store has the same record).
#[derive(Debug, Clone)]
struct Held {
    from: PublicKey,
    kind: HeldKind,
    received_ms: u64,
    nonce: Nonce,
    original: Vec<u8>,
}

/// An endpoint request forwarded and not yet answered.
#[derive(Debug, Clone)]
struct PendingEndpoint {
    asker: PublicKey,
    target: PublicKey,
    expires_ms: u64,
}

type HeldKey = ([u8; 32], [u8; 32], u8);

/// An unordered pair of keys (the smaller first).
type Pair = ([u8; 32], [u8; 32]);

fn pair(a: &PublicKey, b: &PublicKey) -> Pair {
    let (a, b) = (*a.as_bytes(), *b.as_bytes());
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

/// A node's relay budget: packets and bytes.
#[derive(Debug, Clone)]
struct RelayBudget {
    packets: Bucket,
    bytes: Bucket,
}

/// Datagrams to send: (destination, bytes).
pub type Transmits = Vec<(SocketAddr, Vec<u8>)>;

/// The registry core.
pub struct Registry {
    limits: Limits,
    identity: Arc<Identity>,
    store: Box<dyn Store>,
    started_ms: u64,
    presence: HashMap<PublicKey, Presence>,
    names: HashMap<Hostname, PublicKey>,
    owner: HashMap<PublicKey, Hostname>,
    held: BTreeMap<HeldKey, Held>,
    nonces: HashMap<Nonce, u64>,
    query_buckets: HashMap<PublicKey, Bucket>,
    ip_buckets: HashMap<IpAddr, Bucket>,
    endpoint_requests: HashMap<Nonce, PendingEndpoint>,
    /// Presence address → key (who sends a relay frame is known by its address).
    by_addr: HashMap<SocketAddr, PublicKey>,
    /// addr48 → key of online nodes (relay frames name their target by addr48).
    by_addr48: HashMap<Addr48, PublicKey>,
    /// Pairs allowed to relay, until (unix ms).
    relay_pairs: HashMap<Pair, u64>,
    relay_budgets: HashMap<PublicKey, RelayBudget>,
    counters: Counters,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("online", &self.presence.len())
            .field("names", &self.names.len())
            .field("held", &self.held.len())
            .field("counters", &self.counters)
            .finish()
    }
}

/// Nonces of pushes are their originals' nonces, found at a fixed offset of a request.
fn original_nonce(original: &[u8]) -> Nonce {
    let mut n = [0u8; 16];
    if let Some(s) = original.get(35..51) {
        n.copy_from_slice(s);
    }
    n
}

impl Registry {
    /// A registry over `store`, loading what it persisted. `now_ms` is the start time: requests
    /// signed before it are refused (the nonces seen before a restart are not remembered).
    pub fn new(
        identity: Arc<Identity>,
        store: Box<dyn Store>,
        limits: Limits,
        now_ms: u64,
    ) -> Result<Self, StoreError> {
        let Snapshot { names, held } = store.load()?;
        let mut r = Registry {
            limits,
            store,
            identity,
            started_ms: now_ms,
            presence: HashMap::new(),
            names: HashMap::new(),
            owner: HashMap::new(),
            held: BTreeMap::new(),
            nonces: HashMap::new(),
            query_buckets: HashMap::new(),
            ip_buckets: HashMap::new(),
            endpoint_requests: HashMap::new(),
            by_addr: HashMap::new(),
            by_addr48: HashMap::new(),
            relay_pairs: HashMap::new(),
            relay_budgets: HashMap::new(),
            counters: Counters::default(),
        };
        for (name, key) in names {
            r.owner.insert(key, name.clone());
            r.names.insert(name, key);
        }
        for m in held {
            r.held.insert(
                (*m.target.as_bytes(), *m.from.as_bytes(), m.kind.to_byte()),
                Held {
                    from: m.from,
                    kind: m.kind,
                    received_ms: m.received_ms,
                    nonce: original_nonce(&m.original),
                    original: m.original,
                },
            );
        }
        Ok(r)
    }

    /// The counters so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// How many messages are held for `target`.
    pub fn held_for(&self, target: &PublicKey) -> usize {
        self.held_range(target).count()
    }

    /// Whether `key` is online at `now_ms`.
    pub fn is_online(&self, key: &PublicKey, now_ms: u64) -> bool {
        self.presence
            .get(key)
            .is_some_and(|p| p.last_seen_ms + self.limits.online_timeout_ms >= now_ms)
    }

    /// Handles one datagram from `from` at `now_ms` (unix ms); returns what to send.
    pub fn handle(&mut self, now_ms: u64, from: SocketAddr, bytes: &[u8]) -> Transmits {
        if relay::is_relay(bytes) {
            // Relay frames have their own per-node budgets (a relayed transfer would exhaust
            // the per-IP request bucket at once) and cost no signature work.
            return self.relay(now_ms, from, bytes);
        }
        let (burst, per_sec) = (self.limits.ip_burst, self.limits.ip_per_sec);
        if !self.ip_buckets.contains_key(&from.ip())
            && self.ip_buckets.len() >= self.limits.max_tracked_ips
        {
            self.counters.rate_limited += 1;
            return Vec::new();
        }
        let bucket = self
            .ip_buckets
            .entry(from.ip())
            .or_insert_with(|| Bucket::full(burst, now_ms));
        if !bucket.take(burst, per_sec, now_ms) {
            self.counters.rate_limited += 1;
            return Vec::new();
        }
        let req = match Request::decode_verified(bytes) {
            Ok(r) => r,
            Err(WireError::BadSignature) => {
                self.counters.bad_signature += 1;
                return Vec::new();
            }
            Err(_) => {
                self.counters.garbage += 1;
                return Vec::new();
            }
        };
        let h = &req.header;
        let skew = self.limits.max_clock_skew_ms;
        if h.timestamp_ms.saturating_add(skew) < now_ms
            || h.timestamp_ms > now_ms.saturating_add(skew)
            || h.timestamp_ms < self.started_ms
        {
            self.counters.stale += 1;
            let msg = format!(
                "timestamp {} is outside the accepted window around {now_ms} (±{skew} ms); check the clock",
                h.timestamp_ms
            );
            return vec![(
                from,
                self.error(h.nonce, Status::StaleTimestamp, now_ms, msg),
            )];
        }
        if self.nonces.contains_key(&h.nonce) {
            self.counters.replayed += 1;
            return Vec::new();
        }
        if self.nonces.len() >= self.limits.max_nonces {
            self.counters.rate_limited += 1;
            return Vec::new();
        }
        // Remember the nonce until its timestamp leaves the window.
        self.nonces
            .insert(h.nonce, h.timestamp_ms.saturating_add(skew));
        self.counters.accepted += 1;
        // Any signed request from a node we know proves where it is now (its NAT mapping may
        // have changed since its last heartbeat): relayed traffic follows at once.
        if let Some(p) = self.presence.get(&req.header.sender) {
            if p.addr != from {
                self.touch(req.header.sender, from, now_ms);
            }
        }
        let out = self.dispatch(now_ms, from, &req, bytes);
        for (_, b) in &out {
            if b.get(2) == Some(&0x82) {
                self.counters.refused += 1;
            }
        }
        out
    }

    /// Expires presence, nonces, rate-limit buckets, pending endpoint requests and held
    /// messages. Call about once a second.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        let online = self.limits.online_timeout_ms;
        self.presence
            .retain(|_, p| p.last_seen_ms + online >= now_ms);
        let presence = &self.presence;
        self.by_addr
            .retain(|a, k| presence.get(k).is_some_and(|p| p.addr == *a));
        self.by_addr48.retain(|_, k| presence.contains_key(k));
        self.relay_pairs.retain(|_, until| *until >= now_ms);
        let l = &self.limits;
        self.relay_budgets.retain(|_, b| {
            !(b.packets
                .is_full_at(l.relay_packet_burst, l.relay_packets_per_sec, now_ms)
                && b.bytes
                    .is_full_at(l.relay_byte_burst, l.relay_bytes_per_sec, now_ms))
        });
        self.nonces.retain(|_, exp| *exp >= now_ms);
        self.endpoint_requests.retain(|_, p| p.expires_ms >= now_ms);
        let l = &self.limits;
        self.query_buckets
            .retain(|_, b| !b.is_full_at(l.query_burst, l.query_per_sec, now_ms));
        self.ip_buckets
            .retain(|_, b| !b.is_full_at(l.ip_burst, l.ip_per_sec, now_ms));
        let expiry = self.limits.held_expiry_ms;
        let expired: Vec<HeldKey> = self
            .held
            .iter()
            .filter(|(_, h)| h.received_ms.saturating_add(expiry) < now_ms)
            .map(|(k, _)| *k)
            .collect();
        if expired.is_empty() {
            return;
        }
        let ops: Vec<StoreOp> = expired
            .iter()
            .filter_map(|k| {
                let h = self.held.get(k)?;
                Some(StoreOp::RemoveHeld {
                    target: PublicKey::from_bytes(k.0).ok()?,
                    from: h.from,
                    kind: h.kind,
                })
            })
            .collect();
        match self.store.apply(&ops) {
            Ok(()) => {
                for k in expired {
                    self.held.remove(&k);
                    self.counters.expired += 1;
                }
            }
            Err(e) => tracing::warn!("cannot expire held messages: {e}"),
        }
    }

    fn error(&self, nonce: Nonce, status: Status, now_ms: u64, message: String) -> Vec<u8> {
        encode(
            &self.identity,
            &Response {
                in_reply_to: nonce,
                body: ResponseBody::Error {
                    status,
                    registry_time_ms: now_ms,
                    message,
                },
            },
        )
    }

    fn dispatch(
        &mut self,
        now_ms: u64,
        from: SocketAddr,
        req: &Request,
        bytes: &[u8],
    ) -> Transmits {
        let sender = req.header.sender;
        let nonce = req.header.nonce;
        let identity = self.identity.clone();
        let reply = |body| {
            vec![(
                from,
                encode(
                    &identity,
                    &Response {
                        in_reply_to: nonce,
                        body,
                    },
                ),
            )]
        };
        let fail =
            |this: &Self, status, msg: String| vec![(from, this.error(nonce, status, now_ms, msg))];
        let ack = ResponseBody::Ack { observed: from };
        match &req.body {
            RequestBody::Register { hostname, .. } => {
                if !self.presence.contains_key(&sender)
                    && self.presence.len() >= self.limits.max_nodes
                {
                    return fail(self, Status::RateLimited, "the registry is full".into());
                }
                self.touch(sender, from, now_ms);
                let status = match hostname {
                    None => HostnameStatus::NotRequested,
                    Some(name) => match self.claim(sender, name) {
                        Ok(()) => HostnameStatus::Granted,
                        Err(Status::AlreadyExists) => HostnameStatus::Taken,
                        Err(s) => {
                            return fail(self, s, "cannot store the hostname".into());
                        }
                    },
                };
                let mut out = reply(ResponseBody::Registered {
                    observed: from,
                    hostname: status,
                    registry_key: self.identity.public_key(),
                });
                out.extend(self.pushes_for(&sender, from));
                out
            }
            RequestBody::Heartbeat => {
                if !self.presence.contains_key(&sender) {
                    return fail(
                        self,
                        Status::UnknownNode,
                        "this registry does not know the node (it restarted or the node was silent too long): register again".into(),
                    );
                }
                self.touch(sender, from, now_ms);
                let mut out = reply(ack);
                out.extend(self.pushes_for(&sender, from));
                out
            }
            RequestBody::SetHostname { hostname } => match self.claim(sender, hostname) {
                Ok(()) => reply(ack),
                Err(Status::AlreadyExists) => fail(
                    self,
                    Status::AlreadyExists,
                    format!("hostname {hostname} belongs to another key"),
                ),
                Err(s) => fail(self, s, "cannot store the hostname".into()),
            },
            RequestBody::ReleaseHostname => {
                if let Some(name) = self.owner.get(&sender).cloned() {
                    if self
                        .store
                        .apply(&[StoreOp::RemoveName { name: name.clone() }])
                        .is_err()
                    {
                        return fail(self, Status::Internal, "cannot store the release".into());
                    }
                    self.owner.remove(&sender);
                    self.names.remove(&name);
                }
                reply(ack)
            }
            RequestBody::Lookup { hostname } => {
                if !self.take_query(sender, now_ms) {
                    self.counters.rate_limited += 1;
                    return fail(
                        self,
                        Status::RateLimited,
                        "too many lookups; retry later".into(),
                    );
                }
                match self.names.get(hostname) {
                    Some(key) => reply(ResponseBody::LookupResult {
                        hostname: hostname.clone(),
                        key: *key,
                        addr48: key.addr48(),
                    }),
                    None => fail(self, Status::NotFound, format!("no node holds {hostname}")),
                }
            }
            RequestBody::TrustRequest { target, .. } => {
                self.hold(now_ms, from, req, bytes, *target, HeldKind::TrustRequest)
            }
            RequestBody::TrustResponse { target, .. } => {
                self.hold(now_ms, from, req, bytes, *target, HeldKind::TrustResponse)
            }
            RequestBody::EndpointRequest { target, .. } => {
                if !self.take_query(sender, now_ms) {
                    self.counters.rate_limited += 1;
                    return fail(
                        self,
                        Status::RateLimited,
                        "too many endpoint requests; retry later".into(),
                    );
                }
                let Some(to) = self.online_addr(target, now_ms) else {
                    return fail(self, Status::NotFound, format!("{target} is not online"));
                };
                if self.endpoint_requests.len() >= self.limits.max_nodes {
                    return fail(
                        self,
                        Status::RateLimited,
                        "too many endpoint requests".into(),
                    );
                }
                self.endpoint_requests.insert(
                    nonce,
                    PendingEndpoint {
                        asker: sender,
                        target: *target,
                        expires_ms: now_ms + self.limits.endpoint_answer_timeout_ms,
                    },
                );
                let push = Response {
                    in_reply_to: nonce,
                    body: ResponseBody::PushEndpointRequest {
                        observed: from,
                        original: bytes.to_vec(),
                    },
                };
                let mut out = reply(ack);
                out.push((to, encode(&self.identity, &push)));
                out
            }
            RequestBody::EndpointResponse {
                target,
                in_reply_to,
                ..
            } => {
                let answers = self
                    .endpoint_requests
                    .get(in_reply_to)
                    .is_some_and(|p| p.asker == *target && p.target == sender);
                if !answers {
                    return fail(
                        self,
                        Status::NotFound,
                        "no such endpoint request is waiting for an answer".into(),
                    );
                }
                self.endpoint_requests.remove(in_reply_to);
                let Some(to) = self.online_addr(target, now_ms) else {
                    return fail(self, Status::NotFound, format!("{target} is not online"));
                };
                // The target answered, so it trusts the asker, who asked, so it trusts the
                // target: the pair may relay through us for a while.
                let p = pair(&sender, target);
                if self.relay_pairs.contains_key(&p)
                    || self.relay_pairs.len() < self.limits.max_relay_pairs
                {
                    self.relay_pairs
                        .insert(p, now_ms + self.limits.relay_pair_ttl_ms);
                }
                let info = Response {
                    in_reply_to: *in_reply_to,
                    body: ResponseBody::EndpointInfo {
                        observed: from,
                        original: bytes.to_vec(),
                    },
                };
                let mut out = reply(ack);
                out.push((to, encode(&self.identity, &info)));
                out
            }
            RequestBody::Delivered { nonces } => {
                let done: Vec<(HeldKey, PublicKey, HeldKind)> = self
                    .held_range(&sender)
                    .filter(|(_, h)| nonces.contains(&h.nonce))
                    .map(|(k, h)| (*k, h.from, h.kind))
                    .collect();
                let ops: Vec<StoreOp> = done
                    .iter()
                    .map(|(_, from, kind)| StoreOp::RemoveHeld {
                        target: sender,
                        from: *from,
                        kind: *kind,
                    })
                    .collect();
                if !ops.is_empty() {
                    if self.store.apply(&ops).is_err() {
                        return fail(self, Status::Internal, "cannot store the delivery".into());
                    }
                    for (k, _, _) in done {
                        self.held.remove(&k);
                    }
                }
                reply(ack)
            }
        }
    }

    fn touch(&mut self, key: PublicKey, addr: SocketAddr, now_ms: u64) {
        let old = self.presence.insert(
            key,
            Presence {
                addr,
                last_seen_ms: now_ms,
            },
        );
        if let Some(old) = old {
            if old.addr != addr && self.by_addr.get(&old.addr) == Some(&key) {
                self.by_addr.remove(&old.addr);
            }
        }
        self.by_addr.insert(addr, key);
        self.by_addr48.insert(key.addr48(), key);
    }

    /// Whether `a` and `b` may relay through us now.
    pub fn relay_allowed(&self, a: &PublicKey, b: &PublicKey, now_ms: u64) -> bool {
        self.relay_pairs
            .get(&pair(a, b))
            .is_some_and(|until| *until >= now_ms)
    }

    /// Relays a `RelaySend` frame as a `RelayDeliver` to its target, if the sender (known by
    /// its address) and the target are online, the pair completed an endpoint exchange here,
    /// and the sender is within its budget. Refusals are silent and counted.
    fn relay(&mut self, now_ms: u64, from: SocketAddr, bytes: &[u8]) -> Transmits {
        let Some((to48, payload)) = relay::parse(bytes, relay::RELAY_SEND) else {
            self.counters.relay_refused += 1;
            return Vec::new();
        };
        let sender = self.by_addr.get(&from).copied();
        let target = self.by_addr48.get(&to48).copied();
        let (Some(sender), Some(target)) = (sender, target) else {
            self.counters.relay_refused += 1;
            return Vec::new();
        };
        let to = match self.online_addr(&target, now_ms) {
            Some(to) if self.is_online(&sender, now_ms) => to,
            _ => {
                self.counters.relay_refused += 1;
                return Vec::new();
            }
        };
        if !self.relay_allowed(&sender, &target, now_ms) {
            self.counters.relay_refused += 1;
            return Vec::new();
        }
        let l = &self.limits;
        let budget = self
            .relay_budgets
            .entry(sender)
            .or_insert_with(|| RelayBudget {
                packets: Bucket::full(l.relay_packet_burst, now_ms),
                bytes: Bucket::full(l.relay_byte_burst, now_ms),
            });
        let ok = budget
            .packets
            .take(l.relay_packet_burst, l.relay_packets_per_sec, now_ms)
            && budget.bytes.take_n(
                payload.len() as u64,
                l.relay_byte_burst,
                l.relay_bytes_per_sec,
                now_ms,
            );
        if !ok {
            self.counters.relay_limited += 1;
            return Vec::new();
        }
        self.counters.relayed_packets += 1;
        self.counters.relayed_bytes += payload.len() as u64;
        vec![(
            to,
            relay::frame(relay::RELAY_DELIVER, sender.addr48(), payload),
        )]
    }

    fn online_addr(&self, key: &PublicKey, now_ms: u64) -> Option<SocketAddr> {
        self.is_online(key, now_ms)
            .then(|| self.presence.get(key).map(|p| p.addr))
            .flatten()
    }

    fn take_query(&mut self, key: PublicKey, now_ms: u64) -> bool {
        let (burst, per_sec) = (self.limits.query_burst, self.limits.query_per_sec);
        self.query_buckets
            .entry(key)
            .or_insert_with(|| Bucket::full(burst, now_ms))
            .take(burst, per_sec, now_ms)
    }

    /// Binds `name` to `key` (releasing the key's previous name), unless another key holds it.
    fn claim(&mut self, key: PublicKey, name: &Hostname) -> Result<(), Status> {
        match self.names.get(name) {
            Some(k) if *k == key => return Ok(()),
            Some(_) => return Err(Status::AlreadyExists),
            None => {}
        }
        let mut ops = Vec::new();
        let old = self.owner.get(&key).cloned();
        if let Some(old) = &old {
            ops.push(StoreOp::RemoveName { name: old.clone() });
        }
        ops.push(StoreOp::SetName {
            name: name.clone(),
            key,
        });
        if let Err(e) = self.store.apply(&ops) {
            tracing::warn!("cannot store hostname {name}: {e}");
            return Err(Status::Internal);
        }
        if let Some(old) = old {
            self.names.remove(&old);
        }
        self.names.insert(name.clone(), key);
        self.owner.insert(key, name.clone());
        Ok(())
    }

    fn held_range<'a>(
        &'a self,
        target: &PublicKey,
    ) -> impl Iterator<Item = (&'a HeldKey, &'a Held)> {
        let t = *target.as_bytes();
        self.held.range((t, [0u8; 32], 0)..=(t, [0xffu8; 32], 0xff))
    }

    /// Holds a trust message for `target`, pushing it at once if the target is online.
    fn hold(
        &mut self,
        now_ms: u64,
        from: SocketAddr,
        req: &Request,
        bytes: &[u8],
        target: PublicKey,
        kind: HeldKind,
    ) -> Transmits {
        let sender = req.header.sender;
        let nonce = req.header.nonce;
        if target == sender {
            return vec![(
                from,
                self.error(
                    nonce,
                    Status::InvalidArgument,
                    now_ms,
                    "a node cannot address itself".into(),
                ),
            )];
        }
        let key = (*target.as_bytes(), *sender.as_bytes(), kind.to_byte());
        let replaces = self.held.contains_key(&key);
        if !replaces
            && (self.held_for(&target) >= self.limits.held_per_target
                || self.held.len() >= self.limits.held_total)
        {
            return vec![(
                from,
                self.error(
                    nonce,
                    Status::QueueFull,
                    now_ms,
                    format!("{target} has too many pending messages; retry later"),
                ),
            )];
        }
        let msg = HeldMessage {
            target,
            from: sender,
            kind,
            received_ms: now_ms,
            original: bytes.to_vec(),
        };
        if self.store.apply(&[StoreOp::PutHeld(msg)]).is_err() {
            return vec![(
                from,
                self.error(
                    nonce,
                    Status::Internal,
                    now_ms,
                    "cannot store the message".into(),
                ),
            )];
        }
        self.held.insert(
            key,
            Held {
                from: sender,
                kind,
                received_ms: now_ms,
                nonce,
                original: bytes.to_vec(),
            },
        );
        let mut out = vec![(
            from,
            encode(
                &self.identity,
                &Response {
                    in_reply_to: nonce,
                    body: ResponseBody::Ack { observed: from },
                },
            ),
        )];
        if let Some(to) = self.online_addr(&target, now_ms) {
            let hostname = self.owner.get(&sender).cloned();
            out.push((
                to,
                encode(&self.identity, &push(kind, hostname, nonce, bytes.to_vec())),
            ));
            self.counters.pushed += 1;
        }
        out
    }

    /// Every message held for `target`, as pushes to `to`.
    fn pushes_for(&mut self, target: &PublicKey, to: SocketAddr) -> Transmits {
        let out: Transmits = self
            .held_range(target)
            .map(|(_, h)| {
                let hostname = self.owner.get(&h.from).cloned();
                (
                    to,
                    encode(
                        &self.identity,
                        &push(h.kind, hostname, h.nonce, h.original.clone()),
                    ),
                )
            })
            .collect();
        self.counters.pushed += out.len() as u64;
        out
    }
}

fn push(kind: HeldKind, hostname: Option<Hostname>, nonce: Nonce, original: Vec<u8>) -> Response {
    Response {
        in_reply_to: nonce,
        body: match kind {
            HeldKind::TrustRequest => ResponseBody::PushTrustRequest { hostname, original },
            HeldKind::TrustResponse => ResponseBody::PushTrustResponse { hostname, original },
        },
    }
}

/// Encodes a response the registry built. Originals are datagrams we accepted (at most
/// [`crate::wire::registry::MAX_DATAGRAM`] minus a signed request's overhead), so this cannot exceed the bound for
/// the kinds we forward; if it ever did, an `internal` error goes out instead.
fn encode(identity: &Identity, r: &Response) -> Vec<u8> {
    r.encode_signed(identity).unwrap_or_else(|_| {
        Response {
            in_reply_to: r.in_reply_to,
            body: ResponseBody::Error {
                status: Status::Internal,
                registry_time_ms: 0,
                message: "response too large".into(),
            },
        }
        .encode_signed(identity)
        .expect("a short error always encodes")
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::registry::store::MemoryStore;
    use crate::wire::registry::{Header, TrustDecision};

    pub(crate) const T0: u64 = 1_750_000_000_000;

    /// The identity test registries sign with.
    pub(crate) fn registry_identity() -> Arc<Identity> {
        Arc::new(Identity::from_seed([200; 32]))
    }

    /// A node in a test: an identity, an address, and a nonce counter.
    pub(crate) struct TestNode {
        pub id: Identity,
        pub addr: SocketAddr,
        next: u64,
    }

    impl TestNode {
        pub fn new(seed: u8, port: u16) -> Self {
            TestNode {
                id: Identity::from_seed([seed; 32]),
                addr: SocketAddr::from(([198, 51, 100, seed], port)),
                next: 0,
            }
        }

        pub fn key(&self) -> PublicKey {
            self.id.public_key()
        }

        pub fn signed(&mut self, ts: u64, body: RequestBody) -> Vec<u8> {
            self.next += 1;
            let mut nonce = [0u8; 16];
            nonce[..8].copy_from_slice(&self.next.to_be_bytes());
            nonce[8..16].copy_from_slice(&self.key().as_bytes()[..8]);
            Request {
                header: Header {
                    sender: self.key(),
                    nonce,
                    timestamp_ms: ts,
                },
                body,
            }
            .encode_signed(&self.id)
            .unwrap()
        }
    }

    fn registry() -> Registry {
        Registry::new(
            registry_identity(),
            Box::new(MemoryStore::new()),
            Limits::default(),
            T0,
        )
        .unwrap()
    }

    fn send(
        r: &mut Registry,
        n: &mut TestNode,
        now: u64,
        body: RequestBody,
    ) -> Vec<(SocketAddr, Response)> {
        let bytes = n.signed(now, body);
        decode_all(r.handle(now, n.addr, &bytes))
    }

    fn decode_all(out: Transmits) -> Vec<(SocketAddr, Response)> {
        out.into_iter()
            .map(|(a, b)| (a, Response::decode(&b).expect("registry output decodes")))
            .collect()
    }

    fn register(
        r: &mut Registry,
        n: &mut TestNode,
        now: u64,
        name: Option<&str>,
    ) -> Vec<(SocketAddr, Response)> {
        send(
            r,
            n,
            now,
            RequestBody::Register {
                hostname: name.map(|s| Hostname::new(s).unwrap()),
                candidates: vec![],
            },
        )
    }

    fn status_of(resp: &Response) -> Option<Status> {
        match resp.body {
            ResponseBody::Error { status, .. } => Some(status),
            _ => None,
        }
    }

    fn trust_request(to: &TestNode) -> RequestBody {
        RequestBody::TrustRequest {
            target: to.key(),
            justification: "I orchestrate your jobs".into(),
        }
    }

    #[test]
    fn replayed_request_is_refused_and_counted() {
        let mut r = registry();
        let mut a = TestNode::new(1, 1000);
        let bytes = a.signed(
            T0,
            RequestBody::Register {
                hostname: None,
                candidates: vec![],
            },
        );
        assert_eq!(r.handle(T0, a.addr, &bytes).len(), 1);
        assert!(r.handle(T0 + 10, a.addr, &bytes).is_empty());
        assert!(r
            .handle(T0 + 20, "203.0.113.9:1".parse().unwrap(), &bytes)
            .is_empty());
        assert_eq!(r.counters().replayed, 2);
        assert_eq!(r.counters().accepted, 1);
    }

    #[test]
    fn replay_after_the_window_is_refused_as_stale() {
        let mut r = registry();
        let mut a = TestNode::new(1, 1000);
        let bytes = a.signed(
            T0,
            RequestBody::Register {
                hostname: None,
                candidates: vec![],
            },
        );
        r.handle(T0, a.addr, &bytes);
        r.handle_timeout(T0 + 61_000);
        let out = decode_all(r.handle(T0 + 61_000, a.addr, &bytes));
        assert_eq!(status_of(&out[0].1), Some(Status::StaleTimestamp));
        assert_eq!(r.counters().stale, 1);
    }

    #[test]
    fn stale_timestamp_is_refused_with_the_registry_clock() {
        let mut r = registry();
        let mut a = TestNode::new(1, 1000);
        let now = T0 + 200_000;
        for ts in [now - 60_001, now + 60_001, T0 - 1] {
            let bytes = a.signed(ts, RequestBody::Heartbeat);
            let out = decode_all(r.handle(now, a.addr, &bytes));
            match &out[0].1.body {
                ResponseBody::Error {
                    status: Status::StaleTimestamp,
                    registry_time_ms,
                    ..
                } => assert_eq!(*registry_time_ms, now),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(r.counters().stale, 3);
        assert_eq!(r.counters().accepted, 0);
        // Within the window is fine.
        assert!(!register(&mut r, &mut a, now - 59_000, None).is_empty());
    }

    #[test]
    fn forged_signature_is_refused_and_counted() {
        let mut r = registry();
        let victim = TestNode::new(1, 1000);
        let mut forger = TestNode::new(2, 1000);
        // The forger signs a message that claims to come from the victim.
        let mut bytes = forger.signed(T0, RequestBody::ReleaseHostname);
        bytes[3..35].copy_from_slice(victim.key().as_bytes());
        assert!(r.handle(T0, forger.addr, &bytes).is_empty());
        // And a message with its own key but a corrupted signature.
        let mut bytes = forger.signed(T0, RequestBody::Heartbeat);
        let n = bytes.len();
        bytes[n - 1] ^= 0x80;
        assert!(r.handle(T0, forger.addr, &bytes).is_empty());
        assert_eq!(r.counters().bad_signature, 2);
        assert!(r.handle(T0, forger.addr, b"P\x01\x02garbage").is_empty());
        assert!(r.handle(T0, forger.addr, b"").is_empty());
        assert_eq!(r.counters().garbage, 2);
        assert_eq!(r.counters().accepted, 0);
    }

    #[test]
    fn hostname_race_first_key_wins_and_after_release_the_second_can_take_it() {
        let mut r = registry();
        let mut a = TestNode::new(1, 1000);
        let mut b = TestNode::new(2, 1000);
        let out = register(&mut r, &mut a, T0, Some("worker-node"));
        assert!(matches!(
            out[0].1.body,
            ResponseBody::Registered {
                hostname: HostnameStatus::Granted,
                ..
            }
        ));
        let out = register(&mut r, &mut b, T0, Some("worker-node"));
        assert!(matches!(
            out[0].1.body,
            ResponseBody::Registered {
                hostname: HostnameStatus::Taken,
                ..
            }
        ));
        let name = Hostname::new("worker-node").unwrap();
        let out = send(
            &mut r,
            &mut b,
            T0,
            RequestBody::SetHostname {
                hostname: name.clone(),
            },
        );
        assert_eq!(status_of(&out[0].1), Some(Status::AlreadyExists));
        // Claiming again by the owner is fine and idempotent.
        let out = send(
            &mut r,
            &mut a,
            T0,
            RequestBody::SetHostname {
                hostname: name.clone(),
            },
        );
        assert_eq!(status_of(&out[0].1), None);

        send(&mut r, &mut a, T0 + 1, RequestBody::ReleaseHostname);
        let out = send(
            &mut r,
            &mut b,
            T0 + 2,
            RequestBody::SetHostname {
                hostname: name.clone(),
            },
        );
        assert!(matches!(out[0].1.body, ResponseBody::Ack { .. }));
        let out = send(
            &mut r,
            &mut a,
            T0 + 3,
            RequestBody::Lookup { hostname: name },
        );
        assert!(
            matches!(&out[0].1.body, ResponseBody::LookupResult { key, .. } if *key == b.key())
        );
    }

    #[test]
    fn claiming_a_new_hostname_releases_the_old_one() {
        let mut r = registry();
        let mut a = TestNode::new(1, 1000);
        let mut b = TestNode::new(2, 1000);
        register(&mut r, &mut a, T0, Some("old-name"));
        send(
            &mut r,
            &mut a,
            T0,
            RequestBody::SetHostname {
                hostname: Hostname::new("new-name").unwrap(),
            },
        );
        let out = register(&mut r, &mut b, T0, Some("old-name"));
        assert!(matches!(
            out[0].1.body,
            ResponseBody::Registered {
                hostname: HostnameStatus::Granted,
                ..
            }
        ));
    }

    #[test]
    fn lookup_returns_key_and_addr48_and_never_an_endpoint() {
        let mut r = registry();
        let mut a = TestNode::new(1, 4242);
        let mut b = TestNode::new(2, 1000);
        register(&mut r, &mut a, T0, Some("worker-node"));
        let name = Hostname::new("worker-node").unwrap();
        let bytes = b.signed(
            T0,
            RequestBody::Lookup {
                hostname: name.clone(),
            },
        );
        let out = r.handle(T0, b.addr, &bytes);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, b.addr);
        let raw = &out[0].1;
        match Response::decode(raw).unwrap().body {
            ResponseBody::LookupResult {
                hostname,
                key,
                addr48,
            } => {
                assert_eq!(hostname, name);
                assert_eq!(key, a.key());
                assert_eq!(addr48, a.key().addr48());
            }
            other => panic!("{other:?}"),
        }
        // Neither a's IP nor its port appear anywhere in the answer.
        let ip = [198u8, 51, 100, 1];
        assert!(!raw.windows(4).any(|w| w == ip));
        assert!(!raw.windows(2).any(|w| w == 4242u16.to_be_bytes()));
        // Unknown names are not found; there is no listing request at all.
        let out = send(
            &mut r,
            &mut b,
            T0,
            RequestBody::Lookup {
                hostname: Hostname::new("worker").unwrap(),
            },
        );
        assert_eq!(status_of(&out[0].1), Some(Status::NotFound));
    }

    #[test]
    fn lookups_are_rate_limited_per_key() {
        let mut r = registry();
        let mut a = TestNode::new(1, 1000);
        let mut b = TestNode::new(2, 1000);
        register(&mut r, &mut a, T0, Some("worker-node"));
        let name = Hostname::new("worker-node").unwrap();
        let burst = r.limits().query_burst;
        for _ in 0..burst {
            let out = send(
                &mut r,
                &mut b,
                T0,
                RequestBody::Lookup {
                    hostname: name.clone(),
                },
            );
            assert!(matches!(out[0].1.body, ResponseBody::LookupResult { .. }));
        }
        let out = send(
            &mut r,
            &mut b,
            T0,
            RequestBody::Lookup {
                hostname: name.clone(),
            },
        );
        assert_eq!(status_of(&out[0].1), Some(Status::RateLimited));
        assert_eq!(r.counters().rate_limited, 1);
        // Another key is not affected; and the bucket refills with time.
        let out = send(
            &mut r,
            &mut a,
            T0,
            RequestBody::Lookup {
                hostname: name.clone(),
            },
        );
        assert!(matches!(out[0].1.body, ResponseBody::LookupResult { .. }));
        let out = send(
            &mut r,
            &mut b,
            T0 + 1_000,
            RequestBody::Lookup { hostname: name },
        );
        assert!(matches!(out[0].1.body, ResponseBody::LookupResult { .. }));
    }

    #[test]
    fn a_flood_from_one_ip_is_dropped_before_signature_checks() {
        let limits = Limits {
            ip_burst: 3,
            ip_per_sec: 1,
            ..Limits::default()
        };
        let mut r = Registry::new(
            registry_identity(),
            Box::new(MemoryStore::new()),
            limits,
            T0,
        )
        .unwrap();
        let mut a = TestNode::new(1, 1000);
        for _ in 0..5 {
            let bytes = a.signed(T0, RequestBody::Heartbeat);
            r.handle(T0, a.addr, &bytes);
        }
        assert_eq!(r.counters().accepted, 3);
        assert_eq!(r.counters().rate_limited, 2);
    }

    #[test]
    fn trust_request_is_pushed_to_an_online_target_immediately() {
        let mut r = registry();
        let mut a = TestNode::new(1, 1000);
        let mut b = TestNode::new(2, 2000);
        register(&mut r, &mut a, T0, Some("orchestrator"));
        register(&mut r, &mut b, T0, None);
        let bytes = a.signed(T0 + 5, trust_request(&b));
        let out = decode_all(r.handle(T0 + 5, a.addr, &bytes));
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].0, a.addr);
        assert!(matches!(out[0].1.body, ResponseBody::Ack { .. }));
        assert_eq!(out[1].0, b.addr);
        match &out[1].1.body {
            ResponseBody::PushTrustRequest { hostname, original } => {
                assert_eq!(hostname.as_ref().map(|h| h.as_str()), Some("orchestrator"));
                assert_eq!(original, &bytes);
                let req = Request::decode_verified(original).unwrap();
                assert_eq!(req.header.sender, a.key());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(r.counters().pushed, 1);
    }

    #[test]
    fn trust_request_is_held_for_an_offline_target_and_delivered_on_register() {
        let mut r = registry();
        let mut a = TestNode::new(1, 1000);
        let mut b = TestNode::new(2, 2000);
        register(&mut r, &mut a, T0, None);
        let out = send(&mut r, &mut a, T0, trust_request(&b));
        assert_eq!(out.len(), 1, "acked, nothing pushed");
        assert_eq!(r.held_for(&b.key()), 1);

        let out = register(&mut r, &mut b, T0 + 10_000, None);
        assert_eq!(out.len(), 2);
        assert!(matches!(out[0].1.body, ResponseBody::Registered { .. }));
        assert_eq!(out[1].0, b.addr);
        let push_id = out[1].1.in_reply_to;
        assert!(matches!(
            out[1].1.body,
            ResponseBody::PushTrustRequest { .. }
        ));

        // Until acknowledged it is pushed again with each heartbeat ...
        let out = send(&mut r, &mut b, T0 + 30_000, RequestBody::Heartbeat);
        assert_eq!(out.len(), 2);
        // ... and not after.
        send(
            &mut r,
            &mut b,
            T0 + 31_000,
            RequestBody::Delivered {
                nonces: vec![push_id],
            },
        );
        assert_eq!(r.held_for(&b.key()), 0);
        let out = send(&mut r, &mut b, T0 + 50_000, RequestBody::Heartbeat);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn trust_response_is_pushed_back_to_the_requester() {
        let mut r = registry();
        let mut a = TestNode::new(1, 1000);
        let mut b = TestNode::new(2, 2000);
        register(&mut r, &mut a, T0, None);
        register(&mut r, &mut b, T0, Some("worker-node"));
        let out = send(&mut r, &mut a, T0, trust_request(&b));
        let req_nonce = out[1].1.in_reply_to;
        let out = send(
            &mut r,
            &mut b,
            T0 + 1,
            RequestBody::TrustResponse {
                target: a.key(),
                in_reply_to: req_nonce,
                decision: TrustDecision::Approve,
                reason: String::new(),
            },
        );
        assert_eq!(out[1].0, a.addr);
        assert!(matches!(
            &out[1].1.body,
            ResponseBody::PushTrustResponse { hostname: Some(h), .. } if h.as_str() == "worker-node"
        ));
    }

    #[test]
    fn held_requests_are_bounded_per_target_and_expire() {
        let limits = Limits {
            held_per_target: 3,
            ..Limits::default()
        };
        let expiry = limits.held_expiry_ms;
        let mut r = Registry::new(
            registry_identity(),
            Box::new(MemoryStore::new()),
            limits,
            T0,
        )
        .unwrap();
        let target = TestNode::new(99, 1000);
        for i in 0..3 {
            let mut n = TestNode::new(i + 1, 1000);
            let out = send(&mut r, &mut n, T0, trust_request(&target));
            assert!(matches!(out[0].1.body, ResponseBody::Ack { .. }));
            // A second request from the same sender replaces the first: no new slot.
            let out = send(&mut r, &mut n, T0 + 1, trust_request(&target));
            assert!(matches!(out[0].1.body, ResponseBody::Ack { .. }));
        }
        let mut extra = TestNode::new(50, 1000);
        let out = send(&mut r, &mut extra, T0, trust_request(&target));
        assert_eq!(status_of(&out[0].1), Some(Status::QueueFull));
        assert_eq!(r.held_for(&target.key()), 3);

        r.handle_timeout(T0 + expiry);
        assert_eq!(r.held_for(&target.key()), 3, "not yet expired");
        r.handle_timeout(T0 + expiry + 2);
        assert_eq!(r.held_for(&target.key()), 0);
        assert_eq!(r.counters().expired, 3);
    }

    #[test]
    fn a_node_cannot_send_a_trust_request_to_itself() {
        let mut r = registry();
        let mut a = TestNode::new(1, 1000);
        let me = TestNode::new(1, 1000);
        let out = send(&mut r, &mut a, T0, trust_request(&me));
        assert_eq!(status_of(&out[0].1), Some(Status::InvalidArgument));
    }

    #[test]
    fn endpoint_request_reaches_only_an_online_target_and_only_its_answer_is_forwarded() {
        let mut r = registry();
        let mut a = TestNode::new(1, 1000);
        let mut b = TestNode::new(2, 2000);
        let mut c = TestNode::new(3, 3000);
        register(&mut r, &mut a, T0, None);
        let local: SocketAddr = "10.0.0.2:51820".parse().unwrap();
        // Offline target: refused.
        let out = send(
            &mut r,
            &mut a,
            T0,
            RequestBody::EndpointRequest {
                target: b.key(),
                candidates: vec![],
            },
        );
        assert_eq!(status_of(&out[0].1), Some(Status::NotFound));

        register(&mut r, &mut b, T0, None);
        register(&mut r, &mut c, T0, None);
        let out = send(
            &mut r,
            &mut a,
            T0 + 1,
            RequestBody::EndpointRequest {
                target: b.key(),
                candidates: vec![local],
            },
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].0, b.addr);
        let ask = out[1].1.in_reply_to;
        assert!(
            matches!(&out[1].1.body, ResponseBody::PushEndpointRequest { observed, .. } if *observed == a.addr)
        );

        // A third node cannot answer in b's place.
        let out = send(
            &mut r,
            &mut c,
            T0 + 2,
            RequestBody::EndpointResponse {
                target: a.key(),
                in_reply_to: ask,
                candidates: vec![],
            },
        );
        assert_eq!(status_of(&out[0].1), Some(Status::NotFound));

        // b's answer reaches a with b's reflexive address.
        let out = send(
            &mut r,
            &mut b,
            T0 + 2,
            RequestBody::EndpointResponse {
                target: a.key(),
                in_reply_to: ask,
                candidates: vec![local],
            },
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].0, a.addr);
        assert_eq!(out[1].1.in_reply_to, ask);
        assert!(
            matches!(&out[1].1.body, ResponseBody::EndpointInfo { observed, .. } if *observed == b.addr)
        );

        // Answering twice is refused.
        let out = send(
            &mut r,
            &mut b,
            T0 + 3,
            RequestBody::EndpointResponse {
                target: a.key(),
                in_reply_to: ask,
                candidates: vec![],
            },
        );
        assert_eq!(status_of(&out[0].1), Some(Status::NotFound));
    }

    /// Registers `a` and `b` and runs an endpoint exchange a → b (which allows relaying).
    fn exchange(r: &mut Registry, a: &mut TestNode, b: &mut TestNode, now: u64) {
        let out = send(
            r,
            a,
            now,
            RequestBody::EndpointRequest {
                target: b.key(),
                candidates: vec![],
            },
        );
        let ask = out[1].1.in_reply_to;
        let out = send(
            r,
            b,
            now,
            RequestBody::EndpointResponse {
                target: a.key(),
                in_reply_to: ask,
                candidates: vec![],
            },
        );
        assert_eq!(out.len(), 2, "the answer is forwarded");
    }

    #[test]
    fn relay_needs_an_endpoint_exchange_and_delivers_from_the_senders_address() {
        let mut r = registry();
        let mut a = TestNode::new(1, 1000);
        let mut b = TestNode::new(2, 2000);
        let mut c = TestNode::new(3, 3000);
        for n in [&mut a, &mut b, &mut c] {
            register(&mut r, n, T0, None);
        }
        let wg = [
            4u8, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
        ];
        let frame = relay::frame(relay::RELAY_SEND, b.key().addr48(), &wg);
        // No exchange between a and b yet: refused.
        assert!(r.handle(T0 + 1, a.addr, &frame).is_empty());
        assert_eq!(r.counters().relay_refused, 1);
        exchange(&mut r, &mut a, &mut b, T0 + 2);
        let out = r.handle(T0 + 3, a.addr, &frame);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, b.addr);
        let (from, payload) = relay::parse(&out[0].1, relay::RELAY_DELIVER).unwrap();
        assert_eq!(from, a.key().addr48());
        assert_eq!(payload, &wg[..]);
        // Both directions are allowed.
        let back = relay::frame(relay::RELAY_SEND, a.key().addr48(), &wg);
        assert_eq!(r.handle(T0 + 3, b.addr, &back)[0].0, a.addr);
        // c exchanged nothing with b: refused. An unregistered address: refused.
        assert!(r.handle(T0 + 3, c.addr, &frame).is_empty());
        let stranger: SocketAddr = "192.0.2.99:5".parse().unwrap();
        assert!(r.handle(T0 + 3, stranger, &frame).is_empty());
        assert_eq!(r.counters().relayed_packets, 2);
        assert_eq!(r.counters().relayed_bytes, 2 * wg.len() as u64);
        assert_eq!(r.counters().relay_refused, 3);
        // The permission expires.
        let later = T0 + 3 + r.limits().relay_pair_ttl_ms + 1;
        register(&mut r, &mut a, later, None);
        register(&mut r, &mut b, later, None);
        assert!(r.handle(later, a.addr, &frame).is_empty());
    }

    #[test]
    fn relayed_traffic_follows_a_node_whose_address_changed() {
        let mut r = registry();
        let mut a = TestNode::new(1, 1000);
        let mut b = TestNode::new(2, 2000);
        register(&mut r, &mut a, T0, None);
        register(&mut r, &mut b, T0, None);
        exchange(&mut r, &mut a, &mut b, T0 + 1);
        // b's NAT mapping moves; its next signed request comes from the new port.
        b.addr = "198.51.100.2:2999".parse().unwrap();
        exchange(&mut r, &mut a, &mut b, T0 + 2);
        let frame = relay::frame(relay::RELAY_SEND, b.key().addr48(), &[4u8; 40]);
        assert_eq!(r.handle(T0 + 3, a.addr, &frame)[0].0, b.addr);
        let old: SocketAddr = "198.51.100.2:2000".parse().unwrap();
        let back = relay::frame(relay::RELAY_SEND, a.key().addr48(), &[4u8; 40]);
        assert!(
            r.handle(T0 + 3, old, &back).is_empty(),
            "the old address is forgotten"
        );
    }

    #[test]
    fn relay_budgets_limit_packets_and_bytes_per_sender() {
        let limits = Limits {
            relay_packet_burst: 5,
            relay_packets_per_sec: 1,
            relay_byte_burst: 1000,
            relay_bytes_per_sec: 100,
            ..Limits::default()
        };
        let mut r = Registry::new(
            registry_identity(),
            Box::new(MemoryStore::new()),
            limits,
            T0,
        )
        .unwrap();
        let mut a = TestNode::new(1, 1000);
        let mut b = TestNode::new(2, 2000);
        register(&mut r, &mut a, T0, None);
        register(&mut r, &mut b, T0, None);
        exchange(&mut r, &mut a, &mut b, T0);
        let small = relay::frame(relay::RELAY_SEND, b.key().addr48(), &[4u8; 32]);
        let sent = (0..10)
            .filter(|_| !r.handle(T0, a.addr, &small).is_empty())
            .count();
        assert_eq!(sent, 5, "packet burst");
        assert_eq!(r.counters().relay_limited, 5);
        // A second later one packet token is back, but 1000 bytes are too many at once.
        let big = relay::frame(relay::RELAY_SEND, b.key().addr48(), &[4u8; 1200]);
        assert!(r.handle(T0 + 1000, a.addr, &big).is_empty());
        // b has its own budget.
        let back = relay::frame(relay::RELAY_SEND, a.key().addr48(), &[4u8; 32]);
        assert!(!r.handle(T0 + 1000, b.addr, &back).is_empty());
    }

    #[test]
    fn heartbeat_from_an_unknown_node_asks_it_to_register_again() {
        let mut r = registry();
        let mut a = TestNode::new(1, 1000);
        let out = send(&mut r, &mut a, T0, RequestBody::Heartbeat);
        assert_eq!(status_of(&out[0].1), Some(Status::UnknownNode));
        register(&mut r, &mut a, T0, None);
        let out = send(&mut r, &mut a, T0 + 20_000, RequestBody::Heartbeat);
        assert!(matches!(out[0].1.body, ResponseBody::Ack { .. }));
        // Silent past the online timeout: forgotten.
        r.handle_timeout(T0 + 20_000 + 76_000);
        assert!(!r.is_online(&a.key(), T0 + 96_000));
        let out = send(&mut r, &mut a, T0 + 96_000, RequestBody::Heartbeat);
        assert_eq!(status_of(&out[0].1), Some(Status::UnknownNode));
    }

    #[test]
    fn names_and_held_requests_survive_a_restart_with_redb() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.redb");
        let mut a = TestNode::new(1, 1000);
        let mut b = TestNode::new(2, 2000);
        {
            let store = crate::registry::store::RedbStore::open(&path).unwrap();
            let mut r =
                Registry::new(registry_identity(), Box::new(store), Limits::default(), T0).unwrap();
            register(&mut r, &mut a, T0, Some("orchestrator"));
            send(&mut r, &mut a, T0, trust_request(&b));
        }
        let store = crate::registry::store::RedbStore::open(&path).unwrap();
        let mut r = Registry::new(
            registry_identity(),
            Box::new(store),
            Limits::default(),
            T0 + 5_000,
        )
        .unwrap();
        let out = register(&mut r, &mut b, T0 + 6_000, Some("orchestrator"));
        assert!(matches!(
            out[0].1.body,
            ResponseBody::Registered {
                hostname: HostnameStatus::Taken,
                ..
            }
        ));
        assert!(matches!(
            &out[1].1.body,
            ResponseBody::PushTrustRequest {
                hostname: Some(_),
                ..
            }
        ));
        // A request signed before the restart cannot be replayed into the new process.
        let old = a.signed(T0 + 4_000, RequestBody::ReleaseHostname);
        let out = decode_all(r.handle(T0 + 6_000, a.addr, &old));
        assert_eq!(status_of(&out[0].1), Some(Status::StaleTimestamp));
    }

    proptest::proptest! {
        #[test]
        fn registry_never_panics_on_random_datagrams(
            datagrams in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1300), 1..20),
        ) {
            let mut r = registry();
            for (i, d) in datagrams.iter().enumerate() {
                let from = SocketAddr::from(([192, 0, 2, 7], 1000 + i as u16));
                proptest::prop_assert!(r.handle(T0, from, d).is_empty());
            }
            r.handle_timeout(T0 + 1_000);
        }
    }

    #[test]
    fn storage_failure_is_answered_with_internal_and_changes_nothing() {
        let mut store = MemoryStore::new();
        store.fail_writes = true;
        let mut r =
            Registry::new(registry_identity(), Box::new(store), Limits::default(), T0).unwrap();
        let mut a = TestNode::new(1, 1000);
        let b = TestNode::new(2, 1000);
        let out = send(
            &mut r,
            &mut a,
            T0,
            RequestBody::SetHostname {
                hostname: Hostname::new("x1").unwrap(),
            },
        );
        assert_eq!(status_of(&out[0].1), Some(Status::Internal));
        let out = send(&mut r, &mut a, T0, trust_request(&b));
        assert_eq!(status_of(&out[0].1), Some(Status::Internal));
        assert_eq!(r.held_for(&b.key()), 0);
    }
}
