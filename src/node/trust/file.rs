//! `trust.json`: loading (refusing a file others can read) and saving atomically.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{PeerTrust, TrustError, TrustStore};
use crate::identity::PublicKey;
use crate::state::paths::write_private_atomic;

/// The file format.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct TrustFile {
    version: u32,
    #[serde(default)]
    peers: Vec<PeerTrust>,
    /// Per peer: the timestamp of the newest trust message applied (unix ms).
    #[serde(default)]
    watermarks: BTreeMap<PublicKey, u64>,
}

impl TrustStore {
    /// Loads `path` (or starts empty if it does not exist); every change is saved there.
    pub fn open(me: PublicKey, path: &Path) -> Result<Self, TrustError> {
        let io = |source| TrustError::Io {
            path: path.into(),
            source,
        };
        let mut store = Self::in_memory(me);
        store.path = Some(path.into());
        let meta = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(store),
            Err(e) => return Err(io(e)),
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(TrustError::InsecurePermissions {
                path: path.into(),
                mode,
            });
        }
        let mut text = String::new();
        let f = crate::state::files::open_private(path, crate::state::files::Access::Read);
        std::io::Read::read_to_string(&mut f.map_err(io)?, &mut text).map_err(io)?;
        let file: TrustFile = serde_json::from_str(&text).map_err(|e| TrustError::Malformed {
            path: path.into(),
            reason: e.to_string(),
        })?;
        if file.version != 1 {
            return Err(TrustError::Malformed {
                path: path.into(),
                reason: format!("unknown version {}", file.version),
            });
        }
        store.peers = file.peers.into_iter().map(|p| (p.key, p)).collect();
        store.watermarks = file.watermarks;
        Ok(store)
    }

    /// The file's new contents if anything changed since the last call (`None` otherwise,
    /// and always for an in-memory store). Many changes make one snapshot: the caller writes
    /// it with [`TrustSave::write`] off the async runtime, when it likes.
    pub fn take_save(&mut self) -> Option<TrustSave> {
        if !std::mem::take(&mut self.dirty) {
            return None;
        }
        let path = self.path.clone()?;
        let file = TrustFile {
            version: 1,
            peers: self.peers.values().cloned().collect(),
            watermarks: self.watermarks.clone(),
        };
        self.counters.saves += 1;
        Some(TrustSave { path, file })
    }
}

/// A snapshot of the trust store to write to its file. It is turned into text by
/// [`TrustSave::write`], on the writer's thread: with 10,000 peers that is megabytes of JSON
/// the node core does not spend its time on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustSave {
    path: PathBuf,
    file: TrustFile,
}

impl TrustSave {
    /// The file it is for.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes it atomically with mode 0600 (temporary file, fsync, rename): blocking I/O.
    pub fn write(&self) -> Result<(), TrustError> {
        let mut text = serde_json::to_string_pretty(&self.file).expect("trust file serialises");
        text.push('\n');
        write_private_atomic(&self.path, text.as_bytes()).map_err(|source| TrustError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::Hostname;
    use crate::node::trust::test_util::{key, NOW};
    use crate::node::trust::{TrustEffect, TrustState, TRUST_FILE};
    use crate::wire::registry::TrustDecision;

    #[test]
    fn store_persists_0600_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TRUST_FILE);
        let mut s = TrustStore::open(key(1), &path).unwrap();
        s.request(key(2), Some(Hostname::new("worker-node").unwrap()), "", NOW)
            .unwrap();
        s.on_response(key(2), TrustDecision::Approve, NOW + 1, NOW)
            .unwrap();
        s.on_request(key(3), None, "why not", [9; 16], NOW, NOW)
            .unwrap();
        // Three changes, one snapshot; nothing is written until it is.
        assert!(!path.exists());
        let save = s.take_save().unwrap();
        assert!(s.take_save().is_none());
        save.write().unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // No temporary file is left beside it.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);

        let mut again = TrustStore::open(key(1), &path).unwrap();
        assert!(again.is_trusted(&key(2)));
        assert_eq!(
            again
                .get(&key(2))
                .unwrap()
                .hostname
                .as_ref()
                .unwrap()
                .as_str(),
            "worker-node"
        );
        assert!(matches!(
            again.get(&key(3)).unwrap().state,
            TrustState::Pending { .. }
        ));
        // The pending request's nonce survived: approving answers the right request.
        let fx = again.approve(&key(3), NOW).unwrap();
        assert!(matches!(
            fx[0],
            TrustEffect::SendResponse { in_reply_to, .. } if in_reply_to == [9; 16]
        ));
        // Watermarks survived: an old message stays old.
        assert!(again
            .on_response(key(2), TrustDecision::Revoke, NOW, NOW)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_snapshot_that_cannot_be_written_reports_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join(TRUST_FILE);
        let mut s = TrustStore::open(key(1), &path).unwrap();
        s.request(key(2), None, "", NOW).unwrap();
        let err = s.take_save().unwrap().write().unwrap_err();
        assert!(matches!(err, TrustError::Io { path: p, .. } if p == path));
    }

    #[test]
    fn trust_file_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TRUST_FILE);
        fs::write(&path, "{\"version\":1}").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = TrustStore::open(key(1), &path).unwrap_err();
        assert!(matches!(err, TrustError::InsecurePermissions { .. }));
        assert!(err.hint().contains("chmod 600"));
        let pe: crate::error::PilotError = err.into();
        assert_eq!(pe.code, crate::error::ErrorCode::Unauthorized);
        assert!(pe.hint.contains("chmod 600"));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(TrustStore::open(key(1), &path).is_ok());
        fs::write(&path, "not json").unwrap();
        assert!(matches!(
            TrustStore::open(key(1), &path),
            Err(TrustError::Malformed { .. })
        ));
    }
}
