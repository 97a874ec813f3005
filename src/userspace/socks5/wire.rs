//! The sans-IO half of the SOCKS5 proxy: RFC 1928 messages ([`parse_greeting`],
//! [`parse_request`], [`encode_reply`]), the RFC 1929 username/password sub-negotiation
//! ([`parse_auth`], [`encode_auth_status`]), the [`Reply`] codes, and [`classify`], which says what a
//! request's target means on the overlay. No sockets and no clock: the server in `server.rs`
//! feeds it bytes and sends what it answers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::mapping::{Addr48, Hostname, NetworkPrefix};

/// The protocol version byte.
pub const VERSION: u8 = 5;
/// Authentication method "no authentication required".
pub const METHOD_NO_AUTH: u8 = 0x00;
/// Authentication method "username/password" (RFC 1929).
pub const METHOD_USERNAME_PASSWORD: u8 = 0x02;
/// "No acceptable methods".
pub const METHOD_NONE_ACCEPTABLE: u8 = 0xff;
/// The version byte of the RFC 1929 sub-negotiation.
pub const AUTH_VERSION: u8 = 0x01;
/// RFC 1929 status: the credentials are accepted.
pub const AUTH_SUCCESS: u8 = 0x00;
/// RFC 1929 status: refused (any non-zero value; the server then closes the connection).
pub const AUTH_FAILURE: u8 = 0x01;
/// The longest RFC 1929 message: `VER ULEN UNAME(255) PLEN PASSWD(255)`.
pub const MAX_AUTH_LEN: usize = 3 + 255 + 255;

/// Result of feeding bytes to a parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<T> {
    /// More bytes are needed.
    Incomplete,
    /// A whole message, and how many bytes it took.
    Done {
        /// The message.
        value: T,
        /// Bytes consumed from the front of the input.
        len: usize,
    },
}

/// Why a message could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not SOCKS version 5.
    #[error("SOCKS version {0} is not supported (only 5)")]
    Version(u8),
    /// A greeting that offers no method.
    #[error("the greeting offers no authentication method")]
    NoMethods,
    /// The reserved byte is not zero.
    #[error("reserved byte is {0:#04x}, not 0")]
    Reserved(u8),
    /// An address type other than 1, 3 and 4.
    #[error("address type {0:#04x} is not supported")]
    AddressType(u8),
    /// A domain name that is empty or not ASCII text.
    #[error("the domain name is empty or not ASCII")]
    Domain,
    /// More bytes than any valid message has.
    #[error("the message is longer than any valid one")]
    TooLong,
    /// An RFC 1929 sub-negotiation whose version byte is not 1.
    #[error("username/password version {0:#04x} is not supported (only 1)")]
    AuthVersion(u8),
    /// An RFC 1929 username or password of length zero.
    #[error("the username or password is empty")]
    EmptyCredential,
}

impl From<ParseError> for crate::error::PilotError {
    fn from(e: ParseError) -> Self {
        crate::error::PilotError::invalid(
            e.to_string(),
            "the SOCKS5 client must speak SOCKS version 5",
        )
    }
}

impl ParseError {
    /// The reply to send before closing, if any (a wrong version gets none).
    pub fn reply(&self) -> Option<Reply> {
        match self {
            ParseError::Version(_)
            | ParseError::NoMethods
            | ParseError::AuthVersion(_)
            | ParseError::EmptyCredential => None,
            ParseError::AddressType(_) => Some(Reply::AddressTypeNotSupported),
            ParseError::Reserved(_) | ParseError::Domain | ParseError::TooLong => {
                Some(Reply::GeneralFailure)
            }
        }
    }
}

/// A client greeting: the authentication methods it offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// Method codes, in the client's order.
    pub methods: Vec<u8>,
}

impl Greeting {
    /// Whether the client accepts "no authentication".
    pub fn offers_no_auth(&self) -> bool {
        self.methods.contains(&METHOD_NO_AUTH)
    }

    /// Whether the client offers username/password (RFC 1929).
    pub fn offers_password(&self) -> bool {
        self.methods.contains(&METHOD_USERNAME_PASSWORD)
    }

