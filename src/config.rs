//! Configuration: a TOML file read with serde, overridden by command-line flags.
//!
//! Unknown keys and wrong types are refused with the key's name and the line it is on, so a
//! typo never silently turns into a default. `config/pilot.toml` is the commented reference.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::identity::PublicKey;
mod names_udp;
use crate::mapping::{Hostname, NetworkPrefix};
pub use names_udp::{DnsConfig, UdpConfig, DEFAULT_DNS_TTL_SECS, MAX_DNS_TTL_SECS};

pub mod pubsub_tasks;
mod relay;
pub use pubsub_tasks::{PubsubConfig, TasksConfig};
pub use relay::{RelayConfig, TlsMode};

/// The lowest MTU we accept: IPv6's minimum.
pub const MIN_MTU: u16 = 1280;
/// Default inner MTU: 1500 − 40 (IPv6) − 8 (UDP) − 32 (WireGuard).
pub const DEFAULT_MTU: u16 = 1420;
/// Default persistent keepalive, below common NAT UDP timeouts.
pub const DEFAULT_KEEPALIVE_SECS: u16 = 25;
/// Default of `[registry] max_clock_offset_secs`: one day.
pub const DEFAULT_MAX_CLOCK_OFFSET_SECS: u64 = 24 * 3600;
/// Default of `[tunnel] handshakes_per_source`: WireGuard handshake messages per second
/// answered per source (an IPv4 address, an IPv6 /64, a relayed sender).
pub const DEFAULT_HANDSHAKES_PER_SOURCE: u32 = 20;
/// Default of `[tunnel] handshakes_global`: handshake messages per second answered without a
/// cookie from all sources together.
pub const DEFAULT_HANDSHAKES_GLOBAL: u32 = 1000;
/// Where the SOCKS5 proxy listens by default (userspace mode).
pub const DEFAULT_SOCKS5_LISTEN: std::net::SocketAddr = std::net::SocketAddr::V4(
    std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 1080),
);

/// Errors from reading or checking a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema.
    #[error("{path}:{line}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending key or value.
        line: usize,
        /// What is wrong, naming the key.
        message: String,
    },
    /// The file parsed but a value breaks a rule.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
    /// Another user owns the file, or group or others can write it.
    #[error("config file refused: {0}")]
    Unsafe(#[from] crate::state::files::UnsafePath),
}

impl ConfigError {
    /// The file the error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            ConfigError::Io { path, .. }
            | ConfigError::Parse { path, .. }
            | ConfigError::Invalid { path, .. } => path,
            ConfigError::Unsafe(u) => u.path(),
        }
    }
}

impl From<ConfigError> for crate::error::PilotError {
    fn from(e: ConfigError) -> Self {
        if let ConfigError::Unsafe(u) = e {
            let mut err = crate::error::PilotError::from(u);
            err.message = format!("config file refused: {}", err.message);
            return err;
        }
        let hint = format!(
            "fix the file (see config/pilot.toml for every key), then check it with `pilotctl config check {}`",
            e.path().display()
        );
        crate::error::PilotError::invalid(e.to_string(), hint)
    }
}

/// How the daemon reaches the overlay: kernel TUN device or userspace netstack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// TUN when `/dev/net/tun` and CAP_NET_ADMIN are there, userspace otherwise.
    #[default]
    Auto,
    /// Kernel TUN device; fail if it cannot be made.
    Tun,
    /// Userspace network stack with a SOCKS5 proxy; no privileges needed.
    Userspace,
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Mode::Auto),
            "tun" => Ok(Mode::Tun),
            "userspace" => Ok(Mode::Userspace),
            other => Err(format!(
                "unknown mode `{other}`: expected auto, tun or userspace"
            )),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Auto => "auto",
            Mode::Tun => "tun",
            Mode::Userspace => "userspace",
        })
    }
}

