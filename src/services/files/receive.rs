//! The receiving side of one connection: offer → limits → accept from the verified offset →
//! data into the partial file (fsynced and recorded every `sync_every_mib`, without
//! stopping the stream) → SHA-256 check → `received/` → done.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::store::{decide_offer, hex, new_partial, PartialMeta, ReceivedFile, Store};
use super::wire::{
    write_control, Accept, Done, Frame, FrameKind, FrameReader, Offer, Progress, Refuse,
    RefuseCode, VERSION,
};
use super::writer::Writer;
use super::{Direction, FileError, Sender, Transfer, TransferState};
use crate::clock::unix_ms_now;
use crate::config::FilesConfig;

/// The longest a durable checkpoint waits, however few bytes came.
const SYNC_INTERVAL: Duration = Duration::from_secs(2);

/// One transfer's place: at most one connection writes its partial file; a newer connection
/// of the same transfer takes over from an older one (which may be waiting on a dead peer).
struct Slot {
    lock: Arc<tokio::sync::Mutex<()>>,
    generation: AtomicU64,
    cancel: Notify,
}

/// A connection's hold on its transfer's slot.
struct Hold {
    slot: Arc<Slot>,
    generation: u64,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Hold {
    /// Completes when a newer connection of the same transfer wants the slot.
    async fn superseded(&self) {
        loop {
            let n = self.slot.cancel.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if self.slot.generation.load(Ordering::SeqCst) != self.generation {
                return;
            }
            n.await;
        }
    }
}

/// The receiver: limits, slots and the live progress of incoming transfers.
pub struct Incoming {
    store: Store,
    limits: FilesConfig,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    live: Mutex<HashMap<String, u64>>,
    admit_lock: Mutex<()>,
}

impl Incoming {
    /// A receiver over `store`.
    pub fn new(store: Store, limits: FilesConfig) -> Self {
        Incoming {
            store,
            limits,
            slots: Mutex::new(HashMap::new()),
            live: Mutex::new(HashMap::new()),
            admit_lock: Mutex::new(()),
        }
    }

    fn stall(&self) -> Duration {
        Duration::from_secs(self.limits.stall_timeout_secs)
    }

    /// The partial files, with the live offset of those arriving now.
    pub fn transfers(&self) -> Vec<Transfer> {
        let live = self.live.lock().expect("live").clone();
        self.store
            .partials()
            .into_iter()
            .map(|m| {
                let now = live.get(&Store::stem(&m.from_address, &m.id)).copied();
                incoming_view(m, now)
            })
            .collect()
    }

    async fn hold(&self, key: &str) -> Result<Hold, FileError> {
        let slot = {
            let mut slots = self.slots.lock().expect("slots");
            slots
                .entry(key.to_string())
                .or_insert_with(|| {
                    Arc::new(Slot {
                        lock: Arc::new(tokio::sync::Mutex::new(())),
                        generation: AtomicU64::new(0),
                        cancel: Notify::new(),
                    })
                })
                .clone()
        };
        let generation = slot.generation.fetch_add(1, Ordering::SeqCst) + 1;
        slot.cancel.notify_waiters();
        let guard = tokio::time::timeout(self.stall() * 2, slot.lock.clone().lock_owned())
            .await
            .map_err(|_| FileError::Refused {
                code: RefuseCode::Busy,
                message: "another connection of this transfer is still open".into(),
            })?;
        Ok(Hold {
            slot,
            generation,
            _guard: guard,
        })
    }

    fn release(&self, key: &str, hold: Hold) {
        let mut slots = self.slots.lock().expect("slots");
        let slot = hold.slot.clone();
        drop(hold);
        // Ours and the map's: nobody else waits for it.
        if Arc::strong_count(&slot) == 2 {
            slots.remove(key);
        }
        self.live.lock().expect("live").remove(key);
    }

