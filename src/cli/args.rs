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
    Peers {
        /// Only peers whose hostname, address, IPv6 or key contains this text.
        #[arg(long)]
        search: Option<String>,
    },
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
    Trust {
        /// Only relations whose hostname, address, IPv6 or key contains this text.
        #[arg(long)]
        search: Option<String>,
    },
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
    /// `PORT/udp` forwards UDP (`expose 5353/udp --to 127.0.0.1:5353`).
    Expose(ExposeArgs),
    /// Open a byte stream to a peer's overlay port: stdin goes to the peer, the peer's answer to
    /// stdout (port 1000 by convention: `echo '{"task":"x"}' | pilotctl connect worker-node 1000`).
    Connect {
        /// The peer (hostname, address, IPv6 or public key).
        peer: String,
        /// The peer's overlay TCP port.
        #[arg(default_value_t = 1000)]
        port: u16,
        /// Send this text instead of stdin, print the reply and exit.
        #[arg(long)]
        message: Option<String>,
        /// Seconds to wait: for the reply with --message (default 10), else for the
        /// connection (default: the daemon's own limit).
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Wait for one trusted peer to connect to our overlay port; its bytes go to stdout, stdin
    /// goes back to it.
    Listen {
        /// Our overlay TCP port (1000 by convention).
        port: u16,
    },
    /// Send a message to a peer's inbox; it is stored first and retried until the peer acks.
    /// With --wait, also wait for the peer's reply (`pilotctl reply`) and print it, e.g.
    /// `pilotctl send-message worker-node --data '{"task":"x"}' --type json --wait 10`.
    SendMessage(SendMessageArgs),
    /// Answer a message of our inbox: the reply goes to its sender, which may be waiting for
    /// it (`send-message --wait`), and is retried until acked, e.g.
    /// `pilotctl reply 0f3a...e1 --data done`.
    Reply(ReplyArgs),
    /// List the messages in our inbox, oldest first, or read one (`inbox read ID`), e.g.
    /// `pilotctl inbox --from worker-node --since 10m --limit 5`.
    Inbox(InboxArgs),
    /// Print live events (trust requests and decisions, peers up and down, path changes,
    /// messages) as they happen, one per line (NDJSON with --json), until interrupted, e.g.
    /// `pilotctl events --json --count 1 --timeout 30`.
    Events {
        /// Stop after this many events.
        #[arg(long)]
        count: Option<usize>,
        /// Stop after this many seconds (exit 0).
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<f64>,
    },
    /// POST every live event as JSON to an http:// URL (kept across restarts; a slow or dead
    /// webhook never slows the daemon: see `pilotctl webhook` for its counters), e.g.
    /// `pilotctl set-webhook http://127.0.0.1:8080/events`.
    SetWebhook {
        /// http://HOST[:PORT][/PATH].
        url: String,
    },
    /// Stop POSTing events to the webhook, e.g. `pilotctl clear-webhook`.
    ClearWebhook,
    /// Show the webhook URL and its counters (delivered, failed, dropped, queued), e.g.
    /// `pilotctl webhook --json`.
    Webhook,
    /// List sent messages not yet acked by their recipients.
    Outbox,
    /// Send a file to a peer's received/ directory: queued at once, then streamed, resumed
    /// after a dropped connection or a restart of either side, and verified by SHA-256.
    #[command(
        after_help = "Example: pilotctl send-file worker-node ./results.csv --name results-1.csv --wait 600"
    )]
    SendFile {
        /// The peer (hostname, address, IPv6 or public key).
        peer: String,
        /// The file (it must not change until it is delivered).
        path: PathBuf,
        /// The name to offer (default: the file's own name).
        #[arg(long)]
        name: Option<String>,
        /// Wait until the peer has the file, verified, in its received/ (up to SECONDS, an
        /// hour without a value); the transfer goes on after a timeout.
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "3600")]
        wait: Option<f64>,
    },
    /// List the files that arrived complete and verified: name, size, sender, SHA-256, time.
    #[command(after_help = "Example: pilotctl received --clear")]
    Received {
        /// Delete the listed files after listing them.
        #[arg(long)]
        clear: bool,
    },
    /// List outgoing and incoming file transfers with their progress and any refusal code.
    #[command(after_help = "Example: pilotctl transfers --json")]
    Transfers,
    /// Show the effective configuration and where each value comes from; `--set KEY=VALUE`
    /// edits $PILOT_HOME/config.toml; `config check FILE` validates a file.
    Config(crate::cli::bootstrap::ConfigArgs),
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
    /// Run a registry (rendezvous server for hostnames, trust requests and endpoints).
    #[command(subcommand)]
    Registry(RegistryCmd),
    /// Serve this node to a language model as MCP tools over stdin/stdout (the Model Context
    /// Protocol's stdio transport): info, peers, find, handshake, send_message, inbox, reply,
    /// publish, send_file, tasks. `approve`/`reject` are offered only with `[mcp]
    /// allow_trust_decisions = true` in the config file.
    #[command(
        after_help = "Example: an MCP client starts it as {\"command\": \"pilotctl\", \"args\": [\"mcp\"], \"env\": {\"PILOT_HOME\": \"/home/me/.pilot\"}}"
    )]
    Mcp(McpArgs),
    /// Commands added for parity with Pilot Protocol's pilotctl (init, health, context, ...).
    #[command(flatten)]
    Parity(crate::cli::parity_args::ParityCmd),
    /// Names in TUN mode: the daemon's resolver for NAME.pilot and the system's wiring to it.
    #[command(subcommand)]
    Dns(DnsCmd),
}

