//! The daemon's resolver as a local program (or anything that reaches its listener) drives it:
//! any datagram goes through `answer` against a fixed snapshot of names and trust. An answer
//! is a well-formed DNS response to the same id with exactly the question asked; nothing
//! panics.
#![no_main]

use hickory_proto::op::{Message, MessageType};
use libfuzzer_sys::fuzz_target;
use pilot::mapping::{Addr48, Hostname, DEFAULT_NETWORK};
use pilot::services::dns::resolve::{answer, Names, Outcome, Zone};

struct Snapshot;

const OWN: Addr48 = Addr48::from_bytes([0x11, 0x11, 0x22, 0x22, 0x33, 0x33]);
const PEER: Addr48 = Addr48::from_bytes([0xab, 0xcd, 0, 1, 0, 2]);

impl Names for Snapshot {
    fn own(&self) -> (Option<Hostname>, Addr48) {
        (Hostname::new("orchestrator").ok(), OWN)
    }
    fn trusted_hostname(&self, hostname: &str) -> Option<Addr48> {
        (hostname == "worker-node").then_some(PEER)
    }
    fn trusted_addr(&self, addr: Addr48) -> bool {
        addr == PEER
    }
}

fuzz_target!(|data: &[u8]| {
    let zone = Zone {
        network: DEFAULT_NETWORK,
        ttl: 5,
    };
    let Ok(reply) = answer(data, &Snapshot, zone) else {
        return;
    };
    let query = Message::from_vec(data).expect("answered, so the query parsed");
    let resp = Message::from_vec(&reply.bytes).expect("our answer parses");
    assert_eq!(resp.id(), query.id());
    assert_eq!(resp.message_type(), MessageType::Response);
    if reply.outcome == Outcome::Answered {
        assert_eq!(resp.queries(), query.queries());
        assert_eq!(resp.answers().len(), 1);
    }
    assert!(reply.bytes.len() <= 512 + data.len());
});
