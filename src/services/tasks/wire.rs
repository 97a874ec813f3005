//! The task wire format (v1) on overlay port 1003: frames of [`crate::services::frame`], one
//! JSON object each with `v` and `op`. docs/PROTOCOL.md ("Tasks on port 1003") gives the
//! reason for each field.

use serde::{Deserialize, Serialize};

use crate::services::tasks::record::{StateRecord, TaskState};

/// The overlay port of the task service.
pub const TASK_PORT: u16 = 1003;
/// The protocol version this node speaks.
pub const VERSION: u8 = 1;

/// Why a record was refused (on the wire and in API errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalCode {
    /// A version this node does not speak.
    BadVersion,
    /// The signature does not verify.
    BadSignature,
    /// Signed by a key that may not make this change, or sent by another peer than the
    /// signer.
    WrongSigner,
    /// The record names another worker, submitter or task.
    WrongPeer,
    /// No such task here.
    UnknownTask,
    /// Not a legal next state.
    BadTransition,
    /// The payload's hash is not the record's.
    HashMismatch,
    /// The deadline has passed.
    Expired,
    /// A payload over this node's limit.
    TooLarge,
    /// This node keeps as many tasks as it allows.
    TooManyTasks,
    /// Not a frame this side takes.
    Malformed,
    /// A code from a newer version.
    #[serde(other)]
    Unknown,
}

impl RefusalCode {
    /// The code as text.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalCode::BadVersion => "bad_version",
            RefusalCode::BadSignature => "bad_signature",
            RefusalCode::WrongSigner => "wrong_signer",
            RefusalCode::WrongPeer => "wrong_peer",
            RefusalCode::UnknownTask => "unknown_task",
            RefusalCode::BadTransition => "bad_transition",
            RefusalCode::HashMismatch => "hash_mismatch",
            RefusalCode::Expired => "expired",
            RefusalCode::TooLarge => "too_large",
            RefusalCode::TooManyTasks => "too_many_tasks",
            RefusalCode::Malformed => "malformed",
            RefusalCode::Unknown => "unknown",
        }
    }
}

/// One frame of the task protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Frame {
    /// Sender → receiver: a signed state change and its payload.
    State {
        /// Protocol version.
        v: u8,
        /// The record.
        record: StateRecord,
        /// The payload whose SHA-256 the record carries (the task, reason or result).
        payload: String,
    },
    /// Receiver → sender: the record is stored (or was already).
    Ack {
        /// Protocol version.
        v: u8,
        /// The task.
        task_id: String,
        /// The state acked.
        state: TaskState,
    },
    /// Receiver → sender: the record is refused; it will never be taken, so the sender stops
    /// retrying it.
    Refused {
        /// Protocol version.
        v: u8,
        /// The task.
        task_id: String,
        /// Why.
        code: RefusalCode,
        /// For humans (from a peer: escape before showing).
        message: String,
    },
}

/// Parses one frame body (fuzzed: whatever a trusted peer sends).
pub fn parse(body: &[u8]) -> Result<Frame, crate::services::frame::FrameError> {
    crate::services::frame::decode(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_op_and_version_and_unknown_codes_still_parse() {
        let f = parse(br#"{"op":"refused","v":1,"task_id":"x","code":"new_thing","message":"m"}"#)
            .unwrap();
        assert!(matches!(
            f,
            Frame::Refused {
                code: RefusalCode::Unknown,
                ..
            }
        ));
        let a = Frame::Ack {
            v: 1,
            task_id: "x".into(),
            state: TaskState::Done,
        };
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"op":"ack","v":1,"task_id":"x","state":"DONE"})
        );
        assert!(parse(b"{").is_err());
    }
}
