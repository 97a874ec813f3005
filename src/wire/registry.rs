//! The wire format of registry and trust messages, version 1: a compact binary encoding written
//! by hand, so every byte is accounted for and the decoder can be checked never to panic.
//!
//! Every control datagram starts with [`MAGIC`] (`0x50`, `'P'`, which WireGuard never uses as a
//! first byte), then [`VERSION`], then a type byte. Types below `0x80` are *requests*: sent by a
//! node (to a registry, or directly to a peer for trust messages) and signed by it. Types from
//! `0x80` are *responses and pushes* from a registry.
//!
//! ```text
//! request:  50 | 01 | type | sender key (32) | nonce (16) | timestamp ms (u64) | body | signature (64)
//! response: 50 | 01 | type | in_reply_to nonce (16) | body | signature (64)
//! ```
//! The signature is Ed25519 by `sender` over [`SIGNATURE_DOMAIN`] followed by every byte of the
//! datagram before the signature. A response is signed likewise by the registry's own key over
//! [`RESPONSE_SIGNATURE_DOMAIN`] and its bytes. Integers are big-endian. A datagram is at most
//! [`MAX_DATAGRAM`] bytes so it never fragments. Trailing bytes are refused. The full field
//! reference is in `docs/PROTOCOL.md`, "Registry messages (v1)".

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::identity::{Identity, PublicKey};
use crate::mapping::{Addr48, Hostname};

/// First byte of every control datagram (`'P'`).
pub use crate::wire::CONTROL_MAGIC as MAGIC;
/// The protocol version this module speaks.
pub const VERSION: u8 = 1;
/// Upper bound on any control datagram, so it never fragments on a 1280-byte path.
pub const MAX_DATAGRAM: usize = 1200;
/// Prefix signed before the message bytes, so a signature made here can never be replayed as a
/// signature in another protocol that uses the same key.
pub const SIGNATURE_DOMAIN: &[u8] = b"pilot/control/v1\0";
/// Prefix signed before a registry response's bytes (a different domain from requests, so a
/// response signature is never valid as a request signature and vice versa).
pub const RESPONSE_SIGNATURE_DOMAIN: &[u8] = b"pilot/registry/v1\0";
/// Longest justification a trust request may carry, in bytes of UTF-8.
pub const MAX_JUSTIFICATION: usize = 256;
/// Longest reason a trust response may carry, in bytes of UTF-8.
pub const MAX_REASON: usize = 256;
/// Longest error message a registry sends, in bytes of UTF-8.
pub const MAX_ERROR_MESSAGE: usize = 256;
/// Most candidate endpoints one message carries.
pub const MAX_CANDIDATES: usize = 8;
/// Most push ids one `Delivered` acknowledgement carries.
pub const MAX_DELIVERED: usize = 16;
/// Bytes of a request header after the type byte: key, nonce, timestamp.
const REQUEST_HEADER: usize = 3 + 32 + 16 + 8;
/// Bytes of a signature.
const SIGNATURE_LEN: usize = 64;

/// A 16-byte random value that makes every request unique; also the request's id.
pub type Nonce = [u8; 16];

/// Why bytes could not be decoded, or a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The first byte is not [`MAGIC`]: not a control message.
    #[error("not a control message (first byte is not 0x50)")]
    NotControl,
    /// A version this build does not speak.
    #[error("unsupported control protocol version {0}")]
    UnsupportedVersion(u8),
    /// A type byte this build does not know.
    #[error("unknown message type 0x{0:02x}")]
    UnknownType(u8),
    /// The message ends before a field it needs.
    #[error("message truncated")]
    Truncated,
    /// Bytes remain after the last field.
    #[error("trailing bytes after the message")]
    TrailingBytes,
    /// A field holds a value that is not allowed.
    #[error("invalid field: {0}")]
    Invalid(&'static str),
    /// The datagram is (or would be) larger than [`MAX_DATAGRAM`].
    #[error("message larger than {MAX_DATAGRAM} bytes")]
    TooLarge,
    /// The signature does not verify for the sender key.
    #[error("bad signature")]
    BadSignature,
}

impl From<WireError> for crate::error::PilotError {
    fn from(e: WireError) -> Self {
        crate::error::PilotError::invalid(
            format!("invalid registry message: {e}"),
            "the sender speaks another protocol version or is faulty",
        )
    }
}

/// A trust decision carried by a trust response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrustDecision {
    /// The sender refuses the request.
    Reject,
    /// The sender approves: trust is now mutual.
    Approve,
    /// The sender withdraws trust it gave before (no request needed).
    Revoke,
}