    /// The partial record to continue for `offer` (a new one, or the one kept from an earlier
    /// connection of the same file), or the refusal the limits call for.
    fn admit(&self, offer: &Offer, from: &Sender) -> Result<PartialMeta, (RefuseCode, String)> {
        let _one_at_a_time = self.admit_lock.lock().expect("admit");
        let io = |e: FileError| (RefuseCode::Io, e.to_string());
        let kept = self
            .store
            .load_partial(&from.address, &offer.id)
            .filter(|m| m.size == offer.size && m.from == from.key)
            // A hash given now and one given before must agree (either may be absent: a
            // sender that hashes while sending gives it at the end).
            .filter(|m| m.sha256.is_none() || offer.sha256.is_none() || m.sha256 == offer.sha256);
        if kept.is_none() {
            self.store.remove_partial(&from.address, &offer.id);
        }
        let usage = self.store.usage().map_err(io)?;
        let (have, reserved) = kept.as_ref().map_or((0, 0), |m| (m.offset, m.size));
        decide_offer(offer.size, have, reserved, usage, &self.limits)?;
        match kept {
            Some(m) => Ok(m),
            None => {
                let m = new_partial(offer, from, unix_ms_now());
                self.store.save_partial(&m).map_err(io)?;
                Ok(m)
            }
        }
    }

    /// Serves one connection from `from`: returns the file it completed, if any.
    pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        from: &Sender,
        mut s: S,
    ) -> Result<Option<ReceivedFile>, FileError> {
        let mut reader = FrameReader::default();
        let offer = match tokio::time::timeout(self.stall(), reader.next(&mut s))
            .await
            .map_err(|_| FileError::TimedOut("waiting for an offer"))??
        {
            Some(Frame::Offer(o)) => o,
            Some(_) => return Err(FileError::Malformed("expected an offer".into())),
            None => return Ok(None),
        };
        let key = Store::stem(&from.address, &offer.id);
        let hold = match self.hold(&key).await {
            Ok(h) => h,
            Err(FileError::Refused { code, message }) => {
                return refuse(&mut s, &offer.id, code, message).await.map(|_| None)
            }
            Err(e) => return Err(e),
        };
        let result = self.take(from, &offer, s, reader, &hold).await;
        self.release(&key, hold);
        result
    }

    async fn take<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        from: &Sender,
        offer: &Offer,
        mut s: S,
        mut reader: FrameReader,
        hold: &Hold,
    ) -> Result<Option<ReceivedFile>, FileError> {
        if let Some(f) = self.store.find_received(&from.key, &offer.id) {
            // Stored before; the sender missed our answer.
            let done = Done {
                v: VERSION,
                id: f.id,
                stored_as: f.name,
                sha256: f.sha256,
            };
            write_control(&mut s, FrameKind::Done, &done).await?;
            return Ok(None);
        }
        let meta = match self.admit(offer, from) {
            Ok(m) => m,
            Err((code, message)) => {
                tracing::warn!(from = %from.address, code = code.as_str(), "file refused");
                return refuse(&mut s, &offer.id, code, message).await.map(|_| None);
            }
        };
        let store = self.store.clone();
        let m = meta.clone();
        let (file, hash) = tokio::task::spawn_blocking(move || store.open_partial(&m))
            .await
            .map_err(|e| FileError::Malformed(e.to_string()))??;
        let accept = Accept {
            v: VERSION,
            id: offer.id.clone(),
            offset: meta.offset,
        };
        write_control(&mut s, FrameKind::Accept, &accept).await?;
        let offset = meta.offset;
        let mut rx = Stream {
            inc: self,
            meta,
            offered: offer.sha256.clone(),
            file: file.try_clone()?,
            writer: Some(Writer::start(file, hash, offset)),
            syncing: None,
        };
        let result = rx.run(&mut s, &mut reader, hold).await;
        rx.close().await;
        result
    }
}

async fn refuse<S: AsyncWrite + Unpin>(
    s: &mut S,
    id: &str,
    code: RefuseCode,
    message: String,
) -> Result<(), FileError> {
    let r = Refuse {
        v: VERSION,
        id: id.to_string(),
        code,
        message,
    };
    write_control(s, FrameKind::Refuse, &r).await
}

