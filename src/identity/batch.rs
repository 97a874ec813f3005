//! Batch verification of Ed25519 signatures: one multi-scalar multiplication checks many
//! signatures at once, for about half the cost of checking them one by one.
//!
//! # What a batch accepts
//! [`PublicKey::verify`] is `verify_strict`: the key and `R` must not be of small order, `s` must
//! be canonical, and `[s]B - [k]A` must compress to exactly the bytes of `R`. A batch checks the
//! same things per signature *before* the equation (canonical `s`, canonical encoding of `R`,
//! neither `R` nor `A` of small order), then one random linear combination of the equations:
//! `[-Σ zᵢsᵢ]B + Σ [zᵢ]Rᵢ + Σ [zᵢkᵢ]Aᵢ = 0`, with 128-bit `zᵢ` drawn from the operating
//! system's generator for each batch (an attacker cannot predict them).
//!
//! So every set of signatures `verify_strict` accepts passes, and a set with a signature that no
//! one but its key's holder could have made fails (except with probability 2⁻¹²⁸). The one
//! difference left is the one every cofactorless batch verifier has ("Taming the many EdDSAs",
//! Chalkias et al., 2020): a *key's own holder* can craft a signature whose `R` or key carries
//! a small torsion component (honest signers never make one); `verify_strict` refuses it, a
//! batch may accept it (the torsion part of the sum vanishes with probability up to 1/2).
//! Telling that apart costs a scalar multiplication per signature, as much as the batch saves.
//! It lets no one speak for a key they do not hold: what is accepted is still signed by the
//! key's holder, and everyone who checks a forwarded message again (nodes do, strictly) refuses
//! it, so its only victim is its own author.

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use rand_core::RngCore;
use sha2::{Digest, Sha512};

use super::PreparedKey;

/// One signature to check: by `key`, over the bytes of `prefix` followed by `msg`.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    /// The claimed signer, its point decompressed when the key was decoded.
    pub key: &'a PreparedKey,
    /// Signed before `msg` (a protocol's domain separation string).
    pub prefix: &'a [u8],
    /// The message.
    pub msg: &'a [u8],
    /// The signature: `R` (32 bytes) then `s` (32 bytes).
    pub signature: &'a [u8; 64],
}

/// The parts of one signature's equation, once the cheap strict checks passed.
struct Parts {
    r: EdwardsPoint,
    a: EdwardsPoint,
    s: Scalar,
    k: Scalar,
}

impl Signed<'_> {
    /// Checks this one signature alone, exactly as [`PublicKey::verify`] does.
    pub fn verify_one(&self) -> bool {
        let mut m = Vec::with_capacity(self.prefix.len() + self.msg.len());
        m.extend_from_slice(self.prefix);
        m.extend_from_slice(self.msg);
        self.key.verify(&m, self.signature)
    }

    /// Whether this signature passes the checks `verify_strict` makes besides its equation
    /// (canonical `s`, canonical encoding of `R`, neither `R` nor the key of small order): what
    /// a batch must check per signature before its equation.
    pub fn strict_prechecks(&self) -> bool {
        self.prechecked().is_some()
    }

    /// The strict checks (see [`Signed::strict_prechecks`]), and `R`, the key's point and `s`.
    fn prechecked(&self) -> Option<(EdwardsPoint, EdwardsPoint, Scalar)> {
        let a = self.key.point();
        let (r_bytes, s_bytes) = self.signature.split_at(32);
        let r_bytes: [u8; 32] = r_bytes.try_into().ok()?;
        let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes.try_into().ok()?))?;
        // verify_strict compares the recomputed R with the signature's bytes, so an encoding of
        // R whose y is not reduced (y ≥ p) never passes there: refuse it here too. The other
        // non-canonical encodings (x = 0 with the sign bit set) are of small-order points.
        if !y_is_canonical(&r_bytes) {
            return None;
        }
        let r = CompressedEdwardsY(r_bytes).decompress()?;
        if r.is_small_order() || a.is_small_order() {
            return None;
        }
        Some((r, a, s))
    }

    /// The strict checks and the equation's parts; `None` if any check fails (then
    /// `verify_strict` refuses the signature too).
    fn parts(&self) -> Option<Parts> {
        let (r, a, s) = self.prechecked()?;
        let mut h = Sha512::new();
        h.update(&self.signature[..32]);
        h.update(self.key.key().as_bytes());
        h.update(self.prefix);
        h.update(self.msg);
        let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
        Some(Parts { r, a, s, k })
    }
}

