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
//! - Screening (v1.2, see `proof::screen`), still before any signature work: a request from its
//!   key's presence address, or a `Register` echoing a valid cookie, goes on to the global
//!   bucket and the signature check; a `Register` without one gets an unsigned `Challenge`
//!   (challenge bucket) and is never verified; any other request from an unproven address is
//!   verified only within its own bucket (`unproven_*`), so spoofed floods cannot starve nodes.
//! - Return routability: until a source address is proven (it is the sender's presence), what
//!   goes back to it is at most as large as what came from it, nothing held is pushed to it,
//!   and presence moves there only on a `Register` that echoes our cookie (see `proof`).
//!
//! # Modules
//! `limits` (bounds, counters, token bucket), `names` (hostnames, lookups), `held` (trust
//! messages), `endpoints` (endpoint exchange, relay), `proof` (return routability); this file
//! admits and dispatches requests.

mod cluster;
mod discovery;
mod endpoints;
mod held;
mod limits;
mod names;
mod nonces;
mod parked;
mod proof;
mod registrations;
mod relaying;
mod resync;
#[cfg(test)]
pub(crate) mod tests;
mod verify;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

pub use self::cluster::Sizes;
pub use self::limits::{Counters, Limits};

use self::endpoints::{Pair, PendingEndpoint};
use self::held::{Held, HeldKey};
use self::limits::Bucket;
use self::relaying::RelayBudget;
use super::store::{Snapshot, Store, StoreError, StoreOp};
use crate::identity::{Identity, PublicKey};
use crate::mapping::{Addr48, Hostname};
use crate::wire::registry::{
    Cookie, Header, HostnameStatus, Nonce, Request, RequestBody, Response, ResponseBody, Status,
    Unverified,
};
use crate::wire::relay;

/// Presence of a node: where its datagrams come from and when it was last heard.
#[derive(Debug, Clone)]
struct Presence {
    addr: SocketAddr,
    last_seen_ms: u64,
    /// When it was last written to a shared store (clusters only).
    shared_ms: Option<u64>,
}

/// Datagrams to send: (destination, bytes).
pub type Transmits = Vec<(SocketAddr, Vec<u8>)>;

/// The request being handled: who sent it, from where, when.
#[derive(Debug, Clone, Copy)]
struct Ctx {
    now_ms: u64,
    from: SocketAddr,
    sender: PublicKey,
    nonce: Nonce,
    /// Bytes we may still send back to `from`: `None` once it proved it answers there (it is
    /// the sender's presence address), else the size of the request (amplification ≤ 1).
    budget: Option<usize>,
}

/// The registry core.
pub struct Registry {
    limits: Limits,
    identity: Arc<Identity>,
    store: Box<dyn Store>,
    cookie_secret: [u8; 32],
    started_ms: u64,
    presence: HashMap<PublicKey, Presence>,
    names: HashMap<Hostname, PublicKey>,
    owner: HashMap<PublicKey, Hostname>,
    /// Registered keys → when last heard (unix ms); see `registrations`.
    seen: HashMap<PublicKey, u64>,
    /// Registered keys → when that was last written to the store.
    seen_persisted: HashMap<PublicKey, u64>,
    held: BTreeMap<HeldKey, Held>,
    nonces: nonces::Nonces,
    key_buckets: HashMap<PublicKey, Bucket>,
    global_bucket: Bucket,
    /// Challenges sent without signature work (see `proof::screen`).
    challenge_bucket: Bucket,
    /// Signature work on requests from unproven addresses.
    unproven_bucket: Bucket,
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
    /// The registry's global relay budget (all senders together).
    relay_global: RelayBudget,
    counters: Counters,
    /// Registered keys → their tags (soft state, see `discovery`).
    tags: HashMap<PublicKey, Vec<String>>,
    /// Whether other instances share the store (see `cluster`).
    cluster: bool,
    /// Nodes attached to other instances → when last heard there (unix ms).
    elsewhere: HashMap<PublicKey, u64>,
    /// Requests whose answer waits for their commit on a shared store, by ticket (see
    /// `parked`).
    parked: HashMap<u64, parked::Parked>,
    /// The ticket the next parked request gets.
    next_ticket: u64,
    /// Checks the signatures of each wake-up's requests (batches, see `verify`).
    verifier: verify::Verifier,
}

