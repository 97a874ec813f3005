//! The registry process: a tokio UDP loop around the sans-IO [`Registry`] core with the redb
//! store. All protocol decisions live in the core; this file only moves datagrams, reads the
//! clock, ticks timers, logs, and stops gracefully on SIGTERM or Ctrl-C.
//!
//! `pilotctl registry run --listen ADDR:PORT --state DIR [--config FILE] [--store URL]` calls
//! [`run_registry_with_config`].
//!
//! With a PostgreSQL store (a cluster), the runner also does the cluster's I/O: it applies the
//! other instances' changes to the core as they arrive (`Registry::apply_remote`) and sends
//! what they mean for nodes attached here from its own socket. Every few seconds it writes
//! its status (`status.json` in the state directory, and `pilot_instances` in the database),
//! which `pilotctl registry status` shows.

mod batch;
mod status;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tokio::net::UdpSocket;

use super::pg::{ClusterEvent, Notifications, PgHandle, PgStore};
use super::server::{Limits, Registry};
use super::store::{RedbStore, Store, StoreError};
use super::writer::{BatchingStore, WRITE_QUEUE};

pub use self::status::{InstanceStatus, STATUS_FILE};
use crate::clock::unix_ms_now;
use crate::identity::{Identity, PublicKey};
use std::sync::Arc;

/// The registry's identity key file inside its state directory.
pub const REGISTRY_KEY_FILE: &str = "registry.key";

/// The registry's configuration file (`config/registry.toml` is a commented example).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// UDP address to listen on.
    pub listen: SocketAddr,
    /// Directory holding `registry.redb`.
    pub state_dir: PathBuf,
    /// Receive buffer of the UDP socket (bytes): room for bursts while the loop is busy.
    #[serde(default = "default_recv_buffer")]
    pub recv_buffer_bytes: usize,
    /// Where the registry keeps its state: `redb` (default: `registry.redb` in the state
    /// directory) or a PostgreSQL connection string (`postgres://...`) shared by the instances
    /// of a cluster.
    #[serde(default)]
    pub store: Option<String>,
    /// This instance's name, unique in a cluster (default: the listen address).
    #[serde(default)]
    pub instance: Option<String>,
    /// The registry's key file (default: `registry.key` in the state directory). Every
    /// instance of a cluster loads the same key (copy the file); it is never in the database.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Bounds and rates.
    #[serde(default)]
    pub limits: Limits,
    /// How log lines look: `text` (default) or `json`.
    #[serde(default)]
    pub log_format: crate::config::LogFormat,
    /// The Prometheus metrics endpoint (off unless `listen` is set).
    #[serde(default)]
    pub metrics: crate::config::MetricsConfig,
    /// TCP address of the TLS transport (issue 14; 443 in production); off unless set.
    #[serde(default)]
    pub tls_listen: Option<SocketAddr>,
    /// Most TLS connections open at once.
    #[serde(default = "default_tls_max_connections")]
    pub tls_max_connections: usize,
    /// A TLS connection that completes no frame for this long is closed (ms).
    #[serde(default = "default_tls_idle_timeout_ms")]
    pub tls_idle_timeout_ms: u64,
    /// The TLS handshake must complete within this (ms).
    #[serde(default = "default_tls_handshake_timeout_ms")]
    pub tls_handshake_timeout_ms: u64,
    /// Datagrams queued towards one TLS connection; more are dropped and counted.
    #[serde(default = "default_tls_queue_frames")]
    pub tls_queue_frames: usize,
}

fn default_tls_max_connections() -> usize {
    super::tls::hub::DEFAULT_MAX_CONNECTIONS
}
fn default_tls_idle_timeout_ms() -> u64 {
    super::tls::hub::DEFAULT_IDLE_TIMEOUT_MS
}
fn default_tls_handshake_timeout_ms() -> u64 {
    super::tls::hub::DEFAULT_HANDSHAKE_TIMEOUT_MS
}
fn default_tls_queue_frames() -> usize {
    super::tls::hub::DEFAULT_QUEUE_FRAMES
}

/// Default receive buffer of the registry socket: 4 MiB, about 25,000 requests.
pub const DEFAULT_RECV_BUFFER: usize = 4 << 20;