impl TrustDecision {
    fn to_byte(self) -> u8 {
        match self {
            TrustDecision::Reject => 0,
            TrustDecision::Approve => 1,
            TrustDecision::Revoke => 2,
        }
    }
    fn from_byte(b: u8) -> Result<Self, WireError> {
        Ok(match b {
            0 => TrustDecision::Reject,
            1 => TrustDecision::Approve,
            2 => TrustDecision::Revoke,
            _ => return Err(WireError::Invalid("trust decision")),
        })
    }
}

/// The fields every request carries before its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Who sends (and signed) the request: the identity the request speaks for.
    pub sender: PublicKey,
    /// Random, unique per request: the replay guard and the request id.
    pub nonce: Nonce,
    /// Sender's clock, unix milliseconds: bounds how long a nonce must be remembered.
    pub timestamp_ms: u64,
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestBody {
    /// Announce presence (and optionally claim a hostname) with local candidate endpoints.
    Register {
        /// A hostname to claim, if any; `None` keeps whatever name the key holds.
        hostname: Option<Hostname>,
        /// The node's local (LAN) endpoints, for peers behind the same NAT.
        candidates: Vec<SocketAddr>,
    },
    /// Keep the registration (and the NAT mapping) alive.
    Heartbeat,
    /// Claim a hostname, releasing the one held before.
    SetHostname {
        /// The name to claim.
        hostname: Hostname,
    },
    /// Give up the hostname the sender holds.
    ReleaseHostname,
    /// Resolve an exact hostname to a key and address (never an endpoint).
    Lookup {
        /// The name to resolve.
        hostname: Hostname,
    },
    /// Ask `target` to trust the sender. Also valid sent directly to the peer.
    TrustRequest {
        /// Whose trust is asked for.
        target: PublicKey,
        /// Why, for the human or agent deciding (UTF-8, at most [`MAX_JUSTIFICATION`] bytes).
        justification: String,
    },
    /// Answer a trust request (or revoke trust). Also valid sent directly to the peer.
    TrustResponse {
        /// The node that asked (or, for a revocation, the node losing trust).
        target: PublicKey,
        /// The nonce of the request answered; zero for a revocation.
        in_reply_to: Nonce,
        /// The decision.
        decision: TrustDecision,
        /// Why (UTF-8, at most [`MAX_REASON`] bytes).
        reason: String,
    },
    /// Ask for `target`'s endpoints, offering ours; forwarded to the target, which answers only
    /// if it trusts the sender.
    EndpointRequest {
        /// Whose endpoints are wanted.
        target: PublicKey,
        /// The sender's local candidates (the registry adds the reflexive one).
        candidates: Vec<SocketAddr>,
    },
    /// The target's answer to an endpoint request, forwarded to the asker.
    EndpointResponse {
        /// The asker.
        target: PublicKey,
        /// The nonce of the endpoint request answered.
        in_reply_to: Nonce,
        /// The sender's local candidates.
        candidates: Vec<SocketAddr>,
    },
    /// Acknowledge pushes (by their nonce) so the registry stops holding them.
    Delivered {
        /// The nonces of the pushed originals received.
        nonces: Vec<Nonce>,
    },
}

impl RequestBody {
    fn type_byte(&self) -> u8 {
        match self {
            RequestBody::Register { .. } => 0x01,
            RequestBody::Heartbeat => 0x02,
            RequestBody::SetHostname { .. } => 0x03,
            RequestBody::ReleaseHostname => 0x04,
            RequestBody::Lookup { .. } => 0x05,
            RequestBody::TrustRequest { .. } => 0x06,
            RequestBody::TrustResponse { .. } => 0x07,
            RequestBody::EndpointRequest { .. } => 0x08,
            RequestBody::EndpointResponse { .. } => 0x09,
            RequestBody::Delivered { .. } => 0x0a,
        }
    }

    /// A short name for logs and counters.
    pub fn name(&self) -> &'static str {
        match self {
            RequestBody::Register { .. } => "register",
            RequestBody::Heartbeat => "heartbeat",
            RequestBody::SetHostname { .. } => "set_hostname",
            RequestBody::ReleaseHostname => "release_hostname",
            RequestBody::Lookup { .. } => "lookup",
            RequestBody::TrustRequest { .. } => "trust_request",
            RequestBody::TrustResponse { .. } => "trust_response",
            RequestBody::EndpointRequest { .. } => "endpoint_request",
            RequestBody::EndpointResponse { .. } => "endpoint_response",
            RequestBody::Delivered { .. } => "delivered",
        }
    }
}

/// A request: header and body. Encoded signed; decoded only with its signature checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Sender, nonce, timestamp.
    pub header: Header,
    /// What is asked.
    pub body: RequestBody,
}

