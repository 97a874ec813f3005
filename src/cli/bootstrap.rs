//! Bootstrap verbs that run without a daemon: `init` (a commented config.toml), `config` (the
//! effective configuration and the source of each value), `config --set KEY=VALUE` (an edit
//! that keeps the file's comments, validated before it is written) and `version`.

mod sources;

use clap::Args;
use serde::Serialize;
use std::path::{Path, PathBuf};

use super::args::ConfigCmd;
use super::output::{paths, Output};
use crate::config::{Config, ConfigError, Mode};
use crate::error::{ErrorCode, PilotError};

pub use sources::{effective, Setting, Source};

/// The commented template `init` writes: the documented example config of the repository.
pub const TEMPLATE: &str = include_str!("../../config/pilot.toml");

/// Options of `config`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ConfigArgs {
    /// `config check FILE`.
    #[command(subcommand)]
    pub cmd: Option<ConfigCmd>,
    /// Set KEY (dotted, e.g. `tun.mtu`) to VALUE (TOML: `1400`, `true`, `"text"`, `["a", "b"]`;
    /// a bare word is a string) in $PILOT_HOME/config.toml, keeping its comments (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// The config file to show or edit (default: $PILOT_HOME/config.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Show the configuration as `daemon start --hostname H` would see it.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Show the configuration as `daemon start --mode M` would see it.
    #[arg(long)]
    pub mode: Option<Mode>,
    /// Show the configuration as `daemon start --registry R` would see it (repeatable).
    #[arg(long = "registry", value_name = "HOST:PORT")]
    pub registries: Vec<String>,
}

/// `init`'s data.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Initialized {
    /// The file written.
    file: String,
    /// Whether an existing file was replaced (`--force`).
    replaced: bool,
}

/// `config`'s data.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ConfigView {
    /// The file read, if it exists.
    file: Option<String>,
    /// Every setting with its value and source.
    settings: Vec<Setting>,
}

/// `config --set`'s data.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ConfigSet {
    /// The file edited.
    file: String,
    /// The keys set, with their new values.
    set: Vec<Setting>,
}

/// `version`'s data.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct VersionData {
    /// This pilotctl's version.
    version: String,
    /// The running daemon's version, if one answers.
    daemon: Option<String>,
}

/// The config file `config` reads: `--config`, else `$PILOT_HOME/config.toml`.
fn config_path(explicit: Option<&Path>) -> Result<PathBuf, PilotError> {
    match explicit {
        Some(p) => Ok(p.to_path_buf()),
        None => Ok(paths()?.default_config()),
    }
}

/// `init [--registry R]... [--hostname H] [--force]`.
pub fn init(
    registries: &[String],
    hostname: Option<&str>,
    force: bool,
) -> Result<Output, PilotError> {
    let paths = paths()?;
    paths.ensure_dir()?;
    let file = paths.default_config();
    let exists = file.exists();
    if exists && !force {
        return Err(PilotError::new(
            ErrorCode::AlreadyExists,
            format!("{} already exists", file.display()),
            "edit it with `pilotctl config --set KEY=VALUE`, or replace it with `pilotctl init --force`",
        ));
    }
    let mut doc = parse_doc(TEMPLATE, &file)?;
    if let Some(h) = hostname {
        let h = super::daemon_process::parse_hostname(h)?;
        doc.insert("hostname", toml_edit::value(h.to_string()));
    }
    if !registries.is_empty() {
        let list: toml_edit::Array = registries.iter().map(String::as_str).collect();
        doc.insert("registries", toml_edit::value(list));
    }
    let text = doc.to_string();
    validate(&text, &file)?;
    write(&file, &text)?;
    let data = Initialized {
        file: file.display().to_string(),
        replaced: exists,
    };
    let text = format!(
        "wrote {}\nstart the daemon with `pilotctl daemon start`",
        file.display()
    );
    Output::local(&data, text)
}

/// `config [check FILE | --set KEY=VALUE...]`.
pub fn config(args: ConfigArgs) -> Result<Output, PilotError> {
    if let Some(ConfigCmd::Check { file }) = &args.cmd {
        return super::config_check::check(file);
    }
    let file = config_path(args.config.as_deref())?;
    if !args.set.is_empty() {
        return set(&file, &args.set);
    }
    let settings = effective(&file, &args)?;
    let text = super::render::config_settings(&settings);
    let data = ConfigView {
        file: file.exists().then(|| file.display().to_string()),
        settings,
    };
    Output::local(&data, text)
}

/// `config --set KEY=VALUE...`: every pair applied, the result validated, then written.
fn set(file: &Path, pairs: &[String]) -> Result<Output, PilotError> {
    let current = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => TEMPLATE.to_string(),
        Err(e) => return Err(io_error(file, &e)),
    };
    let mut doc = parse_doc(&current, file)?;
    let mut set = Vec::new();
    for pair in pairs {
        let (key, value) = split_pair(pair)?;
        set_key(&mut doc, &key, value.clone())?;
        set.push(Setting {
            key,
            value: toml_to_json(&value),
            source: Source::File,
        });
    }
    let text = doc.to_string();
    validate(&text, file)?;
    write(file, &text)?;
    let lines: Vec<String> = set
        .iter()
        .map(|s| format!("{} = {}", s.key, s.value))
        .collect();
    let out = format!(
        "{}\nin {} (a running daemon reads it at its next start)",
        lines.join("\n"),
        file.display()
    );
    let data = ConfigSet {
        file: file.display().to_string(),
        set,
    };
    Output::local(&data, out)
}