/// The daemon's configuration. Every field has a default, so an empty file is valid.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Hostname to claim (`NAME.pilot`). Overridden by `--hostname` and `set-hostname`.
    pub hostname: Option<Hostname>,
    /// auto | tun | userspace.
    pub mode: Mode,
    /// The overlay network /48; every node of one network must use the same.
    pub network: NetworkPrefix,
    /// Registries (`host:port`, or `host:port#KEY` to pin the registry's key) to register
    /// with; all of them are used.
    pub registries: Vec<String>,
    /// How the node talks to its registries.
    pub registry: RegistrySettings,
    /// Log filter (`error`, `warn`, `info`, `debug`, `trace`, or a tracing filter).
    pub log_level: Option<String>,
    /// The TUN device.
    pub tun: TunConfig,
    /// The UDP socket and WireGuard tunnels.
    pub tunnel: TunnelConfig,
    /// The local API.
    pub api: ApiConfig,
    /// Trust settings.
    pub trust: TrustConfig,
    /// Statically pinned peers; they count as trusted.
    #[serde(rename = "peer")]
    pub peers: Vec<PeerConfig>,
    /// The SOCKS5 proxy of userspace mode.
    pub socks5: Socks5Settings,
    /// Limits of the userspace TCP/IP stack.
    pub netstack: NetstackSettings,
    /// Overlay ports forwarded to local `HOST:PORT` targets.
    #[serde(rename = "expose")]
    pub exposes: Vec<ExposeConfig>,
    /// The message service's limits (port 1001).
    pub messages: MessagesConfig,
    /// How log lines look: `text` (default) or `json` (one object per line, for shippers).
    pub log_format: LogFormat,
    /// The MCP server (`pilotctl mcp`).
    pub mcp: McpConfig,
    /// The Prometheus metrics endpoint (off unless `listen` is set).
    pub metrics: MetricsConfig,
    /// How events are POSTed to the webhook (`pilotctl set-webhook`).
    pub webhook: WebhookConfig,
    /// The file service's limits (port 1004).
    pub files: FilesConfig,
    /// The resolver for `NAME.pilot` (TUN mode, and optionally on loopback).
    pub dns: DnsConfig,
    /// UDP in userspace mode: SOCKS5 UDP ASSOCIATE and exposed UDP ports.
    pub udp: UdpConfig,
    /// The pub/sub broker's limits (port 1002).
    pub pubsub: PubsubConfig,
    /// The task service's limits (port 1003).
    pub tasks: TasksConfig,
    /// `[relay]`: the TLS transport to the registries when UDP is blocked (issue 14).
    pub relay: RelayConfig,
}

/// `[mcp]`: what a language model may do through `pilotctl mcp`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct McpConfig {
    /// Offer the `approve` and `reject` tools (default false: a prompt cannot make this node
    /// trust a stranger; trust decisions stay with the operator's `pilotctl approve`).
    pub allow_trust_decisions: bool,
}

/// `log_format`: how log lines look on stderr. Under systemd (`JOURNAL_STREAM` set) `text`
/// lines carry `<N>` syslog priorities and no timestamp of ours (the journal adds its own).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line (tracing-subscriber's json format).
    Json,
}

/// `[metrics]`: a Prometheus text endpoint, `GET /metrics`. Off by default; give it a
/// loopback address (it has no authentication), e.g. `listen = "127.0.0.1:9469"`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// TCP address to serve `/metrics` on; none (the default) serves nothing.
    pub listen: Option<SocketAddr>,
}

/// `[webhook]`: the queue, timeout and retries of event delivery to the webhook URL set with
/// `pilotctl set-webhook` (the URL itself lives in the state directory).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Events waiting for the webhook; when it is full, new events are dropped and counted.
    pub queue: usize,
    /// Milliseconds one POST may take (connect, send, answer) before it counts as failed.
    pub timeout_ms: u64,
    /// Attempts per event (the first and its retries) before it is given up and counted.
    pub max_attempts: u32,
    /// Milliseconds before the first retry; doubled at each retry, at most 10 s.
    pub backoff_ms: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            queue: 1024,
            timeout_ms: 5000,
            max_attempts: 4,
            backoff_ms: 250,
        }
    }
}