    /// The method the server picks: username/password when it requires a password (no-auth is
    /// then never offered), no-auth otherwise; [`METHOD_NONE_ACCEPTABLE`] when the client offers
    /// neither.
    pub fn choose_method(&self, password_required: bool) -> u8 {
        match password_required {
            true if self.offers_password() => METHOD_USERNAME_PASSWORD,
            false if self.offers_no_auth() => METHOD_NO_AUTH,
            _ => METHOD_NONE_ACCEPTABLE,
        }
    }
}

/// An RFC 1929 username/password request, as the client sent it (any bytes, 1 to 255 each).
#[derive(Clone, PartialEq, Eq)]
pub struct AuthRequest {
    /// The username.
    pub username: Vec<u8>,
    /// The password.
    pub password: Vec<u8>,
}

impl std::fmt::Debug for AuthRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a password, not even in a debug log.
        f.debug_struct("AuthRequest")
            .field("username", &String::from_utf8_lossy(&self.username))
            .finish_non_exhaustive()
    }
}

/// Parses an RFC 1929 request: `VER(1) ULEN UNAME PLEN PASSWD`, lengths 1 to 255.
pub fn parse_auth(buf: &[u8]) -> Result<Parsed<AuthRequest>, ParseError> {
    let Some(&ver) = buf.first() else {
        return Ok(Parsed::Incomplete);
    };
    if ver != AUTH_VERSION {
        return Err(ParseError::AuthVersion(ver));
    }
    let Some(&ulen) = buf.get(1) else {
        return Ok(Parsed::Incomplete);
    };
    let ulen = usize::from(ulen);
    if ulen == 0 {
        return Err(ParseError::EmptyCredential);
    }
    let Some(&plen) = buf.get(2 + ulen) else {
        return Ok(Parsed::Incomplete);
    };
    let plen = usize::from(plen);
    if plen == 0 {
        return Err(ParseError::EmptyCredential);
    }
    let len = 3 + ulen + plen;
    match buf.get(3 + ulen..len) {
        None => Ok(Parsed::Incomplete),
        Some(password) => Ok(Parsed::Done {
            value: AuthRequest {
                username: buf[2..2 + ulen].to_vec(),
                password: password.to_vec(),
            },
            len,
        }),
    }
}

/// Encodes the RFC 1929 status reply: `VER(1) STATUS`.
pub fn encode_auth_status(accepted: bool) -> [u8; 2] {
    [
        AUTH_VERSION,
        if accepted { AUTH_SUCCESS } else { AUTH_FAILURE },
    ]
}

/// A request's command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// CONNECT (1).
    Connect,
    /// BIND (2).
    Bind,
    /// UDP ASSOCIATE (3).
    UdpAssociate,
    /// Anything else.
    Other(u8),
}

/// A request's destination as the client wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An IPv4 or IPv6 address.
    Ip(SocketAddr),
    /// A domain name (ASCII) and port.
    Domain(String, u16),
}

/// A client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// What to do.
    pub command: Command,
    /// Where to.
    pub target: Target,
}

/// Reply codes (RFC 1928 section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reply {
    /// Succeeded.
    Succeeded = 0x00,
    /// General SOCKS server failure.
    GeneralFailure = 0x01,
    /// Connection not allowed by ruleset.
    NotAllowed = 0x02,
    /// Network unreachable.
    NetworkUnreachable = 0x03,
    /// Host unreachable.
    HostUnreachable = 0x04,
    /// Connection refused.
    ConnectionRefused = 0x05,
    /// TTL expired (we use it for a connect timeout).
    TtlExpired = 0x06,
    /// Command not supported.
    CommandNotSupported = 0x07,
    /// Address type not supported.
    AddressTypeNotSupported = 0x08,
}

/// Parses a greeting: `VER NMETHODS METHODS...`.
pub fn parse_greeting(buf: &[u8]) -> Result<Parsed<Greeting>, ParseError> {
    let Some(&ver) = buf.first() else {
        return Ok(Parsed::Incomplete);
    };
    if ver != VERSION {
        return Err(ParseError::Version(ver));
    }
    let Some(&n) = buf.get(1) else {
        return Ok(Parsed::Incomplete);
    };
    if n == 0 {
        return Err(ParseError::NoMethods);
    }
    let len = 2 + usize::from(n);
    match buf.get(2..len) {
        None => Ok(Parsed::Incomplete),
        Some(m) => Ok(Parsed::Done {
            value: Greeting {
                methods: m.to_vec(),
            },
            len,
        }),
    }
}

