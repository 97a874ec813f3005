//! The `pilotctl` command line: argument parsing, dispatch, and output as text or as the JSON
//! envelope (`--json`). Every command is a thin client of the daemon's local API, except the
//! ones that manage the daemon process itself and `config check`.

use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::api::{Client, Envelope, InfoData, PeersData, Request};
use crate::config::{Config, Mode};
use crate::daemon::{self, DaemonOptions};
use crate::error::{ErrorCode, PilotError};
use crate::mapping::Hostname;
use crate::state::lock::DaemonLock;
use crate::state::paths::StatePaths;

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
    /// Configuration files.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Run a registry (rendezvous server for hostnames, trust requests and endpoints).
    #[command(subcommand)]
    Registry(RegistryCmd),
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
}

/// `pilotctl registry …`.
#[derive(Debug, Subcommand)]
pub enum RegistryCmd {
    /// Run a registry in the foreground until SIGTERM or Ctrl-C (for systemd and containers).
    Run(RegistryArgs),
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

/// What a command produced: data for the envelope plus its text rendering.
struct Output {
    data: serde_json::Value,
    text: String,
}

impl Output {
    fn new<T: Serialize>(data: &T, text: impl Into<String>) -> Self {
        Output {
            data: serde_json::to_value(data).unwrap_or(serde_json::Value::Null),
            text: text.into(),
        }
    }
}

/// Parses the process arguments and runs the command. Usage errors exit 2, other errors 1.
pub fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let json = argv.iter().any(|a| a == "--json");
    let cli = match Cli::try_parse_from(&argv) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            if json {
                let detail = e.to_string();
                let first = detail
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("invalid command line")
                    .trim_start_matches("error: ");
                print_error(
                    true,
                    &PilotError::invalid(
                        first.to_string(),
                        "run `pilotctl --help` (or `pilotctl COMMAND --help`) for usage",
                    ),
                );
            } else {
                let _ = e.print();
            }
            return ExitCode::from(2);
        }
    };
    let is_stream = matches!(
        cli.command,
        Command::Connect { .. } | Command::Listen { .. }
    );
    match run(cli.command) {
        Ok(_) if is_stream => ExitCode::SUCCESS,
        Ok(out) => {
            if cli.json {
                println!(
                    "{}",
                    serde_json::to_string(&Envelope::Ok { data: out.data }).expect("JSON")
                );
            } else if !out.text.is_empty() {
                println!("{}", out.text.trim_end());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            print_error(cli.json, &e);
            ExitCode::from(1)
        }
    }
}

fn print_error(json: bool, e: &PilotError) {
    if json {
        eprintln!(
            "{}",
            serde_json::to_string(&Envelope::Error(e.clone())).expect("JSON")
        );
    } else {
        eprintln!("error: {} [{}]", e.message, e.code);
        if !e.hint.is_empty() {
            eprintln!("hint: {}", e.hint);
        }
    }
}

