//! Sockets on the overlay for programs and services: [`overlay_net`] (one listen/connect
//! abstraction over the kernel's sockets in TUN mode and the [`Netstack`] in userspace mode),
//! the [`socks5`] proxy, and [`expose`]d ports; plus starting the userspace pieces for the
//! daemon.

pub mod expose;
pub mod overlay_net;
pub mod socks5;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::config::{Config, Socks5Auth};
use crate::error::{ErrorCode, PilotError};
use crate::identity::Identity;
use crate::netstack::{Netstack, NetstackConfig};
use crate::userspace::overlay_net::OverlayNet;
use crate::userspace::socks5::{
    Credentials, Resolver, Socks5Config, Socks5Error, Socks5Server, CREDENTIALS_FILE,
};
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
    let inner = port.into_inner(rt);
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

/// Starts the SOCKS5 proxy of `config.socks5` over `stack`; `None` when it is disabled. With
/// `auth = "password"` the credentials come from `state_dir`'s `socks5.credentials` (made on
/// the first start).
pub async fn start_socks5(
    config: &Config,
    state_dir: &Path,
    stack: &Netstack,
    resolver: Arc<dyn Resolver>,
) -> Result<Option<(SocketAddr, JoinHandle<()>)>, PilotError> {
    if !config.socks5.enabled {
        return Ok(None);
    }
    let auth = match config.socks5.auth {
        Socks5Auth::None => None,
        Socks5Auth::Password => Some(Credentials::load_or_create(
            &state_dir.join(CREDENTIALS_FILE),
            &mut rand_core::OsRng,
        )?),
    };
    let sc = Socks5Config {
        listen: config.socks5.listen,
        allow_non_loopback: config.socks5.allow_non_loopback,
        auth,
        udp: crate::userspace::socks5::UdpRelayConfig {
            max_associations: config.udp.max_associations,
            queue: config.udp.queue_datagrams,
        },
        ..Socks5Config::default()
    };
    let net = OverlayNet::Userspace(stack.clone());
    // A port taken by someone else is an error, never a silent move elsewhere: a local user who
    // binds it first would receive the traffic meant for pilot. Several daemons on one host
    // set `listen = "127.0.0.1:0"` (any free port, shown by `pilotctl info`).
    let server = Socks5Server::bind(sc, net, config.network, resolver)
        .await
        .map_err(|e| match e {
            Socks5Error::Bind { addr, source } if source.kind() == std::io::ErrorKind::AddrInUse => {
                PilotError::new(
                    ErrorCode::AlreadyExists,
                    format!("the SOCKS5 address {addr} is taken by another process (check who with `ss -ltnp`; it could receive what programs send to pilot)"),
                    "set another port with [socks5] listen in the config (\"127.0.0.1:0\" takes any free port, shown by `pilotctl info`), or [socks5] enabled = false",
                )
            }
            e => PilotError::from(e),
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
    use crate::userspace::socks5::StaticResolver;

    #[tokio::test]
    async fn a_taken_socks5_port_fails_clearly_and_port_zero_takes_a_free_one() {
        let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.socks5.listen = squatter.local_addr().unwrap();
        let (stack, _port) = Netstack::spawn(NetstackConfig::new(
            "fdc5:7a3e:91b4::1:2:3".parse().unwrap(),
        ))
        .unwrap();
        let e = start_socks5(
            &config,
            dir.path(),
            &stack,
            Arc::new(StaticResolver::default()),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::AlreadyExists);
        assert!(e.message.contains("taken"), "{}", e.message);
        assert!(e.hint.contains("[socks5] listen"), "{}", e.hint);

        config.socks5.listen = "127.0.0.1:0".parse().unwrap();
        let (addr, task) = start_socks5(
            &config,
            dir.path(),
            &stack,
            Arc::new(StaticResolver::default()),
        )
        .await
        .unwrap()
        .unwrap();
        assert_ne!(addr.port(), 0);
        task.abort();
    }

    #[test]
    fn the_default_netstack_settings_are_the_netstack_defaults() {
        let mut nc = NetstackConfig::new(std::net::Ipv6Addr::LOCALHOST);
        let defaults = nc.clone();
        apply_settings(&mut nc, &crate::config::NetstackSettings::default());
        assert_eq!(nc, defaults);
    }
}
