//! pilot: an overlay network that gives every AI agent a permanent address and a private,
//! encrypted, NAT-proof path to the agents it trusts.

pub mod api;
pub mod candidates;
pub mod cli;
pub mod config;
pub mod control;
pub mod control_task;
pub mod daemon;
pub mod error;
pub mod expose;
pub mod identity;
pub mod lock;
pub mod mapping;
pub mod messages;
pub mod netstack;
pub mod overlay_net;
pub mod paths;
pub mod probe;
pub mod registry;
pub mod relay;
pub mod services;
pub mod socks5;
pub mod traversal;
pub mod trust;
pub mod tun;
pub mod userspace;
pub mod wg;
