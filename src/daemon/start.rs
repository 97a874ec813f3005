//! Starting the node's parts in order: the data plane (on a TUN device or the userspace
//! stack), the node driver on its socket, then the services, the exposed ports and the
//! SOCKS5 proxy.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, watch};

use crate::config::{Config, Mode};
use crate::daemon::local_api::Node;
use crate::daemon::mode::ModeChoice;
use crate::daemon::node_driver::{NodeDriver, NodeHandle};
use crate::daemon::peer_resolver::PeerResolver;
use crate::error::{ErrorCode, PilotError};
use crate::identity::{Identity, PublicKey};
use crate::mapping::Hostname;
use crate::netstack::Netstack;
use crate::node::control::ControlPlane;
use crate::node::registry_client::{
    parse_registry_spec, ClientConfig, LearnedKeys, REGISTRY_KEYS_FILE,
};
use crate::node::trust::{AllowList, TrustStore, TRUST_FILE};
use crate::node::views::NodeEvent;
use crate::node::NodeConfig;
use crate::services::Messages;
use crate::state::paths::StatePaths;
use crate::tun::{TunConfig, TunDevice};
use crate::userspace::expose::Exposer;
use crate::userspace::overlay_net::OverlayNet;
use crate::wg::{DataPlane, DataPlaneConfig, Inner};

/// Node events buffered per listener of the live stream before a slow one misses some.
const EVENT_QUEUE: usize = 1024;

/// What the node starts from.
pub struct Setup {
    /// Our identity.
    pub identity: Arc<Identity>,
    /// The effective config.
    pub config: Config,
    /// The state directory.
    pub paths: StatePaths,
    /// The mode to run.
    pub mode: ModeChoice,
    /// The hostname to claim.
    pub hostname: Option<Hostname>,
}

/// Starts every part of the node; `shutdown` is what `POST /v1/shutdown` sets.
pub async fn start_node(s: Setup, shutdown: watch::Sender<bool>) -> Result<Node, PilotError> {
    let (events, _) = broadcast::channel(EVENT_QUEUE);
    // Both modes run the data plane (the control plane needs its UDP socket either way).
    // TUN mode: its inner side is the TUN device. Userspace mode: the netstack.
    let (plane, netstack) = match s.mode.mode {
        Mode::Tun => (start_dataplane(&s.identity, &s.config, None)?, None),
        _ => {
            let (stack, inner) = crate::userspace::start_netstack(
                &s.identity,
                &s.config,
                tokio::runtime::Handle::current(),
            )?;
            let plane = start_dataplane(&s.identity, &s.config, Some(inner))?;
            (plane, Some(stack))
        }
    };
    let plane = Arc::new(plane);
    let control = start_control(&s, &plane, events.clone()).await?;
    let overlay = match &netstack {
        Some(stack) => OverlayNet::Userspace(stack.clone()),
        None => OverlayNet::Kernel {
            address: s.config.network.ipv6(s.identity.addr48()),
            device: Some(s.config.tun.name.clone()),
        },
    };
    let exposer = new_exposer(&s, &overlay);
    let messages = start_services(&s, &overlay, &plane, &exposer).await?;
    let files = start_files(&s, &overlay, &plane).await;
    let hostname = Arc::new(Mutex::new(s.hostname.clone()));
    let dns = crate::daemon::dns::start(
        &s.config,
        s.mode.mode,
        s.identity.addr48(),
        hostname.clone(),
        plane.clone(),
    );
    let (pubsub, tasks) = start_pubsub_tasks(&s, &overlay, &plane).await;
    let socks5 = match &netstack {
        Some(stack) => start_socks5(&s.config, &s.paths.dir, stack, &plane, &control).await?,
        None => None,
    };
    let webhook = Arc::new(crate::daemon::webhook::Webhook::open(
        &s.paths.dir,
        &s.config.webhook,
    ));
    Ok(Node {
        identity: s.identity,
        config: s.config,
        paths: s.paths,
        mode: s.mode,
        hostname,
        started: Instant::now(),
        shutdown,
        dataplane: plane,
        control,
        exposer,
        socks5,
        overlay,
        messages,
        events,
        webhook,
        files,
        dns,
        pubsub,
        tasks,
    })
}

