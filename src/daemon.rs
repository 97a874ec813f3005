//! The daemon: one per node. It takes the state directory's lock, loads or makes the identity,
//! reads the config, chooses the mode, and serves the local API until it is told to stop
//! (`daemon stop`, SIGTERM or SIGINT), then cleans up its socket.

pub mod candidates;
pub mod control_task;
pub mod peer_resolver;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use crate::api::{self, Envelope, InfoData, Request};
use crate::config::{Config, Mode};
use crate::daemon::control_task::{
    ControlCommand, ControlHandle, ControlTask, ControlTaskConfig, Tunnels,
};
use crate::error::{ErrorCode, PilotError};
use crate::identity::Identity;
use crate::identity::PublicKey;
use crate::mapping::{Hostname, PeerRef};
use crate::node::control::ControlPlane;
use crate::node::registry_client::{parse_registry_spec, ClientConfig};
use crate::node::trust::{AllowList, TrustStore, TRUST_FILE};
use crate::node::views::NodeEvent;
use crate::state::lock::DaemonLock;
use crate::state::paths::StatePaths;
use crate::tun::{TunConfig, TunDevice};
use crate::wg::{DataPlane, DataPlaneConfig, Inner};
use std::net::SocketAddr;

use crate::services::Messages;
use crate::userspace::expose::{ExposeError, Exposed, Exposer};
use crate::userspace::overlay_net::{OverlayNet, OverlayStream};

/// What `daemon run` / `daemon start` were asked for; flags override the config file.
#[derive(Debug, Clone, Default)]
pub struct DaemonOptions {
    /// `--hostname`.
    pub hostname: Option<Hostname>,
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--mode`.
    pub mode: Option<Mode>,
    /// `--registry` (repeatable) and `PILOT_REGISTRY`.
    pub registries: Vec<String>,
}

/// Settings the node keeps across restarts, in `node.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct NodeState {
    hostname: Option<Hostname>,
}

/// The mode that runs, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeChoice {
    /// `Tun` or `Userspace`, never `Auto`.
    pub mode: Mode,
    /// A sentence on why.
    pub reason: String,
}

/// Whether this process may create a TUN device, and if not, why.
pub fn tun_available() -> Result<(), String> {
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Err("/dev/net/tun does not exist".into());
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    const CAP_NET_ADMIN: u64 = 12;
    if cap_eff & (1 << CAP_NET_ADMIN) == 0 {
        return Err("this process lacks CAP_NET_ADMIN".into());
    }
    Ok(())
}

/// Resolves `auto` and checks that a forced `tun` is possible.
pub fn choose_mode(requested: Mode) -> Result<ModeChoice, PilotError> {
    match (requested, tun_available()) {
        (Mode::Userspace, _) => Ok(ModeChoice {
            mode: Mode::Userspace,
            reason: "userspace mode was requested".into(),
        }),
        (Mode::Tun, Ok(())) => Ok(ModeChoice {
            mode: Mode::Tun,
            reason: "tun mode was requested".into(),
        }),
        (Mode::Tun, Err(why)) => Err(PilotError::new(
            ErrorCode::Unauthorized,
            format!("tun mode is not possible: {why}"),
            "run as root (or grant CAP_NET_ADMIN), or use --mode userspace",
        )),
        (Mode::Auto, Ok(())) => Ok(ModeChoice {
            mode: Mode::Tun,
            reason: "auto: /dev/net/tun and CAP_NET_ADMIN are available".into(),
        }),
        (Mode::Auto, Err(why)) => Ok(ModeChoice {
            mode: Mode::Userspace,
            reason: format!("auto: {why}, so the userspace stack runs"),
        }),
    }
}

/// The running node, shared by the API handlers.
struct Node {
    identity: Arc<Identity>,
    config: Config,
    paths: StatePaths,
    mode: ModeChoice,
    hostname: Mutex<Option<Hostname>>,
    started: Instant,
    shutdown: watch::Sender<bool>,
    /// The WireGuard data plane (TUN mode only, for now).
    dataplane: Option<Arc<DataPlane>>,
    /// The control plane task (registries and trust), when the data plane runs.
    control: Option<ControlHandle>,
    /// Overlay ports forwarded to local targets (both modes).
    exposer: Exposer,
    /// Where the SOCKS5 proxy listens (userspace mode).
    socks5: Option<SocketAddr>,
    /// Overlay sockets in the running mode (services, streams).
    overlay: OverlayNet,
    /// The message service (port 1001).
    messages: Option<Arc<Messages>>,
    /// Live node events, for the API's event stream.
    #[allow(dead_code)]
    events: tokio::sync::broadcast::Sender<NodeEvent>,
}

