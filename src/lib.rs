//! pilot: an overlay network that gives every AI agent a permanent address and a private,
//! encrypted, NAT-proof path to the agents it trusts.

pub mod error;
pub mod identity;
pub mod mapping;
pub mod tun;
pub mod wg;
