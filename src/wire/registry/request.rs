//! Requests: sent by a node (to a registry, or directly to a peer) and signed by it.

use std::net::SocketAddr;

use super::codec::{put_addr, put_addrs, put_hostname, put_text, Reader};
use super::discovery::{put_peer_ref, put_tags, read_peer_ref, read_tags};
use super::{
    check_preamble, signed_bytes, Cookie, Nonce, WireError, MAGIC, MAX_DATAGRAM, MAX_DELIVERED,
    MAX_JUSTIFICATION, MAX_REASON, REQUEST_HEADER, SIGNATURE_DOMAIN, SIGNATURE_LEN, VERSION,
};
use crate::identity::{Identity, PreparedKey, PublicKey, Signed};
use crate::mapping::{Hostname, PeerRef};

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
        /// The registry's return-routability cookie for this source address, echoed from a
        /// `Challenge` (optional trailing field: absent on a first attempt).
        cookie: Option<Cookie>,
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
        /// (v1.4) The sender's home relay: the registry the target should relay through to
        /// reach it (optional trailing field; absent when the sender has no home yet).
        home: Option<SocketAddr>,
    },
    /// The target's answer to an endpoint request, forwarded to the asker.
    EndpointResponse {
        /// The asker.
        target: PublicKey,
        /// The nonce of the endpoint request answered.
        in_reply_to: Nonce,
        /// The sender's local candidates.
        candidates: Vec<SocketAddr>,
        /// (v1.4) The sender's home relay (optional trailing field, as in the request).
        home: Option<SocketAddr>,
    },
    /// Acknowledge pushes (by their nonce) so the registry stops holding them.
    Delivered {
        /// The nonces of the pushed originals received.
        nonces: Vec<Nonce>,
    },
    /// (v1.3) Replace the sender's tags (an empty list clears them); see `discovery`.
    SetTags {
        /// At most [`super::MAX_TAGS`] tags, each valid by [`super::valid_tag`].
        tags: Vec<String>,
    },
    /// (v1.3) Forget the sender: its hostname, tags, registration and presence.
    Deregister,
    /// (v1.3) Describe a node by key, address (online nodes only) or hostname: key, address,
    /// hostname and tags, never an endpoint.
    LookupNode {
        /// Whom.
        peer: PeerRef,
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
            RequestBody::SetTags { .. } => 0x0b,
            RequestBody::Deregister => 0x0c,
            RequestBody::LookupNode { .. } => 0x0d,
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
            RequestBody::SetTags { .. } => "set_tags",
            RequestBody::Deregister => "deregister",
            RequestBody::LookupNode { .. } => "lookup_node",
        }
    }

    /// Appends the body's fields to `w`.
    fn encode(&self, w: &mut Vec<u8>) -> Result<(), WireError> {
        match self {
            RequestBody::Register {
                hostname,
                candidates,
                cookie,
            } => {
                put_hostname(w, hostname.as_ref());
                put_addrs(w, candidates)?;
                if let Some(c) = cookie {
                    w.extend_from_slice(c);
                }
            }
            RequestBody::Heartbeat | RequestBody::ReleaseHostname | RequestBody::Deregister => {}
            RequestBody::SetTags { tags } => put_tags(w, tags)?,
            RequestBody::LookupNode { peer } => put_peer_ref(w, peer),
            RequestBody::SetHostname { hostname } | RequestBody::Lookup { hostname } => {
                put_hostname(w, Some(hostname))
            }
            RequestBody::TrustRequest {
                target,
                justification,
            } => {
                w.extend_from_slice(target.as_bytes());
                put_text(w, justification, MAX_JUSTIFICATION)?;
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
                put_text(w, reason, MAX_REASON)?;
            }
            RequestBody::EndpointRequest {
                target,
                candidates,
                home,
            } => {
                w.extend_from_slice(target.as_bytes());
                put_addrs(w, candidates)?;
                if let Some(h) = home {
                    put_addr(w, h);
                }
            }
            RequestBody::EndpointResponse {
                target,
                in_reply_to,
                candidates,
                home,
            } => {
                w.extend_from_slice(target.as_bytes());
                w.extend_from_slice(in_reply_to);
                put_addrs(w, candidates)?;
                if let Some(h) = home {
                    put_addr(w, h);
                }
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
        Ok(())
    }
}

/// What [`Request::peek`] reads of a request without any cryptography.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peek {
    /// The type byte (`0x01` is `Register`).
    pub ty: u8,
    /// The claimed sender key, raw.
    pub sender: [u8; 32],
    /// The request's nonce.
    pub nonce: Nonce,
    /// A `Register`'s cookie, if it carries one.
    pub cookie: Option<Cookie>,
}

impl Peek {
    /// Whether the request is a `Register`.
    pub fn is_register(&self) -> bool {
        self.ty == 0x01
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
        self.body.encode(&mut w)?;
        if w.len() + SIGNATURE_LEN > MAX_DATAGRAM {
            return Err(WireError::TooLarge);
        }
        let sig = identity.sign(&signed_bytes(&w));
        w.extend_from_slice(&sig);
        Ok(w)
    }

    /// Decodes a request and checks its signature. Never panics, whatever the bytes.
    pub fn decode_verified(bytes: &[u8]) -> Result<Request, WireError> {
        let u = Unverified::decode(bytes)?;
        if !u.verify() {
            return Err(WireError::BadSignature);
        }
        Ok(u.request)
    }

