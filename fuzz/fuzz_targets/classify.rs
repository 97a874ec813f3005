//! The UDP demux: every datagram on the shared socket is classified once, by its first bytes.
//! Whatever the class, the bytes handed on are a part of the datagram and consistent with it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pilot::wire::classify::{classify, ControlKind, Datagram};
use pilot::wire::relay::HEADER_LEN;

fuzz_target!(|data: &[u8]| {
    let d = classify(data);
    match d {
        Datagram::WireGuard(b) | Datagram::Control(b) | Datagram::Probe(b) => {
            assert_eq!(b, data)
        }
        Datagram::RelayedWireGuard { payload, .. } | Datagram::RelayedProbe { payload, .. } => {
            assert_eq!(payload, &data[HEADER_LEN..])
        }
        Datagram::Unknown => {}
    }
    if let Some((kind, bytes)) = d.control() {
        match kind {
            ControlKind::Control | ControlKind::Probe => assert_eq!(bytes, data),
            ControlKind::RelayedProbe(_) => assert_eq!(bytes, &data[HEADER_LEN..]),
        }
    }
});
