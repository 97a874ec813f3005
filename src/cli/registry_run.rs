//! `registry run`: a registry in the foreground until SIGTERM or Ctrl-C.

use super::args::RegistryArgs;
use super::daemon_process::Stopped;
use super::output::{paths, Output};
use crate::error::{ErrorCode, PilotError};
use crate::registry::runner::{run_registry_with_config, RegistryConfig, RunnerError};

/// Runs the registry the flags and config file describe.
pub fn run(args: &RegistryArgs) -> Result<Output, PilotError> {
    let config = config(args)?;
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
    Output::local(&Stopped { stopped: true }, "registry stopped")
}

/// The registry's config: `--config FILE`, else `--listen` (and `--state`); flags win.
fn config(args: &RegistryArgs) -> Result<RegistryConfig, PilotError> {
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
    Ok(config)
}

/// The registry runner's error as code + message + hint.
fn to_pilot(e: RunnerError) -> PilotError {
    let code = match &e {
        RunnerError::Io { source, .. } if source.kind() == std::io::ErrorKind::AddrInUse => {
            ErrorCode::AlreadyExists
        }
        RunnerError::Io { .. } | RunnerError::Config { .. } => ErrorCode::InvalidArgument,
        RunnerError::Store(_) => ErrorCode::Internal,
        RunnerError::Identity(_) => ErrorCode::Unauthorized,
    };
    PilotError::new(code, e.to_string(), e.hint())
}