fn default_recv_buffer() -> usize {
    DEFAULT_RECV_BUFFER
}

/// Most datagrams handled in one turn of the loop before timers, shutdown and the other
/// instances' changes get a turn (a relay burst cannot hold them back longer).
const TURN_BUDGET: usize = 4096;

impl RegistryConfig {
    /// A configuration with default limits.
    pub fn new(listen: SocketAddr, state_dir: PathBuf) -> Self {
        RegistryConfig {
            listen,
            state_dir,
            recv_buffer_bytes: DEFAULT_RECV_BUFFER,
            store: None,
            instance: None,
            key_file: None,
            limits: Limits::default(),
            log_format: Default::default(),
            metrics: Default::default(),
            tls_listen: None,
            tls_max_connections: default_tls_max_connections(),
            tls_idle_timeout_ms: default_tls_idle_timeout_ms(),
            tls_handshake_timeout_ms: default_tls_handshake_timeout_ms(),
            tls_queue_frames: default_tls_queue_frames(),
        }
    }

    /// The limits of the TLS transport, from the `tls_*` keys.
    pub fn tls_limits(&self) -> super::tls::hub::TlsLimits {
        super::tls::hub::TlsLimits {
            max_connections: self.tls_max_connections,
            idle_timeout: Duration::from_millis(self.tls_idle_timeout_ms),
            handshake_timeout: Duration::from_millis(self.tls_handshake_timeout_ms),
            queue_frames: self.tls_queue_frames,
        }
    }

    /// This instance's name in a cluster.
    pub fn instance_name(&self) -> String {
        self.instance
            .clone()
            .unwrap_or_else(|| self.listen.to_string())
    }

    /// The key file in force.
    pub fn key_path(&self) -> PathBuf {
        self.key_file
            .clone()
            .unwrap_or_else(|| self.state_dir.join(REGISTRY_KEY_FILE))
    }

    /// Reads a TOML configuration file.
    pub fn load(path: &Path) -> Result<Self, RunnerError> {
        let text = std::fs::read_to_string(path).map_err(|source| RunnerError::Io {
            what: format!("read {}", path.display()),
            source,
        })?;
        toml::from_str(&text).map_err(|e| RunnerError::Config {
            path: path.into(),
            reason: e.to_string(),
        })
    }
}

/// Why the registry could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// A system call failed (bind, state directory).
    #[error("cannot {what}: {source}")]
    Io {
        /// What we tried.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The store could not be opened or loaded.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The registry's identity key could not be loaded or created.
    #[error(transparent)]
    Identity(crate::identity::IdentityError),
    /// The task that tells this instance what the others do has stopped (it reconnects by
    /// itself when its connection is lost, so this means it failed for good).
    #[error("the cluster listener lost its PostgreSQL connection")]
    ClusterLost,
    /// The TLS transport could not start.
    #[error(transparent)]
    Tls(#[from] super::tls::pin::TlsError),
    /// The configuration file is invalid.
    #[error("registry config {path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl RunnerError {
    /// What the operator can do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            RunnerError::Io { .. } => {
                "check the listen address (free port, local interface) and that the state directory is writable"
            }
            RunnerError::Store(e) => e.hint(),
            RunnerError::Config { .. } => "compare the file with config/registry.toml",
            RunnerError::ClusterLost => {
                "check the PostgreSQL server; restart this instance (its nodes move to the other instances meanwhile)"
            }
            RunnerError::Tls(_) => "check tls_listen (a free TCP port on a local address)",
            RunnerError::Identity(_) => {
                "the registry key file (registry.key in the state directory) must be mode 0600 and intact; restore it from a backup (a new key makes nodes that pinned the old one refuse this registry)"
            }
        }
    }
}

impl From<RunnerError> for crate::error::PilotError {
    fn from(e: RunnerError) -> Self {
        use crate::error::{ErrorCode, PilotError};
        let code = match &e {
            RunnerError::Io { source, .. } if source.kind() == std::io::ErrorKind::AddrInUse => {
                ErrorCode::AlreadyExists
            }
            RunnerError::Io { .. } | RunnerError::Config { .. } => ErrorCode::InvalidArgument,
            RunnerError::Store(_) | RunnerError::ClusterLost => ErrorCode::Internal,
            RunnerError::Identity(_) => ErrorCode::Unauthorized,
            RunnerError::Tls(_) => ErrorCode::InvalidArgument,
        };
        PilotError::new(code, e.to_string(), e.hint())
    }
}

