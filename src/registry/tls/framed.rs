//! Frames on an async byte stream: a reader that yields datagrams with an idle deadline, and a
//! writer that coalesces queued datagrams into one write (one TLS record for many frames).
//! [`super::ws`] carries the same frames in WebSocket messages and shares the coalescing.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::wire::stream::{self, Decoder, FrameError};

/// Bytes asked for per read.
const READ_CHUNK: usize = 32 * 1024;
/// Most bytes coalesced into one write.
const WRITE_BATCH: usize = 64 * 1024;

/// Why a framed stream ended.
#[derive(Debug, thiserror::Error)]
pub enum StreamEnd {
    /// The peer closed the stream.
    #[error("closed by the peer")]
    Closed,
    /// No whole frame arrived within the idle timeout.
    #[error("idle for {0:?}")]
    Idle(Duration),
    /// The peer broke the framing.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The stream failed.
    #[error("stream error: {0}")]
    Io(#[from] std::io::Error),
    /// Whoever takes the datagrams is gone.
    #[error("the receiver stopped")]
    Stopped,
    /// The peer broke the WebSocket protocol (a text message, a message over the maximum).
    #[error("WebSocket error: {0}")]
    WebSocket(String),
}

impl StreamEnd {
    /// Whether the peer broke a rule (or fell silent), as opposed to closing or failing.
    pub fn is_misbehaviour(&self) -> bool {
        matches!(
            self,
            StreamEnd::Idle(_) | StreamEnd::Frame(_) | StreamEnd::WebSocket(_)
        )
    }
}

/// Reads frames from `r` and sends each non-empty datagram, made into a `T` by `wrap`, on
/// `deliver`, until the stream ends, no whole frame (keepalives count) arrives for `idle`, or
/// the receiver is gone. A full `deliver` queue stops reading (TCP flow control pushes back).
pub async fn read_frames<R, T, F>(
    r: R,
    max_frame: usize,
    idle: Duration,
    deliver: &mpsc::Sender<T>,
    wrap: F,
) -> StreamEnd
where
    R: AsyncRead + Unpin,
    F: Fn(&[u8]) -> T,
{
    read_frames_after(&[], r, max_frame, idle, deliver, wrap).await
}

/// [`read_frames`] for a stream whose first bytes, `prefix`, were already read (to tell the
/// transport's wrappings apart).
pub async fn read_frames_after<R, T, F>(
    prefix: &[u8],
    mut r: R,
    max_frame: usize,
    idle: Duration,
    deliver: &mpsc::Sender<T>,
    wrap: F,
) -> StreamEnd
where
    R: AsyncRead + Unpin,
    F: Fn(&[u8]) -> T,
{
    let mut dec = Decoder::new(max_frame);
    dec.push(prefix);
    let mut deadline = tokio::time::Instant::now() + idle;
    loop {
        loop {
            match dec.next() {
                Err(e) => return StreamEnd::Frame(e),
                Ok(None) => break,
                Ok(Some(f)) => {
                    deadline = tokio::time::Instant::now() + idle;
                    if !f.is_empty() && deliver.send(wrap(f)).await.is_err() {
                        return StreamEnd::Stopped;
                    }
                }
            }
        }
        let spare = dec.spare(READ_CHUNK);
        let n = match tokio::time::timeout_at(deadline, r.read(spare)).await {
            Err(_) => return StreamEnd::Idle(idle),
            Ok(Err(e)) => return StreamEnd::Io(e),
            Ok(Ok(0)) => return StreamEnd::Closed,
            Ok(Ok(n)) => n,
        };
        dec.filled(READ_CHUNK, n);
    }
}

/// Fills `buf` (cleared first) with what a writer sends next: the next datagram framed,
/// followed by whatever else is queued until `buf` holds at least `limit` bytes (it never
/// exceeds `limit` plus one frame), or a keepalive frame when nothing was queued for
/// `keepalive` (if set). `false` when the queue closed: end the stream.
pub(super) async fn next_batch(
    rx: &mut mpsc::Receiver<Vec<u8>>,
    keepalive: Option<Duration>,
    buf: &mut Vec<u8>,
    limit: usize,
) -> bool {
    let got = match keepalive {
        Some(k) => match tokio::time::timeout(k, rx.recv()).await {
            Ok(d) => d,
            Err(_) => {
                buf.clear();
                buf.extend_from_slice(&stream::KEEPALIVE);
                return true;
            }
        },
        None => rx.recv().await,
    };
    let Some(first) = got else {
        return false;
    };
    buf.clear();
    // Oversized datagrams cannot be framed: they are dropped (nothing sends them).
    let _ = stream::encode(&first, buf);
    while buf.len() < limit {
        match rx.try_recv() {
            Ok(d) => {
                let _ = stream::encode(&d, buf);
            }
            Err(_) => break,
        }
    }
    true
}

/// Writes the datagrams queued on `rx` to `w` as frames, many per write; a keepalive frame when
/// nothing was written for `keepalive` (if set). Ends when the queue closes or a write fails.
pub async fn write_frames<W>(
    mut w: W,
    mut rx: mpsc::Receiver<Vec<u8>>,
    keepalive: Option<Duration>,
) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(WRITE_BATCH + stream::MAX_FRAME + 2);
    while next_batch(&mut rx, keepalive, &mut buf, WRITE_BATCH).await {
        w.write_all(&buf).await?;
        w.flush().await?;
    }
    let _ = w.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn queued_datagrams_arrive_as_frames_and_silence_ends_the_reader() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (tx, rx) = mpsc::channel(16);
        let writer = tokio::spawn(write_frames(a, rx, None));
        for i in 0..10u8 {
            tx.send(vec![i; 100 + usize::from(i)]).await.unwrap();
        }
        let (out, mut got_rx) = mpsc::channel(64);
        let end = read_frames(b, 2048, Duration::from_millis(200), &out, |f| f.to_vec()).await;
        assert!(matches!(end, StreamEnd::Idle(_)), "{end}");
        let mut got = Vec::new();
        while let Ok(f) = got_rx.try_recv() {
            got.push(f);
        }
        assert_eq!(got.len(), 10);
        assert!(got
            .iter()
            .enumerate()
            .all(|(i, f)| f.len() == 100 + i && f[0] == i as u8));
        drop(tx);
        writer.await.unwrap().unwrap_or(());
    }

    #[tokio::test]
    async fn keepalives_hold_an_idle_stream_open() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (tx, rx) = mpsc::channel::<Vec<u8>>(1);
        tokio::spawn(write_frames(a, rx, Some(Duration::from_millis(20))));
        let (out, _keep) = mpsc::channel(8);
        let reader = tokio::spawn(async move {
            read_frames(b, 2048, Duration::from_millis(100), &out, |f| f.to_vec()).await
        });
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!reader.is_finished(), "keepalives count as frames");
        drop(tx);
        assert!(matches!(reader.await.unwrap(), StreamEnd::Closed));
    }
}