/// Node events buffered per listener of the live stream before a slow one misses some.
const EVENT_QUEUE: usize = 1024;

fn expose_err(e: ExposeError) -> PilotError {
    match e {
        ExposeError::InvalidTarget(_) | ExposeError::PortZero => PilotError::invalid(
            e.to_string(),
            "give a port and a target: expose 8080 --to 127.0.0.1:3000",
        ),
        ExposeError::AlreadyExposed { .. } => PilotError::new(
            ErrorCode::AlreadyExists,
            e.to_string(),
            "remove it first with `pilotctl expose --remove PORT`",
        ),
        ExposeError::NotExposed(_) => PilotError::new(
            ErrorCode::NotFound,
            e.to_string(),
            "see the exposed ports with `pilotctl expose --list`",
        ),
        ExposeError::Listen { .. } => PilotError::new(
            ErrorCode::AlreadyExists,
            e.to_string(),
            "another service holds that overlay port; choose another",
        ),
    }
}

/// The data plane as the control plane sees it.
impl Tunnels for DataPlane {
    fn send_control(&self, dst: SocketAddr, bytes: &[u8]) {
        if let Err(e) = DataPlane::send_control(self, dst, bytes) {
            tracing::debug!(%dst, error = %e, "control datagram not sent");
        }
    }

    fn add_peer(&self, key: PublicKey, hostname: Option<&Hostname>) {
        if let Err(e) = DataPlane::add_peer(self, key, None) {
            tracing::warn!(peer = %key, error = %e, "cannot add peer");
            return;
        }
        if let Some(h) = hostname {
            let _ = DataPlane::set_hostname(self, &key, Some(h.to_string()));
        }
    }

    fn remove_peer(&self, key: &PublicKey) {
        let _ = DataPlane::remove_peer(self, key);
    }

    fn set_endpoint(&self, key: &PublicKey, endpoint: SocketAddr) {
        let _ = DataPlane::set_endpoint(self, key, Some(endpoint));
    }

    fn set_path(&self, key: &PublicKey, path: crate::node::traversal::Path) {
        let _ = DataPlane::set_path(self, key, path);
    }

    fn path(&self, key: &PublicKey) -> Option<crate::node::traversal::Path> {
        DataPlane::path(self, key)
    }

    fn set_rtt(&self, key: &PublicKey, rtt: Option<std::time::Duration>) {
        DataPlane::set_rtt(self, key, rtt)
    }

    fn set_relays(&self, relays: Vec<SocketAddr>) {
        DataPlane::set_relays(self, relays)
    }

    fn take_events(&self) -> Option<crate::wg::EventReceiver> {
        DataPlane::take_event_receiver(self)
    }
}

