//! The sender's outbox: every message not yet acked by its recipient, in memory for the
//! delivery task and in one append-only journal on disk with **group commit**.
//!
//! - [`Outbox::put`] makes a message visible to the delivery task at once (delivery may start
//!   while it is being written) and returns a [`Commit`] that completes when the message is
//!   durable. One committer thread takes every record queued since its last turn, from all
//!   concurrent senders, appends them with one `write` and makes them durable with one
//!   `fdatasync`: N messages queued together cost one fsync, not 2N.
//! - [`Outbox::remove`] (after the recipient's ack) appends a removal record *without* an
//!   fsync: a removal lost in a crash only means one more delivery of a message the recipient
//!   already has, which it acks again without storing it twice (its dedupe record).
//!
//! On disk (`$PILOT_HOME/outbox/outbox.log`, 0600): one JSON object per line, `{"put":
//! OutboxEntry}` or `{"del": ID}`; replayed in order at start (a torn last line is skipped),
//! then rewritten with only the live messages. It is rewritten the same way when it holds more
//! than twice as many records as live messages (plus [`COMPACT_SLACK`]). Message files of the
//! earlier one-file-per-message outbox (`ID.json`) are taken into the journal at start.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::services::message_dedupe::valid_id;
use crate::services::message_store::{MessageError, OutboxEntry};

/// Records beyond twice the live messages before the journal is rewritten.
const COMPACT_SLACK: usize = 1024;
/// The journal's file name in the outbox directory.
const JOURNAL: &str = "outbox.log";

/// One journal line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Record {
    Put(Box<OutboxEntry>),
    Del(String),
}

/// What the committer thread is asked to do.
enum Op {
    /// Append this line and fsync before answering.
    Put(Vec<u8>, oneshot::Sender<std::io::Result<()>>),
    /// Append this line; no fsync of its own.
    Del(Vec<u8>),
}

/// Completes when a queued message is durable (or its write failed).
pub struct Commit(oneshot::Receiver<std::io::Result<()>>);

impl Commit {
    /// Waits for the group commit that carries this message.
    pub async fn wait(self) -> Result<(), MessageError> {
        match self.0.await {
            Ok(r) => Ok(r?),
            Err(_) => Err(MessageError::Io(std::io::Error::other(
                "the outbox writer stopped",
            ))),
        }
    }
}

/// The live messages, by id.
type Live = Arc<Mutex<HashMap<String, OutboxEntry>>>;

/// The persistent outbox (see the module documentation).
pub struct Outbox {
    live: Live,
    ops: Mutex<mpsc::Sender<Op>>,
}

impl Outbox {
    /// Opens (creating) the outbox in `dir`: replays its journal, takes in message files of
    /// the earlier format, rewrites the journal durably and starts the committer thread.
    pub fn open(dir: PathBuf) -> Result<Self, MessageError> {
        ensure_dir(&dir)?;
        let journal = dir.join(JOURNAL);
        let mut live = replay(&journal)?;
        let legacy = legacy_files(&dir);
        for (_, e) in &legacy {
            live.insert(e.message.id.clone(), e.clone());
        }
        rewrite(&journal, &live)?;
        for (path, _) in legacy {
            let _ = std::fs::remove_file(path);
        }
        let file =
            crate::state::files::open_private(&journal, crate::state::files::Access::Append)?;
        let live: Live = Arc::new(Mutex::new(live));
        let (tx, rx) = mpsc::channel();
        let committer = Committer {
            path: journal,
            file,
            records: live.lock().expect("outbox").len(),
            live: live.clone(),
        };
        std::thread::Builder::new()
            .name("pilot-outbox".into())
            .spawn(move || committer.run(rx))?;
        Ok(Outbox {
            live,
            ops: Mutex::new(tx),
        })
    }

    /// Queues `e`: visible to [`Self::pending`] at once, durable when the returned
    /// [`Commit`] completes.
    pub fn put(&self, e: &OutboxEntry) -> Result<Commit, MessageError> {
        let line = line(&Record::Put(Box::new(e.clone())))?;
        let (tx, rx) = oneshot::channel();
        // The map and the queue change together, so a removal is never queued before the
        // put it undoes.
        let mut live = self.live.lock().expect("outbox");
        live.insert(e.message.id.clone(), e.clone());
        if self.send(Op::Put(line, tx)).is_err() {
            live.remove(&e.message.id);
            return Err(MessageError::Io(std::io::Error::other(
                "the outbox writer stopped",
            )));
        }
        Ok(Commit(rx))
    }