/// A bound registry, ready to run.
pub struct RegistryServer {
    io: batch::BatchSocket,
    /// Relayed datagrams on their way out (GSO).
    out: batch::GsoOut,
    registry: Registry,
    key: PublicKey,
    /// Beaten once per loop turn (the systemd watchdog watches it).
    heartbeat: crate::health::Heartbeat,
    /// Beaten by the store's writer thread while it is not stuck in a commit.
    store_heartbeat: crate::health::Heartbeat,
    /// Published once a second for the metrics endpoint.
    stats: super::metrics::SharedStats,
    /// Datagrams received by claimed type byte (see [`super::metrics::claimed_type`]).
    by_type: Box<[u64; 256]>,
    /// The requests of the last receive batch, handled together after its relay frames:
    /// (sender, buffer, start, end) in the receive buffers.
    requests: Vec<(SocketAddr, usize, usize, usize)>,
    /// The other instances' changes (clusters only).
    remote: Option<Notifications>,
    /// Results of the commits parked requests wait for (clusters only).
    commits: Option<super::writer::Commits>,
    status: status::StatusWriter,
    /// The TLS transport, when `tls_listen` is set.
    tls: Option<super::tls::hub::Hub>,
}

impl std::fmt::Debug for RegistryServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RegistryServer({:?})",
            self.io.socket().local_addr().ok()
        )
    }
}

impl RegistryServer {
    /// Opens the store (redb in `config.state_dir`, created 0700 if missing, or PostgreSQL),
    /// loads the key and binds the socket.
    pub async fn bind(config: RegistryConfig) -> Result<Self, RunnerError> {
        create_private_dir(&config.state_dir)?;
        let opened = open_store(&config)?;
        // Commits happen on a writer thread, batched: a burst of holds never stalls the loop.
        let store_heartbeat = crate::health::Heartbeat::new();
        let mut store = BatchingStore::spawn_with_heartbeat(
            opened.store,
            WRITE_QUEUE,
            store_heartbeat.clone(),
        )?;
        // A claim or a held message waits for its commit parked, not on the loop.
        let commits = store.take_commits();
        let gauges = store.gauges();
        let key_path = config.key_path();
        let (identity, created) =
            Identity::load_or_create(&key_path).map_err(RunnerError::Identity)?;
        if created {
            tracing::info!(path = %key_path.display(), "created the registry identity");
        }
        let tls = match config.tls_listen {
            Some(at) => Some(super::tls::hub::Hub::bind(at, &identity, config.tls_limits()).await?),
            None => None,
        };
        let identity = Arc::new(identity);
        let key = identity.public_key();
        let registry = Registry::new(
            identity,
            Box::new(store),
            config.limits.clone(),
            unix_ms_now(),
        )?;
        let socket = bind_socket(config.listen, config.recv_buffer_bytes).map_err(|source| {
            RunnerError::Io {
                what: format!("listen on UDP {}", config.listen),
                source,
            }
        })?;
        let io = batch::BatchSocket::new(socket).map_err(|source| RunnerError::Io {
            what: format!("set up UDP {}", config.listen),
            source,
        })?;
        let status = status::StatusWriter::new(
            &config,
            opened.label,
            key,
            gauges,
            opened.pg,
            io.socket().local_addr().ok(),
        );
        Ok(RegistryServer {
            io,
            out: batch::GsoOut::default(),
            registry,
            key,
            heartbeat: crate::health::Heartbeat::new(),
            store_heartbeat,
            stats: Default::default(),
            by_type: Box::new([0; 256]),
            requests: Vec::new(),
            remote: opened.remote,
            commits,
            status,
            tls,
        })
    }

