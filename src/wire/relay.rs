//! Relay frames: sealed WireGuard datagrams (or peer probes) carried through a registry when no
//! direct path works. See `docs/PROTOCOL.md`, "Relay (v1)".
//!
//! ```text
//! RelaySend    (node → registry): 0x50 | 0x01 | 0x40 | to addr48 (6)   | payload
//! RelayDeliver (registry → node): 0x50 | 0x01 | 0xc0 | from addr48 (6) | payload
//! ```
//!
//! The payload is opaque to the registry: a WireGuard message (first byte 1–4, sealed end to
//! end) or a signed peer probe (first byte 0x50). Frames are not signed: the registry knows the
//! sender by the source address of its signed registration, and the payload authenticates
//! itself to the receiving peer.

use crate::mapping::Addr48;

/// First byte of every control datagram.
pub use crate::wire::CONTROL_MAGIC as MAGIC;
/// Version byte of relay frames.
pub const VERSION: u8 = 1;
/// Type byte of [`RelaySend`](encode_header) (node → registry).
pub const RELAY_SEND: u8 = 0x40;
/// Type byte of a relay delivery (registry → node).
pub const RELAY_DELIVER: u8 = 0xc0;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 9;
/// Largest payload a registry relays (a full WireGuard data message for a 1420-byte inner MTU
/// is 1452 bytes; jumbo room up to 1500 inner).
pub const MAX_PAYLOAD: usize = 1600;

/// Writes a relay header of type `kind` naming `peer` into `buf[..HEADER_LEN]`.
pub fn encode_header(buf: &mut [u8], kind: u8, peer: Addr48) {
    buf[0] = MAGIC;
    buf[1] = VERSION;
    buf[2] = kind;
    buf[3..HEADER_LEN].copy_from_slice(&peer.to_bytes());
}

/// A whole frame of type `kind` for `peer` around `payload` (allocates; not for the hot path).
pub fn frame(kind: u8, peer: Addr48, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; HEADER_LEN + payload.len()];
    encode_header(&mut v, kind, peer);
    v[HEADER_LEN..].copy_from_slice(payload);
    v
}

/// If `bytes` is a relay frame of type `kind` with a non-empty payload of at most
/// [`MAX_PAYLOAD`] bytes: the peer it names and the payload.
pub fn parse(bytes: &[u8], kind: u8) -> Option<(Addr48, &[u8])> {
    if bytes.len() <= HEADER_LEN
        || bytes.len() > HEADER_LEN + MAX_PAYLOAD
        || bytes[0] != MAGIC
        || bytes[1] != VERSION
        || bytes[2] != kind
    {
        return None;
    }
    let mut a = [0u8; 6];
    a.copy_from_slice(&bytes[3..HEADER_LEN]);
    Some((Addr48::from_bytes(a), &bytes[HEADER_LEN..]))
}

/// Whether `bytes` looks like a relay frame of either type (cheap check on the first bytes).
pub fn is_relay(bytes: &[u8]) -> bool {
    bytes.len() > 2
        && bytes[0] == MAGIC
        && bytes[1] == VERSION
        && (bytes[2] == RELAY_SEND || bytes[2] == RELAY_DELIVER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_wrong_types_are_refused() {
        let a = Addr48::from_bytes([1, 2, 3, 4, 5, 6]);
        let f = frame(RELAY_SEND, a, &[4, 0, 0, 0, 9]);
        assert!(is_relay(&f));
        assert_eq!(parse(&f, RELAY_SEND), Some((a, &[4u8, 0, 0, 0, 9][..])));
        assert_eq!(parse(&f, RELAY_DELIVER), None);
        assert_eq!(parse(&f[..HEADER_LEN], RELAY_SEND), None, "empty payload");
        let big = frame(RELAY_SEND, a, &vec![4u8; MAX_PAYLOAD + 1]);
        assert_eq!(parse(&big, RELAY_SEND), None);
    }
}
