//! The sending side: a worker that runs the queued transfers (a few at a time) and retries
//! with backoff; one attempt offers the file, streams it from the receiver's offset in
//! [`CHUNK`]-sized frames read by a blocking reader through a small bounded queue (memory
//! stays bounded whatever the file's size), and waits for the receiver's verdict.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddrV6;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::outgoing::{stat, Outgoing};
use super::store::{hash_file, hex};
use super::wire::{
    header, write_control, Accept, Done, End, Frame, FrameKind, FrameReader, Offer, Progress,
    Refuse, CHUNK, FILE_PORT, HEADER, VERSION,
};
use super::{FileError, Files, Transfer, TransferError, TransferState};
use crate::clock::unix_ms_now;

/// Transfers sent at once.
const MAX_PARALLEL: usize = 4;
/// Retry backoff bounds.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Chunks read ahead of the network.
const READ_AHEAD: usize = 4;

/// The live progress of an outgoing transfer's running attempt.
#[derive(Debug, Clone, Copy, Default)]
pub struct Live {
    /// File bytes written to the network, over every attempt.
    pub bytes_sent: u64,
    /// The receiver's durable offset, as it last said.
    pub offset: u64,
}

impl Live {
    /// Shows this progress in `t`.
    pub fn apply(&self, t: &mut Transfer) {
        t.bytes_sent = t.bytes_sent.max(self.bytes_sent);
        t.offset = t.offset.max(self.offset);
    }
}

/// How an attempt ended, for the backoff.
enum Outcome {
    /// Done, or failed for good: no more attempts.
    Finished,
    /// Try again later; sooner if this attempt moved bytes.
    Retry { progressed: bool },
}

