//! The receiver's files on disk: partial files (`files/partial/KEY-ID.part` with their
//! record `KEY-ID.json`, outside `received/`), the finished files in `received/` and their
//! index (`files/received.json`), the quota and free-space checks ([`decide_offer`], pure).

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::wire::{Offer, RefuseCode};
use super::FileError;
use crate::config::FilesConfig;
use crate::state::paths::write_private_atomic;

/// A file that arrived complete and verified, as `received` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReceivedFile {
    /// The transfer id.
    pub id: String,
    /// Its name in `received/` (the offered name, made unique).
    pub name: String,
    /// Its full path.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 (lowercase hex), verified.
    pub sha256: String,
    /// Sender's public key (base64).
    pub from: String,
    /// Sender's address (addr48 text).
    pub from_address: String,
    /// Sender's hostname, if known when it arrived.
    pub from_hostname: Option<String>,
    /// Our clock when it was stored (unix ms).
    pub received_ms: u64,
}

/// The record of a partial file: what was offered, and how much is durably written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialMeta {
    /// The sender's offer.
    pub id: String,
    /// Offered name.
    pub name: String,
    /// Offered size.
    pub size: u64,
    /// Offered SHA-256; `None` while the sender sends it at the end (`End`). Set to the
    /// verified hash before [`Store::finish`].
    #[serde(default)]
    pub sha256: Option<String>,
    /// Sender's public key.
    pub from: String,
    /// Sender's address (addr48 text).
    pub from_address: String,
    /// Sender's hostname, if known.
    pub from_hostname: Option<String>,
    /// Bytes written and fsynced: the offset a resume starts from.
    pub offset: u64,
    /// When the first offer arrived (unix ms).
    pub started_ms: u64,
}

/// Disk usage as the limits see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Bytes in `received/` plus the full offered size of every partial file.
    pub used: u64,
    /// Bytes free on the state directory's file system for us.
    pub free_disk: u64,
}

/// Whether an offer fits the limits: `reserved` is what a partial file of this transfer
/// already counts in `usage.used` (its full size, or 0 if new), `have` the bytes it holds.
pub fn decide_offer(
    size: u64,
    have: u64,
    reserved: u64,
    usage: Usage,
    limits: &FilesConfig,
) -> Result<(), (RefuseCode, String)> {
    if size > limits.max_file_size {
        return Err((
            RefuseCode::TooLarge,
            format!(
                "the file is {size} bytes; this node takes at most {} ([files] max_file_size)",
                limits.max_file_size
            ),
        ));
    }
    let after = usage.used.saturating_sub(reserved).saturating_add(size);
    if after > limits.quota {
        return Err((
            RefuseCode::Quota,
            format!(
                "received and partial files would take {after} bytes; the quota is {} ([files] quota)",
                limits.quota
            ),
        ));
    }
    let needed = size
        .saturating_sub(have)
        .saturating_add(limits.min_free_disk);
    if usage.free_disk < needed {
        return Err((
            RefuseCode::DiskFull,
            format!(
                "{} bytes free; the file needs {} more and {} must stay free ([files] min_free_disk)",
                usage.free_disk,
                size.saturating_sub(have),
                limits.min_free_disk
            ),
        ));
    }
    Ok(())
}

/// Bytes free for an unprivileged user on the file system holding `dir`.
pub fn free_disk(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs writes into a zeroed struct we own; `c` is a valid C string.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((s.f_bavail as u64).saturating_mul(s.f_frsize as u64))
}

fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The receiver's directories.
#[derive(Debug, Clone)]
pub struct Store {
    partial: PathBuf,
    received: PathBuf,
    index: PathBuf,
}

impl Store {
    /// Opens (creating) `STATE/files/partial` and `STATE/received`.
    pub fn open(state_dir: &Path) -> Result<Self, FileError> {
        let s = Store {
            partial: state_dir.join("files").join("partial"),
            received: state_dir.join("received"),
            index: state_dir.join("files").join("received.json"),
        };
        ensure_dir(&s.partial)?;
        ensure_dir(&s.received)?;
        Ok(s)
    }

    /// The `received/` directory.
    pub fn received_dir(&self) -> &Path {
        &self.received
    }

    /// The key of a transfer from `from_address`: names its partial files.
    pub fn stem(from_address: &str, id: &str) -> String {
        format!("{}-{id}", from_address.replace('.', ""))
    }

    /// The data file of a partial transfer.
    pub fn partial_data(&self, from_address: &str, id: &str) -> PathBuf {
        self.partial
            .join(format!("{}.part", Self::stem(from_address, id)))
    }

    fn partial_meta(&self, from_address: &str, id: &str) -> PathBuf {
        self.partial
            .join(format!("{}.json", Self::stem(from_address, id)))
    }