fn run(cmd: Command) -> Result<Output, PilotError> {
    match cmd {
        Command::Daemon(DaemonCmd::Run(args)) => {
            daemon::run(daemon_options(&args)?)?;
            Ok(Output::new(&serde_json::json!({"stopped": true}), ""))
        }
        Command::Daemon(DaemonCmd::Start(args)) => daemon_start(&args),
        Command::Daemon(DaemonCmd::Stop { timeout }) => daemon_stop(timeout),
        Command::Daemon(DaemonCmd::Status) => daemon_status(),
        Command::Info => {
            let info = info()?;
            Ok(Output::new(&info, render_info(&info)))
        }
        Command::Peers => {
            let v = call(&Request::Peers {})?;
            let data: PeersData = serde_json::from_value(v.clone())
                .map_err(|e| PilotError::internal(format!("unexpected peers reply: {e}")))?;
            Ok(Output {
                data: v,
                text: render_peers(&data),
            })
        }
        Command::SetHostname { name } => {
            let h = parse_hostname(&name)?;
            let data = call(&Request::SetHostname {
                hostname: h.to_string(),
            })?;
            Ok(Output {
                data,
                text: format!("hostname set to {h}"),
            })
        }
        Command::Handshake {
            peer,
            justification,
        } => {
            let v = call(&Request::Handshake {
                peer,
                justification,
            })?;
            let text = match v["state"].as_str() {
                Some("trusted") | Some("static") => format!("{} is trusted: the tunnel may form", peer_label(&v)),
                _ => format!(
                    "trust requested from {}; it appears in their `pilotctl pending` until they approve",
                    peer_label(&v)
                ),
            };
            Ok(Output { data: v, text })
        }
        Command::Pending => {
            let v = call(&Request::Pending {})?;
            let mut text = String::new();
            for p in v["pending"].as_array().into_iter().flatten() {
                text.push_str(&format!(
                    "{}  {}  {}\n    justification: {}\n",
                    p["hostname"].as_str().unwrap_or("-"),
                    p["address"].as_str().unwrap_or("-"),
                    p["public_key"].as_str().unwrap_or("-"),
                    p["justification"].as_str().unwrap_or("")
                ));
            }
            if text.is_empty() {
                text = "no pending trust requests".into();
            }
            Ok(Output { data: v, text })
        }
        Command::Approve { peer } => {
            let v = call(&Request::Approve { peer })?;
            let text = format!("approved {}: trust is mutual", peer_label(&v));
            Ok(Output { data: v, text })
        }
        Command::Reject { peer, reason } => {
            let v = call(&Request::Reject { peer, reason })?;
            let text = format!("rejected {}", peer_label(&v));
            Ok(Output { data: v, text })
        }
        Command::Untrust { peer } => {
            let v = call(&Request::Untrust { peer })?;
            let text = format!("no longer trusting {}: tunnel torn down", peer_label(&v));
            Ok(Output { data: v, text })
        }
        Command::Trust => {
            let v = call(&Request::Trust {})?;
            let mut text = String::new();
            for p in v["peers"].as_array().into_iter().flatten() {
                text.push_str(&format!(
                    "{:<10} {:<24} {}  {}\n",
                    p["state"].as_str().unwrap_or("-"),
                    p["hostname"].as_str().unwrap_or("-"),
                    p["address"].as_str().unwrap_or("-"),
                    p["public_key"].as_str().unwrap_or("-")
                ));
            }
            if text.is_empty() {
                text = "no trust relations".into();
            }
            Ok(Output { data: v, text })
        }
        Command::Find { name } => {
            let v = call(&Request::Find { hostname: name })?;
            let text = format!(
                "hostname    {}\naddress     {}\nipv6        {}\npublic key  {}",
                v["hostname"].as_str().unwrap_or("-"),
                v["address"].as_str().unwrap_or("-"),
                v["ipv6"].as_str().unwrap_or("-"),
                v["public_key"].as_str().unwrap_or("-")
            );
            Ok(Output { data: v, text })
        }
        Command::Ping { peer, count } => {
            let v = call(&Request::Ping {
                peer,
                count: Some(count),
            })?;
            let mut text = String::new();
            for (i, r) in v["rtt_ms"].as_array().into_iter().flatten().enumerate() {
                match r.as_f64() {
                    Some(ms) => text.push_str(&format!(
                        "probe {}: {:.2} ms via {}\n",
                        i + 1,
                        ms,
                        v["path"].as_str().unwrap_or("-")
                    )),
                    None => text.push_str(&format!("probe {}: timeout\n", i + 1)),
                }
            }
            text.push_str(&format!(
                "{} sent, {} received; path {} ({})",
                v["sent"],
                v["received"],
                v["path"].as_str().unwrap_or("-"),
                v["endpoint"].as_str().unwrap_or("-")
            ));
            if let (Some(min), Some(avg), Some(max)) = (
                v["min_ms"].as_f64(),
                v["avg_ms"].as_f64(),
                v["max_ms"].as_f64(),
            ) {
                text.push_str(&format!("; rtt min/avg/max {min:.2}/{avg:.2}/{max:.2} ms"));
            }
            if v["received"].as_u64() == Some(0) {
                return Err(PilotError::new(
                    crate::error::ErrorCode::Timeout,
                    format!(
                        "no probe reply from {}",
                        v["address"].as_str().unwrap_or("the peer")
                    ),
                    "check `pilotctl peers` (path) and that the peer's daemon runs",
                ));
            }
            Ok(Output { data: v, text })
        }
        Command::Expose(args) => expose(args),
        Command::Registry(RegistryCmd::Run(args)) => registry_run(&args),
        Command::Connect { peer, port } => stream(&Request::Connect { peer, port }),
        Command::Listen { port } => stream(&Request::Listen { port }),
        Command::SendMessage { peer, data, kind } => {
            let v = call(&Request::SendMessage {
                peer,
                data,
                kind: Some(kind),
            })?;
            let text = match v["status"].as_str() {
                Some("delivered") => format!("message {} delivered", v["id"].as_str().unwrap_or("")),
                _ => format!(
                    "message {} queued: it is kept and retried until the peer acks (see `pilotctl outbox`)",
                    v["id"].as_str().unwrap_or("")
                ),
            };
            Ok(Output { data: v, text })
        }
        Command::Inbox { clear } => {
            let v = call(&Request::Inbox { clear })?;
            let mut text = String::new();
            for m in v["messages"].as_array().into_iter().flatten() {
                text.push_str(&format!(
                    "{} from {} ({}): {}\n",
                    m["id"].as_str().unwrap_or(""),
                    m["from_hostname"].as_str().unwrap_or("-"),
                    m["from_address"].as_str().unwrap_or("-"),
                    match &m["data"] {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    }
                ));
            }
            if text.is_empty() {
                text = "inbox is empty".into();
            }
            Ok(Output { data: v, text })
        }
        Command::Outbox => {
            let v = call(&Request::Outbox {})?;
            let n = v["outbox"].as_array().map_or(0, |a| a.len());
            Ok(Output {
                data: v,
                text: format!("{n} message(s) waiting for an ack"),
            })
        }
        Command::Config(ConfigCmd::Check { file }) => {
            let cfg = Config::load(&file).map_err(|e| {
                PilotError::invalid(
                    e.to_string(),
                    "see config/pilot.toml for every key and its type",
                )
            })?;
            Ok(Output::new(
                &serde_json::json!({"file": file.display().to_string(), "valid": true, "config": cfg}),
                format!("{}: ok", file.display()),
            ))
        }
    }
}