fn incoming_view(m: PartialMeta, live: Option<u64>) -> Transfer {
    Transfer {
        id: m.id,
        direction: Direction::Incoming,
        peer: m.from,
        peer_address: m.from_address,
        peer_hostname: m.from_hostname,
        name: m.name,
        path: None,
        size: m.size,
        offset: live.unwrap_or(m.offset).max(m.offset),
        bytes_sent: live.map_or(0, |l| l.saturating_sub(m.offset)),
        state: if live.is_some() {
            TransferState::Receiving
        } else {
            TransferState::Partial
        },
        error: None,
        sha256: m.sha256,
        stored_as: None,
        created_ms: m.started_ms,
        updated_ms: m.started_ms,
    }
}

/// One transfer's bytes arriving into its partial file.
struct Stream<'a> {
    inc: &'a Incoming,
    meta: PartialMeta,
    /// The hash this connection's offer gave; `None`: it comes in an `End` frame.
    offered: Option<String>,
    /// The partial file, for checkpoints (the writer thread writes through its own handle).
    file: std::fs::File,
    /// The writer thread (`None` once finished).
    writer: Option<Writer>,
    /// A checkpoint in flight: fsync and record, off the async threads; its offset.
    syncing: Option<JoinHandle<Result<u64, FileError>>>,
}

