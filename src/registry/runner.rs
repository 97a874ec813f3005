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

mod status;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tokio::net::UdpSocket;

use super::pg::{Notifications, PgHandle, PgStore, RemoteChange};
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
}

/// Default receive buffer of the registry socket: 4 MiB, about 25,000 requests.
pub const DEFAULT_RECV_BUFFER: usize = 4 << 20;

fn default_recv_buffer() -> usize {
    DEFAULT_RECV_BUFFER
}

/// Most datagrams handled in one wake-up of the loop before timers get a turn.
const RECV_BATCH: usize = 256;

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
    /// The connection that tells this instance what the others do was lost: it stops rather
    /// than answer from a stale cache.
    #[error("the cluster listener lost its PostgreSQL connection")]
    ClusterLost,
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
        };
        PilotError::new(code, e.to_string(), e.hint())
    }
}

/// A bound registry, ready to run.
pub struct RegistryServer {
    socket: UdpSocket,
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
    /// The other instances' changes (clusters only).
    remote: Option<Notifications>,
    status: status::StatusWriter,
}

impl std::fmt::Debug for RegistryServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RegistryServer({:?})", self.socket.local_addr().ok())
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
        let store = BatchingStore::spawn_with_heartbeat(
            opened.store,
            WRITE_QUEUE,
            store_heartbeat.clone(),
        )?;
        let gauges = store.gauges();
        let key_path = config.key_path();
        let (identity, created) =
            Identity::load_or_create(&key_path).map_err(RunnerError::Identity)?;
        if created {
            tracing::info!(path = %key_path.display(), "created the registry identity");
        }
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
        let status = status::StatusWriter::new(
            &config,
            opened.label,
            key,
            gauges,
            opened.pg,
            socket.local_addr().ok(),
        );
        Ok(RegistryServer {
            socket,
            registry,
            key,
            heartbeat: crate::health::Heartbeat::new(),
            store_heartbeat,
            stats: Default::default(),
            by_type: Box::new([0; 256]),
            remote: opened.remote,
            status,
        })
    }

    /// The address the socket is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.socket
            .local_addr()
            .expect("a bound UDP socket has an address")
    }

    /// The registry's public key: it signs every answer; nodes may pin it.
    pub fn public_key(&self) -> PublicKey {
        self.key
    }

    /// The heartbeat the serving loop beats at least once a second.
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
        };
    }

    /// Serves until `shutdown` completes. Send errors are logged and do not stop the loop.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), RunnerError> {
        tracing::info!(listen = %self.local_addr(), key = %self.key, "registry running");
        tokio::pin!(shutdown);
        let mut buf = vec![0u8; 2048];
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_report = tokio::time::Instant::now();
        let mut reported = self.registry.counters().clone();
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tick.tick() => {
                    self.heartbeat.beat();
                    self.registry.handle_timeout(unix_ms_now());
                    self.publish_stats();
                    self.status.tick(&self.registry, unix_ms_now());
                    if last_report.elapsed() >= Duration::from_secs(60)
                        && *self.registry.counters() != reported
                    {
                        reported = self.registry.counters().clone();
                        last_report = tokio::time::Instant::now();
                        tracing::info!(counters = ?reported, "registry counters");
                    }
                }
                r = self.socket.readable() => match r {
                    Ok(()) => self.drain(&mut buf).await,
                    Err(e) => tracing::debug!("receive failed: {e}"),
                },
                change = next_remote(&mut self.remote) => match change {
                    Some(c) => self.on_remote(c).await,
                    None => {
                        tracing::error!("lost the cluster listener: stopping");
                        return Err(RunnerError::ClusterLost);
                    }
                },
            }
        }
        self.status.tick(&self.registry, unix_ms_now());
        tracing::info!(counters = ?self.registry.counters(), "registry stopped");
        Ok(())
    }

    /// Applies a change another instance made and sends what it means for our nodes.
    async fn on_remote(&mut self, change: RemoteChange) {
        let now = unix_ms_now();
        self.status.note_lag(now.saturating_sub(change.sent_ms));
        for (to, bytes) in self.registry.apply_remote(now, change.op) {
            if let Err(e) = self.socket.send_to(&bytes, to).await {
                tracing::debug!(%to, "send failed: {e}");
            }
        }
    }
}

