//! Starting the resolver for `NAME.pilot`: its names come from the live peer table (trusted
//! peers) and our own hostname; in TUN mode it listens on `<network prefix>::53` on the TUN
//! device and, with systemd-resolved, wires the link (reverted when the daemon stops).

use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::{Arc, Mutex};

use crate::config::{Config, Mode};
use crate::mapping::{Addr48, Hostname, NetworkPrefix};
use crate::services::dns::{self, resolved, DnsService, Names, Zone};
use crate::wg::DataPlane;

/// The resolver's names: our hostname and address, and the trusted peers in the data plane's
/// peer table (an untrusted peer leaves the table, and so the zone, at once).
struct PlaneNames {
    plane: Arc<DataPlane>,
    own: Addr48,
    hostname: Arc<Mutex<Option<Hostname>>>,
    network: NetworkPrefix,
}

impl Names for PlaneNames {
    fn own(&self) -> (Option<Hostname>, Addr48) {
        let h = self.hostname.lock().map(|h| h.clone()).unwrap_or(None);
        (h, self.own)
    }

    fn trusted_hostname(&self, hostname: &str) -> Option<Addr48> {
        let p = self.plane.peer_by_hostname(hostname)?;
        // The address is the key's, read now: a name that moved to another key answers with
        // the new key's address at once.
        self.network.addr48_of(p.ipv6)
    }

    fn trusted_addr(&self, addr: Addr48) -> bool {
        self.plane.peer_by_ip(&self.network.ipv6(addr)).is_some()
    }
}

/// The running resolver and what it changed in systemd-resolved.
pub struct DnsRuntime {
    /// The listeners and counters.
    pub service: DnsService,
    /// The overlay address it serves on (TUN mode).
    pub overlay_address: Option<Ipv6Addr>,
    /// The link configured in systemd-resolved, to revert on exit.
    resolved_link: Mutex<Option<String>>,
    /// What resolved holds for the link, as of start (`absent`, `configured`, `off`, or the
    /// error).
    pub resolved_state: String,
}

impl DnsRuntime {
    /// Removes our settings from systemd-resolved (once; also on drop).
    pub fn revert(&self) {
        let link = self.resolved_link.lock().ok().and_then(|mut l| l.take());
        if let Some(link) = link {
            match resolved::revert(&link) {
                Ok(()) => tracing::info!(%link, "dns: systemd-resolved settings removed"),
                Err(e) => tracing::debug!(error = %e, "dns: resolved revert failed"),
            }
        }
    }
}

impl Drop for DnsRuntime {
    fn drop(&mut self) {
        self.revert();
    }
}

/// The addresses the resolver listens on for `config` in `mode`.
pub fn listen_addresses(config: &Config, mode: Mode) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    if mode == Mode::Tun && config.dns.enabled {
        let a = dns::dns_address(&config.network);
        out.push(SocketAddr::V6(SocketAddrV6::new(a, dns::DNS_PORT, 0, 0)));
    }
    out.extend(config.dns.loopback);
    out
}

/// Starts the resolver (if any listener is configured) and, in TUN mode, wires resolved.
pub fn start(
    config: &Config,
    mode: Mode,
    own: Addr48,
    hostname: Arc<Mutex<Option<Hostname>>>,
    plane: Arc<DataPlane>,
) -> Option<DnsRuntime> {
    let addrs = listen_addresses(config, mode);
    if addrs.is_empty() {
        return None;
    }
    let names = PlaneNames {
        plane,
        own,
        hostname,
        network: config.network,
    };
    let zone = Zone {
        network: config.network,
        ttl: config.dns.ttl_secs,
    };
    let overlay_address =
        (mode == Mode::Tun && config.dns.enabled).then(|| dns::dns_address(&config.network));
    let mut ours = vec![IpAddr::V6(config.network.ipv6(own))];
    ours.extend(overlay_address.map(IpAddr::V6));
    let service = DnsService::start(&addrs, Arc::new(names), zone, dns::local_source(ours));
    let served = overlay_address.filter(|a| service.listening.iter().any(|l| l.ip() == *a));
    let (resolved_link, resolved_state) = match served {
        Some(a) if config.dns.resolved => wire_resolved(&config.tun.name, a),
        _ => (None, "off".to_string()),
    };
    Some(DnsRuntime {
        service,
        overlay_address: served,
        resolved_link: Mutex::new(resolved_link),
        resolved_state,
    })
}

fn wire_resolved(link: &str, server: Ipv6Addr) -> (Option<String>, String) {
    if !resolved::present() {
        tracing::info!("dns: systemd-resolved not running; see `pilotctl dns setup`");
        return (None, resolved::LinkState::Absent.as_str().to_string());
    }
    match resolved::apply(link, server) {
        Ok(()) => {
            tracing::info!(%link, %server, "dns: systemd-resolved routes ~pilot to us");
            (Some(link.to_string()), "configured".to_string())
        }
        Err(e) => {
            tracing::warn!(error = %e, "dns: cannot configure systemd-resolved");
            (None, format!("error: {e}"))
        }
    }
}

impl DnsRuntime {
    /// Where programs of this host should ask: the overlay address, else the first listener.
    pub fn answers_at(&self) -> Option<String> {
        self.overlay_address
            .map(|a| a.to_string())
            .or_else(|| self.service.listening.first().map(|a| a.to_string()))
    }
}

/// `GET /v1/dns`: the resolver's listeners, wiring and counters.
pub fn status(dns: Option<&DnsRuntime>, config: &Config, mode: Mode) -> crate::api::DnsStatus {
    let stats = dns.map(|d| d.service.counters.stats()).unwrap_or_default();
    let address = dns.and_then(|d| d.overlay_address);
    crate::api::DnsStatus {
        listening: dns
            .map(|d| d.service.listening.iter().map(|a| a.to_string()).collect())
            .unwrap_or_default(),
        address: address.map(|a| a.to_string()),
        link: (mode == Mode::Tun).then(|| config.tun.name.clone()),
        ttl_secs: config.dns.ttl_secs,
        resolved: match (dns, address) {
            (Some(d), Some(a)) if d.resolved_state == "configured" => {
                resolved::link_state(&config.tun.name, a)
                    .as_str()
                    .to_string()
            }
            (Some(d), _) => d.resolved_state.clone(),
            (None, _) => "off".to_string(),
        },
        answered: stats.answered,
        nodata: stats.nodata,
        nxdomain: stats.nxdomain,
        refused: stats.refused,
        errors: stats.errors,
        malformed: stats.malformed,
        not_local: stats.not_local,
    }
}
