//! The `pilotctl` command line: argument parsing, dispatch, and output as text or as the JSON
//! envelope (`--json`). Every command is a thin client of the daemon's local API, except the
//! ones that manage the daemon process itself, `registry run` and `config check`.
//!
//! - [`args`]: the clap definitions (the grammar, nothing else);
//! - `dispatch`: a command to its output;
//! - `output`: the typed answer helper (`ask`), the envelope and error printing;
//! - `render`: one text renderer per typed answer, unit-tested;
//! - `escape`: the one function stranger-given text passes through before the terminal;
//! - `daemon_process`, `registry_run`, `config_check`: the commands that run here;
//! - `stream`: the stdin/stdout pumping of `connect` and `listen`;
//! - `mcp`: `pilotctl mcp`, the daemon's API as Model Context Protocol tools over stdio.
//! - `messages`: payloads, times and the event stream of `send-message`, `reply`, `inbox`,
//!   `events`.
//! - `dns`: `dns status` and `dns setup`.

pub mod args;
pub mod bootstrap;
mod catalogue;
mod config_check;
mod daemon_process;
mod dgram;
mod diagnostics;
mod dispatch;
mod dns;
mod escape;
pub mod examples;
mod exchange;
mod files;
mod mcp;
mod messages;
mod output;
mod parity;
pub mod parity_args;
mod pubsub_tasks;
mod registry_run;
mod registry_status;
mod render;
mod shell;
mod stream;

use std::process::ExitCode;

pub use args::{
    Cli, Command, ConfigCmd, DaemonArgs, DaemonCmd, ExposeArgs, McpArgs, RegistryArgs, RegistryCmd,
};

use crate::error::PilotError;
use output::print_error;

/// Parses the process arguments and runs the command. Usage errors exit 2, other errors 1.
pub fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let cli = match examples::parse(&argv) {
        Ok(c) => c,
        Err(e) => return usage_error(&e, argv.iter().any(|a| a == "--json")),
    };
    if let Command::Daemon(DaemonCmd::Status { check: true }) = cli.command {
        return parity::status_check();
    }
    if let Command::Subscribe(args) = &cli.command {
        return match pubsub_tasks::subscribe(args, cli.json) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                print_error(cli.json, &e);
                ExitCode::from(1)
            }
        };
    }
    let is_stream = matches!(
        cli.command,
        Command::Connect { message: None, .. }
            | Command::Listen { .. }
            | Command::Mcp(_)
            | Command::Events { .. }
    );
    let run = match cli.command {
        Command::Events { count, timeout } => messages::events(count, timeout, cli.json),
        cmd => dispatch::run(cmd),
    };
    match run {
        Ok(_) if is_stream => ExitCode::SUCCESS,
        Ok(out) => {
            out.print(cli.json);
            ExitCode::SUCCESS
        }
        Err(e) => {
            print_error(cli.json, &e);
            ExitCode::from(1)
        }
    }
}

/// Help and version exit 0; a bad command line exits 2, with an envelope under `--json`.
fn usage_error(e: &clap::Error, json: bool) -> ExitCode {
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
    ExitCode::from(2)
}
