//! The inbox journal: every message the inbox stores and every one it clears, in one
//! append-only file made durable by **group commit**, so that storing a message before its ack
//! costs one `fdatasync` (shared with every message stored meanwhile) instead of a file, a
//! rename and two fsyncs.
//!
//! - [`InboxJournal::append`] writes one `{"in": InboxEntry}` line: the inbox record and,
//!   while the message is in the inbox, its dedupe entry (the index of live `(sender, id)`
//!   keys is rebuilt from these lines at start). The write is not durable yet.
//! - [`InboxJournal::durable`] gives a [`Durable`] that completes once everything written so
//!   far is on disk. One syncer thread serves them: it takes every request queued since its
//!   last turn and makes them all durable with one `fdatasync` (a request whose writes an
//!   earlier sync already covered costs none).
//! - [`InboxJournal::delete`] appends `{"del": [SENDER_KEY, ID]}` lines and makes them
//!   durable before it returns (a clear must not come undone in a crash).
//! - At start the journal is replayed in order; a torn last line (a crash mid-write) is cut
//!   off; the file is rewritten with only the live messages when the dead lines outweigh them
//!   (also after a clear).
//!
//! On disk: `$PILOT_HOME/inbox/inbox.log`, 0600, one JSON object per line.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

/// The journal's file name in the inbox directory.
pub const JOURNAL: &str = "inbox.log";
/// Dead bytes beyond the live ones before the journal is rewritten.
const COMPACT_SLACK: u64 = 1 << 20;

/// One journal line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Record<T> {
    /// A stored message.
    In(Box<T>),
    /// A cleared message: its sender's key and its id.
    Del(String, String),
}

/// A live message as the index keeps it: where its line is and what the listing filters on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Sender's key.
    pub from: String,
    /// Message id.
    pub id: String,
    /// Where its line starts in the journal.
    offset: u64,
    /// Its line's length, newline included (what the quotas count).
    pub len: u64,
}

/// Completes when the journal writes it was made for are durable (or syncing failed).
pub struct Durable(Option<oneshot::Receiver<std::io::Result<()>>>);

impl Durable {
    /// Already durable: nothing to wait for.
    pub fn ready() -> Self {
        Durable(None)
    }

    /// Waits for the group commit that carries the writes.
    pub async fn wait(self) -> std::io::Result<()> {
        let Some(rx) = self.0 else { return Ok(()) };
        match rx.await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::other("the inbox journal's syncer stopped")),
        }
    }
}

/// What the writers and the syncer thread share.
struct Shared {
    /// The current journal file (replaced when the journal is rewritten).
    file: Mutex<Arc<File>>,
    /// Lines written so far (a sequence number).
    written: AtomicU64,
    /// Lines known durable.
    synced: AtomicU64,
    /// `fdatasync` calls made by the syncer thread.
    syncs: AtomicU64,
}

/// The key of a stored message: its sender's key and its id.
pub type Key = (String, String);

/// The journal of messages `T` and its index of live ones (see the module documentation).
pub struct InboxJournal<T> {
    path: PathBuf,
    file: Arc<File>,
    /// Bytes in the file.
    len: u64,
    /// Live messages by offset: journal order, which is arrival order.
    live: BTreeMap<u64, Meta>,
    /// The offset of each live `(sender, id)`.
    keys: HashMap<(String, String), u64>,
    live_bytes: u64,
    shared: Arc<Shared>,
    requests: mpsc::Sender<oneshot::Sender<std::io::Result<()>>>,
    key_of: fn(&T) -> Key,
}