    /// Every waiting message, oldest first (by queue time).
    pub fn pending(&self) -> Result<Vec<OutboxEntry>, MessageError> {
        let mut v: Vec<OutboxEntry> = self
            .live
            .lock()
            .expect("outbox")
            .values()
            .cloned()
            .collect();
        v.sort_by_key(|e| e.message.sent_ms);
        Ok(v)
    }

    /// Removes a delivered message (lazily durable, see the module documentation).
    pub fn remove(&self, id: &str) -> Result<(), MessageError> {
        if !valid_id(id) {
            return Ok(());
        }
        let mut live = self.live.lock().expect("outbox");
        if live.remove(id).is_some() {
            let l = line(&Record::Del(id.to_string()))?;
            let _ = self.send(Op::Del(l));
        }
        Ok(())
    }

    fn send(&self, op: Op) -> Result<(), mpsc::SendError<Op>> {
        self.ops.lock().expect("outbox queue").send(op)
    }
}

/// The thread that owns the journal file.
struct Committer {
    path: PathBuf,
    file: File,
    records: usize,
    live: Live,
}

impl Committer {
    /// Serves batches until the outbox is dropped.
    fn run(mut self, rx: mpsc::Receiver<Op>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            batch.extend(rx.try_iter());
            self.commit(batch);
        }
    }

    /// One group commit: one write, one fsync if any put is in it, then every put answered.
    fn commit(&mut self, batch: Vec<Op>) {
        let mut bytes = Vec::new();
        let mut waiters = Vec::new();
        for op in batch {
            match op {
                Op::Put(l, tx) => {
                    bytes.extend_from_slice(&l);
                    waiters.push(tx);
                }
                Op::Del(l) => bytes.extend_from_slice(&l),
            }
            self.records += 1;
        }
        let mut result = self.file.write_all(&bytes);
        if result.is_ok() && !waiters.is_empty() {
            result = self.file.sync_data();
        }
        for w in waiters {
            let _ = w.send(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            });
        }
        if let Err(e) = &result {
            tracing::warn!(error = %e, "cannot write the outbox journal");
        }
        self.maybe_compact();
    }

    /// Rewrites the journal with the live messages when removals dominate it.
    fn maybe_compact(&mut self) {
        let live = self.live.lock().expect("outbox");
        if self.records <= 2 * live.len() + COMPACT_SLACK {
            return;
        }
        let done = rewrite(&self.path, &live).and_then(|()| {
            crate::state::files::open_private(&self.path, crate::state::files::Access::Append)
        });
        match done {
            Ok(f) => (self.file, self.records) = (f, live.len()),
            Err(e) => tracing::warn!(error = %e, "cannot compact the outbox journal"),
        }
    }
}

fn line(r: &Record) -> Result<Vec<u8>, MessageError> {
    let mut l = serde_json::to_vec(r).map_err(|e| MessageError::Malformed(e.to_string()))?;
    l.push(b'\n');
    Ok(l)
}

fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The live messages the journal at `path` describes (none if it does not exist).
fn replay(path: &Path) -> std::io::Result<HashMap<String, OutboxEntry>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(e),
    };
    let mut live = HashMap::new();
    for l in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<Record>(l) {
            Ok(Record::Put(e)) => {
                live.insert(e.message.id.clone(), *e);
            }
            Ok(Record::Del(id)) => {
                live.remove(&id);
            }
            Err(_) => tracing::warn!("outbox journal: unreadable record skipped"),
        }
    }
    Ok(live)
}

/// Writes a journal holding exactly `live`, atomically and durably.
fn rewrite(path: &Path, live: &HashMap<String, OutboxEntry>) -> std::io::Result<()> {
    let mut v: Vec<&OutboxEntry> = live.values().collect();
    v.sort_by_key(|e| e.message.sent_ms);
    let mut bytes = Vec::new();
    for e in v {
        let l = line(&Record::Put(Box::new(e.clone())))
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        bytes.extend_from_slice(&l);
    }
    crate::state::paths::write_private_atomic(path, &bytes)
}

