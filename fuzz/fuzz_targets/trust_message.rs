//! Trust messages as a node checks them on arrival (pushed by a registry or sent directly):
//! `verify_trust_message(bytes, me, now)`. Input: 8 bytes of "now" (unix ms), then the message.
//!
//! Raw bytes are checked first (they never carry a valid signature). Bytes that decode are then
//! re-signed by a fixed fuzz identity so the checks after the signature run too: the addressee
//! and the age window. The verdict must match the decoded request: a trust request or response
//! addressed to `me` within the window is accepted with the decoded fields, anything else is
//! refused.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pilot::identity::{Identity, PublicKey};
use pilot::node::trust::{
    verify_trust_message, TrustMessage, MAX_TRUST_MESSAGE_AGE_MS, MAX_TRUST_MESSAGE_SKEW_MS,
};
use pilot::wire::registry::{Request, RequestBody, WireError, SIGNATURE_DOMAIN};

const SIG: usize = 64;

fn fuzz_identity() -> &'static Identity {
    static ID: OnceLock<Identity> = OnceLock::new();
    ID.get_or_init(|| Identity::from_seed([7; 32]))
}

fn me() -> PublicKey {
    Identity::from_seed([8; 32]).public_key()
}

fn resign(data: &[u8], id: &Identity) -> Vec<u8> {
    let mut v = data[..data.len() - SIG].to_vec();
    v[3..35].copy_from_slice(id.public_key().as_bytes());
    let mut signed = SIGNATURE_DOMAIN.to_vec();
    signed.extend_from_slice(&v);
    v.extend_from_slice(&id.sign(&signed));
    v
}

fn check_verdict(bytes: &[u8], req: &Request, now: u64) {
    let ts = req.header.timestamp_ms;
    let fresh = ts.saturating_add(MAX_TRUST_MESSAGE_AGE_MS) >= now
        && ts <= now.saturating_add(MAX_TRUST_MESSAGE_SKEW_MS);
    let (target, expected) = match &req.body {
        RequestBody::TrustRequest {
            target,
            justification,
        } => (
            *target,
            TrustMessage::Request {
                from: req.header.sender,
                nonce: req.header.nonce,
                sent_ms: ts,
                justification: justification.clone(),
            },
        ),
        RequestBody::TrustResponse {
            target,
            in_reply_to,
            decision,
            reason,
        } => (
            *target,
            TrustMessage::Response {
                from: req.header.sender,
                in_reply_to: *in_reply_to,
                sent_ms: ts,
                decision: *decision,
                reason: reason.clone(),
            },
        ),
        _ => {
            assert!(verify_trust_message(bytes, &me(), now).is_err());
            return;
        }
    };
    // Addressed to us: accepted exactly when fresh, with the decoded fields.
    match verify_trust_message(bytes, &target, now) {
        Ok(m) => {
            assert!(fresh, "a stale message was accepted: ts {ts}, now {now}");
            assert_eq!(m, expected);
        }
        Err(e) => assert!(!fresh, "a fresh message to us was refused: {e}"),
    }
    // Addressed to someone else: refused.
    if target != me() {
        assert!(verify_trust_message(bytes, &me(), now).is_err());
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((now, msg)) = data.split_first_chunk::<8>() else {
        return;
    };
    let now = u64::from_be_bytes(*now);
    let _ = verify_trust_message(msg, &me(), now);
    if !matches!(
        Request::decode_verified(msg),
        Ok(_) | Err(WireError::BadSignature)
    ) {
        return;
    }
    let bytes = resign(msg, fuzz_identity());
    let req = Request::decode_verified(&bytes).expect("decoded once, so decodes re-signed");
    check_verdict(&bytes, &req, now);
});