impl<T: Serialize + DeserializeOwned> InboxJournal<T> {
    /// Opens (creating) the journal at `path` of messages whose keys `key_of` gives: replays
    /// it, cuts a torn last line, rewrites it if dead lines outweigh live ones, and starts the
    /// syncer thread.
    pub fn open(path: PathBuf, key_of: fn(&T) -> Key) -> std::io::Result<Self> {
        let file = open_append(&path)?;
        let bytes = std::fs::read(&path)?;
        let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if whole < bytes.len() {
            tracing::warn!(file = %path.display(), "inbox journal: torn last line cut off");
            file.set_len(whole as u64)?;
            file.sync_all()?;
        }
        let shared = Arc::new(Shared {
            file: Mutex::new(Arc::new(file)),
            written: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel();
        let syncer = shared.clone();
        std::thread::Builder::new()
            .name("pilot-inbox".into())
            .spawn(move || sync_loop(&syncer, rx))?;
        let current = shared.file.lock().expect("journal file").clone();
        let mut j = InboxJournal {
            file: current,
            path,
            len: whole as u64,
            live: BTreeMap::new(),
            keys: HashMap::new(),
            live_bytes: 0,
            shared,
            requests: tx,
            key_of,
        };
        j.replay(&bytes[..whole]);
        j.maybe_compact()?;
        Ok(j)
    }

    /// Rebuilds the index from the journal's lines.
    fn replay(&mut self, bytes: &[u8]) {
        let mut offset = 0u64;
        for line in bytes.split_inclusive(|b| *b == b'\n') {
            let len = line.len() as u64;
            match serde_json::from_slice::<Record<T>>(line) {
                Ok(Record::In(e)) => {
                    let (from, id) = (self.key_of)(&e);
                    self.index(offset, len, from, id);
                }
                Ok(Record::Del(from, id)) => {
                    self.unindex(&from, &id);
                }
                Err(_) => tracing::warn!("inbox journal: unreadable line skipped"),
            }
            offset += len;
        }
    }

    fn index(&mut self, offset: u64, len: u64, from: String, id: String) {
        if let Some(old) = self.keys.insert((from.clone(), id.clone()), offset) {
            // Two lines for one key (not written by this version): the later one wins.
            if let Some(m) = self.live.remove(&old) {
                self.live_bytes -= m.len;
            }
        }
        self.live.insert(
            offset,
            Meta {
                from,
                id,
                offset,
                len,
            },
        );
        self.live_bytes += len;
    }

    fn unindex(&mut self, from: &str, id: &str) -> Option<Meta> {
        let offset = self.keys.remove(&(from.to_string(), id.to_string()))?;
        let m = self.live.remove(&offset)?;
        self.live_bytes -= m.len;
        Some(m)
    }

    /// The journal line that would store `e` (its length is what the quotas count).
    pub fn line(e: &T) -> std::io::Result<Vec<u8>> {
        line(&Record::In(Box::new(e)))
    }

    /// Whether `(from, id)` is in the inbox.
    pub fn contains(&self, from: &str, id: &str) -> bool {
        self.keys.contains_key(&(from.to_string(), id.to_string()))
    }

    /// Appends `line` (from [`Self::line`] for `e`), not yet durable (see [`Self::durable`]).
    pub fn append(&mut self, e: &T, line: &[u8]) -> std::io::Result<()> {
        let mut f: &File = &self.file;
        if let Err(err) = f.write_all(line) {
            // A partial line would glue the next one to it: cut it off.
            let _ = self.file.set_len(self.len);
            return Err(err);
        }
        let (from, id) = (self.key_of)(e);
        self.index(self.len, line.len() as u64, from, id);
        self.len += line.len() as u64;
        self.shared.written.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Completes when everything appended so far is durable: at once if it already is, else
    /// with the syncer's next group commit.
    pub fn durable(&self) -> Durable {
        let written = self.shared.written.load(Ordering::SeqCst);
        if self.shared.synced.load(Ordering::SeqCst) >= written {
            return Durable::ready();
        }
        let (tx, rx) = oneshot::channel();
        match self.requests.send(tx) {
            Ok(()) => Durable(Some(rx)),
            Err(_) => Durable(Some(oneshot::channel().1)),
        }
    }

    /// The live messages in arrival order.
    pub fn live(&self) -> impl DoubleEndedIterator<Item = &Meta> {
        self.live.values()
    }

    /// Bytes of live lines.
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// The stored message `m` (read back from the file).
    pub fn read(&self, m: &Meta) -> std::io::Result<T> {
        let mut buf = vec![0u8; m.len as usize];
        self.file.read_exact_at(&mut buf, m.offset)?;
        match serde_json::from_slice(&buf) {
            Ok(Record::In(e)) => Ok(*e),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("inbox journal: no message at offset {}", m.offset),
            )),
        }
    }

    /// Removes the messages `keys` (sender key, id) from the inbox, durably before it returns;
    /// rewrites the journal if dead lines now outweigh live ones.
    pub fn delete(&mut self, keys: &[Key]) -> std::io::Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::new();
        for (from, id) in keys {
            bytes.extend_from_slice(&line(&Record::<T>::Del(from.clone(), id.clone()))?);
        }
        let mut f: &File = &self.file;
        if let Err(e) = f.write_all(&bytes) {
            let _ = self.file.set_len(self.len);
            return Err(e);
        }
        self.len += bytes.len() as u64;
        self.sync_now()?;
        for (from, id) in keys {
            self.unindex(from, id);
        }
        self.maybe_compact()
    }

