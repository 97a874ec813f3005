//! The node core, sans-IO: what a node decides, driven by inputs and time, with no sockets,
//! threads, files on the hot path or clocks of its own.
//!
//! - [`trust`]: the trust store and its state machine (handshake, approve, reject, revoke).
//! - [`registry_client`]: the node's side of the registry protocol (register, heartbeat,
//!   lookups, trust delivery, endpoint exchange).
//! - [`control`]: the registry client and the trust store joined.
//! - [`traversal`]: one path machine per peer (hole punching, relay fallback, upgrades).
//! - [`views`]: the typed answers the node gives about trust, names and paths.

pub mod control;
pub mod registry_client;
pub mod traversal;
pub mod trust;
pub mod views;