/// `[files]`: what trusted peers may store through the file service (port 1004), and how
/// transfers are paced. Sizes in bytes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FilesConfig {
    /// Largest file accepted (refused with `too_large`).
    pub max_file_size: u64,
    /// Bytes `received/` and the partial files (counted at their full size) may hold together
    /// (refused with `quota`).
    pub quota: u64,
    /// Free space the disk keeps after a transfer completes (refused with `disk_full`).
    pub min_free_disk: u64,
    /// Connections open to port 1004 at once, from all peers together.
    pub max_connections: usize,
    /// Connections open to port 1004 at once from one peer.
    pub max_connections_per_peer: usize,
    /// Seconds either side waits for the other's next frame (or for a write to move)
    /// before it drops the connection; the sender then retries and resumes.
    pub stall_timeout_secs: u64,
    /// The receiver fsyncs and records its verified offset every this many MiB.
    pub sync_every_mib: u64,
}

impl Default for FilesConfig {
    fn default() -> Self {
        FilesConfig {
            max_file_size: 64 << 30,
            quota: 128 << 30,
            min_free_disk: 1 << 30,
            max_connections: 16,
            max_connections_per_peer: 4,
            stall_timeout_secs: 15,
            sync_every_mib: 64,
        }
    }
}

impl FilesConfig {
    /// Refuses limits of zero (except `min_free_disk`), which would refuse everything.
    fn validate(&self) -> Result<(), String> {
        let f = self;
        let fields = [
            ("max_file_size", f.max_file_size),
            ("quota", f.quota),
            ("max_connections", f.max_connections as u64),
            (
                "max_connections_per_peer",
                f.max_connections_per_peer as u64,
            ),
            ("stall_timeout_secs", f.stall_timeout_secs),
            ("sync_every_mib", f.sync_every_mib),
        ];
        match fields.iter().find(|(_, v)| *v == 0) {
            Some((name, _)) => Err(format!("files.{name} must be at least 1")),
            None => Ok(()),
        }
    }
}

/// `[messages]`: what trusted peers may take of the message service (connections, inbox
/// space, time), and how long stored message ids are remembered for dedupe.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MessagesConfig {
    /// Connections open to port 1001 at once, from all peers together.
    pub max_connections: usize,
    /// Connections open to port 1001 at once from one peer.
    pub max_connections_per_peer: usize,
    /// Seconds a connection may wait for its next message before it is closed.
    pub idle_timeout_secs: u64,
    /// Seconds one message (a started frame) or one ack may take to arrive or leave.
    pub read_timeout_secs: u64,
    /// Messages the inbox holds from all senders together.
    pub inbox_max_messages: usize,
    /// Bytes the inbox holds from all senders together.
    pub inbox_max_bytes: u64,
    /// Messages the inbox holds from one sender.
    pub inbox_max_messages_per_sender: usize,
    /// Bytes the inbox holds from one sender.
    pub inbox_max_bytes_per_sender: u64,
    /// Stored message ids remembered for dedupe (the oldest are forgotten first).
    pub dedupe_max_ids: usize,
    /// Days a stored message id is remembered for dedupe.
    pub dedupe_days: u64,
}

impl Default for MessagesConfig {
    fn default() -> Self {
        MessagesConfig {
            max_connections: 64,
            max_connections_per_peer: 4,
            idle_timeout_secs: 60,
            read_timeout_secs: 30,
            inbox_max_messages: 10_000,
            inbox_max_bytes: 256 << 20,
            inbox_max_messages_per_sender: 1_000,
            inbox_max_bytes_per_sender: 64 << 20,
            dedupe_max_ids: 100_000,
            dedupe_days: 30,
        }
    }
}

impl MessagesConfig {
    /// Refuses limits of zero, which would make the service refuse everything.
    fn validate(&self) -> Result<(), String> {
        let m = self;
        let fields = [
            ("max_connections", m.max_connections as u64),
            (
                "max_connections_per_peer",
                m.max_connections_per_peer as u64,
            ),
            ("idle_timeout_secs", m.idle_timeout_secs),
            ("read_timeout_secs", m.read_timeout_secs),
            ("inbox_max_messages", m.inbox_max_messages as u64),
            ("inbox_max_bytes", m.inbox_max_bytes),
            (
                "inbox_max_messages_per_sender",
                m.inbox_max_messages_per_sender as u64,
            ),
            ("inbox_max_bytes_per_sender", m.inbox_max_bytes_per_sender),
            ("dedupe_max_ids", m.dedupe_max_ids as u64),
            ("dedupe_days", m.dedupe_days),
        ];
        match fields.iter().find(|(_, v)| *v == 0) {
            Some((name, _)) => Err(format!("messages.{name} must be at least 1")),
            None => Ok(()),
        }
    }
}