/// `connect` / `listen`: stdin to the stream, the stream to stdout, until both ends finish.
/// With `--json`, only errors use the envelope: the stream's bytes are the output.
fn stream(req: &Request) -> Result<Output, PilotError> {
    use std::io::Write;
    let client = Client::connect(&paths()?.socket)?;
    let (_, mut reader, mut writer) = client.open_stream(req)?;
    let up = std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let _ = std::io::copy(&mut stdin, &mut writer);
        let _ = writer.shutdown(std::net::Shutdown::Write);
    });
    let mut stdout = std::io::stdout().lock();
    std::io::copy(&mut reader, &mut stdout).map_err(|e| {
        PilotError::new(
            ErrorCode::ConnectionFailed,
            format!("the stream broke: {e}"),
            "see the daemon log",
        )
    })?;
    let _ = stdout.flush();
    // Let what stdin still holds reach the peer (a reply written after the peer finished
    // sending), unless stdin is a terminal that may never end.
    // SAFETY: isatty only inspects file descriptor 0.
    if unsafe { libc::isatty(0) } == 0 {
        let _ = up.join();
    }
    Ok(Output {
        data: serde_json::Value::Null,
        text: String::new(),
    })
}

/// `hostname (address)` or the address alone.
fn peer_label(v: &serde_json::Value) -> String {
    match (v["hostname"].as_str(), v["address"].as_str()) {
        (Some(h), Some(a)) => format!("{h} ({a})"),
        (None, Some(a)) => a.to_string(),
        _ => "the peer".into(),
    }
}

