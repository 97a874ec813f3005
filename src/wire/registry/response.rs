//! Responses and pushes: sent by a registry and signed by its key.

use std::net::SocketAddr;

use super::codec::{put_addr, put_blob, put_hostname, put_text, truncate_utf8, Reader};
use super::discovery::{put_tags, read_tags};
use super::{
    check_preamble, response_signed_bytes, Cookie, Nonce, WireError, MAGIC, MAX_DATAGRAM,
    MAX_ERROR_MESSAGE, SIGNATURE_LEN, VERSION,
};
use crate::identity::{Identity, PublicKey};
use crate::mapping::{Addr48, Hostname};

/// Bytes of a `Challenge`: preamble, nonce, cookie (no signature).
pub const CHALLENGE_LEN: usize = 3 + 16 + 16;

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
    /// Answer to a `Register` (or `Heartbeat`) from an address the registry has not seen the
    /// sender answer at: prove it by registering again with this cookie. **Unsigned** (v1.2):
    /// 35 bytes, a third of the smallest request, and free to make under a flood; a node takes
    /// it on the echoed nonce alone (a forged one only makes it echo a wrong cookie).
    Challenge {
        /// The cookie to echo in `Register`.
        cookie: Cookie,
    },
    /// (v1.3) Answer to `LookupNode`: key, address, hostname and tags; never an endpoint.
    NodeInfo {
        /// The node's key.
        key: PublicKey,
        /// Its address (derivable from the key; checked by the receiver).
        addr48: Addr48,
        /// The hostname it holds here, if any.
        hostname: Option<Hostname>,
        /// Its tags.
        tags: Vec<String>,
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
            ResponseBody::Challenge { .. } => 0x88,
            ResponseBody::NodeInfo { .. } => 0x89,
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
    /// The bytes of an (unsigned) `Challenge` answering the request `in_reply_to`.
    pub fn challenge(in_reply_to: &Nonce, cookie: &Cookie) -> Vec<u8> {
        let mut w = Vec::with_capacity(CHALLENGE_LEN);
        w.extend_from_slice(&[MAGIC, VERSION, 0x88]);
        w.extend_from_slice(in_reply_to);
        w.extend_from_slice(cookie);
        w
    }

    /// Encodes the response and signs it with the registry's identity (a `Challenge` is the
    /// exception: it is never signed, see [`Response::challenge`]); fails only if it would
    /// exceed [`MAX_DATAGRAM`].
    pub fn encode_signed(&self, registry: &Identity) -> Result<Vec<u8>, WireError> {
        if let ResponseBody::Challenge { cookie } = &self.body {
            return Ok(Self::challenge(&self.in_reply_to, cookie));
        }
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
            ResponseBody::Challenge { .. } => unreachable!("encoded unsigned above"),
            ResponseBody::NodeInfo {
                key,
                addr48,
                hostname,
                tags,
            } => {
                w.extend_from_slice(key.as_bytes());
                w.extend_from_slice(&addr48.to_bytes());
                put_hostname(&mut w, hostname.as_ref());
                put_tags(&mut w, tags)?;
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
        if ty == 0x88 {
            // Unsigned: nonce and cookie, nothing else.
            if bytes.len() != CHALLENGE_LEN {
                return Err(if bytes.len() < CHALLENGE_LEN {
                    WireError::Truncated
                } else {
                    WireError::TrailingBytes
                });
            }
            let mut r = Reader::new(&bytes[3..]);
            return Ok(Response {
                in_reply_to: r.array()?,
                body: ResponseBody::Challenge { cookie: r.array()? },
            });
        }
        if bytes.len() < 3 + SIGNATURE_LEN {
            return Err(WireError::Truncated);
        }
        let mut r = Reader::new(&bytes[3..bytes.len() - SIGNATURE_LEN]);
        let in_reply_to = r.array()?;
        let body = Self::decode_body(ty, &mut r)?;
        r.finish()?;
        Ok(Response { in_reply_to, body })
    }

    /// The body of a signed response of type `ty`.
    fn decode_body(ty: u8, r: &mut Reader<'_>) -> Result<ResponseBody, WireError> {
        Ok(match ty {
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
            0x89 => ResponseBody::NodeInfo {
                key: r.key()?,
                addr48: Addr48::from_bytes(r.array()?),
                hostname: r.hostname()?,
                tags: read_tags(r)?,
            },
            other => return Err(WireError::UnknownType(other)),
        })
    }
}
