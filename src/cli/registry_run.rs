//! `registry run`: a registry in the foreground until SIGTERM or Ctrl-C.

use super::args::RegistryArgs;
use super::daemon_process::Stopped;
use super::output::{paths, Output};
use crate::daemon::notify;
use crate::error::{ErrorCode, PilotError};
use crate::health::Heartbeats;
use crate::registry::runner::{termination, RegistryConfig, RegistryServer};
use std::path::PathBuf;
use std::sync::Arc;

/// Runs the registry the flags and config file describe.
pub fn run(args: &RegistryArgs) -> Result<Output, PilotError> {
    let config = config(args)?;
    let filter = crate::daemon::logging::filter_for(None);
    crate::daemon::logging::init(&filter, config.log_format);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| PilotError::internal(format!("cannot start the runtime: {e}")))?;
    rt.block_on(serve(config, args.config.clone()))?;
    Output::local(&Stopped { stopped: true }, "registry stopped")
}

/// Binds, serves metrics if asked, tells systemd it is ready, feeds the watchdog from the
/// loop's heartbeat, and serves until SIGTERM or Ctrl-C (`STOPPING=1` then).
async fn serve(config: RegistryConfig, file: Option<PathBuf>) -> Result<(), PilotError> {
    notify::status("starting: opening the store and binding the socket");
    let metrics = config.metrics.listen;
    let server = RegistryServer::bind(config.clone()).await?;
    if let Some(listen) = metrics {
        let stats = server.stats();
        let render: crate::exposition::Render = Arc::new(move || {
            let snapshot = stats.lock().clone();
            Box::pin(async move { crate::registry::metrics::render(&snapshot) })
        });
        crate::exposition::serve(listen, render)
            .await
            .map_err(|e| {
                PilotError::invalid(
                    format!("cannot serve metrics on {listen}: {e}"),
                    "set [metrics] listen to a free loopback address, e.g. 127.0.0.1:9470",
                )
            })?;
    }
    let beats = Heartbeats::new();
    beats.add("registry-loop", server.heartbeat());
    beats.add("registry-store", server.store_heartbeat());
    let line = format!(
        "running: UDP {}, key {}",
        server.local_addr(),
        server.public_key()
    );
    notify::ready(&line);
    notify::spawn_watchdog(beats);
    tokio::spawn(reloads(config, file));
    server
        .run(async {
            termination().await;
            notify::stopping("stopping");
        })
        .await?;
    Ok(())
}

/// SIGHUP (`systemctl reload`): the registry applies nothing while running; it re-reads its
/// file and says which changed keys only a restart applies.
async fn reloads(running: RegistryConfig, file: Option<PathBuf>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        notify::reloading();
        let Some(path) = &file else {
            tracing::info!("reload: no config file to re-read");
            notify::ready("running");
            continue;
        };
        match RegistryConfig::load(path) {
            Ok(new) => {
                let changed = changed_keys(&running, &new);
                if changed.is_empty() {
                    tracing::info!("reload: configuration unchanged");
                } else {
                    tracing::warn!(
                        "reload: changed but only a restart applies them: {}",
                        changed.join(", ")
                    );
                }
            }
            Err(e) => tracing::warn!("reload failed, nothing changed: {e}"),
        }
        notify::ready("running");
    }
}

/// The keys of the registry's file that differ (`listen` and `state_dir` are left out: the
/// command line may override them, and they always need a restart).
fn changed_keys(old: &RegistryConfig, new: &RegistryConfig) -> Vec<&'static str> {
    let mut v = Vec::new();
    if old.recv_buffer_bytes != new.recv_buffer_bytes {
        v.push("recv_buffer_bytes");
    }
    if old.limits != new.limits {
        v.push("limits");
    }
    if old.log_format != new.log_format {
        v.push("log_format");
    }
    if old.metrics != new.metrics {
        v.push("metrics");
    }
    if old.tls_listen != new.tls_listen || old.tls_limits() != new.tls_limits() {
        v.push("tls_*");
    }
    v
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