/// `[socks5]`: the proxy that lets local programs reach peers in userspace mode.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Socks5Settings {
    /// Run the proxy (userspace mode only; TUN mode needs none).
    pub enabled: bool,
    /// Listening address; loopback unless `allow_non_loopback`.
    pub listen: SocketAddr,
    /// Allow a non-loopback `listen`: anyone who reaches it can use this node's trust.
    pub allow_non_loopback: bool,
    /// Client authentication: `"none"` (default) or `"password"` (RFC 1929, credentials in
    /// the owner-only file `socks5.credentials` of the state directory).
    pub auth: Socks5Auth,
}

/// How SOCKS5 clients authenticate (`[socks5] auth`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Socks5Auth {
    /// Any local process may use the proxy.
    #[default]
    None,
    /// RFC 1929 username/password from the owner-only credentials file.
    Password,
}

impl Socks5Auth {
    /// The config spelling: `none` or `password`.
    pub fn as_str(self) -> &'static str {
        match self {
            Socks5Auth::None => "none",
            Socks5Auth::Password => "password",
        }
    }
}

impl Default for Socks5Settings {
    fn default() -> Self {
        Socks5Settings {
            enabled: true,
            listen: DEFAULT_SOCKS5_LISTEN,
            allow_non_loopback: false,
            auth: Socks5Auth::None,
        }
    }
}

/// `[registry]`: how the node talks to its registries (which ones: `registries`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrySettings {
    /// Largest correction of our clock (seconds, either way) taken from a registry that says
    /// our timestamps are stale; a larger one is ignored.
    pub max_clock_offset_secs: u64,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        RegistrySettings {
            max_clock_offset_secs: DEFAULT_MAX_CLOCK_OFFSET_SECS,
        }
    }
}

/// `[netstack]`: limits of the userspace stack (see config/pilot.toml for the reasons).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NetstackSettings {
    /// Receive and send buffer of each TCP socket, KiB (at most 16384).
    pub tcp_buffer_kib: usize,
    /// Memory bound of all connections together, MiB; new ones beyond it are refused.
    pub max_memory_mib: usize,
    /// The most TCP sockets at once.
    pub max_flows: usize,
    /// Reset a connection that moved no byte for this long, seconds.
    pub idle_timeout_secs: u64,
    /// Reset a half-closed connection that moved no byte for this long, seconds.
    pub half_closed_timeout_secs: u64,
    /// Reset an inbound handshake not completed within this, seconds.
    pub handshake_timeout_secs: u64,
}

impl Default for NetstackSettings {
    fn default() -> Self {
        NetstackSettings {
            tcp_buffer_kib: 2048,
            max_memory_mib: 1024,
            max_flows: 1024,
            idle_timeout_secs: 3600,
            half_closed_timeout_secs: 120,
            handshake_timeout_secs: 10,
        }
    }
}

/// `[[expose]]`: an overlay TCP port forwarded to a local target.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExposeConfig {
    /// The overlay port peers connect to.
    pub port: u16,
    /// Where connections go: `HOST:PORT`, usually on loopback.
    pub to: String,
    /// Allow a link-local or cloud-metadata target (169.254.0.0/16, fe80::/10,
    /// 169.254.169.254, fd00:ec2::254, metadata.google.internal); refused by default.
    #[serde(default)]
    pub allow_link_local: bool,
}

/// `[tun]`: the kernel interface in TUN mode.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TunConfig {
    /// Interface name.
    pub name: String,
    /// Inner MTU, at least 1280.
    pub mtu: u16,
}

