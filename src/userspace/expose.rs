//! Port forwarding into this node: an overlay TCP port is exposed to a local `HOST:PORT`, so an
//! agent without root (userspace mode) can serve peers. Each connection accepted on the overlay
//! port is spliced to a fresh TCP connection to the target.
//!
//! `pilotctl expose 8080 --to 127.0.0.1:3000`, `expose --list`, `expose --remove 8080` drive an
//! [`Exposer`] through the local API; `[[expose]]` entries in the config are added at start.
//!
//! Link-local targets (169.254.0.0/16, fe80::/10) and cloud metadata services (169.254.169.254,
//! fd00:ec2::254, `metadata.google.internal`) are refused unless asked for explicitly
//! (`--allow-link-local`, `allow_link_local` in the API request or the `[[expose]]` entry): a
//! peer reaching the metadata service of a cloud VM can often read its credentials. A target
//! given as a name is checked again when each connection resolves it.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::userspace::overlay_net::{OverlayNet, OverlayStream};

mod udp;
pub use udp::UdpExposeLimits;

/// How long a connection to the local target may take.
pub const TARGET_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most connections spliced at once per exposed port.
pub const MAX_CONNECTIONS_PER_PORT: usize = 1024;
/// Buffer of each direction of a spliced connection.
const SPLICE_BUFFER: usize = 256 * 1024;

/// One exposed port, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Exposed {
    /// The overlay port.
    pub port: u16,
    /// The local target, `HOST:PORT`.
    pub to: String,
    /// `tcp` (default) or `udp`.
    #[serde(default)]
    pub protocol: ExposeProtocol,
}

/// Which transport an exposed port forwards.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ExposeProtocol {
    /// TCP: each connection spliced to a new connection to the target.
    #[default]
    Tcp,
    /// UDP: each peer's datagrams through a local socket of its own.
    Udp,
}

impl ExposeProtocol {
    /// `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExposeProtocol::Tcp => "tcp",
            ExposeProtocol::Udp => "udp",
        }
    }
}

/// Parses `PORT` or `PORT/tcp` or `PORT/udp` (the CLI's spelling of an exposed port).
pub fn parse_port_spec(s: &str) -> Option<(u16, ExposeProtocol)> {
    let (port, proto) = match s.split_once('/') {
        None => (s, ExposeProtocol::Tcp),
        Some((p, "tcp")) => (p, ExposeProtocol::Tcp),
        Some((p, "udp")) => (p, ExposeProtocol::Udp),
        Some(_) => return None,
    };
    port.parse().ok().map(|p| (p, proto))
}

/// Errors from changing the exposed ports.
#[derive(Debug, thiserror::Error)]
pub enum ExposeError {
    /// The target is not `HOST:PORT`.
    #[error("`{0}` is not a target: expected HOST:PORT, e.g. 127.0.0.1:3000 or [::1]:3000")]
    InvalidTarget(String),
    /// Port 0 cannot be exposed.
    #[error("overlay port 0 cannot be exposed")]
    PortZero,
    /// The port is exposed already.
    #[error("overlay port {port} is already exposed to {to}")]
    AlreadyExposed {
        /// The port.
        port: u16,
        /// Where it goes now.
        to: String,
    },
    /// The port is not exposed.
    #[error("overlay port {0} is not exposed")]
    NotExposed(u16),
    /// A link-local or cloud-metadata target without `allow_link_local`.
    #[error("`{to}` is {what}; peers could reach it through this node")]
    LinkLocal {
        /// The target.
        to: String,
        /// What it is ("a link-local address", "a cloud metadata service").
        what: &'static str,
    },
    /// Listening on the overlay port failed (another service holds it?).
    #[error("cannot listen on overlay port {port}: {source}")]
    Listen {
        /// The port.
        port: u16,
        /// Why.
        source: io::Error,
    },
}

