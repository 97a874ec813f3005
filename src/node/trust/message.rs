//! Trust messages: the signed `TrustRequest` / `TrustResponse` requests, checked on arrival
//! for signature, addressee and age.

use crate::identity::PublicKey;
use crate::wire::registry::{Nonce, Request, RequestBody, TrustDecision, WireError};

/// How old a trust message may be when it arrives (it may wait at a registry for a week), ms.
pub const MAX_TRUST_MESSAGE_AGE_MS: u64 = 7 * 24 * 3600 * 1000 + 60_000;
/// How far in the future a trust message's timestamp may be, ms.
pub const MAX_TRUST_MESSAGE_SKEW_MS: u64 = 60_000;

/// A verified trust message addressed to us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustMessage {
    /// Someone asks for our trust.
    Request {
        /// Who.
        from: PublicKey,
        /// Their request's nonce (answer with it).
        nonce: Nonce,
        /// Their clock when they sent it (unix ms).
        sent_ms: u64,
        /// Why.
        justification: String,
    },
    /// Someone answers our request, or revokes trust.
    Response {
        /// Who.
        from: PublicKey,
        /// The nonce of our request they answer (zero for a revocation).
        in_reply_to: Nonce,
        /// Their clock when they sent it (unix ms).
        sent_ms: u64,
        /// Their decision.
        decision: TrustDecision,
        /// Why.
        reason: String,
    },
}

/// Why a trust message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustMessageError {
    /// It does not decode or its signature does not verify.
    #[error("invalid trust message: {0}")]
    Wire(#[from] WireError),
    /// It is some other request.
    #[error("not a trust message")]
    NotTrust,
    /// It is addressed to another node.
    #[error("trust message for another node")]
    NotForUs,
    /// Its timestamp is too old or too far in the future.
    #[error("trust message timestamp out of range")]
    Stale,
}

impl From<TrustMessageError> for crate::error::PilotError {
    fn from(e: TrustMessageError) -> Self {
        crate::error::PilotError::invalid(
            e.to_string(),
            "the peer's trust message was refused; check both clocks and ask it to send again",
        )
    }
}

/// The cheap checks of a trust message, made before its signature is verified (in this order):
/// it decodes (size, magic, version), it is a trust request or response, it is addressed to
/// `me`, and its timestamp is in range. Returns the request, whose sender is only *claimed*
/// until [`Request::verify_signature`] passes.
pub fn precheck_trust_message(
    bytes: &[u8],
    me: &PublicKey,
    now_ms: u64,
) -> Result<Request, TrustMessageError> {
    let req = Request::decode_unverified(bytes)?;
    let target = match &req.body {
        RequestBody::TrustRequest { target, .. } | RequestBody::TrustResponse { target, .. } => {
            target
        }
        _ => return Err(TrustMessageError::NotTrust),
    };
    if target != me {
        return Err(TrustMessageError::NotForUs);
    }
    let ts = req.header.timestamp_ms;
    if ts.saturating_add(MAX_TRUST_MESSAGE_AGE_MS) < now_ms
        || ts > now_ms.saturating_add(MAX_TRUST_MESSAGE_SKEW_MS)
    {
        return Err(TrustMessageError::Stale);
    }
    Ok(req)
}

/// Checks a signed trust request or response (pushed by a registry or sent directly by the
/// peer): the cheap checks of [`precheck_trust_message`] first, the signature last.
pub fn verify_trust_message(
    bytes: &[u8],
    me: &PublicKey,
    now_ms: u64,
) -> Result<TrustMessage, TrustMessageError> {
    let req = precheck_trust_message(bytes, me, now_ms)?;
    req.verify_signature(bytes)?;
    let h = req.header;
    match req.body {
        RequestBody::TrustRequest { justification, .. } => Ok(TrustMessage::Request {
            from: h.sender,
            nonce: h.nonce,
            sent_ms: h.timestamp_ms,
            justification,
        }),
        RequestBody::TrustResponse {
            in_reply_to,
            decision,
            reason,
            ..
        } => Ok(TrustMessage::Response {
            from: h.sender,
            in_reply_to,
            sent_ms: h.timestamp_ms,
            decision,
            reason,
        }),
        _ => Err(TrustMessageError::NotTrust),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::node::trust::test_util::{key, NOW};
    use crate::wire::registry::Header;

    fn signed(from: &Identity, ts: u64, body: RequestBody) -> Vec<u8> {
        Request {
            header: Header {
                sender: from.public_key(),
                nonce: [4; 16],
                timestamp_ms: ts,
            },
            body,
        }
        .encode_signed(from)
        .unwrap()
    }

    #[test]
    fn trust_messages_are_checked_for_addressee_age_and_kind() {
        let a = Identity::from_seed([1; 32]);
        let me = key(2);
        let req = |target, ts| {
            signed(
                &a,
                ts,
                RequestBody::TrustRequest {
                    target,
                    justification: "j".into(),
                },
            )
        };
        assert!(matches!(
            verify_trust_message(&req(me, NOW), &me, NOW),
            Ok(TrustMessage::Request { sent_ms: NOW, .. })
        ));
        assert_eq!(
            verify_trust_message(&req(key(3), NOW), &me, NOW),
            Err(TrustMessageError::NotForUs)
        );
        assert_eq!(
            verify_trust_message(&req(me, NOW - MAX_TRUST_MESSAGE_AGE_MS - 1), &me, NOW),
            Err(TrustMessageError::Stale)
        );
        assert_eq!(
            verify_trust_message(&signed(&a, NOW, RequestBody::Heartbeat), &me, NOW),
            Err(TrustMessageError::NotTrust)
        );
        let mut forged = req(me, NOW);
        forged[60] ^= 1;
        assert!(matches!(
            verify_trust_message(&forged, &me, NOW),
            Err(TrustMessageError::Wire(_))
        ));
    }

    #[test]
    fn addressee_and_age_are_checked_before_the_signature() {
        let a = Identity::from_seed([1; 32]);
        let me = key(2);
        let forge = |target, ts| {
            let mut b = signed(
                &a,
                ts,
                RequestBody::TrustRequest {
                    target,
                    justification: "j".into(),
                },
            );
            let last = b.len() - 1;
            b[last] ^= 1; // the signature no longer verifies
            b
        };
        // A bad signature is not even looked at when the cheap checks fail.
        assert_eq!(
            verify_trust_message(&forge(key(3), NOW), &me, NOW),
            Err(TrustMessageError::NotForUs)
        );
        assert_eq!(
            verify_trust_message(&forge(me, NOW + MAX_TRUST_MESSAGE_SKEW_MS + 1), &me, NOW),
            Err(TrustMessageError::Stale)
        );
        assert_eq!(
            verify_trust_message(&forge(me, NOW), &me, NOW),
            Err(TrustMessageError::Wire(WireError::BadSignature))
        );
        // Timestamps at the ends of the range do not overflow.
        assert_eq!(
            verify_trust_message(&forge(me, u64::MAX), &me, NOW),
            Err(TrustMessageError::Stale)
        );
        assert_eq!(
            precheck_trust_message(&req_bytes(&a, me, 0), &me, u64::MAX).unwrap_err(),
            TrustMessageError::Stale
        );
        assert!(precheck_trust_message(&req_bytes(&a, me, NOW), &me, NOW).is_ok());
    }

    fn req_bytes(a: &Identity, target: PublicKey, ts: u64) -> Vec<u8> {
        signed(
            a,
            ts,
            RequestBody::TrustRequest {
                target,
                justification: String::new(),
            },
        )
    }
}
