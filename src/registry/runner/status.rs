//! The status an instance publishes every few seconds: `status.json` in its state directory
//! (owner-only, replaced atomically) and, in a cluster, its row of `pilot_instances`.
//! `pilotctl registry status` reads them.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::RegistryConfig;
use crate::identity::PublicKey;
use crate::registry::pg::PgHandle;
use crate::registry::server::{Counters, Registry, Sizes};
use crate::registry::tls::hub::TlsStats;
use crate::registry::writer::WriterGauges;

/// The status file inside a registry's state directory.
pub const STATUS_FILE: &str = "status.json";

/// How often the status is written (ms).
const EVERY_MS: u64 = 2000;

/// What an instance reports about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceStatus {
    /// Its name in the cluster (the listen address unless configured).
    pub instance: String,
    /// Where it listens.
    pub listen: String,
    /// Its store: `redb PATH` or `postgres HOST/DB`.
    pub store: String,
    /// The registry key (shared by the instances of a cluster).
    pub key: String,
    /// When it started (unix ms).
    pub started_ms: u64,
    /// When this status was written (unix ms).
    pub updated_ms: u64,
    /// State sizes.
    pub sizes: Sizes,
    /// Batches waiting for the store's writer: the store's lag.
    pub store_queue: usize,
    /// Store commits that failed.
    pub failed_commits: u64,
    /// Changes from other instances applied since the last status.
    pub remote_changes: u64,
    /// Largest delay from another instance's commit to its application here, since the last
    /// status (ms).
    pub remote_lag_max_ms: u64,
    /// SQL statements run by this instance's store so far (clusters).
    pub statements: u64,
    /// Requests parked until their commit (a hostname claim or held message, clusters).
    #[serde(default)]
    pub parked: usize,
    /// Times the cluster listener lost its connection, reconnected and resynchronised.
    #[serde(default)]
    pub listener_resyncs: u64,
    /// What the core counted.
    pub counters: Counters,
    /// The TLS transport's counters (connections, WebSocket, frames and bytes), when it is on.
    #[serde(default)]
    pub tls: Option<TlsStats>,
}

/// Writes the status on a timer.
pub(super) struct StatusWriter {
    base: InstanceStatus,
    path: PathBuf,
    gauges: WriterGauges,
    pg: Option<PgHandle>,
    last_ms: u64,
    lag_max: u64,
    remote: u64,
}

impl StatusWriter {
    pub(super) fn new(
        config: &RegistryConfig,
        store: String,
        key: PublicKey,
        gauges: WriterGauges,
        pg: Option<PgHandle>,
        listen: Option<SocketAddr>,
    ) -> Self {
        let now = crate::clock::unix_ms_now();
        StatusWriter {
            base: InstanceStatus {
                instance: config.instance_name(),
                listen: listen.unwrap_or(config.listen).to_string(),
                store,
                key: key.to_string(),
                started_ms: now,
                updated_ms: now,
                sizes: Sizes::default(),
                store_queue: 0,
                failed_commits: 0,
                remote_changes: 0,
                remote_lag_max_ms: 0,
                statements: 0,
                parked: 0,
                listener_resyncs: 0,
                counters: Counters::default(),
                tls: None,
            },
            path: config.state_dir.join(STATUS_FILE),
            gauges,
            pg,
            last_ms: 0,
            lag_max: 0,
            remote: 0,
        }
    }

    /// Notes that the cluster listener reconnected and the core resynchronised.
    pub(super) fn note_resync(&mut self) {
        self.base.listener_resyncs += 1;
    }

    /// Notes the delay of one change from another instance.
    pub(super) fn note_lag(&mut self, ms: u64) {
        self.lag_max = self.lag_max.max(ms);
        self.remote += 1;
    }

    /// Writes the status if it is due (with the TLS transport's counters `tls`, if on).
    pub(super) fn tick(&mut self, registry: &Registry, now_ms: u64, tls: Option<TlsStats>) {
        if now_ms < self.last_ms + EVERY_MS {
            return;
        }
        self.last_ms = now_ms;
        let mut s = self.base.clone();
        s.updated_ms = now_ms;
        s.sizes = registry.sizes(now_ms);
        s.store_queue = self.gauges.queued();
        s.failed_commits = self.gauges.failed();
        s.remote_changes = std::mem::take(&mut self.remote);
        s.remote_lag_max_ms = std::mem::take(&mut self.lag_max);
        s.statements = self.pg.as_ref().map_or(0, PgHandle::statements);
        s.counters = registry.counters().clone();
        s.parked = registry.parked();
        s.tls = tls;
        match serde_json::to_vec_pretty(&s) {
            Ok(bytes) => {
                if let Err(e) = crate::state::paths::write_private_atomic(&self.path, &bytes) {
                    tracing::debug!("cannot write {}: {e}", self.path.display());
                }
            }
            Err(e) => tracing::debug!("cannot encode the status: {e}"),
        }
        if let Some(pg) = &self.pg {
            pg.publish_status(serde_json::to_value(&s).unwrap_or_default());
        }
    }
}
