//! Failures of the trust store, with their code and hint.

use std::path::PathBuf;

use crate::identity::PublicKey;

/// Failures of the trust store.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The peer has no pending request to approve or reject.
    #[error("no pending trust request from {0}")]
    NoPendingRequest(PublicKey),
    /// There is no trust relation with the peer to remove.
    #[error("no trust relation with {0}")]
    NotFound(PublicKey),
    /// A node cannot trust itself.
    #[error("a node cannot send a trust request to itself")]
    SelfTrust,
    /// The justification is longer than the wire allows.
    #[error("the justification is {0} bytes; at most {max} are allowed", max = crate::wire::registry::MAX_JUSTIFICATION)]
    JustificationTooLong(usize),
    /// The trust file is accessible by group or others.
    #[error("trust file {path} has mode {mode:04o}: it must not be accessible by group or others")]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The trust file is not valid JSON of our format.
    #[error("trust file {path} is malformed: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Reading or writing the trust file failed.
    #[error("cannot access trust file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl TrustError {
    /// What the user can do about it.
    pub fn hint(&self) -> String {
        match self {
            TrustError::NoPendingRequest(_) => "see pending requests with `pilotctl pending`".into(),
            TrustError::NotFound(_) => "see trusted peers with `pilotctl trust list`".into(),
            TrustError::SelfTrust => "name another node".into(),
            TrustError::JustificationTooLong(_) => "shorten the justification".into(),
            TrustError::InsecurePermissions { path, .. } => {
                format!("run `chmod 600 {}`", path.display())
            }
            TrustError::Malformed { path, .. } => format!(
                "restore {} from a backup, or move it away to start with no trust",
                path.display()
            ),
            TrustError::Io { .. } => {
                "check that the state directory ($PILOT_HOME, default ~/.pilot) is yours and writable".into()
            }
        }
    }
}

impl From<TrustError> for crate::error::PilotError {
    fn from(e: TrustError) -> Self {
        use crate::error::ErrorCode;
        let code = match e {
            TrustError::NoPendingRequest(_) | TrustError::NotFound(_) => ErrorCode::NotFound,
            TrustError::SelfTrust
            | TrustError::JustificationTooLong(_)
            | TrustError::Malformed { .. } => ErrorCode::InvalidArgument,
            TrustError::InsecurePermissions { .. } => ErrorCode::Unauthorized,
            TrustError::Io { .. } => ErrorCode::Internal,
        };
        crate::error::PilotError::new(code, e.to_string(), e.hint())
    }
}