impl Node {
    fn info(&self) -> InfoData {
        let addr = self.identity.addr48();
        InfoData {
            address: addr.to_string(),
            ipv6: self.config.network.ipv6(addr).to_string(),
            hostname: self
                .hostname
                .lock()
                .expect("hostname lock")
                .as_ref()
                .map(|h| h.to_string()),
            public_key: self.identity.public_key().to_string(),
            mode: self.mode.mode.to_string(),
            mode_reason: self.mode.reason.clone(),
            network: self.config.network.to_string(),
            uptime_secs: self.started.elapsed().as_secs(),
            peers: self
                .dataplane
                .as_ref()
                .map_or(self.config.peers.len(), |d| d.peers().len()),
            pid: std::process::id(),
            state_dir: self.paths.dir.display().to_string(),
            listen_port: self.dataplane.as_ref().map(|d| d.local_port()),
            socks5: self.socks5.map(|a| a.to_string()),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    fn peers(&self) -> api::PeersData {
        match &self.dataplane {
            Some(d) => api::PeersData {
                peers: d.peers(),
                counters: Some(d.counters()),
            },
            None => api::PeersData {
                peers: Vec::new(),
                counters: None,
            },
        }
    }

    async fn set_hostname(&self, name: &str) -> Result<serde_json::Value, PilotError> {
        let h = Hostname::new(name).map_err(|e| {
            PilotError::invalid(
                e.to_string(),
                "use 1-63 lowercase letters, digits and hyphens, e.g. worker-node",
            )
        })?;
        if let Some(c) = &self.control {
            c.call(|reply| ControlCommand::SetHostname {
                hostname: h.clone(),
                reply,
            })
            .await?;
        }
        save_node_state(
            &self.paths,
            &NodeState {
                hostname: Some(h.clone()),
            },
        )?;
        *self.hostname.lock().expect("hostname lock") = Some(h.clone());
        tracing::info!(hostname = %h, "hostname set");
        Ok(serde_json::json!({ "hostname": h.to_string() }))
    }

    fn peer_ref(&self, text: &str) -> Result<PeerRef, PilotError> {
        PeerRef::parse(text, &self.config.network).map_err(|e| {
            PilotError::invalid(
                e.to_string(),
                "name a peer by hostname (worker-node), address (xxxx.xxxx.xxxx), overlay IPv6 or public key",
            )
        })
    }

    fn no_messages() -> PilotError {
        PilotError::internal("the message service is not running (see the daemon log)")
    }

    /// A trusted peer's key and overlay address from anything that names it.
    async fn resolve_peer(
        &self,
        text: &str,
    ) -> Result<(PublicKey, std::net::Ipv6Addr), PilotError> {
        let r = self.peer_ref(text)?;
        let ip = match &r {
            PeerRef::Addr48(a) => self.config.network.ipv6(*a),
            PeerRef::PublicKey(k) => self.config.network.ipv6(k.addr48()),
            PeerRef::Hostname(h) => {
                let found = match &self.dataplane {
                    Some(plane) => {
                        use crate::userspace::socks5::Resolver;
                        crate::daemon::peer_resolver::PeerResolver::new(
                            plane.clone(),
                            self.control.clone(),
                        )
                        .resolve(h)
                        .await
                    }
                    None => None,
                };
                found.ok_or_else(|| {
                    PilotError::new(
                        ErrorCode::NotFound,
                        format!("no peer or registry knows the hostname `{h}`"),
                        "check the name with `pilotctl find NAME`, or name the peer by address or key",
                    )
                })?
            }
        };
        let key = self
            .dataplane
            .as_ref()
            .and_then(|d| d.peers().into_iter().find(|p| p.ipv6 == ip))
            .and_then(|p| p.public_key.parse().ok())
            .ok_or_else(|| {
                PilotError::new(
                    ErrorCode::Unauthorized,
                    format!("{r} ({ip}) is not a trusted peer"),
                    format!("ask for trust first: `pilotctl handshake {r}`, and wait for approval"),
                )
            })?;
        Ok((key, ip))
    }

    async fn send_message(
        &self,
        peer: &str,
        data: String,
        kind: Option<String>,
    ) -> Result<serde_json::Value, PilotError> {
        use crate::services::message_store::{MessageType, MAX_DATA};
        let kind = match kind.as_deref().unwrap_or("json") {
            "json" => MessageType::Json,
            "text" => MessageType::Text,
            other => {
                return Err(PilotError::invalid(
                    format!("unknown message type `{other}`"),
                    "use --type json or --type text",
                ))
            }
        };
        if data.len() > MAX_DATA {
            return Err(PilotError::invalid(
                format!(
                    "the message is {} bytes; at most {MAX_DATA} are allowed",
                    data.len()
                ),
                "send large data as a stream (`pilotctl connect PEER PORT`)",
            ));
        }
        let value = match kind {
            MessageType::Json => serde_json::from_str(&data).map_err(|e| {
                PilotError::invalid(
                    format!("--data is not valid JSON: {e}"),
                    "quote it for the shell, e.g. --data '{\"status\":\"operational\"}', or use --type text",
                )
            })?,
            MessageType::Text => serde_json::Value::String(data),
        };
        let (key, ip) = self.resolve_peer(peer).await?;
        let m = self.messages.as_ref().ok_or_else(Self::no_messages)?;
        let (id, delivered) = m
            .send(
                key.to_string(),
                ip,
                kind,
                value,
                std::time::Duration::from_secs(3),
            )
            .await
            .map_err(|e| PilotError::internal(format!("cannot queue the message: {e}")))?;
        to_value(&api::SentMessage {
            id,
            to: key,
            to_ipv6: ip,
            status: if delivered {
                api::DeliveryStatus::Delivered
            } else {
                api::DeliveryStatus::Queued
            },
        })
    }

    fn inbox(&self, clear: bool) -> Result<serde_json::Value, PilotError> {
        let m = self.messages.as_ref().ok_or_else(Self::no_messages)?;
        let list = m
            .inbox()
            .map_err(|e| PilotError::internal(format!("cannot read the inbox: {e}")))?;
        if clear {
            m.clear_inbox()
                .map_err(|e| PilotError::internal(format!("cannot clear the inbox: {e}")))?;
        }
        to_value(&api::InboxData {
            messages: list,
            cleared: clear,
        })
    }

    /// Opens the overlay side of a `connect` or `listen` request.
    async fn open_stream(
        &self,
        req: &Request,
        api: &mut UnixStream,
    ) -> Result<(OverlayStream, serde_json::Value), PilotError> {
        match req {
            Request::Connect { peer, port } => {
                let (key, ip) = self.resolve_peer(peer).await?;
                let dst = std::net::SocketAddrV6::new(ip, *port, 0, 0);
                let s = tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    self.overlay.connect(dst),
                )
                .await
                .map_err(|_| {
                    PilotError::new(
                        ErrorCode::Timeout,
                        format!("no answer from [{ip}]:{port} within 10 s"),
                        "check `pilotctl peers` for a recent handshake",
                    )
                })?
                .map_err(|e| {
                    PilotError::new(
                        ErrorCode::ConnectionFailed,
                        format!("cannot connect to [{ip}]:{port}: {e}"),
                        format!("is anything listening on port {port} of the peer (`pilotctl listen {port}` there)?"),
                    )
                })?;
                let data = to_value(&api::ConnectData {
                    peer: key,
                    ipv6: ip,
                    port: *port,
                })?;
                Ok((s, data))
            }
            Request::Listen { port } => {
                let mut l = self.overlay.listen(*port).await.map_err(|e| {
                    PilotError::new(
                        ErrorCode::AlreadyExists,
                        format!("cannot listen on overlay port {port}: {e}"),
                        "another listener or exposed port holds it; choose another port",
                    )
                })?;
                let mut probe = [0u8; 1];
                let s = tokio::select! {
                    a = l.accept() => a.map_err(|e| PilotError::internal(format!("accept failed: {e}")))?,
                    _ = api.read(&mut probe) => {
                        return Err(PilotError::invalid("the client left before a peer connected", ""));
                    }
                };
                let remote = match s.peer_addr() {
                    Ok(std::net::SocketAddr::V6(a)) => *a.ip(),
                    Ok(other) => {
                        return Err(PilotError::internal(format!(
                            "overlay peer {other} is not IPv6"
                        )))
                    }
                    Err(e) => return Err(PilotError::internal(format!("peer address: {e}"))),
                };
                let from = self
                    .dataplane
                    .as_ref()
                    .and_then(|d| d.peers().into_iter().find(|p| p.ipv6 == remote));
                let data = to_value(&api::ListenData {
                    port: *port,
                    peer_ipv6: remote,
                    peer: from.as_ref().and_then(|p| p.public_key.parse().ok()),
                    peer_hostname: from.and_then(|p| p.hostname),
                })?;
                Ok((s, data))
            }
            _ => Err(PilotError::internal("not a stream request")),
        }
    }

    /// Runs a control-plane command and wraps its typed answer for the API.
    async fn control<T: Serialize>(
        &self,
        make: impl FnOnce(crate::daemon::control_task::Reply<T>) -> ControlCommand,
    ) -> Result<serde_json::Value, PilotError> {
        let c = self.control.as_ref().ok_or_else(|| {
            PilotError::new(
                ErrorCode::InvalidArgument,
                format!(
                    "trust and registries are not available in {} mode yet",
                    self.mode.mode
                ),
                "run the daemon in tun mode (as root or with CAP_NET_ADMIN)",
            )
        })?;
        to_value(&c.call(make).await?)
    }

    async fn handle(&self, req: Request) -> Envelope {
        let r = match req {
            Request::Info {} => return Envelope::ok(&self.info()),
            Request::Peers {} => return Envelope::ok(&self.peers()),
            Request::SetHostname { hostname } => self.set_hostname(&hostname).await,
            Request::Shutdown {} => {
                let _ = self.shutdown.send(true);
                return Envelope::ok(&api::ShutdownData { stopping: true });
            }
            Request::Handshake {
                peer,
                justification,
            } => match self.peer_ref(&peer) {
                Ok(peer) => {
                    self.control(|reply| ControlCommand::Handshake {
                        peer,
                        justification: justification.unwrap_or_default(),
                        reply,
                    })
                    .await
                }
                Err(e) => Err(e),
            },
            Request::Pending {} => {
                self.control(|reply| ControlCommand::Pending { reply })
                    .await
            }
            Request::Approve { peer } => match self.peer_ref(&peer) {
                Ok(peer) => {
                    self.control(|reply| ControlCommand::Approve { peer, reply })
                        .await
                }
                Err(e) => Err(e),
            },
            Request::Reject { peer, reason } => match self.peer_ref(&peer) {
                Ok(peer) => {
                    self.control(|reply| ControlCommand::Reject {
                        peer,
                        reason: reason.unwrap_or_default(),
                        reply,
                    })
                    .await
                }
                Err(e) => Err(e),
            },
            Request::Untrust { peer } => match self.peer_ref(&peer) {
                Ok(peer) => {
                    self.control(|reply| ControlCommand::Untrust { peer, reply })
                        .await
                }
                Err(e) => Err(e),
            },
            Request::Trust {} => {
                self.control(|reply| ControlCommand::TrustList { reply })
                    .await
            }
            Request::Ping { peer, count } => match self.peer_ref(&peer) {
                Ok(peer) => {
                    let count = count.unwrap_or(4);
                    self.control(|reply| ControlCommand::Ping { peer, count, reply })
                        .await
                }
                Err(e) => Err(e),
            },
            Request::Connect { .. } | Request::Listen { .. } => Err(PilotError::invalid(
                "a stream request must be the first request on its connection",
                "open a new API connection for each stream",
            )),
            Request::SendMessage { peer, data, kind } => self.send_message(&peer, data, kind).await,
            Request::Inbox { clear } => self.inbox(clear),
            Request::Outbox {} => match &self.messages {
                Some(m) => m
                    .outbox()
                    .map_err(|e| PilotError::internal(e.to_string()))
                    .and_then(|outbox| to_value(&api::OutboxData { outbox })),
                None => Err(Self::no_messages()),
            },
            Request::Find { hostname } => {
                let name = hostname.strip_suffix(".pilot").unwrap_or(&hostname);
                match Hostname::new(name) {
                    Ok(hostname) => {
                        self.control(|reply| ControlCommand::Find { hostname, reply })
                            .await
                    }
                    Err(e) => Err(PilotError::invalid(
                        e.to_string(),
                        "give an exact hostname, e.g. worker-node",
                    )),
                }
            }
            Request::Expose { port, to } => match self.exposer.add(port, &to).await {
                Ok(()) => to_value(&Exposed { port, to }),
                Err(e) => Err(expose_err(e)),
            },
            Request::ExposeList {} => {
                return Envelope::ok(&api::ExposeList {
                    exposed: self.exposer.list(),
                })
            }
            Request::ExposeRemove { port } => match self.exposer.remove(port) {
                Ok(x) => to_value(&x),
                Err(e) => Err(expose_err(e)),
            },
        };
        r.into()
    }
}

/// Encodes a typed answer as the envelope's `data`.
fn to_value<T: Serialize>(data: &T) -> Result<serde_json::Value, PilotError> {
    serde_json::to_value(data)
        .map_err(|e| PilotError::internal(format!("cannot encode reply: {e}")))
}

fn load_node_state(paths: &StatePaths) -> NodeState {
    std::fs::read_to_string(paths.node_state())
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default()
}

fn save_node_state(paths: &StatePaths, state: &NodeState) -> Result<(), PilotError> {
    let path = paths.node_state();
    let bytes = serde_json::to_vec_pretty(state)
        .map_err(|e| PilotError::internal(format!("cannot encode node state: {e}")))?;
    crate::state::paths::write_private_atomic(&path, &bytes)
        .map_err(|e| PilotError::internal(format!("cannot save {}: {e}", path.display())))
}

/// Reads the config: `--config`, else `$PILOT_HOME/config.toml` if present, else defaults.
pub fn load_config(paths: &StatePaths, explicit: Option<&PathBuf>) -> Result<Config, PilotError> {
    let path = match explicit {
        Some(p) => Some(p.clone()),
        None => Some(paths.default_config()).filter(|p| p.exists()),
    };
    match path {
        None => Ok(Config::default()),
        Some(p) => Config::load(&p).map_err(|e| {
            PilotError::invalid(
                e.to_string(),
                format!(
                    "fix the file (see config/pilot.toml for every key), then check it with `pilotctl config check {}`",
                    p.display()
                ),
            )
        }),
    }
}

fn init_logging(config: &Config) {
    let filter = std::env::var("PILOT_LOG")
        .ok()
        .or_else(|| config.log_level.clone())
        .unwrap_or_else(|| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

/// Runs the daemon in the foreground until it is told to stop.
pub fn run(opts: DaemonOptions) -> Result<(), PilotError> {
    let paths = StatePaths::from_env()?;
    paths.ensure_dir()?;
    let lock = DaemonLock::acquire(&paths.lock())?;
    let mut config = load_config(&paths, opts.config.as_ref())?;
    if let Some(m) = opts.mode {
        config.mode = m;
    }
    if !opts.registries.is_empty() {
        config.registries = opts.registries.clone();
    }
    init_logging(&config);

    let (identity, created) = Identity::load_or_create(&paths.key()).map_err(|e| {
        let code = match e {
            crate::identity::IdentityError::InsecurePermissions { .. } => ErrorCode::Unauthorized,
            _ => ErrorCode::InvalidArgument,
        };
        PilotError::new(code, e.to_string(), e.hint())
    })?;
    if created {
        tracing::info!(key = %paths.key().display(), "created a new identity");
    }
    let identity = Arc::new(identity);
    let mode = choose_mode(config.mode)?;
    let saved = load_node_state(&paths);
    let hostname = opts
        .hostname
        .clone()
        .or(saved.hostname)
        .or(config.hostname.clone());
    if opts.hostname.is_some() {
        save_node_state(
            &paths,
            &NodeState {
                hostname: hostname.clone(),
            },
        )?;
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .thread_name("pilot-rt")
        .build()
        .map_err(|e| PilotError::internal(format!("cannot start the runtime: {e}")))?;
    let node_paths = paths.clone();
    let result = rt.block_on(async move {
        let paths = node_paths;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (events, _) = tokio::sync::broadcast::channel(EVENT_QUEUE);
        // Both modes run the data plane (the control plane needs its UDP socket either way).
        // TUN mode: its inner side is the TUN device. Userspace mode: the netstack.
        let (dataplane, netstack) = match mode.mode {
            Mode::Tun => (
                Some(Arc::new(start_dataplane(&identity, &config, None)?)),
                None,
            ),
            _ => {
                let (stack, inner) = crate::userspace::start_netstack(
                    &identity,
                    &config,
                    tokio::runtime::Handle::current(),
                )?;
                let plane = start_dataplane(&identity, &config, Some(inner))?;
                (Some(Arc::new(plane)), Some(stack))
            }
        };
        let control = match &dataplane {
            Some(d) => Some(
                start_control(
                    &identity,
                    &config,
                    &paths,
                    hostname.clone(),
                    d,
                    events.clone(),
                )
                .await?,
            ),
            None => None,
        };
        let overlay = match &netstack {
            Some(s) => OverlayNet::Userspace(s.clone()),
            None => OverlayNet::Kernel {
                address: config.network.ipv6(identity.addr48()),
                device: Some(config.tun.name.clone()),
            },
        };
        let exposer = Exposer::new(overlay.clone());
        crate::services::start_echo(overlay.clone());
        let messages = match &dataplane {
            Some(plane) => {
                match Messages::start(&paths.dir, overlay.clone(), plane.clone()).await {
                    Ok(m) => Some(m),
                    Err(e) => {
                        tracing::warn!(error = %e, "message service not started (port 1001)");
                        None
                    }
                }
            }
            None => None,
        };
        for e in &config.exposes {
            exposer.add(e.port, &e.to).await.map_err(expose_err)?;
        }
        let socks5 = match (&netstack, &dataplane) {
            (Some(stack), Some(plane)) => {
                let resolver =
                    crate::daemon::peer_resolver::PeerResolver::new(plane.clone(), control.clone());
                crate::userspace::start_socks5(&config, stack, Arc::new(resolver))
                    .await?
                    .map(|(addr, _task)| addr)
            }
            _ => None,
        };
        let node = Arc::new(Node {
            identity,
            config,
            paths: paths.clone(),
            mode,
            hostname: Mutex::new(hostname),
            started: Instant::now(),
            shutdown,
            dataplane,
            control,
            exposer,
            socks5,
            overlay,
            messages,
            events,
        });
        let listener = bind_api(&paths)?;
        let info = node.info();
        tracing::info!(
            address = %info.address,
            ipv6 = %info.ipv6,
            mode = %info.mode,
            socket = %paths.socket.display(),
            "daemon ready"
        );
        serve(node.clone(), listener, shutdown_rx).await;
        if let Some(d) = &node.dataplane {
            d.shutdown();
        }
        Ok::<(), PilotError>(())
    });
    let _ = std::fs::remove_file(&paths.socket);
    drop(lock);
    tracing::info!("daemon stopped");
    result
}

/// Resolves the configured registries (`HOST:PORT`, optionally `#KEY` to pin its key).
async fn resolve_registries(
    specs: &[String],
) -> Result<
    (
        Vec<SocketAddr>,
        std::collections::HashMap<SocketAddr, PublicKey>,
    ),
    PilotError,
> {
    let mut addrs = Vec::new();
    let mut pinned = std::collections::HashMap::new();
    for spec in specs {
        let (hostport, key) = parse_registry_spec(spec)?;
        let resolved = tokio::net::lookup_host(hostport.as_str())
            .await
            .map_err(|e| {
                PilotError::new(
                    ErrorCode::InvalidArgument,
                    format!("cannot resolve registry {hostport}: {e}"),
                    "give the registry as HOST:PORT (an IP address avoids DNS)",
                )
            })?
            .next()
            .ok_or_else(|| {
                PilotError::invalid(
                    format!("registry {hostport} resolves to no address"),
                    "give the registry as IP:PORT",
                )
            })?;
        if let Some(k) = key {
            pinned.insert(resolved, k);
        }
        addrs.push(resolved);
    }
    Ok((addrs, pinned))
}

/// Starts the control plane (registries, trust) on the data plane's socket.
async fn start_control(
    identity: &Arc<Identity>,
    config: &Config,
    paths: &StatePaths,
    hostname: Option<Hostname>,
    plane: &Arc<DataPlane>,
    events: tokio::sync::broadcast::Sender<NodeEvent>,
) -> Result<ControlHandle, PilotError> {
    let me = identity.public_key();
    let mut trust = TrustStore::open(me, &paths.dir.join(TRUST_FILE))
        .map_err(|e| PilotError::new(ErrorCode::Unauthorized, e.to_string(), e.hint()))?;
    trust.set_allow_list(AllowList::from_entries(&config.trust.allow)?);
    let (registries, pinned) = resolve_registries(&config.registries).await?;
    let mut cc = ClientConfig::new(registries.clone());
    cc.pinned_keys = pinned;
    cc.hostname = hostname;
    cc.candidates =
        crate::daemon::candidates::local_candidates(plane.local_port(), &config.tun.name);
    let plane_core = ControlPlane::new(
        identity.clone(),
        cc,
        trust,
        std::time::Instant::now(),
        crate::clock::unix_ms_now(),
    );
    let rx = plane
        .take_control_receiver()
        .ok_or_else(|| PilotError::internal("control receiver taken twice"))?;
    let tc = ControlTaskConfig {
        network: config.network,
        static_peers: config.peers.iter().map(|p| p.public_key).collect(),
        has_registry: !registries.is_empty(),
    };
    tracing::info!(registries = registries.len(), "control plane running");
    Ok(ControlTask::spawn(
        plane_core,
        plane.clone(),
        tc,
        rx,
        events,
    ))
}

/// Starts the data plane on `inner` (userspace mode: the netstack) or, when it is `None`, on a
/// new TUN device with our overlay address and route; loads the static peers from the config
/// (they count as trusted).
fn start_dataplane(
    identity: &Identity,
    config: &Config,
    inner: Option<Inner>,
) -> Result<DataPlane, PilotError> {
    let inner = match inner {
        Some(i) => i,
        None => {
            let ipv6 = config.network.ipv6(identity.addr48());
            let mut tc = TunConfig::new(ipv6);
            tc.name = config.tun.name.clone();
            tc.mtu = config.tun.mtu;
            let tun = TunDevice::create(&tc).map_err(|e| {
                PilotError::new(
                    ErrorCode::Unauthorized,
                    e.to_string(),
                    "run as root or with CAP_NET_ADMIN, pick a free tun.name, or use --mode userspace",
                )
            })?;
            tun.into_inner()
        }
    };
    let dc = DataPlaneConfig {
        listen_port: config.tunnel.listen_port,
        keepalive_secs: config.tunnel.keepalive_secs,
        network: config.network,
        ..Default::default()
    };
    let plane = DataPlane::start(identity, &dc, inner, None).map_err(|e| {
        PilotError::new(
            ErrorCode::InvalidArgument,
            e.to_string(),
            "choose a free tunnel.listen_port (or 0 for any)",
        )
    })?;
    for p in &config.peers {
        plane.add_peer(p.public_key, p.endpoint).map_err(|e| {
            PilotError::invalid(e.to_string(), "fix the [[peer]] entries in the config")
        })?;
        if let Some(h) = &p.hostname {
            let _ = plane.set_hostname(&p.public_key, Some(h.to_string()));
        }
    }
    tracing::info!(
        port = plane.local_port(),
        peers = config.peers.len(),
        "data plane running"
    );
    Ok(plane)
}

fn bind_api(paths: &StatePaths) -> Result<UnixListener, PilotError> {
    use std::os::unix::fs::PermissionsExt;
    // We hold the state directory's lock, so a socket file left here is stale.
    if paths.socket.exists() {
        std::fs::remove_file(&paths.socket).map_err(|e| {
            PilotError::internal(format!(
                "cannot remove stale socket {}: {e}",
                paths.socket.display()
            ))
        })?;
    }
    // Create the socket with no access for group/others from the first instant.
    // SAFETY: umask only changes this process's file creation mask.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(&paths.socket);
    unsafe { libc::umask(old) };
    let listener = bound.map_err(|e| {
        PilotError::new(
            ErrorCode::InvalidArgument,
            format!("cannot listen on {}: {e}", paths.socket.display()),
            "set PILOT_SOCKET to a path you can write (at most 107 bytes long)",
        )
    })?;
    std::fs::set_permissions(&paths.socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| PilotError::internal(format!("cannot chmod the socket: {e}")))?;
    Ok(listener)
}

async fn serve(node: Arc<Node>, listener: UnixListener, mut shutdown: watch::Receiver<bool>) {
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .expect("SIGINT handler");
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let node = node.clone();
                    tokio::spawn(async move { handle_conn(node, stream).await });
                }
                Err(e) => tracing::warn!(error = %e, "API accept failed"),
            },
            _ = sigterm.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT: stopping"); break; }
            _ = shutdown.changed() => { tracing::info!("stop requested over the API"); break; }
        }
    }
}

