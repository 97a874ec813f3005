//! `registry status`: what a registry instance last reported (its `status.json`) and, with a
//! PostgreSQL store, what every instance of the cluster reported (`pilot_instances`).

use serde::Serialize;

use super::args::RegistryStatusArgs;
use super::output::{paths, Output};
use crate::error::{ErrorCode, PilotError};
use crate::registry::pg::{is_postgres, read_instances, InstanceRow};
use crate::registry::runner::{InstanceStatus, RegistryConfig, STATUS_FILE};

/// A status older than this (ms) is shown as stale: the instance is probably down.
const STALE_MS: u64 = 10_000;

/// The answer of `registry status`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RegistryStatus {
    /// When this was read (unix ms).
    pub now_ms: u64,
    /// The local instance's status file, if there is one (instance, store, counts, lag).
    #[schema(value_type = Option<Object>)]
    pub local: Option<InstanceStatus>,
    /// Every instance of the cluster (PostgreSQL store only).
    #[schema(value_type = Vec<Object>)]
    pub cluster: Vec<InstanceRow>,
}

/// Reads and shows the status.
pub fn run(args: &RegistryStatusArgs) -> Result<Output, PilotError> {
    let file_config = match &args.config {
        Some(p) => Some(RegistryConfig::load(p)?),
        None => None,
    };
    let state = match (&args.state, &file_config) {
        (Some(s), _) => s.clone(),
        (None, Some(c)) => c.state_dir.clone(),
        (None, None) => paths()?.dir.join("registry"),
    };
    let store = args
        .store
        .clone()
        .or_else(|| file_config.and_then(|c| c.store));
    let local = std::fs::read(state.join(STATUS_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<InstanceStatus>(&b).ok());
    let cluster = match store.as_deref() {
        Some(url) if is_postgres(url) => read_instances(url)?,
        _ => Vec::new(),
    };
    if local.is_none() && cluster.is_empty() {
        return Err(PilotError::new(
            ErrorCode::NotFound,
            format!("no registry status in {}", state.display()),
            "give the registry's --state (or --config), or --store postgres://... for a cluster; a running registry writes its status every 2 s",
        ));
    }
    let status = RegistryStatus {
        now_ms: crate::clock::unix_ms_now(),
        local,
        cluster,
    };
    let text = render(&status);
    Output::local(&status, text)
}

fn line(s: &InstanceStatus, now_ms: u64) -> String {
    let mut text = head(s, now_ms);
    if let Some(t) = &s.tls {
        text.push_str(&format!(
            "\n  tls: open {} (websocket {}), accepted {} (websocket {}), refused {} full, {} failed handshakes, {} http, closed idle/bad {}\n  tls frames in {} ({} B), out {} ({} B), dropped {}",
            t.open,
            t.websocket_open,
            t.accepted,
            t.websocket_accepted,
            t.refused_full,
            t.handshake_failed,
            t.websocket_refused,
            t.closed_idle_or_bad,
            t.frames_in,
            t.bytes_in,
            t.frames_out,
            t.bytes_out,
            t.dropped,
        ));
    }
    text
}

fn head(s: &InstanceStatus, now_ms: u64) -> String {
    let age = now_ms.saturating_sub(s.updated_ms);
    let state = if age > STALE_MS {
        format!("STALE ({} s old: down?)", age / 1000)
    } else {
        "up".to_string()
    };
    format!(
        "instance {} ({state}) listen {} store {}\n  online {} (elsewhere {}), registered {}, names {}, held {}\n  store queue {} (failed commits {}, parked {}), remote changes {} (max lag {} ms, listener resyncs {}), statements {}, requests {}",
        s.instance,
        s.listen,
        s.store,
        s.sizes.online,
        s.sizes.online_elsewhere,
        s.sizes.registered,
        s.sizes.names,
        s.sizes.held,
        s.store_queue,
        s.failed_commits,
        s.parked,
        s.remote_changes,
        s.remote_lag_max_ms,
        s.listener_resyncs,
        s.statements,
        s.counters.accepted,
    )
}

fn render(st: &RegistryStatus) -> String {
    let mut out = Vec::new();
    if let Some(s) = &st.local {
        out.push(line(s, st.now_ms));
    }
    if !st.cluster.is_empty() {
        out.push(format!("cluster: {} instance(s)", st.cluster.len()));
        for row in &st.cluster {
            match serde_json::from_value::<InstanceStatus>(row.status.clone()) {
                Ok(s) => out.push(line(&s, st.now_ms)),
                Err(_) => out.push(format!("instance {} (unreadable status)", row.instance)),
            }
        }
    }
    out.join("\n")
}
