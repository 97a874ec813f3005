//! The grammar of the verbs added for parity with Pilot Protocol's `pilotctl` (issue 12):
//! bootstrap, the command catalogue, shell integration, streams and diagnostics. Flattened
//! into [`super::args::Command`], so they are top-level verbs like the others.

use clap::{Subcommand, ValueEnum};
use std::path::PathBuf;

/// Verbs added for parity with Pilot Protocol.
#[derive(Debug, Subcommand)]
pub enum ParityCmd {
    /// Write a commented config.toml into the state directory ($PILOT_HOME); an existing one
    /// is kept unless --force.
    Init {
        /// Registry HOST:PORT (or HOST:PORT#KEY) to register with (repeatable).
        #[arg(long = "registry", value_name = "HOST:PORT")]
        registries: Vec<String>,
        /// Hostname to claim (1-63 lowercase letters, digits and hyphens).
        #[arg(long)]
        hostname: Option<String>,
        /// Overwrite an existing config.toml.
        #[arg(long)]
        force: bool,
    },
    /// Print pilotctl's version (and the daemon's, when one runs).
    Version,
    /// A short status of the daemon: uptime, peers up, message queues, last errors.
    Health,
    /// A JSON catalogue of every command (arguments, flags, description, returned fields,
    /// error codes), for agents that discover their tools at run time.
    Context {
        /// Only this command (e.g. `connect`, or `daemon status`).
        command: Vec<String>,
    },
    /// Print a shell completion script (`source <(pilotctl completions bash)`).
    Completions {
        /// The shell.
        shell: CompletionShell,
    },
    /// Write one man page per command (roff) into DIR.
    Man {
        /// The directory (created if missing).
        dir: PathBuf,
    },
    /// Send one request to a peer's overlay port and print its one reply.
    Send {
        /// The peer (hostname, address, IPv6 or public key).
        peer: String,
        /// The peer's overlay TCP port.
        port: u16,
        /// The request.
        #[arg(long)]
        data: String,
        /// Seconds to wait for the reply.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Accept connections from trusted peers on our overlay port and print what each sent.
    Recv {
        /// Our overlay TCP port.
        port: u16,
        /// How many connections to accept.
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Seconds to wait for all of them (default: no limit).
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Describe a node at the registries, by hostname, address, IPv6 or key: key, address,
    /// IPv6, hostname and tags (never an endpoint).
    Lookup {
        /// The node.
        peer: String,
    },
    /// Give up our hostname at the registries.
    ClearHostname,
    /// Ask every registry to forget us (signed): hostname, tags and registration, until the
    /// daemon restarts.
    Deregister,
    /// Set our tags at the registries: a few short lowercase words that `lookup` shows (there
    /// is no listing by tag).
    SetTags {
        /// 1 to 8 tags of 1-24 lowercase letters, digits and hyphens.
        #[arg(required = true)]
        tags: Vec<String>,
    },
    /// Remove our tags at the registries.
    ClearTags,
    /// What the network lets this node do: each registry's reachability and RTT, our
    /// reflexive addresses, whether our NAT maps endpoint-independently, clock skew, TUN.
    Netcheck,
    /// The path to a trusted peer: direct, or through which relay, with each leg's RTT.
    Traceroute {
        /// The peer (hostname, address, IPv6 or public key).
        peer: String,
        /// Probes to send (250 ms apart).
        #[arg(long, short = 'c', default_value_t = 3)]
        count: u32,
    },
    /// List the streams the daemon holds for API clients (connect, listen, send, recv,
    /// bench): id, service, peer, port, bytes, age.
    Connections,
    /// Abort one of those streams.
    Disconnect {
        /// Its id (`pilotctl connections`).
        id: u64,
    },
    /// Measure throughput and round-trip time through a peer's echo port (7).
    Bench {
        /// The peer (hostname, address, IPv6 or public key).
        peer: String,
        /// Megabytes to send (and receive back).
        #[arg(default_value_t = 1)]
        mb: u32,
    },
    /// UDP datagrams on overlay ports: send one to a trusted peer, or listen for some.
    #[command(subcommand)]
    Dgram(DgramCmd),
}

/// `pilotctl dgram …`.
#[derive(Debug, Subcommand)]
pub enum DgramCmd {
    /// Send one UDP datagram to a trusted peer's overlay port (no answer is awaited).
    Send {
        /// The peer (hostname, address, IPv6 or public key).
        peer: String,
        /// The peer's overlay UDP port (1-65535).
        port: u32,
        /// The payload (text, or base64 with --base64).
        #[arg(long)]
        data: String,
        /// --data is base64 (a binary payload).
        #[arg(long)]
        base64: bool,
        /// Seconds to wait for the daemon (resolving the peer included).
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Listen on our overlay UDP port and print the datagrams trusted peers send (others
    /// are dropped and counted).
    Listen {
        /// Our overlay UDP port (1-65535).
        port: u32,
        /// How many datagrams to wait for.
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Seconds to wait at most (default: no limit); prints what arrived by then.
        #[arg(long)]
        timeout: Option<u64>,
    },
}

/// The shells `completions` writes scripts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    /// GNU bash.
    Bash,
    /// Z shell.
    Zsh,
    /// fish.
    Fish,
}
