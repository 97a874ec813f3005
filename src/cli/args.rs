//! The command line's grammar: every command, option and argument of `pilotctl`, as clap
//! definitions. Nothing here runs anything.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

use crate::config::Mode;

/// pilot: permanent addresses and private, encrypted paths between AI agents.
#[derive(Debug, Parser)]
#[command(name = "pilotctl", version, about, long_about = None)]
pub struct Cli {
    /// Print machine-readable JSON: {"status":"ok","data":…} on stdout, or
    /// {"status":"error","code":…,"message":…,"hint":…} on stderr.
    #[arg(long, global = true)]
    pub json: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start, stop and inspect the daemon.
    #[command(subcommand)]
    Daemon(DaemonCmd),
    /// Show this node's address, IPv6, hostname, public key, mode, uptime and peer count.
    Info,
    /// List peers: address, hostname, endpoint, last handshake, traffic and drops.
    Peers,
    /// Change the hostname this node claims (NAME.pilot).
    SetHostname {
        /// 1-63 lowercase letters, digits and hyphens.
        name: String,
    },
    /// Ask a peer (hostname, address, IPv6 or public key) to trust us; with its approval (or
    /// its own request) trust is mutual and a tunnel may form.
    Handshake {
        /// The peer.
        peer: String,
        /// Why, shown to the peer (at most 256 bytes).
        justification: Option<String>,
    },
    /// List trust requests waiting for our decision.
    Pending,
    /// Approve a pending trust request.
    Approve {
        /// The peer.
        peer: String,
    },
    /// Reject a pending trust request.
    Reject {
        /// The peer.
        peer: String,
        /// Why, shown to the peer.
        reason: Option<String>,
    },
    /// Withdraw trust from a peer: the tunnel comes down on both sides.
    Untrust {
        /// The peer.
        peer: String,
    },
    /// List every trust relation (trusted, pending, requested, rejected, static).
    Trust,
    /// Look up an exact hostname at the registries: key, address and IPv6.
    Find {
        /// The hostname (`worker-node` or `worker-node.pilot`).
        name: String,
    },
    /// Probe a trusted peer over its current path (direct or relay): round-trip times.
    Ping {
        /// The peer (hostname, address, IPv6 or public key).
        peer: String,
        /// How many probes (250 ms apart).
        #[arg(long, short = 'c', default_value_t = 4)]
        count: u32,
    },
    /// Forward an overlay TCP port to a local HOST:PORT, so peers reach a local service
    /// (`expose 8080 --to 127.0.0.1:3000`); `--list` shows them, `--remove PORT` stops one.
    Expose(ExposeArgs),
    /// Open a byte stream to a peer's overlay port: stdin goes to the peer, the peer's answer to
    /// stdout (port 1000 by convention: `echo '{"task":"x"}' | pilotctl connect worker-node 1000`).
    Connect {
        /// The peer (hostname, address, IPv6 or public key).
        peer: String,
        /// The peer's overlay TCP port.
        port: u16,
    },
    /// Wait for one trusted peer to connect to our overlay port; its bytes go to stdout, stdin
    /// goes back to it.
    Listen {
        /// Our overlay TCP port (1000 by convention).
        port: u16,
    },
    /// Send a message to a peer's inbox; it is stored first and retried until the peer acks.
    SendMessage {
        /// The peer (hostname, address, IPv6 or public key).
        peer: String,
        /// The payload.
        #[arg(long)]
        data: String,
        /// json (default: --data must be valid JSON) or text.
        #[arg(long = "type", default_value = "json")]
        kind: String,
    },
    /// List the messages in our inbox.
    Inbox {
        /// Delete them after listing.
        #[arg(long)]
        clear: bool,
    },
    /// List sent messages not yet acked by their recipients.
    Outbox,
    /// Subscribe to a topic pattern on a peer's broker (overlay port 1002) and print each
    /// event as it arrives (NDJSON with --json): `*` matches one segment, a final `>` (or
    /// `**`) the rest. Example: `pilotctl subscribe worker-node 'sensors.>' --count 10`.
    Subscribe(SubscribeArgs),
    /// Publish an event on a peer's broker, or with --local on ours (to every trusted
    /// subscriber of this node). Example: `pilotctl publish --local sensors.temp --data 21.5`.
    Publish(PublishArgs),
    /// Show our pub/sub broker: topics with their sequence numbers, subscribers with their
    /// queued, delivered and dropped counters. Example: `pilotctl pubsub --json`.
    Pubsub,
    /// Hand tasks to trusted peers and work on theirs (overlay port 1003); every state change
    /// is signed by the node that makes it. Example: `pilotctl task submit worker-node --task
    /// '{"op":"resize"}' --deadline 600`.
    #[command(subcommand)]
    Task(TaskCmd),
    /// Configuration files.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Run a registry (rendezvous server for hostnames, trust requests and endpoints).
    #[command(subcommand)]
    Registry(RegistryCmd),
}