impl From<ExposeError> for crate::error::PilotError {
    fn from(e: ExposeError) -> Self {
        use crate::error::{ErrorCode, PilotError};
        let (code, hint) = match e {
            ExposeError::InvalidTarget(_) | ExposeError::PortZero => (
                ErrorCode::InvalidArgument,
                "give a port and a target: expose 8080 --to 127.0.0.1:3000",
            ),
            ExposeError::AlreadyExposed { .. } => (
                ErrorCode::AlreadyExists,
                "remove it first with `pilotctl expose --remove PORT`",
            ),
            ExposeError::NotExposed(_) => (
                ErrorCode::NotFound,
                "see the exposed ports with `pilotctl expose --list`",
            ),
            ExposeError::Listen { .. } => (
                ErrorCode::AlreadyExists,
                "another service holds that overlay port; choose another",
            ),
            ExposeError::LinkLocal { .. } => (
                ErrorCode::Unauthorized,
                "if you mean it, pass --allow-link-local (API: \"allow_link_local\": true; \
                 config: allow_link_local = true in the [[expose]] entry)",
            ),
        };
        PilotError::new(code, e.to_string(), hint)
    }
}

/// Checks that `to` looks like `HOST:PORT` with a non-zero port.
pub fn validate_target(to: &str) -> Result<(), ExposeError> {
    if crate::config::is_valid_expose_target(to) {
        Ok(())
    } else {
        Err(ExposeError::InvalidTarget(to.to_string()))
    }
}

/// Cloud metadata services reachable from a VM (AWS IPv4 and IPv6, GCP, Azure, ...).
const METADATA_IPS: [IpAddr; 2] = [
    IpAddr::V4(std::net::Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
];
/// Names of cloud metadata services.
const METADATA_NAMES: [&str; 1] = ["metadata.google.internal"];

/// What an address is, if it is one a target needs `allow_link_local` for.
fn restricted_ip(ip: IpAddr) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    if METADATA_IPS.contains(&ip) {
        return Some("a cloud metadata service");
    }
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    };
    link_local.then_some("a link-local address")
}

/// Refuses a link-local or cloud-metadata target (an IP literal or a known metadata name)
/// unless `allow_link_local`.
pub fn check_target_scope(to: &str, allow_link_local: bool) -> Result<(), ExposeError> {
    if allow_link_local {
        return Ok(());
    }
    let host = to.rsplit_once(':').map_or(to, |(h, _)| h);
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    // A zone (`fe80::1%eth0`) is link-local by definition.
    let bare = host.split('%').next().unwrap_or(host);
    let what = if let Ok(ip) = bare.parse::<IpAddr>() {
        restricted_ip(ip).or(host.contains('%').then_some("a link-local address"))
    } else {
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        METADATA_NAMES
            .contains(&name.as_str())
            .then_some("a cloud metadata service")
    };
    match what {
        Some(what) => Err(ExposeError::LinkLocal {
            to: to.to_string(),
            what,
        }),
        None => Ok(()),
    }
}

struct Entry {
    to: String,
    task: JoinHandle<()>,
}

/// The table of exposed ports and the tasks that serve them. Dropping it stops them all.
pub struct Exposer {
    net: OverlayNet,
    entries: Mutex<BTreeMap<u16, Entry>>,
    /// Exposed UDP ports (a port space of their own).
    udp: Mutex<BTreeMap<u16, Entry>>,
    udp_limits: UdpExposeLimits,
}

impl std::fmt::Debug for Exposer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exposer")
            .field("exposed", &self.list())
            .finish()
    }
}

impl Exposer {
    /// An empty table over `net`.
    pub fn new(net: OverlayNet) -> Self {
        Exposer::with_udp_limits(net, UdpExposeLimits::default())
    }

    /// The same, with these limits for exposed UDP ports.
    pub fn with_udp_limits(net: OverlayNet, udp_limits: UdpExposeLimits) -> Self {
        Exposer {
            net,
            entries: Mutex::new(BTreeMap::new()),
            udp: Mutex::new(BTreeMap::new()),
            udp_limits,
        }
    }

