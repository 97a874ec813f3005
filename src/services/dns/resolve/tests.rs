//! The zone's rules against a fixed snapshot of names and trust.

use std::collections::HashMap;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};

use super::*;

struct Snapshot {
    own: (Option<Hostname>, Addr48),
    trusted: HashMap<String, Addr48>,
}

impl Names for Snapshot {
    fn own(&self) -> (Option<Hostname>, Addr48) {
        self.own.clone()
    }
    fn trusted_hostname(&self, hostname: &str) -> Option<Addr48> {
        self.trusted.get(hostname).copied()
    }
    fn trusted_addr(&self, addr: Addr48) -> bool {
        self.trusted.values().any(|a| *a == addr)
    }
}

const OWN: Addr48 = Addr48::from_bytes([0x11, 0x11, 0x22, 0x22, 0x33, 0x33]);
const WORKER: Addr48 = Addr48::from_bytes([0xab, 0xcd, 0x00, 0x01, 0x00, 0x02]);
const STRANGER: Addr48 = Addr48::from_bytes([0x99, 0x99, 0x99, 0x99, 0x99, 0x99]);

fn snapshot() -> Snapshot {
    Snapshot {
        own: (Some(Hostname::new("orchestrator").unwrap()), OWN),
        trusted: [("worker-node".to_string(), WORKER)].into_iter().collect(),
    }
}

fn zone() -> Zone {
    Zone {
        network: NetworkPrefix::default(),
        ttl: 5,
    }
}

fn query(name: &str, ty: RecordType) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(0x4242)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), ty));
    m.to_vec().unwrap()
}

fn ask(name: &str, ty: RecordType) -> (Message, Outcome) {
    let r = answer(&query(name, ty), &snapshot(), zone()).unwrap();
    (Message::from_vec(&r.bytes).unwrap(), r.outcome)
}

fn aaaa(m: &Message) -> Vec<std::net::Ipv6Addr> {
    m.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::AAAA(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

#[test]
fn a_trusted_peers_hostname_resolves_to_its_overlay_address_with_the_short_ttl() {
    let (m, o) = ask("worker-node.pilot.", RecordType::AAAA);
    assert_eq!(o, Outcome::Answered);
    assert_eq!(m.id(), 0x4242);
    assert_eq!(m.message_type(), MessageType::Response);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.authoritative());
    assert_eq!(aaaa(&m), vec![NetworkPrefix::default().ipv6(WORKER)]);
    assert_eq!(m.answers()[0].ttl(), 5);
    assert_eq!(m.queries().len(), 1);
}

#[test]
fn names_are_case_insensitive_and_need_no_trailing_dot() {
    let (m, o) = ask("Worker-Node.PILOT", RecordType::AAAA);
    assert_eq!(o, Outcome::Answered);
    assert_eq!(aaaa(&m), vec![NetworkPrefix::default().ipv6(WORKER)]);
}

#[test]
fn our_own_hostname_and_address_form_resolve() {
    let own = NetworkPrefix::default().ipv6(OWN);
    assert_eq!(
        aaaa(&ask("orchestrator.pilot.", RecordType::AAAA).0),
        vec![own]
    );
    assert_eq!(
        aaaa(&ask("1111-2222-3333.pilot.", RecordType::AAAA).0),
        vec![own]
    );
    let worker = NetworkPrefix::default().ipv6(WORKER);
    assert_eq!(
        aaaa(&ask("ABCD-0001-0002.pilot.", RecordType::AAAA).0),
        vec![worker]
    );
}

#[test]
fn a_queries_get_noerror_with_no_record_and_the_soa() {
    let (m, o) = ask("worker-node.pilot.", RecordType::A);
    assert_eq!(o, Outcome::NoData);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.answers().is_empty());
    assert_eq!(m.name_servers().len(), 1);
    match m.name_servers()[0].data() {
        RData::SOA(s) => assert_eq!(s.minimum(), 5),
        other => panic!("expected an SOA, got {other:?}"),
    }
}

#[test]
fn untrusted_and_unknown_names_are_nxdomain() {
    for name in [
        "stranger.pilot.",
        "9999-9999-9999.pilot.",
        "a.worker-node.pilot.",
        "under_score.pilot.",
    ] {
        let (m, o) = ask(name, RecordType::AAAA);
        assert_eq!(o, Outcome::NxDomain, "{name}");
        assert_eq!(m.response_code(), ResponseCode::NXDomain, "{name}");
        assert!(m.answers().is_empty());
    }
    let _ = STRANGER;
}

#[test]
fn a_hostname_shaped_like_an_address_is_read_as_the_address() {
    let mut s = snapshot();
    // A trusted peer calling itself by our address's name does not take it.
    s.trusted.insert("1111-2222-3333".into(), WORKER);
    let r = answer(
        &query("1111-2222-3333.pilot.", RecordType::AAAA),
        &s,
        zone(),
    )
    .unwrap();
    let m = Message::from_vec(&r.bytes).unwrap();
    assert_eq!(aaaa(&m), vec![NetworkPrefix::default().ipv6(OWN)]);
}

