//! Requests and answers of the datagram routes (`/v1/dgram/…`): UDP on overlay ports.

use std::net::Ipv6Addr;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::identity::PublicKey;

/// `POST /v1/dgram/send`: one UDP datagram to a trusted peer's overlay port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DgramSendRequest {
    /// The peer (hostname, address, overlay IPv6 or public key).
    pub peer: String,
    /// The peer's overlay UDP port, 1-65535 (wider here so a bad one gets a clear error).
    pub port: u32,
    /// The payload: text, or standard base64 when `base64` is true.
    pub data: String,
    /// Whether `data` is base64 (binary payloads).
    #[serde(default)]
    pub base64: bool,
}

/// `POST /v1/dgram/send`: what was sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DgramSent {
    /// The peer's key.
    pub peer: PublicKey,
    /// The peer's overlay IPv6.
    #[schema(value_type = String)]
    pub ipv6: Ipv6Addr,
    /// The peer's overlay UDP port.
    pub port: u16,
    /// Our source port (ephemeral).
    pub from_port: u16,
    /// Payload bytes sent.
    pub bytes: usize,
}

/// `GET /v1/dgram/listen`'s query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DgramListenQuery {
    /// Our overlay UDP port, 1-65535.
    pub port: u32,
    /// Answer once this many datagrams arrived (default 1, at most 1000).
    #[serde(default)]
    pub count: Option<u32>,
    /// Answer with what arrived after this long at most, ms (default: no limit).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// One datagram a trusted peer sent us.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DgramReceived {
    /// The sender's key.
    pub from: PublicKey,
    /// The sender's hostname, when known.
    pub hostname: Option<String>,
    /// The sender's 48-bit address (`0a1b.2c3d.4e5f`).
    pub address: String,
    /// The sender's overlay IPv6.
    #[schema(value_type = String)]
    pub ipv6: Ipv6Addr,
    /// The sender's UDP port.
    pub from_port: u16,
    /// The payload: UTF-8 text, or base64 when `base64` is true.
    pub data: String,
    /// Whether `data` is base64 (the payload was not UTF-8).
    pub base64: bool,
}

/// `GET /v1/dgram/listen`: the datagrams received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DgramListenData {
    /// Our overlay UDP port.
    pub port: u16,
    /// What trusted peers sent, in arrival order.
    pub datagrams: Vec<DgramReceived>,
    /// Datagrams from untrusted sources, dropped.
    pub dropped_untrusted: u64,
    /// Whether the timeout ended the wait before `count` datagrams arrived.
    pub timed_out: bool,
}
