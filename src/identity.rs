//! Node identity: an Ed25519 signing key kept in the state directory, its public key (the
//! identity everywhere: trust store, registry records, tunnel config), and the WireGuard
//! X25519 key derived from it.
//!
//! # Why the WireGuard key is derived, not separate
//! The X25519 static secret is the Ed25519 secret scalar (the clamped lower half of
//! SHA-512(seed), RFC 8032 §5.1.5), and the X25519 public key is the Ed25519 public point mapped
//! to Montgomery form (the birational map of RFC 7748 §4.1). Anyone holding a peer's Ed25519
//! public key can therefore compute its WireGuard public key without another message, and there
//! is no second key to sign, rotate, store or get out of step. This is the conversion libsodium
//! exposes as `crypto_sign_ed25519_pk_to_curve25519`. The key is used for Ed25519 signatures
//! (registry requests, trust requests) and X25519 Diffie-Hellman (Noise IK) only; both uses are
//! domain separated by their protocols.
//!
//! # Key file
//! `identity.key` holds one line: `pilot-ed25519-v1 <base64 of the 32-byte seed>`. It is created
//! with mode 0600 and refused at load if group or others can read or write it.

use base64::Engine;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::state::files::{open_private, sync_dir, Access};

mod batch;

pub use self::batch::{verify_batch, Signed};
pub use self::prepared::PreparedKey;

mod prepared;

const KEY_FILE_TAG: &str = "pilot-ed25519-v1";

/// Errors from loading, creating or parsing keys.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The key file can be read or written by group or others.
    #[error("key file {path} has mode {mode:04o}: it must not be accessible by group or others")]
    InsecurePermissions {
        /// The offending file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file exists but does not hold a key in our format.
    #[error("key file {path} is malformed: {reason}")]
    Malformed {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading or writing the key file failed.
    #[error("cannot access key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl IdentityError {
    /// What the user should do about this error.
    pub fn hint(&self) -> String {
        match self {
            IdentityError::InsecurePermissions { path, .. } => {
                format!("run `chmod 600 {}` (and check nobody else copied it)", path.display())
            }
            IdentityError::Malformed { path, .. } => format!(
                "restore the key from a backup, or move {} away to make a new identity (a new identity means a new address)",
                path.display()
            ),
            IdentityError::Io { .. } => {
                "check that the state directory ($PILOT_HOME, default ~/.pilot) is yours and writable".into()
            }
        }
    }
}

impl From<IdentityError> for crate::error::PilotError {
    fn from(e: IdentityError) -> Self {
        use crate::error::ErrorCode;
        let code = match e {
            IdentityError::InsecurePermissions { .. } => ErrorCode::Unauthorized,
            IdentityError::Malformed { .. } | IdentityError::Io { .. } => {
                ErrorCode::InvalidArgument
            }
        };
        crate::error::PilotError::new(code, e.to_string(), e.hint())
    }
}

/// A node's public key: 32 bytes of Ed25519, a valid curve point.
///
/// Canonical text form: standard base64 with padding (44 characters), as WireGuard writes keys.
/// The parser also accepts 64 hexadecimal digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

/// Why a public key text or byte string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublicKeyError {
    /// Not base64 of 32 bytes nor 64 hex digits.
    #[error("not a public key: expected 44 characters of base64 or 64 hex digits")]
    Format,
    /// 32 bytes that are not an Ed25519 point.
    #[error("not a valid Ed25519 public key (not a curve point)")]
    NotAPoint,
    /// A point of small order (a "weak" key): anyone can forge its signatures and its
    /// X25519 form gives no shared secret, so it never names an identity.
    #[error("a small-order (weak) Ed25519 public key: it cannot be an identity")]
    Weak,
}

impl From<PublicKeyError> for crate::error::PilotError {
    fn from(e: PublicKeyError) -> Self {
        let hint = match e {
            PublicKeyError::Weak => {
                "this key is not any node's: ask the peer for the key `pilotctl info` prints"
            }
            _ => "copy the key as `pilotctl info` prints it (44 characters of base64)",
        };
        crate::error::PilotError::invalid(e.to_string(), hint)
    }
}

impl PublicKey {
    /// The key from its 32 bytes, checking that it is a curve point and not of small order
    /// (so weak keys never enter the trust store, the registry or the peer table).
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, PublicKeyError> {
        let vk = VerifyingKey::from_bytes(&bytes).map_err(|_| PublicKeyError::NotAPoint)?;
        if vk.is_weak() {
            return Err(PublicKeyError::Weak);
        }
        Ok(PublicKey(bytes))
    }