impl Default for TunConfig {
    fn default() -> Self {
        TunConfig {
            name: "pilot0".into(),
            mtu: DEFAULT_MTU,
        }
    }
}

/// `[tunnel]`: the UDP socket shared by WireGuard and control messages.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TunnelConfig {
    /// UDP port; 0 picks a free one.
    pub listen_port: u16,
    /// Persistent keepalive in seconds (0 = off).
    pub keepalive_secs: u16,
    /// Data-plane worker threads; 0 = one per core.
    pub workers: usize,
    /// WireGuard handshake messages per second answered per source (at least 1).
    pub handshakes_per_source: u32,
    /// Handshake messages per second answered without a cookie from all sources (at least 1).
    pub handshakes_global: u32,
}

impl Default for TunnelConfig {
    fn default() -> Self {
        TunnelConfig {
            listen_port: 0,
            keepalive_secs: DEFAULT_KEEPALIVE_SECS,
            workers: 0,
            handshakes_per_source: DEFAULT_HANDSHAKES_PER_SOURCE,
            handshakes_global: DEFAULT_HANDSHAKES_GLOBAL,
        }
    }
}

/// `[api]`: the local control socket.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Unix socket path; default `$PILOT_SOCKET` or `$PILOT_HOME/pilot.sock`.
    pub socket: Option<PathBuf>,
}

/// `[trust]`: who is trusted without asking, and how much strangers may ask.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrustConfig {
    /// Public keys or hostnames whose trust requests are approved automatically.
    pub allow: Vec<String>,
    /// Trust requests kept waiting for a decision; the oldest is dropped past this.
    pub max_pending: usize,
    /// After `reject`, the same key's new requests are dropped for this long (seconds).
    pub reject_cooldown_secs: u64,
    /// Trust messages taken from one peer key per minute (also the burst).
    pub messages_per_key_per_minute: u32,
}

impl Default for TrustConfig {
    fn default() -> Self {
        TrustConfig {
            allow: Vec::new(),
            max_pending: 100,
            reject_cooldown_secs: 24 * 3600,
            messages_per_key_per_minute: 10,
        }
    }
}

/// `[[peer]]`: a statically known peer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer's Ed25519 public key (base64 or hex).
    pub public_key: PublicKey,
    /// Its hostname, for display and `NAME.pilot`.
    #[serde(default)]
    pub hostname: Option<Hostname>,
    /// Its UDP endpoint, if known (`198.51.100.2:51820`, `[2001:db8::1]:51820`).
    #[serde(default)]
    pub endpoint: Option<SocketAddr>,
}

