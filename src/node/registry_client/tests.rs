//! The client against a real registry core, in memory, with a virtual clock.

use super::*;
use crate::error::{ErrorCode, PilotError};
use crate::node::trust::{TrustEffect, TrustStore};
use crate::registry::server::{Limits, Registry};
use crate::wire::registry::{Header, Request, Status};

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
        let registry = crate::registry::server::tests::memory_registry(Limits::default(), T0);
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
            ClientEvent::RelayUsable {
                registry: reg,
                usable: true
            },
            ClientEvent::HomeChanged {
                home: Some(reg),
                previous: None
            },
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
    sim.registry = crate::registry::server::tests::memory_registry(Limits::default(), restarted_at);
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
    assert!(ev.iter().any(|e| matches!(e,
        ClientEvent::Failed { op: o, error } if *o == op && error.code() == ErrorCode::NotFound)));
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
            home: Some(sim.registry_addr),
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
            home: Some(sim.registry_addr),
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
    // An answer signed by anyone else is dropped, even one that answers a request in flight.
    sim.clients[0]
        .0
        .lookup(sim.now, Hostname::new("worker-node").unwrap());
    let (_, lookup) = sim.clients[0].0.poll_transmit().unwrap();
    let impostor = Identity::from_seed([77; 32]);
    let forged = Response {
        in_reply_to: nonce_of(&lookup),
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

/// The nonce of a signed request datagram (what an on-path observer could read).
fn nonce_of(request: &[u8]) -> Nonce {
    Request::decode_verified(request).unwrap().header.nonce
}

/// A `Registered` answer signed by `signer` and carrying its key, as a spoofer makes one.
fn self_signed_registered(signer: &Identity, in_reply_to: Nonce) -> Vec<u8> {
    Response {
        in_reply_to,
        body: ResponseBody::Registered {
            observed: "198.51.100.66:1".parse().unwrap(),
            hostname: crate::wire::registry::HostnameStatus::NotRequested,
            registry_key: signer.public_key(),
        },
    }
    .encode_signed(signer)
    .unwrap()
}

/// A client for `sim`'s registry whose first registration is queued, not yet delivered.
fn fresh_client(sim: &Sim, cfg: ClientConfig) -> Client {
    let id = Arc::new(Identity::from_seed([9; 32]));
    Client::new(id, cfg, sim.now, sim.unix())
}

#[test]
fn a_spoofed_registered_before_the_genuine_answer_is_ignored() {
    let mut sim = Sim::new(0);
    let reg = sim.registry_addr;
    let mut c = fresh_client(&sim, ClientConfig::new(vec![reg]));
    // An off-path spoofer answers first, from the registry's address, with its own key; it
    // cannot see our registration's nonce.
    let impostor = Identity::from_seed([77; 32]);
    c.handle_datagram(sim.now, reg, &self_signed_registered(&impostor, [7; 16]));
    assert_eq!(c.registry_key(reg), None);
    assert_eq!(c.counters().unmatched, 1);
    assert!(!c.is_registered());
    // The genuine answer is still accepted and its key learned.
    let addr: SocketAddr = "203.0.113.9:1000".parse().unwrap();
    sim.clients.push((c, addr));
    sim.run();
    let genuine = crate::registry::server::tests::registry_identity().public_key();
    assert!(sim.clients[0].0.is_registered());
    assert_eq!(sim.clients[0].0.registry_key(reg), Some(genuine));
}

#[test]
fn a_spoofed_registered_after_the_genuine_one_or_after_registry_loss_is_ignored() {
    let mut sim = Sim::new(1);
    let reg = sim.registry_addr;
    let genuine = crate::registry::server::tests::registry_identity().public_key();
    let impostor = Identity::from_seed([77; 32]);
    assert_eq!(sim.clients[0].0.registry_key(reg), Some(genuine));
    // The registry goes silent: the client loses it and registers again.
    sim.registry_up = false;
    sim.advance(Duration::from_secs(90));
    assert!(sim
        .events(0)
        .contains(&ClientEvent::RegistryLost { registry: reg }));
    // Even one who sees the nonce of our new registration cannot replace the key.
    let (_, register) = sim
        .sent_to_registry
        .iter()
        .rfind(|(_, b)| b[2] == 0x01)
        .cloned()
        .unwrap();
    let before = sim.clients[0].0.counters().bad_signature;
    let spoof = self_signed_registered(&impostor, nonce_of(&register));
    sim.clients[0].0.handle_datagram(sim.now, reg, &spoof);
    sim.clients[0]
        .0
        .handle_datagram(sim.now, reg, &self_signed_registered(&impostor, [7; 16]));
    assert_eq!(sim.clients[0].0.registry_key(reg), Some(genuine));
    assert_eq!(sim.clients[0].0.counters().bad_signature, before + 1);
    assert!(!sim.clients[0].0.is_registered());
    // The genuine registry comes back and is believed.
    sim.registry_up = true;
    sim.advance(Duration::from_secs(31));
    assert!(sim.clients[0].0.is_registered());
    assert_eq!(sim.clients[0].0.registry_key(reg), Some(genuine));
}

#[test]
fn a_learned_registry_key_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(REGISTRY_KEYS_FILE);
    let mut sim = Sim::new(0);
    let reg = sim.registry_addr;
    let genuine = crate::registry::server::tests::registry_identity().public_key();
    let mut cfg = ClientConfig::new(vec![reg]);
    cfg.learned_keys = LearnedKeys::open(&path).unwrap();
    let addr: SocketAddr = "203.0.113.9:1000".parse().unwrap();
    sim.clients.push((fresh_client(&sim, cfg), addr));
    sim.run();
    assert!(sim.clients[0].0.is_registered());
    // A restart: the key is known before any answer, so even a spoofer who sees the first
    // registration's nonce is refused.
    let mut cfg = ClientConfig::new(vec![reg]);
    cfg.learned_keys = LearnedKeys::open(&path).unwrap();
    let mut c = fresh_client(&sim, cfg);
    assert_eq!(c.registry_key(reg), Some(genuine));
    assert!(!c.registry_key_pinned(reg));
    let (_, register) = c.poll_transmit().unwrap();
    let impostor = Identity::from_seed([77; 32]);
    c.handle_datagram(
        sim.now,
        reg,
        &self_signed_registered(&impostor, nonce_of(&register)),
    );
    assert_eq!(c.registry_key(reg), Some(genuine));
    assert_eq!(c.counters().bad_signature, 1);
    // Forgetting the key (operator action) learns it anew on first use.
    c.forget_registry_key(sim.now, reg).unwrap();
    assert_eq!(c.registry_key(reg), None);
    assert_eq!(LearnedKeys::open(&path).unwrap().get(&reg), None);
}