/// The exposed-port forwarder, with the `[udp]` limits for exposed UDP ports.
fn new_exposer(s: &Setup, overlay: &OverlayNet) -> Exposer {
    Exposer::with_udp_limits(
        overlay.clone(),
        crate::userspace::expose::UdpExposeLimits {
            max_peers: s.config.udp.expose_max_peers,
            idle: Duration::from_secs(s.config.udp.expose_idle_secs),
            queue: s.config.udp.queue_datagrams,
        },
    )
}

/// The pub/sub broker (port 1002) and the task service (port 1003); the daemon runs on
/// without either if it cannot start.
async fn start_pubsub_tasks(
    s: &Setup,
    overlay: &OverlayNet,
    plane: &Arc<DataPlane>,
) -> (
    Option<Arc<crate::services::pubsub::Pubsub>>,
    Option<Arc<crate::services::tasks::Tasks>>,
) {
    let pubsub = crate::daemon::pubsub_tasks::start_pubsub(
        &s.paths.dir,
        s.identity.public_key(),
        overlay,
        plane,
        &s.config.pubsub,
    )
    .await;
    let tasks = crate::daemon::pubsub_tasks::start_tasks(
        &s.paths.dir,
        s.identity.clone(),
        s.config.network,
        overlay,
        plane,
        &s.config.tasks,
    )
    .await;
    (pubsub, tasks)
}

/// The file service (port 1004); the daemon runs on without it if it cannot start.
async fn start_files(
    s: &Setup,
    overlay: &OverlayNet,
    plane: &Arc<DataPlane>,
) -> Option<Arc<crate::services::Files>> {
    let started = crate::services::Files::start(
        &s.paths.dir,
        overlay.clone(),
        plane.clone(),
        &s.config.files,
    )
    .await;
    match started {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::warn!(error = %e, "file service not started (port 1004)");
            None
        }
    }
}

/// Echo (port 7), messages (port 1001) and the config's exposed ports.
async fn start_services(
    s: &Setup,
    overlay: &OverlayNet,
    plane: &Arc<DataPlane>,
    exposer: &Exposer,
) -> Result<Option<Arc<Messages>>, PilotError> {
    crate::services::start_echo(overlay.clone());
    let messages = match Messages::start(
        &s.paths.dir,
        overlay.clone(),
        plane.clone(),
        &s.config.messages,
    )
    .await
    {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(error = %e, "message service not started (port 1001)");
            None
        }
    };
    for e in &s.config.exposes {
        exposer.add_with(e.port, &e.to, e.allow_link_local).await?;
    }
    Ok(messages)
}

/// The SOCKS5 proxy of userspace mode, if the config enables it; returns where it listens.
async fn start_socks5(
    config: &Config,
    state_dir: &std::path::Path,
    stack: &Netstack,
    plane: &Arc<DataPlane>,
    control: &NodeHandle,
) -> Result<Option<SocketAddr>, PilotError> {
    let resolver = PeerResolver::new(plane.clone(), Some(control.clone()));
    Ok(
        crate::userspace::start_socks5(config, state_dir, stack, Arc::new(resolver))
            .await?
            .map(|(addr, _task)| addr),
    )
}

/// The configured registries (`HOST:PORT`, optionally `#KEY` to pin its key), resolved.
async fn resolve_registries(
    specs: &[String],
) -> Result<(Vec<SocketAddr>, HashMap<SocketAddr, PublicKey>), PilotError> {
    let mut addrs = Vec::new();
    let mut pinned = HashMap::new();
    for spec in specs {
        let (hostport, key) = parse_registry_spec(spec)?;
        let resolved = tokio::net::lookup_host(hostport.as_str())
            .await
            .map_err(|e| {
                PilotError::new(
                    ErrorCode::InvalidArgument,
                    format!("cannot resolve registry {hostport}: {e}"),
                    "give the registry as HOST:PORT (an IP address avoids DNS)",
                )
            })?
            .next()
            .ok_or_else(|| {
                PilotError::invalid(
                    format!("registry {hostport} resolves to no address"),
                    "give the registry as IP:PORT",
                )
            })?;
        if let Some(k) = key {
            pinned.insert(resolved, k);
        }
        addrs.push(resolved);
    }
    Ok((addrs, pinned))
}