    /// The TCP address of the TLS transport, when it is on.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().map(|t| t.local_addr())
    }

    /// The TLS transport's counters, when it is on.
    pub fn tls_stats(&self) -> Option<super::tls::hub::TlsStats> {
        self.tls.as_ref().map(|t| t.stats())
    }

    /// The address the socket is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.io
            .socket()
            .local_addr()
            .expect("a bound UDP socket has an address")
    }

    /// The registry's public key: it signs every answer; nodes may pin it.
    pub fn public_key(&self) -> PublicKey {
        self.key
    }

    /// The heartbeat the serving loop beats four times a second.
    pub fn heartbeat(&self) -> crate::health::Heartbeat {
        self.heartbeat.clone()
    }

    /// The heartbeat of the store's writer thread.
    pub fn store_heartbeat(&self) -> crate::health::Heartbeat {
        self.store_heartbeat.clone()
    }

    /// The statistics the serving loop publishes once a second (for `/metrics`).
    pub fn stats(&self) -> super::metrics::SharedStats {
        Arc::clone(&self.stats)
    }

    /// Copies the counters, table sizes and per-type counts into the shared [`Self::stats`].
    fn publish_stats(&self) {
        let by_type = self
            .by_type
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(t, n)| (t as u8, *n))
            .collect();
        *self.stats.lock() = super::metrics::Stats {
            counters: self.registry.counters().clone(),
            gauges: self.registry.gauges(),
            by_type,
            relay_io: super::metrics::RelayIo {
                datagrams: self.out.datagrams,
                sends: self.out.sends,
                send_failed: self.io.send_failed,
            },
            tls: self.tls_stats(),
        };
    }

    /// Serves until `shutdown` completes. Send errors are logged and do not stop the loop.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), RunnerError> {
        tracing::info!(listen = %self.local_addr(), key = %self.key, "registry running");
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The loop's heartbeat, four times per shortest staleness the watchdog tolerates
        // (1 s): beating only on the 1 s tick let a healthy loop look 1.0 s silent.
        let mut beat = tokio::time::interval(Duration::from_millis(250));
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_report = tokio::time::Instant::now();
        let mut reported = self.registry.counters().clone();
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = beat.tick() => self.heartbeat.beat(),
                _ = tick.tick() => {
                    self.registry.handle_timeout(unix_ms_now());
                    self.publish_stats();
                    self.status.tick(&self.registry, unix_ms_now(), self.tls_stats());
                    if last_report.elapsed() >= Duration::from_secs(60)
                        && *self.registry.counters() != reported
                    {
                        reported = self.registry.counters().clone();
                        last_report = tokio::time::Instant::now();
                        tracing::info!(counters = ?reported, "registry counters");
                    }
                }
                r = self.io.socket().readable() => match r {
                    Ok(()) => self.drain().await,
                    Err(e) => tracing::debug!("receive failed: {e}"),
                },
                Some(c) = next_commit(&mut self.commits) => {
                    let out = self.registry.on_committed(unix_ms_now(), c.ticket, c.result);
                    self.send_out(out).await;
                }
                frame = next_tls(&mut self.tls) => if let Some((from, bytes)) = frame {
                    self.on_tls(from, bytes).await;
                },
                change = next_remote(&mut self.remote) => match change {
                    Some(c) => self.on_remote(c).await,
                    // The listener reconnects by itself; it ends only if it panicked.
                    None => {
                        tracing::error!("lost the cluster listener: stopping");
                        return Err(RunnerError::ClusterLost);
                    }
                },
            }
        }
        self.status
            .tick(&self.registry, unix_ms_now(), self.tls_stats());
        tracing::info!(counters = ?self.registry.counters(), "registry stopped");
        Ok(())
    }

    /// Applies a change another instance made (or the whole store, after the listener
    /// reconnected) and sends what it means for our nodes.
    async fn on_remote(&mut self, event: ClusterEvent) {
        let now = unix_ms_now();
        let out = match event {
            ClusterEvent::Change(change) => {
                self.status.note_lag(now.saturating_sub(change.sent_ms));
                self.registry.apply_remote(now, change.op)
            }
            ClusterEvent::Resync { snapshot, taken_ms } => {
                self.status.note_resync();
                self.registry.resync(now, snapshot, taken_ms)
            }
        };
        self.send_out(out).await;
    }
}

