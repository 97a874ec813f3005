//! Tests of the registry core, and helpers other modules' tests use.

use super::*;
use crate::identity::Identity;
use crate::registry::store::MemoryStore;
use crate::wire::registry::{Header, TrustDecision, CHALLENGE_LEN};

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
    memory_registry(Limits::default(), T0)
}

/// A registry on an in-memory store, signing as [`registry_identity`], started at `unix_ms`
/// (the in-memory tests of the node and its registry client use it too).
pub(crate) fn memory_registry(limits: Limits, unix_ms: u64) -> Registry {
    Registry::new(
        registry_identity(),
        Box::new(MemoryStore::new()),
        limits,
        unix_ms,
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

/// Registers `n` the way a node does: a first `Register`, and if the registry challenges the
/// source address, the same again with the cookie. Returns the answers to the last one.
pub(crate) fn register(
    r: &mut Registry,
    n: &mut TestNode,
    now: u64,
    name: Option<&str>,
) -> Vec<(SocketAddr, Response)> {
    let body = |cookie| RequestBody::Register {
        hostname: name.map(|s| Hostname::new(s).unwrap()),
        candidates: vec![],
        cookie,
    };
    let out = send(r, n, now, body(None));
    match out.first().map(|(_, resp)| &resp.body) {
        Some(ResponseBody::Challenge { cookie }) => send(r, n, now, body(Some(*cookie))),
        _ => out,
    }
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
    // (A Register without a cookie from an unproven address is never verified: it is
    // challenged, replayed or not, and changes nothing. Replays matter for verified requests.)
    let mut r = registry();
    let mut a = TestNode::new(1, 1000);
    register(&mut r, &mut a, T0, None);
    let accepted = r.counters().accepted;
    let bytes = a.signed(T0, RequestBody::Heartbeat);
    assert_eq!(r.handle(T0, a.addr, &bytes).len(), 1);
    assert!(r.handle(T0 + 10, a.addr, &bytes).is_empty());
    assert!(r
        .handle(T0 + 20, "203.0.113.9:1".parse().unwrap(), &bytes)
        .is_empty());
    assert_eq!(r.counters().replayed, 2);
    assert_eq!(r.counters().accepted, accepted + 1);
}

#[test]
fn a_replay_is_dropped_before_its_signature_is_checked() {
    let mut r = registry();
    let mut a = TestNode::new(1, 1000);
    register(&mut r, &mut a, T0, None);
    let bytes = a.signed(T0, RequestBody::Heartbeat);
    assert_eq!(r.handle(T0, a.addr, &bytes).len(), 1);
    // The same nonce under a broken signature: no verification happens (it would count
    // bad_signature); the nonce alone condemns it.
    let mut forged = bytes.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    assert!(r.handle(T0 + 5, a.addr, &forged).is_empty());
    assert_eq!(r.counters().bad_signature, 0);
    assert_eq!(r.counters().replayed, 1);
}

#[test]
fn replay_after_the_window_is_refused_as_stale() {
    let mut r = registry();
    let mut a = TestNode::new(1, 1000);
    register(&mut r, &mut a, T0, None);
    let bytes = a.signed(T0, RequestBody::Heartbeat);
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
    assert!(matches!(&out[0].1.body, ResponseBody::LookupResult { key, .. } if *key == b.key()));
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
    let mut r = memory_registry(limits, T0);
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
    // b registered once, then went offline.
    register(&mut r, &mut b, T0, None);
    let t = T0 + r.limits().online_timeout_ms + 1;
    r.handle_timeout(t);
    register(&mut r, &mut a, t, None);
    let out = send(&mut r, &mut a, t, trust_request(&b));
    assert_eq!(out.len(), 1, "acked, nothing pushed");
    assert_eq!(r.held_for(&b.key()), 1);

    let out = register(&mut r, &mut b, t + 10_000, None);
    assert_eq!(out.len(), 2);
    assert!(matches!(out[0].1.body, ResponseBody::Registered { .. }));
    assert_eq!(out[1].0, b.addr);
    let push_id = out[1].1.in_reply_to;
    assert!(matches!(
        out[1].1.body,
        ResponseBody::PushTrustRequest { .. }
    ));

    // Until acknowledged it is pushed again with each heartbeat ...
    let out = send(&mut r, &mut b, t + 30_000, RequestBody::Heartbeat);
    assert_eq!(out.len(), 2);
    // ... and not after.
    send(
        &mut r,
        &mut b,
        t + 31_000,
        RequestBody::Delivered {
            nonces: vec![push_id],
        },
    );
    assert_eq!(r.held_for(&b.key()), 0);
    let out = send(&mut r, &mut b, t + 50_000, RequestBody::Heartbeat);
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
    let mut r = memory_registry(limits, T0);
    let mut target = TestNode::new(99, 1000);
    register(&mut r, &mut target, T0, None);
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
fn endpoint_request_is_forwarded_only_to_an_online_target_and_only_its_answer_comes_back() {
    let mut r = registry();
    let mut a = TestNode::new(1, 1000);
    let mut b = TestNode::new(2, 2000);
    let mut c = TestNode::new(3, 3000);
    register(&mut r, &mut a, T0, None);
    let local: SocketAddr = "10.0.0.2:51820".parse().unwrap();
    // Offline target: acknowledged like any other (see the test below), nothing forwarded.
    let out = send(
        &mut r,
        &mut a,
        T0,
        RequestBody::EndpointRequest {
            target: b.key(),
            candidates: vec![],
            home: None,
        },
    );
    assert_eq!(out.len(), 1);
    assert!(matches!(out[0].1.body, ResponseBody::Ack { .. }));

    register(&mut r, &mut b, T0, None);
    register(&mut r, &mut c, T0, None);
    let out = send(
        &mut r,
        &mut a,
        T0 + 1,
        RequestBody::EndpointRequest {
            target: b.key(),
            candidates: vec![local],
            home: None,
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
            home: None,
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
            home: None,
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
            home: None,
        },
    );
    assert_eq!(status_of(&out[0].1), Some(Status::NotFound));
}

/// Registers `a` and `b` and runs an endpoint exchange a → b (which allows relaying).
pub(crate) fn exchange(r: &mut Registry, a: &mut TestNode, b: &mut TestNode, now: u64) {
    let out = send(
        r,
        a,
        now,
        RequestBody::EndpointRequest {
            target: b.key(),
            candidates: vec![],
            home: None,
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
            home: None,
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
    // b's NAT mapping moves: a request from the new port does not move presence (anyone could
    // send it from there); its heartbeat is challenged and its registration with the cookie
    // moves it.
    b.addr = "198.51.100.2:2999".parse().unwrap();
    exchange(&mut r, &mut a, &mut b, T0 + 2);
    let frame = relay::frame(relay::RELAY_SEND, b.key().addr48(), &[4u8; 40]);
    assert_ne!(r.handle(T0 + 2, a.addr, &frame)[0].0, b.addr);
    let out = send(&mut r, &mut b, T0 + 2, RequestBody::Heartbeat);
    assert!(matches!(out[0].1.body, ResponseBody::Challenge { .. }));
    register(&mut r, &mut b, T0 + 2, None);
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
    let mut r = memory_registry(limits, T0);
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
        register(&mut r, &mut b, T0, None);
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
    let mut r = Registry::new(registry_identity(), Box::new(store), Limits::default(), T0).unwrap();
    let mut a = TestNode::new(1, 1000);
    let mut b = TestNode::new(2, 1000);
    // Registration stands when its record cannot be written (logged).
    register(&mut r, &mut a, T0, None);
    register(&mut r, &mut b, T0, None);
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

/// Every request a spoofer can send, in its smallest form (the worst ratio of answer to
/// request), signed by `attacker`, about `other` (a registered node) where a target is needed.
fn spoofable_bodies(other: &TestNode) -> Vec<RequestBody> {
    let name = Hostname::new("x").unwrap();
    vec![
        RequestBody::Register {
            hostname: None,
            candidates: vec![],
            cookie: None,
        },
        RequestBody::Register {
            hostname: Some(name.clone()),
            candidates: vec![],
            cookie: Some([7; 16]),
        },
        RequestBody::Heartbeat,
        RequestBody::SetHostname {
            hostname: Hostname::new("worker-node").unwrap(),
        },
        RequestBody::SetHostname {
            hostname: name.clone(),
        },
        RequestBody::ReleaseHostname,
        RequestBody::Lookup {
            hostname: name.clone(),
        },
        RequestBody::Lookup {
            hostname: Hostname::new("worker-node").unwrap(),
        },
        RequestBody::TrustRequest {
            target: other.key(),
            justification: String::new(),
        },
        RequestBody::TrustResponse {
            target: other.key(),
            in_reply_to: [0; 16],
            decision: TrustDecision::Revoke,
            reason: String::new(),
        },
        RequestBody::EndpointRequest {
            target: other.key(),
            candidates: vec![],
            home: None,
        },
        RequestBody::EndpointResponse {
            target: other.key(),
            in_reply_to: [1; 16],
            candidates: vec![],
            home: None,
        },
        RequestBody::Delivered { nonces: vec![] },
    ]
}

#[test]
fn a_spoofed_source_never_gets_more_bytes_than_it_sent_and_never_moves_presence() {
    // The attacker holds a registered key with a full queue of held messages (sent by its own
    // throwaway keys), and signs requests that claim to come from the victim's address.
    let mut r = registry();
    let mut attacker = TestNode::new(1, 1000);
    let mut worker = TestNode::new(2, 2000);
    register(&mut r, &mut worker, T0, Some("worker-node"));
    register(&mut r, &mut attacker, T0, None);
    for i in 0..r.limits().held_per_target as u8 {
        let mut sybil = TestNode::new(100 + i, 3000);
        send(&mut r, &mut sybil, T0, trust_request(&attacker));
    }
    assert_eq!(r.held_for(&attacker.key()), r.limits().held_per_target);
    let mut stranger = TestNode::new(3, 4000);
    for v in ["203.0.113.7:53", "[2001:db8::7]:53"] {
        let victim: SocketAddr = v.parse().unwrap();
        for who in [&mut attacker, &mut stranger] {
            for (i, body) in spoofable_bodies(&worker).into_iter().enumerate() {
                let now = T0 + 1 + i as u64;
                for ts in [now, now - 120_000] {
                    let bytes = who.signed(ts, body.clone());
                    let out = r.handle(now, victim, &bytes);
                    let sent: usize = out
                        .iter()
                        .filter(|(to, _)| *to == victim)
                        .map(|(_, b)| b.len())
                        .sum();
                    assert!(
                        sent <= bytes.len(),
                        "{} at {ts}: {sent} bytes out for {} in",
                        body.name(),
                        bytes.len()
                    );
                }
            }
        }
        assert!(r.is_online(&attacker.key(), T0 + 100));
        assert_eq!(
            r.presence[&attacker.key()].addr,
            attacker.addr,
            "presence stayed"
        );
        assert!(!r.is_online(&stranger.key(), T0 + 100), "never registered");
    }
    assert!(r.counters().challenged > 0);
}

#[test]
fn a_stranger_cannot_tell_whether_a_target_is_online_offline_or_unknown() {
    let mut r = registry();
    let mut stranger = TestNode::new(1, 1000);
    let mut online = TestNode::new(2, 2000);
    let mut offline = TestNode::new(3, 3000);
    let unknown = TestNode::new(4, 4000);
    register(&mut r, &mut stranger, T0, None);
    register(&mut r, &mut offline, T0, Some("node-down"));
    let later = T0 + r.limits().online_timeout_ms + 1;
    r.handle_timeout(later);
    register(&mut r, &mut stranger, later, None);
    register(&mut r, &mut online, later, Some("node-up-1"));
    assert!(r.is_online(&online.key(), later) && !r.is_online(&offline.key(), later));
    // What the stranger gets back: the datagrams to it, with the nonce and signature (which
    // differ per request) left out.
    let mut answer = |r: &mut Registry, body: RequestBody| -> Vec<Vec<u8>> {
        let bytes = stranger.signed(later, body);
        r.handle(later, stranger.addr, &bytes)
            .into_iter()
            .filter(|(to, _)| *to == stranger.addr)
            .map(|(_, b)| [&b[..3], &b[19..b.len() - 64]].concat())
            .collect()
    };
    let punch = |t: &TestNode| RequestBody::EndpointRequest {
        target: t.key(),
        candidates: vec![],
        home: None,
    };
    let to_online = answer(&mut r, punch(&online));
    assert_eq!(to_online, answer(&mut r, punch(&offline)));
    assert_eq!(to_online, answer(&mut r, punch(&unknown)));
    // A lookup tells key and address, never presence.
    let lookup = |n: &str| RequestBody::Lookup {
        hostname: Hostname::new(n).unwrap(),
    };
    let on = answer(&mut r, lookup("node-up-1"));
    let off = answer(&mut r, lookup("node-down"));
    assert_eq!(on[0].len(), off[0].len());
    assert_eq!(on[0][..3], off[0][..3]);
}

#[test]
fn ipv6_sources_share_a_bucket_per_64_and_ipv4_per_address() {
    let limits = Limits {
        ip_burst: 3,
        ip_per_sec: 1,
        ..Limits::default()
    };
    let mut r = memory_registry(limits, T0);
    let mut a = TestNode::new(1, 1000);
    // Five addresses of one /64: one bucket of 3.
    for i in 0..5u16 {
        let from = SocketAddr::new(format!("2001:db8:1:2::{i:x}").parse().unwrap(), 1000 + i);
        r.handle(T0, from, &a.signed(T0, RequestBody::Heartbeat));
    }
    assert_eq!(r.counters().rate_limited, 2);
    assert_eq!(r.ip_buckets.len(), 1);
    // Another /64 and two IPv4 addresses (one mapped into IPv6) have their own.
    let others = ["[2001:db8:1:3::1]:1", "192.0.2.1:1", "[::ffff:192.0.2.2]:1"];
    for from in others {
        r.handle(
            T0,
            from.parse().unwrap(),
            &a.signed(T0, RequestBody::Heartbeat),
        );
    }
    assert_eq!(r.counters().rate_limited, 2);
    assert!(r
        .ip_buckets
        .contains_key(&"192.0.2.2".parse::<IpAddr>().unwrap()));
}

#[test]
fn requests_are_limited_per_key_and_globally() {
    let limits = Limits {
        key_burst: 4,
        key_per_sec: 1,
        ..Limits::default()
    };
    let mut r = memory_registry(limits, T0);
    let mut a = TestNode::new(1, 1000);
    let mut b = TestNode::new(2, 1000);
    // One key from many sources: its own bucket stops it after 4.
    for i in 0..6u8 {
        let from = SocketAddr::from(([198, 51, 100, 10 + i], 1000));
        r.handle(T0, from, &a.signed(T0, RequestBody::Heartbeat));
    }
    assert_eq!(r.counters().accepted, 4);
    assert_eq!(r.counters().rate_limited, 2);
    // Another key is not affected.
    let out = send(&mut r, &mut b, T0, RequestBody::Heartbeat);
    assert_eq!(out.len(), 1);
    // The global bucket bounds all sources and keys together.
    let limits = Limits {
        global_burst: 5,
        global_per_sec: 1,
        ..Limits::default()
    };
    let mut r = memory_registry(limits, T0);
    for i in 0..8u8 {
        let mut n = TestNode::new(10 + i, 1000);
        r.handle(T0, n.addr, &n.signed(T0, RequestBody::Heartbeat));
    }
    assert_eq!(r.counters().rate_limited, 3);
    assert_eq!(r.counters().accepted, 5);
}

#[test]
fn a_full_nonce_store_evicts_the_oldest_and_still_admits_fresh_requests() {
    let limits = Limits {
        max_nonces: 4,
        ..Limits::default()
    };
    let mut r = memory_registry(limits, T0);
    let mut a = TestNode::new(1, 1000);
    let first = a.signed(T0, RequestBody::Heartbeat);
    assert_eq!(r.handle(T0, a.addr, &first).len(), 1);
    for i in 1..10 {
        let bytes = a.signed(T0 + i, RequestBody::Heartbeat);
        assert_eq!(
            r.handle(T0 + i, a.addr, &bytes).len(),
            1,
            "fresh request {i}"
        );
    }
    assert_eq!(r.nonces.len(), 4);
    assert_eq!(r.counters().nonces_evicted, 6);
    // The evicted nonce cannot be replayed: requests as old as it are refused.
    assert!(r.handle(T0 + 20, a.addr, &first).is_empty());
    assert_eq!(r.counters().replayed, 1);
}

#[test]
fn messages_are_held_only_for_registered_targets_and_names_need_a_registration() {
    let mut r = registry();
    let mut a = TestNode::new(1, 1000);
    let mut b = TestNode::new(2, 2000);
    register(&mut r, &mut a, T0, None);
    // b never registered here: nothing is held for it.
    let out = send(&mut r, &mut a, T0, trust_request(&b));
    assert_eq!(status_of(&out[0].1), Some(Status::NotFound));
    assert_eq!(r.held_for(&b.key()), 0);
    assert_eq!(r.counters().unknown_target, 1);
    // SetHostname is refused to an unregistered key.
    let name = RequestBody::SetHostname {
        hostname: Hostname::new("squatter").unwrap(),
    };
    let out = send(&mut r, &mut b, T0, name.clone());
    assert_eq!(status_of(&out[0].1), Some(Status::UnknownNode));
    assert!(!r.names.contains_key(&Hostname::new("squatter").unwrap()));
    // Once b registered, both work, also after it went offline.
    register(&mut r, &mut b, T0, None);
    let out = send(&mut r, &mut b, T0, name);
    assert!(matches!(out[0].1.body, ResponseBody::Ack { .. }));
    r.handle_timeout(T0 + 100_000);
    let out = send(&mut r, &mut a, T0 + 100_000, trust_request(&b));
    assert!(matches!(out[0].1.body, ResponseBody::Ack { .. }));
    assert_eq!(r.held_for(&b.key()), 1);
}

#[test]
fn names_expire_when_their_key_is_silent_past_the_registration_expiry() {
    let hour = 3600 * 1000;
    let limits = Limits {
        registration_expiry_ms: 3 * hour,
        ..Limits::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.redb");
    let open = |at: u64| {
        let store = crate::registry::store::RedbStore::open(&path).unwrap();
        Registry::new(registry_identity(), Box::new(store), limits.clone(), at).unwrap()
    };
    let mut r = open(T0);
    let mut silent = TestNode::new(1, 1000);
    let mut alive = TestNode::new(2, 2000);
    register(&mut r, &mut silent, T0, Some("silent"));
    register(&mut r, &mut alive, T0, Some("alive"));
    // `alive` heartbeats (every 20 s) for four hours, across a restart of the registry; `silent`
    // is never heard again.
    let mut now = T0;
    while now < T0 + 4 * hour {
        now += 20_000;
        if now == T0 + 2 * hour {
            drop(r);
            r = open(now);
            register(&mut r, &mut alive, now, None);
        }
        let out = send(&mut r, &mut alive, now, RequestBody::Heartbeat);
        assert!(
            matches!(out[0].1.body, ResponseBody::Ack { .. }),
            "at {now}"
        );
        if now % 600_000 == 0 {
            r.handle_timeout(now);
        }
    }
    r.handle_timeout(now);
    assert!(r.names.contains_key(&Hostname::new("alive").unwrap()));
    assert!(!r.names.contains_key(&Hostname::new("silent").unwrap()));
    assert_eq!(r.counters().names_expired, 1);
    assert!(!r.is_registered(&silent.key()));
    // The release is persisted, and another key can take the name.
    drop(r);
    let mut r = open(now);
    let mut other = TestNode::new(3, 3000);
    let out = register(&mut r, &mut other, now, Some("silent"));
    assert!(matches!(
        out[0].1.body,
        ResponseBody::Registered {
            hostname: HostnameStatus::Granted,
            ..
        }
    ));
}

/// `bytes` with its signature broken, as a spoofer's copy of a signed request with a fresh
/// nonce is.
fn forged(mut bytes: Vec<u8>, i: u32) -> Vec<u8> {
    bytes[35..39].copy_from_slice(&(i | 1 << 31).to_be_bytes());
    bytes
}

#[test]
fn spoofed_registrations_are_challenged_without_signature_work_and_a_real_node_still_registers() {
    let limits = Limits {
        challenge_burst: 1000,
        challenge_per_sec: 10,
        ..Limits::default()
    };
    let mut r = memory_registry(limits, T0);
    let mut template = TestNode::new(9, 9);
    let reg = template.signed(
        T0,
        RequestBody::Register {
            hostname: None,
            candidates: vec![],
            cookie: None,
        },
    );
    for i in 0..1200u32 {
        let from = SocketAddr::from(([10, (i >> 8) as u8, i as u8, 1], 1024));
        let bytes = forged(reg.clone(), i);
        let out = r.handle(T0, from, &bytes);
        if i < 1000 {
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].0, from);
            assert_eq!(out[0].1.len(), CHALLENGE_LEN);
            assert!(out[0].1.len() < bytes.len());
            let resp = Response::decode(&out[0].1).unwrap();
            assert_eq!(resp.in_reply_to, Request::peek(&bytes).unwrap().nonce);
        } else {
            assert!(out.is_empty(), "over the challenge budget: dropped");
        }
    }
    let c = r.counters();
    assert_eq!(c.bad_signature, 0, "no signature was checked");
    assert_eq!((c.challenged, c.challenge_limited), (1000, 200));
    // The budget refills; a real node registers through its challenge.
    let mut a = TestNode::new(1, 1000);
    let out = register(&mut r, &mut a, T0 + 1000, Some("worker-node"));
    assert!(matches!(out[0].1.body, ResponseBody::Registered { .. }));
    assert!(r.is_online(&a.key(), T0 + 1000));
    // A forged copy echoing a valid cookie (only an on-path attacker has one) is verified.
    let cookie = r.current_cookie(T0 + 1000, a.key().as_bytes(), a.addr);
    let with_cookie = a.signed(
        T0 + 1000,
        RequestBody::Register {
            hostname: None,
            candidates: vec![],
            cookie: Some(cookie),
        },
    );
    assert!(r
        .handle(T0 + 1000, a.addr, &forged(with_cookie, 7))
        .is_empty());
    assert_eq!(r.counters().bad_signature, 1);
}

#[test]
fn other_requests_from_unproven_addresses_get_signature_work_only_within_their_budget() {
    let limits = Limits {
        unproven_burst: 5,
        unproven_per_sec: 1,
        ..Limits::default()
    };
    let mut r = memory_registry(limits, T0);
    let mut a = TestNode::new(1, 1000);
    register(&mut r, &mut a, T0, None);
    let mut template = TestNode::new(9, 9);
    let hb = template.signed(T0, RequestBody::Heartbeat);
    for i in 0..50u32 {
        let from = SocketAddr::from(([10, 0, i as u8, 1], 1024));
        assert!(r.handle(T0, from, &forged(hb.clone(), i)).is_empty());
    }
    assert_eq!(r.counters().bad_signature, 5);
    // Proven traffic has its own lane: the registered node is not starved.
    let out = send(&mut r, &mut a, T0, RequestBody::Heartbeat);
    assert!(matches!(out[0].1.body, ResponseBody::Ack { .. }));
}
