//! The registry's TLS transport (issue 14): nodes whose network drops UDP reach their registry
//! over TLS on TCP and exchange there, framed ([`crate::wire::stream`]), exactly the datagrams
//! they would send over UDP: registration, heartbeats, trust messages, endpoint exchange and
//! relayed sealed WireGuard datagrams. See `docs/PROTOCOL.md`, "TLS transport (v1, issue 14)".
//!
//! The sans-IO core ([`super::server::Registry`]) does not know which transport a datagram
//! came from: each TLS connection has a *connection address*, a [`SocketAddr`] in the reserved
//! `0100::/8` range that no UDP packet comes from (the runner drops any that claims to), which
//! names the connection ([`conn_addr`]). Answers, pushes and relay deliveries the core sends to
//! that address go down the connection ([`hub::Hub::route`]). The address keeps the client's
//! IPv4 address (or a digest of its IPv6 /64) in its upper 64 bits, so the core's per-source
//! rate limits still apply per client.
//!
//! - [`pin`]: the TLS identity bound to the registry's Ed25519 key, and the node's verifier.
//! - [`hub`]: the listener, one task pair per connection, bounded queues, limits.
//! - [`framed`]: reading and writing frames on any async stream (both sides use it).
//! - [`ws`]: the WebSocket wrapping (upgrade, frames in binary messages; both sides use it).

pub mod framed;
pub mod hub;
pub mod pin;
pub mod ws;

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// First 16 bits of every connection address (`0100::/16`, inside the IETF-reserved
/// `0100::/8`: never a real source).
const CONN_PREFIX: u16 = 0x0100;
/// The port of every connection address.
const CONN_PORT: u16 = 443;

/// The connection address of TLS connection `id` from `peer`.
pub fn conn_addr(peer: SocketAddr, id: u64) -> SocketAddr {
    let who: u32 = match peer.ip() {
        IpAddr::V4(v4) => u32::from(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u32::from(v4),
            None => {
                let s = v6.segments();
                (u32::from(s[0]) << 16 | u32::from(s[1]))
                    ^ (u32::from(s[2]) << 16 | u32::from(s[3]))
            }
        },
    };
    let ip = Ipv6Addr::new(
        CONN_PREFIX,
        0,
        (who >> 16) as u16,
        who as u16,
        (id >> 48) as u16,
        (id >> 32) as u16,
        (id >> 16) as u16,
        id as u16,
    );
    SocketAddr::new(IpAddr::V6(ip), CONN_PORT)
}

/// The TLS connection a connection address names, or `None` for any other address.
pub fn conn_id(addr: &SocketAddr) -> Option<u64> {
    let IpAddr::V6(v6) = addr.ip() else {
        return None;
    };
    let s = v6.segments();
    (s[0] == CONN_PREFIX && s[1] == 0 && addr.port() == CONN_PORT).then(|| {
        u64::from(s[4]) << 48 | u64::from(s[5]) << 32 | u64::from(s[6]) << 16 | u64::from(s[7])
    })
}

/// Whether `addr` is in the connection-address range (a UDP datagram claiming such a source
/// is dropped).
pub fn is_conn_range(addr: &SocketAddr) -> bool {
    crate::wire::stream::is_connection_address(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_address_names_its_connection_and_keeps_the_client_ip() {
        let peer: SocketAddr = "198.51.100.7:40000".parse().unwrap();
        let a = conn_addr(peer, 0x1234_5678_9abc);
        assert_eq!(conn_id(&a), Some(0x1234_5678_9abc));
        assert!(is_conn_range(&a));
        assert_eq!(a.ip().to_string(), "100:0:c633:6407:0:1234:5678:9abc");
        let other = conn_addr("198.51.100.8:1".parse().unwrap(), 0x1234_5678_9abc);
        assert_ne!(a, other, "two clients never share an address");
        assert_eq!(conn_id(&"198.51.100.7:443".parse().unwrap()), None);
        assert!(!is_conn_range(&"[fd00::1]:443".parse().unwrap()));
    }
}

#[cfg(test)]
mod loopback_tests;
