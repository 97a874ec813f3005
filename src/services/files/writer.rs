//! The receiver's disk side: a blocking thread that writes arriving chunks into the partial
//! file and hashes them, fed through a bounded queue, so the async task keeps reading the
//! connection while the disk and SHA-256 work (memory stays bounded: at most [`QUEUE`]
//! chunks wait). It also starts the kernel's writeback of what it wrote every
//! [`WRITEBACK_BYTES`] (`sync_file_range`, which does not wait), so the durable checkpoints
//! and the final fsync find little left to write. Written chunks come back through
//! [`Writer::spare`] to be read into again: no allocation, page faults or zeroing per chunk.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

/// Chunks queued between the connection and the disk.
const QUEUE: usize = 16;
/// Bytes written between two writeback starts.
const WRITEBACK_BYTES: u64 = 8 << 20;

/// The writer thread of one connection's transfer.
pub struct Writer {
    tx: Option<mpsc::Sender<Vec<u8>>>,
    /// Chunks written, handed back for reuse (at most the few in circulation).
    /// (In a mutex, uncontended: the connection's task holds `&Writer` across awaits.)
    back: std::sync::Mutex<std::sync::mpsc::Receiver<Vec<u8>>>,
    written: Arc<AtomicU64>,
    done: tokio::task::JoinHandle<std::io::Result<(std::fs::File, Sha256)>>,
}

impl Writer {
    /// Writes into `file` (positioned at `offset`, with `hash` over the bytes before it).
    pub fn start(mut file: std::fs::File, mut hash: Sha256, offset: u64) -> Self {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(QUEUE);
        let (back_tx, back) = std::sync::mpsc::channel();
        let written = Arc::new(AtomicU64::new(offset));
        let w = written.clone();
        let done = tokio::task::spawn_blocking(move || {
            let (mut at, mut flushed) = (offset, offset);
            while let Some(chunk) = rx.blocking_recv() {
                file.write_all(&chunk)?;
                hash.update(&chunk);
                at += chunk.len() as u64;
                let _ = back_tx.send(chunk);
                w.store(at, Ordering::Release);
                if at - flushed >= WRITEBACK_BYTES {
                    start_writeback(&file, flushed, at - flushed);
                    flushed = at;
                }
            }
            Ok((file, hash))
        });
        Writer {
            tx: Some(tx),
            back: std::sync::Mutex::new(back),
            written,
            done,
        }
    }

    /// Queues `chunk`; `Err` when the thread stopped (a write failed: [`Self::finish`] says
    /// why).
    pub async fn write(&mut self, chunk: Vec<u8>) -> Result<(), ()> {
        match &self.tx {
            Some(tx) => tx.send(chunk).await.map_err(|_| ()),
            None => Err(()),
        }
    }

    /// A written chunk to read the next one into (its contents are stale), or an empty
    /// vector when none came back yet.
    pub fn spare(&self) -> Vec<u8> {
        let back = self.back.lock().expect("spare chunks");
        back.try_recv().unwrap_or_default()
    }

    /// The offset up to which bytes are in the file (not yet durable).
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// Waits until every queued chunk is written; the file and the hash of all its bytes, or
    /// the write error that stopped the thread.
    pub async fn finish(mut self) -> std::io::Result<(std::fs::File, Sha256)> {
        self.tx = None;
        (&mut self.done)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?
    }
}

/// Asks the kernel to start writing `len` bytes at `from` to disk, without waiting.
fn start_writeback(file: &std::fs::File, from: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor and plain integers; the call only schedules I/O.
    let _ = unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            from as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunks_are_written_and_hashed_in_order_after_the_kept_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        std::fs::write(&path, b"abc").unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.flush().unwrap();
        let mut w = Writer::start(f, Sha256::new_with_prefix(b"abc"), 3);
        let big = vec![7u8; (WRITEBACK_BYTES + 5) as usize];
        w.write(b"def".to_vec()).await.unwrap();
        w.write(big.clone()).await.unwrap();
        let (_, hash) = w.finish().await.unwrap();
        let mut want = b"abcdef".to_vec();
        want.extend_from_slice(&big);
        assert_eq!(std::fs::read(&path).unwrap(), want);
        assert_eq!(hash.finalize(), Sha256::digest(&want));
    }

    #[tokio::test]
    async fn a_failed_write_stops_the_thread_and_finish_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        std::fs::write(&path, b"").unwrap();
        // Read-only: every write fails.
        let f = std::fs::File::open(&path).unwrap();
        let mut w = Writer::start(f, Sha256::new(), 0);
        let _ = w.write(vec![1; 10]).await;
        for _ in 0..100 {
            if w.write(vec![1; 10]).await.is_err() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(w.write(vec![1; 10]).await.is_err());
        assert!(w.finish().await.is_err());
    }
}