    /// The key from its 32 bytes, checking only that it is a curve point: lets tests build
    /// the weak keys that [`PublicKey::from_bytes`] refuses, to test later defences.
    #[cfg(test)]
    pub(crate) fn from_bytes_allowing_weak(bytes: [u8; 32]) -> Result<Self, PublicKeyError> {
        VerifyingKey::from_bytes(&bytes).map_err(|_| PublicKeyError::NotAPoint)?;
        Ok(PublicKey(bytes))
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The WireGuard (X25519) public key that belongs to this identity.
    pub fn wg_public(&self) -> x25519_dalek::PublicKey {
        let vk = VerifyingKey::from_bytes(&self.0).expect("checked at construction");
        x25519_dalek::PublicKey::from(vk.to_montgomery().to_bytes())
    }

    /// Checks an Ed25519 signature by this key over `msg` (strict verification).
    pub fn verify(&self, msg: &[u8], signature: &[u8; 64]) -> bool {
        let vk = match VerifyingKey::from_bytes(&self.0) {
            Ok(vk) => vk,
            Err(_) => return false,
        };
        let sig = ed25519_dalek::Signature::from_bytes(signature);
        // `verify_strict` checks the same equation as `verify` (R = [s]B - [k]A, compared
        // compressed) and also refuses small-order R and A: running both paid for the same
        // verification twice (half the registry's capacity), for nothing.
        vk.verify_strict(msg, &sig).is_ok()
    }

    /// Canonical text: base64 (standard alphabet, padded).
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl FromStr for PublicKey {
    type Err = PublicKeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let mut bytes = [0u8; 32];
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
                let hex = std::str::from_utf8(chunk).map_err(|_| PublicKeyError::Format)?;
                bytes[i] = u8::from_str_radix(hex, 16).map_err(|_| PublicKeyError::Format)?;
            }
        } else if s.len() == 44 {
            let v = base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|_| PublicKeyError::Format)?;
            if v.len() != 32 {
                return Err(PublicKeyError::Format);
            }
            bytes.copy_from_slice(&v);
        } else {
            return Err(PublicKeyError::Format);
        }
        PublicKey::from_bytes(bytes)
    }
}

impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A node's secret identity. Never printed: `Debug` shows only the public key.
pub struct Identity {
    signing: SigningKey,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.public_key())
    }
}

impl Identity {
    /// A fresh random identity from the operating system's RNG.
    pub fn generate() -> Self {
        Identity {
            signing: SigningKey::generate(&mut rand_core::OsRng),
        }
    }

