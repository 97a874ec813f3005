//! Round trips, tampering and the decoders' refusal of malformed input.

use super::*;
use std::net::SocketAddr;

use crate::identity::Identity;
use crate::mapping::Hostname;
use proptest::prelude::*;

fn id(n: u8) -> Identity {
    Identity::from_seed([n; 32])
}

fn req(identity: &Identity, body: RequestBody) -> Request {
    Request {
        header: Header {
            sender: identity.public_key(),
            nonce: [7; 16],
            timestamp_ms: 1_700_000_000_000,
        },
        body,
    }
}

fn all_bodies() -> Vec<RequestBody> {
    let a: SocketAddr = "192.0.2.1:4242".parse().unwrap();
    let b: SocketAddr = "[2001:db8::1]:51820".parse().unwrap();
    let h = Hostname::new("worker-node").unwrap();
    vec![
        RequestBody::Register {
            hostname: Some(h.clone()),
            candidates: vec![a, b],
            cookie: None,
        },
        RequestBody::Register {
            hostname: None,
            candidates: vec![],
            cookie: Some([3; 16]),
        },
        RequestBody::Heartbeat,
        RequestBody::SetHostname {
            hostname: h.clone(),
        },
        RequestBody::ReleaseHostname,
        RequestBody::Lookup { hostname: h },
        RequestBody::TrustRequest {
            target: id(2).public_key(),
            justification: "é".repeat(128),
        },
        RequestBody::TrustResponse {
            target: id(2).public_key(),
            in_reply_to: [9; 16],
            decision: TrustDecision::Revoke,
            reason: "done".into(),
        },
        RequestBody::EndpointRequest {
            target: id(2).public_key(),
            candidates: vec![a; MAX_CANDIDATES],
            home: None,
        },
        RequestBody::EndpointRequest {
            target: id(2).public_key(),
            candidates: vec![a; MAX_CANDIDATES],
            home: Some(b),
        },
        RequestBody::EndpointResponse {
            target: id(2).public_key(),
            in_reply_to: [1; 16],
            candidates: vec![b],
            home: None,
        },
        RequestBody::EndpointResponse {
            target: id(2).public_key(),
            in_reply_to: [1; 16],
            candidates: vec![],
            home: Some(a),
        },
        RequestBody::Delivered {
            nonces: vec![[3; 16]; MAX_DELIVERED],
        },
        RequestBody::SetTags {
            tags: (0..super::MAX_TAGS).map(|i| format!("tag-{i}")).collect(),
        },
        RequestBody::SetTags { tags: vec![] },
        RequestBody::Deregister,
        RequestBody::LookupNode {
            peer: crate::mapping::PeerRef::PublicKey(id(2).public_key()),
        },
        RequestBody::LookupNode {
            peer: crate::mapping::PeerRef::Addr48(id(2).addr48()),
        },
        RequestBody::LookupNode {
            peer: crate::mapping::PeerRef::Hostname(Hostname::new("worker-node").unwrap()),
        },
    ]
}

#[test]
fn every_request_round_trips_and_verifies() {
    let me = id(1);
    for body in all_bodies() {
        let r = req(&me, body);
        let bytes = r.encode_signed(&me).unwrap();
        assert!(bytes.len() <= MAX_DATAGRAM);
        assert_eq!(Request::decode_verified(&bytes).unwrap(), r);
    }
}

#[test]
fn flipping_any_byte_breaks_the_signature_or_the_decoding() {
    let me = id(1);
    let r = req(
        &me,
        RequestBody::TrustRequest {
            target: id(2).public_key(),
            justification: "let me in".into(),
        },
    );
    let bytes = r.encode_signed(&me).unwrap();
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x01;
        assert!(Request::decode_verified(&b).is_err(), "byte {i}");
    }
}

#[test]
fn signing_with_another_identity_is_refused() {
    let r = req(&id(1), RequestBody::Heartbeat);
    assert!(r.encode_signed(&id(2)).is_err());
}

#[test]
fn overlong_justification_is_refused_on_both_sides() {
    let me = id(1);
    let r = req(
        &me,
        RequestBody::TrustRequest {
            target: id(2).public_key(),
            justification: "x".repeat(MAX_JUSTIFICATION + 1),
        },
    );
    assert!(r.encode_signed(&me).is_err());
}

