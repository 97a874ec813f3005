//! Wire formats: every byte layout that crosses the network, and nothing else (no state, no I/O).
//!
//! One UDP socket per node carries WireGuard messages (first byte 1–4) and pilot control
//! messages (first byte [`CONTROL_MAGIC`]); see `docs/PROTOCOL.md`, "UDP socket
//! demultiplexing (v1)".
//!
//! - [`classify`]: sorts every datagram of the shared socket once, by its first bytes.
//! - [`registry`]: signed requests to a registry, its signed responses and pushes.
//! - [`probe`]: signed path probes between peers.
//! - [`relay`]: the relay framing around sealed datagrams.
//! - [`stream`], [`websocket`], [`http_connect`]: the TLS transport's framing, its WebSocket
//!   upgrade, and the HTTP proxy exchange before it.

pub mod classify;
pub mod http_connect;
pub mod probe;
pub mod registry;
pub mod relay;
pub mod stream;
pub mod websocket;

/// First byte of every pilot control datagram (`'P'`). WireGuard messages start with 1..=4.
pub const CONTROL_MAGIC: u8 = 0x50;