    /// An identity from a 32-byte seed (tests and key import).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Identity {
            signing: SigningKey::from_bytes(&seed),
        }
    }

    /// Loads the key at `path`, or creates one (mode 0600) if the file does not exist.
    /// Returns the identity and whether it was created now.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), IdentityError> {
        match fs::symlink_metadata(path) {
            Ok(_) => Ok((Self::load(path)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = Self::generate();
                id.save_new(path)?;
                Ok((id, true))
            }
            Err(source) => Err(IdentityError::Io {
                path: path.into(),
                source,
            }),
        }
    }

    /// Loads the key at `path`, refusing a file that group or others can access, a symbolic
    /// link, and a file another user owns.
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let io = |source| IdentityError::Io {
            path: path.into(),
            source,
        };
        let mut f = open_private(path, Access::Read).map_err(io)?;
        let meta = f.metadata().map_err(io)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(IdentityError::InsecurePermissions {
                path: path.into(),
                mode,
            });
        }
        let mut text = String::new();
        f.read_to_string(&mut text).map_err(io)?;
        let malformed = |reason: &str| IdentityError::Malformed {
            path: path.into(),
            reason: reason.into(),
        };
        let mut parts = text.split_whitespace();
        if parts.next() != Some(KEY_FILE_TAG) {
            return Err(malformed("expected it to start with `pilot-ed25519-v1`"));
        }
        let b64 = parts.next().ok_or_else(|| malformed("missing the key"))?;
        let seed = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| malformed("the key is not base64"))?;
        let seed: [u8; 32] = seed
            .as_slice()
            .try_into()
            .map_err(|_| malformed("the key is not 32 bytes"))?;
        Ok(Self::from_seed(seed))
    }

    /// Writes this key to a new file at `path` with mode 0600 (never overwriting, never
    /// through a symbolic link), then fsyncs the file and its directory so that the key
    /// survives a crash.
    pub fn save_new(&self, path: &Path) -> Result<(), IdentityError> {
        let io = |source| IdentityError::Io {
            path: path.into(),
            source,
        };
        let mut f = open_private(path, Access::CreateNew).map_err(io)?;
        let line = format!(
            "{} {}\n",
            KEY_FILE_TAG,
            base64::engine::general_purpose::STANDARD.encode(self.signing.to_bytes())
        );
        f.write_all(line.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        sync_dir(dir.unwrap_or(Path::new("."))).map_err(io)?;
        Ok(())
    }

    /// This identity's public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key().to_bytes())
    }

    /// An Ed25519 signature over `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.signing.sign(msg).to_bytes()
    }

    /// The key as PKCS#8 v1 DER (RFC 8410), for a TLS certificate bound to this identity
    /// (the registry's TLS transport). Zeroed when dropped.
    pub fn ed25519_pkcs8_der(&self) -> zeroize::Zeroizing<Vec<u8>> {
        /// SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING (32) } }
        const PREFIX: [u8; 16] = [
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        let mut der = zeroize::Zeroizing::new(Vec::with_capacity(48));
        der.extend_from_slice(&PREFIX);
        der.extend_from_slice(&self.signing.to_bytes());
        der
    }

    /// The WireGuard static secret derived from this identity (see the module docs).
    pub fn wg_secret(&self) -> x25519_dalek::StaticSecret {
        x25519_dalek::StaticSecret::from(self.signing.to_scalar_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wireguard_public_key_is_computable_from_the_ed25519_public_key() {
        for seed in [[1u8; 32], [7u8; 32], [200u8; 32]] {
            let id = Identity::from_seed(seed);
            let from_secret = x25519_dalek::PublicKey::from(&id.wg_secret());
            assert_eq!(
                from_secret.as_bytes(),
                id.public_key().wg_public().as_bytes()
            );
        }
    }

    #[test]
    fn x25519_agreement_works_between_two_derived_keys() {
        let a = Identity::from_seed([3; 32]);
        let b = Identity::from_seed([4; 32]);
        let ab = a.wg_secret().diffie_hellman(&b.public_key().wg_public());
        let ba = b.wg_secret().diffie_hellman(&a.public_key().wg_public());
        assert_eq!(ab.as_bytes(), ba.as_bytes());
    }

    #[test]
    fn created_key_file_is_0600_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        let (id, created) = Identity::load_or_create(&path).unwrap();
        assert!(created);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (again, created) = Identity::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(id.public_key(), again.public_key());
    }

    #[test]
    fn key_file_readable_by_others_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        Identity::generate().save_new(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = Identity::load(&path).unwrap_err();
        assert!(matches!(
            err,
            IdentityError::InsecurePermissions { mode: 0o644, .. }
        ));
        assert!(err.to_string().contains("identity.key"));
        assert!(err.hint().contains("chmod 600"));
        let pe: crate::error::PilotError = err.into();
        assert_eq!(pe.code, crate::error::ErrorCode::Unauthorized);
    }

    #[test]
    fn a_symlinked_key_file_is_refused_and_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        let planted = Identity::from_seed([7; 32]);
        planted.save_new(&target).unwrap();
        let path = dir.path().join("identity.key");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let err = Identity::load_or_create(&path).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        let dangling = dir.path().join("dangling.key");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        assert!(Identity::load_or_create(&dangling).is_err());
        assert!(
            !dir.path().join("nowhere").exists(),
            "a key was written through a link"
        );
    }

    #[test]
    fn malformed_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        fs::write(&path, "garbage").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            Identity::load(&path),
            Err(IdentityError::Malformed { .. })
        ));
    }

    #[test]
    fn save_new_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        Identity::generate().save_new(&path).unwrap();
        assert!(Identity::generate().save_new(&path).is_err());
    }

    #[test]
    fn signatures_verify_only_for_the_signed_message_and_key() {
        let id = Identity::from_seed([9; 32]);
        let sig = id.sign(b"hello");
        assert!(id.public_key().verify(b"hello", &sig));
        assert!(!id.public_key().verify(b"hellp", &sig));
        let other = Identity::from_seed([10; 32]);
        assert!(!other.public_key().verify(b"hello", &sig));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let id = Identity::from_seed([5; 32]);
        let dbg = format!("{:?}", id);
        let seed_b64 = base64::engine::general_purpose::STANDARD.encode([5u8; 32]);
        assert!(!dbg.contains(&seed_b64));
    }

    #[test]
    fn public_key_rejects_non_points_and_bad_text() {
        assert_eq!("abc".parse::<PublicKey>(), Err(PublicKeyError::Format));
        assert!("zz".repeat(32).parse::<PublicKey>().is_err());
    }

    #[test]
    fn small_order_keys_are_refused_from_bytes_and_text() {
        // The identity point, the point of order 2, and a point of order 4: all valid
        // encodings of small-order points.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let mut order2 = [0xffu8; 32];
        order2[0] = 0xec;
        order2[31] = 0x7f;
        let order4 = [0u8; 32];
        for bytes in [identity, order2, order4] {
            assert!(VerifyingKey::from_bytes(&bytes).is_ok(), "a valid point");
            assert_eq!(PublicKey::from_bytes(bytes), Err(PublicKeyError::Weak));
            let text = base64::engine::general_purpose::STANDARD.encode(bytes);
            assert_eq!(text.parse::<PublicKey>(), Err(PublicKeyError::Weak));
            let json = format!("\"{text}\"");
            assert!(serde_json::from_str::<PublicKey>(&json).is_err());
        }
        let e = crate::error::PilotError::from(PublicKeyError::Weak);
        assert!(e.message.contains("small-order"), "{}", e.message);
    }

    proptest! {
        #[test]
        fn public_key_text_round_trips(seed in any::<[u8; 32]>()) {
            let pk = Identity::from_seed(seed).public_key();
            prop_assert_eq!(pk.to_string().parse::<PublicKey>().unwrap(), pk);
            let hex: String = pk.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
            prop_assert_eq!(hex.parse::<PublicKey>().unwrap(), pk);
        }

        #[test]
        fn public_key_parser_never_panics(s in ".{0,80}") {
            let _ = s.parse::<PublicKey>();
        }
    }
}
