//! Overlay addresses: the 48-bit address a key owns, its canonical text form, its place in an
//! IPv6 ULA network, hostnames, and the one parser that turns anything a user may type to name a
//! peer into a [`PeerRef`].
//!
//! # Address layout
//! ```text
//!  | 8 bits | 40 bits    | 16 bits | 16 bits | 48 bits |
//!  |  fd    | global ID  | subnet 0|    0    | addr48  |
//! ```
//! `addr48` = the first 6 bytes of SHA-256(`"pilot/addr48/v1"` ‖ Ed25519 public key). It is a
//! routing handle, not proof of identity: the full public key is checked everywhere.
//!
//! The default network is `fdc5:7a3e:91b4::/48` (RFC 4193, global ID `c57a3e91b4` chosen at
//! random); the overlay route is its `/80`. A private network sets another `/48` in config.
//!
//! # Canonical addr48 text
//! Twelve lowercase hex digits in three dot-separated groups of four: `1a2b.3c4d.5e6f`. The
//! groups are the last three groups of the IPv6 form, so the two read alike; the dots keep it
//! apart from hostnames (which have none) and from IPv6 text (which has colons).

use ipnetwork::Ipv6Network;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

use crate::identity::PublicKey;

/// Domain separation tag for deriving addr48 from a public key.
pub const ADDR48_DOMAIN: &[u8] = b"pilot/addr48/v1";

/// The default network /48 (RFC 4193 ULA, random global ID).
pub const DEFAULT_NETWORK: NetworkPrefix = NetworkPrefix([0xfd, 0xc5, 0x7a, 0x3e, 0x91, 0xb4]);

/// A 48-bit overlay address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Addr48([u8; 6]);

/// Errors from parsing addresses, prefixes, hostnames and peer references.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    /// Not in the `xxxx.xxxx.xxxx` form.
    #[error("`{0}` is not an address: expected 12 hex digits as xxxx.xxxx.xxxx")]
    Addr48(String),
    /// Not an RFC 4193 /48.
    #[error("`{0}` is not a network prefix: expected an fdXX:XXXX:XXXX::/48 (RFC 4193 ULA)")]
    Prefix(String),
    /// A hostname that breaks the rules.
    #[error("`{name}` is not a valid hostname: {reason}")]
    Hostname {
        /// The refused name.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// An IPv6 address outside the overlay network.
    #[error("{0} is not in the overlay network {1}")]
    OutsideNetwork(Ipv6Addr, NetworkPrefix),
    /// Nothing we recognise.
    #[error("`{0}` names no peer: expected a hostname, an address (xxxx.xxxx.xxxx), an overlay IPv6 address or a public key")]
    PeerRef(String),
}

impl From<MappingError> for crate::error::PilotError {
    fn from(e: MappingError) -> Self {
        crate::error::PilotError::invalid(
            e.to_string(),
            "name a peer by hostname (worker-node), address (xxxx.xxxx.xxxx), overlay IPv6 or public key",
        )
    }
}

impl Addr48 {
    /// The address owned by an Ed25519 public key.
    pub fn from_public_key(key: &[u8; 32]) -> Self {
        let mut h = Sha256::new();
        h.update(ADDR48_DOMAIN);
        h.update(key);
        let d = h.finalize();
        let mut a = [0u8; 6];
        a.copy_from_slice(&d[..6]);
        Addr48(a)
    }

    /// From six raw bytes (network order).
    pub const fn from_bytes(b: [u8; 6]) -> Self {
        Addr48(b)
    }

    /// The six raw bytes (network order).
    pub const fn to_bytes(self) -> [u8; 6] {
        self.0
    }

    /// As an integer below 2^48.
    pub fn to_u64(self) -> u64 {
        let mut b = [0u8; 8];
        b[2..].copy_from_slice(&self.0);
        u64::from_be_bytes(b)
    }

    /// From an integer; `None` if it does not fit in 48 bits.
    pub fn from_u64(v: u64) -> Option<Self> {
        if v >> 48 != 0 {
            return None;
        }
        let b = v.to_be_bytes();
        let mut a = [0u8; 6];
        a.copy_from_slice(&b[2..]);
        Some(Addr48(a))
    }
}

impl fmt::Display for Addr48 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}{:02x}.{:02x}{:02x}.{:02x}{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for Addr48 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Addr48({self})")
    }
}

