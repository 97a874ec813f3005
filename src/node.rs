//! The node core, sans-IO: what a node decides, driven by inputs and time, with no sockets,
//! threads, files on the hot path or clocks of its own.
//!
//! - [`core`]: [`Node`], the one core the daemon drives: inputs (commands, classified
//!   datagrams, data-plane events, time) in; datagrams, data-plane effects and API events out.
//! - [`commands`]: the local API's requests to the node, each with its typed reply channel.
//! - [`answers`]: how the node answers each of them.
//! - [`probes`]: which peer probes are answered, and the replay window.
//! - [`pings`]: `pilotctl ping` sessions.
//! - [`paths`]: the per-peer path machines and the data plane's paths, one owner.
//! - [`rng`]: the node's seeded randomness.
//! - [`trust`]: the trust store and its state machine (handshake, approve, reject, revoke).
//! - [`registry_client`]: the node's side of the registry protocol (register, heartbeat,
//!   lookups, trust delivery, endpoint exchange).
//! - [`control`]: the registry client and the trust store joined.
//! - [`traversal`]: one path machine per peer (hole punching, relay fallback, upgrades).
//! - [`relays`]: which registry relays to a peer (its home relay, else the introducer).
//! - [`views`]: the typed answers the node gives about trust, names and paths.

pub mod answers;
pub mod commands;
pub mod control;
pub mod core;
pub mod discovery;
pub mod paths;
pub mod pings;
pub mod probes;
pub mod registry_client;
pub mod relays;
pub mod rng;
pub mod transport;
pub mod traversal;
pub mod trust;
pub mod views;

pub use self::commands::{NodeCommand, Reply};
pub use self::core::{Effect, Node, NodeConfig};

#[cfg(test)]
mod home_tests;
#[cfg(test)]
pub(crate) mod sim;
#[cfg(test)]
mod tests;
