//! `netcheck` (the daemon's view of the network) and `traceroute` (the path to a peer: direct,
//! or through which relay, with the round trip of each leg).

use serde::Serialize;

use super::output::{ask, Output};
use crate::api::{NetcheckData, Request};
use crate::error::{ErrorCode, PilotError};
use crate::node::views::PingReport;

/// One leg of a path.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Hop {
    /// Where the leg ends: the peer's endpoint, the relay, or the peer behind it.
    pub to: String,
    /// Its round trip, ms (`null` when unknown).
    pub rtt_ms: Option<f64>,
    /// Whether the figure is derived (end-to-end minus the relay leg), not measured.
    pub estimated: bool,
}

/// `traceroute`'s data.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Trace {
    /// The peer's public key.
    pub peer: String,
    /// `direct` or `relay`.
    pub path: String,
    /// The relay, when relayed.
    pub relay: Option<String>,
    /// The legs in order.
    pub hops: Vec<Hop>,
    /// Mean end-to-end round trip, ms.
    pub rtt_ms: Option<f64>,
}

/// `netcheck`.
pub fn netcheck() -> Result<Output, PilotError> {
    Ok(ask::<NetcheckData>("netcheck", &Request::Netcheck {})?.render(super::render::netcheck))
}

/// `traceroute PEER`: probes over the current path, and the relay's leg from `netcheck`.
pub fn traceroute(peer: String, count: u32) -> Result<Output, PilotError> {
    let ping = ask::<PingReport>(
        "traceroute",
        &Request::Ping {
            peer,
            count: Some(count),
        },
    )?
    .typed;
    if ping.received == 0 {
        return Err(PilotError::new(
            ErrorCode::Timeout,
            format!("no probe reply from {}", ping.address),
            "check `pilotctl peers` (path) and that the peer's daemon runs",
        ));
    }
    let endpoint = ping.endpoint.map(|e| e.to_string());
    let trace = if ping.path == "relay" {
        let net = ask::<NetcheckData>("traceroute", &Request::Netcheck {})?.typed;
        let leg1 = net
            .registries
            .iter()
            .find(|r| Some(r.registry) == ping.endpoint)
            .and_then(|r| r.rtt_ms);
        let leg2 = match (ping.avg_ms, leg1) {
            (Some(all), Some(first)) => Some((all - first).max(0.0)),
            _ => None,
        };
        Trace {
            peer: ping.peer.to_string(),
            path: ping.path.clone(),
            relay: endpoint.clone(),
            hops: vec![
                Hop {
                    to: endpoint.unwrap_or_else(|| "relay".into()),
                    rtt_ms: leg1,
                    estimated: false,
                },
                Hop {
                    to: ping.address.to_string(),
                    rtt_ms: leg2,
                    estimated: true,
                },
            ],
            rtt_ms: ping.avg_ms,
        }
    } else {
        Trace {
            peer: ping.peer.to_string(),
            path: ping.path.clone(),
            relay: None,
            hops: vec![Hop {
                to: endpoint.unwrap_or_else(|| ping.address.to_string()),
                rtt_ms: ping.avg_ms,
                estimated: false,
            }],
            rtt_ms: ping.avg_ms,
        }
    };
    let text = super::render::trace(&trace);
    Output::local(&trace, text)
}