/// Answers a stream request with `data`, then copies bytes both ways until both sides end.
async fn splice(
    mut api: UnixStream,
    early: Vec<u8>,
    mut overlay: OverlayStream,
    data: serde_json::Value,
) {
    let mut out = serde_json::to_vec(&Envelope::Ok { data }).unwrap_or_default();
    out.push(b'\n');
    if api.write_all(&out).await.is_err() {
        return;
    }
    if !early.is_empty() && overlay.write_all(&early).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut api, &mut overlay).await;
}

/// Serves one API connection: one JSON request per line, one reply per line.
async fn handle_conn(node: Arc<Node>, mut stream: UnixStream) {
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let line = &line[..line.len() - 1];
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            let reply = match std::str::from_utf8(line) {
                Ok(text) => match api::parse_request(text) {
                    Ok(req @ (Request::Connect { .. } | Request::Listen { .. })) => {
                        match node.open_stream(&req, &mut stream).await {
                            Ok((overlay, data)) => {
                                splice(stream, std::mem::take(&mut buf), overlay, data).await;
                                return;
                            }
                            Err(e) => Envelope::Error(e),
                        }
                    }
                    Ok(req) => node.handle(req).await,
                    Err(e) => {
                        tracing::debug!("bad API request: {}", e.message);
                        Envelope::Error(e)
                    }
                },
                Err(_) => Envelope::Error(PilotError::invalid(
                    "bad API request: not UTF-8",
                    "send one JSON object per line",
                )),
            };
            let mut out = serde_json::to_vec(&reply).unwrap_or_default();
            out.push(b'\n');
            if stream.write_all(&out).await.is_err() {
                return;
            }
        }
        if buf.len() > api::MAX_LINE {
            let e = Envelope::Error(PilotError::invalid(
                format!("API request longer than {} bytes", api::MAX_LINE),
                "send one JSON object per line",
            ));
            let mut out = serde_json::to_vec(&e).unwrap_or_default();
            out.push(b'\n');
            let _ = stream.write_all(&out).await;
            return;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