impl Config {
    /// Parses config text; `path` is used in error messages only.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(1);
            ConfigError::Parse {
                path: path.into(),
                line,
                message: e.message().trim().to_string(),
            }
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Reads and parses a config file, refusing one that another user (other than root) owns
    /// or that group or others can write.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        match crate::state::files::check_owner_and_mode(path, true) {
            Err(crate::state::files::UnsafePath::Io { source, .. }) => {
                return Err(ConfigError::Io {
                    path: path.into(),
                    source,
                })
            }
            r => r?,
        }
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.into(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Checks rules that the types alone do not.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.into(),
            message,
        };
        if self.tun.mtu < MIN_MTU {
            return Err(invalid(format!(
                "tun.mtu = {} is below the IPv6 minimum of {MIN_MTU}",
                self.tun.mtu
            )));
        }
        if self.tun.name.is_empty()
            || self.tun.name.len() > 15
            || !self
                .tun
                .name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        {
            return Err(invalid(format!(
                "tun.name = {:?} is not a valid interface name (1 to 15 letters, digits, - or _)",
                self.tun.name
            )));
        }
        for r in &self.registries {
            if !r.contains(':') {
                return Err(invalid(format!(
                    "registries: {r:?} needs a port (host:port)"
                )));
            }
        }
        if !self.socks5.listen.ip().is_loopback() && !self.socks5.allow_non_loopback {
            return Err(invalid(format!(
                "socks5.listen = {} is not a loopback address; set socks5.allow_non_loopback = true to serve it beyond this host",
                self.socks5.listen
            )));
        }
        let mut ports = std::collections::HashSet::new();
        for e in &self.exposes {
            if e.port == 0 || !ports.insert(e.port) {
                return Err(invalid(format!(
                    "expose: port {} is 0 or listed twice",
                    e.port
                )));
            }
            if !is_valid_expose_target(&e.to) {
                return Err(invalid(format!(
                    "expose: port {}: `{}` is not a target: expected HOST:PORT, e.g. 127.0.0.1:3000 or [::1]:3000",
                    e.port, e.to
                )));
            }
        }
        for (name, v) in [
            ("handshakes_per_source", self.tunnel.handshakes_per_source),
            ("handshakes_global", self.tunnel.handshakes_global),
        ] {
            if v == 0 {
                return Err(invalid(format!(
                    "tunnel.{name} must be at least 1 (0 would answer no handshake at all)"
                )));
            }
        }
        self.validate_services().map_err(invalid)?;
        let mut seen = std::collections::HashSet::new();
        for p in &self.peers {
            if !seen.insert(p.public_key) {
                return Err(invalid(format!(
                    "peer: public_key {} is listed twice",
                    p.public_key
                )));
            }
        }
        Ok(())
    }

    /// The limits of the agent services (messages, webhook, files, names, UDP, pub/sub,
    /// tasks): the first that is out of range, as a message.
    fn validate_services(&self) -> Result<(), String> {
        self.messages.validate()?;
        if self.webhook.queue == 0 || self.webhook.timeout_ms == 0 || self.webhook.max_attempts == 0
        {
            return Err(
                "webhook.queue, webhook.timeout_ms and webhook.max_attempts must be at least 1"
                    .into(),
            );
        }
        self.files.validate()?;
        self.dns.validate()?;
        self.udp.validate()?;
        pubsub_tasks::validate(&self.pubsub, &self.tasks)
    }
}

