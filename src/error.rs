//! Errors as the user sees them: a stable machine-readable code, a message that says what
//! failed, and a hint that says what to do next. The local API and the CLI's `--json` output
//! carry exactly this shape.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Stable error codes. They appear in `--json` output and in the local API; scripts match on
/// them, so existing codes never change meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The caller gave an argument, file or request that is not valid.
    InvalidArgument,
    /// The named thing (peer, hostname, message, file) does not exist.
    NotFound,
    /// The thing to create exists already (hostname taken, daemon running).
    AlreadyExists,
    /// No daemon runs for this state directory.
    NotRunning,
    /// A connection to the daemon, a registry or a peer could not be made.
    ConnectionFailed,
    /// An operation did not finish within its bound.
    Timeout,
    /// The peer or the local user is not allowed to do this (no trust, bad permissions).
    Unauthorized,
    /// Anything else: a bug or an unexpected system failure.
    Internal,
    /// No message with that id was received (a reply to it, or `inbox read`, is refused).
    UnknownMessage,
}

impl ErrorCode {
    /// The code as it is written on the wire (`invalid_argument`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::NotRunning => "not_running",
            ErrorCode::ConnectionFailed => "connection_failed",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Internal => "internal",
            ErrorCode::UnknownMessage => "unknown_message",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A user-facing error: code, message and hint.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error, utoipa::ToSchema,
)]
#[error("{message}")]
pub struct PilotError {
    /// What kind of failure this is.
    pub code: ErrorCode,
    /// What failed, naming the input that caused it.
    pub message: String,
    /// What the user can do about it.
    pub hint: String,
}

impl PilotError {
    /// An error with the given code, message and hint.
    pub fn new(code: ErrorCode, message: impl Into<String>, hint: impl Into<String>) -> Self {
        PilotError {
            code,
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// Shorthand for [`ErrorCode::InvalidArgument`].
    pub fn invalid(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message, hint)
    }

    /// Shorthand for [`ErrorCode::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            ErrorCode::Internal,
            message,
            "this is a bug or a system failure; see the daemon log ($PILOT_HOME/daemon.log)",
        )
    }

    /// The daemon is not running.
    pub fn not_running(detail: impl Into<String>) -> Self {
        Self::new(
            ErrorCode::NotRunning,
            detail,
            "start one with `pilotctl daemon start` (or `pilotctl daemon run` in the foreground)",
        )
    }
}