fn registry_run(args: &RegistryArgs) -> Result<Output, PilotError> {
    use crate::registry::runner::{run_registry_with_config, RegistryConfig, RunnerError};
    let to_pilot = |e: RunnerError| {
        let code = match &e {
            RunnerError::Io { source, .. } if source.kind() == std::io::ErrorKind::AddrInUse => {
                ErrorCode::AlreadyExists
            }
            RunnerError::Io { .. } | RunnerError::Config { .. } => ErrorCode::InvalidArgument,
            RunnerError::Store(_) => ErrorCode::Internal,
            RunnerError::Identity(_) => ErrorCode::Unauthorized,
        };
        PilotError::new(code, e.to_string(), e.hint())
    };
    let mut config = match &args.config {
        Some(path) => {
            if !path.exists() {
                return Err(PilotError::new(
                    ErrorCode::NotFound,
                    format!("config file {} does not exist", path.display()),
                    "give the path of an existing file (config/registry.toml is a commented example)",
                ));
            }
            RegistryConfig::load(path).map_err(to_pilot)?
        }
        None => {
            let listen = args.listen.ok_or_else(|| {
                PilotError::invalid(
                    "no listen address: give --listen ADDR:PORT or --config FILE",
                    "e.g. `pilotctl registry run --listen 0.0.0.0:7000 --state /var/lib/pilot-registry`",
                )
            })?;
            let state = match &args.state {
                Some(s) => s.clone(),
                None => paths()?.dir.join("registry"),
            };
            RegistryConfig::new(listen, state)
        }
    };
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let Some(s) = &args.state {
        config.state_dir = s.clone();
    }
    let filter = std::env::var("PILOT_LOG").unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| PilotError::internal(format!("cannot start the runtime: {e}")))?;
    rt.block_on(run_registry_with_config(config))
        .map_err(to_pilot)?;
    Ok(Output::new(
        &serde_json::json!({"stopped": true}),
        "registry stopped",
    ))
}

fn parse_hostname(name: &str) -> Result<Hostname, PilotError> {
    Hostname::new(name).map_err(|e| {
        PilotError::invalid(
            e.to_string(),
            "use 1-63 lowercase letters, digits and hyphens, e.g. worker-node",
        )
    })
}

fn daemon_options(args: &DaemonArgs) -> Result<DaemonOptions, PilotError> {
    let hostname = args.hostname.as_deref().map(parse_hostname).transpose()?;
    let mut registries = args.registries.clone();
    if registries.is_empty() {
        if let Ok(env) = std::env::var("PILOT_REGISTRY") {
            registries = env
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
        }
    }
    if let Some(cfg) = &args.config {
        if !cfg.exists() {
            return Err(PilotError::new(
                ErrorCode::NotFound,
                format!("config file {} does not exist", cfg.display()),
                "give the path of an existing file (config/pilot.toml is a commented example)",
            ));
        }
    }
    Ok(DaemonOptions {
        hostname,
        config: args
            .config
            .as_ref()
            .map(|p| std::path::absolute(p).unwrap_or(p.clone())),
        mode: args.mode,
        registries,
    })
}

fn paths() -> Result<StatePaths, PilotError> {
    StatePaths::from_env()
}

fn call(req: &Request) -> Result<serde_json::Value, PilotError> {
    Client::connect(&paths()?.socket)?.call(req)
}

fn info() -> Result<InfoData, PilotError> {
    let v = call(&Request::Info {})?;
    serde_json::from_value(v)
        .map_err(|e| PilotError::internal(format!("unexpected info reply: {e}")))
}