impl FromStr for Addr48 {
    type Err = MappingError;
    /// Accepts exactly the canonical form, in either case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MappingError::Addr48(s.to_string());
        let groups: Vec<&str> = s.split('.').collect();
        if groups.len() != 3 {
            return Err(err());
        }
        let mut a = [0u8; 6];
        for (i, g) in groups.iter().enumerate() {
            if g.len() != 4 || !g.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(err());
            }
            let v = u16::from_str_radix(g, 16).map_err(|_| err())?;
            a[i * 2..i * 2 + 2].copy_from_slice(&v.to_be_bytes());
        }
        Ok(Addr48(a))
    }
}

impl Serialize for Addr48 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Addr48 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// An overlay network: an RFC 4193 /48 (`fd` + 40-bit global ID).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NetworkPrefix([u8; 6]);

impl NetworkPrefix {
    /// From the six bytes of the /48; `None` unless the first byte is `0xfd`.
    pub fn from_bytes(b: [u8; 6]) -> Option<Self> {
        (b[0] == 0xfd).then_some(NetworkPrefix(b))
    }

    /// The IPv6 address of `addr` in this network.
    pub fn ipv6(&self, addr: Addr48) -> Ipv6Addr {
        let mut o = [0u8; 16];
        o[..6].copy_from_slice(&self.0);
        o[10..].copy_from_slice(&addr.0);
        Ipv6Addr::from(o)
    }

    /// The addr48 of an overlay IPv6 address; `None` if `ip` is outside this network's /80.
    pub fn addr48_of(&self, ip: Ipv6Addr) -> Option<Addr48> {
        let o = ip.octets();
        if o[..6] != self.0 || o[6..10] != [0, 0, 0, 0] {
            return None;
        }
        let mut a = [0u8; 6];
        a.copy_from_slice(&o[10..]);
        Some(Addr48(a))
    }

    /// The /48 as a network.
    pub fn network(&self) -> Ipv6Network {
        Ipv6Network::new(self.ipv6(Addr48([0; 6])), 48).expect("48 is a valid prefix length")
    }

    /// The overlay route put on the interface: the /80 where all nodes live.
    pub fn overlay_route(&self) -> Ipv6Network {
        Ipv6Network::new(self.ipv6(Addr48([0; 6])), 80).expect("80 is a valid prefix length")
    }
}

impl Default for NetworkPrefix {
    fn default() -> Self {
        DEFAULT_NETWORK
    }
}

impl fmt::Display for NetworkPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.network();
        write!(f, "{}/{}", n.ip(), n.prefix())
    }
}

impl fmt::Debug for NetworkPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NetworkPrefix({self})")
    }
}

impl FromStr for NetworkPrefix {
    type Err = MappingError;
    /// Accepts `fdXX:XXXX:XXXX::/48` (the `/48` may be omitted); host bits must be zero.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MappingError::Prefix(s.to_string());
        let (ip, len) = match s.split_once('/') {
            Some((ip, len)) => (ip, len),
            None => (s, "48"),
        };
        if len != "48" {
            return Err(err());
        }
        let ip: Ipv6Addr = ip.parse().map_err(|_| err())?;
        let o = ip.octets();
        if o[6..].iter().any(|&b| b != 0) {
            return Err(err());
        }
        let mut b = [0u8; 6];
        b.copy_from_slice(&o[..6]);
        NetworkPrefix::from_bytes(b).ok_or_else(err)
    }
}

impl Serialize for NetworkPrefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NetworkPrefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Names no node may take: they would be confusing in `NAME.pilot` or clash with our own use.
pub const RESERVED_HOSTNAMES: &[&str] = &[
    "localhost",
    "local",
    "pilot",
    "registry",
    "relay",
    "self",
    "me",
    "all",
    "any",
    "none",
    "broadcast",
    "default",
];

/// A validated hostname: 1 to 63 of lowercase letters, digits and hyphens, not starting or
/// ending with a hyphen, not all digits, not reserved.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Hostname(String);

impl Hostname {
    /// Validates `s` as a hostname.
    pub fn new(s: &str) -> Result<Self, MappingError> {
        let bad = |reason| MappingError::Hostname {
            name: s.to_string(),
            reason,
        };
        if s.is_empty() || s.len() > 63 {
            return Err(bad("it must be 1 to 63 characters long"));
        }
        if !s
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        {
            return Err(bad(
                "only lowercase letters, digits and hyphens are allowed",
            ));
        }
        if s.starts_with('-') || s.ends_with('-') {
            return Err(bad("it must not start or end with a hyphen"));
        }
        if s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad("it must not be all digits"));
        }
        if RESERVED_HOSTNAMES.contains(&s) {
            return Err(bad("it is reserved"));
        }
        Ok(Hostname(s.to_string()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hostname({})", self.0)
    }
}

