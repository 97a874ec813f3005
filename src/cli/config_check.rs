//! `config check FILE`: validates a daemon config file without a daemon.

use serde::Serialize;
use std::path::Path;

use super::output::Output;
use crate::config::{Config, ConfigError};
use crate::error::PilotError;

/// `config check`'s data.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Checked<'a> {
    file: String,
    valid: bool,
    #[schema(value_type = Object)]
    config: &'a Config,
}

/// Loads `file`: its first error (naming key and line), or `FILE: ok` and the result.
pub fn check(file: &Path) -> Result<Output, PilotError> {
    let cfg = Config::load(file).map_err(|e| match e {
        ConfigError::Unsafe(_) => PilotError::from(e),
        _ => PilotError::invalid(
            e.to_string(),
            "see config/pilot.toml for every key and its type",
        ),
    })?;
    let data = Checked {
        file: file.display().to_string(),
        valid: true,
        config: &cfg,
    };
    Output::local(&data, format!("{}: ok", file.display()))
}
