//! What the daemon does for its operator once it serves: tell systemd it is ready (only after
//! its own API answers and the data plane runs), keep the watchdog fed from every thread's
//! heartbeat, keep a readable `STATUS=` line, and re-read its configuration on SIGHUP
//! (`systemctl reload`).
//!
//! A reload applies `log_level` (unless `PILOT_LOG` overrides it) and `[trust] allow`. Every
//! other key needs a restart; a reload that finds one changed says which in the log and in
//! `STATUS=`.

use std::sync::Arc;
use std::time::Duration;

use crate::api::service::Api;
use crate::config::Config;
use crate::daemon::local_api::Node;
use crate::daemon::notify;
use crate::daemon::DaemonOptions;
use crate::health::Heartbeats;

/// How long readiness waits for the API before it gives up announcing.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the `STATUS=` line is refreshed.
const STATUS_EVERY: Duration = Duration::from_secs(30);

/// Starts the readiness announcement, the watchdog and the SIGHUP handler.
pub fn spawn(node: Arc<Node>, opts: DaemonOptions) {
    tokio::spawn(announce(Arc::clone(&node)));
    tokio::spawn(reloads(node, opts));
}

/// The line `systemctl status` shows.
async fn status_line(node: &Node) -> String {
    let info = node.info().await;
    format!(
        "running: {} ({} mode), {} peers, API on {}",
        info.hostname
            .map(|h| format!("{h}.pilot"))
            .unwrap_or(info.address),
        info.mode,
        info.peers,
        node.paths.socket.display()
    )
}

async fn announce(node: Arc<Node>) {
    if !notify::enabled() && sd_notify::watchdog_enabled().is_none() {
        return;
    }
    notify::status("starting: waiting for the local API to answer");
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        if node.dataplane.health().alive
            && notify::api_answers(&node.paths.socket, Duration::from_secs(2)).await
        {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            tracing::error!("the local API did not answer: not telling systemd we are ready");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    notify::ready(&status_line(&node).await);
    let beats = Heartbeats::new();
    for (name, hb) in node.dataplane.heartbeats() {
        beats.add(&name, hb);
    }
    let api = beats.register("api+node-driver");
    let netstack = match &node.overlay {
        crate::userspace::overlay_net::OverlayNet::Userspace(stack) => {
            Some((stack.clone(), beats.register("netstack")))
        }
        _ => None,
    };
    if let Some(plan) = notify::spawn_watchdog(beats) {
        notify::spawn_api_probe(node.paths.socket.clone(), api, plan);
        if let Some((stack, hb)) = netstack {
            spawn_netstack_probe(stack, hb, plan);
        }
    }
    let mut tick = tokio::time::interval(STATUS_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        notify::status(&status_line(&node).await);
    }
}

/// Beats `hb` each time the userspace stack's driver answers a command (it is a task of its
/// own: the API probe does not pass through it).
fn spawn_netstack_probe(
    stack: crate::netstack::Netstack,
    hb: crate::health::Heartbeat,
    plan: notify::WatchdogPlan,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(plan.probe_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Ok(Ok(_)) = tokio::time::timeout(plan.max_age, stack.describe()).await {
                hb.beat();
            }
        }
    });
}

async fn reloads(node: Arc<Node>, opts: DaemonOptions) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    // What runs now: the start-up config with what reloads applied since.
    let mut current = node.config.clone();
    while hup.recv().await.is_some() {
        notify::reloading();
        let outcome = reload(&node, &opts, &mut current).await;
        match &outcome {
            Ok(msg) => tracing::info!("reload: {msg}"),
            Err(e) => tracing::warn!("reload failed, nothing changed: {e}"),
        }
        let line = status_line(&node).await;
        let note = match outcome {
            Ok(msg) if msg.contains("restart") => format!("{line}; {msg}"),
            Ok(_) => line,
            Err(e) => format!("{line}; reload failed: {e}"),
        };
        notify::ready(&note);
    }
}

/// Re-reads the config file: applies `log_level` and `[trust] allow`, names what only a
/// restart applies. An invalid file changes nothing.
async fn reload(node: &Node, opts: &DaemonOptions, current: &mut Config) -> Result<String, String> {
    let new = crate::daemon::settings::effective_config(&node.paths, opts)
        .map_err(|e| format!("{}: {}", e.message, e.hint))?;
    let allow = crate::node::trust::AllowList::from_entries(&new.trust.allow)
        .map_err(|e| format!("[trust] allow: {e}"))?;
    let mut applied = Vec::new();
    if std::env::var_os("PILOT_LOG").is_none() && new.log_level != current.log_level {
        let filter = crate::daemon::logging::filter_for(new.log_level.as_deref());
        crate::daemon::logging::set_filter(&filter)?;
        applied.push(format!("log_level = {filter}"));
        current.log_level = new.log_level.clone();
    }
    if new.trust.allow != current.trust.allow {
        node.control
            .call(|reply| crate::node::commands::NodeCommand::SetAllowList { allow, reply })
            .await
            .map_err(|e| e.message)?;
        applied.push(format!("trust.allow ({} entries)", new.trust.allow.len()));
        current.trust.allow = new.trust.allow.clone();
    }
    let restart = needs_restart(&node.config, &new);
    let mut msg = if applied.is_empty() {
        "configuration re-read, nothing to apply".to_string()
    } else {
        format!("applied {}", applied.join(", "))
    };
    if !restart.is_empty() {
        msg.push_str(&format!(
            "; changed but only a restart applies them: {}",
            restart.join(", ")
        ));
    }
    Ok(msg)
}

/// The top-level keys (sections) that differ between `old` and `new`, leaving out what a
/// reload applies (`log_level`, `[trust] allow`).
pub fn needs_restart(old: &Config, new: &Config) -> Vec<String> {
    let strip = |c: &Config| {
        let mut c = c.clone();
        c.log_level = None;
        c.trust.allow.clear();
        serde_json::to_value(c)
    };
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (strip(old), strip(new))
    else {
        return vec!["(config not comparable)".into()];
    };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_names_the_sections_only_a_restart_applies() {
        let old = Config::default();
        let mut new = old.clone();
        new.log_level = Some("debug".into());
        assert!(needs_restart(&old, &new).is_empty());
        new.trust.allow = vec!["orchestrator".into()];
        assert!(needs_restart(&old, &new).is_empty());
        new.tunnel.listen_port = 4242;
        new.metrics.listen = Some("127.0.0.1:9469".parse().unwrap());
        new.trust.max_pending = 7;
        assert_eq!(
            needs_restart(&old, &new),
            vec!["metrics", "trust", "tunnel"]
        );
    }
}
