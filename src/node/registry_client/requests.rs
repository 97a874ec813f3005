//! Requests in flight: signing with a fresh nonce, retries with backoff, matching answers by
//! nonce, and one outcome per operation.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{Client, ClientError, ClientEvent, EndpointWait, InFlight, Op, OpId, OpKind, Purpose};
use crate::wire::registry::{
    Header, HostnameStatus, Nonce, Request, RequestBody, ResponseBody, Status,
};

/// The correction (ms) that makes our clock, reading `ours`, read the registry's `theirs`;
/// `None` when it is larger than `max` either way (any `u64` inputs, no overflow).
pub(super) fn clock_offset(theirs: u64, ours: u64, max: Duration) -> Option<i64> {
    let diff = i128::from(theirs) - i128::from(ours);
    let max = i128::try_from(max.as_millis()).unwrap_or(i128::MAX);
    if diff.abs() > max {
        return None;
    }
    i64::try_from(diff).ok()
}

impl Client {
    pub(super) fn unix_ms(&self, now: Instant, offset_ms: i64) -> u64 {
        let elapsed = now.saturating_duration_since(self.base).as_millis();
        let elapsed = u64::try_from(elapsed).unwrap_or(u64::MAX);
        self.base_unix_ms
            .saturating_add(elapsed)
            .saturating_add_signed(offset_ms)
    }

