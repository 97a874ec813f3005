//! Where a node keeps its files: the state directory (`$PILOT_HOME`, default `~/.pilot`) and
//! the local API socket (`$PILOT_SOCKET`, default `$PILOT_HOME/pilot.sock`).

use std::path::{Path, PathBuf};

use crate::error::PilotError;

/// The files of one node.
#[derive(Debug, Clone)]
pub struct StatePaths {
    /// The state directory (created 0700).
    pub dir: PathBuf,
    /// The API socket.
    pub socket: PathBuf,
}

impl StatePaths {
    /// Resolves the paths from the environment: `PILOT_HOME`, `PILOT_SOCKET`, `HOME`.
    pub fn from_env() -> Result<Self, PilotError> {
        let dir = match std::env::var_os("PILOT_HOME") {
            Some(d) if !d.is_empty() => PathBuf::from(d),
            _ => match std::env::var_os("HOME") {
                Some(h) if !h.is_empty() => PathBuf::from(h).join(".pilot"),
                _ => {
                    return Err(PilotError::invalid(
                        "neither PILOT_HOME nor HOME is set",
                        "set PILOT_HOME to the directory where pilot keeps its key and state",
                    ))
                }
            },
        };
        let dir = absolute(&dir);
        let socket = match std::env::var_os("PILOT_SOCKET") {
            Some(s) if !s.is_empty() => absolute(Path::new(&s)),
            _ => dir.join("pilot.sock"),
        };
        Ok(StatePaths { dir, socket })
    }

    /// The identity key file.
    pub fn key(&self) -> PathBuf {
        self.dir.join("identity.key")
    }

    /// The lock file that makes one daemon per state directory (holds the pid).
    pub fn lock(&self) -> PathBuf {
        self.dir.join("daemon.lock")
    }

    /// The daemon's log when started in the background.
    pub fn log(&self) -> PathBuf {
        self.dir.join("daemon.log")
    }

    /// The node's own persisted settings (hostname).
    pub fn node_state(&self) -> PathBuf {
        self.dir.join("node.json")
    }

    /// The config file read when no `--config` is given, if it exists.
    pub fn default_config(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    /// Creates the state directory with mode 0700 if it is missing, then refuses it if
    /// another user owns it or group or others can write it (they could swap our files).
    pub fn ensure_dir(&self) -> Result<(), PilotError> {
        self.create_dir()?;
        super::files::check_owner_and_mode(&self.dir, false).map_err(|e| {
            let mut err = PilotError::from(e);
            err.message = format!("state directory refused: {}", err.message);
            err
        })
    }

    fn create_dir(&self) -> Result<(), PilotError> {
        use std::os::unix::fs::DirBuilderExt;
        if self.dir.is_dir() {
            return Ok(());
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| {
                PilotError::invalid(
                    format!("cannot create state directory {}: {e}", self.dir.display()),
                    "set PILOT_HOME to a directory you can write",
                )
            })
    }
}

/// Writes `bytes` to `path` so that a reader sees the old file or the new one, never a part:
/// a temporary file (mode 0600) in the same directory, fsynced, renamed over `path`, and the
/// directory fsynced so the rename survives a crash.
pub fn write_private_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    // A leftover from a crash may have other permissions: start from a new file, so the mode
    // below applies.
    let _ = std::fs::remove_file(&tmp);
    let mut f = super::files::open_private(&tmp, super::files::Access::CreateNew)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    super::files::sync_dir(dir)
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_state_directory_others_can_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let paths = StatePaths {
            dir: dir.path().join("home"),
            socket: dir.path().join("s"),
        };
        paths.ensure_dir().unwrap();
        let mode = std::fs::metadata(&paths.dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::set_permissions(&paths.dir, std::fs::Permissions::from_mode(0o770)).unwrap();
        let e = paths.ensure_dir().unwrap_err();
        assert_eq!(e.code, crate::error::ErrorCode::Unauthorized);
        assert!(
            e.message.starts_with("state directory refused"),
            "{}",
            e.message
        );
    }

    #[test]
    fn atomic_write_never_writes_through_a_planted_temporary_link() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(".state.json.tmp")).unwrap();
        write_private_atomic(&dir.path().join("state.json"), b"new").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
    }

    #[test]
    fn atomic_write_is_private_even_over_a_stale_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let stale = dir.path().join(".state.json.tmp");
        std::fs::write(&stale, "half").unwrap();
        std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!stale.exists());
    }
}