/// The next result of a parked commit; never completes without a cluster.
async fn next_commit(
    commits: &mut Option<super::writer::Commits>,
) -> Option<super::store::Committed> {
    match commits {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The next datagram from a TLS connection; never completes without the TLS transport.
async fn next_tls(tls: &mut Option<super::tls::hub::Hub>) -> Option<(SocketAddr, Vec<u8>)> {
    match tls {
        Some(hub) => hub.recv().await,
        None => std::future::pending().await,
    }
}

impl RegistryServer {
    /// Queues on their TLS connections the datagrams addressed to one (see
    /// [`super::tls`]); the rest stay in `out` for UDP.
    fn route_tls(&self, out: &mut super::server::Transmits) {
        if let Some(hub) = &self.tls {
            hub.route(out);
        }
    }

    /// Sends the core's datagrams: those for TLS connections on them, the rest over UDP (a
    /// failure is counted as `send_failed` and does not stop the loop).
    async fn send_out(&mut self, mut out: super::server::Transmits) {
        self.route_tls(&mut out);
        for (to, bytes) in out {
            self.io.send(to, &bytes, None).await;
        }
    }

    /// Handles a datagram that came over TLS, and those already waiting behind it, exactly
    /// as if they had come over UDP from the connection's address.
    async fn on_tls(&mut self, from: SocketAddr, bytes: Vec<u8>) {
        self.heartbeat.beat();
        let mut next = Some((from, bytes));
        let mut n = 0;
        while let Some((from, bytes)) = next {
            self.by_type[usize::from(super::metrics::claimed_type(&bytes))] += 1;
            let out = self.registry.handle(unix_ms_now(), from, &bytes);
            self.send_out(out).await;
            n += 1;
            next = if n < TURN_BUDGET {
                self.tls.as_mut().and_then(|t| t.try_recv())
            } else {
                None
            };
        }
    }
}

/// The next change from the other instances; never completes without a cluster.
async fn next_remote(remote: &mut Option<Notifications>) -> Option<ClusterEvent> {
    match remote {
        Some(rx) => rx.next_event().await,
        None => std::future::pending().await,
    }
}

/// The store a configuration names, opened.
struct OpenedStore {
    store: Box<dyn Store>,
    label: String,
    remote: Option<Notifications>,
    pg: Option<PgHandle>,
}

fn open_store(config: &RegistryConfig) -> Result<OpenedStore, RunnerError> {
    match config.store.as_deref() {
        None | Some("redb") => {
            let path = config.state_dir.join(RedbStore::FILE_NAME);
            Ok(OpenedStore {
                store: Box::new(RedbStore::open(&path)?),
                label: format!("redb {}", path.display()),
                remote: None,
                pg: None,
            })
        }
        Some(url) if super::pg::is_postgres(url) => {
            let (pg, remote) = PgStore::connect(url, &config.instance_name())?;
            Ok(OpenedStore {
                label: super::pg::label(url),
                pg: Some(pg.handle()),
                store: Box::new(pg),
                remote: Some(remote),
            })
        }
        Some(other) => Err(RunnerError::Config {
            path: "store".into(),
            reason: format!(
                "unknown store {other:?}: give \"redb\" or a PostgreSQL connection string (postgres://...)"
            ),
        }),
    }
}

impl RegistryServer {
    /// Handles what is queued on the socket, batch by batch, up to [`TURN_BUDGET`] datagrams.
    /// Relay frames are rewritten in place and leave in GSO sends; the requests of one receive
    /// batch then go through the core together, so their signatures are checked in batches.
    async fn drain(&mut self) {
        self.heartbeat.beat();
        let mut budget = TURN_BUDGET;
        while budget > 0 {
            let n = match self.io.recv() {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!("receive failed: {e}");
                    break;
                }
            };
            let now = unix_ms_now();
            for i in 0..n {
                budget = budget.saturating_sub(self.handle_buffer(now, i).await);
            }
            self.out.flush(&mut self.io).await;
            self.handle_requests(now).await;
        }
        self.out.flush(&mut self.io).await;
    }

    /// Handles the requests of the last receive batch together (see
    /// [`Registry::handle_batch`]) and sends the answers.
    async fn handle_requests(&mut self, now: u64) {
        if self.requests.is_empty() {
            return;
        }
        let io = &self.io;
        let batch: Vec<(SocketAddr, &[u8])> = self
            .requests
            .iter()
            .map(|&(from, i, start, end)| (from, io.datagram(i, start, end)))
            .collect();
        let out = self.registry.handle_batch(now, &batch);
        drop(batch);
        self.requests.clear();
        self.send_out(out).await;
    }

    /// Handles buffer `i` of the last receive batch (one datagram, or several coalesced by
    /// GRO); returns how many datagrams it held.
    async fn handle_buffer(&mut self, now: u64, i: usize) -> usize {
        let (from, bytes, stride) = self.io.received(i);
        let (len, mut at, mut count) = (bytes.len(), 0, 0);
        if super::tls::is_conn_range(&from) {
            // Only TLS connections have these addresses: over UDP such a source is forged.
            return len.div_ceil(stride.max(1));
        }
        let max = self.io.max_segments();
        while at < len {
            let (start, end) = (at, (at + stride).min(len));
            at = end;
            count += 1;
            let d = &mut self.io.received(i).1[start..end];
            self.by_type[usize::from(super::metrics::claimed_type(d))] += 1;
            if !crate::wire::relay::is_relay(d) {
                self.requests.push((from, i, start, end));
                continue;
            }
            let Some(to) = self.registry.relay_in_place(now, from, d) else {
                continue;
            };
            if super::tls::is_conn_range(&to) {
                // The target is attached over TLS: its datagram goes down that connection.
                let d = self.io.received(i).1[start..end].to_vec();
                self.send_out(vec![(to, d)]).await;
                continue;
            }
            if !self.out.joins(to, end - start, max) {
                self.out.flush(&mut self.io).await;
            }
            let d = &self.io.received(i).1[start..end];
            if self.out.append(to, d, max) {
                self.out.flush(&mut self.io).await;
            }
        }
        count
    }
}

/// A non-blocking UDP socket on `listen` with a receive buffer of `recv_buffer` bytes: forced
/// past `net.core.rmem_max` when we may (root), else as large as it allows.
fn bind_socket(listen: SocketAddr, recv_buffer: usize) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(
        Domain::for_address(listen),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    if listen.is_ipv6() {
        // As std binds it: [::] takes IPv4 too where the system allows.
        let _ = s.set_only_v6(false);
    }
    if !force_recv_buffer(&s, recv_buffer) {
        s.set_recv_buffer_size(recv_buffer)?;
    }
    // Room for relayed bursts on the way out too (best effort).
    let _ = s.set_send_buffer_size(recv_buffer);
    tracing::debug!(bytes = ?s.recv_buffer_size().ok(), "registry receive buffer");
    s.bind(&listen.into())?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s.into())
}