    pub(super) fn sign(&mut self, ts: u64, body: RequestBody) -> Result<(Nonce, Vec<u8>), ()> {
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

    pub(super) fn start_register(&mut self, reg: usize, now: Instant) {
        let body = RequestBody::Register {
            hostname: self.config.hostname.clone(),
            candidates: self.config.candidates.clone(),
            cookie: self.registries[reg].cookie,
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

    pub(super) fn start_op(&mut self, now: Instant, kind: OpKind, body: RequestBody) -> OpId {
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
    pub(super) fn send(
        &mut self,
        registry: usize,
        now: Instant,
        purpose: Purpose,
        body: RequestBody,
    ) {
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
                sent_at: now,
            },
        );
        self.transmit(id, now);
    }

    /// Signs the request `id` afresh (new nonce and timestamp) and queues it.
    pub(super) fn transmit(&mut self, id: u64, now: Instant) {
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
        f.sent_at = now;
        f.rto = (f.rto * 2).min(cap);
        self.by_nonce.insert(nonce, id);
        self.note_sent(reg, now);
        let addr = self.registries[reg].addr;
        self.transmits.push_back((addr, bytes));
    }

    pub(super) fn finish(&mut self, id: u64) -> Option<InFlight> {
        let f = self.inflight.remove(&id)?;
        for n in &f.nonces {
            self.by_nonce.remove(n);
        }
        Some(f)
    }

    pub(super) fn lose_registry(&mut self, reg: usize, now: Instant) {
        // The registry's key stays: a registry that comes back with another key is refused
        // until the operator pins the new key or forgets the old one.
        let r = &mut self.registries[reg];
        let was = r.registered;
        r.registered = false;
        r.next_heartbeat = None;
        if was {
            self.events
                .push_back(ClientEvent::RegistryLost { registry: r.addr });
        }
        self.start_register(reg, now);
        self.refresh_home(now);
    }

    pub(super) fn observe(&mut self, reg: usize, observed: SocketAddr) {
        let r = &mut self.registries[reg];
        if r.reflexive != Some(observed) {
            r.reflexive = Some(observed);
            self.events.push_back(ClientEvent::ReflexiveAddress {
                registry: r.addr,
                addr: observed,
            });
        }
    }

    pub(super) fn on_answer(&mut self, now: Instant, reg: usize, nonce: Nonce, body: ResponseBody) {
        let Some(&id) = self.by_nonce.get(&nonce) else {
            self.counters.unmatched += 1;
            return;
        };
        if self.inflight.get(&id).map(|f| f.registry) != Some(reg) {
            self.counters.unmatched += 1;
            return;
        }
        if self.keeps_waiting(now, reg, id, &body) {
            return;
        }
        let f = self.finish(id).expect("present");
        // Measured only on an answer to the latest copy (each copy has its own nonce).
        let latest = f.nonces.last() == Some(&nonce);
        if latest && matches!(f.purpose, Purpose::Register | Purpose::Heartbeat) {
            self.registries[reg].rtt = Some(now.saturating_duration_since(f.sent_at));
        }
        match (f.purpose, body) {
            (
                Purpose::Register,
                ResponseBody::Registered {
                    observed, hostname, ..
                },
            ) => self.on_registered(now, reg, observed, hostname),
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

    /// Whether the request `id` stays in flight after this answer: a stale-timestamp refusal
    /// (our clock is corrected and it is sent again at once), a rate limit (its retry timer is
    /// armed), or a refused registration (retried with backoff).
    fn keeps_waiting(&mut self, now: Instant, reg: usize, id: u64, body: &ResponseBody) -> bool {
        if let ResponseBody::Error {
            status: Status::StaleTimestamp,
            registry_time_ms,
            ..
        } = *body
        {
            // Correct our clock for this registry and try again at once (counts as an attempt);
            // a correction beyond the bound is ignored and counted.
            let ours = self.unix_ms(now, 0);
            let offset = clock_offset(registry_time_ms, ours, self.config.max_clock_offset);
            match offset {
                Some(off) => self.registries[reg].offset_ms = off,
                None => self.counters.clock_offset_refused += 1,
            }
            let retry = offset.is_some()
                && self
                    .inflight
                    .get(&id)
                    .is_some_and(|f| f.attempts < self.config.max_attempts.max(2));
            if retry {
                self.transmit(id, now);
                return true;
            }
        }
        if let ResponseBody::Challenge { cookie } = *body {
            // Prove our address: register again at once with the cookie (only for a new cookie,
            // so a refused one waits for the retry timer instead of looping).
            let fresh = self.registries[reg].cookie != Some(cookie);
            self.registries[reg].cookie = Some(cookie);
            if fresh && self.inflight.get(&id).map(|f| f.purpose) == Some(Purpose::Register) {
                self.start_register(reg, now);
                return true;
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
                return true;
            }
        }
        let purpose = self.inflight.get(&id).map(|f| f.purpose);
        // A refused registration: the retry timer (with backoff) sends it again.
        purpose == Some(Purpose::Register) && !matches!(body, ResponseBody::Registered { .. })
    }

    /// A registry accepted our registration.
    fn on_registered(
        &mut self,
        now: Instant,
        reg: usize,
        observed: SocketAddr,
        hostname: HostnameStatus,
    ) {
        let registry = self.registries[reg].addr;
        self.registries[reg].registered = true;
        self.registries[reg].next_heartbeat = Some(now + self.config.heartbeat_interval);
        self.events.push_back(ClientEvent::Registered { registry });
        self.refresh_home(now);
        self.observe(reg, observed);
        self.resend_tags(reg, now);
        if hostname == HostnameStatus::Taken {
            if let Some(h) = self.config.hostname.clone() {
                self.events.push_back(ClientEvent::HostnameTaken {
                    registry,
                    hostname: h,
                });
            }
        }
    }

    pub(super) fn on_op_answer(
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
            ResponseBody::NodeInfo {
                key,
                addr48,
                hostname,
                tags,
            } => {
                let info = super::NodeInfo {
                    key,
                    addr48,
                    hostname,
                    tags,
                };
                self.on_node_info(registry, op, &kind, info);
            }
            ResponseBody::Ack { observed } => {
                self.observe(reg, observed);
                if let OpKind::EndpointRequest(peer) = kind {
                    // Forwarded: now wait for the peer's answer.
                    self.endpoint_waits.insert(
                        nonce,
                        EndpointWait {
                            op,
                            registry: reg,
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
    pub(super) fn mark_done(&mut self, op: OpId) -> bool {
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
    pub(super) fn op_failed_at_one(&mut self, op: OpId, error: ClientError) {
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
}