/// Options of `mcp`.
#[derive(Debug, Clone, Args)]
pub struct McpArgs {
    /// Config file holding `[mcp]` (default: $PILOT_HOME/config.toml if it exists).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Options of `send-message`.
#[derive(Debug, Clone, Args)]
pub struct SendMessageArgs {
    /// The peer (hostname, address, IPv6 or public key).
    pub peer: String,
    /// The payload (binary: without --data and --file, read from stdin).
    #[arg(long, conflicts_with = "file")]
    pub data: Option<String>,
    /// text (default), json (--data must be valid JSON) or binary (from --file or stdin).
    #[arg(long = "type", default_value = "text")]
    pub kind: String,
    /// Read the payload from this file (any type; binary for arbitrary bytes).
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Wait for the peer's reply, up to SECONDS (30 without a value); a later reply lands in
    /// the inbox.
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "30")]
    pub wait: Option<f64>,
}

/// Options of `reply`.
#[derive(Debug, Clone, Args)]
pub struct ReplyArgs {
    /// The id of the received message (`pilotctl inbox`).
    pub id: String,
    /// The payload (binary: without --data and --file, read from stdin).
    #[arg(long, conflicts_with = "file")]
    pub data: Option<String>,
    /// text (default), json or binary.
    #[arg(long = "type", default_value = "text")]
    pub kind: String,
    /// Read the payload from this file.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
}

/// Options of `inbox`.
#[derive(Debug, Clone, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct InboxArgs {
    /// Only messages from this peer (hostname, address, IPv6 or public key).
    #[arg(long)]
    pub from: Option<String>,
    /// Only messages received since TIME (RFC 3339, e.g. 2026-12-05T12:00:00Z, or unix
    /// seconds) or for DURATION (e.g. 90s, 10m, 2h, 1d).
    #[arg(long, value_name = "TIME|DURATION")]
    pub since: Option<String>,
    /// At most N messages, the oldest first.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Delete the listed messages after listing them.
    #[arg(long)]
    pub clear: bool,
    /// `read ID`: one message.
    #[command(subcommand)]
    pub cmd: Option<InboxCmd>,
}

/// `pilotctl inbox …`.
#[derive(Debug, Clone, Subcommand)]
pub enum InboxCmd {
    /// Show one message of the inbox in full, e.g. `pilotctl inbox read 0f3a...e1`.
    Read {
        /// The message id.
        id: String,
    },
}

/// `PORT`, `PORT/tcp` or `PORT/udp`.
fn port_spec(s: &str) -> Result<(u16, crate::userspace::expose::ExposeProtocol), String> {
    crate::userspace::expose::parse_port_spec(s)
        .ok_or_else(|| format!("`{s}` is not a port: expected PORT or PORT/udp, e.g. 5353/udp"))
}

/// `pilotctl dns …`.
#[derive(Debug, Subcommand)]
pub enum DnsCmd {
    /// Where the resolver listens, its TTL, the systemd-resolved wiring of the TUN link and
    /// its counters.
    ///
    /// Example: pilotctl dns status --json
    Status,
    /// Print how the system's resolver reaches the daemon for .pilot names; with --apply, set
    /// systemd-resolved's per-link DNS and `~pilot` routing domain now (runtime state only;
    /// no file is written).
    ///
    /// Example: sudo pilotctl dns setup --apply
    Setup {
        /// Apply the change (systemd-resolved only) instead of printing it.
        #[arg(long)]
        apply: bool,
    },
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
    /// The overlay port peers connect to: PORT (TCP) or PORT/udp.
    #[arg(required_unless_present_any = ["list", "remove"], conflicts_with_all = ["list", "remove"], requires = "to", value_parser = port_spec, value_name = "PORT[/udp]")]
    pub port: Option<(u16, crate::userspace::expose::ExposeProtocol)>,
    /// The local target, HOST:PORT (e.g. 127.0.0.1:3000).
    #[arg(long, value_name = "HOST:PORT")]
    pub to: Option<String>,
    /// List the exposed ports.
    #[arg(long, conflicts_with = "remove")]
    pub list: bool,
    /// Stop exposing this overlay port (PORT or PORT/udp).
    #[arg(long, value_name = "PORT[/udp]", value_parser = port_spec)]
    pub remove: Option<(u16, crate::userspace::expose::ExposeProtocol)>,
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
    /// Show a registry's status: instance, store, counts and lag (from the status file in its
    /// state directory; with a PostgreSQL store, every instance of the cluster).
    ///
    /// Example: `pilotctl registry status --store postgres://pilot@db/pilot --json`
    Status(RegistryStatusArgs),
}

/// Options of `registry status`.
#[derive(Debug, Clone, Args)]
pub struct RegistryStatusArgs {
    /// State directory of the registry (default $PILOT_HOME/registry).
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Registry config file: its `state_dir` and `store` are used.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// A PostgreSQL connection string: list every instance of the cluster.
    #[arg(long)]
    pub store: Option<String>,
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
    /// Store: `redb` (default) or a PostgreSQL connection string shared by the instances of a
    /// cluster, e.g. postgres://pilot@db.example/pilot (overrides `store`).
    #[arg(long)]
    pub store: Option<String>,
    /// This instance's name in a cluster (default: the listen address; overrides `instance`).
    #[arg(long)]
    pub instance: Option<String>,
    /// The registry key file, the same for every instance of a cluster (default:
    /// registry.key in the state directory; overrides `key_file`).
    #[arg(long)]
    pub key_file: Option<PathBuf>,
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
    Status {
        /// Print nothing; exit 0 when the daemon answers, 1 otherwise.
        #[arg(long)]
        check: bool,
    },
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