    /// The record of a partial transfer, if there is a readable one.
    pub fn load_partial(&self, from_address: &str, id: &str) -> Option<PartialMeta> {
        let bytes = std::fs::read(self.partial_meta(from_address, id)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Records a partial transfer durably.
    pub fn save_partial(&self, m: &PartialMeta) -> Result<(), FileError> {
        let bytes = serde_json::to_vec(m).map_err(|e| FileError::Malformed(e.to_string()))?;
        write_private_atomic(&self.partial_meta(&m.from_address, &m.id), &bytes)?;
        Ok(())
    }

    /// Deletes a partial transfer (data and record).
    pub fn remove_partial(&self, from_address: &str, id: &str) {
        let _ = std::fs::remove_file(self.partial_data(from_address, id));
        let _ = std::fs::remove_file(self.partial_meta(from_address, id));
    }

    /// Every partial transfer's record.
    pub fn partials(&self) -> Vec<PartialMeta> {
        let Ok(rd) = std::fs::read_dir(&self.partial) else {
            return Vec::new();
        };
        let mut out: Vec<PartialMeta> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter_map(|p| serde_json::from_slice(&std::fs::read(p).ok()?).ok())
            .collect();
        out.sort_by_key(|m| m.started_ms);
        out
    }

    /// What the limits count now.
    pub fn usage(&self) -> Result<Usage, FileError> {
        let mut used: u64 = std::fs::read_dir(&self.received)?
            .filter_map(|e| e.ok()?.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum();
        used += self.partials().iter().map(|m| m.size).sum::<u64>();
        Ok(Usage {
            used,
            free_disk: free_disk(&self.partial)?,
        })
    }

    /// Opens the partial data file for `m`, cut to its durable offset, and hashes what it
    /// holds (a fixed buffer; blocking: run it off the async threads).
    pub fn open_partial(&self, m: &PartialMeta) -> Result<(std::fs::File, Sha256), FileError> {
        let path = self.partial_data(&m.from_address, &m.id);
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags_nofollow()
            .open(&path)?;
        f.set_len(m.offset)?;
        let mut hash = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut left = m.offset;
        f.seek(SeekFrom::Start(0))?;
        while left > 0 {
            let want = buf.len().min(left as usize);
            let n = f.read(&mut buf[..want])?;
            if n == 0 {
                return Err(FileError::Malformed(
                    "partial file shorter than its record".into(),
                ));
            }
            hash.update(&buf[..n]);
            left -= n as u64;
        }
        f.seek(SeekFrom::Start(m.offset))?;
        Ok((f, hash))
    }

    /// Moves a complete, verified partial file into `received/` under a name no file has yet
    /// (never overwriting), records it in the index and deletes the partial record.
    pub fn finish(&self, m: &PartialMeta, received_ms: u64) -> Result<ReceivedFile, FileError> {
        let src = self.partial_data(&m.from_address, &m.id);
        let name = link_unique(&src, &self.received, &m.name)?;
        let _ = std::fs::remove_file(&src);
        crate::state::files::sync_dir(&self.received)?;
        let file = ReceivedFile {
            id: m.id.clone(),
            path: self.received.join(&name).display().to_string(),
            name,
            size: m.size,
            sha256: m.sha256.clone().unwrap_or_default(),
            from: m.from.clone(),
            from_address: m.from_address.clone(),
            from_hostname: m.from_hostname.clone(),
            received_ms,
        };
        let mut all = self.read_index();
        all.push(file.clone());
        self.write_index(&all)?;
        let _ = std::fs::remove_file(self.partial_meta(&m.from_address, &m.id));
        Ok(file)
    }

    /// The received file of transfer `id` from `from`, if it is in the index.
    pub fn find_received(&self, from: &str, id: &str) -> Option<ReceivedFile> {
        self.read_index()
            .into_iter()
            .find(|f| f.id == id && f.from == from)
    }

    fn read_index(&self) -> Vec<ReceivedFile> {
        std::fs::read(&self.index)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn write_index(&self, all: &[ReceivedFile]) -> Result<(), FileError> {
        let bytes = serde_json::to_vec(all).map_err(|e| FileError::Malformed(e.to_string()))?;
        write_private_atomic(&self.index, &bytes)?;
        Ok(())
    }

    /// The received files still in `received/`, oldest first; with `clear`, exactly those
    /// are deleted.
    pub fn received(&self, clear: bool) -> Result<Vec<ReceivedFile>, FileError> {
        let all: Vec<ReceivedFile> = self
            .read_index()
            .into_iter()
            .filter(|f| self.received.join(&f.name).is_file())
            .collect();
        if clear {
            for f in &all {
                std::fs::remove_file(self.received.join(&f.name))?;
            }
            self.write_index(&[])?;
        }
        Ok(all)
    }
}

/// Hard-links `src` into `dir` as `name`, or `stem-1.ext`, `stem-2.ext`, ... when taken
/// (a link never replaces a file); returns the name used.
fn link_unique(src: &Path, dir: &Path, name: &str) -> Result<String, FileError> {
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    for n in 0..10_000u32 {
        let candidate = if n == 0 {
            name.to_string()
        } else {
            format!("{stem}-{n}{ext}")
        };
        match std::fs::hard_link(src, dir.join(&candidate)) {
            Ok(()) => return Ok(candidate),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(FileError::Malformed(format!("no free name for {name}")))
}

/// `O_NOFOLLOW` on an [`std::fs::OpenOptions`].
trait NoFollow {
    fn custom_flags_nofollow(&mut self) -> &mut Self;
}

impl NoFollow for std::fs::OpenOptions {
    fn custom_flags_nofollow(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .mode(0o600)
    }
}

/// SHA-256 (lowercase hex) and length of a whole file, read with a fixed buffer (blocking).
pub fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hex(&hash.finalize()), total))
}

/// Lowercase hex of a digest.
pub fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new partial record for `offer` from a sender.
pub fn new_partial(offer: &Offer, from: &super::Sender, now_ms: u64) -> PartialMeta {
    PartialMeta {
        id: offer.id.clone(),
        name: offer.name.clone(),
        size: offer.size,
        sha256: offer.sha256.clone(),
        from: from.key.clone(),
        from_address: from.address.clone(),
        from_hostname: from.hostname.clone(),
        offset: 0,
        started_ms: now_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> FilesConfig {
        FilesConfig {
            max_file_size: 1000,
            quota: 5000,
            min_free_disk: 100,
            ..FilesConfig::default()
        }
    }

    fn usage(used: u64, free_disk: u64) -> Usage {
        Usage { used, free_disk }
    }

    #[test]
    fn offers_over_a_limit_are_refused_with_the_limits_code() {
        let l = limits();
        let code = |r: Result<(), (RefuseCode, String)>| r.err().map(|e| e.0);
        assert_eq!(code(decide_offer(1000, 0, 0, usage(0, 1 << 20), &l)), None);
        assert_eq!(
            code(decide_offer(1001, 0, 0, usage(0, 1 << 20), &l)),
            Some(RefuseCode::TooLarge)
        );
        assert_eq!(
            code(decide_offer(900, 0, 0, usage(4200, 1 << 20), &l)),
            Some(RefuseCode::Quota)
        );
        // A resumed transfer's own reservation is not counted twice.
        assert_eq!(
            code(decide_offer(900, 500, 900, usage(4900, 1 << 20), &l)),
            None
        );
        assert_eq!(
            code(decide_offer(900, 0, 0, usage(0, 999), &l)),
            Some(RefuseCode::DiskFull)
        );
        // Only the bytes still to come need room.
        assert_eq!(code(decide_offer(900, 800, 900, usage(900, 200), &l)), None);
    }

    fn meta(id: &str, name: &str, data: &[u8]) -> PartialMeta {
        PartialMeta {
            id: id.into(),
            name: name.into(),
            size: data.len() as u64,
            sha256: Some(hex(&Sha256::digest(data))),
            from: "KEY".into(),
            from_address: "0a1b.2c3d.4e5f".into(),
            from_hostname: None,
            offset: 0,
            started_ms: 1,
        }
    }

    #[test]
    fn a_finished_file_never_replaces_one_in_received_and_clear_deletes_the_listed() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        std::fs::write(s.received_dir().join("a.txt"), "mine").unwrap();
        for (i, id) in [
            "00000000000000000000000000000001",
            "00000000000000000000000000000002",
        ]
        .iter()
        .enumerate()
        {
            let m = meta(id, "a.txt", b"theirs");
            std::fs::write(s.partial_data(&m.from_address, id), b"theirs").unwrap();
            s.save_partial(&m).unwrap();
            let f = s.finish(&m, 5).unwrap();
            assert_eq!(f.name, format!("a-{}.txt", i + 1));
            assert!(s.load_partial(&m.from_address, id).is_none());
        }
        assert_eq!(
            std::fs::read(s.received_dir().join("a.txt")).unwrap(),
            b"mine"
        );
        let listed = s.received(true).unwrap();
        assert_eq!(listed.len(), 2);
        assert!(s.received(false).unwrap().is_empty());
        assert!(
            s.received_dir().join("a.txt").exists(),
            "unlisted files are kept"
        );
    }

    #[test]
    fn a_resumed_partial_is_cut_to_its_durable_offset_and_its_prefix_rehashed() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let data = b"0123456789abcdef";
        let mut m = meta("00000000000000000000000000000003", "x", data);
        // 12 bytes on disk, 8 of them durable.
        std::fs::write(s.partial_data(&m.from_address, &m.id), &data[..12]).unwrap();
        m.offset = 8;
        let (f, mut h) = s.open_partial(&m).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 8);
        h.update(&data[8..]);
        assert_eq!(Some(hex(&h.finalize())), m.sha256);
    }
}
