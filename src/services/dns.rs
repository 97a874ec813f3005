//! Names for unmodified programs: a DNS server in the daemon for the `.pilot` zone.
//!
//! In TUN mode it listens on the fixed address `<network prefix>::53` (for the default network
//! `fdc5:7a3e:91b4::53`), port 53, which the daemon adds to the TUN device; optionally also on
//! a loopback address (`[dns] loopback`, either mode). Only this host may ask: a query that
//! arrives from a peer through the tunnel is dropped and counted.
//!
//! - [`resolve`]: the zone's rules, pure (query bytes + a snapshot of names and trust →
//!   answer bytes); the DNS codec is hickory-proto's.
//! - [`server`]: the UDP listener and its counters.
//! - [`resolved`]: wiring into systemd-resolved (per-link DNS and the `~pilot` routing domain).

pub mod resolve;
pub mod resolved;
pub mod server;

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use crate::mapping::{Addr48, NetworkPrefix};

pub use resolve::{Names, Zone};
pub use server::{DnsCounters, DnsStats, LocalSource};

/// The port the resolver listens on.
pub const DNS_PORT: u16 = 53;

/// The low 48 bits of the resolver's overlay address (`<network prefix>::53`).
const DNS_HOST: [u8; 6] = [0, 0, 0, 0, 0, 0x53];

/// The resolver's fixed overlay address in `network`: `<network prefix>::53`.
pub fn dns_address(network: &NetworkPrefix) -> Ipv6Addr {
    network.ipv6(Addr48::from_bytes(DNS_HOST))
}

/// A running resolver: where it listens and its counters.
pub struct DnsService {
    /// Addresses it listens on.
    pub listening: Vec<SocketAddr>,
    /// Its counters.
    pub counters: Arc<DnsCounters>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl DnsService {
    /// Starts one listener per address of `addrs` that can be bound; a failed bind is logged
    /// and skipped (DNS is a convenience, never a reason not to start).
    pub fn start(
        addrs: &[SocketAddr],
        names: Arc<dyn Names + Send + Sync>,
        zone: Zone,
        local: LocalSource,
    ) -> DnsService {
        let counters = Arc::new(DnsCounters::default());
        let mut listening = Vec::new();
        let mut tasks = Vec::new();
        for addr in addrs {
            match bind(*addr) {
                Ok(sock) => {
                    let at = sock.local_addr().unwrap_or(*addr);
                    tracing::info!(%at, "dns: serving .pilot");
                    listening.push(at);
                    tasks.push(server::serve(
                        sock,
                        names.clone(),
                        zone,
                        local.clone(),
                        counters.clone(),
                    ));
                }
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "dns: cannot listen; names not served there")
                }
            }
        }
        DnsService {
            listening,
            counters,
            tasks,
        }
    }
}

impl Drop for DnsService {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    let std = std::net::UdpSocket::bind(addr)?;
    std.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(std)
}

/// Whether `ip` is one of `ours` (the local-source rule for a given set of own addresses).
pub fn local_source(ours: Vec<IpAddr>) -> LocalSource {
    Arc::new(move |ip| ours.contains(&ip))
}

#[cfg(test)]
mod service_tests {
    use super::*;

    #[test]
    fn the_resolver_address_is_prefix_colon_colon_53() {
        let a = dns_address(&NetworkPrefix::default());
        assert_eq!(a, "fdc5:7a3e:91b4::53".parse::<Ipv6Addr>().unwrap());
    }
}
