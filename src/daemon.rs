//! The daemon: one per node, process wiring only. It takes the state directory's lock, loads
//! or makes the identity, reads the config, chooses the mode, starts the node's parts and
//! serves the local API until it is told to stop (`daemon stop`, SIGTERM or SIGINT), then
//! cleans up its socket.
//!
//! - [`mode`]: TUN or userspace, and why.
//! - [`settings`]: config, identity, logging.
//! - [`node_state`]: the `node.json` file.
//! - [`start`]: the data plane, the node driver, the services.
//! - [`dns`]: the resolver for `NAME.pilot` and its systemd-resolved wiring.
//! - [`local_api`]: the node as the local API sees it.
//! - [`socket`]: the API socket and the stop signals.
//! - [`notify`], [`ops`], [`metrics`], [`logging`]: systemd readiness and watchdog, reload,
//!   the Prometheus endpoint, journald-friendly and JSON logs.
//! - [`node_driver`], [`peer_resolver`], [`candidates`], [`tunnels`]: the control plane's
//!   driver and what it needs from the process.
//! - [`webhook`]: live events POSTed to the owner's URL.

pub mod candidates;
pub mod connections;
pub mod dgram;
pub mod discovery;
pub mod dns;
pub mod health;
pub mod local_api;
pub mod logging;
pub mod metrics;
pub mod mode;
pub mod netcheck;
pub mod node_driver;
pub mod node_state;
pub mod notify;
pub mod ops;
pub mod peer_resolver;
pub mod pubsub_tasks;
pub mod relay_tls;
pub mod settings;
pub mod socket;
pub mod start;
pub mod tunnels;
pub mod webhook;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;

use crate::config::Mode;
use crate::error::PilotError;
use crate::mapping::Hostname;
use crate::state::lock::DaemonLock;
use crate::state::paths::StatePaths;

pub use mode::{choose_mode, tun_available, ModeChoice};
pub use settings::load_config;

/// What `daemon run` / `daemon start` were asked for; flags override the config file.
#[derive(Debug, Clone, Default)]
pub struct DaemonOptions {
    /// `--hostname`.
    pub hostname: Option<Hostname>,
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--mode`.
    pub mode: Option<Mode>,
    /// `--registry` (repeatable) and `PILOT_REGISTRY`.
    pub registries: Vec<String>,
}

/// Runs the daemon in the foreground until it is told to stop.
pub fn run(opts: DaemonOptions) -> Result<(), PilotError> {
    let paths = StatePaths::from_env()?;
    paths.ensure_dir()?;
    let lock = DaemonLock::acquire(&paths.lock())?;
    let config = settings::effective_config(&paths, &opts)?;
    settings::init_logging(&config);
    let identity = Arc::new(settings::load_identity(&paths)?);
    let mode = choose_mode(config.mode)?;
    let hostname =
        node_state::initial_hostname(&paths, opts.hostname.clone(), config.hostname.clone())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .thread_name("pilot-rt")
        .build()
        .map_err(|e| PilotError::internal(format!("cannot start the runtime: {e}")))?;
    let setup = start::Setup {
        identity,
        config,
        paths: paths.clone(),
        mode,
        hostname,
    };
    let result = rt.block_on(run_node(setup, opts));
    let _ = std::fs::remove_file(&paths.socket);
    drop(lock);
    tracing::info!("daemon stopped");
    result
}

/// Starts the node, serves the API until a stop, then stops the data plane.
async fn run_node(setup: start::Setup, opts: DaemonOptions) -> Result<(), PilotError> {
    let (shutdown, shutdown_rx) = watch::channel(false);
    notify::status("starting: data plane, control plane, services");
    let node = Arc::new(start::start_node(setup, shutdown).await?);
    metrics::start(&node).await?;
    let listener = socket::bind_api(&node.paths)?;
    {
        use crate::api::service::Api;
        node.webhook.start(node.subscribe());
        let info = node.info().await;
        tracing::info!(
            address = %info.address,
            ipv6 = %info.ipv6,
            mode = %info.mode,
            socket = %node.paths.socket.display(),
            "daemon ready"
        );
    }
    ops::spawn(node.clone(), opts);
    socket::serve(node.clone(), listener, shutdown_rx).await;
    // Trust changes peers made in the last half second are still waiting for their delay.
    node.control.save_trust_now().await;
    if let Some(dns) = &node.dns {
        dns.revert();
    }
    node.dataplane.shutdown();
    Ok(())
}