    /// Exposes overlay UDP `port` to the local `to` (`HOST:PORT`), with the checks of
    /// [`Exposer::add_with`]. The overlay port is bound when this returns.
    pub async fn add_udp(
        &self,
        port: u16,
        to: &str,
        allow_link_local: bool,
    ) -> Result<(), ExposeError> {
        if port == 0 {
            return Err(ExposeError::PortZero);
        }
        validate_target(to)?;
        check_target_scope(to, allow_link_local)?;
        let exposed_to = |port| {
            let table = self.udp.lock().unwrap_or_else(|p| p.into_inner());
            table.get(&port).map(|e: &Entry| e.to.clone())
        };
        if let Some(to) = exposed_to(port) {
            return Err(ExposeError::AlreadyExposed { port, to });
        }
        let target = Arc::<str>::from(to);
        let task = udp::start(&self.net, port, target, allow_link_local, self.udp_limits)
            .await
            .map_err(|source| ExposeError::Listen { port, source })?;
        let mut table = self.udp.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = table.get(&port) {
            // Another add won the race while we were binding.
            task.abort();
            return Err(ExposeError::AlreadyExposed {
                port,
                to: e.to.clone(),
            });
        }
        table.insert(
            port,
            Entry {
                to: to.to_string(),
                task,
            },
        );
        tracing::info!(port, %to, "overlay UDP port exposed");
        Ok(())
    }