impl Request {
    /// Encodes and signs this request with `identity`, which must be the header's sender.
    pub fn encode_signed(&self, identity: &Identity) -> Result<Vec<u8>, WireError> {
        if identity.public_key() != self.header.sender {
            return Err(WireError::Invalid("sender is not the signing identity"));
        }
        let mut w = Vec::with_capacity(256);
        w.extend_from_slice(&[MAGIC, VERSION, self.body.type_byte()]);
        w.extend_from_slice(self.header.sender.as_bytes());
        w.extend_from_slice(&self.header.nonce);
        w.extend_from_slice(&self.header.timestamp_ms.to_be_bytes());
        match &self.body {
            RequestBody::Register {
                hostname,
                candidates,
            } => {
                put_hostname(&mut w, hostname.as_ref());
                put_addrs(&mut w, candidates)?;
            }
            RequestBody::Heartbeat | RequestBody::ReleaseHostname => {}
            RequestBody::SetHostname { hostname } | RequestBody::Lookup { hostname } => {
                put_hostname(&mut w, Some(hostname))
            }
            RequestBody::TrustRequest {
                target,
                justification,
            } => {
                w.extend_from_slice(target.as_bytes());
                put_text(&mut w, justification, MAX_JUSTIFICATION)?;
            }
            RequestBody::TrustResponse {
                target,
                in_reply_to,
                decision,
                reason,
            } => {
                w.extend_from_slice(target.as_bytes());
                w.extend_from_slice(in_reply_to);
                w.push(decision.to_byte());
                put_text(&mut w, reason, MAX_REASON)?;
            }
            RequestBody::EndpointRequest { target, candidates } => {
                w.extend_from_slice(target.as_bytes());
                put_addrs(&mut w, candidates)?;
            }
            RequestBody::EndpointResponse {
                target,
                in_reply_to,
                candidates,
            } => {
                w.extend_from_slice(target.as_bytes());
                w.extend_from_slice(in_reply_to);
                put_addrs(&mut w, candidates)?;
            }
            RequestBody::Delivered { nonces } => {
                if nonces.len() > MAX_DELIVERED {
                    return Err(WireError::Invalid("too many delivered nonces"));
                }
                w.push(nonces.len() as u8);
                for n in nonces {
                    w.extend_from_slice(n);
                }
            }
        }
        if w.len() + SIGNATURE_LEN > MAX_DATAGRAM {
            return Err(WireError::TooLarge);
        }
        let sig = identity.sign(&signed_bytes(&w));
        w.extend_from_slice(&sig);
        Ok(w)
    }

    /// Decodes a request and checks its signature. Never panics, whatever the bytes.
    pub fn decode_verified(bytes: &[u8]) -> Result<Request, WireError> {
        let req = Self::decode_unverified(bytes)?;
        let (msg, sig) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
        let sig: [u8; 64] = sig.try_into().map_err(|_| WireError::Truncated)?;
        if !req.header.sender.verify(&signed_bytes(msg), &sig) {
            return Err(WireError::BadSignature);
        }
        Ok(req)
    }

    /// Decodes the fields without checking the signature (the signature must still be present).
    fn decode_unverified(bytes: &[u8]) -> Result<Request, WireError> {
        if bytes.len() > MAX_DATAGRAM {
            return Err(WireError::TooLarge);
        }
        let ty = check_preamble(bytes)?;
        if ty >= 0x80 {
            return Err(WireError::UnknownType(ty));
        }
        if bytes.len() < REQUEST_HEADER + SIGNATURE_LEN {
            return Err(WireError::Truncated);
        }
        let mut r = Reader::new(&bytes[3..bytes.len() - SIGNATURE_LEN]);
        let header = Header {
            sender: r.key()?,
            nonce: r.array()?,
            timestamp_ms: r.u64()?,
        };
        let body = match ty {
            0x01 => RequestBody::Register {
                hostname: r.hostname()?,
                candidates: r.addrs()?,
            },
            0x02 => RequestBody::Heartbeat,
            0x03 => RequestBody::SetHostname {
                hostname: r.hostname()?.ok_or(WireError::Invalid("empty hostname"))?,
            },
            0x04 => RequestBody::ReleaseHostname,
            0x05 => RequestBody::Lookup {
                hostname: r.hostname()?.ok_or(WireError::Invalid("empty hostname"))?,
            },
            0x06 => RequestBody::TrustRequest {
                target: r.key()?,
                justification: r.text(MAX_JUSTIFICATION)?,
            },
            0x07 => RequestBody::TrustResponse {
                target: r.key()?,
                in_reply_to: r.array()?,
                decision: TrustDecision::from_byte(r.u8()?)?,
                reason: r.text(MAX_REASON)?,
            },
            0x08 => RequestBody::EndpointRequest {
                target: r.key()?,
                candidates: r.addrs()?,
            },
            0x09 => RequestBody::EndpointResponse {
                target: r.key()?,
                in_reply_to: r.array()?,
                candidates: r.addrs()?,
            },
            0x0a => {
                let n = r.u8()? as usize;
                if n > MAX_DELIVERED {
                    return Err(WireError::Invalid("too many delivered nonces"));
                }
                let mut nonces = Vec::with_capacity(n);
                for _ in 0..n {
                    nonces.push(r.array()?);
                }
                RequestBody::Delivered { nonces }
            }
            other => return Err(WireError::UnknownType(other)),
        };
        r.finish()?;
        Ok(Request { header, body })
    }
}