/// Sizes of the registry's tables at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegistryGauges {
    /// Nodes online (registered or heartbeat within `online_timeout_ms`).
    pub online: usize,
    /// Registered nodes remembered (until `registration_expiry_ms` of silence).
    pub registered: usize,
    /// Hostnames bound.
    pub names: usize,
    /// Trust messages held for offline targets.
    pub held: usize,
    /// Nonces in the replay cache.
    pub nonces: usize,
    /// Pairs allowed to relay.
    pub relay_pairs: usize,
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
        let Snapshot {
            names,
            held,
            seen,
            elsewhere,
        } = store.load()?;
        let cluster = store.shared();
        let mut r = Registry {
            global_bucket: Bucket::full(limits.global_burst, now_ms),
            challenge_bucket: Bucket::full(limits.challenge_burst, now_ms),
            unproven_bucket: Bucket::full(limits.unproven_burst, now_ms),
            relay_global: RelayBudget::global(&limits, now_ms),
            limits,
            store,
            cookie_secret: proof::cookie_secret(&identity),
            identity,
            started_ms: now_ms,
            presence: HashMap::new(),
            names: HashMap::new(),
            owner: HashMap::new(),
            seen: HashMap::new(),
            seen_persisted: HashMap::new(),
            held: BTreeMap::new(),
            nonces: nonces::Nonces::default(),
            key_buckets: HashMap::new(),
            query_buckets: HashMap::new(),
            ip_buckets: HashMap::new(),
            endpoint_requests: HashMap::new(),
            by_addr: HashMap::new(),
            by_addr48: HashMap::new(),
            relay_pairs: HashMap::new(),
            relay_budgets: HashMap::new(),
            counters: Counters::default(),
            tags: HashMap::new(),
            cluster,
            elsewhere: elsewhere.into_iter().collect(),
            parked: HashMap::new(),
            next_ticket: 0,
            verifier: verify::Verifier::default(),
        };
        for (key, ms) in seen {
            r.seen.insert(key, ms);
            r.seen_persisted.insert(key, ms);
        }
        for (name, key) in names {
            // A name stored before registrations were (v1.0) gets a full expiry from now.
            r.seen.entry(key).or_insert(now_ms);
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

    /// Sizes of the registry's tables now (for the metrics endpoint).
    pub fn gauges(&self) -> RegistryGauges {
        RegistryGauges {
            online: self.presence.len(),
            registered: self.seen.len(),
            names: self.names.len(),
            held: self.held.len(),
            nonces: self.nonces.len(),
            relay_pairs: self.relay_pairs.len(),
        }
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
        self.handle_batch(now_ms, &[(from, bytes)])
    }

    /// Handles the datagrams one wake-up read, in order, as [`Registry::handle`] would one by
    /// one, except that the signatures of the requests that pass screening are checked together
    /// (batch verification, see `verify`): each datagram is screened first (rate limits,
    /// replay cache, cookies: no signature work), then the survivors' signatures are checked,
    /// then each verified request is processed.
    pub fn handle_batch(&mut self, now_ms: u64, batch: &[(SocketAddr, &[u8])]) -> Transmits {
        let mut out = Vec::new();
        let mut screened = Vec::with_capacity(batch.len());
        let mut senders = Vec::with_capacity(batch.len());
        for &(from, bytes) in batch {
            match self.admit(now_ms, from, bytes) {
                Ok(u) => {
                    screened.push(u);
                    senders.push(from);
                }
                Err(o) => out.extend(o),
            }
        }
        let valid = self.verifier.check(&screened, &mut self.counters);
        for ((u, from), ok) in screened.into_iter().zip(senders).zip(valid) {
            if !ok {
                self.counters.bad_signature += 1;
                continue;
            }
            out.extend(self.process(now_ms, from, u.bytes(), u.request));
        }
        out
    }

    /// Everything before the signature check: relay frames (handled here: they cost no
    /// signature work), the per-IP bucket, screening and decoding. `Ok` is a request whose
    /// signature is still to be checked; `Err` what to send instead (often nothing).
    fn admit<'a>(
        &mut self,
        now_ms: u64,
        from: SocketAddr,
        bytes: &'a [u8],
    ) -> Result<Unverified<'a>, Transmits> {
        if relay::is_relay(bytes) {
            // Relay frames have their own per-node budgets (a relayed transfer would exhaust
            // the per-IP request bucket at once) and cost no signature work.
            return Err(self.relay(now_ms, from, bytes));
        }
        if !self.admit_ip(now_ms, from.ip()) {
            self.counters.rate_limited += 1;
            return Err(Vec::new());
        }
        // Screening: cheap checks only (header, hash lookups, a MAC) before any signature.
        self.screen(now_ms, from, bytes)?;
        // Decoding decompresses the sender's key once; the signature check reuses it.
        Unverified::decode(bytes).map_err(|_| {
            self.counters.garbage += 1;
            Vec::new()
        })
    }

    /// Everything after the signature check: freshness and replay, the key's bucket, then the
    /// request itself.
    fn process(&mut self, now_ms: u64, from: SocketAddr, bytes: &[u8], req: Request) -> Transmits {
        let sender = req.header.sender;
        let budget = (!self.proven(&sender, from)).then_some(bytes.len());
        if let Err(out) = self.check_fresh(now_ms, from, &req.header, budget) {
            return out;
        }
        if !self.admit_key(now_ms, sender) {
            self.counters.rate_limited += 1;
            return Vec::new();
        }
        self.counters.accepted += 1;
        let cx = Ctx {
            now_ms,
            from,
            sender,
            nonce: req.header.nonce,
            budget,
        };
        let out = self.dispatch(&cx, &req, bytes);
        self.finish(&cx, out)
    }

    /// Caps what goes back to an unproven source and counts refusals, for the answer to the
    /// request in `cx` (given at once or after its commit).
    fn finish(&mut self, cx: &Ctx, mut out: Transmits) -> Transmits {
        // A Register with a valid cookie has just proven the address.
        let budget = cx.budget.filter(|_| !self.proven(&cx.sender, cx.from));
        self.cap_to_budget(cx.from, budget, &mut out);
        for (_, b) in &out {
            if b.get(2) == Some(&0x82) {
                self.counters.refused += 1;
            }
        }
        out
    }

    /// Takes a token from the source's bucket (its IPv4 address or IPv6 /64; bounded table),
    /// before anything else.
    fn admit_ip(&mut self, now_ms: u64, ip: IpAddr) -> bool {
        let ip = source_bucket(ip);
        let (burst, per_sec) = (self.limits.ip_burst, self.limits.ip_per_sec);
        if !self.ip_buckets.contains_key(&ip)
            && self.ip_buckets.len() >= self.limits.max_tracked_ips
        {
            return false;
        }
        self.ip_buckets
            .entry(ip)
            .or_insert_with(|| Bucket::full(burst, now_ms))
            .take(burst, per_sec, now_ms)
    }

    /// Takes a token from the sender key's bucket (bounded table), after its signature.
    fn admit_key(&mut self, now_ms: u64, key: PublicKey) -> bool {
        let (burst, per_sec) = (self.limits.key_burst, self.limits.key_per_sec);
        if !self.key_buckets.contains_key(&key)
            && self.key_buckets.len() >= self.limits.max_tracked_keys
        {
            return false;
        }
        self.key_buckets
            .entry(key)
            .or_insert_with(|| Bucket::full(burst, now_ms))
            .take(burst, per_sec, now_ms)
    }

    /// Refuses a stale timestamp (answered with our clock) and a replayed nonce (silently);
    /// remembers the nonce of a fresh request until its timestamp leaves the window.
    fn check_fresh(
        &mut self,
        now_ms: u64,
        from: SocketAddr,
        h: &Header,
        budget: Option<usize>,
    ) -> Result<(), Transmits> {
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
            return Err(vec![(
                from,
                self.error(h.nonce, Status::StaleTimestamp, now_ms, msg, budget),
            )]);
        }
        let (max, expires) = (self.limits.max_nonces, h.timestamp_ms.saturating_add(skew));
        let evicted = &mut self.counters.nonces_evicted;
        if self.nonces.insert(h.nonce, expires, max, evicted) == nonces::Seen::Replay {
            self.counters.replayed += 1;
            return Err(Vec::new());
        }
        Ok(())
    }

    /// Expires presence, nonces, rate-limit buckets, pending endpoint requests and held
    /// messages. Call about once a second.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        let online = self.limits.online_timeout_ms;
        self.presence
            .retain(|_, p| p.last_seen_ms + online >= now_ms);
        self.elsewhere.retain(|_, t| *t + online >= now_ms);
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
        self.nonces.expire(now_ms);
        self.endpoint_requests.retain(|_, p| p.expires_ms >= now_ms);
        let l = &self.limits;
        self.query_buckets
            .retain(|_, b| !b.is_full_at(l.query_burst, l.query_per_sec, now_ms));
        self.ip_buckets
            .retain(|_, b| !b.is_full_at(l.ip_burst, l.ip_per_sec, now_ms));
        self.key_buckets
            .retain(|_, b| !b.is_full_at(l.key_burst, l.key_per_sec, now_ms));
        self.expire_held(now_ms);
        self.expire_registrations(now_ms);
    }

    /// An error answer; to an unproven source (`budget`) its message is cut so the whole
    /// datagram fits in the budget.
    fn error(
        &self,
        nonce: Nonce,
        status: Status,
        now_ms: u64,
        mut message: String,
        budget: Option<usize>,
    ) -> Vec<u8> {
        if let Some(b) = budget {
            let max = b.saturating_sub(ERROR_OVERHEAD);
            if message.len() > max {
                let mut end = max;
                while !message.is_char_boundary(end) {
                    end -= 1;
                }
                message.truncate(end);
            }
        }
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

    /// An answer to the request in `cx`.
    fn reply(&self, cx: &Ctx, body: ResponseBody) -> Transmits {
        let r = Response {
            in_reply_to: cx.nonce,
            body,
        };
        vec![(cx.from, encode(&self.identity, &r))]
    }

    /// An error answer to the request in `cx`.
    fn fail(&self, cx: &Ctx, status: Status, message: String) -> Transmits {
        vec![(
            cx.from,
            self.error(cx.nonce, status, cx.now_ms, message, cx.budget),
        )]
    }

    /// An `Ack` to the request in `cx`, telling the sender its observed address.
    fn ack(&self, cx: &Ctx) -> Transmits {
        self.reply(cx, ResponseBody::Ack { observed: cx.from })
    }

    fn dispatch(&mut self, cx: &Ctx, req: &Request, bytes: &[u8]) -> Transmits {
        use crate::registry::store::HeldKind;
        match &req.body {
            RequestBody::Register {
                hostname, cookie, ..
            } => self.on_register(cx, hostname.as_ref(), cookie.as_ref()),
            RequestBody::Heartbeat => self.on_heartbeat(cx),
            RequestBody::SetHostname { hostname } => self.on_set_hostname(cx, hostname),
            RequestBody::ReleaseHostname => self.on_release_hostname(cx),
            RequestBody::Lookup { hostname } => self.on_lookup(cx, hostname),
            RequestBody::TrustRequest { target, .. } => {
                self.hold(cx, bytes, *target, HeldKind::TrustRequest)
            }
            RequestBody::TrustResponse { target, .. } => {
                self.hold(cx, bytes, *target, HeldKind::TrustResponse)
            }
            RequestBody::EndpointRequest { target, .. } => {
                self.on_endpoint_request(cx, bytes, target)
            }
            RequestBody::EndpointResponse {
                target,
                in_reply_to,
                ..
            } => self.on_endpoint_response(cx, bytes, target, in_reply_to),
            RequestBody::Delivered { nonces } => self.on_delivered(cx, nonces),
            RequestBody::SetTags { tags } => self.on_set_tags(cx, tags),
            RequestBody::Deregister => self.on_deregister(cx),
            RequestBody::LookupNode { peer } => self.on_lookup_node(cx, peer),
        }
    }

    /// `Register`: from a proven address (or with a valid cookie for it) records presence,
    /// claims the hostname asked for, and pushes what is held; otherwise challenges.
    fn on_register(
        &mut self,
        cx: &Ctx,
        hostname: Option<&Hostname>,
        cookie: Option<&Cookie>,
    ) -> Transmits {
        if cx.budget.is_some() && !cookie.is_some_and(|c| self.cookie_valid(cx, c)) {
            return self.challenge(cx);
        }
        let cx = &Ctx {
            budget: None,
            ..*cx
        };
        let full =
            !self.presence.contains_key(&cx.sender) && self.presence.len() >= self.limits.max_nodes;
        if full || !self.has_room_for(&cx.sender) {
            return self.fail(cx, Status::RateLimited, "the registry is full".into());
        }
        self.touch(cx.sender, cx.from, cx.now_ms);
        let claimed = match hostname {
            None => Ok(()),
            Some(name) => match self.claim(cx, name, parked::Via::Register) {
                Some(r) => r,
                // Answered when the store has decided (see `parked`).
                None => return Vec::new(),
            },
        };
        self.registered(cx, hostname.is_some(), claimed)
    }

    /// The answer to a `Register` once its hostname claim (if any) is decided.
    fn registered(&mut self, cx: &Ctx, asked: bool, claimed: Result<(), Status>) -> Transmits {
        let status = match claimed {
            Ok(()) if asked => HostnameStatus::Granted,
            Ok(()) => HostnameStatus::NotRequested,
            Err(Status::AlreadyExists) => HostnameStatus::Taken,
            Err(s) => return self.fail(cx, s, "cannot store the hostname".into()),
        };
        let mut out = self.reply(
            cx,
            ResponseBody::Registered {
                observed: cx.from,
                hostname: status,
                registry_key: self.identity.public_key(),
            },
        );
        out.extend(self.pushes_for(&cx.sender, cx.from));
        out
    }

    /// `Heartbeat`: refreshes presence and pushes what is held; an unknown node must register;
    /// a heartbeat from another address than the node's presence is challenged (presence
    /// moves only with a cookie, in `Register`).
    fn on_heartbeat(&mut self, cx: &Ctx) -> Transmits {
        if !self.presence.contains_key(&cx.sender) {
            return self.fail(
                cx,
                Status::UnknownNode,
                "unknown node: register again".into(),
            );
        }
        if cx.budget.is_some() {
            return self.challenge(cx);
        }
        self.touch(cx.sender, cx.from, cx.now_ms);
        let mut out = self.ack(cx);
        out.extend(self.pushes_for(&cx.sender, cx.from));
        out
    }

    fn touch(&mut self, key: PublicKey, addr: SocketAddr, now_ms: u64) {
        self.refresh_seen(key, now_ms);
        let old = self.presence.insert(
            key,
            Presence {
                addr,
                last_seen_ms: now_ms,
                shared_ms: None,
            },
        );
        let mut shared_ms = None;
        if let Some(old) = old {
            if old.addr != addr && self.by_addr.get(&old.addr) == Some(&key) {
                self.by_addr.remove(&old.addr);
            }
            shared_ms = old.shared_ms.filter(|_| old.addr == addr);
        }
        self.by_addr.insert(addr, key);
        self.by_addr48.insert(key.addr48(), key);
        if self.cluster {
            let written = self.share_presence(key, addr, now_ms, shared_ms);
            if let Some(p) = self.presence.get_mut(&key) {
                p.shared_ms = written;
            }
        }
    }

    fn online_addr(&self, key: &PublicKey, now_ms: u64) -> Option<SocketAddr> {
        self.is_online(key, now_ms)
            .then(|| self.presence.get(key).map(|p| p.addr))
            .flatten()
    }
}

/// The rate-limit bucket a source address falls in: an IPv4 address (also when mapped into
/// IPv6), or an IPv6 /64 (one subscriber usually holds a whole /64, so per-address buckets would
/// give it 2^64 of them).
fn source_bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

/// Bytes of an `Error` datagram around its message: preamble, nonce, status, time, message
/// length, signature.
const ERROR_OVERHEAD: usize = 3 + 16 + 1 + 8 + 2 + 64;

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
