//! `pilotctl mcp`: the daemon's local API as Model Context Protocol tools, over stdin/stdout
//! (MCP's stdio transport, served by the official Rust SDK `rmcp`), so a language model's
//! client can use this node as tools.
//!
//! - `tools`: the catalogue (name, description written for a model, input schema) and each
//!   tool's arguments turned into one API request;
//! - `server`: the `rmcp` handler: lists the tools, calls the daemon through the typed API
//!   client, answers with structured content or a tool error carrying code, message and hint.
//!
//! Safety: `approve` and `reject` are offered only with `[mcp] allow_trust_decisions = true`;
//! by default they are neither listed nor callable, so no prompt can make the node trust a
//! stranger.

mod server;
mod tools;

use std::path::PathBuf;

use super::args::McpArgs;
use super::output::{paths, Output};
use crate::config::{Config, McpConfig};
use crate::error::{ErrorCode, PilotError};

/// Serves MCP on stdin/stdout until the client closes stdin.
pub fn run(args: &McpArgs) -> Result<Output, PilotError> {
    let socket = paths()?.socket;
    let settings = settings(args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| PilotError::internal(format!("cannot start the runtime: {e}")))?;
    rt.block_on(server::serve(socket, settings))?;
    Ok(Output::nothing())
}

/// `[mcp]` from `--config`, else from `$PILOT_HOME/config.toml` if it exists, else defaults.
fn settings(args: &McpArgs) -> Result<McpConfig, PilotError> {
    let path: Option<PathBuf> = match &args.config {
        Some(p) => Some(p.clone()),
        None => {
            let p = paths()?.default_config();
            p.exists().then_some(p)
        }
    };
    match path {
        Some(p) => Ok(Config::load(&p).map_err(PilotError::from)?.mcp),
        None => Ok(McpConfig::default()),
    }
}

/// The error of a tool the operator did not allow.
fn trust_decisions_refused(tool: &str) -> PilotError {
    PilotError::new(
        ErrorCode::Unauthorized,
        format!("the `{tool}` tool is disabled: trust decisions are the operator's"),
        "ask the operator to run `pilotctl approve PEER` / `pilotctl reject PEER`, or to set \
         [mcp] allow_trust_decisions = true in config.toml",
    )
}