/// Whether a hostname asked for in `Register` was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostnameStatus {
    /// The request carried no hostname.
    NotRequested,
    /// The sender holds the name now.
    Granted,
    /// Another key holds the name; the sender's registration still succeeded.
    Taken,
}

/// Why a registry refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// A field is not acceptable.
    InvalidArgument,
    /// The name or node is not known (or, for endpoints, not online).
    NotFound,
    /// Another key holds the hostname.
    AlreadyExists,
    /// The request's timestamp is more than the allowed skew from the registry's clock.
    StaleTimestamp,
    /// Too many requests of this kind; retry later.
    RateLimited,
    /// The sender is not registered (the registry restarted or forgot it): register again.
    UnknownNode,
    /// The target holds as many pending messages as allowed.
    QueueFull,
    /// The registry failed (storage).
    Internal,
}

impl Status {
    fn to_byte(self) -> u8 {
        match self {
            Status::InvalidArgument => 1,
            Status::NotFound => 2,
            Status::AlreadyExists => 3,
            Status::StaleTimestamp => 4,
            Status::RateLimited => 5,
            Status::UnknownNode => 6,
            Status::QueueFull => 7,
            Status::Internal => 8,
        }
    }
    fn from_byte(b: u8) -> Result<Self, WireError> {
        Ok(match b {
            1 => Status::InvalidArgument,
            2 => Status::NotFound,
            3 => Status::AlreadyExists,
            4 => Status::StaleTimestamp,
            5 => Status::RateLimited,
            6 => Status::UnknownNode,
            7 => Status::QueueFull,
            8 => Status::Internal,
            _ => return Err(WireError::Invalid("status code")),
        })
    }

    /// The user-facing error code this status maps to.
    pub fn error_code(self) -> crate::error::ErrorCode {
        use crate::error::ErrorCode;
        match self {
            Status::InvalidArgument | Status::StaleTimestamp => ErrorCode::InvalidArgument,
            Status::NotFound => ErrorCode::NotFound,
            Status::AlreadyExists => ErrorCode::AlreadyExists,
            Status::RateLimited | Status::QueueFull => ErrorCode::Unauthorized,
            Status::UnknownNode => ErrorCode::ConnectionFailed,
            Status::Internal => ErrorCode::Internal,
        }
    }
}

/// A message from a registry to a node: an answer (matched by nonce) or a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseBody {
    /// Answer to `Register`.
    Registered {
        /// The sender's address as the registry saw it (its reflexive address).
        observed: SocketAddr,
        /// What became of the hostname asked for.
        hostname: HostnameStatus,
        /// The registry's public key, which signs all its responses (learned on first use
        /// unless pinned in the node's configuration).
        registry_key: PublicKey,
    },
    /// Success, for requests with nothing else to say.
    Ack {
        /// The sender's address as the registry saw it.
        observed: SocketAddr,
    },
    /// Refusal.
    Error {
        /// Why.
        status: Status,
        /// The registry's clock (unix ms), so a node can tell its own clock skew.
        registry_time_ms: u64,
        /// Human-readable detail (at most [`MAX_ERROR_MESSAGE`] bytes).
        message: String,
    },
    /// Answer to `Lookup`: key and address, never an endpoint.
    LookupResult {
        /// The name looked up.
        hostname: Hostname,
        /// The key holding it.
        key: PublicKey,
        /// That key's address (derivable from the key; checked by the receiver).
        addr48: Addr48,
    },
    /// A trust request for the receiver, forwarded verbatim (the receiver checks the
    /// requester's signature itself). `in_reply_to` is the original's nonce (the push id).
    PushTrustRequest {
        /// The hostname the registry has bound to the requester's key, if any.
        hostname: Option<Hostname>,
        /// The original signed `TrustRequest` datagram.
        original: Vec<u8>,
    },
    /// A trust response for the receiver, forwarded verbatim.
    PushTrustResponse {
        /// The hostname bound to the responder's key, if any.
        hostname: Option<Hostname>,
        /// The original signed `TrustResponse` datagram.
        original: Vec<u8>,
    },
    /// An endpoint request for the receiver, forwarded verbatim with the asker's reflexive
    /// address.
    PushEndpointRequest {
        /// The asker's address as the registry saw it.
        observed: SocketAddr,
        /// The original signed `EndpointRequest` datagram.
        original: Vec<u8>,
    },
    /// The target's answer to our endpoint request, forwarded verbatim with the target's
    /// reflexive address. `in_reply_to` is our endpoint request's nonce.
    EndpointInfo {
        /// The target's address as the registry saw it.
        observed: SocketAddr,
        /// The original signed `EndpointResponse` datagram.
        original: Vec<u8>,
    },
}

