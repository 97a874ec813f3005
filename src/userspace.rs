//! Sockets on the overlay for programs and services: [`overlay_net`] (one listen/connect
//! abstraction over the kernel's sockets in TUN mode and the [`Netstack`] in userspace mode),
//! the [`socks5`] proxy, and [`expose`]d ports; plus starting the userspace pieces for the
//! daemon.

pub mod expose;
pub mod overlay_net;
pub mod socks5;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::config::Config;
use crate::error::{ErrorCode, PilotError};
use crate::identity::Identity;
use crate::netstack::{Netstack, NetstackConfig};
use crate::userspace::overlay_net::OverlayNet;
use crate::userspace::socks5::{Resolver, Socks5Config, Socks5Error, Socks5Server};
use crate::wg::Inner;

/// Starts the netstack for this node; the returned [`Inner`] goes to `DataPlane::start`.
pub fn start_netstack(
    identity: &Identity,
    config: &Config,
    rt: tokio::runtime::Handle,
) -> Result<(Netstack, Inner), PilotError> {
    let mut nc = NetstackConfig::for_node(&config.network, identity.addr48());
    nc.mtu = config.tun.mtu;
    apply_settings(&mut nc, &config.netstack);
    let (stack, port) = Netstack::spawn(nc).map_err(|e| {
        PilotError::invalid(
            e.to_string(),
            "fix the [netstack] section of the config (see config/pilot.toml for the limits)",
        )
    })?;
    let inner = port.into_inner(config.tun.mtu, rt);
    tracing::info!(address = %stack.address(), "userspace netstack running");
    Ok((stack, inner))
}

/// Applies the `[netstack]` section of the config.
fn apply_settings(nc: &mut NetstackConfig, s: &crate::config::NetstackSettings) {
    use std::time::Duration;
    nc.tcp_buffer = s.tcp_buffer_kib.saturating_mul(1024);
    nc.max_memory = s.max_memory_mib.saturating_mul(1024 * 1024);
    nc.max_flows = s.max_flows;
    nc.idle_timeout = Duration::from_secs(s.idle_timeout_secs);
    nc.half_closed_timeout = Duration::from_secs(s.half_closed_timeout_secs);
    nc.handshake_timeout = Duration::from_secs(s.handshake_timeout_secs);
}

/// Starts the SOCKS5 proxy of `config.socks5` over `stack`; `None` when it is disabled.
pub async fn start_socks5(
    config: &Config,
    stack: &Netstack,
    resolver: Arc<dyn Resolver>,
) -> Result<Option<(SocketAddr, JoinHandle<()>)>, PilotError> {
    if !config.socks5.enabled {
        return Ok(None);
    }
    let sc = Socks5Config {
        listen: config.socks5.listen,
        allow_non_loopback: config.socks5.allow_non_loopback,
        ..Socks5Config::default()
    };
    let net = OverlayNet::Userspace(stack.clone());
    let bound = match Socks5Server::bind(sc.clone(), net.clone(), config.network, resolver.clone())
        .await
    {
        // Several agents on one host each run a daemon: the first takes the configured port,
        // the others take a free one (shown by `pilotctl info`) rather than failing to start.
        Err(Socks5Error::Bind { addr, source })
            if source.kind() == std::io::ErrorKind::AddrInUse =>
        {
            let fallback = SocketAddr::new(addr.ip(), 0);
            tracing::warn!(%addr, %fallback, "SOCKS5 port in use; listening on a free port instead");
            let sc = Socks5Config {
                listen: fallback,
                ..sc
            };
            Socks5Server::bind(sc, net, config.network, resolver).await
        }
        other => other,
    };
    let server = bound.map_err(|e| {
        PilotError::new(
            ErrorCode::InvalidArgument,
            e.to_string(),
            "pick a free address with [socks5] listen in the config, or set [socks5] enabled = false",
        )
    })?;
    let addr = server
        .local_addr()
        .map_err(|e| PilotError::internal(e.to_string()))?;
    tracing::info!(%addr, "SOCKS5 proxy listening");
    Ok(Some((addr, tokio::spawn(server.run()))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_netstack_settings_are_the_netstack_defaults() {
        let mut nc = NetstackConfig::new(std::net::Ipv6Addr::LOCALHOST);
        let defaults = nc.clone();
        apply_settings(&mut nc, &crate::config::NetstackSettings::default());
        assert_eq!(nc, defaults);
    }
}
