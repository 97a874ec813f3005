//! Registry keys learned on first use, remembered in the state directory
//! (`registry_keys.json`, mode 0600, written atomically), so neither a restart nor the loss of a
//! registry reopens the window in which a spoofer could pass its own key off as the registry's.
//!
//! A key is learned once, from a `Registered` answer that matches a registration in flight,
//! and then changes only by operator action: pin another key in the config
//! (`registries = ["HOST:PORT#KEY"]`, which always wins), or stop the daemon and delete the
//! registry's entry from this file. The protocol has no key-rotation message yet, so rotation
//! is operator-only for now.
//!
//! The file is written at most once per registry (when its key is first learned), so the one
//! synchronous write in the node core stays off every hot path.

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, PilotError};
use crate::identity::PublicKey;
use crate::state::paths::write_private_atomic;

/// The file's name in the state directory.
pub const REGISTRY_KEYS_FILE: &str = "registry_keys.json";

/// Keys learned on first use, by registry address; in memory or backed by a file.
#[derive(Debug, Clone, Default)]
pub struct LearnedKeys {
    path: Option<PathBuf>,
    keys: BTreeMap<SocketAddr, PublicKey>,
}

/// One remembered registry.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    registry: SocketAddr,
    key: PublicKey,
}

/// The file format.
#[derive(Debug, Serialize, Deserialize)]
struct KeysFile {
    version: u32,
    #[serde(default)]
    registries: Vec<Entry>,
}

impl LearnedKeys {
    /// Keys kept for the life of the process only. They count as persisted (tests, embedders
    /// without a state directory): nothing can lose them while the process runs.
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// Loads `path` (empty if it does not exist); keys learned later are saved there.
    pub fn open(path: &Path) -> Result<Self, KeysFileError> {
        let io = |source| KeysFileError::Io {
            path: path.into(),
            source,
        };
        let mut learned = LearnedKeys {
            path: Some(path.into()),
            keys: BTreeMap::new(),
        };
        let meta = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(learned),
            Err(e) => return Err(io(e)),
        };
        let mode = meta.permissions().mode() & 0o777;
        if !meta.is_file() || mode & 0o077 != 0 {
            return Err(KeysFileError::InsecurePermissions {
                path: path.into(),
                mode,
            });
        }
        let text = fs::read_to_string(path).map_err(io)?;
        let file: KeysFile = serde_json::from_str(&text).map_err(|e| KeysFileError::Malformed {
            path: path.into(),
            reason: e.to_string(),
        })?;
        if file.version != 1 {
            return Err(KeysFileError::Malformed {
                path: path.into(),
                reason: format!("unknown version {}", file.version),
            });
        }
        learned.keys = file
            .registries
            .into_iter()
            .map(|e| (e.registry, e.key))
            .collect();
        Ok(learned)
    }

    /// The key remembered for `registry`.
    pub fn get(&self, registry: &SocketAddr) -> Option<PublicKey> {
        self.keys.get(registry).copied()
    }

    /// Remembers `key` for `registry` and saves the file (a no-op in memory). On error the key
    /// is still known for this process but was not persisted.
    pub fn learn(&mut self, registry: SocketAddr, key: PublicKey) -> Result<(), KeysFileError> {
        self.keys.insert(registry, key);
        self.save()
    }

    /// Forgets `registry`'s key (operator action) and saves the file.
    pub fn forget(&mut self, registry: &SocketAddr) -> Result<(), KeysFileError> {
        if self.keys.remove(registry).is_some() {
            self.save()?;
        }
        Ok(())
    }

    fn save(&self) -> Result<(), KeysFileError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let file = KeysFile {
            version: 1,
            registries: self
                .keys
                .iter()
                .map(|(&registry, &key)| Entry { registry, key })
                .collect(),
        };
        let mut text = serde_json::to_string_pretty(&file).expect("keys file serialises");
        text.push('\n');
        write_private_atomic(path, text.as_bytes()).map_err(|source| KeysFileError::Io {
            path: path.clone(),
            source,
        })
    }
}

/// Why the file of learned registry keys cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeysFileError {
    /// The file is accessible by group or others, or is not a regular file.
    #[error("registry key file {path} has mode {mode:04o} or is not a regular file: it must be a file only its owner can access")]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is not valid JSON of our format.
    #[error("registry key file {path} is malformed: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Reading or writing the file failed.
    #[error("cannot access registry key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl From<KeysFileError> for PilotError {
    fn from(e: KeysFileError) -> Self {
        let (code, hint) = match &e {
            KeysFileError::InsecurePermissions { path, .. } => (
                ErrorCode::Unauthorized,
                format!("run `chmod 600 {}`", path.display()),
            ),
            KeysFileError::Malformed { path, .. } => (
                ErrorCode::InvalidArgument,
                format!(
                    "move {} away: the registries' keys are then learned again on first use \
                     (or pin them with `registries = [\"HOST:PORT#KEY\"]`)",
                    path.display()
                ),
            ),
            KeysFileError::Io { .. } => (
                ErrorCode::Internal,
                "check that the state directory ($PILOT_HOME, default ~/.pilot) is yours and writable"
                    .to_string(),
            ),
        };
        PilotError::new(code, e.to_string(), hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    #[test]
    fn learned_keys_persist_0600_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(REGISTRY_KEYS_FILE);
        let reg: SocketAddr = "192.0.2.1:7000".parse().unwrap();
        let key = Identity::from_seed([5; 32]).public_key();
        let mut keys = LearnedKeys::open(&path).unwrap();
        assert_eq!(keys.get(&reg), None);
        keys.learn(reg, key).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = LearnedKeys::open(&path).unwrap();
        assert_eq!(again.get(&reg), Some(key));
        let mut again = again;
        again.forget(&reg).unwrap();
        assert_eq!(LearnedKeys::open(&path).unwrap().get(&reg), None);
    }

    #[test]
    fn a_key_file_others_can_read_or_that_is_garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(REGISTRY_KEYS_FILE);
        fs::write(&path, "{\"version\":1}").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let e = PilotError::from(LearnedKeys::open(&path).unwrap_err());
        assert_eq!(e.code, ErrorCode::Unauthorized);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(LearnedKeys::open(&path).is_ok());
        fs::write(&path, "not json").unwrap();
        let e = PilotError::from(LearnedKeys::open(&path).unwrap_err());
        assert_eq!(e.code, ErrorCode::InvalidArgument);
    }
}