/// Starts the control plane (registries, trust) on the data plane's socket.
async fn start_control(
    s: &Setup,
    plane: &Arc<DataPlane>,
    events: broadcast::Sender<NodeEvent>,
) -> Result<NodeHandle, PilotError> {
    let me = s.identity.public_key();
    let mut trust = TrustStore::open(me, &s.paths.dir.join(TRUST_FILE))?;
    trust.set_allow_list(AllowList::from_entries(&s.config.trust.allow)?);
    trust.set_limits(crate::node::trust::TrustLimits::from(&s.config.trust));
    let (registries, pinned) = resolve_registries(&s.config.registries).await?;
    let targets = crate::daemon::relay_tls::Targets {
        registries: registries.clone(),
        pinned: pinned.clone(),
        learned: Some(s.paths.dir.join(REGISTRY_KEYS_FILE)),
    };
    let mut cc = ClientConfig::new(registries.clone());
    cc.pinned_keys = pinned;
    cc.learned_keys = LearnedKeys::open(&s.paths.dir.join(REGISTRY_KEYS_FILE))?;
    cc.max_clock_offset = Duration::from_secs(s.config.registry.max_clock_offset_secs);
    // A home relay that leaves a request unanswered as long as the TLS fallback waits for
    // UDP is lost as home (v1.4).
    cc.home_timeout = Duration::from_millis(s.config.relay.udp_timeout_ms.max(100));
    cc.hostname = s.hostname.clone();
    cc.tags = crate::daemon::node_state::load(&s.paths)
        .map(|n| n.tags)
        .unwrap_or_default();
    cc.candidates =
        crate::daemon::candidates::local_candidates(plane.local_port(), &s.config.tun.name);
    let core = ControlPlane::new(
        s.identity.clone(),
        cc,
        trust,
        Instant::now(),
        crate::clock::unix_ms_now(),
    );
    let rx = plane
        .take_control_receiver()
        .ok_or_else(|| PilotError::internal("control receiver taken twice"))?;
    let tc = NodeConfig {
        network: s.config.network,
        static_peers: s.config.peers.iter().map(|p| p.public_key).collect(),
        has_registry: !registries.is_empty(),
    };
    tracing::info!(registries = registries.len(), "control plane running");
    // The transport first: with `tls = "always"` nothing may reach the registry over UDP.
    crate::daemon::relay_tls::spawn(plane.clone(), s.identity.clone(), targets, &s.config.relay)?;
    Ok(NodeDriver::spawn(core, plane.clone(), tc, rx, events))
}

/// A new TUN device with our overlay address and route.
fn create_tun(identity: &Identity, config: &Config) -> Result<Inner, PilotError> {
    let mut tc = TunConfig::new(config.network.ipv6(identity.addr48()));
    tc.name = config.tun.name.clone();
    tc.mtu = config.tun.mtu;
    if config.dns.enabled {
        tc.extra_addresses
            .push(crate::services::dns::dns_address(&config.network));
    }
    Ok(TunDevice::create(&tc)?.into_inner())
}

/// Starts the data plane on `inner` (userspace mode: the netstack) or, when it is `None`, on a
/// new TUN device; loads the static peers from the config (they count as trusted).
fn start_dataplane(
    identity: &Identity,
    config: &Config,
    inner: Option<Inner>,
) -> Result<DataPlane, PilotError> {
    let inner = match inner {
        Some(i) => i,
        None => create_tun(identity, config)?,
    };
    let plane = DataPlane::start(identity, &data_plane_config(config), inner, None)?;
    for p in &config.peers {
        plane.add_peer(p.public_key, p.endpoint)?;
        if let Some(h) = &p.hostname {
            let _ = plane.set_hostname(&p.public_key, Some(h.to_string()));
        }
    }
    tracing::info!(
        port = plane.local_port(),
        peers = config.peers.len(),
        "data plane running"
    );
    Ok(plane)
}

/// The data plane's settings from the config.
fn data_plane_config(config: &Config) -> DataPlaneConfig {
    DataPlaneConfig {
        listen_port: config.tunnel.listen_port,
        keepalive_secs: config.tunnel.keepalive_secs,
        network: config.network,
        handshakes_per_source: config.tunnel.handshakes_per_source,
        handshakes_global: config.tunnel.handshakes_global,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_limits_reach_the_data_plane_and_default_to_its_defaults() {
        let d = data_plane_config(&Config::default());
        let wg = DataPlaneConfig::default();
        assert_eq!(d.handshakes_per_source, wg.handshakes_per_source);
        assert_eq!(d.handshakes_global, wg.handshakes_global);
        let mut c = Config::default();
        c.tunnel.handshakes_per_source = 3;
        c.tunnel.handshakes_global = 50;
        let d = data_plane_config(&c);
        assert_eq!((d.handshakes_per_source, d.handshakes_global), (3, 50));
    }
}