/// `KEY=VALUE` → the dotted key and the TOML value (a bare word is a string).
fn split_pair(pair: &str) -> Result<(String, toml_edit::Value), PilotError> {
    let malformed = || {
        PilotError::invalid(
            format!("`{pair}` is not KEY=VALUE"),
            "e.g. pilotctl config --set tun.mtu=1400 (keys as in config/pilot.toml)",
        )
    };
    let (key, raw) = pair.split_once('=').ok_or_else(malformed)?;
    let key = key.trim();
    let valid_key = !key.is_empty()
        && key.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
    if !valid_key {
        return Err(malformed());
    }
    let raw = raw.trim();
    let value = raw
        .parse::<toml_edit::Value>()
        .unwrap_or_else(|_| toml_edit::Value::from(raw));
    Ok((key.to_string(), value))
}

/// Sets the dotted `key` in `doc`, making the tables on the way; a key whose parent is not a
/// table is refused.
fn set_key(
    doc: &mut toml_edit::DocumentMut,
    key: &str,
    value: toml_edit::Value,
) -> Result<(), PilotError> {
    let parts: Vec<&str> = key.split('.').collect();
    let (last, parents) = parts.split_last().expect("a key has one part at least");
    let mut table = doc.as_table_mut();
    for p in parents {
        let entry = table
            .entry(p)
            .or_insert_with(|| toml_edit::Item::Table(toml_edit::Table::new()));
        table = entry.as_table_mut().ok_or_else(|| {
            PilotError::invalid(
                format!("`{key}`: `{p}` is not a table"),
                "only scalar and array keys can be set; edit [[peer]] and [[expose]] in the file",
            )
        })?;
    }
    match table.get_mut(last).and_then(|i| i.as_value_mut()) {
        Some(v) => {
            let decor = v.decor().clone();
            *v = value;
            *v.decor_mut() = decor;
        }
        None => {
            table.insert(last, toml_edit::Item::Value(value));
        }
    }
    Ok(())
}

/// A TOML value as JSON (for the output).
fn toml_to_json(v: &toml_edit::Value) -> serde_json::Value {
    let text = format!("v = {}", v.clone().decorated("", ""));
    toml::from_str::<toml::Table>(&text)
        .ok()
        .and_then(|t| t.get("v").cloned())
        .and_then(|v| serde_json::to_value(v).ok())
        .unwrap_or(serde_json::Value::Null)
}

fn parse_doc(text: &str, file: &Path) -> Result<toml_edit::DocumentMut, PilotError> {
    text.parse().map_err(|e: toml_edit::TomlError| {
        PilotError::invalid(
            format!("{} is not TOML: {}", file.display(), e.message()),
            "fix the file by hand, or replace it with `pilotctl init --force`",
        )
    })
}

/// The text must load as a config: a wrong key or type is refused, naming it.
fn validate(text: &str, file: &Path) -> Result<(), PilotError> {
    Config::parse(text, file).map(|_| ()).map_err(|e| match e {
        ConfigError::Unsafe(_) => PilotError::from(e),
        _ => PilotError::invalid(
            format!("refused, the file is unchanged: {e}"),
            "see config/pilot.toml for every key and its type",
        ),
    })
}

fn write(file: &Path, text: &str) -> Result<(), PilotError> {
    crate::state::paths::write_private_atomic(file, text.as_bytes()).map_err(|e| io_error(file, &e))
}

fn io_error(file: &Path, e: &std::io::Error) -> PilotError {
    PilotError::new(
        ErrorCode::Internal,
        format!("cannot access {}: {e}", file.display()),
        "check the state directory's permissions",
    )
}

/// `version`: ours, and the daemon's when one answers (quietly none otherwise).
pub fn version() -> Result<Output, PilotError> {
    let daemon = super::output::ask::<crate::api::InfoData>("info", &crate::api::Request::Info {})
        .ok()
        .map(|a| a.typed.version);
    let ours = env!("CARGO_PKG_VERSION").to_string();
    let text = match &daemon {
        Some(d) => format!("pilotctl {ours}\ndaemon   {d}"),
        None => format!("pilotctl {ours}"),
    };
    Output::local(
        &VersionData {
            version: ours,
            daemon,
        },
        text,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_is_a_valid_config() {
        validate(TEMPLATE, Path::new("pilot.toml")).unwrap();
    }

    #[test]
    fn a_pair_without_equals_or_with_a_bad_key_is_refused() {
        for bad in ["tun.mtu", "=1", "tun..mtu=1", "a b=1"] {
            let e = split_pair(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidArgument, "{bad}");
        }
        let (k, v) = split_pair("hostname=worker-node").unwrap();
        assert_eq!((k.as_str(), v.as_str()), ("hostname", Some("worker-node")));
        assert_eq!(
            split_pair("tun.mtu=1400").unwrap().1.as_integer(),
            Some(1400)
        );
    }

    #[test]
    fn setting_a_key_keeps_the_comments_and_is_validated() {
        let mut doc = parse_doc(TEMPLATE, Path::new("x")).unwrap();
        set_key(&mut doc, "tun.mtu", split_pair("x=1400").unwrap().1).unwrap();
        let text = doc.to_string();
        assert!(text.contains("mtu = 1400"), "{text}");
        assert!(text.contains("# Inner MTU."), "comments are kept");
        assert_eq!(Config::parse(&text, Path::new("x")).unwrap().tun.mtu, 1400);
        set_key(&mut doc, "tun.mtu", split_pair("x=1000").unwrap().1).unwrap();
        assert!(
            validate(&doc.to_string(), Path::new("x")).is_err(),
            "below 1280"
        );
        let e = set_key(&mut doc, "mode.x", split_pair("x=1").unwrap().1).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
    }
}
