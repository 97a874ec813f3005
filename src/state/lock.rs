//! One daemon per state directory: an exclusive `flock` on `daemon.lock`, which also holds the
//! daemon's pid. The kernel drops the lock when the process dies, so a crash never leaves a
//! stale lock behind.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::{ErrorCode, PilotError};

/// The held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct DaemonLock {
    _file: File,
}

/// Opens (creating 0600) the lock file, never through a symbolic link, ours only.
fn open(path: &Path) -> Result<File, PilotError> {
    super::files::open_private(path, super::files::Access::ReadWrite).map_err(|e| {
        PilotError::invalid(
            format!("cannot open lock file {}: {e}", path.display()),
            "check that the state directory is yours and writable",
        )
    })
}

fn try_flock(f: &File) -> bool {
    // SAFETY: flock on a file descriptor we own; no memory is passed.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

fn read_pid(f: &mut File) -> Option<u32> {
    let mut s = String::new();
    f.seek(SeekFrom::Start(0)).ok()?;
    f.read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

impl DaemonLock {
    /// Takes the lock and writes our pid into it, or says which pid holds it.
    pub fn acquire(path: &Path) -> Result<Self, PilotError> {
        let mut f = open(path)?;
        if !try_flock(&f) {
            let pid = read_pid(&mut f)
                .map(|p| format!(" (pid {p})"))
                .unwrap_or_default();
            return Err(PilotError::new(
                ErrorCode::AlreadyExists,
                format!(
                    "a daemon is already running for {}{pid}",
                    path.parent().unwrap_or(path).display()
                ),
                "use it, stop it with `pilotctl daemon stop`, or set PILOT_HOME to another directory for a second node",
            ));
        }
        let pid = std::process::id();
        let written = f
            .set_len(0)
            .and_then(|_| f.seek(SeekFrom::Start(0)))
            .and_then(|_| f.write_all(format!("{pid}\n").as_bytes()))
            .and_then(|_| f.sync_all());
        written
            .map_err(|e| PilotError::internal(format!("cannot write {}: {e}", path.display())))?;
        Ok(DaemonLock { _file: f })
    }

    /// The pid of the daemon holding the lock, or `None` if no daemon holds it.
    pub fn holder(path: &Path) -> Option<u32> {
        let mut f = super::files::open_private(path, super::files::Access::Read).ok()?;
        if try_flock(&f) {
            // Nobody held it; our lock is released when `f` drops.
            return None;
        }
        Some(read_pid(&mut f).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symlinked_lock_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("victim");
        std::fs::write(&target, "data").unwrap();
        let path = dir.path().join("daemon.lock");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert!(DaemonLock::acquire(&path).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"data");
    }

    #[test]
    fn second_acquire_fails_with_already_exists_and_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.lock");
        let held = DaemonLock::acquire(&path).unwrap();
        // flock locks belong to the open file description, so a second open conflicts even in
        // the same process.
        let err = DaemonLock::acquire(&path).unwrap_err();
        assert_eq!(err.code, ErrorCode::AlreadyExists);
        assert!(err.message.contains(&std::process::id().to_string()));
        assert_eq!(DaemonLock::holder(&path), Some(std::process::id()));
        drop(held);
        assert_eq!(DaemonLock::holder(&path), None);
        DaemonLock::acquire(&path).unwrap();
    }
}
