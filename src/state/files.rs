//! Files and directories that must be ours: every private file (key, lock, log, dedupe
//! record, temporary files) is opened without following a symbolic link (`O_NOFOLLOW`) and
//! refused unless it is a regular file owned by us; the state directory and the config file
//! are refused when another user owns them or when group or others can write them.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{ErrorCode, PilotError};

/// Why a file or directory is not safe to use.
#[derive(Debug, thiserror::Error)]
pub enum UnsafePath {
    /// Group or others may write it.
    #[error("{path} is writable by group or others (mode {mode:04o})")]
    Writable {
        /// The offending path.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Another user owns it.
    #[error("{path} is owned by uid {owner}, not by this user (uid {us})")]
    NotOurs {
        /// The offending path.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Our effective uid.
        us: u32,
    },
    /// It cannot be checked (missing, unreadable).
    #[error("cannot check {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The system's reason.
        source: std::io::Error,
    },
}

impl From<UnsafePath> for PilotError {
    fn from(e: UnsafePath) -> Self {
        let hint = match &e {
            UnsafePath::Writable { path, .. } => {
                format!(
                    "run `chmod go-w {}` (and check what others changed)",
                    path.display()
                )
            }
            UnsafePath::NotOurs { path, .. } => format!(
                "use a state directory and config file of your own (PILOT_HOME, --config), or \
                 `chown` {} to this user",
                path.display()
            ),
            UnsafePath::Io { .. } => {
                "check that PILOT_HOME and the config file exist and are yours".into()
            }
        };
        let code = match e {
            UnsafePath::Io { .. } => ErrorCode::InvalidArgument,
            _ => ErrorCode::Unauthorized,
        };
        PilotError::new(code, e.to_string(), hint)
    }
}

impl UnsafePath {
    /// The path refused.
    pub fn path(&self) -> &Path {
        match self {
            UnsafePath::Writable { path, .. }
            | UnsafePath::NotOurs { path, .. }
            | UnsafePath::Io { path, .. } => path,
        }
    }
}

/// Our effective uid.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Refuses `path` (followed if it is a link) when group or others can write it or when it is
/// owned by anyone but us or, if `root_ok`, root.
pub fn check_owner_and_mode(path: &Path, root_ok: bool) -> Result<(), UnsafePath> {
    let meta = std::fs::metadata(path).map_err(|source| UnsafePath::Io {
        path: path.into(),
        source,
    })?;
    let (owner, us) = (meta.uid(), euid());
    if owner != us && !(root_ok && owner == 0) {
        return Err(UnsafePath::NotOurs {
            path: path.into(),
            owner,
            us,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(UnsafePath::Writable {
            path: path.into(),
            mode,
        });
    }
    Ok(())
}

/// How a private file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read only; the file must exist.
    Read,
    /// Read and append, created 0600 if missing (records, logs).
    Append,
    /// Read and write without truncating, created 0600 if missing (the lock file).
    ReadWrite,
    /// A new file, 0600, that must not exist yet (keys, temporary files).
    CreateNew,
}

/// Opens a private file without following a symbolic link and checks that it is a regular
/// file owned by us; anything else is an error of kind `PermissionDenied` naming the file.
pub fn open_private(path: &Path, access: Access) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(0o600);
    match access {
        Access::Read => o.read(true),
        Access::Append => o.read(true).append(true).create(true),
        Access::ReadWrite => o.read(true).write(true).create(true).truncate(false),
        Access::CreateNew => o.write(true).create_new(true),
    };
    let f = o.open(path).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            denied(path, "is a symbolic link")
        } else {
            e
        }
    })?;
    let meta = f.metadata()?;
    if !meta.file_type().is_file() {
        return Err(denied(path, "is not a regular file"));
    }
    if meta.uid() != euid() {
        return Err(denied(
            path,
            &format!("is owned by uid {}, not by us", meta.uid()),
        ));
    }
    Ok(f)
}

fn denied(path: &Path, what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        format!("{} {what}: refused", path.display()),
    )
}

/// Fsyncs a directory, so that a file just created or renamed in it survives a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_symlink_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "secret").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        for a in [
            Access::Read,
            Access::Append,
            Access::ReadWrite,
            Access::CreateNew,
        ] {
            let e = open_private(&link, a).unwrap_err();
            assert!(
                e.kind() == std::io::ErrorKind::PermissionDenied
                    || e.kind() == std::io::ErrorKind::AlreadyExists,
                "{a:?}: {e}"
            );
        }
        assert_eq!(std::fs::read(&target).unwrap(), b"secret");
    }

    #[test]
    fn private_files_are_created_0600_and_directories_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        open_private(&p, Access::Append).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(open_private(dir.path(), Access::Read).is_err());
    }

    #[test]
    fn a_directory_others_can_write_is_refused_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        check_owner_and_mode(dir.path(), false).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_owner_and_mode(dir.path(), false).unwrap_err();
        assert!(matches!(e, UnsafePath::Writable { mode: 0o777, .. }), "{e}");
        let e = PilotError::from(e);
        assert_eq!(e.code, ErrorCode::Unauthorized);
        assert!(e.hint.contains("chmod go-w"), "{}", e.hint);
    }
}
