//! The registry server's sans-IO core, `Registry::handle`, fed a sequence of datagrams from a
//! few source addresses, with the clock moving and `handle_timeout` running between them.
//!
//! Input: records of `op, source, signer, stamp, len (u16 LE), bytes…`. With signer 0 the bytes go as
//! they are (a stranger's garbage, relay frames); with signer k the bytes, if they decode, are
//! re-signed by fixed identity k with the timestamp moved near the registry's clock, so the
//! fuzzer reaches every request handler (registration, names, trust pushes, endpoints, relay).
//! Every datagram the registry sends must be a relay delivery, a fixed-size unsigned `Challenge`,
//! or a response that decodes,
//! verifies under the registry's key and fits in one datagram.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use pilot::identity::Identity;
use pilot::registry::server::{Limits, Registry};
use pilot::registry::store::MemoryStore;
use pilot::wire::registry::{
    Request, Response, ResponseBody, WireError, CHALLENGE_LEN, MAX_DATAGRAM, SIGNATURE_DOMAIN,
};
use pilot::wire::relay;

const T0: u64 = 1_750_000_000_000;
const SIG: usize = 64;

struct Fixture {
    registry: Arc<Identity>,
    nodes: Vec<Identity>,
    sources: Vec<SocketAddr>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| Fixture {
        registry: Arc::new(Identity::from_seed([9; 32])),
        nodes: (1..=4u8).map(|i| Identity::from_seed([i; 32])).collect(),
        sources: vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), 40000),
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)), 40000),
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)), 5555),
            SocketAddr::new(
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
                7,
            ),
        ],
    })
}

/// Re-signs a decodable request as `id`, its timestamp moved to `now + skew` seconds.
fn resign(data: &[u8], id: &Identity, now: u64, skew: i8) -> Vec<u8> {
    let mut v = data[..data.len() - SIG].to_vec();
    v[3..35].copy_from_slice(id.public_key().as_bytes());
    let ts = now.saturating_add_signed(i64::from(skew) * 1000);
    v[51..59].copy_from_slice(&ts.to_be_bytes());
    let mut signed = SIGNATURE_DOMAIN.to_vec();
    signed.extend_from_slice(&v);
    v.extend_from_slice(&id.sign(&signed));
    v
}

fn check_out(f: &Fixture, out: &[(SocketAddr, Vec<u8>)]) {
    for (_, b) in out {
        if relay::is_relay(b) {
            assert!(
                relay::parse(b, relay::RELAY_DELIVER).is_some(),
                "bad relay frame sent"
            );
            continue;
        }
        assert!(
            b.len() <= MAX_DATAGRAM,
            "oversized response: {} bytes",
            b.len()
        );
        let r = Response::decode(b).unwrap_or_else(|e| panic!("undecodable response: {e}"));
        if matches!(r.body, ResponseBody::Challenge { .. }) {
            // The one unsigned answer (return-routability cookie): fixed size, never signed.
            assert_eq!(b.len(), CHALLENGE_LEN, "challenge of {} bytes", b.len());
            continue;
        }
        assert!(
            Response::verify(b, &f.registry.public_key()),
            "unsigned response {r:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Ok(mut reg) = Registry::new(
        f.registry.clone(),
        Box::new(MemoryStore::new()),
        Limits::default(),
        T0,
    ) else {
        return;
    };
    let mut now = T0;
    let mut rest = data;
    while let Some((head, tail)) = rest.split_first_chunk::<6>() {
        let [op, source, signer, stamp, lo, hi] = *head;
        let len = usize::from(u16::from_le_bytes([lo, hi])).min(tail.len());
        let (bytes, tail) = tail.split_at(len);
        rest = tail;
        if op % 8 == 0 {
            now += u64::from(stamp) * 1000;
            reg.handle_timeout(now);
            continue;
        }
        let from = f.sources[usize::from(source) % f.sources.len()];
        let signer = usize::from(signer) % (f.nodes.len() + 1);
        let decodes = matches!(
            Request::decode_verified(bytes),
            Ok(_) | Err(WireError::BadSignature)
        );
        let datagram = if signer > 0 && decodes {
            resign(bytes, &f.nodes[signer - 1], now, stamp as i8)
        } else {
            bytes.to_vec()
        };
        let out = reg.handle(now, from, &datagram);
        check_out(f, &out);
    }
});