/// Whether `to` looks like `HOST:PORT` with a non-zero port (an `[[expose]]` target).
pub fn is_valid_expose_target(to: &str) -> bool {
    let Some((host, port)) = to.rsplit_once(':') else {
        return false;
    };
    let Ok(port) = port.parse::<u16>() else {
        return false;
    };
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && !host.contains(':')
            && host
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-' || c == b'_')
    };
    port != 0 && host_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("test.toml"))
    }

    #[test]
    fn a_config_file_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pilot.toml");
        std::fs::write(&path, "mode = \"userspace\"\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(Config::load(&path).unwrap().mode, Mode::Userspace);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o646)).unwrap();
        let e = crate::error::PilotError::from(Config::load(&path).unwrap_err());
        assert_eq!(e.code, crate::error::ErrorCode::Unauthorized);
        assert!(
            e.message.contains("writable by group or others"),
            "{}",
            e.message
        );
    }

    #[test]
    fn messages_limits_parse_and_zero_is_refused() {
        let c =
            parse("[messages]\nmax_connections_per_peer = 2\ninbox_max_bytes = 1000\n").unwrap();
        assert_eq!(c.messages.max_connections_per_peer, 2);
        assert_eq!(c.messages.inbox_max_bytes, 1000);
        assert_eq!(c.messages.max_connections, 64);
        let e = parse("[messages]\nread_timeout_secs = 0\n").unwrap_err();
        assert!(e.to_string().contains("messages.read_timeout_secs"), "{e}");
    }

    #[test]
    fn empty_config_is_all_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.tun.mtu, 1420);
        assert_eq!(c.tun.name, "pilot0");
        assert_eq!(c.mode, Mode::Auto);
        assert_eq!(c.network.to_string(), "fdc5:7a3e:91b4::/48");
    }

    #[test]
    fn shipped_example_config_parses() {
        let text = include_str!("../config/pilot.toml");
        parse(text).unwrap();
    }

    #[test]
    fn unknown_key_is_refused_with_its_name_and_line() {
        let err = parse("mode = \"tun\"\n\n[tun]\nname = \"x\"\nmtuu = 1400\n").unwrap_err();
        let s = err.to_string();
        assert!(s.contains("mtuu"), "{s}");
        assert!(s.contains("test.toml:5"), "{s}");
    }

    #[test]
    fn wrong_type_is_refused_with_its_name_and_line() {
        let err = parse("[tunnel]\nlisten_port = \"abc\"\n").unwrap_err();
        let s = err.to_string();
        assert!(s.contains("test.toml:2"), "{s}");
        let err = parse("[tun]\nmtu = 70000\n").unwrap_err();
        assert!(err.to_string().contains(":2"), "{err}");
    }

    #[test]
    fn handshake_limits_parse_and_zero_is_refused() {
        let c = parse("[tunnel]\nhandshakes_per_source = 5\nhandshakes_global = 300\n").unwrap();
        assert_eq!(c.tunnel.handshakes_per_source, 5);
        assert_eq!(c.tunnel.handshakes_global, 300);
        let d = parse("").unwrap();
        assert_eq!(
            d.tunnel.handshakes_per_source,
            DEFAULT_HANDSHAKES_PER_SOURCE
        );
        assert_eq!(d.tunnel.handshakes_global, DEFAULT_HANDSHAKES_GLOBAL);
        for key in ["handshakes_per_source", "handshakes_global"] {
            let e = parse(&format!("[tunnel]\n{key} = 0\n")).unwrap_err();
            assert!(e.to_string().contains(&format!("tunnel.{key}")), "{e}");
        }
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse("[tun]\nmtu = 1200\n")
            .unwrap_err()
            .to_string()
            .contains("tun.mtu"));
        assert!(parse("mode = \"kernel\"\n").is_err());
        assert!(parse("hostname = \"Bad_Name\"\n").is_err());
        assert!(parse("network = \"fd00::/64\"\n").is_err());
        assert!(parse("[tun]\nname = \"a/b\"\n").is_err());
        assert!(parse("registries = [\"nohost\"]\n").is_err());
    }

    #[test]
    fn socks5_and_expose_sections_parse_and_are_checked() {
        let c = parse(
            "[socks5]\nlisten = \"127.0.0.1:1081\"\n\n[[expose]]\nport = 8080\nto = \"127.0.0.1:3000\"\n",
        )
        .unwrap();
        assert_eq!(c.socks5.listen, "127.0.0.1:1081".parse().unwrap());
        assert!(c.socks5.enabled);
        assert_eq!(c.socks5.auth, Socks5Auth::None);
        let pw = parse("[socks5]\nauth = \"password\"\n").unwrap();
        assert_eq!(pw.socks5.auth, Socks5Auth::Password);
        assert!(parse("[socks5]\nauth = \"basic\"\n").is_err());
        assert_eq!(c.exposes[0].port, 8080);
        assert_eq!(c.exposes[0].to, "127.0.0.1:3000");
        assert!(parse("[socks5]\nlisten = \"0.0.0.0:1080\"\n")
            .unwrap_err()
            .to_string()
            .contains("allow_non_loopback"));
        parse("[socks5]\nlisten = \"0.0.0.0:1080\"\nallow_non_loopback = true\n").unwrap();
        let twice = "[[expose]]\nport = 1\nto = \"127.0.0.1:2\"\n[[expose]]\nport = 1\nto = \"127.0.0.1:3\"\n";
        assert!(parse(twice).is_err());
        assert!(parse("[[expose]]\nport = 1\nto = \"nope\"\n").is_err());
    }

    #[test]
    fn peers_parse_and_duplicates_are_refused() {
        let k = Identity::from_seed([1; 32]).public_key();
        let one = format!(
            "[[peer]]\npublic_key = \"{k}\"\nhostname = \"worker-node\"\nendpoint = \"198.51.100.2:4000\"\n"
        );
        let c = parse(&one).unwrap();
        assert_eq!(c.peers.len(), 1);
        assert_eq!(c.peers[0].public_key, k);
        assert_eq!(
            c.peers[0].endpoint,
            Some("198.51.100.2:4000".parse().unwrap())
        );
        let two = format!("{one}{one}");
        assert!(parse(&two).unwrap_err().to_string().contains("twice"));
        assert!(parse("[[peer]]\npublic_key = \"nope\"\n").is_err());
    }
}
