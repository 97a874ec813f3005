//! The receiver's record of the messages it has stored, `(sender key, message id)`, kept apart
//! from the inbox files so that clearing the inbox does not forget them: a sender whose ack
//! was lost retries, and the retry must be acked without being stored a second time, even
//! after `inbox --clear` and a restart.
//!
//! On disk (`$PILOT_HOME/inbox-seen`, mode 0600, opened without following symlinks): one line
//! per message cleared from the inbox, `STORED_MS SENDER_KEY ID`, appended and fsynced before
//! the clear is recorded in the inbox journal (until then the journal's line of the message is
//! its dedupe record, and the ids of live messages are only remembered here in memory), and
//! one per reply handed to a waiting request (appended, not fsynced on its own). The
//! record is bounded: an id is forgotten after [`DedupeLimits::ttl_ms`] or when more than
//! [`DedupeLimits::capacity`] newer ids are remembered; the file is rewritten (atomically)
//! when it holds twice as many lines as are remembered. Time comes in as a parameter.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A new random message id (32 hex digits).
pub fn new_id() -> String {
    use rand_core::RngCore;
    let mut b = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Whether `id` has the shape of a message id (so it is safe in a file name).
pub fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|c| c.is_ascii_hexdigit())
}

/// How much the dedupe record remembers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupeLimits {
    /// Most ids remembered; the oldest are forgotten first.
    pub capacity: usize,
    /// How long an id is remembered after it was stored (ms).
    pub ttl_ms: u64,
}

/// The remembered `(sender, id)` pairs, in the order they were stored.
#[derive(Debug)]
pub struct SeenIds {
    path: PathBuf,
    file: File,
    order: VecDeque<(u64, String, String)>,
    set: HashSet<(String, String)>,
    /// The sender of each remembered id (the latest, should two senders use one id).
    senders: HashMap<String, String>,
    lines: usize,
    limits: DedupeLimits,
    /// Records appended since the last fsync.
    unsynced: bool,
}

/// Opens `path` for appending, creating it 0600, refusing a symlink or a file not ours.
fn open_append(path: &Path) -> std::io::Result<File> {
    crate::state::files::open_private(path, crate::state::files::Access::Append)
}

/// One line of the record, or `None` if it is malformed (a torn last line after a crash).
fn parse_line(line: &str) -> Option<(u64, String, String)> {
    let mut parts = line.split(' ');
    let ms = parts.next()?.parse().ok()?;
    let from = parts.next()?;
    let id = parts.next()?;
    let ok = parts.next().is_none() && !from.is_empty() && valid_id(id);
    ok.then(|| (ms, from.to_string(), id.to_string()))
}