    /// Rewrites the journal with only the live messages when dead lines outweigh them.
    fn maybe_compact(&mut self) -> std::io::Result<()> {
        if self.len <= 2 * self.live_bytes + COMPACT_SLACK {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(self.live_bytes as usize);
        let metas: Vec<Meta> = self.live.values().cloned().collect();
        for m in &metas {
            let start = bytes.len();
            bytes.resize(start + m.len as usize, 0);
            self.file.read_exact_at(&mut bytes[start..], m.offset)?;
        }
        crate::state::paths::write_private_atomic(&self.path, &bytes)?;
        let file = Arc::new(open_append(&self.path)?);
        *self.shared.file.lock().expect("journal file") = file.clone();
        self.file = file;
        // Everything written so far is in the new file, durably.
        let written = self.shared.written.load(Ordering::SeqCst);
        self.shared.synced.fetch_max(written, Ordering::SeqCst);
        self.len = 0;
        self.live.clear();
        self.keys.clear();
        self.live_bytes = 0;
        for m in metas {
            self.index(self.len, m.len, m.from, m.id);
            self.len += m.len;
        }
        Ok(())
    }

    /// How many group commits the syncer thread has made (each one `fdatasync`).
    pub fn syncs(&self) -> u64 {
        self.shared.syncs.load(Ordering::Relaxed)
    }

    /// Makes everything written so far durable now, in this thread (start-up and clears,
    /// off the path of an ack).
    pub fn sync_now(&mut self) -> std::io::Result<()> {
        let written = self.shared.written.load(Ordering::SeqCst);
        self.file.sync_data()?;
        self.shared.synced.fetch_max(written, Ordering::SeqCst);
        Ok(())
    }
}

/// The syncer thread: one `fdatasync` per batch of requests (group commit).
fn sync_loop(shared: &Shared, rx: mpsc::Receiver<oneshot::Sender<std::io::Result<()>>>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        // Every request in the batch was sent after its writes: syncing now covers them.
        let target = shared.written.load(Ordering::SeqCst);
        let file = shared.file.lock().expect("journal file").clone();
        let result = if shared.synced.load(Ordering::SeqCst) >= target {
            Ok(())
        } else {
            shared.syncs.fetch_add(1, Ordering::Relaxed);
            file.sync_data()
        };
        if result.is_ok() {
            shared.synced.fetch_max(target, Ordering::SeqCst);
        } else if let Err(e) = &result {
            tracing::warn!(error = %e, "cannot sync the inbox journal");
        }
        for w in batch {
            let _ = w.send(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            });
        }
    }
}

fn line<T: Serialize>(r: &Record<T>) -> std::io::Result<Vec<u8>> {
    let mut l = serde_json::to_vec(r).map_err(std::io::Error::other)?;
    l.push(b'\n');
    Ok(l)
}

fn open_append(path: &Path) -> std::io::Result<File> {
    crate::state::files::open_private(path, crate::state::files::Access::Append)
}
