//! A SOCKS5 proxy (RFC 1928) into the overlay, so programs on a node without a TUN device can
//! reach peers: `curl --socks5-hostname 127.0.0.1:1080 http://worker-node.pilot:8080/`.
//!
//! Authentication: none by default; with `[socks5] auth = "password"`, only RFC 1929
//! username/password with the credentials of the owner-only file `socks5.credentials` in the
//! state directory (generated on the first start; see [`Credentials`]). A wrong username or
//! password gets status 0x01 and the connection is closed; a client that offers no
//! username/password method gets 0xFF ("no acceptable methods").
//!
//! Supported: CONNECT to an overlay IPv6 literal, to `NAME.pilot` (or a bare
//! `NAME`) and to addr48 text (`1a2b.3c4d.5e6f`, optionally with `.pilot`) given as a domain
//! name; UDP ASSOCIATE (RFC 1928 §7) in userspace mode, relayed through the netstack's UDP
//! sockets (`udp_relay.rs`, header codec in `udp_header.rs`; datagram targets follow the
//! CONNECT rules, fragments are dropped and counted, the association ends with its TCP
//! connection). Not supported: BIND (reply 0x07; UDP ASSOCIATE too without a netstack), IPv4
//! (0x08), names outside the overlay (0x04).
//!
//! The protocol parsing is sans-IO: [`parse_greeting`] and [`parse_request`] take the bytes
//! read so far and say [`Parsed::Incomplete`], [`Parsed::Done`] (with the length consumed) or
//! an error that names the reply to send. [`Socks5Server`] is the thin tokio layer around them.
//!
//! Files: `credentials.rs` (the credentials file), `wire.rs` (the messages, reply codes and target classification, sans-IO, with the
//! parser tests and proptests) and `server.rs` (listener, handshake, resolve, connect, splice).
//!
//! | reply | when |
//! |---|---|
//! | 0x00 | connected; the bound address is our overlay end of the connection |
//! | 0x01 | malformed request; UDP ASSOCIATE over `[udp] max_associations` |
//! | 0x02 | the policy refuses the destination (the peer is not trusted) |
//! | 0x03 | an IPv6 address outside the overlay network |
//! | 0x04 | a name that resolves to no peer |
//! | 0x05 | the peer refused the connection (nothing listens on the port) |
//! | 0x06 | the peer did not answer in time |
//! | 0x07 | BIND, an unknown command, or UDP ASSOCIATE without a netstack |
//! | 0x08 | an IPv4 address, or an unknown address type |

mod credentials;
mod server;
mod udp_header;
mod udp_relay;
mod wire;

pub use self::credentials::{Credentials, CredentialsError, CREDENTIALS_FILE, DEFAULT_USERNAME};
pub use self::server::{
    BoxFuture, Resolver, Socks5Config, Socks5Error, Socks5Server, StaticResolver, DEFAULT_LISTEN,
};
pub use self::udp_header::{
    encode_udp_header, parse_udp_header, UdpHeader, UdpHeaderError, MAX_UDP_HEADER,
    REPLY_HEADER_LEN,
};
pub use self::udp_relay::{UdpRelay, UdpRelayConfig, UdpRelayStats, NAME_CACHE};
pub use self::wire::{
    classify, encode_auth_status, encode_reply, parse_auth, parse_greeting, parse_request,
    AuthRequest, Command, Destination, Greeting, ParseError, Parsed, Reply, Request, Target,
    AUTH_FAILURE, AUTH_SUCCESS, AUTH_VERSION, MAX_AUTH_LEN, METHOD_NONE_ACCEPTABLE, METHOD_NO_AUTH,
    METHOD_USERNAME_PASSWORD, VERSION,
};
