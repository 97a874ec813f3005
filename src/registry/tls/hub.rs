//! The registry's TLS listener: accepts connections (at most `tls_max_connections`), runs the
//! handshake within `tls_handshake_timeout_ms`, then one reader and one writer task per
//! connection. Readers hand each datagram, with the connection's address, to the runner
//! ([`Hub::recv`]); the runner hands back what the core sends to connection addresses
//! ([`Hub::route`]), which goes to that connection's bounded queue (full: dropped and counted).
//! A connection that sends no whole frame for `tls_idle_timeout_ms` is closed.
//!
//! One port serves both wrappings: after the TLS handshake, ALPN `pilot-relay/1` means frames
//! on the stream, `http/1.1` a WebSocket upgrade ([`super::ws`]); without ALPN the first two
//! bytes decide (`GE` of `GET` is 0x4745, never a valid frame length).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

use futures_util::StreamExt;
use tokio::io::AsyncReadExt;

use super::framed::{read_frames_after, write_frames};
use super::{conn_addr, conn_id, pin, ws};
use crate::identity::Identity;
use crate::wire::stream::{ALPN, MAX_FRAME};

/// Limits of the TLS transport (registry config keys `tls_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsLimits {
    /// Most connections open at once; more are closed at accept.
    pub max_connections: usize,
    /// A connection that completes no frame for this long is closed (nodes send a keepalive
    /// every 25 s).
    pub idle_timeout: Duration,
    /// The TLS handshake, and the WebSocket upgrade if any, must complete within this
    /// (slowloris).
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
    /// Handshakes (TLS, or TLS and WebSocket upgrade) that failed or timed out.
    pub handshake_failed: AtomicU64,
    /// Connections closed for idleness or broken framing.
    pub closed_idle_or_bad: AtomicU64,
    /// Datagrams dropped because a connection's queue was full or it was gone.
    pub dropped: AtomicU64,
    /// Connections upgraded to WebSocket.
    pub websocket_accepted: AtomicU64,
    /// HTTP requests refused with an HTTP error (wrong path, no upgrade, wrong subprotocol).
    pub websocket_refused: AtomicU64,
    /// WebSocket connections open now.
    pub websocket_open: AtomicU64,
    /// Datagrams received from connections (keepalives not counted).
    pub frames_in: AtomicU64,
    /// Their bytes.
    pub bytes_in: AtomicU64,
    /// Datagrams queued towards connections.
    pub frames_out: AtomicU64,
    /// Their bytes.
    pub bytes_out: AtomicU64,
}

/// A snapshot of [`TlsCounters`] (for metrics, status and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
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
    /// See [`TlsCounters::websocket_accepted`].
    pub websocket_accepted: u64,
    /// See [`TlsCounters::websocket_refused`].
    pub websocket_refused: u64,
    /// See [`TlsCounters::websocket_open`].
    pub websocket_open: u64,
    /// See [`TlsCounters::frames_in`].
    pub frames_in: u64,
    /// See [`TlsCounters::bytes_in`].
    pub bytes_in: u64,
    /// See [`TlsCounters::frames_out`].
    pub frames_out: u64,
    /// See [`TlsCounters::bytes_out`].
    pub bytes_out: u64,
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
        let (mut frames, mut sent_bytes, mut dropped) = (0, 0, 0);
        out.retain_mut(|(to, bytes)| {
            if !super::is_conn_range(to) {
                return true;
            }
            let len = bytes.len() as u64;
            let sent = conn_id(to)
                .and_then(|id| outs.get(&id))
                .is_some_and(|q| q.try_send(std::mem::take(bytes)).is_ok());
            if sent {
                frames += 1;
                sent_bytes += len;
            } else {
                dropped += 1;
            }
            false
        });
        let c = &self.counters;
        c.frames_out.fetch_add(frames, Ordering::Relaxed);
        c.bytes_out.fetch_add(sent_bytes, Ordering::Relaxed);
        c.dropped.fetch_add(dropped, Ordering::Relaxed);
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
            websocket_accepted: c.websocket_accepted.load(Ordering::Relaxed),
            websocket_refused: c.websocket_refused.load(Ordering::Relaxed),
            websocket_open: c.websocket_open.load(Ordering::Relaxed),
            frames_in: c.frames_in.load(Ordering::Relaxed),
            bytes_in: c.bytes_in.load(Ordering::Relaxed),
            frames_out: c.frames_out.load(Ordering::Relaxed),
            bytes_out: c.bytes_out.load(Ordering::Relaxed),
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