    /// Checks the signature of `bytes` (this request, as decoded by
    /// [`Request::decode_unverified`]) against the sender's key.
    pub fn verify_signature(&self, bytes: &[u8]) -> Result<(), WireError> {
        let at = bytes
            .len()
            .checked_sub(SIGNATURE_LEN)
            .ok_or(WireError::Truncated)?;
        let (msg, sig) = bytes.split_at(at);
        let sig: [u8; 64] = sig.try_into().map_err(|_| WireError::Truncated)?;
        if !self.header.sender.verify(&signed_bytes(msg), &sig) {
            return Err(WireError::BadSignature);
        }
        Ok(())
    }

    /// The cheap facts a registry screens a request on before any signature work: its type,
    /// the raw sender key bytes (not even checked to be a curve point), its nonce, and a
    /// `Register`'s cookie. Parses only the header and, for `Register`, its body; nothing here
    /// is authentic. Never panics, whatever the bytes.
    pub fn peek(bytes: &[u8]) -> Result<Peek, WireError> {
        let (ty, mut r) = signed_fields(bytes)?;
        let sender = r.array()?;
        let nonce = r.array()?;
        r.u64()?;
        let cookie = if ty == 0x01 {
            r.hostname()?;
            r.addrs()?;
            let c = if r.is_empty() { None } else { Some(r.array()?) };
            r.finish()?;
            c
        } else {
            None
        };
        Ok(Peek {
            ty,
            sender,
            nonce,
            cookie,
        })
    }

    /// Decodes the fields without checking the signature (the signature must still be
    /// present): for cheap checks (kind, addressee, age) before the costly
    /// [`Request::verify_signature`]. Nothing decoded here is authentic yet.
    pub fn decode_unverified(bytes: &[u8]) -> Result<Request, WireError> {
        Ok(Self::decode_with_sender(bytes)?.0)
    }

    /// [`Request::decode_unverified`], also returning the sender's key with its point
    /// decompressed (the check of the key decompresses it anyway: it is kept for the signature).
    fn decode_with_sender(bytes: &[u8]) -> Result<(Request, PreparedKey), WireError> {
        let (ty, mut r) = signed_fields(bytes)?;
        let sender =
            PreparedKey::from_bytes(r.array()?).map_err(|_| WireError::Invalid("public key"))?;
        let header = Header {
            sender: *sender.key(),
            nonce: r.array()?,
            timestamp_ms: r.u64()?,
        };
        let body = match ty {
            0x01 => RequestBody::Register {
                hostname: r.hostname()?,
                candidates: r.addrs()?,
                cookie: if r.is_empty() { None } else { Some(r.array()?) },
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
                home: r.optional_addr()?,
            },
            0x09 => RequestBody::EndpointResponse {
                target: r.key()?,
                in_reply_to: r.array()?,
                candidates: r.addrs()?,
                home: r.optional_addr()?,
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
            0x0b => RequestBody::SetTags {
                tags: read_tags(&mut r)?,
            },
            0x0c => RequestBody::Deregister,
            0x0d => RequestBody::LookupNode {
                peer: read_peer_ref(&mut r)?,
            },
            other => return Err(WireError::UnknownType(other)),
        };
        r.finish()?;
        Ok((Request { header, body }, sender))
    }
}

/// A request decoded but not yet verified, with what checking its signature needs: the bytes
/// it was decoded from and its sender's key, decompressed once while decoding (a registry
/// screens many such requests, then checks their signatures together).
#[derive(Debug, Clone)]
pub struct Unverified<'a> {
    /// The fields; nothing in them is authentic until [`Unverified::verify`] passes.
    pub request: Request,
    sender: PreparedKey,
    bytes: &'a [u8],
}

impl<'a> Unverified<'a> {
    /// Decodes `bytes` as [`Request::decode_unverified`] does. Never panics, whatever the bytes.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, WireError> {
        let (request, sender) = Request::decode_with_sender(bytes)?;
        Ok(Unverified {
            request,
            sender,
            bytes,
        })
    }

    /// The bytes the request was decoded from.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// What the signature covers, by whom: for [`crate::identity::verify_batch`].
    pub fn signed(&self) -> Signed<'_> {
        // Decoding checked that the signature is there.
        let (msg, sig) = self.bytes.split_at(self.bytes.len() - SIGNATURE_LEN);
        Signed {
            key: &self.sender,
            prefix: SIGNATURE_DOMAIN,
            msg,
            signature: sig.try_into().expect("SIGNATURE_LEN bytes"),
        }
    }

    /// The signature check of this request alone, as [`Request::verify_signature`].
    pub fn verify(&self) -> bool {
        self.signed().verify_one()
    }

    /// Checks the signatures of many requests at once: `true` only if every one verifies. A
    /// batch accepts every set that [`Unverified::verify`] accepts one by one, for about half
    /// the work; see [`crate::identity::verify_batch`] for the one difference (torsion crafted
    /// by a key's own holder).
    pub fn verify_batch(items: &[Unverified<'_>]) -> bool {
        let signed: Vec<Signed<'_>> = items.iter().map(Unverified::signed).collect();
        crate::identity::verify_batch(&signed)
    }
}

/// The type byte of a request and a reader over its signed fields (after the preamble, before
/// the signature), once size, preamble, type range and minimum length are checked.
fn signed_fields(bytes: &[u8]) -> Result<(u8, Reader<'_>), WireError> {
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
    Ok((ty, Reader::new(&bytes[3..bytes.len() - SIGNATURE_LEN])))
}