/// What the receiver says, owned.
enum Reply {
    Accept(Accept),
    Refuse(Refuse),
    Done(Done),
    Progress(Progress),
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The next retry's time and backoff after `outcome`, from the previous backoff.
fn backoff(prev: Option<Duration>, progressed: bool) -> Duration {
    match prev {
        Some(b) if !progressed => (b * 2).min(RETRY_MAX),
        _ => RETRY_MIN,
    }
}

impl Files {
    /// Runs queued transfers until the daemon stops.
    pub(super) async fn worker(self: Arc<Self>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<(String, Outcome)>();
        let mut running: HashSet<String> = HashSet::new();
        let mut next: HashMap<String, (Instant, Duration)> = HashMap::new();
        loop {
            self.start_due(&mut running, &next, &tx);
            let now = Instant::now();
            let wait = next
                .iter()
                .filter(|(id, _)| !running.contains(*id))
                .map(|(_, (t, _))| t.saturating_duration_since(now))
                .min()
                .unwrap_or(RETRY_MAX);
            tokio::select! {
                Some((id, outcome)) = rx.recv() => {
                    running.remove(&id);
                    match outcome {
                        Outcome::Finished => { next.remove(&id); }
                        Outcome::Retry { progressed } => {
                            let b = backoff(next.get(&id).map(|x| x.1), progressed);
                            next.insert(id, (Instant::now() + b, b));
                        }
                    }
                }
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    fn start_due(
        self: &Arc<Self>,
        running: &mut HashSet<String>,
        next: &HashMap<String, (Instant, Duration)>,
        tx: &mpsc::UnboundedSender<(String, Outcome)>,
    ) {
        let now = Instant::now();
        for o in self.outgoing.all().unwrap_or_default() {
            let id = o.transfer.id.clone();
            let due = next.get(&id).is_none_or(|(t, _)| *t <= now);
            if !o.is_pending() || running.contains(&id) || !due || running.len() >= MAX_PARALLEL {
                continue;
            }
            running.insert(id.clone());
            let (me, tx) = (self.clone(), tx.clone());
            tokio::spawn(async move {
                let outcome = me.attempt(o).await;
                let _ = tx.send((id, outcome));
            });
        }
    }

    /// One attempt; records how it ended.
    async fn attempt(&self, mut o: Outgoing) -> Outcome {
        let id = o.transfer.id.clone();
        let before = o.transfer.bytes_sent;
        let result = self.try_send(&mut o).await;
        if let Some(l) = self.live_out.lock().expect("live").remove(&id) {
            l.apply(&mut o.transfer);
        }
        let t = &mut o.transfer;
        t.updated_ms = unix_ms_now();
        let err = |code: &str, message: String| {
            Some(TransferError {
                code: code.into(),
                message,
            })
        };
        let outcome = match result {
            Ok(done) => {
                (t.state, t.offset, t.error) = (TransferState::Done, t.size, None);
                t.stored_as = Some(done.stored_as);
                // Hashed while sending: the receiver's hash is the one it checked against ours.
                t.sha256.get_or_insert(done.sha256);
                tracing::info!(id = %t.id, size = t.size, "file delivered");
                Outcome::Finished
            }
            Err(FileError::Refused { code, message }) => {
                t.error = err(code.as_str(), message);
                if code.is_final() {
                    t.state = TransferState::Failed;
                    Outcome::Finished
                } else {
                    t.state = TransferState::Refused;
                    Outcome::Retry { progressed: false }
                }
            }
            Err(FileError::BadFile(m)) => {
                let code = if m.contains("changed") {
                    "file_changed"
                } else {
                    "file_unreadable"
                };
                (t.state, t.error) = (TransferState::Failed, err(code, m));
                Outcome::Finished
            }
            Err(e) => {
                let code = if t.state == TransferState::Sending {
                    "interrupted"
                } else {
                    "unreachable"
                };
                (t.state, t.error) = (TransferState::Queued, err(code, e.to_string()));
                tracing::debug!(id = %t.id, error = %e, "file transfer attempt failed; will retry");
                Outcome::Retry {
                    progressed: t.bytes_sent > before,
                }
            }
        };
        if let Err(e) = self.outgoing.put(&o) {
            tracing::warn!(error = %e, "cannot record an outgoing transfer");
        }
        self.settled.notify_waiters();
        outcome
    }

    /// Fails (for good) when the file is not what it was at send time.
    fn check_unchanged(o: &Outgoing, path: &Path) -> Result<(), FileError> {
        let (size, mtime) = stat(path)?;
        if (size, mtime) != (o.transfer.size, o.mtime_ns) {
            return Err(FileError::BadFile(format!(
                "{} changed since send-file (size or modification time); send it again",
                path.display()
            )));
        }
        Ok(())
    }

    fn stall(&self) -> Duration {
        Duration::from_secs(self.limits.stall_timeout_secs)
    }

    async fn try_send(&self, o: &mut Outgoing) -> Result<Done, FileError> {
        let path = PathBuf::from(o.transfer.path.clone().unwrap_or_default());
        Self::check_unchanged(o, &path)?;
        let dst = SocketAddrV6::new(o.to_ipv6, FILE_PORT, 0, 0);
        let s = tokio::time::timeout(self.stall(), self.overlay.connect(dst))
            .await
            .map_err(|_| FileError::TimedOut("connecting to the peer"))??;
        let (rd, mut wr) = tokio::io::split(s);
        let (mut replies, _reader) = spawn_replies(rd);
        let offer = Offer {
            v: VERSION,
            id: o.transfer.id.clone(),
            name: o.transfer.name.clone(),
            size: o.transfer.size,
            // Known after a whole pass (or a fallback): else hashed while sending, in `End`.
            sha256: o.transfer.sha256.clone(),
        };
        write_control(&mut wr, FrameKind::Offer, &offer).await?;
        let offset = match self.reply(&mut replies).await {
            Ok(Reply::Accept(a)) if a.offset <= offer.size => a.offset,
            Ok(Reply::Done(d)) => return Ok(d),
            Ok(_) => return Err(FileError::Malformed("expected an accept".into())),
            Err(e) if offer.sha256.is_none() && matches!(e, FileError::Malformed(_)) => {
                return Err(self.hash_first(o, &path, e).await);
            }
            Err(e) => return Err(e),
        };
        let t = &mut o.transfer;
        (t.offset, t.state, t.error) = (offset, TransferState::Sending, None);
        self.outgoing.put(o)?;
        self.stream(o, &path, offset, &mut wr, &mut replies).await
    }

    /// A receiver that closed the connection on an offer without a hash may predate them:
    /// the file is hashed now, so the next attempt's offer carries the hash. Returns `err`.
    async fn hash_first(&self, o: &mut Outgoing, path: &Path, err: FileError) -> FileError {
        let p = path.to_path_buf();
        let hashed = tokio::task::spawn_blocking(move || hash_file(&p)).await;
        if let (Ok(Ok((sha, _))), Ok(())) = (hashed, Self::check_unchanged(o, path)) {
            tracing::debug!(id = %o.transfer.id, "the receiver closed on an offer without a hash; the next offer carries it");
            o.transfer.sha256 = Some(sha);
        }
        err
    }

    /// The receiver's next reply within the stall timeout; a refusal is an error.
    async fn reply(&self, replies: &mut Replies) -> Result<Reply, FileError> {
        match tokio::time::timeout(self.stall(), replies.recv()).await {
            Err(_) => Err(FileError::TimedOut("waiting for the receiver")),
            Ok(None) => Err(FileError::Malformed(
                "the receiver closed the connection".into(),
            )),
            Ok(Some(Err(e))) => Err(e),
            Ok(Some(Ok(Reply::Refuse(r)))) => Err(FileError::Refused {
                code: r.code,
                message: r.message,
            }),
            Ok(Some(Ok(r))) => Ok(r),
        }
    }

    fn progress(&self, id: &str, sent: u64, offset: Option<u64>) {
        let mut live = self.live_out.lock().expect("live");
        if let Some(l) = live.get_mut(id) {
            l.bytes_sent += sent;
            if let Some(o) = offset {
                l.offset = l.offset.max(o);
            }
        }
    }

    async fn stream<W: AsyncWrite + Unpin>(
        &self,
        o: &Outgoing,
        path: &Path,
        offset: u64,
        wr: &mut W,
        replies: &mut Replies,
    ) -> Result<Done, FileError> {
        let (id, size) = (o.transfer.id.as_str(), o.transfer.size);
        let live = Live {
            bytes_sent: o.transfer.bytes_sent,
            offset,
        };
        self.live_out
            .lock()
            .expect("live")
            .insert(id.to_string(), live);
        let hashing = o.transfer.sha256.is_none();
        let mut chunks = spawn_chunks(path.to_path_buf(), offset, size, hashing);
        let mut sent = offset;
        while sent < size {
            tokio::select! {
                c = chunks.rx.recv() => {
                    let c = c.ok_or_else(|| FileError::Malformed("the file reader stopped".into()))??;
                    let wrote = tokio::time::timeout(self.stall(), wr.write_all(&c))
                        .await
                        .map_err(|_| FileError::TimedOut("sending file data"))
                        .and_then(|r| r.map_err(FileError::from));
                    if let Err(e) = wrote {
                        return Err(refusal_after(replies, e).await);
                    }
                    let n = (c.len() - HEADER) as u64;
                    let _ = chunks.back.send(c);
                    sent += n;
                    self.progress(id, n, None);
                }
                r = replies.recv() => match r {
                    Some(Ok(Reply::Progress(p))) => self.progress(id, 0, Some(p.offset)),
                    Some(Ok(Reply::Refuse(r))) => return Err(FileError::Refused { code: r.code, message: r.message }),
                    Some(Err(e)) => return Err(e),
                    _ => return Err(FileError::Malformed("unexpected reply while sending".into())),
                },
            }
        }
        if let Some(hashed) = chunks.hashed.take() {
            let sha256 = hashed
                .await
                .map_err(|_| FileError::Malformed("the file reader stopped".into()))?;
            // The hash covers what was read now; the file must still be what was queued.
            Self::check_unchanged(o, path)?;
            let end = End {
                v: VERSION,
                id: id.to_string(),
                sha256,
            };
            write_control(wr, FrameKind::End, &end).await?;
        }
        wr.flush().await?;
        loop {
            match self.reply(replies).await? {
                Reply::Progress(p) => self.progress(id, 0, Some(p.offset)),
                Reply::Done(d) => return Ok(d),
                _ => return Err(FileError::Malformed("expected done".into())),
            }
        }
    }
}

type Replies = mpsc::Receiver<Result<Reply, FileError>>;

/// The receiver's refusal if one arrives shortly after a failed write (a full disk closes
/// the connection right after its refusal), else `err`.
async fn refusal_after(replies: &mut Replies, err: FileError) -> FileError {
    let wait = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(r) = replies.recv().await {
            if let Ok(Reply::Refuse(r)) = r {
                return Some(r);
            }
        }
        None
    });
    match wait.await {
        Ok(Some(r)) => FileError::Refused {
            code: r.code,
            message: r.message,
        },
        _ => err,
    }
}

/// Reads the receiver's frames in a task of its own (so a half-read frame is never dropped
/// by a `select!`); the task ends with the connection or when the receiver goes away.
fn spawn_replies<R: AsyncRead + Unpin + Send + 'static>(mut rd: R) -> (Replies, AbortOnDrop) {
    let (tx, rx) = mpsc::channel(16);
    let task = tokio::spawn(async move {
        let mut reader = FrameReader::default();
        loop {
            let r = match reader.next(&mut rd).await {
                Ok(Some(Frame::Accept(a))) => Ok(Reply::Accept(a)),
                Ok(Some(Frame::Refuse(r))) => Ok(Reply::Refuse(r)),
                Ok(Some(Frame::Done(d))) => Ok(Reply::Done(d)),
                Ok(Some(Frame::Progress(p))) => Ok(Reply::Progress(p)),
                Ok(Some(_)) => Err(FileError::Malformed("unexpected frame".into())),
                Ok(None) => return,
                Err(e) => Err(e),
            };
            let stop = r.is_err();
            if tx.send(r).await.is_err() || stop {
                return;
            }
        }
    });
    (rx, AbortOnDrop(task))
}

/// The file's chunks as a blocking thread reads them.
struct Chunks {
    /// Data frames (header included), in order.
    rx: mpsc::Receiver<std::io::Result<Vec<u8>>>,
    /// Frames sent, handed back to be read into again (no allocation or zeroing per frame).
    back: std::sync::mpsc::Sender<Vec<u8>>,
    /// The reader's guard.
    _reading: AbortOnDrop,
    /// When hashing: the file's SHA-256, once every byte was read.
    hashed: Option<oneshot::Receiver<String>>,
}

/// Reads `path` from `offset` to `size` in data frames (header included) on a blocking
/// thread, at most [`READ_AHEAD`] frames ahead, into the buffers handed back when it has any.
/// With `hashing`, it also hashes the whole file (the bytes before `offset` first, then each
/// chunk as it is read): one pass, not two.
fn spawn_chunks(path: PathBuf, offset: u64, size: u64, hashing: bool) -> Chunks {
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    let (back, recycled) = std::sync::mpsc::channel::<Vec<u8>>();
    let (hash_tx, hash_rx) = oneshot::channel();
    let task = tokio::task::spawn_blocking(move || {
        let run = || -> std::io::Result<Option<String>> {
            let mut f = std::fs::File::open(&path)?;
            let mut hash = hashing.then(Sha256::new);
            match &mut hash {
                Some(h) => hash_prefix(&mut f, offset, h)?,
                None => {
                    f.seek(SeekFrom::Start(offset))?;
                }
            }
            let mut left = size - offset;
            while left > 0 {
                let n = CHUNK.min(left as usize);
                let mut buf = recycled.try_recv().unwrap_or_default();
                buf.resize(HEADER + n, 0);
                buf[..HEADER].copy_from_slice(&header(FrameKind::Data, n));
                f.read_exact(&mut buf[HEADER..])?;
                if let Some(h) = &mut hash {
                    h.update(&buf[HEADER..]);
                }
                if tx.blocking_send(Ok(buf)).is_err() {
                    return Ok(None);
                }
                left -= n as u64;
            }
            Ok(hash.map(|h| hex(&h.finalize())))
        };
        match run() {
            Ok(Some(sha)) => {
                let _ = hash_tx.send(sha);
            }
            Ok(None) => {}
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
            }
        }
    });
    // A blocking task cannot be aborted once it runs; it stops when the receiver is dropped.
    let guard = tokio::spawn(async move {
        let _ = task.await;
    });
    Chunks {
        rx,
        back,
        _reading: AbortOnDrop(guard),
        hashed: hashing.then_some(hash_rx),
    }
}

/// Feeds the first `len` bytes of `f` to `h` (a resumed transfer hashed while sending).
fn hash_prefix(f: &mut std::fs::File, len: u64, h: &mut Sha256) -> std::io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    let mut left = len;
    while left > 0 {
        let n = CHUNK.min(left as usize);
        f.read_exact(&mut buf[..n])?;
        h.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_restarts_after_progress() {
        assert_eq!(backoff(None, false), RETRY_MIN);
        assert_eq!(
            backoff(Some(Duration::from_secs(4)), false),
            Duration::from_secs(8)
        );
        assert_eq!(backoff(Some(Duration::from_secs(20)), false), RETRY_MAX);
        assert_eq!(backoff(Some(Duration::from_secs(20)), true), RETRY_MIN);
    }
}