/// SO_RCVBUFFORCE (needs CAP_NET_ADMIN); whether it took.
fn force_recv_buffer(s: &socket2::Socket, bytes: usize) -> bool {
    use std::os::fd::AsRawFd;
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: a valid socket descriptor and a c_int option value of the stated size.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    r == 0
}

/// Runs a registry on `listen` with its state in `state_dir` until SIGTERM or Ctrl-C.
pub async fn run_registry(listen: SocketAddr, state_dir: PathBuf) -> Result<(), RunnerError> {
    run_registry_with_config(RegistryConfig::new(listen, state_dir)).await
}

/// Runs a registry with the given configuration until SIGTERM or Ctrl-C.
pub async fn run_registry_with_config(config: RegistryConfig) -> Result<(), RunnerError> {
    let server = RegistryServer::bind(config).await?;
    server.run(termination()).await
}

/// Completes on SIGTERM or Ctrl-C (SIGINT).
pub async fn termination() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn create_private_dir(dir: &Path) -> Result<(), RunnerError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| RunnerError::Io {
            what: format!("create state directory {}", dir.display()),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_and_its_limits_are_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/registry.toml");
        let cfg = RegistryConfig::load(&path).unwrap();
        assert_eq!(cfg.listen, "0.0.0.0:7000".parse().unwrap());
        assert_eq!(cfg.limits, Limits::default());
        let bad = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            bad.path(),
            "listen = \"127.0.0.1:1\"\nstate_dir = \"/x\"\nfoo = 1\n",
        )
        .unwrap();
        assert!(matches!(
            RegistryConfig::load(bad.path()),
            Err(RunnerError::Config { .. })
        ));
    }
}
