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

mod codec;
mod discovery;
mod request;
mod response;
#[cfg(test)]
mod tests;

pub use self::discovery::{check_tags, valid_tag, MAX_TAGS, MAX_TAG_LEN};
pub use self::request::{Header, Peek, Request, RequestBody, TrustDecision, Unverified};
pub use self::response::{HostnameStatus, Response, ResponseBody, Status, CHALLENGE_LEN};

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

/// A registry's return-routability cookie: 16 bytes the registry derives from the source
/// address, the sender key, the time and a secret; a node proves it receives at an address by
/// echoing it (see `Challenge`).
pub type Cookie = [u8; 16];

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
