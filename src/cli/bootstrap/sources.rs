//! The effective configuration, key by key, with where each value comes from: the built-in
//! default, the config file, the environment (`PILOT_REGISTRY`, `PILOT_LOG`, `PILOT_SOCKET`)
//! or a flag (as `daemon start` would take it). Flags beat the environment, which beats the
//! file, which beats the default, as the daemon applies them.

use serde::Serialize;
use std::path::Path;

use super::ConfigArgs;
use crate::config::Config;
use crate::error::PilotError;

/// Where a value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The built-in default.
    Default,
    /// The config file.
    File,
    /// An environment variable.
    Environment,
    /// A command-line flag.
    Flag,
}

/// One key of the effective configuration.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Setting {
    /// The dotted key (`tun.mtu`).
    pub key: String,
    /// Its value.
    #[schema(value_type = Object)]
    pub value: serde_json::Value,
    /// Where it comes from.
    pub source: Source,
}

/// Every key of the effective configuration, sorted, for the file (which may be missing) and
/// the flags in `args`.
pub fn effective(file: &Path, args: &ConfigArgs) -> Result<Vec<Setting>, PilotError> {
    let (cfg, in_file) = if file.exists() {
        let text = std::fs::read_to_string(file).map_err(|e| super::io_error(file, &e))?;
        let cfg = Config::load(file).map_err(|e| {
            PilotError::invalid(e.to_string(), "fix it, or see `pilotctl config check FILE`")
        })?;
        let table: toml::Table = toml::from_str(&text).unwrap_or_default();
        let mut keys = Vec::new();
        flatten_toml("", &toml::Value::Table(table), &mut keys);
        (cfg, keys)
    } else {
        (Config::default(), Vec::new())
    };
    let value = serde_json::to_value(&cfg).map_err(|e| PilotError::internal(e.to_string()))?;
    let mut settings = Vec::new();
    flatten_json("", &value, &mut settings);
    for s in &mut settings {
        if in_file.iter().any(|k| k == &s.key) {
            s.source = Source::File;
        }
    }
    apply_env_and_flags(&mut settings, args)?;
    Ok(settings)
}

/// Overrides from the environment, then from flags.
fn apply_env_and_flags(settings: &mut [Setting], args: &ConfigArgs) -> Result<(), PilotError> {
    let env_list = |v: String| -> serde_json::Value {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| serde_json::Value::from(s.to_string()))
            .collect()
    };
    let mut over: Vec<(&str, serde_json::Value, Source)> = Vec::new();
    if let Ok(v) = std::env::var("PILOT_REGISTRY") {
        over.push(("registries", env_list(v), Source::Environment));
    }
    if let Ok(v) = std::env::var("PILOT_LOG") {
        over.push(("log_level", v.into(), Source::Environment));
    }
    if let Ok(v) = std::env::var("PILOT_SOCKET") {
        over.push(("api.socket", v.into(), Source::Environment));
    }
    if let Some(h) = &args.hostname {
        let h = super::super::daemon_process::parse_hostname(h)?;
        over.push(("hostname", h.to_string().into(), Source::Flag));
    }
    if let Some(m) = args.mode {
        over.push(("mode", m.to_string().into(), Source::Flag));
    }
    if !args.registries.is_empty() {
        over.push(("registries", args.registries.clone().into(), Source::Flag));
    }
    for (key, value, source) in over {
        if let Some(s) = settings.iter_mut().find(|s| s.key == key) {
            s.value = value;
            s.source = source;
        }
    }
    Ok(())
}

/// The dotted keys of the leaves of a config (arrays and arrays of tables are leaves).
fn flatten_json(prefix: &str, v: &serde_json::Value, out: &mut Vec<Setting>) {
    match v {
        serde_json::Value::Object(m) if prefix.is_empty() || !m.is_empty() => {
            for (k, v) in m {
                let key = join(prefix, k);
                flatten_json(&key, v, out);
            }
        }
        _ => out.push(Setting {
            key: prefix.to_string(),
            value: v.clone(),
            source: Source::Default,
        }),
    }
}

/// The dotted keys a TOML file sets (an array of tables, `[[peer]]`, counts as one key).
fn flatten_toml(prefix: &str, v: &toml::Value, out: &mut Vec<String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                flatten_toml(&join(prefix, k), v, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

fn join(prefix: &str, k: &str) -> String {
    if prefix.is_empty() {
        k.to_string()
    } else {
        format!("{prefix}.{k}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ConfigArgs {
        ConfigArgs {
            cmd: None,
            set: vec![],
            config: None,
            hostname: Some("worker-node".into()),
            mode: None,
            registries: vec![],
        }
    }

    #[test]
    fn each_value_says_whether_it_is_a_default_from_the_file_or_from_a_flag() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, "[tun]\nmtu = 1400\n").unwrap();
        let s = effective(&file, &args()).unwrap();
        let get = |k: &str| s.iter().find(|s| s.key == k).unwrap().clone();
        assert_eq!(get("tun.mtu").source, Source::File);
        assert_eq!(get("tun.mtu").value, 1400);
        assert_eq!(get("tun.name").source, Source::Default);
        assert_eq!(get("hostname").source, Source::Flag);
        assert_eq!(get("hostname").value, "worker-node");
        assert!(
            s.iter().any(|s| s.key == "peer"),
            "arrays of tables are one key"
        );
    }
}