impl FromStr for Hostname {
    type Err = MappingError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Hostname::new(s)
    }
}

impl<'de> Deserialize<'de> for Hostname {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Hostname::new(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Anything that names a peer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PeerRef {
    /// A hostname (`worker-node`, or `worker-node.pilot`).
    Hostname(Hostname),
    /// An overlay address.
    Addr48(Addr48),
    /// A full public key: the strongest reference.
    PublicKey(PublicKey),
}

impl PeerRef {
    /// Parses what a user typed, in the given network. Order: public key, addr48 text, IPv6
    /// (must be inside the network), hostname (an optional `.pilot` suffix is dropped).
    pub fn parse(s: &str, network: &NetworkPrefix) -> Result<Self, MappingError> {
        let s = s.trim();
        if let Ok(pk) = s.parse::<PublicKey>() {
            return Ok(PeerRef::PublicKey(pk));
        }
        if let Ok(a) = s.parse::<Addr48>() {
            return Ok(PeerRef::Addr48(a));
        }
        let bracketless = s
            .strip_prefix('[')
            .and_then(|x| x.strip_suffix(']'))
            .unwrap_or(s);
        if let Ok(ip) = bracketless.parse::<Ipv6Addr>() {
            return network
                .addr48_of(ip)
                .map(PeerRef::Addr48)
                .ok_or(MappingError::OutsideNetwork(ip, *network));
        }
        let name = s.strip_suffix(".pilot").unwrap_or(s);
        if name.contains(['.', ':']) {
            return Err(MappingError::PeerRef(s.to_string()));
        }
        Hostname::new(name).map(PeerRef::Hostname)
    }

    /// The address this reference pins, if it pins one without a lookup.
    pub fn addr48(&self) -> Option<Addr48> {
        match self {
            PeerRef::Hostname(_) => None,
            PeerRef::Addr48(a) => Some(*a),
            PeerRef::PublicKey(k) => Some(k.addr48()),
        }
    }
}

impl fmt::Display for PeerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerRef::Hostname(h) => write!(f, "{h}"),
            PeerRef::Addr48(a) => write!(f, "{a}"),
            PeerRef::PublicKey(k) => write!(f, "{k}"),
        }
    }
}

impl PublicKey {
    /// The 48-bit overlay address this key owns.
    pub fn addr48(&self) -> Addr48 {
        Addr48::from_public_key(self.as_bytes())
    }
}

