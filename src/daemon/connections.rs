//! The streams the daemon holds for API clients (`connect`, `listen` and the verbs built on
//! them: `send`, `recv`, `bench`): each is wrapped in [`Tracked`], which counts its bytes and
//! lists it in the process-wide table until it ends. `disconnect ID` aborts one: its next
//! read or write fails, the pump ends, and both the overlay connection and the API
//! connection close.

use std::collections::BTreeMap;
use std::io;
use std::net::Ipv6Addr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::api::types::ConnectionView;
use crate::error::{ErrorCode, PilotError};

/// One stream's shared state.
struct Entry {
    service: &'static str,
    peer: Ipv6Addr,
    port: u16,
    started: Instant,
    rx: AtomicU64,
    tx: AtomicU64,
    aborted: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
}

fn table() -> &'static Mutex<BTreeMap<u64, Arc<Entry>>> {
    static T: OnceLock<Mutex<BTreeMap<u64, Arc<Entry>>>> = OnceLock::new();
    T.get_or_init(|| Mutex::new(BTreeMap::new()))
}

static NEXT: AtomicU64 = AtomicU64::new(1);

/// A stream listed in the table while it lives.
pub struct Tracked<S> {
    id: u64,
    entry: Arc<Entry>,
    inner: S,
}

impl<S> Tracked<S> {
    /// Lists `inner` as a `service` stream with `peer` on `port`.
    pub fn new(inner: S, service: &'static str, peer: Ipv6Addr, port: u16) -> Self {
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(Entry {
            service,
            peer,
            port,
            started: Instant::now(),
            rx: AtomicU64::new(0),
            tx: AtomicU64::new(0),
            aborted: AtomicBool::new(false),
            wakers: Mutex::new(Vec::new()),
        });
        if let Ok(mut t) = table().lock() {
            t.insert(id, entry.clone());
        }
        Tracked { id, entry, inner }
    }

    /// Fails with `ConnectionAborted` once disconnected, remembering the waker otherwise.
    fn check(&self, cx: &Context<'_>) -> io::Result<()> {
        if self.entry.aborted.load(Ordering::Acquire) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "disconnected",
            ));
        }
        if let Ok(mut w) = self.entry.wakers.lock() {
            if !w.iter().any(|x| x.will_wake(cx.waker())) {
                w.push(cx.waker().clone());
            }
        }
        Ok(())
    }
}

impl<S> Drop for Tracked<S> {
    fn drop(&mut self) {
        if let Ok(mut t) = table().lock() {
            t.remove(&self.id);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check(cx)?;
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        self.entry.rx.fetch_add(n, Ordering::Relaxed);
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.entry.tx.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Every stream held now, by id.
pub fn list() -> Vec<ConnectionView> {
    let Ok(t) = table().lock() else {
        return Vec::new();
    };
    t.iter()
        .map(|(id, e)| ConnectionView {
            id: *id,
            service: e.service.to_string(),
            peer_ipv6: e.peer,
            port: e.port,
            rx_bytes: e.rx.load(Ordering::Relaxed),
            tx_bytes: e.tx.load(Ordering::Relaxed),
            age_secs: e.started.elapsed().as_secs(),
        })
        .collect()
}

/// Aborts stream `id`; `not_found` if no such stream is held.
pub fn disconnect(id: u64) -> Result<ConnectionView, PilotError> {
    let view = list().into_iter().find(|c| c.id == id);
    let entry = table().lock().ok().and_then(|t| t.get(&id).cloned());
    let (Some(view), Some(entry)) = (view, entry) else {
        return Err(PilotError::new(
            ErrorCode::NotFound,
            format!("no connection {id}"),
            "`pilotctl connections` lists them",
        ));
    };
    entry.aborted.store(true, Ordering::Release);
    if let Ok(mut w) = entry.wakers.lock() {
        for waker in w.drain(..) {
            waker.wake();
        }
    }
    Ok(view)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_stream_is_listed_with_its_bytes_until_dropped_and_a_disconnect_aborts_it() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut t = Tracked::new(a, "connect", Ipv6Addr::LOCALHOST, 7);
        let id = t.id;
        t.write_all(b"hello").await.unwrap();
        b.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 2];
        t.read_exact(&mut buf).await.unwrap();
        let c = list().into_iter().find(|c| c.id == id).unwrap();
        assert_eq!((c.tx_bytes, c.rx_bytes, c.port), (5, 2, 7));
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 1];
            t.read(&mut buf).await
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        disconnect(id).unwrap();
        let r = reader.await.unwrap();
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::ConnectionAborted);
        assert!(list().iter().all(|c| c.id != id), "dropped, unlisted");
        assert_eq!(disconnect(id).unwrap_err().code, ErrorCode::NotFound);
    }
}