impl ResponseBody {
    fn type_byte(&self) -> u8 {
        match self {
            ResponseBody::Registered { .. } => 0x80,
            ResponseBody::Ack { .. } => 0x81,
            ResponseBody::Error { .. } => 0x82,
            ResponseBody::LookupResult { .. } => 0x83,
            ResponseBody::PushTrustRequest { .. } => 0x84,
            ResponseBody::PushTrustResponse { .. } => 0x85,
            ResponseBody::PushEndpointRequest { .. } => 0x86,
            ResponseBody::EndpointInfo { .. } => 0x87,
        }
    }
}

/// A registry-to-node message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The nonce of the request answered, or of the original pushed.
    pub in_reply_to: Nonce,
    /// The content.
    pub body: ResponseBody,
}

impl Response {
    /// Encodes the response and signs it with the registry's identity; fails only if it would
    /// exceed [`MAX_DATAGRAM`].
    pub fn encode_signed(&self, registry: &Identity) -> Result<Vec<u8>, WireError> {
        let mut w = Vec::with_capacity(128);
        w.extend_from_slice(&[MAGIC, VERSION, self.body.type_byte()]);
        w.extend_from_slice(&self.in_reply_to);
        match &self.body {
            ResponseBody::Registered {
                observed,
                hostname,
                registry_key,
            } => {
                put_addr(&mut w, observed);
                w.push(match hostname {
                    HostnameStatus::NotRequested => 0,
                    HostnameStatus::Granted => 1,
                    HostnameStatus::Taken => 2,
                });
                w.extend_from_slice(registry_key.as_bytes());
            }
            ResponseBody::Ack { observed } => put_addr(&mut w, observed),
            ResponseBody::Error {
                status,
                registry_time_ms,
                message,
            } => {
                w.push(status.to_byte());
                w.extend_from_slice(&registry_time_ms.to_be_bytes());
                put_text(
                    &mut w,
                    truncate_utf8(message, MAX_ERROR_MESSAGE),
                    MAX_ERROR_MESSAGE,
                )?;
            }
            ResponseBody::LookupResult {
                hostname,
                key,
                addr48,
            } => {
                put_hostname(&mut w, Some(hostname));
                w.extend_from_slice(key.as_bytes());
                w.extend_from_slice(&addr48.to_bytes());
            }
            ResponseBody::PushTrustRequest { hostname, original }
            | ResponseBody::PushTrustResponse { hostname, original } => {
                put_hostname(&mut w, hostname.as_ref());
                put_blob(&mut w, original)?;
            }
            ResponseBody::PushEndpointRequest { observed, original }
            | ResponseBody::EndpointInfo { observed, original } => {
                put_addr(&mut w, observed);
                put_blob(&mut w, original)?;
            }
        }
        if w.len() + SIGNATURE_LEN > MAX_DATAGRAM {
            return Err(WireError::TooLarge);
        }
        let sig = registry.sign(&response_signed_bytes(&w));
        w.extend_from_slice(&sig);
        Ok(w)
    }

    /// Whether `bytes` (a whole response datagram) carries a valid signature by `registry`.
    pub fn verify(bytes: &[u8], registry: &PublicKey) -> bool {
        if bytes.len() < SIGNATURE_LEN {
            return false;
        }
        let (msg, sig) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
        let Ok(sig) = <[u8; 64]>::try_from(sig) else {
            return false;
        };
        registry.verify(&response_signed_bytes(msg), &sig)
    }

