//! `registry run`: a registry in the foreground until SIGTERM or Ctrl-C.

use super::args::RegistryArgs;
use super::daemon_process::Stopped;
use super::output::{paths, Output};
use crate::error::{ErrorCode, PilotError};
use crate::registry::runner::{run_registry_with_config, RegistryConfig};

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
    rt.block_on(run_registry_with_config(config))?;
    Output::local(&Stopped { stopped: true }, "registry stopped")
}

/// The registry's config: `--config FILE`, else `--listen` (and `--state`); flags win.
pub(super) fn config(args: &RegistryArgs) -> Result<RegistryConfig, PilotError> {
    let mut config = match &args.config {
        Some(path) => {
            if !path.exists() {
                return Err(PilotError::new(
                    ErrorCode::NotFound,
                    format!("config file {} does not exist", path.display()),
                    "give the path of an existing file (config/registry.toml is a commented example)",
                ));
            }
            RegistryConfig::load(path)?
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
    if let Some(s) = &args.store {
        config.store = Some(s.clone());
    }
    if let Some(i) = &args.instance {
        config.instance = Some(i.clone());
    }
    if let Some(k) = &args.key_file {
        config.key_file = Some(k.clone());
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    fn args(config: Option<std::path::PathBuf>) -> RegistryArgs {
        RegistryArgs {
            listen: None,
            state: None,
            config,
            store: None,
            instance: None,
            key_file: None,
        }
    }

    #[test]
    fn a_registry_config_with_an_unknown_key_is_invalid_and_points_at_the_example() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("registry.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:7000\"\nfrobnicate = 1\n").unwrap();
        let e = config(&args(Some(file))).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        assert!(e.message.contains("frobnicate"), "{}", e.message);
        assert!(e.hint.contains("config/registry.toml"), "{}", e.hint);
    }

    #[test]
    fn a_missing_registry_config_file_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let e = config(&args(Some(dir.path().join("nope.toml")))).unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound);
    }
}