/// Message files of the one-file-per-message outbox (`ID.json`), with their messages.
fn legacy_files(dir: &Path) -> Vec<(PathBuf, OutboxEntry)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| {
            let e = serde_json::from_slice(&std::fs::read(&p).ok()?).ok()?;
            Some((p, e))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::message_store::{new_id, MessageType, WireMessage};

    fn entry(ms: u64) -> OutboxEntry {
        OutboxEntry {
            to: "k".into(),
            to_ipv6: "fdc5:7a3e:91b4::1".parse().unwrap(),
            message: WireMessage {
                v: 1,
                id: new_id(),
                kind: MessageType::Text,
                data: "hi".into(),
                sent_ms: ms,
                in_reply_to: None,
            },
            refused: None,
        }
    }

    #[tokio::test]
    async fn outbox_keeps_messages_until_removed_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let out = Outbox::open(dir.path().join("outbox")).unwrap();
        let (a, b) = (entry(5), entry(6));
        out.put(&a).unwrap().wait().await.unwrap();
        out.put(&b).unwrap().wait().await.unwrap();
        out.remove(&a.message.id).unwrap();
        // The removal is appended lazily: give the committer its turn before the reopen.
        out.put(&entry(7)).unwrap().wait().await.unwrap();
        drop(out);
        let reopened = Outbox::open(dir.path().join("outbox")).unwrap();
        let ids: Vec<String> = reopened
            .pending()
            .unwrap()
            .into_iter()
            .map(|e| e.message.id)
            .collect();
        assert_eq!(ids.len(), 2);
        assert_eq!(ids[0], b.message.id);
    }

    #[tokio::test]
    async fn a_queued_message_is_pending_before_its_commit_and_durable_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let out = Outbox::open(dir.path().join("outbox")).unwrap();
        let e = entry(1);
        let commit = out.put(&e).unwrap();
        assert_eq!(out.pending().unwrap(), vec![e.clone()]);
        commit.wait().await.unwrap();
        // What a crash right now would leave: the journal as written.
        let got = replay(&dir.path().join("outbox").join(JOURNAL)).unwrap();
        assert_eq!(got.get(&e.message.id), Some(&e));
    }

    #[tokio::test]
    async fn concurrent_puts_share_group_commits_and_removals_compact_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let out = Arc::new(Outbox::open(dir.path().join("outbox")).unwrap());
        let mut commits = Vec::new();
        for i in 0..3000 {
            let e = entry(i);
            commits.push(out.put(&e).unwrap());
            if i % 3 != 0 {
                out.remove(&e.message.id).unwrap();
            }
        }
        for c in commits {
            c.wait().await.unwrap();
        }
        // A batch compacts after it answers its puts: one more turn lets the last one finish.
        // The committer is serial, so every earlier removal is written once this put is
        // durable. (Removing it too would race: a removal is written lazily.)
        let last = entry(5000);
        out.put(&last).unwrap().wait().await.unwrap();
        let path = dir.path().join("outbox").join(JOURNAL);
        let lines = std::fs::read(&path).unwrap().split(|b| *b == b'\n').count();
        assert!(lines <= 2 * 1001 + COMPACT_SLACK + 3, "{lines} lines");
        let live = replay(&path).unwrap();
        assert_eq!(live.len(), 1001);
        assert!(live.contains_key(&last.message.id));
    }

    #[test]
    fn message_files_of_the_earlier_format_are_taken_in_and_a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let o = dir.path().join("outbox");
        std::fs::create_dir_all(&o).unwrap();
        let e = entry(3);
        let name = format!("{}.json", e.message.id);
        std::fs::write(o.join(&name), serde_json::to_vec(&e).unwrap()).unwrap();
        std::fs::write(o.join(JOURNAL), b"{\"put\": {\"to\"").unwrap();
        let out = Outbox::open(o.clone()).unwrap();
        assert_eq!(out.pending().unwrap(), vec![e]);
        assert!(!o.join(name).exists());
    }
}
