//! Relay frames, both directions: `relay::parse` as a registry parses a `RelaySend` and as a
//! node parses a `RelayDeliver`; a parsed frame rebuilt with `relay::frame` is the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pilot::wire::relay::{
    frame, is_relay, parse, HEADER_LEN, MAX_PAYLOAD, RELAY_DELIVER, RELAY_SEND,
};

fuzz_target!(|data: &[u8]| {
    let relay = is_relay(data);
    for kind in [RELAY_SEND, RELAY_DELIVER] {
        if let Some((peer, payload)) = parse(data, kind) {
            assert!(relay);
            assert!(!payload.is_empty() && payload.len() <= MAX_PAYLOAD);
            assert_eq!(payload, &data[HEADER_LEN..]);
            assert_eq!(frame(kind, peer, payload), data);
        }
    }
});
