//! The registry's TLS listener: accepts connections (at most `tls_max_connections`), runs the
//! handshake within `tls_handshake_timeout_ms`, then one reader and one writer task per
//! connection. Readers hand each datagram, with the connection's address, to the runner
//! ([`Hub::recv`]); the runner hands back what the core sends to connection addresses
//! ([`Hub::route`]), which goes to that connection's bounded queue (full: dropped and counted).
//! A connection that sends no whole frame for `tls_idle_timeout_ms` is closed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

use super::framed::{read_frames, write_frames, StreamEnd};
use super::{conn_addr, conn_id, pin};
use crate::identity::Identity;
use crate::wire::stream::MAX_FRAME;

/// Limits of the TLS transport (registry config keys `tls_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsLimits {
    /// Most connections open at once; more are closed at accept.
    pub max_connections: usize,
    /// A connection that completes no frame for this long is closed (nodes send a keepalive
    /// every 25 s).
    pub idle_timeout: Duration,
    /// The TLS handshake must complete within this (slowloris).
    pub handshake_timeout: Duration,
    /// Datagrams queued towards one connection; more are dropped and counted.
    pub queue_frames: usize,
}

/// Default of `tls_max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default of `tls_idle_timeout_ms`.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 90_000;
/// Default of `tls_handshake_timeout_ms`.
pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// Default of `tls_queue_frames`.
pub const DEFAULT_QUEUE_FRAMES: usize = 1024;
/// Datagrams from all connections waiting for the core; a full queue slows the readers (TCP
/// flow control pushes back on the senders).
const INBOUND_QUEUE: usize = 4096;

impl Default for TlsLimits {
    fn default() -> Self {
        TlsLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: Duration::from_millis(DEFAULT_IDLE_TIMEOUT_MS),
            handshake_timeout: Duration::from_millis(DEFAULT_HANDSHAKE_TIMEOUT_MS),
            queue_frames: DEFAULT_QUEUE_FRAMES,
        }
    }
}

/// Counters of the TLS transport.
#[derive(Debug, Default)]
pub struct TlsCounters {
    /// Connections whose handshake completed.
    pub accepted: AtomicU64,
    /// Connections closed at accept because `max_connections` were open.
    pub refused_full: AtomicU64,
    /// Handshakes that failed or timed out.
    pub handshake_failed: AtomicU64,
    /// Connections closed for idleness or broken framing.
    pub closed_idle_or_bad: AtomicU64,
    /// Datagrams dropped because a connection's queue was full or it was gone.
    pub dropped: AtomicU64,
}

/// A snapshot of [`TlsCounters`] (for status and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsStats {
    /// See [`TlsCounters::accepted`].
    pub accepted: u64,
    /// See [`TlsCounters::refused_full`].
    pub refused_full: u64,
    /// See [`TlsCounters::handshake_failed`].
    pub handshake_failed: u64,
    /// See [`TlsCounters::closed_idle_or_bad`].
    pub closed_idle_or_bad: u64,
    /// See [`TlsCounters::dropped`].
    pub dropped: u64,
    /// Connections open now.
    pub open: u64,
}

type Outs = Arc<Mutex<HashMap<u64, mpsc::Sender<Vec<u8>>>>>;

/// The listener and its connections, as the runner sees them.
pub struct Hub {
    local: SocketAddr,
    inbound: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
    outs: Outs,
    counters: Arc<TlsCounters>,
    accept: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hub({})", self.local)
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// What every connection task shares.
struct Shared {
    acceptor: tokio_rustls::TlsAcceptor,
    limits: TlsLimits,
    inbound: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    outs: Outs,
    counters: Arc<TlsCounters>,
    next_id: AtomicU64,
}

impl Hub {
    /// Listens on `listen` (TCP) with a certificate bound to `identity`.
    pub async fn bind(
        listen: SocketAddr,
        identity: &Identity,
        limits: TlsLimits,
    ) -> Result<Hub, pin::TlsError> {
        let config = pin::server_config(identity)?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| pin::TlsError::Connect {
                what: format!("listen on TCP {listen}"),
                reason: e.to_string(),
            })?;
        let local = listener.local_addr().unwrap_or(listen);
        let (tx, inbound) = mpsc::channel(INBOUND_QUEUE);
        let outs: Outs = Default::default();
        let counters = Arc::new(TlsCounters::default());
        let shared = Arc::new(Shared {
            acceptor: tokio_rustls::TlsAcceptor::from(config),
            limits,
            inbound: tx,
            outs: Arc::clone(&outs),
            counters: Arc::clone(&counters),
            next_id: AtomicU64::new(1),
        });
        let accept = tokio::spawn(accept_loop(listener, shared));
        Ok(Hub {
            local,
            inbound,
            outs,
            counters,
            accept,
        })
    }

    /// The TCP address listened on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The next datagram from a connection, with the connection's address.
    pub async fn recv(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.inbound.recv().await
    }

    /// A datagram already waiting, without waiting.
    pub fn try_recv(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.inbound.try_recv().ok()
    }

    /// Takes out of `out` every datagram addressed to a connection and queues it there; what
    /// is left goes over UDP.
    pub fn route(&self, out: &mut Vec<(SocketAddr, Vec<u8>)>) {
        if !out.iter().any(|(to, _)| super::is_conn_range(to)) {
            return;
        }
        let outs = self.outs.lock();
        out.retain_mut(|(to, bytes)| {
            if !super::is_conn_range(to) {
                return true;
            }
            let sent = conn_id(to)
                .and_then(|id| outs.get(&id))
                .is_some_and(|q| q.try_send(std::mem::take(bytes)).is_ok());
            if !sent {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
            false
        });
    }

    /// The counters so far.
    pub fn stats(&self) -> TlsStats {
        let c = &self.counters;
        TlsStats {
            accepted: c.accepted.load(Ordering::Relaxed),
            refused_full: c.refused_full.load(Ordering::Relaxed),
            handshake_failed: c.handshake_failed.load(Ordering::Relaxed),
            closed_idle_or_bad: c.closed_idle_or_bad.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            open: self.outs.lock().len() as u64,
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(shared.limits.max_connections));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and the like: back off instead of spinning.
                tracing::debug!("TLS accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            shared.counters.refused_full.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            serve(tcp, peer, &shared).await;
            drop(permit);
        });
    }
}

/// One connection: handshake, then frames both ways until it ends.
async fn serve(tcp: TcpStream, peer: SocketAddr, shared: &Shared) {
    let c = &shared.counters;
    let tls =
        match tokio::time::timeout(shared.limits.handshake_timeout, shared.acceptor.accept(tcp))
            .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%peer, "TLS handshake failed: {e}");
                c.handshake_failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(_) => {
                c.handshake_failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
    c.accepted.fetch_add(1, Ordering::Relaxed);
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let addr = conn_addr(peer, id);
    let (tx, rx) = mpsc::channel(shared.limits.queue_frames.max(1));
    shared.outs.lock().insert(id, tx);
    let (r, w) = tokio::io::split(tls);
    let writer = tokio::spawn(write_frames(w, rx, None));
    let idle = shared.limits.idle_timeout;
    let end = read_frames(r, MAX_FRAME, idle, &shared.inbound, |d| (addr, d.to_vec())).await;
    if matches!(end, StreamEnd::Idle(_) | StreamEnd::Frame(_)) {
        c.closed_idle_or_bad.fetch_add(1, Ordering::Relaxed);
    }
    tracing::debug!(%peer, %addr, "TLS connection ended: {end}");
    shared.outs.lock().remove(&id);
    writer.abort();
}
