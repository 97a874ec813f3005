//! The SOCKS5 UDP relay's header parser (RFC 1928 §7) on any datagram a local client sends:
//! a parsed header never claims more bytes than the datagram or the longest header has, an
//! IP target re-encodes to the bytes it took (with FRAG restored), and every target is
//! classified against the default overlay network without a panic.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use pilot::mapping::DEFAULT_NETWORK;
use pilot::userspace::socks5::{
    classify, encode_udp_header, parse_udp_header, Target, MAX_UDP_HEADER,
};

fuzz_target!(|data: &[u8]| {
    let Ok(h) = parse_udp_header(data) else {
        return;
    };
    assert!(h.len <= data.len());
    assert!(h.len <= MAX_UDP_HEADER);
    if let Target::Ip(a) = &h.target {
        let mut again = Vec::new();
        encode_udp_header(*a, &mut again);
        again[2] = h.frag;
        // An IPv4-mapped form is the client's choice of ATYP: compare by address family.
        if matches!(a, SocketAddr::V6(_)) == (data[3] == 4) {
            assert_eq!(again, data[..h.len]);
        }
    }
    let _ = classify(&h.target, &DEFAULT_NETWORK);
});
