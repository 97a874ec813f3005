//! What the daemon starts from: the config file with the command line's overrides, the
//! identity, and logging.

use std::path::PathBuf;

use crate::config::Config;
use crate::daemon::DaemonOptions;
use crate::error::PilotError;
use crate::identity::Identity;
use crate::state::paths::StatePaths;

/// Reads the config: `--config`, else `$PILOT_HOME/config.toml` if present, else defaults.
pub fn load_config(paths: &StatePaths, explicit: Option<&PathBuf>) -> Result<Config, PilotError> {
    let path = match explicit {
        Some(p) => Some(p.clone()),
        None => Some(paths.default_config()).filter(|p| p.exists()),
    };
    match path {
        None => Ok(Config::default()),
        Some(p) => Ok(Config::load(&p)?),
    }
}

/// The config with `--mode` and `--registry` applied.
pub fn effective_config(paths: &StatePaths, opts: &DaemonOptions) -> Result<Config, PilotError> {
    let mut config = load_config(paths, opts.config.as_ref())?;
    if let Some(m) = opts.mode {
        config.mode = m;
    }
    if !opts.registries.is_empty() {
        config.registries = opts.registries.clone();
    }
    Ok(config)
}

/// Loads the node's identity, or makes one on first start.
pub fn load_identity(paths: &StatePaths) -> Result<Identity, PilotError> {
    let (identity, created) = Identity::load_or_create(&paths.key())?;
    if created {
        tracing::info!(key = %paths.key().display(), "created a new identity");
    }
    Ok(identity)
}

/// Logs to stderr at `PILOT_LOG`, else the config's `log_level`, else `info`.
pub fn init_logging(config: &Config) {
    let filter = std::env::var("PILOT_LOG")
        .ok()
        .or_else(|| config.log_level.clone())
        .unwrap_or_else(|| "info".into());
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let sub = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .finish()
        .with(crate::daemon::health::ProblemLayer);
    let _ = sub.try_init();
}