#[test]
fn names_outside_the_zone_are_refused() {
    for name in ["example.com.", "pilot.example.com.", "."] {
        let (m, o) = ask(name, RecordType::AAAA);
        assert_eq!(o, Outcome::Refused, "{name}");
        assert_eq!(m.response_code(), ResponseCode::Refused);
        assert!(m.answers().is_empty());
    }
}

#[test]
fn a_revoked_peer_stops_resolving_at_the_next_query() {
    let mut s = snapshot();
    let q = query("worker-node.pilot.", RecordType::AAAA);
    assert_eq!(answer(&q, &s, zone()).unwrap().outcome, Outcome::Answered);
    s.trusted.clear();
    assert_eq!(answer(&q, &s, zone()).unwrap().outcome, Outcome::NxDomain);
    // The address form goes with it.
    let q = query("abcd-0001-0002.pilot.", RecordType::AAAA);
    assert_eq!(answer(&q, &s, zone()).unwrap().outcome, Outcome::NxDomain);
}

#[test]
fn a_name_that_changed_key_is_answered_with_the_new_address() {
    let mut s = snapshot();
    let new = Addr48::from_bytes([7, 7, 7, 7, 7, 7]);
    s.trusted.insert("worker-node".into(), new);
    let r = answer(&query("worker-node.pilot.", RecordType::AAAA), &s, zone()).unwrap();
    let m = Message::from_vec(&r.bytes).unwrap();
    assert_eq!(aaaa(&m), vec![NetworkPrefix::default().ipv6(new)]);
}

#[test]
fn the_apex_exists_with_no_address() {
    let (m, o) = ask("pilot.", RecordType::AAAA);
    assert_eq!(o, Outcome::NoData);
    assert_eq!(m.response_code(), ResponseCode::NoError);
}

#[test]
fn responses_and_garbage_get_no_answer() {
    assert_eq!(answer(b"", &snapshot(), zone()), Err(Dropped::Malformed));
    assert_eq!(
        answer(&[0xff; 7], &snapshot(), zone()),
        Err(Dropped::Malformed)
    );
    let (m, _) = ask("worker-node.pilot.", RecordType::AAAA);
    let bytes = m.to_vec().unwrap();
    assert_eq!(answer(&bytes, &snapshot(), zone()), Err(Dropped::NotAQuery));
}

#[test]
fn two_questions_are_a_format_error_and_other_opcodes_not_implemented() {
    let mut m = Message::from_vec(&query("worker-node.pilot.", RecordType::AAAA)).unwrap();
    m.add_query(Query::query(
        Name::from_ascii("orchestrator.pilot.").unwrap(),
        RecordType::AAAA,
    ));
    let r = answer(&m.to_vec().unwrap(), &snapshot(), zone()).unwrap();
    assert_eq!(r.outcome, Outcome::Error);
    let resp = Message::from_vec(&r.bytes).unwrap();
    assert_eq!(resp.response_code(), ResponseCode::FormErr);

    let mut m = Message::from_vec(&query("worker-node.pilot.", RecordType::AAAA)).unwrap();
    m.set_op_code(OpCode::Status);
    let r = answer(&m.to_vec().unwrap(), &snapshot(), zone()).unwrap();
    let resp = Message::from_vec(&r.bytes).unwrap();
    assert_eq!(resp.response_code(), ResponseCode::NotImp);
}

#[test]
fn class_chaos_is_refused_and_edns_is_echoed() {
    let mut m = Message::from_vec(&query("worker-node.pilot.", RecordType::AAAA)).unwrap();
    m.queries_mut()[0].set_query_class(DNSClass::CH);
    let r = answer(&m.to_vec().unwrap(), &snapshot(), zone()).unwrap();
    assert_eq!(r.outcome, Outcome::Refused);

    let mut m = Message::from_vec(&query("worker-node.pilot.", RecordType::AAAA)).unwrap();
    m.set_edns(Edns::new());
    let r = answer(&m.to_vec().unwrap(), &snapshot(), zone()).unwrap();
    let resp = Message::from_vec(&r.bytes).unwrap();
    assert_eq!(resp.max_payload(), EDNS_PAYLOAD);
    assert_eq!(r.outcome, Outcome::Answered);
}

#[test]
fn address_labels_round_trip() {
    assert_eq!(address_label(WORKER), "abcd-0001-0002");
    assert_eq!(parse_address_label("abcd-0001-0002"), Some(WORKER));
    for bad in [
        "abcd.0001.0002",
        "abcd-0001-000",
        "abcd-0001-00021",
        "wxyz-0001-0002",
    ] {
        assert_eq!(parse_address_label(bad), None, "{bad}");
    }
}

proptest::proptest! {
    #[test]
    fn any_bytes_give_an_answer_or_a_drop_never_a_panic(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
        let _ = answer(&b, &snapshot(), zone());
    }
}