/// The next change from the other instances; never completes without a cluster.
async fn next_remote(remote: &mut Option<Notifications>) -> Option<RemoteChange> {
    match remote {
        Some(rx) => rx.recv().await,
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
    /// Handles up to [`RECV_BATCH`] queued datagrams without going back to the scheduler, so
    /// the socket's queue empties as fast as the core can screen it.
    async fn drain(&mut self, buf: &mut [u8]) {
        self.heartbeat.beat();
        for _ in 0..RECV_BATCH {
            let (n, from) = match self.socket.try_recv_from(buf) {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::debug!("receive failed: {e}");
                    return;
                }
            };
            self.by_type[usize::from(super::metrics::claimed_type(&buf[..n]))] += 1;
            let out = self.registry.handle(unix_ms_now(), from, &buf[..n]);
            for (to, bytes) in out {
                if let Err(e) = self.socket.send_to(&bytes, to).await {
                    tracing::debug!(%to, "send failed: {e}");
                }
            }
        }
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
    use crate::identity::{Identity, PublicKey};
    use crate::mapping::Hostname;
    use crate::node::registry_client::{Client, ClientConfig, ClientEvent};
    use crate::node::trust::{TrustEffect, TrustStore};
    use std::sync::Arc;
    use std::time::Instant;

    /// A client core driven over a real loopback UDP socket.
    struct Node {
        client: Client,
        socket: UdpSocket,
        events: Vec<ClientEvent>,
    }

    impl Node {
        async fn new(seed: u8, registry: SocketAddr, hostname: &str) -> Node {
            let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let mut cfg = ClientConfig::new(vec![registry]);
            cfg.hostname = Some(Hostname::new(hostname).unwrap());
            let id = Arc::new(Identity::from_seed([seed; 32]));
            let client = Client::new(id, cfg, Instant::now(), unix_ms_now());
            Node {
                client,
                socket,
                events: Vec::new(),
            }
        }

        /// Sends what is queued, receives what arrived, fires timers.
        async fn step(&mut self) {
            while let Some((to, bytes)) = self.client.poll_transmit() {
                assert!(to.ip().is_loopback(), "tests only talk to loopback");
                self.socket.send_to(&bytes, to).await.unwrap();
            }
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = self.socket.try_recv_from(&mut buf) {
                self.client.handle_datagram(Instant::now(), from, &buf[..n]);
            }
            let now = Instant::now();
            if self.client.poll_timeout().is_some_and(|t| t <= now) {
                self.client.handle_timeout(now);
            }
            while let Some(e) = self.client.poll_event() {
                self.events.push(e);
            }
        }
    }

    /// Drives all nodes until `done` holds (bounded by 10 s).
    async fn drive(nodes: &mut [&mut Node], mut done: impl FnMut(&[&mut Node]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(nodes) {
            assert!(Instant::now() < deadline, "timed out");
            for n in nodes.iter_mut() {
                n.step().await;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn take_trust_effects(node: &mut Node, store: &mut TrustStore) -> Vec<TrustEffect> {
        let mut fx = Vec::new();
        for e in std::mem::take(&mut node.events) {
            match e {
                ClientEvent::TrustRequestReceived {
                    from,
                    hostname,
                    justification,
                    nonce,
                    sent_ms,
                } => fx.extend(
                    store
                        .on_request(
                            from,
                            hostname,
                            &justification,
                            nonce,
                            sent_ms,
                            unix_ms_now(),
                        )
                        .unwrap(),
                ),
                ClientEvent::TrustResponseReceived {
                    from,
                    decision,
                    sent_ms,
                    ..
                } => fx.extend(
                    store
                        .on_response(from, decision, sent_ms, unix_ms_now())
                        .unwrap(),
                ),
                _ => {}
            }
        }
        fx
    }

    fn has(node: &Node, pred: impl Fn(&ClientEvent) -> bool) -> bool {
        node.events.iter().any(pred)
    }

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

    #[tokio::test]
    async fn two_clients_register_look_up_and_exchange_trust_over_udp_loopback() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("registry");
        let server = RegistryServer::bind(RegistryConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            state.clone(),
        ))
        .await
        .unwrap();
        let addr = server.local_addr();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stop_rx.await;
        }));

        let mut a = Node::new(1, addr, "orchestrator").await;
        let mut b = Node::new(2, addr, "worker-node").await;
        let (ka, kb): (PublicKey, PublicKey) = (a.client.public_key(), b.client.public_key());
        drive(&mut [&mut a, &mut b], |n| {
            n.iter()
                .all(|x| has(x, |e| matches!(e, ClientEvent::Registered { .. })))
        })
        .await;

        // a looks b up by name: key and address, nothing else.
        let op = a
            .client
            .lookup(Instant::now(), Hostname::new("worker-node").unwrap());
        drive(&mut [&mut a, &mut b], |n| {
            has(
                n[0],
                |e| matches!(e, ClientEvent::LookupResult { op: o, .. } if *o == op),
            )
        })
        .await;
        assert!(has(&a, |e| matches!(e,
            ClientEvent::LookupResult { key, addr48, .. } if *key == kb && *addr48 == kb.addr48())));

        // a asks b for trust; b approves; both trust each other.
        let mut ta = TrustStore::in_memory(ka);
        let mut tb = TrustStore::in_memory(kb);
        a.events.clear();
        b.events.clear();
        for fx in ta
            .request(kb, None, "I run your jobs", unix_ms_now())
            .unwrap()
        {
            if let TrustEffect::SendRequest { to, justification } = fx {
                a.client
                    .send_trust_request(Instant::now(), to, justification);
            }
        }
        drive(&mut [&mut a, &mut b], |n| {
            has(n[1], |e| {
                matches!(e, ClientEvent::TrustRequestReceived { .. })
            })
        })
        .await;
        assert!(has(&b, |e| matches!(e,
            ClientEvent::TrustRequestReceived { from, hostname: Some(h), justification, .. }
                if *from == ka && h.as_str() == "orchestrator" && justification == "I run your jobs")));
        let fx = take_trust_effects(&mut b, &mut tb);
        assert!(matches!(fx[..], [TrustEffect::AwaitingApproval { .. }]));
        for fx in tb.approve(&ka, unix_ms_now()).unwrap() {
            if let TrustEffect::SendResponse {
                to,
                in_reply_to,
                decision,
                reason,
            } = fx
            {
                b.client
                    .respond_trust(Instant::now(), to, in_reply_to, decision, reason);
            }
        }
        drive(&mut [&mut a, &mut b], |n| {
            has(n[0], |e| {
                matches!(e, ClientEvent::TrustResponseReceived { .. })
            })
        })
        .await;
        let fx = take_trust_effects(&mut a, &mut ta);
        assert_eq!(fx, vec![TrustEffect::Trusted(kb)]);
        assert!(ta.is_trusted(&kb) && tb.is_trusted(&ka));

        // Graceful stop, then a restart on the same state: the names survived.
        stop_tx.send(()).unwrap();
        task.await.unwrap().unwrap();
        let server = RegistryServer::bind(RegistryConfig::new(addr, state))
            .await
            .unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stop_rx.await;
        }));
        let mut c = Node::new(3, addr, "newcomer").await;
        drive(&mut [&mut c], |n| {
            has(n[0], |e| matches!(e, ClientEvent::Registered { .. }))
        })
        .await;
        let op = c
            .client
            .lookup(Instant::now(), Hostname::new("orchestrator").unwrap());
        drive(&mut [&mut c], |n| {
            has(n[0], |e| matches!(e, ClientEvent::LookupResult { op: o, key, .. } if *o == op && *key == ka))
        })
        .await;
        stop_tx.send(()).unwrap();
        task.await.unwrap().unwrap();
    }
}