impl crate::identity::Identity {
    /// This identity's overlay address.
    pub fn addr48(&self) -> Addr48 {
        self.public_key().addr48()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use proptest::prelude::*;

    #[test]
    fn default_network_is_the_documented_ula_and_not_fd00() {
        assert_eq!(DEFAULT_NETWORK.to_string(), "fdc5:7a3e:91b4::/48");
        assert_eq!(
            DEFAULT_NETWORK.overlay_route().to_string(),
            "fdc5:7a3e:91b4::/80"
        );
        assert!(!DEFAULT_NETWORK
            .network()
            .contains("fd00::1".parse().unwrap()));
    }

    #[test]
    fn ipv6_layout_is_prefix_zero_subnet_zero_then_addr48() {
        let a: Addr48 = "1a2b.3c4d.5e6f".parse().unwrap();
        assert_eq!(
            DEFAULT_NETWORK.ipv6(a).to_string(),
            "fdc5:7a3e:91b4::1a2b:3c4d:5e6f"
        );
    }

    #[test]
    fn addresses_outside_the_route_have_no_addr48() {
        assert_eq!(
            DEFAULT_NETWORK.addr48_of("fdc5:7a3e:91b4:1::1".parse().unwrap()),
            None
        );
        assert_eq!(
            DEFAULT_NETWORK.addr48_of("fdc5:7a3e:91b4:0:1::1".parse().unwrap()),
            None
        );
        assert_eq!(DEFAULT_NETWORK.addr48_of("::1".parse().unwrap()), None);
    }

    #[test]
    fn addr48_is_domain_separated_sha256() {
        let key = [42u8; 32];
        let mut h = Sha256::new();
        h.update(b"pilot/addr48/v1");
        h.update(key);
        let d = h.finalize();
        assert_eq!(Addr48::from_public_key(&key).to_bytes(), d[..6]);
    }

    #[test]
    fn addr48_text_refuses_near_misses() {
        for s in [
            "1a2b.3c4d",
            "1a2b.3c4d.5e6",
            "1a2b.3c4d.5e6f.0000",
            "1a2b:3c4d:5e6f",
            "g000.0000.0000",
            "+a2b.3c4d.5e6f",
            "",
        ] {
            assert!(s.parse::<Addr48>().is_err(), "{s}");
        }
        assert_eq!(
            "1A2B.3C4D.5E6F".parse::<Addr48>().unwrap().to_string(),
            "1a2b.3c4d.5e6f"
        );
    }

    #[test]
    fn prefix_parser_requires_an_fd_slash_48() {
        assert!("fd12:3456:789a::/48".parse::<NetworkPrefix>().is_ok());
        assert!("fd12:3456:789a::".parse::<NetworkPrefix>().is_ok());
        assert!("fc12:3456:789a::/48".parse::<NetworkPrefix>().is_err());
        assert!("fd12:3456:789a::/64".parse::<NetworkPrefix>().is_err());
        assert!("fd12:3456:789a:1::/48".parse::<NetworkPrefix>().is_err());
        assert!("2001:db8::/48".parse::<NetworkPrefix>().is_err());
    }

    #[test]
    fn hostname_rules() {
        for ok in [
            "worker-node",
            "a",
            "orchestrator-node",
            "n1",
            &"a".repeat(63),
        ] {
            assert!(Hostname::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Worker",
            "-a",
            "a-",
            "a.b",
            "a_b",
            "123",
            "localhost",
            "pilot",
            &"a".repeat(64),
            "é",
        ] {
            assert!(Hostname::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn peer_ref_parses_every_form() {
        let id = Identity::from_seed([1; 32]);
        let pk = id.public_key();
        let a = pk.addr48();
        let n = DEFAULT_NETWORK;
        assert_eq!(
            PeerRef::parse(&pk.to_string(), &n).unwrap(),
            PeerRef::PublicKey(pk)
        );
        assert_eq!(
            PeerRef::parse(&a.to_string(), &n).unwrap(),
            PeerRef::Addr48(a)
        );
        assert_eq!(
            PeerRef::parse(&n.ipv6(a).to_string(), &n).unwrap(),
            PeerRef::Addr48(a)
        );
        assert_eq!(
            PeerRef::parse(&format!("[{}]", n.ipv6(a)), &n).unwrap(),
            PeerRef::Addr48(a)
        );
        assert_eq!(
            PeerRef::parse("worker-node.pilot", &n).unwrap(),
            PeerRef::Hostname(Hostname::new("worker-node").unwrap())
        );
        assert!(matches!(
            PeerRef::parse("2001:db8::1", &n),
            Err(MappingError::OutsideNetwork(..))
        ));
        assert!(PeerRef::parse("a.b.c", &n).is_err());
    }

    proptest! {
        #[test]
        fn addr48_text_round_trips(b in any::<[u8; 6]>()) {
            let a = Addr48::from_bytes(b);
            prop_assert_eq!(a.to_string().parse::<Addr48>().unwrap(), a);
            prop_assert_eq!(Addr48::from_u64(a.to_u64()).unwrap(), a);
        }

        #[test]
        fn ipv6_round_trips_and_keeps_the_low_48_bits(b in any::<[u8; 6]>(), g in any::<[u8; 5]>()) {
            let mut p = [0xfdu8; 6];
            p[1..].copy_from_slice(&g);
            let net = NetworkPrefix::from_bytes(p).unwrap();
            let a = Addr48::from_bytes(b);
            let ip = net.ipv6(a);
            prop_assert_eq!(net.addr48_of(ip), Some(a));
            prop_assert_eq!(u128::from(ip) & ((1u128 << 48) - 1), a.to_u64() as u128);
            prop_assert!(net.overlay_route().contains(ip));
            prop_assert_eq!(net.to_string().parse::<NetworkPrefix>().unwrap(), net);
        }

        #[test]
        fn peer_ref_parser_never_panics(s in ".{0,100}") {
            let _ = PeerRef::parse(&s, &DEFAULT_NETWORK);
        }

        #[test]
        fn valid_hostnames_parse_as_hostnames(s in "[a-z][a-z0-9-]{0,61}[a-z0-9]") {
            prop_assume!(!RESERVED_HOSTNAMES.contains(&s.as_str()));
            prop_assert_eq!(
                PeerRef::parse(&s, &DEFAULT_NETWORK).unwrap(),
                PeerRef::Hostname(Hostname::new(&s).unwrap())
            );
        }

        #[test]
        fn key_addresses_round_trip_through_ipv6(seed in any::<[u8; 32]>()) {
            let pk = Identity::from_seed(seed).public_key();
            let ip = DEFAULT_NETWORK.ipv6(pk.addr48());
            prop_assert_eq!(DEFAULT_NETWORK.addr48_of(ip), Some(pk.addr48()));
        }
    }
}
