//! What `netcheck` shows of each registry: reachable (registered), our reflexive address as it
//! sees us, the correction of our clock against its clock, and the round trip of the last
//! registration or heartbeat answered at its first copy.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::Client;

/// One registry as the client sees it now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RegistryStatus {
    /// The registry, `IP:PORT`.
    #[schema(value_type = String)]
    pub registry: SocketAddr,
    /// Whether it answers our registration and heartbeats (UDP reachable).
    pub registered: bool,
    /// Our address as it sees us (the NAT's public mapping), once it answered.
    #[schema(value_type = Option<String>)]
    pub reflexive: Option<SocketAddr>,
    /// Milliseconds added to our clock to read its clock (0 until it reported a skew).
    pub clock_offset_ms: i64,
    /// Round trip of the last answered registration or heartbeat, ms.
    pub rtt_ms: Option<f64>,
    /// How we reach it now: `udp`, `tls` (the TLS transport) or `wss` (the TLS transport
    /// wrapped in WebSocket). The client knows only `udp`; the daemon fills in the rest.
    #[serde(default = "udp")]
    pub transport: String,
    /// Whether it is our home relay (v1.4): the first registry, in configuration order, where
    /// we are registered and that answers; peers that must relay to us send through it.
    #[serde(default)]
    pub home: bool,
}

fn udp() -> String {
    "udp".into()
}

impl Client {
    /// Every configured registry's status, in configuration order.
    pub fn registry_status(&self) -> Vec<RegistryStatus> {
        self.registries
            .iter()
            .map(|r| RegistryStatus {
                registry: r.addr,
                registered: r.registered,
                reflexive: r.reflexive,
                clock_offset_ms: r.offset_ms,
                rtt_ms: r.rtt.map(|d| d.as_secs_f64() * 1000.0),
                transport: udp(),
                home: self.home == Some(r.addr),
            })
            .collect()
    }
}