/// Parses a request: `VER CMD RSV ATYP DST.ADDR DST.PORT`.
pub fn parse_request(buf: &[u8]) -> Result<Parsed<Request>, ParseError> {
    if buf.len() < 4 {
        if let Some(&v) = buf.first() {
            if v != VERSION {
                return Err(ParseError::Version(v));
            }
        }
        return Ok(Parsed::Incomplete);
    }
    if buf[0] != VERSION {
        return Err(ParseError::Version(buf[0]));
    }
    let command = match buf[1] {
        1 => Command::Connect,
        2 => Command::Bind,
        3 => Command::UdpAssociate,
        c => Command::Other(c),
    };
    if buf[2] != 0 {
        return Err(ParseError::Reserved(buf[2]));
    }
    let port_at = |at: usize| -> Option<u16> {
        buf.get(at..at + 2)
            .map(|p| u16::from_be_bytes([p[0], p[1]]))
    };
    let (target, len) = match buf[3] {
        1 => {
            let Some(a) = buf.get(4..8) else {
                return Ok(Parsed::Incomplete);
            };
            let Some(port) = port_at(8) else {
                return Ok(Parsed::Incomplete);
            };
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            (Target::Ip(SocketAddr::new(IpAddr::V4(ip), port)), 10)
        }
        4 => {
            let Some(a) = buf.get(4..20) else {
                return Ok(Parsed::Incomplete);
            };
            let Some(port) = port_at(20) else {
                return Ok(Parsed::Incomplete);
            };
            let mut o = [0u8; 16];
            o.copy_from_slice(a);
            (
                Target::Ip(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), port)),
                22,
            )
        }
        3 => {
            let Some(&n) = buf.get(4) else {
                return Ok(Parsed::Incomplete);
            };
            let n = usize::from(n);
            if n == 0 {
                return Err(ParseError::Domain);
            }
            let Some(name) = buf.get(5..5 + n) else {
                return Ok(Parsed::Incomplete);
            };
            if !name.iter().all(|c| c.is_ascii_graphic()) {
                return Err(ParseError::Domain);
            }
            let Some(port) = port_at(5 + n) else {
                return Ok(Parsed::Incomplete);
            };
            let name = String::from_utf8(name.to_vec()).map_err(|_| ParseError::Domain)?;
            (Target::Domain(name, port), 7 + n)
        }
        t => return Err(ParseError::AddressType(t)),
    };
    Ok(Parsed::Done {
        value: Request { command, target },
        len,
    })
}

/// Encodes a reply with the bound address (all zeros when there is none).
pub fn encode_reply(reply: Reply, bound: Option<SocketAddr>) -> Vec<u8> {
    let mut out = vec![VERSION, reply as u8, 0];
    match bound.unwrap_or(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))) {
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
    out
}

/// Where a request goes, once its text is understood but before any lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// An overlay address.
    Addr(SocketAddrV6),
    /// A hostname to resolve, and the port.
    Name(Hostname, u16),
}