/// Whether the 255-bit y coordinate of an encoded point is below p = 2²⁵⁵ - 19.
fn y_is_canonical(bytes: &[u8; 32]) -> bool {
    // y ≥ p only if bits 8..255 are all ones and the low byte is at least 0xed.
    let top_all_ones = bytes[31] & 0x7f == 0x7f && bytes[1..31].iter().all(|b| *b == 0xff);
    !(top_all_ones && bytes[0] >= 0xed)
}

/// Whether every signature in `items` verifies (see the module documentation for what this
/// accepts). An empty batch passes. When the system's random generator fails, the signatures
/// are checked one by one.
pub fn verify_batch(items: &[Signed<'_>]) -> bool {
    match items {
        [] => return true,
        [one] => return one.verify_one(),
        _ => {}
    }
    let mut z_bytes = vec![0u8; 16 * items.len()];
    if rand_core::OsRng.try_fill_bytes(&mut z_bytes).is_err() {
        return items.iter().all(Signed::verify_one);
    }
    let mut scalars = Vec::with_capacity(1 + 2 * items.len());
    let mut points = Vec::with_capacity(1 + 2 * items.len());
    scalars.push(Scalar::ZERO);
    points.push(ED25519_BASEPOINT_POINT);
    let mut b = Scalar::ZERO;
    for (item, z) in items.iter().zip(z_bytes.chunks_exact(16)) {
        let Some(p) = item.parts() else {
            return false;
        };
        let mut zb = [0u8; 16];
        zb.copy_from_slice(z);
        let z = Scalar::from(u128::from_le_bytes(zb));
        b += z * p.s;
        scalars.push(z);
        points.push(p.r);
        scalars.push(z * p.k);
        points.push(p.a);
    }
    scalars[0] = -b;
    EdwardsPoint::vartime_multiscalar_mul(scalars, points).is_identity()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Identity, PublicKey};
    use curve25519_dalek::constants::EIGHT_TORSION;

    const DOMAIN: &[u8] = b"test/batch\0";

    fn signed(id: &Identity, msg: &[u8]) -> (PreparedKey, [u8; 64]) {
        let mut m = DOMAIN.to_vec();
        m.extend_from_slice(msg);
        (PreparedKey::from(&id.public_key()), id.sign(&m))
    }

    /// The Ed25519 secret scalar of a seed (RFC 8032 §5.1.5), as a key's holder computes it.
    fn secret_scalar(seed: &[u8; 32]) -> Scalar {
        let h = Sha512::digest(seed);
        let mut a = [0u8; 32];
        a.copy_from_slice(&h[..32]);
        a[0] &= 248;
        a[31] &= 127;
        a[31] |= 64;
        Scalar::from_bytes_mod_order(a)
    }

    fn item<'a>(key: &'a PreparedKey, msg: &'a [u8], signature: &'a [u8; 64]) -> Signed<'a> {
        Signed {
            key,
            prefix: DOMAIN,
            msg,
            signature,
        }
    }

    #[test]
    fn a_batch_of_good_signatures_passes_and_one_bad_one_fails_it() {
        let ids: Vec<Identity> = (0..20u8).map(|i| Identity::from_seed([i; 32])).collect();
        let msgs: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 10 + i as usize]).collect();
        let sigs: Vec<(PreparedKey, [u8; 64])> =
            ids.iter().zip(&msgs).map(|(id, m)| signed(id, m)).collect();
        let items: Vec<Signed<'_>> = sigs
            .iter()
            .zip(&msgs)
            .map(|((k, s), m)| item(k, m, s))
            .collect();
        assert!(verify_batch(&items));
        assert!(verify_batch(&items[..1]) && verify_batch(&[]));
        for bad in [0, 7, 19] {
            let mut wrong = items.clone();
            let other = b"another message".to_vec();
            let mut b = wrong.clone();
            b[bad].msg = &other;
            assert!(!verify_batch(&b), "a changed message at {bad}");
            wrong[bad].key = &sigs[(bad + 1) % 20].0;
            assert!(!verify_batch(&wrong), "another key at {bad}");
        }
        // Two signatures swapped between their messages: each equation is off, the sum too.
        let mut swapped = items.clone();
        swapped[3].signature = &sigs[4].1;
        swapped[4].signature = &sigs[3].1;
        assert!(!verify_batch(&swapped));
    }

    #[test]
    fn non_canonical_s_is_refused_by_both_paths() {
        let id = Identity::from_seed([3; 32]);
        let (key, mut sig) = signed(&id, b"m");
        // s + l is the same scalar, not reduced: verify_strict refuses it.
        let mut l = (-Scalar::ONE).to_bytes();
        l[0] += 1;
        let mut carry = 0u16;
        for i in 0..32 {
            let v = sig[32 + i] as u16 + l[i] as u16 + carry;
            sig[32 + i] = v as u8;
            carry = v >> 8;
        }
        let (good_key, good) = signed(&Identity::from_seed([4; 32]), b"n");
        let pair = [item(&key, b"m", &sig), item(&good_key, b"n", &good)];
        assert!(!pair[0].verify_one());
        assert!(!verify_batch(&pair));
    }

    #[test]
    fn small_order_r_and_small_order_keys_are_refused_by_both_paths() {
        let (good_key, good) = signed(&Identity::from_seed([5; 32]), b"ok");
        // A weak (small-order) key with R = that point and s = 0: [0]B - [k]A = -[k]A, a
        // small-order point; the batch equation's sum would hide it. Both must refuse.
        for t in EIGHT_TORSION.iter() {
            let a = t.compress().to_bytes();
            let Ok(weak) = PublicKey::from_bytes_allowing_weak(a) else {
                continue;
            };
            let weak = PreparedKey::allowing_weak(&weak);
            for r in EIGHT_TORSION.iter() {
                let mut sig = [0u8; 64];
                sig[..32].copy_from_slice(&r.compress().to_bytes());
                let pair = [item(&weak, b"x", &sig), item(&good_key, b"ok", &good)];
                assert!(!pair[0].verify_one());
                assert!(!verify_batch(&pair), "weak key {a:?}");
            }
        }
        // A real key, a small-order R: R + T with the signature's s recomputed is exactly what
        // only the key's holder can make; with R = T (no prime part) s = k·a makes the
        // cofactorless equation [s]B - [k]A = 0 ≠ R hold up to torsion. Build it from the
        // secret scalar, as an attacker holding the key could.
        let id = Identity::from_seed([6; 32]);
        let key = PreparedKey::from(&id.public_key());
        let a = secret_scalar(&[6; 32]);
        assert_eq!(
            (ED25519_BASEPOINT_POINT * a).compress().to_bytes(),
            *key.key().as_bytes()
        );
        for t in EIGHT_TORSION.iter().skip(1) {
            let r_bytes = t.compress().to_bytes();
            let mut h = Sha512::new();
            h.update(r_bytes);
            h.update(key.key().as_bytes());
            h.update(DOMAIN);
            h.update(b"y");
            let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
            let mut sig = [0u8; 64];
            sig[..32].copy_from_slice(&r_bytes);
            sig[32..].copy_from_slice((k * a).as_bytes());
            let pair = [item(&key, b"y", &sig), item(&good_key, b"ok", &good)];
            assert!(!pair[0].verify_one(), "strict refuses small-order R");
            assert!(!verify_batch(&pair), "the batch refuses small-order R");
        }
    }

    #[test]
    fn a_non_canonical_r_encoding_is_refused_by_both_paths() {
        // y = p + 1 encodes the identity's y (1) without reduction: a small-order point, but
        // refused before decompression in the batch, and by byte comparison in verify_strict.
        let mut r = [0xffu8; 32];
        r[0] = 0xee;
        r[31] = 0x7f;
        assert!(!y_is_canonical(&r));
        let mut ok = r;
        ok[0] = 0xec;
        assert!(y_is_canonical(&ok) && y_is_canonical(&[0; 32]));
        let id = Identity::from_seed([7; 32]);
        let (key, mut sig) = signed(&id, b"z");
        sig[..32].copy_from_slice(&r);
        let (good_key, good) = signed(&Identity::from_seed([8; 32]), b"ok");
        let pair = [item(&key, b"z", &sig), item(&good_key, b"ok", &good)];
        assert!(!pair[0].verify_one());
        assert!(!verify_batch(&pair));
    }

    proptest::proptest! {
        /// Whatever bytes a signature holds, the batch of it and a good one agrees with
        /// checking both one by one.
        #[test]
        fn batch_agrees_with_single_checks(seed in proptest::prelude::any::<[u8; 32]>(),
                                           junk in proptest::prelude::any::<[u8; 64]>(),
                                           keep_r in proptest::prelude::any::<bool>()) {
            let id = Identity::from_seed(seed);
            let (key, mut sig) = signed(&id, b"p");
            if keep_r {
                sig[32..].copy_from_slice(&junk[32..]);
            } else {
                sig = junk;
            }
            let (good_key, good) = signed(&Identity::from_seed([9; 32]), b"ok");
            let pair = [item(&key, b"p", &sig), item(&good_key, b"ok", &good)];
            proptest::prop_assert_eq!(verify_batch(&pair), pair[0].verify_one());
        }
    }
}
