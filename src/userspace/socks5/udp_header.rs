//! The header of every datagram between a SOCKS5 client and the UDP relay (RFC 1928 §7):
//!
//! ```text
//! +-----+------+------+----------+----------+----------+
//! | RSV | FRAG | ATYP | DST.ADDR | DST.PORT |   DATA   |
//! +-----+------+------+----------+----------+----------+
//! |  2  |  1   |  1   | Variable |    2     | Variable |
//! +-----+------+------+----------+----------+----------+
//! ```
//!
//! RSV must be zero; ATYP and the address are read exactly as in a request (IPv4 1, domain 3,
//! IPv6 4). A datagram is whole or nothing: one cut short is malformed. Fragments (FRAG ≠ 0)
//! are parsed, and the relay drops them (RFC 1928 lets a server without reassembly do so).
//! Datagrams back to the client carry the peer's address with ATYP 4.

use std::net::SocketAddr;

use super::wire::{parse_request, ParseError, Parsed, Target, VERSION};

/// The longest header: ATYP 3 with a 255-byte name (2 + 1 + 1 + 1 + 255 + 2).
pub const MAX_UDP_HEADER: usize = 262;
/// The header of a datagram back to the client (ATYP 4): 2 + 1 + 1 + 16 + 2.
pub const REPLY_HEADER_LEN: usize = 22;

/// A parsed header: the fragment number, the destination, and where the data starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpHeader {
    /// FRAG: 0 for a whole datagram.
    pub frag: u8,
    /// DST.ADDR and DST.PORT.
    pub target: Target,
    /// The header's length: the data is `datagram[len..]`.
    pub len: usize,
}

/// Why a datagram's header is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UdpHeaderError {
    /// Shorter than its header.
    #[error("the datagram is shorter than its SOCKS5 UDP header")]
    Short,
    /// RSV is not zero.
    #[error("the reserved bytes are not zero")]
    Reserved,
    /// A bad address type or name.
    #[error("bad destination: {0}")]
    Address(ParseError),
}

/// Parses the header at the front of `datagram`.
pub fn parse_udp_header(datagram: &[u8]) -> Result<UdpHeader, UdpHeaderError> {
    if datagram.len() < 4 {
        return Err(UdpHeaderError::Short);
    }
    if datagram[0] != 0 || datagram[1] != 0 {
        return Err(UdpHeaderError::Reserved);
    }
    let frag = datagram[2];
    // ATYP, the address and the port are laid out as in a request from its fourth byte on:
    // parse them with the request parser (one address parser for TCP and UDP).
    let end = datagram.len().min(MAX_UDP_HEADER);
    let mut req = Vec::with_capacity(end + 1);
    req.extend_from_slice(&[VERSION, 1, 0]);
    req.extend_from_slice(&datagram[3..end]);
    match parse_request(&req) {
        Ok(Parsed::Done { value, len }) => Ok(UdpHeader {
            frag,
            target: value.target,
            len,
        }),
        Ok(Parsed::Incomplete) => Err(UdpHeaderError::Short),
        Err(e) => Err(UdpHeaderError::Address(e)),
    }
}

/// Appends the header of a datagram from `source` (ATYP 1 or 4, FRAG 0) to `out`.
pub fn encode_udp_header(source: SocketAddr, out: &mut Vec<u8>) {
    out.extend_from_slice(&[0, 0, 0]);
    match source {
        SocketAddr::V4(a) => {
            out.push(1);
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_be_bytes());
        }
        SocketAddr::V6(a) => {
            out.push(4);
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv6Addr, SocketAddrV6};

    fn v6(port: u16) -> SocketAddr {
        SocketAddr::V6(SocketAddrV6::new(
            "fdc5:7a3e:91b4::1:2:3".parse::<Ipv6Addr>().unwrap(),
            port,
            0,
            0,
        ))
    }

    #[test]
    fn an_ipv6_header_round_trips_and_the_data_follows_it() {
        let mut d = Vec::new();
        encode_udp_header(v6(5353), &mut d);
        assert_eq!(d.len(), REPLY_HEADER_LEN);
        d.extend_from_slice(b"payload");
        let h = parse_udp_header(&d).unwrap();
        assert_eq!(h.frag, 0);
        assert_eq!(h.target, Target::Ip(v6(5353)));
        assert_eq!(&d[h.len..], b"payload");
    }

    #[test]
    fn a_domain_header_parses_with_its_name_and_port() {
        let mut d = vec![0, 0, 0, 3, 17];
        d.extend_from_slice(b"worker-node.pilot");
        d.extend_from_slice(&7u16.to_be_bytes());
        d.extend_from_slice(b"x");
        let h = parse_udp_header(&d).unwrap();
        assert_eq!(h.target, Target::Domain("worker-node.pilot".into(), 7));
        assert_eq!(&d[h.len..], b"x");
    }

    #[test]
    fn fragments_are_parsed_with_their_number() {
        let mut d = Vec::new();
        encode_udp_header(v6(1), &mut d);
        d[2] = 1;
        assert_eq!(parse_udp_header(&d).unwrap().frag, 1);
    }

    #[test]
    fn short_reserved_and_bad_address_types_are_refused() {
        assert_eq!(parse_udp_header(&[0, 0, 0]), Err(UdpHeaderError::Short));
        assert_eq!(
            parse_udp_header(&[0, 0, 0, 4, 1, 2]),
            Err(UdpHeaderError::Short)
        );
        assert_eq!(
            parse_udp_header(&[0, 1, 0, 1, 127, 0, 0, 1, 0, 7]),
            Err(UdpHeaderError::Reserved)
        );
        assert_eq!(
            parse_udp_header(&[0, 0, 0, 9, 1, 2, 3]),
            Err(UdpHeaderError::Address(ParseError::AddressType(9)))
        );
        assert_eq!(
            parse_udp_header(&[0, 0, 0, 3, 0, 0, 7]),
            Err(UdpHeaderError::Address(ParseError::Domain))
        );
    }

    proptest! {
        #[test]
        fn any_datagram_parses_or_is_refused_and_a_header_never_claims_more_than_it_had(
            d in proptest::collection::vec(any::<u8>(), 0..400)
        ) {
            if let Ok(h) = parse_udp_header(&d) {
                prop_assert!(h.len <= d.len());
                prop_assert!(h.len <= MAX_UDP_HEADER);
            }
        }

        #[test]
        fn encoded_headers_parse_back(port in any::<u16>(), ip in any::<[u8; 16]>()) {
            let a = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, 0));
            let mut d = Vec::new();
            encode_udp_header(a, &mut d);
            let h = parse_udp_header(&d).unwrap();
            prop_assert_eq!(h.target, Target::Ip(a));
            prop_assert_eq!(h.len, d.len());
        }
    }
}
