//! Path probes between trusted peers: small signed control messages sent to every candidate
//! address of a peer to find (and keep checking) a path. See `docs/PROTOCOL.md`,
//! "Path probes (v1)".
//!
//! ```text
//! 0x50 | 0x01 | type (0x30 Probe, 0x31 ProbeReply) | sender key (32) | target key (32)
//!      | txid (8) | timestamp u64 ms (8) | signature (64)        = 147 bytes
//! ```
//! The signature is Ed25519 by the sender over `"pilot/probe/v1\0"` ‖ every byte before it.

use crate::identity::{Identity, PublicKey};

/// Type byte of a probe.
pub const PROBE: u8 = 0x30;
/// Type byte of a probe reply.
pub const PROBE_REPLY: u8 = 0x31;
/// Length of every probe message.
pub const LEN: usize = 3 + 32 + 32 + 8 + 8 + 64;
/// Signature domain: a probe signature is valid for nothing else.
pub const DOMAIN: &[u8] = b"pilot/probe/v1\0";
/// How far a probe's timestamp may be from the receiver's clock (ms).
pub const MAX_SKEW_MS: u64 = 60_000;

/// A decoded, signature-checked probe or reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Whether this is a reply.
    pub reply: bool,
    /// Who sent it.
    pub sender: PublicKey,
    /// Whom it is for.
    pub target: PublicKey,
    /// Transaction id: a reply echoes the probe's.
    pub txid: u64,
    /// Sender's clock (unix ms).
    pub timestamp_ms: u64,
}

/// Whether `bytes` is a probe or probe reply (by its first three bytes).
pub fn is_probe(bytes: &[u8]) -> bool {
    bytes.len() >= 3
        && bytes[0] == crate::wire::relay::MAGIC
        && bytes[1] == 1
        && (bytes[2] == PROBE || bytes[2] == PROBE_REPLY)
}

impl Probe {
    /// Encodes and signs (the sender must be `identity`).
    pub fn encode(&self, identity: &Identity) -> Vec<u8> {
        debug_assert_eq!(identity.public_key(), self.sender);
        let mut v = Vec::with_capacity(LEN);
        v.extend_from_slice(&[
            crate::wire::relay::MAGIC,
            1,
            if self.reply { PROBE_REPLY } else { PROBE },
        ]);
        v.extend_from_slice(self.sender.as_bytes());
        v.extend_from_slice(self.target.as_bytes());
        v.extend_from_slice(&self.txid.to_be_bytes());
        v.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        let sig = identity.sign(&signed_bytes(&v));
        v.extend_from_slice(&sig);
        v
    }

    /// Decodes without checking the signature: the cheap checks (is the sender a trusted peer,
    /// is the target us) come first, so untrusted senders cost no signature work.
    pub fn decode_unverified(bytes: &[u8]) -> Option<Probe> {
        if bytes.len() != LEN || !is_probe(bytes) {
            return None;
        }
        let key = |r: std::ops::Range<usize>| {
            let mut k = [0u8; 32];
            k.copy_from_slice(&bytes[r]);
            PublicKey::from_bytes(k).ok()
        };
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[o..o + 8]);
            u64::from_be_bytes(b)
        };
        Some(Probe {
            reply: bytes[2] == PROBE_REPLY,
            sender: key(3..35)?,
            target: key(35..67)?,
            txid: u64_at(67),
            timestamp_ms: u64_at(75),
        })
    }

    /// Checks the signature of `bytes` (which decoded to `self`).
    pub fn verify(&self, bytes: &[u8]) -> bool {
        if bytes.len() != LEN {
            return false;
        }
        let mut sig = [0u8; 64];
        sig.copy_from_slice(&bytes[LEN - 64..]);
        self.sender.verify(&signed_bytes(&bytes[..LEN - 64]), &sig)
    }
}

fn signed_bytes(msg: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(DOMAIN.len() + msg.len());
    v.extend_from_slice(DOMAIN);
    v.extend_from_slice(msg);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_round_trip_and_any_flipped_byte_fails() {
        let a = Identity::from_seed([1; 32]);
        let b = Identity::from_seed([2; 32]);
        let p = Probe {
            reply: false,
            sender: a.public_key(),
            target: b.public_key(),
            txid: 77,
            timestamp_ms: 1_750_000_000_000,
        };
        let bytes = p.encode(&a);
        assert_eq!(bytes.len(), LEN);
        let d = Probe::decode_unverified(&bytes).unwrap();
        assert_eq!(d, p);
        assert!(d.verify(&bytes));
        for i in 3..LEN {
            let mut m = bytes.clone();
            m[i] ^= 1;
            let ok = Probe::decode_unverified(&m).is_some_and(|d| d.verify(&m));
            assert!(!ok, "flipping byte {i} went unnoticed");
        }
        // Signed by someone else under a's name: refused.
        let mut forged = Probe {
            sender: b.public_key(),
            ..p
        }
        .encode(&b);
        forged[3..35].copy_from_slice(a.public_key().as_bytes());
        let d = Probe::decode_unverified(&forged).unwrap();
        assert!(!d.verify(&forged));
    }
}