/// `pilotctl task …`.
#[derive(Debug, Subcommand)]
pub enum TaskCmd {
    /// Submit a task to a trusted peer; it is stored and retried until the worker has it.
    /// Example: `pilotctl task submit worker-node --task '{"op":"resize","w":640}'`.
    Submit {
        /// The worker (hostname, address, IPv6 or public key).
        peer: String,
        /// The task, JSON.
        #[arg(long)]
        task: String,
        /// A file to attach.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Seconds until it expires (default from [tasks] default_deadline_secs).
        #[arg(long)]
        deadline: Option<u64>,
    },
    /// List tasks we were asked to do, or with --submitted those we submitted.
    /// Example: `pilotctl task list --submitted`.
    List {
        /// The tasks we submitted.
        #[arg(long)]
        submitted: bool,
    },
    /// Accept a task we were asked to do. Example: `pilotctl task accept 0123…cdef`.
    Accept {
        /// The task id.
        id: String,
    },
    /// Decline a task we were asked to do. Example: `pilotctl task decline ID --reason busy`.
    Decline {
        /// The task id.
        id: String,
        /// Why, shown to the submitter.
        #[arg(long)]
        reason: String,
    },
    /// Report an accepted task's result (DONE), or with --failed that it failed.
    /// Example: `pilotctl task result ID --data '{"ok":true}'`.
    Result {
        /// The task id.
        id: String,
        /// The result as text.
        #[arg(long, required_unless_present = "file")]
        data: Option<String>,
        /// A result file.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Report FAILED (with --data saying why).
        #[arg(long)]
        failed: bool,
    },
    /// Show a task with its signed state changes. Example: `pilotctl task status ID --json`.
    Status {
        /// The task id.
        id: String,
    },
    /// Wait until a task is final (DECLINED, DONE, FAILED, EXPIRED).
    /// Example: `pilotctl task wait ID --timeout 120`.
    Wait {
        /// The task id.
        id: String,
        /// Seconds to wait at most (a `timeout` error then).
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
}

/// Options of `subscribe`.
#[derive(Debug, Clone, Args)]
pub struct SubscribeArgs {
    /// The broker's peer (hostname, address, IPv6 or public key), or `local` for ours.
    pub peer: String,
    /// The topic pattern (e.g. `sensors.*.temp`, `sensors.>`).
    pub topic: String,
    /// Stop after this many events.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop after this many seconds (an error if --count events did not arrive by then).
    #[arg(long)]
    pub timeout: Option<f64>,
}

/// Options of `publish`.
#[derive(Debug, Clone, Args)]
pub struct PublishArgs {
    /// The broker's peer then the topic; with --local, only the topic.
    #[arg(required = true, num_args = 1..=2, value_names = ["PEER", "TOPIC"])]
    pub target: Vec<String>,
    /// Publish on our own broker.
    #[arg(long)]
    pub local: bool,
    /// The payload (text).
    #[arg(long)]
    pub data: String,
}

/// Options of `expose`.
#[derive(Debug, Clone, Args)]
pub struct ExposeArgs {
    /// The overlay port peers connect to.
    #[arg(required_unless_present_any = ["list", "remove"], conflicts_with_all = ["list", "remove"], requires = "to")]
    pub port: Option<u16>,
    /// The local target, HOST:PORT (e.g. 127.0.0.1:3000).
    #[arg(long, value_name = "HOST:PORT")]
    pub to: Option<String>,
    /// List the exposed ports.
    #[arg(long, conflicts_with = "remove")]
    pub list: bool,
    /// Stop exposing this overlay port.
    #[arg(long, value_name = "PORT")]
    pub remove: Option<u16>,
    /// Allow a link-local or cloud-metadata target (169.254.0.0/16, fe80::/10,
    /// 169.254.169.254, fd00:ec2::254, metadata.google.internal), refused by default.
    #[arg(long, requires = "to")]
    pub allow_link_local: bool,
}

/// `pilotctl registry …`.
#[derive(Debug, Subcommand)]
pub enum RegistryCmd {
    /// Run a registry in the foreground until SIGTERM or Ctrl-C (for systemd and containers).
    Run(RegistryArgs),
    /// Forget the key this node learned on first use for a registry (after that registry's
    /// key really changed): the node registers with it again and learns its key anew. Keys
    /// pinned in the config (`HOST:PORT#KEY`) are changed there instead.
    ForgetKey {
        /// The registry, HOST:PORT as configured (`pilotctl info` lists them).
        registry: String,
    },
}

/// Options of `registry run`.
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// UDP ADDR:PORT to listen on (overrides `listen` in the config file).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// State directory for registry.redb (overrides `state_dir`; default $PILOT_HOME/registry).
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Registry config file (config/registry.toml is a commented example).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// `pilotctl daemon …`.
#[derive(Debug, Subcommand)]
pub enum DaemonCmd {
    /// Start the daemon in the background, wait until it is ready, print its address.
    Start(DaemonArgs),
    /// Run the daemon in the foreground (for systemd and containers).
    Run(DaemonArgs),
    /// Stop the daemon: SIGTERM (graceful), then SIGKILL after --timeout seconds.
    Stop {
        /// Seconds to wait for a graceful stop before forcing it.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Say whether a daemon runs for this state directory, and its pid and address.
    Status,
}

/// Options shared by `daemon start` and `daemon run`.
#[derive(Debug, Clone, Args)]
pub struct DaemonArgs {
    /// Hostname to claim.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Config file (default: $PILOT_HOME/config.toml if it exists).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// auto | tun | userspace.
    #[arg(long)]
    pub mode: Option<Mode>,
    /// Registry HOST:PORT (repeatable). Default from PILOT_REGISTRY (comma-separated) or config.
    #[arg(long = "registry")]
    pub registries: Vec<String>,
}

/// `pilotctl config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Check a config file: report the first error with its key and line, or print the result.
    Check {
        /// The file.
        file: PathBuf,
    },
}