    /// Decodes a registry-to-node message without checking its signature (check it with
    /// [`Response::verify`] against the registry's key). Never panics, whatever the bytes.
    /// Forwarded originals are returned as bytes; check them with [`Request::decode_verified`].
    pub fn decode(bytes: &[u8]) -> Result<Response, WireError> {
        if bytes.len() > MAX_DATAGRAM {
            return Err(WireError::TooLarge);
        }
        let ty = check_preamble(bytes)?;
        if ty < 0x80 {
            return Err(WireError::UnknownType(ty));
        }
        if bytes.len() < 3 + SIGNATURE_LEN {
            return Err(WireError::Truncated);
        }
        let mut r = Reader::new(&bytes[3..bytes.len() - SIGNATURE_LEN]);
        let in_reply_to = r.array()?;
        let body = match ty {
            0x80 => ResponseBody::Registered {
                observed: r.addr()?,
                hostname: match r.u8()? {
                    0 => HostnameStatus::NotRequested,
                    1 => HostnameStatus::Granted,
                    2 => HostnameStatus::Taken,
                    _ => return Err(WireError::Invalid("hostname status")),
                },
                registry_key: r.key()?,
            },
            0x81 => ResponseBody::Ack {
                observed: r.addr()?,
            },
            0x82 => ResponseBody::Error {
                status: Status::from_byte(r.u8()?)?,
                registry_time_ms: r.u64()?,
                message: r.text(MAX_ERROR_MESSAGE)?,
            },
            0x83 => {
                let hostname = r.hostname()?.ok_or(WireError::Invalid("empty hostname"))?;
                let key = r.key()?;
                let addr48 = Addr48::from_bytes(r.array()?);
                ResponseBody::LookupResult {
                    hostname,
                    key,
                    addr48,
                }
            }
            0x84 => ResponseBody::PushTrustRequest {
                hostname: r.hostname()?,
                original: r.blob()?,
            },
            0x85 => ResponseBody::PushTrustResponse {
                hostname: r.hostname()?,
                original: r.blob()?,
            },
            0x86 => ResponseBody::PushEndpointRequest {
                observed: r.addr()?,
                original: r.blob()?,
            },
            0x87 => ResponseBody::EndpointInfo {
                observed: r.addr()?,
                original: r.blob()?,
            },
            other => return Err(WireError::UnknownType(other)),
        };
        r.finish()?;
        Ok(Response { in_reply_to, body })
    }
}

/// Whether a datagram is a control message (starts with [`MAGIC`]).
pub fn is_control(bytes: &[u8]) -> bool {
    bytes.first() == Some(&MAGIC)
}

/// Whether a control datagram is a request (type below `0x80`), e.g. a trust message sent
/// directly by a peer, rather than a registry response. `None` if it is not a v1 control message.
pub fn is_request(bytes: &[u8]) -> Option<bool> {
    check_preamble(bytes).ok().map(|t| t < 0x80)
}

/// The bytes a registry's signature covers: the response domain prefix then the message.
fn response_signed_bytes(msg: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(RESPONSE_SIGNATURE_DOMAIN.len() + msg.len());
    v.extend_from_slice(RESPONSE_SIGNATURE_DOMAIN);
    v.extend_from_slice(msg);
    v
}

/// The bytes a signature covers: the domain prefix then the message.
fn signed_bytes(msg: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(SIGNATURE_DOMAIN.len() + msg.len());
    v.extend_from_slice(SIGNATURE_DOMAIN);
    v.extend_from_slice(msg);
    v
}

