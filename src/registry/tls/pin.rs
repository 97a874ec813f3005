//! The TLS identity of a registry, bound to its Ed25519 key (issue 14): no certificate
//! authority, no web PKI.
//!
//! - The registry serves a self-signed X.509 certificate whose subject key *is* its Ed25519
//!   identity key, and signs the TLS 1.3 handshake with that key.
//! - The node's verifier takes the Ed25519 key from the certificate and checks the handshake
//!   signature (`CertificateVerify`) under it: a server that passes holds that private key. It
//!   then accepts exactly the key the node pinned or persisted for this registry; a middlebox
//!   presenting any other key is refused ([`TlsError::WrongKey`]). With no key known yet (first
//!   contact), the presented key is accepted and reported, and the registry client pins the key
//!   that signs the registry's answers (which must be the same, as every answer is signed).
//!
//! Only TLS 1.3 with the Ed25519 signature scheme is offered; session resumption is off, so
//! every connection proves the key again.

use std::sync::Arc;

use parking_lot::Mutex;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::ring as provider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::error::{ErrorCode, PilotError};
use crate::identity::{Identity, PublicKey};
use crate::wire::stream::ALPN;
use crate::wire::websocket::ALPN_HTTP;

/// The name a node asks for (SNI) and the certificate carries.
pub const SERVER_NAME: &str = "pilot-registry";

/// DER of an Ed25519 SubjectPublicKeyInfo before its 32 key bytes (RFC 8410).
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// What went wrong on the TLS transport.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The server proved a key other than the registry's pinned one (a middlebox, or a
    /// registry whose key changed).
    #[error("the TLS server at {addr} presented key {presented}, not the registry key {expected}")]
    WrongKey {
        /// Where we connected.
        addr: String,
        /// The key we pinned.
        expected: PublicKey,
        /// The key it proved.
        presented: PublicKey,
    },
    /// The certificate holds no Ed25519 key, or the handshake failed otherwise.
    #[error("TLS handshake with {addr} failed: {reason}")]
    Handshake {
        /// Where we connected.
        addr: String,
        /// What rustls said.
        reason: String,
    },
    /// The TLS setup itself failed (certificate generation, configuration).
    #[error("TLS setup failed: {0}")]
    Setup(String),
    /// Connecting, a proxy or the stream failed.
    #[error("cannot {what}: {reason}")]
    Connect {
        /// What we tried.
        what: String,
        /// Why it failed.
        reason: String,
    },
}

impl From<TlsError> for PilotError {
    fn from(e: TlsError) -> Self {
        let (code, hint) = match &e {
            TlsError::WrongKey { .. } => (
                ErrorCode::Unauthorized,
                "something between this node and its registry intercepts TLS, or the registry's key changed: if the change is intended, pin the new key (registries = [\"HOST:PORT#KEY\"])",
            ),
            TlsError::Handshake { .. } => (
                ErrorCode::ConnectionFailed,
                "check that the address is the registry's tls_listen and that no proxy rewrites TLS",
            ),
            TlsError::Setup(_) => (ErrorCode::Internal, "report this bug"),
            TlsError::Connect { .. } => (
                ErrorCode::ConnectionFailed,
                "check the registry's TLS address, [relay] proxy and https_proxy",
            ),
        };
        PilotError::new(code, e.to_string(), hint)
    }
}

/// The crypto provider: ring (already a dependency through boringtun; aws-lc-rs would need a
/// C toolchain), TLS 1.3 only. Its deprecation is about post-quantum key exchange, which the
/// relay does not need: what it carries is sealed end to end by WireGuard.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(provider::default_provider())
}

/// A self-signed certificate whose subject key is `identity`'s Ed25519 key.
pub fn certificate(identity: &Identity) -> Result<CertificateDer<'static>, TlsError> {
    let setup = |e: rcgen::Error| TlsError::Setup(e.to_string());
    let pkcs8 = identity.ed25519_pkcs8_der();
    let key = rcgen::KeyPair::try_from(pkcs8.as_slice()).map_err(setup)?;
    let mut params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()]).map_err(setup)?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("pilot registry {}", identity.public_key()),
    );
    // Validity is not what binds the key (the pin is); keep it wide so clocks do not matter.
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(4000, 1, 1);
    let cert = params.self_signed(&key).map_err(setup)?;
    Ok(cert.der().clone())
}

/// The registry's TLS server configuration: its certificate, TLS 1.3, the transport's ALPN
/// (`pilot-relay/1` for frames on the stream, `http/1.1` for the WebSocket wrapping).
pub fn server_config(identity: &Identity) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let setup = |e: rustls::Error| TlsError::Setup(e.to_string());
    let cert = certificate(identity)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        identity.ed25519_pkcs8_der().to_vec(),
    ));
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(setup)?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(setup)?;
    cfg.alpn_protocols = vec![ALPN.to_vec(), ALPN_HTTP.to_vec()];
    cfg.send_tls13_tickets = 0;
    Ok(Arc::new(cfg))
}

/// The key a certificate carries, if it holds an Ed25519 SubjectPublicKeyInfo.
pub fn ed25519_key_of(cert: &[u8]) -> Option<PublicKey> {
    let at = cert
        .windows(ED25519_SPKI_PREFIX.len())
        .position(|w| w == ED25519_SPKI_PREFIX)?;
    let start = at + ED25519_SPKI_PREFIX.len();
    let bytes: [u8; 32] = cert.get(start..start + 32)?.try_into().ok()?;
    PublicKey::from_bytes(bytes).ok()
}

/// Accepts a server that proves the pinned Ed25519 key (or any key on first contact) and
/// remembers which key it proved.
#[derive(Debug)]
pub struct PinnedKey {
    expected: Option<PublicKey>,
    presented: Mutex<Option<PublicKey>>,
}