impl Stream<'_> {
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        s: &mut S,
        reader: &mut FrameReader,
        hold: &Hold,
    ) -> Result<Option<ReceivedFile>, FileError> {
        let key = Store::stem(&self.meta.from_address, &self.meta.id);
        let sync_bytes = self.inc.limits.sync_every_mib << 20;
        let mut offset = self.meta.offset;
        let (mut synced, mut last_sync) = (offset, Instant::now());
        while offset < self.meta.size {
            let frame = tokio::select! {
                f = tokio::time::timeout(self.inc.stall(), reader.next(s)) => f
                    .map_err(|_| FileError::TimedOut("waiting for file data"))??,
                _ = hold.superseded() => return Err(FileError::Superseded),
            };
            let n = match frame {
                Some(Frame::Data(d)) => d.len() as u64,
                None => return Err(FileError::Malformed("stream ended early".into())),
                Some(_) => return Err(FileError::Malformed("expected data".into())),
            };
            if offset + n > self.meta.size {
                return Err(FileError::Malformed("more data than offered".into()));
            }
            // The frame's own buffer goes to the writer thread (no copy); the reader reads
            // the next frame into one the writer is done with.
            let spare = self.writer.as_ref().map(Writer::spare).unwrap_or_default();
            if self.write(reader.take_payload(spare)).await.is_err() {
                let e = self
                    .stop_writer()
                    .await
                    .err()
                    .unwrap_or_else(|| std::io::Error::other("the writer stopped"));
                return self.write_failed(s, e).await;
            }
            offset += n;
            self.inc
                .live
                .lock()
                .expect("live")
                .insert(key.clone(), offset);
            if let Some(done) = self.checkpoint_done().await? {
                self.meta.offset = done;
                let p = Progress {
                    v: VERSION,
                    id: self.meta.id.clone(),
                    offset: done,
                };
                write_control(s, FrameKind::Progress, &p).await?;
            }
            if self.syncing.is_none()
                && (offset - synced >= sync_bytes || last_sync.elapsed() >= SYNC_INTERVAL)
            {
                let written = self.writer.as_ref().map_or(offset, Writer::written);
                self.start_checkpoint(written)?;
                (synced, last_sync) = (offset, Instant::now());
            }
        }
        self.finish(s, reader).await
    }

    /// After a connection that ended before the file was complete: everything queued is
    /// written, and what was written becomes the durable offset to resume from. No write of
    /// this connection lands after the slot is released.
    async fn close(&mut self) {
        let Some(w) = self.writer.take() else { return };
        let written = w.finish().await.is_ok();
        if let Some(h) = self.syncing.take() {
            let _ = h.await;
        }
        if !written {
            return;
        }
        // The writer wrote sequentially from the kept offset: the length is what it wrote.
        let len = self.file.metadata().map(|m| m.len()).unwrap_or(0);
        if len > self.meta.offset && self.start_checkpoint(len.min(self.meta.size)).is_ok() {
            if let Some(h) = self.syncing.take() {
                if let Ok(Ok(at)) = h.await {
                    self.meta.offset = at;
                }
            }
        }
    }

    async fn write(&mut self, chunk: Vec<u8>) -> Result<(), ()> {
        match &mut self.writer {
            Some(w) => w.write(chunk).await,
            None => Err(()),
        }
    }

    /// Waits for the writer thread to write everything queued: the hash of all the bytes.
    async fn stop_writer(&mut self) -> std::io::Result<Sha256> {
        match self.writer.take() {
            Some(w) => w.finish().await.map(|(_, h)| h),
            None => Err(std::io::Error::other("the writer stopped")),
        }
    }

    /// Fsyncs the data and records `offset` durably, in the background.
    fn start_checkpoint(&mut self, offset: u64) -> Result<(), FileError> {
        let file = self.file.try_clone()?;
        let store = self.inc.store.clone();
        let mut meta = self.meta.clone();
        self.syncing = Some(tokio::task::spawn_blocking(move || {
            file.sync_data()?;
            meta.offset = offset;
            store.save_partial(&meta)?;
            Ok(offset)
        }));
        Ok(())
    }

    /// The offset of a checkpoint that has completed since the last call, if one has.
    async fn checkpoint_done(&mut self) -> Result<Option<u64>, FileError> {
        match &self.syncing {
            Some(h) if h.is_finished() => {}
            _ => return Ok(None),
        }
        let h = self.syncing.take().expect("checked");
        h.await
            .map_err(|e| FileError::Malformed(e.to_string()))?
            .map(Some)
    }

    /// A write failed (a full disk): the durable offset stays, the sender is told the code.
    /// The connection is then drained briefly before it closes, so data the sender still
    /// had in flight does not turn the close into a reset that could discard the refusal.
    async fn write_failed<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        s: &mut S,
        e: std::io::Error,
    ) -> Result<Option<ReceivedFile>, FileError> {
        let code = if e.raw_os_error() == Some(libc::ENOSPC) {
            RefuseCode::DiskFull
        } else {
            RefuseCode::Io
        };
        tracing::warn!(error = %e, code = code.as_str(), "writing a received file failed");
        let msg = format!("the receiver cannot write the file: {e}");
        refuse(s, &self.meta.id, code, msg).await?;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = s.shutdown().await;
            let mut sink = [0u8; 64 * 1024];
            while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
        Err(e.into())
    }

    /// The hash the bytes must have: the offer's, or the one of the `End` frame that follows
    /// the last data frame.
    async fn wanted_hash<S: AsyncRead + Unpin>(
        &self,
        s: &mut S,
        reader: &mut FrameReader,
    ) -> Result<String, FileError> {
        if let Some(h) = &self.offered {
            return Ok(h.clone());
        }
        let frame = tokio::time::timeout(self.inc.stall(), reader.next(s))
            .await
            .map_err(|_| FileError::TimedOut("waiting for the end frame"))??;
        match frame {
            Some(Frame::End(e)) if e.id == self.meta.id => Ok(e.sha256),
            _ => Err(FileError::Malformed("expected the end frame".into())),
        }
    }

    /// All bytes are in: fsync, check the SHA-256, move into `received/`, say done.
    async fn finish<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        s: &mut S,
        reader: &mut FrameReader,
    ) -> Result<Option<ReceivedFile>, FileError> {
        let want = self.wanted_hash(s, reader).await?;
        let hash = match self.stop_writer().await {
            Ok(h) => h,
            Err(e) => return self.write_failed(s, e).await,
        };
        if let Some(h) = self.syncing.take() {
            let _ = h.await;
        }
        let got = hex(&hash.finalize());
        let (store, mut meta, file) = (
            self.inc.store.clone(),
            self.meta.clone(),
            self.file.try_clone()?,
        );
        if got != want {
            store.remove_partial(&meta.from_address, &meta.id);
            let msg = format!("the bytes hash to {got}, not to the offered {want}");
            refuse(s, &meta.id, RefuseCode::HashMismatch, msg).await?;
            return Ok(None);
        }
        meta.sha256 = Some(got.clone());
        let file = tokio::task::spawn_blocking(move || {
            file.sync_all()?;
            meta.offset = meta.size;
            store.finish(&meta, unix_ms_now())
        })
        .await
        .map_err(|e| FileError::Malformed(e.to_string()))??;
        let done = Done {
            v: VERSION,
            id: file.id.clone(),
            stored_as: file.name.clone(),
            sha256: got,
        };
        write_control(s, FrameKind::Done, &done).await?;
        Ok(Some(file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::files::wire::{encode_control, header, End, CHUNK};

    fn sender() -> Sender {
        Sender {
            key: "KEY".into(),
            address: "0a1b.2c3d.4e5f".into(),
            hostname: Some("node-a".into()),
        }
    }

    fn incoming(dir: &std::path::Path) -> Incoming {
        let limits = FilesConfig {
            min_free_disk: 0,
            sync_every_mib: 1,
            ..FilesConfig::default()
        };
        Incoming::new(Store::open(dir).unwrap(), limits)
    }

    fn offer(data: &[u8], sha: Option<String>) -> Offer {
        Offer {
            v: 1,
            id: "00112233445566778899aabbccddeeff".into(),
            name: "data.bin".into(),
            size: data.len() as u64,
            sha256: Some(sha.unwrap_or_else(|| hex(&Sha256::digest(data)))),
        }
    }

    /// An offer without a hash: the client sends it in an `End` frame after the data.
    fn hashless(data: &[u8]) -> Offer {
        Offer {
            sha256: None,
            ..offer(data, None)
        }
    }

    /// A sender over an in-memory pipe: offers, sends `data[from..upto]` from the accepted
    /// offset, then (if it sent everything) reads the verdict. Returns the accepted offset
    /// and the verdict.
    async fn client(
        inc: &Incoming,
        o: &Offer,
        data: &[u8],
        upto: usize,
    ) -> (u64, Option<Frame<'static>>) {
        client_ending(inc, o, data, upto, hex(&Sha256::digest(data))).await
    }

    /// [`client`], with the hash its `End` frame gives (sent only for an offer without one).
    async fn client_ending(
        inc: &Incoming,
        o: &Offer,
        data: &[u8],
        upto: usize,
        end: String,
    ) -> (u64, Option<Frame<'static>>) {
        let (mut peer, ours) = tokio::io::duplex(4 << 20);
        let me = sender();
        let serving = inc.serve(&me, ours);
        let talk = async move {
            use tokio::io::AsyncWriteExt;
            let mut r = FrameReader::default();
            peer.write_all(&encode_control(FrameKind::Offer, o).unwrap())
                .await
                .unwrap();
            let a = match r.next(&mut peer).await.unwrap() {
                Some(Frame::Accept(a)) => a,
                Some(Frame::Done(d)) => return (0, Some(Frame::Done(d))),
                other => panic!("not accepted: {other:?}"),
            };
            for c in data[a.offset as usize..upto].chunks(CHUNK) {
                peer.write_all(&header(FrameKind::Data, c.len()))
                    .await
                    .unwrap();
                peer.write_all(c).await.unwrap();
            }
            if upto < data.len() {
                return (a.offset, None);
            }
            if o.sha256.is_none() {
                let e = End {
                    v: 1,
                    id: o.id.clone(),
                    sha256: end,
                };
                peer.write_all(&encode_control(FrameKind::End, &e).unwrap())
                    .await
                    .unwrap();
            }
            loop {
                match r.next(&mut peer).await.unwrap() {
                    Some(Frame::Progress(_)) => continue,
                    Some(Frame::Done(d)) => return (a.offset, Some(Frame::Done(d))),
                    Some(Frame::Refuse(x)) => return (a.offset, Some(Frame::Refuse(x))),
                    other => panic!("{other:?}"),
                }
            }
        };
        let (_, got) = tokio::join!(serving, talk);
        got
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
    }

    #[tokio::test]
    async fn an_interrupted_transfer_resumes_from_a_durable_offset_and_verifies_end_to_end() {
        let dir = tempfile::tempdir().unwrap();
        let inc = incoming(dir.path());
        let d = data(5 << 20);
        let o = offer(&d, None);
        let (first, none) = client(&inc, &o, &d, 3 << 20).await;
        assert_eq!((first, none), (0, None));
        // Give the background checkpoint a moment to land, as a real restart would.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (resumed, verdict) = client(&inc, &o, &d, d.len()).await;
        assert!(
            (1 << 20..=3 << 20).contains(&resumed),
            "resumed at {resumed}"
        );
        assert!(matches!(verdict, Some(Frame::Done(ref x)) if x.stored_as == "data.bin"));
        let stored = std::fs::read(dir.path().join("received").join("data.bin")).unwrap();
        assert_eq!(stored, d);
        // A retry of a stored transfer is answered done again, not stored twice.
        let (_, again) = client(&inc, &o, &d, d.len()).await;
        assert!(matches!(again, Some(Frame::Done(_))), "{again:?}");
        assert_eq!(inc.store.received(false).unwrap().len(), 1);
    }

    #[tokio::test]
    async fn bytes_that_do_not_hash_to_the_offer_are_refused_and_never_reach_received() {
        let dir = tempfile::tempdir().unwrap();
        let inc = incoming(dir.path());
        let d = data(100_000);
        let o = offer(&d, Some("ab".repeat(32)));
        let (_, verdict) = client(&inc, &o, &d, d.len()).await;
        let Some(Frame::Refuse(r)) = verdict else {
            panic!("{verdict:?}")
        };
        assert_eq!(r.code, RefuseCode::HashMismatch);
        assert!(inc.store.partials().is_empty());
        assert_eq!(
            std::fs::read_dir(dir.path().join("received"))
                .unwrap()
                .count(),
            0
        );
    }

    #[tokio::test]
    async fn a_sender_that_hashes_while_sending_gives_the_hash_at_the_end_and_may_resume_either_way(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let inc = incoming(dir.path());
        let d = data(5 << 20);
        let (first, none) = client(&inc, &hashless(&d), &d, 3 << 20).await;
        assert_eq!((first, none), (0, None));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(inc.store.partials()[0].sha256, None);
        // Resumed by an offer that now has the hash (a sender that fell back to hashing
        // first): the partial file is kept, and verified against it.
        let (resumed, verdict) = client(&inc, &offer(&d, None), &d, d.len()).await;
        assert!(resumed >= 1 << 20, "resumed at {resumed}");
        let Some(Frame::Done(done)) = verdict else {
            panic!("{verdict:?}")
        };
        assert_eq!(done.sha256, hex(&Sha256::digest(&d)));
        assert_eq!(inc.store.received(false).unwrap()[0].sha256, done.sha256);

        // Hashless from start to end: the End frame's hash is checked.
        let d2 = data(300_000);
        let mut o = hashless(&d2);
        o.id = "ffeeddccbbaa99887766554433221100".into();
        let (_, verdict) = client(&inc, &o, &d2, d2.len()).await;
        assert!(matches!(verdict, Some(Frame::Done(_))), "{verdict:?}");

        // A wrong End hash is a mismatch: refused, nothing reaches received/.
        o.id = "0123456789abcdef0123456789abcdef".into();
        let (_, verdict) = client_ending(&inc, &o, &d2, d2.len(), "cd".repeat(32)).await;
        let Some(Frame::Refuse(r)) = verdict else {
            panic!("{verdict:?}")
        };
        assert_eq!(r.code, RefuseCode::HashMismatch);
        assert_eq!(inc.store.received(false).unwrap().len(), 2);
        assert!(inc.store.partials().is_empty());
    }
}