fn check_preamble(bytes: &[u8]) -> Result<u8, WireError> {
    match bytes {
        [] => Err(WireError::Truncated),
        [m, ..] if *m != MAGIC => Err(WireError::NotControl),
        [_, v, ..] if *v != VERSION => Err(WireError::UnsupportedVersion(*v)),
        [_, _, t, ..] => Ok(*t),
        _ => Err(WireError::Truncated),
    }
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn put_hostname(w: &mut Vec<u8>, h: Option<&Hostname>) {
    match h {
        None => w.push(0),
        Some(h) => {
            // Hostnames are validated to 1..=63 bytes, so the length fits in a byte.
            w.push(h.as_str().len() as u8);
            w.extend_from_slice(h.as_str().as_bytes());
        }
    }
}

fn put_text(w: &mut Vec<u8>, s: &str, max: usize) -> Result<(), WireError> {
    if s.len() > max {
        return Err(WireError::Invalid("text too long"));
    }
    w.extend_from_slice(&(s.len() as u16).to_be_bytes());
    w.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put_blob(w: &mut Vec<u8>, b: &[u8]) -> Result<(), WireError> {
    if b.len() > MAX_DATAGRAM {
        return Err(WireError::TooLarge);
    }
    w.extend_from_slice(&(b.len() as u16).to_be_bytes());
    w.extend_from_slice(b);
    Ok(())
}

fn put_addr(w: &mut Vec<u8>, a: &SocketAddr) {
    match a.ip() {
        IpAddr::V4(ip) => {
            w.push(4);
            w.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            w.push(6);
            w.extend_from_slice(&ip.octets());
        }
    }
    w.extend_from_slice(&a.port().to_be_bytes());
}

fn put_addrs(w: &mut Vec<u8>, addrs: &[SocketAddr]) -> Result<(), WireError> {
    if addrs.len() > MAX_CANDIDATES {
        return Err(WireError::Invalid("too many candidates"));
    }
    w.push(addrs.len() as u8);
    for a in addrs {
        put_addr(w, a);
    }
    Ok(())
}

/// A bounds-checked cursor: every read returns `Truncated` instead of panicking.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(WireError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(WireError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn key(&mut self) -> Result<PublicKey, WireError> {
        PublicKey::from_bytes(self.array()?).map_err(|_| WireError::Invalid("public key"))
    }

    fn hostname(&mut self) -> Result<Option<Hostname>, WireError> {
        let n = self.u8()? as usize;
        if n == 0 {
            return Ok(None);
        }
        let s = std::str::from_utf8(self.take(n)?).map_err(|_| WireError::Invalid("hostname"))?;
        Hostname::new(s)
            .map(Some)
            .map_err(|_| WireError::Invalid("hostname"))
    }

    fn text(&mut self, max: usize) -> Result<String, WireError> {
        let n = self.u16()? as usize;
        if n > max {
            return Err(WireError::Invalid("text too long"));
        }
        let s = std::str::from_utf8(self.take(n)?).map_err(|_| WireError::Invalid("utf-8"))?;
        Ok(s.to_string())
    }

    fn blob(&mut self) -> Result<Vec<u8>, WireError> {
        let n = self.u16()? as usize;
        Ok(self.take(n)?.to_vec())
    }

    fn addr(&mut self) -> Result<SocketAddr, WireError> {
        let ip = match self.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
            _ => return Err(WireError::Invalid("address family")),
        };
        Ok(SocketAddr::new(ip, self.u16()?))
    }

    fn addrs(&mut self) -> Result<Vec<SocketAddr>, WireError> {
        let n = self.u8()? as usize;
        if n > MAX_CANDIDATES {
            return Err(WireError::Invalid("too many candidates"));
        }
        (0..n).map(|_| self.addr()).collect()
    }

    fn finish(&self) -> Result<(), WireError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(WireError::TrailingBytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: u8) -> Identity {
        Identity::from_seed([n; 32])
    }

    fn req(identity: &Identity, body: RequestBody) -> Request {
        Request {
            header: Header {
                sender: identity.public_key(),
                nonce: [7; 16],
                timestamp_ms: 1_700_000_000_000,
            },
            body,
        }
    }

    fn all_bodies() -> Vec<RequestBody> {
        let a: SocketAddr = "192.0.2.1:4242".parse().unwrap();
        let b: SocketAddr = "[2001:db8::1]:51820".parse().unwrap();
        let h = Hostname::new("worker-node").unwrap();
        vec![
            RequestBody::Register {
                hostname: Some(h.clone()),
                candidates: vec![a, b],
            },
            RequestBody::Register {
                hostname: None,
                candidates: vec![],
            },
            RequestBody::Heartbeat,
            RequestBody::SetHostname {
                hostname: h.clone(),
            },
            RequestBody::ReleaseHostname,
            RequestBody::Lookup { hostname: h },
            RequestBody::TrustRequest {
                target: id(2).public_key(),
                justification: "é".repeat(128),
            },
            RequestBody::TrustResponse {
                target: id(2).public_key(),
                in_reply_to: [9; 16],
                decision: TrustDecision::Revoke,
                reason: "done".into(),
            },
            RequestBody::EndpointRequest {
                target: id(2).public_key(),
                candidates: vec![a; MAX_CANDIDATES],
            },
            RequestBody::EndpointResponse {
                target: id(2).public_key(),
                in_reply_to: [1; 16],
                candidates: vec![b],
            },
            RequestBody::Delivered {
                nonces: vec![[3; 16]; MAX_DELIVERED],
            },
        ]
    }

    #[test]
    fn every_request_round_trips_and_verifies() {
        let me = id(1);
        for body in all_bodies() {
            let r = req(&me, body);
            let bytes = r.encode_signed(&me).unwrap();
            assert!(bytes.len() <= MAX_DATAGRAM);
            assert_eq!(Request::decode_verified(&bytes).unwrap(), r);
        }
    }

    #[test]
    fn flipping_any_byte_breaks_the_signature_or_the_decoding() {
        let me = id(1);
        let r = req(
            &me,
            RequestBody::TrustRequest {
                target: id(2).public_key(),
                justification: "let me in".into(),
            },
        );
        let bytes = r.encode_signed(&me).unwrap();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(Request::decode_verified(&b).is_err(), "byte {i}");
        }
    }

    #[test]
    fn signing_with_another_identity_is_refused() {
        let r = req(&id(1), RequestBody::Heartbeat);
        assert!(r.encode_signed(&id(2)).is_err());
    }

    #[test]
    fn overlong_justification_is_refused_on_both_sides() {
        let me = id(1);
        let r = req(
            &me,
            RequestBody::TrustRequest {
                target: id(2).public_key(),
                justification: "x".repeat(MAX_JUSTIFICATION + 1),
            },
        );
        assert!(r.encode_signed(&me).is_err());
    }

    #[test]
    fn every_response_round_trips() {
        let a: SocketAddr = "198.51.100.7:9".parse().unwrap();
        let h = Hostname::new("worker-node").unwrap();
        let bodies = vec![
            ResponseBody::Registered {
                observed: a,
                hostname: HostnameStatus::Taken,
                registry_key: id(9).public_key(),
            },
            ResponseBody::Ack { observed: a },
            ResponseBody::Error {
                status: Status::UnknownNode,
                registry_time_ms: 5,
                message: "register again".into(),
            },
            ResponseBody::LookupResult {
                hostname: h.clone(),
                key: id(3).public_key(),
                addr48: id(3).addr48(),
            },
            ResponseBody::PushTrustRequest {
                hostname: Some(h),
                original: vec![1, 2, 3],
            },
            ResponseBody::PushTrustResponse {
                hostname: None,
                original: vec![],
            },
            ResponseBody::PushEndpointRequest {
                observed: a,
                original: vec![0x50; 400],
            },
            ResponseBody::EndpointInfo {
                observed: a,
                original: vec![4],
            },
        ];
        for body in bodies {
            let r = Response {
                in_reply_to: [5; 16],
                body,
            };
            let bytes = r.encode_signed(&id(9)).unwrap();
            assert_eq!(Response::decode(&bytes).unwrap(), r);
            assert!(Response::verify(&bytes, &id(9).public_key()));
            assert!(!Response::verify(&bytes, &id(8).public_key()));
            let mut tampered = bytes.clone();
            tampered[5] ^= 1;
            assert!(!Response::verify(&tampered, &id(9).public_key()));
        }
    }

    #[test]
    fn long_error_messages_are_truncated_not_refused() {
        let r = Response {
            in_reply_to: [0; 16],
            body: ResponseBody::Error {
                status: Status::Internal,
                registry_time_ms: 0,
                message: "ü".repeat(MAX_ERROR_MESSAGE),
            },
        };
        let back = Response::decode(&r.encode_signed(&id(9)).unwrap()).unwrap();
        match back.body {
            ResponseBody::Error { message, .. } => assert!(message.len() <= MAX_ERROR_MESSAGE),
            _ => panic!(),
        }
    }

    #[test]
    fn wireguard_and_foreign_first_bytes_are_not_control() {
        for first in 1..=4u8 {
            assert!(!is_control(&[first, 0, 0, 0]));
            assert_eq!(
                Response::decode(&[first, 1, 0x81]),
                Err(WireError::NotControl)
            );
        }
        assert_eq!(
            Response::decode(&[MAGIC, 2, 0x81]),
            Err(WireError::UnsupportedVersion(2))
        );
    }

    proptest! {
        #[test]
        fn decoders_never_panic_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..1300)) {
            let _ = Request::decode_verified(&bytes);
            let _ = Response::decode(&bytes);
            let _ = Response::verify(&bytes, &id(9).public_key());
            let _ = is_request(&bytes);
        }

        #[test]
        fn decoders_never_panic_on_mutated_valid_messages(
            which in 0usize..11,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
        ) {
            let me = id(1);
            let body = all_bodies().swap_remove(which);
            let mut bytes = req(&me, body).encode_signed(&me).unwrap();
            for (i, v) in flips {
                let i = i % bytes.len();
                bytes[i] = v;
            }
            bytes.truncate(cut % (bytes.len() + 1));
            let _ = Request::decode_verified(&bytes);
            // The same bytes behind a response preamble exercise the response decoder.
            let mut resp = vec![MAGIC, VERSION, 0x80 + (which as u8 % 8)];
            resp.extend_from_slice(&bytes);
            let _ = Response::decode(&resp);
        }

        #[test]
        fn trust_requests_round_trip(seed in any::<[u8; 32]>(), text in "\\PC{0,64}", ts in any::<u64>(), nonce in any::<[u8; 16]>()) {
            let me = Identity::from_seed(seed);
            let r = Request {
                header: Header { sender: me.public_key(), nonce, timestamp_ms: ts },
                body: RequestBody::TrustRequest { target: id(2).public_key(), justification: text },
            };
            let bytes = r.encode_signed(&me).unwrap();
            prop_assert_eq!(Request::decode_verified(&bytes).unwrap(), r);
        }
    }
}