fn render_peers(d: &PeersData) -> String {
    if d.peers.is_empty() {
        return "no peers".into();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.as_secs());
    let mut rows = vec![[
        "ADDRESS".to_string(),
        "HOSTNAME".into(),
        "PATH".into(),
        "ENDPOINT".into(),
        "RTT".into(),
        "HANDSHAKE".into(),
        "RX".into(),
        "TX".into(),
        "DROPS".into(),
    ]];
    for p in &d.peers {
        let drops: u64 = p.drops.values().sum();
        rows.push([
            p.address.clone(),
            p.hostname.clone().unwrap_or_else(|| "-".into()),
            p.path.clone(),
            p.endpoint.map_or("-".into(), |e| e.to_string()),
            p.rtt_ms.map_or("-".into(), |r| format!("{r:.1}ms")),
            p.last_handshake.map_or("never".into(), |t| {
                format!("{}s ago", now.saturating_sub(t))
            }),
            human_bytes(p.rx_bytes),
            human_bytes(p.tx_bytes),
            drops.to_string(),
        ]);
    }
    let mut widths = [0usize; 9];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.len());
        }
    }
    rows.iter()
        .map(|r| {
            r.iter()
                .zip(widths.iter())
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn expose(args: ExposeArgs) -> Result<Output, PilotError> {
    if args.list {
        let v = call(&Request::ExposeList {})?;
        let mut text = String::new();
        for e in v["exposed"].as_array().into_iter().flatten() {
            text.push_str(&format!(
                "{:<6} -> {}\n",
                e["port"].as_u64().unwrap_or(0),
                e["to"].as_str().unwrap_or("-")
            ));
        }
        if text.is_empty() {
            text = "no exposed ports".into();
        }
        return Ok(Output {
            data: v,
            text: text.trim_end().to_string(),
        });
    }
    if let Some(port) = args.remove {
        let v = call(&Request::ExposeRemove { port })?;
        let text = format!(
            "overlay port {port} no longer forwarded to {}",
            v["to"].as_str().unwrap_or("-")
        );
        return Ok(Output { data: v, text });
    }
    let (Some(port), Some(to)) = (args.port, args.to) else {
        return Err(PilotError::invalid(
            "expose needs a port and --to HOST:PORT",
            "e.g. pilotctl expose 8080 --to 127.0.0.1:3000",
        ));
    };
    crate::userspace::expose::validate_target(&to).map_err(|e| {
        PilotError::invalid(
            e.to_string(),
            "e.g. pilotctl expose 8080 --to 127.0.0.1:3000",
        )
    })?;
    let v = call(&Request::Expose {
        port,
        to: to.clone(),
    })?;
    Ok(Output {
        data: v,
        text: format!("overlay port {port} forwarded to {to}"),
    })
}

fn render_info(i: &InfoData) -> String {
    format!(
        "address     {}\nipv6        {}\nhostname    {}\npublic key  {}\nmode        {} ({})\nnetwork     {}\nuptime      {}s\npeers       {}\npid         {}",
        i.address,
        i.ipv6,
        i.hostname.as_deref().unwrap_or("-"),
        i.public_key,
        i.mode,
        i.mode_reason,
        i.network,
        i.uptime_secs,
        i.peers,
        i.pid
    ) + &i
        .socks5
        .as_ref()
        .map(|a| format!("\nsocks5      {a}"))
        .unwrap_or_default()
}

/// How long `daemon start` waits for the daemon to answer.
const START_TIMEOUT: Duration = Duration::from_secs(20);

fn daemon_start(args: &DaemonArgs) -> Result<Output, PilotError> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::process::CommandExt;
    let opts = daemon_options(args)?;
    let paths = paths()?;
    paths.ensure_dir()?;
    if let Some(pid) = DaemonLock::holder(&paths.lock()) {
        return Err(PilotError::new(
            ErrorCode::AlreadyExists,
            format!("a daemon is already running for {} (pid {pid})", paths.dir.display()),
            "use it, stop it with `pilotctl daemon stop`, or set PILOT_HOME to another directory for a second node",
        ));
    }
    let log_path = paths.log();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .mode(0o600)
        .append(true)
        .open(&log_path)
        .map_err(|e| PilotError::internal(format!("cannot open {}: {e}", log_path.display())))?;
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let exe = std::env::current_exe()
        .map_err(|e| PilotError::internal(format!("cannot find our own binary: {e}")))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["--json", "daemon", "run"]);
    if let Some(h) = &opts.hostname {
        cmd.args(["--hostname", h.as_str()]);
    }
    if let Some(c) = &opts.config {
        cmd.arg("--config").arg(c);
    }
    if let Some(m) = opts.mode {
        cmd.args(["--mode", &m.to_string()]);
    }
    for r in &opts.registries {
        cmd.args(["--registry", r]);
    }
    cmd.env("PILOT_HOME", &paths.dir)
        .env("PILOT_SOCKET", &paths.socket)
        .stdin(std::process::Stdio::null())
        .stdout(
            log.try_clone()
                .map_err(|e| PilotError::internal(e.to_string()))?,
        )
        .stderr(log);
    // SAFETY: setsid() is async-signal-safe; it detaches the daemon from our session and
    // terminal so that `$(pilotctl daemon start)` and pipes return at once.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| PilotError::internal(format!("cannot start the daemon: {e}")))?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(startup_error(&log_path, log_start).unwrap_or_else(|| {
                PilotError::internal(format!(
                    "the daemon exited at start ({status}); see {}",
                    log_path.display()
                ))
            }));
        }
        if let Ok(mut c) = Client::connect(&paths.socket) {
            if let Ok(v) = c.call(&Request::Info {}) {
                if let Ok(info) = serde_json::from_value::<InfoData>(v.clone()) {
                    let text = format!(
                        "daemon running (pid {})\naddress   {}\nipv6      {}\nhostname  {}\nmode      {}",
                        info.pid,
                        info.address,
                        info.ipv6,
                        info.hostname.as_deref().unwrap_or("-"),
                        info.mode
                    );
                    return Ok(Output { data: v, text });
                }
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(PilotError::new(
                ErrorCode::Timeout,
                format!(
                    "the daemon did not become ready within {}s",
                    START_TIMEOUT.as_secs()
                ),
                format!("see {}", log_path.display()),
            ));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The daemon's own error envelope from its log, if it wrote one before exiting.
fn startup_error(log: &PathBuf, from: u64) -> Option<PilotError> {
    let mut f = std::fs::File::open(log).ok()?;
    f.seek(SeekFrom::Start(from)).ok()?;
    let mut s = String::new();
    f.read_to_string(&mut s).ok()?;
    s.lines().rev().find_map(|l| {
        serde_json::from_str::<Envelope>(l.trim())
            .ok()
            .and_then(|e| e.into_result().err())
    })
}

fn daemon_stop(timeout: u64) -> Result<Output, PilotError> {
    let paths = paths()?;
    let Some(pid) = DaemonLock::holder(&paths.lock()) else {
        return Err(PilotError::not_running(format!(
            "no daemon is running for {}",
            paths.dir.display()
        )));
    };
    if pid == 0 {
        return Err(PilotError::internal(format!(
            "a daemon holds {} but its pid is unreadable",
            paths.lock().display()
        )));
    }
    let stopped = |paths: &StatePaths| DaemonLock::holder(&paths.lock()).is_none();
    // SAFETY: kill(2) with a pid read from the lock file held by that very process.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(timeout);
    while Instant::now() < deadline {
        if stopped(&paths) {
            return Ok(Output::new(
                &serde_json::json!({"stopped": true, "pid": pid, "forced": false}),
                format!("daemon stopped (pid {pid})"),
            ));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    // SAFETY: as above; the lock is still held, so the pid is still that daemon.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if stopped(&paths) {
            let _ = std::fs::remove_file(&paths.socket);
            return Ok(Output::new(
                &serde_json::json!({"stopped": true, "pid": pid, "forced": true}),
                format!("daemon did not stop within {timeout}s; killed (pid {pid})"),
            ));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Err(PilotError::new(
        ErrorCode::Timeout,
        format!("daemon (pid {pid}) survived SIGKILL"),
        "check the process with `ps`; it may be stuck in the kernel",
    ))
}

fn daemon_status() -> Result<Output, PilotError> {
    let paths = paths()?;
    let Some(pid) = DaemonLock::holder(&paths.lock()) else {
        return Err(PilotError::not_running(format!(
            "no daemon is running for {}",
            paths.dir.display()
        )));
    };
    let info = info()?;
    Ok(Output::new(
        &serde_json::json!({"running": true, "pid": pid, "socket": paths.socket.display().to_string(), "info": info}),
        format!(
            "daemon running (pid {pid}), address {} ipv6 {}, up {}s",
            info.address, info.ipv6, info.uptime_secs
        ),
    ))
}
