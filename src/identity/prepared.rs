//! A public key kept with its decompressed curve point, so that a key read from the wire is
//! decompressed once (a few microseconds of field arithmetic) and not again by each check of
//! its signatures.

use ed25519_dalek::VerifyingKey;

use super::{PublicKey, PublicKeyError};

/// A [`PublicKey`] with its curve point: what checking a signature needs. Made once where a
/// request's sender is decoded, then used by the single and the batch checks.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PreparedKey {
    key: PublicKey,
    point: VerifyingKey,
}

impl std::fmt::Debug for PreparedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PreparedKey({})", self.key)
    }
}

impl PreparedKey {
    /// The key from its 32 bytes, with the checks of [`PublicKey::from_bytes`] (a curve point,
    /// not of small order); the point is decompressed here, once.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, PublicKeyError> {
        let point = VerifyingKey::from_bytes(&bytes).map_err(|_| PublicKeyError::NotAPoint)?;
        if point.is_weak() {
            return Err(PublicKeyError::Weak);
        }
        Ok(PreparedKey {
            key: PublicKey(bytes),
            point,
        })
    }

    /// Like [`PreparedKey::from_bytes`] but accepting small-order keys: lets tests build the
    /// weak keys the constructor refuses, to test later defences.
    #[cfg(test)]
    pub(crate) fn allowing_weak(key: &PublicKey) -> Self {
        PreparedKey {
            key: *key,
            point: VerifyingKey::from_bytes(key.as_bytes()).expect("a curve point"),
        }
    }

    /// The key.
    pub fn key(&self) -> &PublicKey {
        &self.key
    }

    /// The key as ed25519-dalek's type (point included), e.g. for its `verify_batch`.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.point
    }

    /// The decompressed point, for the batch equation.
    pub(super) fn point(&self) -> curve25519_dalek::edwards::EdwardsPoint {
        self.point.to_edwards()
    }

    /// Checks an Ed25519 signature over `msg` strictly, as [`PublicKey::verify`] does, without
    /// decompressing the key again.
    pub fn verify(&self, msg: &[u8], signature: &[u8; 64]) -> bool {
        let sig = ed25519_dalek::Signature::from_bytes(signature);
        self.point.verify_strict(msg, &sig).is_ok()
    }
}

impl From<&PublicKey> for PreparedKey {
    /// Decompresses the point of a key that was checked when it was made.
    fn from(key: &PublicKey) -> Self {
        PreparedKey {
            key: *key,
            point: VerifyingKey::from_bytes(key.as_bytes()).expect("checked at construction"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    #[test]
    fn a_prepared_key_checks_signatures_as_its_public_key_does_and_refuses_what_it_refuses() {
        let id = Identity::from_seed([11; 32]);
        let sig = id.sign(b"msg");
        let p = PreparedKey::from_bytes(*id.public_key().as_bytes()).unwrap();
        assert_eq!(p.key(), &id.public_key());
        assert_eq!(p, PreparedKey::from(&id.public_key()));
        assert!(p.verify(b"msg", &sig) && id.public_key().verify(b"msg", &sig));
        assert!(!p.verify(b"msh", &sig));
        let mut bad = sig;
        bad[63] ^= 0x10;
        assert!(!p.verify(b"msg", &bad) && !id.public_key().verify(b"msg", &bad));
        for bytes in [[0u8; 32], [1u8; 32], [0xff; 32], [2; 32]] {
            let (a, b) = (PreparedKey::from_bytes(bytes), PublicKey::from_bytes(bytes));
            assert_eq!(a.map(|k| *k.key()), b, "{bytes:?}");
        }
    }
}
