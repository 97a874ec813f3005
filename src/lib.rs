//! pilot: an overlay network that gives every AI agent a permanent address and a private,
//! encrypted, NAT-proof path to the agents it trusts.
//!
//! Layers, lowest first (arrows point down only; `tests/layers.rs` checks it):
//! 1. foundation: [`error`], [`clock`], [`health`], [`exposition`], [`identity`], [`mapping`], [`config`], [`state`];
//! 2. [`wire`]: byte layouts of everything on the network;
//! 3. the data plane: [`wg`] (WireGuard tunnels), [`tun`], [`netstack`];
//! 4. protocol cores: [`node`] (trust, registry client, paths) and [`registry`] (the server);
//! 5. sockets over the overlay and agent services: [`userspace`], [`services`];
//! 6. [`api`]: the local API's types, server and client;
//! 7. [`daemon`]: process wiring; 8. [`cli`]: `pilotctl`.
//!
//! docs/ARCHITECTURE.md draws the layers and follows a packet and a trust request through them.

pub mod api;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod error;
pub mod exposition;
pub mod health;
pub mod identity;
pub mod mapping;
pub mod netstack;
pub mod node;
pub mod registry;
pub mod services;
pub mod state;
pub mod tun;
pub mod userspace;
pub mod wg;
pub mod wire;