/// Turns a request's target into an overlay destination, or the reply that refuses it.
pub fn classify(target: &Target, network: &NetworkPrefix) -> Result<Destination, Reply> {
    let ip6 = |ip: Ipv6Addr, port: u16| {
        if ip.to_ipv4_mapped().is_some() {
            Err(Reply::AddressTypeNotSupported)
        } else if network.addr48_of(ip).is_some() {
            Ok(Destination::Addr(SocketAddrV6::new(ip, port, 0, 0)))
        } else {
            Err(Reply::NetworkUnreachable)
        }
    };
    match target {
        Target::Ip(SocketAddr::V4(_)) => Err(Reply::AddressTypeNotSupported),
        Target::Ip(SocketAddr::V6(a)) => ip6(*a.ip(), a.port()),
        Target::Domain(name, port) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            let bare = name
                .strip_prefix('[')
                .and_then(|n| n.strip_suffix(']'))
                .unwrap_or(&name);
            if let Ok(ip) = bare.parse::<Ipv6Addr>() {
                return ip6(ip, *port);
            }
            if bare.parse::<Ipv4Addr>().is_ok() {
                return Err(Reply::AddressTypeNotSupported);
            }
            let short = name.strip_suffix(".pilot").unwrap_or(&name);
            if let Ok(a) = short.parse::<Addr48>() {
                return Ok(Destination::Addr(SocketAddrV6::new(
                    network.ipv6(a),
                    *port,
                    0,
                    0,
                )));
            }
            match Hostname::new(short) {
                Ok(h) => Ok(Destination::Name(h, *port)),
                Err(_) => Err(Reply::HostUnreachable),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::DEFAULT_NETWORK;
    use proptest::prelude::*;

    fn done<T>(p: Parsed<T>) -> (T, usize) {
        match p {
            Parsed::Done { value, len } => (value, len),
            Parsed::Incomplete => panic!("incomplete"),
        }
    }

    #[test]
    fn a_greeting_is_parsed_once_all_its_methods_arrived() {
        let g = [5, 2, 0, 2];
        for i in 0..g.len() {
            assert_eq!(parse_greeting(&g[..i]), Ok(Parsed::Incomplete));
        }
        let (v, len) = done(parse_greeting(&g).unwrap());
        assert_eq!(len, 4);
        assert!(v.offers_no_auth());
        assert_eq!(parse_greeting(&[4, 1, 0]), Err(ParseError::Version(4)));
        assert_eq!(parse_greeting(&[5, 0]), Err(ParseError::NoMethods));
    }

    #[test]
    fn requests_of_every_address_type_parse() {
        let (r, len) = done(parse_request(&[5, 1, 0, 1, 10, 0, 0, 1, 0, 80]).unwrap());
        assert_eq!(len, 10);
        assert_eq!(r.target, Target::Ip("10.0.0.1:80".parse().unwrap()));
        let mut v6 = vec![5, 1, 0, 4];
        v6.extend_from_slice(&"fdc5:7a3e:91b4::1".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[0x1f, 0x90]);
        let (r, len) = done(parse_request(&v6).unwrap());
        assert_eq!(len, 22);
        assert_eq!(
            r.target,
            Target::Ip("[fdc5:7a3e:91b4::1]:8080".parse().unwrap())
        );
        let mut d = vec![5, 1, 0, 3, 17];
        d.extend_from_slice(b"worker-node.pilot");
        d.extend_from_slice(&[0, 80]);
        d.push(0xaa); // data behind the request is not consumed
        let (r, len) = done(parse_request(&d).unwrap());
        assert_eq!(len, d.len() - 1);
        assert_eq!(r.command, Command::Connect);
        assert_eq!(r.target, Target::Domain("worker-node.pilot".into(), 80));
    }

    #[test]
    fn malformed_requests_name_the_reply_to_send() {
        assert_eq!(
            parse_request(&[5, 1, 0, 9, 0, 0]).unwrap_err().reply(),
            Some(Reply::AddressTypeNotSupported)
        );
        assert_eq!(
            parse_request(&[5, 1, 7, 1, 0, 0, 0, 0, 0, 0])
                .unwrap_err()
                .reply(),
            Some(Reply::GeneralFailure)
        );
        assert_eq!(
            parse_request(&[5, 1, 0, 3, 0, 0, 80]).unwrap_err().reply(),
            Some(Reply::GeneralFailure)
        );
        assert_eq!(parse_request(&[4]).unwrap_err(), ParseError::Version(4));
    }

    #[test]
    fn replies_carry_the_bound_address() {
        assert_eq!(
            encode_reply(Reply::HostUnreachable, None),
            vec![5, 4, 0, 1, 0, 0, 0, 0, 0, 0]
        );
        let r = encode_reply(
            Reply::Succeeded,
            Some("[fdc5:7a3e:91b4::1]:49152".parse().unwrap()),
        );
        assert_eq!(r.len(), 22);
        assert_eq!(&r[..4], &[5, 0, 0, 4]);
        assert_eq!(&r[20..], &[0xc0, 0x00]);
    }

    #[test]
    fn targets_are_classified_as_overlay_addresses_names_or_refusals() {
        let n = &DEFAULT_NETWORK;
        let ip = |s: &str| Target::Ip(s.parse().unwrap());
        let dom = |s: &str| Target::Domain(s.into(), 80);
        let addr = |s: &str| {
            Ok(Destination::Addr(SocketAddrV6::new(
                s.parse().unwrap(),
                80,
                0,
                0,
            )))
        };
        assert_eq!(
            classify(&ip("[fdc5:7a3e:91b4::1:2:3]:80"), n),
            addr("fdc5:7a3e:91b4::1:2:3")
        );
        assert_eq!(
            classify(&ip("[2001:db8::1]:80"), n),
            Err(Reply::NetworkUnreachable)
        );
        assert_eq!(
            classify(&ip("10.0.0.1:80"), n),
            Err(Reply::AddressTypeNotSupported)
        );
        assert_eq!(
            classify(&ip("[::ffff:10.0.0.1]:80"), n),
            Err(Reply::AddressTypeNotSupported)
        );
        assert_eq!(
            classify(&dom("10.0.0.1"), n),
            Err(Reply::AddressTypeNotSupported)
        );
        assert_eq!(
            classify(&dom("[fdc5:7a3e:91b4::1:2:3]"), n),
            addr("fdc5:7a3e:91b4::1:2:3")
        );
        assert_eq!(
            classify(&dom("0001.0002.0003"), n),
            addr("fdc5:7a3e:91b4::1:2:3")
        );
        assert_eq!(
            classify(&dom("0001.0002.0003.pilot"), n),
            addr("fdc5:7a3e:91b4::1:2:3")
        );
        let worker = Ok(Destination::Name(Hostname::new("worker-node").unwrap(), 80));
        assert_eq!(classify(&dom("worker-node.pilot"), n), worker);
        assert_eq!(classify(&dom("Worker-Node.PILOT."), n), worker);
        assert_eq!(classify(&dom("worker-node"), n), worker);
        assert_eq!(
            classify(&dom("example.com"), n),
            Err(Reply::HostUnreachable)
        );
        assert_eq!(classify(&dom("localhost"), n), Err(Reply::HostUnreachable));
    }

    #[test]
    fn a_username_password_request_is_parsed_once_whole() {
        let m = [
            1, 5, b'p', b'i', b'l', b'o', b't', 3, b'a', b'b', b'c', 0xaa,
        ];
        for i in 0..m.len() - 1 {
            assert_eq!(parse_auth(&m[..i]), Ok(Parsed::Incomplete), "prefix {i}");
        }
        let (a, len) = done(parse_auth(&m).unwrap());
        assert_eq!(len, m.len() - 1, "the byte behind it is not consumed");
        assert_eq!(a.username, b"pilot");
        assert_eq!(a.password, b"abc");
        assert!(
            !format!("{a:?}").contains("abc"),
            "debug output hides the password"
        );
        assert_eq!(encode_auth_status(true), [1, 0]);
        assert_eq!(encode_auth_status(false), [1, 1]);
    }

    #[test]
    fn malformed_and_oversized_credentials_are_refused_without_a_reply() {
        // Wrong sub-negotiation version (a client that sent a SOCKS request instead).
        assert_eq!(parse_auth(&[5, 1, 0]), Err(ParseError::AuthVersion(5)));
        // Empty username or password.
        assert_eq!(
            parse_auth(&[1, 0, 1, b'x']),
            Err(ParseError::EmptyCredential)
        );
        assert_eq!(
            parse_auth(&[1, 1, b'u', 0]),
            Err(ParseError::EmptyCredential)
        );
        for e in [ParseError::AuthVersion(5), ParseError::EmptyCredential] {
            assert_eq!(e.reply(), None);
        }
        // The largest message the format allows is parsed, and fits the server's read limit.
        let mut big = vec![1, 255];
        big.extend_from_slice(&[b'u'; 255]);
        big.push(255);
        big.extend_from_slice(&[b'p'; 255]);
        assert_eq!(big.len(), MAX_AUTH_LEN);
        let (a, len) = done(parse_auth(&big).unwrap());
        assert_eq!(
            (a.username.len(), a.password.len(), len),
            (255, 255, MAX_AUTH_LEN)
        );
        // Lengths that claim more than was sent wait for more (the server's limit and
        // handshake timeout end them), never read past the buffer.
        assert_eq!(parse_auth(&[1, 255, b'u']), Ok(Parsed::Incomplete));
        assert_eq!(parse_auth(&big[..MAX_AUTH_LEN - 1]), Ok(Parsed::Incomplete));
    }

    #[test]
    fn a_greeting_says_which_methods_it_offers() {
        let (g, _) = done(parse_greeting(&[5, 1, METHOD_USERNAME_PASSWORD]).unwrap());
        assert!(g.offers_password() && !g.offers_no_auth());
        let (g, _) = done(parse_greeting(&[5, 1, METHOD_NO_AUTH]).unwrap());
        assert!(!g.offers_password() && g.offers_no_auth());
        assert_eq!(g.choose_method(true), METHOD_NONE_ACCEPTABLE);
        assert_eq!(g.choose_method(false), METHOD_NO_AUTH);
        let (g, _) =
            done(parse_greeting(&[5, 2, METHOD_NO_AUTH, METHOD_USERNAME_PASSWORD]).unwrap());
        assert_eq!(g.choose_method(true), METHOD_USERNAME_PASSWORD);
        assert_eq!(g.choose_method(false), METHOD_NO_AUTH);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_the_parsers(b in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_greeting(&b);
            let _ = parse_request(&b);
            if let Ok(Parsed::Done { len, .. }) = parse_auth(&b) {
                prop_assert!(len <= b.len() && len <= MAX_AUTH_LEN);
            }
            let mut a = vec![AUTH_VERSION];
            a.extend_from_slice(&b);
            if let Ok(Parsed::Done { len, .. }) = parse_auth(&a) {
                prop_assert!(len <= a.len() && len <= MAX_AUTH_LEN);
            }
        }

        #[test]
        fn plausible_requests_with_random_tails_never_panic(
            cmd in 0u8..5, atyp in 0u8..6, n in any::<u8>(),
            tail in proptest::collection::vec(any::<u8>(), 0..300)
        ) {
            let mut b = vec![5, cmd, 0, atyp, n];
            b.extend_from_slice(&tail);
            for i in 0..b.len() {
                if let Ok(Parsed::Done { len, .. }) = parse_request(&b[..i]) {
                    prop_assert!(len <= i);
                }
            }
            let mut g = vec![5, n];
            g.extend_from_slice(&tail);
            let _ = parse_greeting(&g);
        }

        #[test]
        fn a_parsed_request_never_claims_more_bytes_than_it_had(
            b in proptest::collection::vec(any::<u8>(), 0..300)
        ) {
            if let Ok(Parsed::Done { len, .. }) = parse_request(&b) {
                prop_assert!(len <= b.len());
            }
            if let Ok(Parsed::Done { len, .. }) = parse_greeting(&b) {
                prop_assert!(len <= b.len());
            }
        }

        #[test]
        fn every_prefix_of_a_valid_request_is_incomplete(
            name in "[a-z][a-z0-9-]{0,40}", port in any::<u16>(), cmd in 1u8..4
        ) {
            let mut req = vec![5, cmd, 0, 3, name.len() as u8];
            req.extend_from_slice(name.as_bytes());
            req.extend_from_slice(&port.to_be_bytes());
            for i in 0..req.len() {
                prop_assert_eq!(parse_request(&req[..i]), Ok(Parsed::Incomplete));
            }
            let Parsed::Done { value, len } = parse_request(&req).unwrap() else {
                panic!("a whole request is done");
            };
            prop_assert_eq!(len, req.len());
            prop_assert_eq!(value.target, Target::Domain(name, port));
        }

        #[test]
        fn classifying_any_domain_never_panics(s in "\\PC{0,80}", port in any::<u16>()) {
            let _ = classify(&Target::Domain(s, port), &DEFAULT_NETWORK);
        }
    }
}
