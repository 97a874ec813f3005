//! Signed task state records: every state change of a task is one record, signed with the
//! Ed25519 identity key of the node that made it, over a fixed byte layout (docs/PROTOCOL.md,
//! "Tasks on port 1003").

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::identity::{Identity, PublicKey};

/// Domain separation of task signatures (no other pilot signature starts with it).
const DOMAIN: &[u8] = b"pilot task state v1\0";

/// The states of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskState {
    /// Submitted, not yet answered by the worker.
    New,
    /// The worker took it.
    Accepted,
    /// The worker refused it (with a reason).
    Declined,
    /// The worker finished it (with a result).
    Done,
    /// The worker gave up on it (with a result saying why).
    Failed,
    /// Its deadline passed before it was finished (decided by each side's own clock).
    Expired,
}

impl TaskState {
    /// The state's byte in the signed layout.
    pub fn code(self) -> u8 {
        match self {
            TaskState::New => 1,
            TaskState::Accepted => 2,
            TaskState::Declined => 3,
            TaskState::Done => 4,
            TaskState::Failed => 5,
            TaskState::Expired => 6,
        }
    }

    /// Whether no state follows it.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskState::Declined | TaskState::Done | TaskState::Failed | TaskState::Expired
        )
    }

    /// The state as text (`NEW`, `ACCEPTED`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::New => "NEW",
            TaskState::Accepted => "ACCEPTED",
            TaskState::Declined => "DECLINED",
            TaskState::Done => "DONE",
            TaskState::Failed => "FAILED",
            TaskState::Expired => "EXPIRED",
        }
    }
}

/// One signed state change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StateRecord {
    /// The task's id: 32 hex digits chosen by the submitter.
    pub task_id: String,
    /// The submitter's key.
    pub submitter: PublicKey,
    /// The worker's key.
    pub worker: PublicKey,
    /// The new state.
    pub state: TaskState,
    /// SHA-256 (hex) of the payload this state carries: the task (NEW), the reason
    /// (DECLINED), the result (DONE, FAILED); of nothing for ACCEPTED and EXPIRED.
    pub hash: String,
    /// The signer's clock at the change (unix ms).
    pub time_ms: u64,
    /// The task's deadline (unix ms), as the submitter set it.
    pub deadline_ms: u64,
    /// Who signed: the submitter for NEW, the worker for the worker's states, either side
    /// for its own EXPIRED.
    pub signer: PublicKey,
    /// Ed25519 signature (base64) over [`StateRecord::signed_bytes`].
    pub sig: String,
}

/// SHA-256 of `payload`, hex.
pub fn payload_hash(payload: &str) -> String {
    let d = Sha256::digest(payload.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl StateRecord {
    /// A record signed by `signer`.
    #[allow(clippy::too_many_arguments)]
    pub fn sign(
        signer: &Identity,
        task_id: &str,
        submitter: PublicKey,
        worker: PublicKey,
        state: TaskState,
        payload: &str,
        time_ms: u64,
        deadline_ms: u64,
    ) -> StateRecord {
        let mut r = StateRecord {
            task_id: task_id.into(),
            submitter,
            worker,
            state,
            hash: payload_hash(payload),
            time_ms,
            deadline_ms,
            signer: signer.public_key(),
            sig: String::new(),
        };
        let bytes = r.signed_bytes().expect("a record we build is well formed");
        r.sig = base64::engine::general_purpose::STANDARD.encode(signer.sign(&bytes));
        r
    }

    /// The signed layout: domain, id (32 ASCII hex), submitter, worker, signer (32 bytes
    /// each), state (1 byte), hash (32 bytes), time and deadline (8 bytes big-endian each).
    /// `None` when the id or hash is not well formed.
    pub fn signed_bytes(&self) -> Option<Vec<u8>> {
        if !crate::services::message_store::valid_id(&self.task_id) {
            return None;
        }
        let hash = hex32(&self.hash)?;
        let mut b = Vec::with_capacity(DOMAIN.len() + 32 + 96 + 1 + 32 + 16);
        b.extend_from_slice(DOMAIN);
        b.extend_from_slice(self.task_id.as_bytes());
        b.extend_from_slice(self.submitter.as_bytes());
        b.extend_from_slice(self.worker.as_bytes());
        b.extend_from_slice(self.signer.as_bytes());
        b.push(self.state.code());
        b.extend_from_slice(&hash);
        b.extend_from_slice(&self.time_ms.to_be_bytes());
        b.extend_from_slice(&self.deadline_ms.to_be_bytes());
        Some(b)
    }

    /// Whether the signature is `signer`'s over this record.
    pub fn verify(&self) -> bool {
        let Some(bytes) = self.signed_bytes() else {
            return false;
        };
        let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(&self.sig) else {
            return false;
        };
        let Ok(sig) = <[u8; 64]>::try_from(sig.as_slice()) else {
            return false;
        };
        self.signer.verify(&bytes, &sig)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_record_verifies_and_any_changed_field_breaks_it() {
        let (s, w) = (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]));
        let id = "0123456789abcdef0123456789abcdef";
        let r = StateRecord::sign(
            &w,
            id,
            s.public_key(),
            w.public_key(),
            TaskState::Done,
            "result",
            5,
            9,
        );
        assert!(r.verify());
        let mut t = r.clone();
        t.state = TaskState::Failed;
        assert!(!t.verify());
        let mut t = r.clone();
        t.hash = payload_hash("other");
        assert!(!t.verify());
        let mut t = r.clone();
        t.signer = s.public_key();
        assert!(!t.verify(), "a record claiming another signer");
        let mut t = r.clone();
        t.time_ms = 6;
        assert!(!t.verify());
        let mut t = r;
        t.sig = "AAAA".into();
        assert!(!t.verify());
    }
}