    /// Stops exposing UDP `port`.
    pub fn remove_udp(&self, port: u16) -> Result<Exposed, ExposeError> {
        let e = self
            .udp
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&port)
            .ok_or(ExposeError::NotExposed(port))?;
        e.task.abort();
        tracing::info!(port, to = %e.to, "overlay UDP port no longer exposed");
        Ok(Exposed {
            port,
            to: e.to,
            protocol: ExposeProtocol::Udp,
        })
    }

    /// Exposes overlay `port` to the local `to` (`HOST:PORT`), refusing link-local and cloud
    /// metadata targets. The overlay port listens when this returns.
    pub async fn add(&self, port: u16, to: &str) -> Result<(), ExposeError> {
        self.add_with(port, to, false).await
    }

    /// [`Exposer::add`], with link-local and cloud metadata targets allowed if
    /// `allow_link_local`.
    pub async fn add_with(
        &self,
        port: u16,
        to: &str,
        allow_link_local: bool,
    ) -> Result<(), ExposeError> {
        if port == 0 {
            return Err(ExposeError::PortZero);
        }
        validate_target(to)?;
        check_target_scope(to, allow_link_local)?;
        if let Some(e) = self.lock().get(&port) {
            return Err(ExposeError::AlreadyExposed {
                port,
                to: e.to.clone(),
            });
        }
        let mut listener = self
            .net
            .listen(port)
            .await
            .map_err(|source| ExposeError::Listen { port, source })?;
        let target = Arc::<str>::from(to);
        let task_target = target.clone();
        let task = tokio::spawn(async move {
            let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS_PER_PORT));
            loop {
                let Ok(permit) = limit.clone().acquire_owned().await else {
                    return;
                };
                let stream = match listener.accept().await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(port, error = %e, "exposed port stopped accepting");
                        return;
                    }
                };
                let to = task_target.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    if let Err(e) = splice_to(stream, &to, allow_link_local).await {
                        tracing::debug!(port, %to, error = %e, "exposed connection ended");
                    }
                });
            }
        });
        let mut entries = self.lock();
        if let Some(e) = entries.get(&port) {
            // Another add won the race while we were listening.
            task.abort();
            return Err(ExposeError::AlreadyExposed {
                port,
                to: e.to.clone(),
            });
        }
        entries.insert(
            port,
            Entry {
                to: target.to_string(),
                task,
            },
        );
        tracing::info!(port, %to, "overlay port exposed");
        Ok(())
    }

    /// Stops exposing `port`. Connections already spliced keep running.
    pub fn remove(&self, port: u16) -> Result<Exposed, ExposeError> {
        let e = self
            .lock()
            .remove(&port)
            .ok_or(ExposeError::NotExposed(port))?;
        e.task.abort();
        tracing::info!(port, to = %e.to, "overlay port no longer exposed");
        Ok(Exposed {
            port,
            to: e.to,
            protocol: ExposeProtocol::Tcp,
        })
    }

    /// The exposed ports, in order.
    pub fn list(&self) -> Vec<Exposed> {
        let udp = self.udp.lock().unwrap_or_else(|p| p.into_inner());
        let udp = udp.iter().map(|(port, e)| Exposed {
            port: *port,
            to: e.to.clone(),
            protocol: ExposeProtocol::Udp,
        });
        self.lock()
            .iter()
            .map(|(port, e)| Exposed {
                port: *port,
                to: e.to.clone(),
                protocol: ExposeProtocol::Tcp,
            })
            .chain(udp)
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u16, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Exposer {
    fn drop(&mut self) {
        for e in self.lock().values() {
            e.task.abort();
        }
        for e in self.udp.lock().unwrap_or_else(|p| p.into_inner()).values() {
            e.task.abort();
        }
    }
}

/// Resolves `to` and connects to the first address that answers, skipping link-local and
/// metadata addresses a name resolved to unless `allow_link_local`.
async fn connect_target(to: &str, allow_link_local: bool) -> io::Result<TcpStream> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(to)
        .await?
        .filter(|a| allow_link_local || restricted_ip(a.ip()).is_none())
        .collect();
    let mut last = io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("{to} resolves only to link-local or metadata addresses"),
    );
    for a in addrs {
        match TcpStream::connect(a).await {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

async fn splice_to(overlay: OverlayStream, to: &str, allow_link_local: bool) -> io::Result<()> {
    let local = tokio::time::timeout(TARGET_CONNECT_TIMEOUT, connect_target(to, allow_link_local))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "target did not answer"))??;
    let _ = local.set_nodelay(true);
    overlay.splice(local, Vec::new(), SPLICE_BUFFER).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_and_metadata_targets_need_the_flag() {
        for bad in [
            "169.254.169.254:80",
            "169.254.1.2:3000",
            "[fe80::1]:22",
            "[fe80::1%eth0]:22",
            "[febf::1]:22",
            "[fd00:ec2::254]:80",
            "[::ffff:169.254.169.254]:80",
            "metadata.google.internal:80",
            "Metadata.Google.Internal.:80",
        ] {
            let e = check_target_scope(bad, false).unwrap_err();
            assert!(matches!(e, ExposeError::LinkLocal { .. }), "{bad}");
            let e = crate::error::PilotError::from(e);
            assert_eq!(e.code, crate::error::ErrorCode::Unauthorized, "{bad}");
            assert!(e.hint.contains("--allow-link-local"), "{}", e.hint);
            assert!(check_target_scope(bad, true).is_ok(), "{bad} with the flag");
        }
        assert!(check_target_scope("169.254.169.254:80", false)
            .unwrap_err()
            .to_string()
            .contains("metadata"));
        for ok in [
            "127.0.0.1:3000",
            "[::1]:22",
            "10.0.0.1:80",
            "169.253.255.255:80",
            "169.255.0.1:80",
            "[fec0::1]:22",
            "[fd00:ec2::253]:80",
            "localhost:8080",
            "metadata.example.com:80",
        ] {
            assert!(check_target_scope(ok, false).is_ok(), "{ok}");
        }
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_link_local_is_not_connected_to() {
        let e = connect_target("169.254.169.254:80", false)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
    }

    #[test]
    fn targets_must_be_host_and_port() {
        for ok in [
            "127.0.0.1:3000",
            "[::1]:80",
            "localhost:8080",
            "my-host.lan:1",
        ] {
            assert!(validate_target(ok).is_ok(), "{ok}");
        }
        for bad in [
            "3000",
            "127.0.0.1",
            "127.0.0.1:0",
            ":80",
            "::1:80",
            "a b:80",
            "[zz]:80",
            "h:99999",
        ] {
            assert!(validate_target(bad).is_err(), "{bad}");
        }
    }
}
