//! Why a client operation failed.

use std::net::SocketAddr;

use crate::error::{ErrorCode, PilotError};
use crate::identity::PublicKey;
use crate::wire::registry::Status;

/// Why an operation failed at every registry. Protocol facts only; the user-facing code and
/// hint come from its `From` conversion into [`PilotError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// No registry is configured, so there is nobody to ask.
    #[error("no registry is configured")]
    NoRegistry,
    /// A registry did not answer any of our tries.
    #[error("registry {registry} did not answer {attempts} requests")]
    RegistryTimeout {
        /// Which registry.
        registry: SocketAddr,
        /// How many requests we sent.
        attempts: u32,
    },
    /// The peer did not answer the endpoint request the registry forwarded.
    #[error("{0} did not answer our endpoint request")]
    PeerTimeout(PublicKey),
    /// The request does not fit in a datagram.
    #[error("request too large to send")]
    TooLarge,
    /// A registry refused the request.
    #[error("registry {registry}: {message}")]
    Refused {
        /// Which registry.
        registry: SocketAddr,
        /// Its status.
        status: Status,
        /// Its message.
        message: String,
    },
    /// A registry answered a lookup with a record that does not match the question.
    #[error("registry {0} answered the lookup inconsistently")]
    InconsistentLookup(SocketAddr),
}

impl ClientError {
    /// Whether this is a timeout (a definite answer from another registry is more telling).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            ClientError::RegistryTimeout { .. } | ClientError::PeerTimeout(_)
        )
    }

    /// The stable code of this failure (the same as its [`PilotError`]'s).
    pub fn code(&self) -> ErrorCode {
        match self {
            ClientError::NoRegistry => ErrorCode::ConnectionFailed,
            ClientError::RegistryTimeout { .. } | ClientError::PeerTimeout(_) => ErrorCode::Timeout,
            ClientError::TooLarge => ErrorCode::InvalidArgument,
            ClientError::Refused { status, .. } => status.error_code(),
            ClientError::InconsistentLookup(_) => ErrorCode::Internal,
        }
    }

    /// What the user can do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            ClientError::NoRegistry => "add a registry address to the configuration",
            ClientError::RegistryTimeout { .. } => {
                "check that the registry runs and is reachable over UDP"
            }
            ClientError::PeerTimeout(_) => {
                "the peer must be online and trust us; check `pilotctl trust` on both sides"
            }
            ClientError::TooLarge => "shorten it",
            ClientError::Refused { status, .. } => match status {
                Status::NotFound => "check the name, or ask the peer to register",
                Status::AlreadyExists => "choose another hostname",
                Status::RateLimited | Status::QueueFull => "wait a little and retry",
                _ => "see the registry's log",
            },
            ClientError::InconsistentLookup(_) => "the registry may be faulty; try another",
        }
    }
}

impl From<ClientError> for PilotError {
    fn from(e: ClientError) -> Self {
        PilotError::new(e.code(), e.to_string(), e.hint())
    }
}