#[test]
fn every_response_round_trips() {
    let a: SocketAddr = "198.51.100.7:9".parse().unwrap();
    let h = Hostname::new("worker-node").unwrap();
    let bodies = vec![
        ResponseBody::Registered {
            observed: a,
            hostname: HostnameStatus::Taken,
            registry_key: id(9).public_key(),
        },
        ResponseBody::Ack { observed: a },
        ResponseBody::Error {
            status: Status::UnknownNode,
            registry_time_ms: 5,
            message: "register again".into(),
        },
        ResponseBody::LookupResult {
            hostname: h.clone(),
            key: id(3).public_key(),
            addr48: id(3).addr48(),
        },
        ResponseBody::PushTrustRequest {
            hostname: Some(h),
            original: vec![1, 2, 3],
        },
        ResponseBody::PushTrustResponse {
            hostname: None,
            original: vec![],
        },
        ResponseBody::PushEndpointRequest {
            observed: a,
            original: vec![0x50; 400],
        },
        ResponseBody::EndpointInfo {
            observed: a,
            original: vec![4],
        },
        ResponseBody::NodeInfo {
            key: id(3).public_key(),
            addr48: id(3).addr48(),
            hostname: Some(Hostname::new("worker-node").unwrap()),
            tags: vec!["gpu".into(), "vector-search".into()],
        },
        ResponseBody::NodeInfo {
            key: id(3).public_key(),
            addr48: id(3).addr48(),
            hostname: None,
            tags: vec![],
        },
    ];
    for body in bodies {
        let r = Response {
            in_reply_to: [5; 16],
            body,
        };
        let bytes = r.encode_signed(&id(9)).unwrap();
        assert_eq!(Response::decode(&bytes).unwrap(), r);
        assert!(Response::verify(&bytes, &id(9).public_key()));
        assert!(!Response::verify(&bytes, &id(8).public_key()));
        let mut tampered = bytes.clone();
        tampered[5] ^= 1;
        assert!(!Response::verify(&tampered, &id(9).public_key()));
    }
}

#[test]
fn long_error_messages_are_truncated_not_refused() {
    let r = Response {
        in_reply_to: [0; 16],
        body: ResponseBody::Error {
            status: Status::Internal,
            registry_time_ms: 0,
            message: "ü".repeat(MAX_ERROR_MESSAGE),
        },
    };
    let back = Response::decode(&r.encode_signed(&id(9)).unwrap()).unwrap();
    match back.body {
        ResponseBody::Error { message, .. } => assert!(message.len() <= MAX_ERROR_MESSAGE),
        _ => panic!(),
    }
}

#[test]
fn wireguard_and_foreign_first_bytes_are_not_control() {
    for first in 1..=4u8 {
        assert!(!is_control(&[first, 0, 0, 0]));
        assert_eq!(
            Response::decode(&[first, 1, 0x81]),
            Err(WireError::NotControl)
        );
    }
    assert_eq!(
        Response::decode(&[MAGIC, 2, 0x81]),
        Err(WireError::UnsupportedVersion(2))
    );
}

proptest! {
    #[test]
    fn decoders_never_panic_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..1300)) {
        let _ = Request::decode_verified(&bytes);
        let _ = Response::decode(&bytes);
        let _ = Response::verify(&bytes, &id(9).public_key());
        let _ = is_request(&bytes);
    }

    #[test]
    fn decoders_never_panic_on_mutated_valid_messages(
        which in 0usize..11,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        let me = id(1);
        let body = all_bodies().swap_remove(which);
        let mut bytes = req(&me, body).encode_signed(&me).unwrap();
        for (i, v) in flips {
            let i = i % bytes.len();
            bytes[i] = v;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        let _ = Request::decode_verified(&bytes);
        // The same bytes behind a response preamble exercise the response decoder.
        let mut resp = vec![MAGIC, VERSION, 0x80 + (which as u8 % 8)];
        resp.extend_from_slice(&bytes);
        let _ = Response::decode(&resp);
    }

    #[test]
    fn trust_requests_round_trip(seed in any::<[u8; 32]>(), text in "\\PC{0,64}", ts in any::<u64>(), nonce in any::<[u8; 16]>()) {
        let me = Identity::from_seed(seed);
        let r = Request {
            header: Header { sender: me.public_key(), nonce, timestamp_ms: ts },
            body: RequestBody::TrustRequest { target: id(2).public_key(), justification: text },
        };
        let bytes = r.encode_signed(&me).unwrap();
        prop_assert_eq!(Request::decode_verified(&bytes).unwrap(), r);
    }
}

#[test]
fn a_challenge_is_unsigned_35_bytes_and_round_trips() {
    let r = Response {
        in_reply_to: [5; 16],
        body: ResponseBody::Challenge { cookie: [8; 16] },
    };
    let bytes = r.encode_signed(&id(9)).unwrap();
    assert_eq!(bytes, Response::challenge(&[5; 16], &[8; 16]));
    assert_eq!(bytes.len(), CHALLENGE_LEN);
    assert_eq!(Response::decode(&bytes).unwrap(), r);
    // No signature: one never verifies, and nothing may follow the cookie.
    assert!(!Response::verify(&bytes, &id(9).public_key()));
    let mut long = bytes.clone();
    long.push(0);
    assert_eq!(Response::decode(&long), Err(WireError::TrailingBytes));
    assert_eq!(
        Response::decode(&bytes[..CHALLENGE_LEN - 1]),
        Err(WireError::Truncated)
    );
}