/// A trust request from `from` to `to`, pushed by a registry signing with `registry`.
fn trust_push(sim: &Sim, from: &Identity, to: PublicKey, registry: &Identity) -> Vec<u8> {
    let inner = Request {
        header: Header {
            sender: from.public_key(),
            nonce: [3; 16],
            timestamp_ms: sim.unix(),
        },
        body: RequestBody::TrustRequest {
            target: to,
            justification: "hi".into(),
        },
    }
    .encode_signed(from)
    .unwrap();
    Response {
        in_reply_to: [4; 16],
        body: ResponseBody::PushTrustRequest {
            hostname: Some(Hostname::new("orchestrator").unwrap()),
            original: inner,
        },
    }
    .encode_signed(registry)
    .unwrap()
}

#[test]
fn hostnames_count_only_from_registries_whose_key_is_pinned_or_persisted() {
    let registry = crate::registry::server::tests::registry_identity();
    let asker = Identity::from_seed([50; 32]);
    let hostname_of = |c: &mut Client| {
        std::iter::from_fn(|| c.poll_event()).find_map(|e| match e {
            ClientEvent::TrustRequestReceived { hostname, .. } => Some(hostname),
            _ => None,
        })
    };
    // The key was learned but could not be saved (the state directory is gone): believed for
    // this run, but the hostname it vouches for is dropped.
    let dir = tempfile::tempdir().unwrap();
    let mut sim = Sim::new(0);
    let reg = sim.registry_addr;
    let mut cfg = ClientConfig::new(vec![reg]);
    cfg.learned_keys = LearnedKeys::open(&dir.path().join("gone/keys.json")).unwrap();
    let addr: SocketAddr = "203.0.113.9:1000".parse().unwrap();
    sim.clients.push((fresh_client(&sim, cfg), addr));
    sim.run();
    assert!(sim.clients[0].0.is_registered());
    let me = sim.key(0);
    let push = trust_push(&sim, &asker, me, &registry);
    let c = &mut sim.clients[0].0;
    c.poll_event();
    c.handle_datagram(sim.now, reg, &push);
    assert_eq!(hostname_of(c), Some(None));
    assert_eq!(c.counters().unvouched_hostnames, 1);
    // Pinned: the hostname is kept.
    let mut cfg = ClientConfig::new(vec![reg]);
    cfg.pinned_keys.insert(reg, registry.public_key());
    let mut c = fresh_client(&sim, cfg);
    c.handle_datagram(sim.now, reg, &push);
    assert_eq!(
        hostname_of(&mut c),
        Some(Some(Hostname::new("orchestrator").unwrap()))
    );
}

#[test]
fn clock_offsets_are_bounded_and_never_overflow() {
    let day = DEFAULT_MAX_CLOCK_OFFSET;
    assert_eq!(requests::clock_offset(T0 + 5_000, T0, day), Some(5_000));
    assert_eq!(requests::clock_offset(T0, T0 + 5_000, day), Some(-5_000));
    for (theirs, ours) in [(u64::MAX, 0), (0, u64::MAX), (1 << 63, T0), (T0, 1 << 63)] {
        assert_eq!(requests::clock_offset(theirs, ours, day), None);
    }
    // Without a bound, what does not fit an i64 is still refused.
    for (theirs, ours) in [(u64::MAX, 0), (0, u64::MAX)] {
        assert_eq!(requests::clock_offset(theirs, ours, Duration::MAX), None);
    }
    assert_eq!(
        requests::clock_offset(u64::MAX, u64::MAX, Duration::ZERO),
        Some(0)
    );
    // A stale_timestamp answer with an absurd registry clock is ignored, not a panic.
    let sim = Sim::new(0);
    let reg = sim.registry_addr;
    for registry_time_ms in [1u64 << 63, u64::MAX, 0] {
        let mut c = fresh_client(&sim, ClientConfig::new(vec![reg]));
        let (_, register) = c.poll_transmit().unwrap();
        let stale = Response {
            in_reply_to: nonce_of(&register),
            body: ResponseBody::Error {
                status: Status::StaleTimestamp,
                registry_time_ms,
                message: String::new(),
            },
        }
        .encode_signed(&crate::registry::server::tests::registry_identity())
        .unwrap();
        c.handle_datagram(sim.now, reg, &stale);
        assert_eq!(c.counters().clock_offset_refused, 1);
        assert_eq!(c.unix_ms_at(sim.now), sim.unix());
        // The registration stays in flight and is retried later, with our own clock.
        assert!(c.poll_transmit().is_none());
    }
}
