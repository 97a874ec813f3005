//! Tasks on disk and as the API shows them: one owner-only JSON file per task in
//! `$PILOT_HOME/tasks/` (written atomically: fsynced, renamed, directory fsynced), files
//! attached to tasks and results in `$PILOT_HOME/tasks/files/ID/`, and the payload bodies.

use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::identity::PublicKey;
use crate::services::tasks::machine::{Role, Task};
use crate::services::tasks::record::{payload_hash, StateRecord, TaskState};

/// A file attached to a task or a result, inside its payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBlob {
    /// Its name (a base name: letters, digits, `.`, `-`, `_`).
    pub name: String,
    /// Its bytes, base64.
    pub data_b64: String,
}

/// The NEW payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskBody {
    /// The task, any JSON.
    pub task: serde_json::Value,
    /// An attached file.
    #[serde(default)]
    pub file: Option<FileBlob>,
}

/// The DONE or FAILED payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultBody {
    /// The result as text.
    #[serde(default)]
    pub data: Option<String>,
    /// A result file.
    #[serde(default)]
    pub file: Option<FileBlob>,
}

/// A file of a task as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FileInfo {
    /// Its name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// SHA-256 of its bytes, hex.
    pub sha256: String,
    /// Where it is on this node (received files), if written.
    pub path: Option<String>,
}

/// A result as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResultView {
    /// The result text.
    pub data: Option<String>,
    /// The result file.
    pub file: Option<FileInfo>,
}

/// A task as `GET /v1/tasks/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskView {
    /// The id.
    pub id: String,
    /// Our side: `submitter` or `worker`.
    pub role: Role,
    /// The other side's key.
    pub peer: PublicKey,
    /// The submitter's key.
    pub submitter: PublicKey,
    /// The worker's key.
    pub worker: PublicKey,
    /// The current state.
    pub state: TaskState,
    /// The task (JSON).
    pub task: serde_json::Value,
    /// The attached file.
    pub file: Option<FileInfo>,
    /// Deadline, unix ms.
    pub deadline_ms: u64,
    /// When it was submitted (the submitter's clock), unix ms.
    pub created_ms: u64,
    /// The last change, unix ms (the signer's clock).
    pub updated_ms: u64,
    /// Why the worker declined (DECLINED; text from a peer: escape before showing).
    pub reason: Option<String>,
    /// The result (DONE, FAILED).
    pub result: Option<ResultView>,
    /// Our changes the other side has not acked yet (retried until it does).
    pub undelivered: usize,
    /// The other side's refusal of one of our changes (not retried).
    pub refused: Option<String>,
    /// Every signed change, oldest first.
    pub records: Vec<StateRecord>,
}

/// Whether `name` is a safe base name for an attached file.
pub fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl FileBlob {
    /// A blob of `bytes` named after the last component of `path`, made safe.
    pub fn from_file(path: &Path, bytes: &[u8]) -> FileBlob {
        let raw = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut name: String = raw
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .take(128)
            .collect();
        if !valid_file_name(&name) {
            name = format!("file{}", name.trim_start_matches('.'));
            name.truncate(128);
        }
        FileBlob {
            name,
            data_b64: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }

    fn bytes(&self) -> Option<Vec<u8>> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.data_b64)
            .ok()
    }
}

