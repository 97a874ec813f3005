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
//! name. Not supported: BIND and UDP ASSOCIATE (reply 0x07), IPv4 (0x08), names outside the
//! overlay (0x04).
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
//! | 0x01 | malformed request |
//! | 0x02 | the policy refuses the destination (the peer is not trusted) |
//! | 0x03 | an IPv6 address outside the overlay network |
//! | 0x04 | a name that resolves to no peer |
//! | 0x05 | the peer refused the connection (nothing listens on the port) |
//! | 0x06 | the peer did not answer in time |
//! | 0x07 | BIND, UDP ASSOCIATE or an unknown command |
//! | 0x08 | an IPv4 address, or an unknown address type |

mod credentials;
mod server;
mod wire;

pub use self::credentials::{Credentials, CredentialsError, CREDENTIALS_FILE, DEFAULT_USERNAME};
pub use self::server::{
    BoxFuture, Resolver, Socks5Config, Socks5Error, Socks5Server, StaticResolver, DEFAULT_LISTEN,
};
pub use self::wire::{
    classify, encode_auth_status, encode_reply, parse_auth, parse_greeting, parse_request,
    AuthRequest, Command, Destination, Greeting, ParseError, Parsed, Reply, Request, Target,
    AUTH_FAILURE, AUTH_SUCCESS, AUTH_VERSION, MAX_AUTH_LEN, METHOD_NONE_ACCEPTABLE, METHOD_NO_AUTH,
    METHOD_USERNAME_PASSWORD, VERSION,
};