impl PinnedKey {
    /// A verifier for `expected` (`None`: first contact, any key).
    pub fn new(expected: Option<PublicKey>) -> Arc<Self> {
        Arc::new(PinnedKey {
            expected,
            presented: Mutex::new(None),
        })
    }

    /// The key the server's certificate carried (set during the handshake).
    pub fn presented(&self) -> Option<PublicKey> {
        *self.presented.lock()
    }

    fn refuse(reason: rustls::CertificateError) -> rustls::Error {
        rustls::Error::InvalidCertificate(reason)
    }
}

impl ServerCertVerifier for PinnedKey {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(key) = ed25519_key_of(end_entity) else {
            return Err(Self::refuse(rustls::CertificateError::BadEncoding));
        };
        *self.presented.lock() = Some(key);
        if self.expected.is_some_and(|e| e != key) {
            return Err(Self::refuse(
                rustls::CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let key = ed25519_key_of(cert)
            .ok_or_else(|| Self::refuse(rustls::CertificateError::BadEncoding))?;
        let sig: &[u8; 64] = dss.signature().try_into().map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature)
        })?;
        if dss.scheme != SignatureScheme::ED25519 || !key.verify(message, sig) {
            return Err(Self::refuse(rustls::CertificateError::BadSignature));
        }
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// A node's TLS client configuration verifying with `verifier` and offering ALPN `alpn` (none
/// if empty).
pub fn client_config(
    verifier: Arc<PinnedKey>,
    alpn: &[u8],
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    cfg.alpn_protocols = if alpn.is_empty() {
        Vec::new()
    } else {
        vec![alpn.to_vec()]
    };
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(cfg))
}

/// Runs the TLS handshake on `io` (already connected, maybe through a proxy) with a server
/// that must prove `expected` (any key when `None`). `addr` names the server in errors.
pub async fn connect<IO>(
    io: IO,
    expected: Option<PublicKey>,
    addr: &str,
) -> Result<(tokio_rustls::client::TlsStream<IO>, PublicKey), TlsError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    connect_alpn(io, expected, addr, ALPN).await
}

/// [`connect`] offering ALPN `alpn` (`http/1.1` before a WebSocket upgrade).
pub async fn connect_alpn<IO>(
    io: IO,
    expected: Option<PublicKey>,
    addr: &str,
    alpn: &[u8],
) -> Result<(tokio_rustls::client::TlsStream<IO>, PublicKey), TlsError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let verifier = PinnedKey::new(expected);
    let config = client_config(Arc::clone(&verifier), alpn)?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = ServerName::try_from(SERVER_NAME).expect("a valid DNS name");
    match connector.connect(name, io).await {
        Ok(s) => {
            let key = verifier.presented().ok_or_else(|| TlsError::Handshake {
                addr: addr.into(),
                reason: "no certificate".into(),
            })?;
            Ok((s, key))
        }
        Err(e) => Err(match (expected, verifier.presented()) {
            (Some(expected), Some(presented)) if expected != presented => TlsError::WrongKey {
                addr: addr.into(),
                expected,
                presented,
            },
            _ => TlsError::Handshake {
                addr: addr.into(),
                reason: e.to_string(),
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_carries_the_identity_key() {
        let id = Identity::from_seed([4; 32]);
        let cert = certificate(&id).unwrap();
        assert_eq!(ed25519_key_of(&cert), Some(id.public_key()));
        assert_eq!(ed25519_key_of(b"not a certificate"), None);
    }

    async fn handshake(
        server: &Identity,
        expected: Option<PublicKey>,
    ) -> Result<PublicKey, TlsError> {
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config(server).unwrap());
        let (a, b) = tokio::io::duplex(64 * 1024);
        let srv = tokio::spawn(async move { acceptor.accept(b).await.map(|_| ()) });
        let r = connect(a, expected, "test").await.map(|(_, k)| k);
        drop(srv);
        r
    }

    #[tokio::test]
    async fn a_node_accepts_its_pinned_registry_and_refuses_another_key() {
        let registry = Identity::from_seed([1; 32]);
        let middlebox = Identity::from_seed([2; 32]);
        let k = registry.public_key();
        assert_eq!(handshake(&registry, Some(k)).await.unwrap(), k);
        assert_eq!(
            handshake(&registry, None).await.unwrap(),
            k,
            "first contact"
        );
        let e = handshake(&middlebox, Some(k)).await.unwrap_err();
        assert!(
            matches!(&e, TlsError::WrongKey { expected, presented, .. }
                if *expected == k && *presented == middlebox.public_key()),
            "{e}"
        );
        assert_eq!(PilotError::from(e).code, ErrorCode::Unauthorized);
    }

    /// A certificate that carries the pinned key but a handshake signed by another key is
    /// refused: the signature, not the certificate, proves the key.
    #[tokio::test]
    async fn a_copied_certificate_without_the_private_key_is_refused() {
        let registry = Identity::from_seed([1; 32]);
        let thief = Identity::from_seed([3; 32]);
        let stolen = certificate(&registry).unwrap();
        let key = PrivatePkcs8KeyDer::from(thief.ed25519_pkcs8_der().to_vec());
        let signer = provider::sign::any_eddsa_type(&key).unwrap();
        // rustls refuses to pair them itself: a middlebox would not ask.
        let certified = rustls::sign::CertifiedKey::new(vec![stolen], signer);
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let (a, b) = tokio::io::duplex(64 * 1024);
        let _srv = tokio::spawn(async move { acceptor.accept(b).await.map(|_| ()) });
        let r = connect(a, Some(registry.public_key()), "test").await;
        assert!(matches!(r, Err(TlsError::Handshake { .. })), "{r:?}");
    }
}