type Tls = tokio_rustls::server::TlsStream<TcpStream>;

/// A connection past its handshake, in one of the two wrappings.
enum Opened {
    /// Frames on the TLS stream, whose first bytes (read to tell the wrappings apart) are
    /// these.
    Raw(Box<Tls>, Vec<u8>),
    /// Frames in binary WebSocket messages.
    WebSocket(Box<tokio_tungstenite::WebSocketStream<Tls>>),
}

/// The TLS handshake and, for a WebSocket, the upgrade; counted. `None`: refused or failed.
async fn open(tcp: TcpStream, peer: SocketAddr, shared: &Shared) -> Option<Opened> {
    let c = &shared.counters;
    let mut tls = match shared.acceptor.accept(tcp).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(%peer, "TLS handshake failed: {e}");
            c.handshake_failed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
    };
    c.accepted.fetch_add(1, Ordering::Relaxed);
    let mut prefix = Vec::new();
    let http = match tls.get_ref().1.alpn_protocol() {
        Some(p) => p != ALPN,
        None => {
            let mut first = [0u8; 2];
            tls.read_exact(&mut first).await.ok()?;
            prefix.extend_from_slice(&first);
            &first == b"GE"
        }
    };
    if !http {
        return Some(Opened::Raw(Box::new(tls), prefix));
    }
    match ws::accept(tls, &prefix).await {
        Ok(s) => {
            c.websocket_accepted.fetch_add(1, Ordering::Relaxed);
            Some(Opened::WebSocket(Box::new(s)))
        }
        Err(e) => {
            tracing::debug!(%peer, "WebSocket upgrade refused: {e}");
            c.websocket_refused.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// One connection: handshake, then frames both ways until it ends.
async fn serve(tcp: TcpStream, peer: SocketAddr, shared: &Shared) {
    let c = &shared.counters;
    let limit = shared.limits.handshake_timeout;
    let opened = match tokio::time::timeout(limit, open(tcp, peer, shared)).await {
        Ok(Some(o)) => o,
        Ok(None) => return,
        Err(_) => {
            c.handshake_failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let addr = conn_addr(peer, id);
    let (tx, rx) = mpsc::channel(shared.limits.queue_frames.max(1));
    shared.outs.lock().insert(id, tx);
    let idle = shared.limits.idle_timeout;
    let wrap = |d: &[u8]| {
        c.frames_in.fetch_add(1, Ordering::Relaxed);
        c.bytes_in.fetch_add(d.len() as u64, Ordering::Relaxed);
        (addr, d.to_vec())
    };
    let end = match opened {
        Opened::Raw(tls, prefix) => {
            let (r, w) = tokio::io::split(tls);
            let writer = tokio::spawn(write_frames(w, rx, None));
            let end = read_frames_after(&prefix, r, MAX_FRAME, idle, &shared.inbound, wrap).await;
            writer.abort();
            end
        }
        Opened::WebSocket(s) => {
            c.websocket_open.fetch_add(1, Ordering::Relaxed);
            let (w, r) = s.split();
            let writer = tokio::spawn(ws::write_messages(w, rx, None));
            let end = ws::read_messages(r, MAX_FRAME, idle, &shared.inbound, wrap).await;
            writer.abort();
            c.websocket_open.fetch_sub(1, Ordering::Relaxed);
            end
        }
    };
    if end.is_misbehaviour() {
        c.closed_idle_or_bad.fetch_add(1, Ordering::Relaxed);
    }
    tracing::debug!(%peer, %addr, "TLS connection ended: {end}");
    shared.outs.lock().remove(&id);
}
