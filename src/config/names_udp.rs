//! `[dns]` (names in TUN mode) and `[udp]` (UDP through the SOCKS5 proxy and exposed ports in
//! userspace mode).

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Default TTL of DNS answers (seconds): a revoked peer stops resolving in caches within it.
pub const DEFAULT_DNS_TTL_SECS: u32 = 5;
/// Longest TTL `[dns] ttl_secs` may set.
pub const MAX_DNS_TTL_SECS: u32 = 300;

/// `[dns]`: the daemon's resolver for `NAME.pilot`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Serve DNS on `<network prefix>::53` port 53 on the TUN device (TUN mode).
    pub enabled: bool,
    /// Also serve on this loopback address (either mode), e.g. `127.0.0.1:5353`.
    pub loopback: Option<SocketAddr>,
    /// TTL of every answer, positive and negative (seconds, 1 to 300).
    pub ttl_secs: u32,
    /// With systemd-resolved: set the TUN link's DNS server and the `~pilot` routing domain at
    /// start, and revert them on exit. Skipped when resolved is absent.
    pub resolved: bool,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            enabled: true,
            loopback: None,
            ttl_secs: DEFAULT_DNS_TTL_SECS,
            resolved: true,
        }
    }
}

impl DnsConfig {
    /// Checks the ranges.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.ttl_secs == 0 || self.ttl_secs > MAX_DNS_TTL_SECS {
            return Err(format!(
                "dns.ttl_secs = {} is out of range: 1 to {MAX_DNS_TTL_SECS}",
                self.ttl_secs
            ));
        }
        if let Some(a) = self.loopback {
            if !a.ip().is_loopback() {
                return Err(format!(
                    "dns.loopback = {a} is not a loopback address (127.0.0.0/8 or ::1)"
                ));
            }
        }
        Ok(())
    }
}

/// `[udp]`: limits of UDP in userspace mode (SOCKS5 UDP ASSOCIATE and `expose PORT/udp`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UdpConfig {
    /// SOCKS5 UDP associations open at once; more are refused (reply 0x01).
    pub max_associations: usize,
    /// Datagrams queued per UDP socket of the netstack, each way; more are dropped and counted.
    pub queue_datagrams: usize,
    /// Peers one exposed UDP port serves at once (one local socket each); the least recently
    /// active is closed for a new one.
    pub expose_max_peers: usize,
    /// An exposed UDP port forgets a peer silent for this long (seconds).
    pub expose_idle_secs: u64,
}

impl Default for UdpConfig {
    fn default() -> Self {
        UdpConfig {
            max_associations: 64,
            queue_datagrams: 256,
            expose_max_peers: 256,
            expose_idle_secs: 120,
        }
    }
}

impl UdpConfig {
    /// Checks the ranges.
    pub(crate) fn validate(&self) -> Result<(), String> {
        for (k, v) in [
            ("max_associations", self.max_associations),
            ("queue_datagrams", self.queue_datagrams),
            ("expose_max_peers", self.expose_max_peers),
            ("expose_idle_secs", self.expose_idle_secs as usize),
        ] {
            if v == 0 {
                return Err(format!("udp.{k} must be at least 1"));
            }
        }
        Ok(())
    }
}