impl SeenIds {
    /// Loads the record at `path` (creating it), dropping what `now_ms` has expired.
    pub fn open(path: PathBuf, limits: DedupeLimits, now_ms: u64) -> std::io::Result<Self> {
        let mut file = open_append(&path)?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut bytes)?;
        let text = String::from_utf8_lossy(&bytes);
        let mut seen = SeenIds {
            path,
            file,
            order: VecDeque::new(),
            set: HashSet::new(),
            senders: HashMap::new(),
            lines: 0,
            limits,
            unsynced: false,
        };
        for (ms, from, id) in text.lines().filter_map(parse_line) {
            seen.lines += 1;
            seen.remember(ms, from, id);
        }
        seen.evict(now_ms);
        Ok(seen)
    }

    /// Whether `(from, id)` was stored and is still remembered.
    pub fn contains(&self, from: &str, id: &str) -> bool {
        self.set.contains(&(from.to_string(), id.to_string()))
    }

    /// Who sent the message `id`, if it is remembered (the latest sender, should two have
    /// used the same id).
    pub fn sender_of(&self, id: &str) -> Option<&str> {
        self.senders.get(id).map(String::as_str)
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Remembers `(from, id)` in memory only (messages in the inbox journal).
    pub fn remember(&mut self, ms: u64, from: String, id: String) {
        if self.set.insert((from.clone(), id.clone())) {
            self.senders.insert(id.clone(), from.clone());
            self.order.push_back((ms, from, id));
        }
    }

    /// Records `(from, id)` durably (appended and fsynced) at `now_ms`.
    pub fn record(&mut self, from: &str, id: &str, now_ms: u64) -> std::io::Result<()> {
        self.note(from, id, now_ms)?;
        self.sync()
    }

    /// Makes every noted record durable (one fsync, if any is pending).
    pub fn sync(&mut self) -> std::io::Result<()> {
        if self.unsynced {
            self.file.sync_data()?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// Records `(from, id)` at `now_ms`, appended but not fsynced: made durable by the next
    /// [`Self::sync`] (a clear), or for a record whose loss in a crash costs at most a
    /// duplicate.
    pub fn note(&mut self, from: &str, id: &str, now_ms: u64) -> std::io::Result<()> {
        if from.is_empty() || from.contains(char::is_whitespace) || !valid_id(id) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "sender or id not fit for the dedupe record",
            ));
        }
        self.file
            .write_all(format!("{now_ms} {from} {id}\n").as_bytes())?;
        self.unsynced = true;
        self.lines += 1;
        self.remember(now_ms, from.into(), id.into());
        self.evict(now_ms);
        if self.lines > 2 * self.order.len() + 1024 {
            self.compact()?;
        }
        Ok(())
    }

    /// Forgets ids that expired at `now_ms` and the oldest beyond the capacity.
    fn evict(&mut self, now_ms: u64) {
        while let Some((ms, _, _)) = self.order.front() {
            let expired = ms.saturating_add(self.limits.ttl_ms) <= now_ms;
            if !expired && self.order.len() <= self.limits.capacity {
                break;
            }
            if let Some((_, from, id)) = self.order.pop_front() {
                if self.senders.get(&id) == Some(&from) {
                    self.senders.remove(&id);
                }
                self.set.remove(&(from, id));
            }
        }
    }

    /// Rewrites the file with only what is remembered.
    fn compact(&mut self) -> std::io::Result<()> {
        let text: String = self
            .order
            .iter()
            .map(|(ms, from, id)| format!("{ms} {from} {id}\n"))
            .collect();
        crate::state::paths::write_private_atomic(&self.path, text.as_bytes())?;
        self.file = open_append(&self.path)?;
        self.lines = self.order.len();
        self.unsynced = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400_000;

    fn limits(capacity: usize) -> DedupeLimits {
        DedupeLimits {
            capacity,
            ttl_ms: DAY,
        }
    }

    #[test]
    fn recorded_ids_survive_a_reopen_until_they_expire() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox-seen");
        let id = new_id();
        let mut s = SeenIds::open(path.clone(), limits(10), 0).unwrap();
        s.record("k1", &id, 1000).unwrap();
        assert!(s.contains("k1", &id) && !s.contains("k2", &id));
        let again = SeenIds::open(path.clone(), limits(10), 2000).unwrap();
        assert!(again.contains("k1", &id), "forgotten on reopen");
        assert_eq!(again.sender_of(&id), Some("k1"));
        assert_eq!(again.sender_of(&new_id()), None);
        let later = SeenIds::open(path, limits(10), 1000 + DAY).unwrap();
        assert!(!later.contains("k1", &id), "kept past its expiry");
        assert_eq!(
            later.sender_of(&id),
            None,
            "its sender kept past its expiry"
        );
    }

    #[test]
    fn the_record_is_bounded_and_the_file_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox-seen");
        let mut s = SeenIds::open(path.clone(), limits(3), 0).unwrap();
        let ids: Vec<String> = (0..1100).map(|_| new_id()).collect();
        for (i, id) in ids.iter().enumerate() {
            s.record("k", id, i as u64).unwrap();
        }
        assert_eq!(s.len(), 3);
        assert!(s.contains("k", &ids[1099]) && !s.contains("k", &ids[1096]));
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines <= 2 * 3 + 1024, "{lines} lines");
        let again = SeenIds::open(path, limits(3), 1100).unwrap();
        assert_eq!(again.len(), 3);
    }

    #[test]
    fn torn_or_hostile_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox-seen");
        let id = new_id();
        std::fs::write(
            &path,
            format!(
                "5 k {id}\n6 k ../../x\nnot a line\n7 k {id} extra\n8 k2 {}",
                &id[..5]
            ),
        )
        .unwrap();
        let s = SeenIds::open(path, limits(10), 10).unwrap();
        assert_eq!(s.len(), 1);
        assert!(s.contains("k", &id));
    }

    #[test]
    fn a_symlinked_record_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "").unwrap();
        let path = dir.path().join("inbox-seen");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert!(SeenIds::open(path, limits(10), 0).is_err());
    }
}
