//! The sender's durable queue: one record per transfer in `files/outgoing/ID.json` (written
//! atomically), kept after it ends so `transfers` shows how it ended.

use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Direction, FileError, Transfer, TransferState};
use crate::state::paths::write_private_atomic;
use crate::wg::PeerId;

/// Finished transfers kept for `transfers`; the oldest are forgotten first.
const KEEP_FINISHED: usize = 200;

/// An outgoing transfer as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outgoing {
    /// What `transfers` shows.
    pub transfer: Transfer,
    /// The peer's overlay IPv6.
    pub to_ipv6: Ipv6Addr,
    /// The file's modification time at send time (ns since the epoch).
    pub mtime_ns: u64,
}

impl Outgoing {
    /// Whether it still needs attempts.
    pub fn is_pending(&self) -> bool {
        !matches!(
            self.transfer.state,
            TransferState::Done | TransferState::Failed
        )
    }
}

/// A file's size and modification time (ns), as recorded at send time.
pub fn stat(path: &Path) -> Result<(u64, u64), FileError> {
    let m = std::fs::metadata(path)
        .map_err(|e| FileError::BadFile(format!("cannot read {}: {e}", path.display())))?;
    if !m.is_file() {
        return Err(FileError::BadFile(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let mtime = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64);
    Ok((m.len(), mtime))
}

/// A new record for `path`, checked: an absolute path to a readable regular file, and a name
/// the receiver would take.
pub fn new_outgoing(
    path: &Path,
    name: Option<String>,
    to_key: String,
    to_ipv6: Ipv6Addr,
    peer: Option<PeerId>,
    now_ms: u64,
) -> Result<Outgoing, FileError> {
    if !path.is_absolute() {
        return Err(FileError::BadFile(format!(
            "{} is not an absolute path",
            path.display()
        )));
    }
    let (size, mtime_ns) = stat(path)?;
    std::fs::File::open(path)
        .map_err(|e| FileError::BadFile(format!("cannot read {}: {e}", path.display())))?;
    let name = match name {
        Some(n) => n,
        None => path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    if !super::wire::valid_name(&name) {
        return Err(FileError::BadFile(format!(
            "`{}` is not a file name a peer takes (1-255 bytes, no `/` or control characters)",
            name.escape_debug()
        )));
    }
    let transfer = Transfer {
        id: crate::services::message_store::new_id(),
        direction: Direction::Outgoing,
        peer: to_key,
        peer_address: peer
            .as_ref()
            .map(|p| p.addr48.to_string())
            .unwrap_or_default(),
        peer_hostname: peer.and_then(|p| p.hostname),
        name,
        path: Some(path.display().to_string()),
        size,
        offset: 0,
        bytes_sent: 0,
        state: TransferState::Queued,
        error: None,
        sha256: None,
        stored_as: None,
        created_ms: now_ms,
        updated_ms: now_ms,
    };
    Ok(Outgoing {
        transfer,
        to_ipv6,
        mtime_ns,
    })
}

/// The directory of outgoing records.
#[derive(Debug)]
pub struct OutgoingStore {
    dir: PathBuf,
}

impl OutgoingStore {
    /// Opens (creating) the directory.
    pub fn open(dir: PathBuf) -> Result<Self, FileError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        Ok(OutgoingStore { dir })
    }

    /// Writes a record (atomically, durably).
    pub fn put(&self, o: &Outgoing) -> Result<(), FileError> {
        let bytes =
            serde_json::to_vec_pretty(o).map_err(|e| FileError::Malformed(e.to_string()))?;
        write_private_atomic(&self.dir.join(format!("{}.json", o.transfer.id)), &bytes)?;
        Ok(())
    }

    /// One record.
    pub fn get(&self, id: &str) -> Option<Outgoing> {
        let bytes = std::fs::read(self.dir.join(format!("{id}.json"))).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Every record, oldest first; finished ones beyond [`KEEP_FINISHED`] are deleted.
    pub fn all(&self) -> Result<Vec<Outgoing>, FileError> {
        let mut all: Vec<Outgoing> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter_map(|p| serde_json::from_slice(&std::fs::read(p).ok()?).ok())
            .collect();
        all.sort_by_key(|o| o.transfer.created_ms);
        let finished = all.iter().filter(|o| !o.is_pending()).count();
        let mut extra = finished.saturating_sub(KEEP_FINISHED);
        all.retain(|o| {
            if extra > 0 && !o.is_pending() {
                extra -= 1;
                let _ = std::fs::remove_file(self.dir.join(format!("{}.json", o.transfer.id)));
                return false;
            }
            true
        });
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queued_transfer_survives_a_reopen_and_bad_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data.bin");
        std::fs::write(&file, vec![7u8; 1000]).unwrap();
        let ip: Ipv6Addr = "fdc5::1".parse().unwrap();
        let o = new_outgoing(&file, None, "KEY".into(), ip, None, 5).unwrap();
        assert_eq!(
            (o.transfer.name.as_str(), o.transfer.size),
            ("data.bin", 1000)
        );
        let store = OutgoingStore::open(dir.path().join("out")).unwrap();
        store.put(&o).unwrap();
        let again = OutgoingStore::open(dir.path().join("out")).unwrap();
        assert_eq!(again.all().unwrap(), vec![o.clone()]);
        assert_eq!(again.get(&o.transfer.id), Some(o));
        for (p, name) in [
            (Path::new("relative.bin"), None),
            (dir.path(), None),
            (file.as_path(), Some("a/b".to_string())),
        ] {
            let e = new_outgoing(p, name, "K".into(), ip, None, 5).unwrap_err();
            assert!(matches!(e, FileError::BadFile(_)), "{e}");
        }
    }
}