#[test]
fn peek_reads_type_sender_nonce_and_cookie_without_checking_the_signature() {
    let me = id(1);
    let body = |cookie| RequestBody::Register {
        hostname: Some(Hostname::new("worker-node").unwrap()),
        candidates: vec!["192.0.2.1:5".parse().unwrap()],
        cookie,
    };
    for (b, cookie, register) in [
        (body(Some([3; 16])), Some([3; 16]), true),
        (body(None), None, true),
        (RequestBody::Heartbeat, None, false),
    ] {
        let mut bytes = req(&me, b).encode_signed(&me).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1; // a broken signature does not matter here
        let p = Request::peek(&bytes).unwrap();
        assert_eq!(p.sender, *me.public_key().as_bytes());
        assert_eq!(p.nonce, req(&me, RequestBody::Heartbeat).header.nonce);
        assert_eq!(p.cookie, cookie);
        assert_eq!(p.is_register(), register);
    }
    assert!(Request::peek(&[MAGIC, VERSION, 0x01]).is_err());
    let reg = req(&me, body(None)).encode_signed(&me).unwrap();
    let mut bad = reg[..reg.len() - 64].to_vec();
    bad.extend_from_slice(&[1, 2, 3]); // not a cookie: trailing junk
    bad.extend_from_slice(&[0; 64]);
    assert!(Request::peek(&bad).is_err());
}

#[test]
fn a_challenge_is_smaller_than_the_smallest_request() {
    let c = Response {
        in_reply_to: [1; 16],
        body: ResponseBody::Challenge { cookie: [2; 16] },
    }
    .encode_signed(&id(9))
    .unwrap();
    let hb = req(&id(1), RequestBody::Heartbeat)
        .encode_signed(&id(1))
        .unwrap();
    assert!(c.len() < hb.len(), "{} < {}", c.len(), hb.len());
}

#[test]
fn tags_that_break_the_rules_are_refused_on_both_sides() {
    let me = id(1);
    for tags in [
        vec!["GPU".to_string()],
        vec!["a".into(), "a".into()],
        vec![String::new()],
    ] {
        let body = RequestBody::SetTags { tags: tags.clone() };
        assert!(req(&me, body).encode_signed(&me).is_err(), "{tags:?}");
    }
    // Hand-made: a valid SetTags whose one tag is then made uppercase still verifies as a
    // signature but is refused as a field.
    let good = req(
        &me,
        RequestBody::SetTags {
            tags: vec!["gpu".into()],
        },
    );
    let mut bytes = good.encode_signed(&me).unwrap();
    let at = bytes.len() - 64 - 3;
    bytes[at] = b'G';
    assert!(matches!(
        Request::decode_unverified(&bytes),
        Err(super::WireError::Invalid(_))
    ));
}

#[test]
fn the_home_relay_is_an_optional_trailing_address_a_v1_3_message_still_decodes() {
    let me = id(1);
    let home: SocketAddr = "203.0.113.7:7946".parse().unwrap();
    let body = |home| RequestBody::EndpointRequest {
        target: id(2).public_key(),
        candidates: vec![],
        home,
    };
    let without = req(&me, body(None)).encode_signed(&me).unwrap();
    let with = req(&me, body(Some(home))).encode_signed(&me).unwrap();
    // v1.3 layout: no home; v1.4 adds exactly one addr (family, 4 bytes, port) before the
    // signature, covered by it.
    assert_eq!(with.len(), without.len() + 7);
    assert_eq!(
        &with[without.len() - 64..with.len() - 64],
        &[4, 203, 0, 113, 7, 0x1f, 0x0a]
    );
    let decoded = Request::decode_verified(&with).unwrap();
    assert!(
        matches!(decoded.body, RequestBody::EndpointRequest { home: Some(h), .. } if h == home)
    );
    assert!(matches!(
        Request::decode_verified(&without).unwrap().body,
        RequestBody::EndpointRequest { home: None, .. }
    ));
    // A registry cannot redirect the relay: the home is signed by the node.
    let mut moved = with.clone();
    let at = with.len() - 64 - 2;
    moved[at] ^= 1;
    assert_eq!(
        Request::decode_verified(&moved),
        Err(WireError::BadSignature)
    );
    // A truncated or unknown-family home is refused, never read as absent.
    let mut bad = with[..with.len() - 64].to_vec();
    bad.truncate(bad.len() - 1);
    let sig = me.sign(&signed_bytes(&bad));
    bad.extend_from_slice(&sig);
    assert!(Request::decode_verified(&bad).is_err());
}