/// The task files directory.
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens (creating, owner-only) `dir`.
    pub fn open(dir: PathBuf) -> std::io::Result<Store> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir.join("files"))?;
        Ok(Store { dir })
    }

    /// Every stored task (files that do not parse are skipped and logged).
    pub fn load_all(&self) -> std::io::Result<Vec<Task>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir)? {
            let p = e?.path();
            if p.extension().is_none_or(|x| x != "json") {
                continue;
            }
            match std::fs::read(&p).map(|b| serde_json::from_slice::<Task>(&b)) {
                Ok(Ok(t)) => out.push(t),
                Ok(Err(e)) => {
                    tracing::warn!(path = %p.display(), error = %e, "task file unreadable")
                }
                Err(e) => tracing::warn!(path = %p.display(), error = %e, "task file unreadable"),
            }
        }
        Ok(out)
    }

    /// Writes `t` (atomically, owner-only).
    pub fn save(&self, t: &Task) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(t).map_err(std::io::Error::other)?;
        crate::state::paths::write_private_atomic(&self.dir.join(format!("{}.json", t.id)), &bytes)
    }

    /// Writes the received files of `t` (the task's file on the worker, a result file on the
    /// submitter) into `files/ID/` if they are not there yet.
    pub fn write_files(&self, t: &Task) -> std::io::Result<()> {
        for (blob, prefix) in self.received_blobs(t) {
            let path = self.file_path(&t.id, prefix, &blob.name);
            if path.exists() || !valid_file_name(&blob.name) {
                continue;
            }
            let Some(bytes) = blob.bytes() else { continue };
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path.parent().expect("a parent"))?;
            crate::state::paths::write_private_atomic(&path, &bytes)?;
        }
        Ok(())
    }

    fn received_blobs(&self, t: &Task) -> Vec<(FileBlob, &'static str)> {
        let mut v = Vec::new();
        if t.role == Role::Worker {
            if let Some(f) = body_of(t).and_then(|b| b.file) {
                v.push((f, ""));
            }
        } else if let Some(f) = result_of(t).and_then(|r| r.file) {
            v.push((f, "result-"));
        }
        v
    }

    fn file_path(&self, id: &str, prefix: &str, name: &str) -> PathBuf {
        self.dir
            .join("files")
            .join(id)
            .join(format!("{prefix}{name}"))
    }

    /// The API's view of `t`.
    pub fn view(&self, t: &Task) -> TaskView {
        let body = body_of(t);
        let info = |b: &FileBlob, prefix: &str, received: bool| {
            let bytes = b.bytes().unwrap_or_default();
            let path = self.file_path(&t.id, prefix, &b.name);
            FileInfo {
                name: b.name.clone(),
                size: bytes.len() as u64,
                sha256: sha256_hex(&bytes),
                path: (received && path.exists()).then(|| path.display().to_string()),
            }
        };
        let worker_side = t.role == Role::Worker;
        let result = matches!(t.state, TaskState::Done | TaskState::Failed)
            .then(|| result_of(t))
            .flatten()
            .map(|r| ResultView {
                data: r.data.clone(),
                file: r.file.as_ref().map(|f| info(f, "result-", !worker_side)),
            });
        TaskView {
            id: t.id.clone(),
            role: t.role,
            peer: if worker_side { t.submitter } else { t.worker },
            submitter: t.submitter,
            worker: t.worker,
            state: t.state,
            task: body.as_ref().map(|b| b.task.clone()).unwrap_or_default(),
            file: body
                .as_ref()
                .and_then(|b| b.file.as_ref().map(|f| info(f, "", worker_side))),
            deadline_ms: t.deadline_ms,
            created_ms: t.records.first().map_or(0, |r| r.time_ms),
            updated_ms: t.updated_ms(),
            reason: (t.state == TaskState::Declined)
                .then(|| t.answer.clone())
                .flatten(),
            result,
            undelivered: t.outbox.iter().filter(|o| o.refused.is_none()).count(),
            refused: t.outbox.iter().find_map(|o| o.refused.clone()),
            records: t.records.clone(),
        }
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn body_of(t: &Task) -> Option<TaskBody> {
    serde_json::from_str(&t.body).ok()
}

fn result_of(t: &Task) -> Option<ResultBody> {
    t.answer
        .as_deref()
        .and_then(|a| serde_json::from_str(a).ok())
}

/// Checks that a NEW or result payload parses (a record whose payload does not is refused).
pub fn check_payload(state: TaskState, payload: &str) -> bool {
    match state {
        TaskState::New => serde_json::from_str::<TaskBody>(payload).is_ok_and(|b| {
            b.file
                .is_none_or(|f| valid_file_name(&f.name) && f.bytes().is_some())
        }),
        TaskState::Done | TaskState::Failed => serde_json::from_str::<ResultBody>(payload)
            .is_ok_and(|r| {
                r.file
                    .is_none_or(|f| valid_file_name(&f.name) && f.bytes().is_some())
            }),
        _ => true,
    }
}

/// The hash of a payload as records carry it (re-exported for the API's checks).
pub fn hash(payload: &str) -> String {
    payload_hash(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attached_file_names_are_made_safe() {
        let b = FileBlob::from_file(Path::new("/tmp/../my report (1).txt"), b"x");
        assert_eq!(b.name, "my_report__1_.txt");
        let b = FileBlob::from_file(Path::new("/tmp/.hidden"), b"x");
        assert!(valid_file_name(&b.name), "{}", b.name);
        assert!(!valid_file_name("../x"));
        assert!(check_payload(TaskState::New, r#"{"task":{"a":1}}"#));
        assert!(!check_payload(
            TaskState::New,
            r#"{"task":1,"file":{"name":"../x","data_b64":""}}"#
        ));
    }
}
