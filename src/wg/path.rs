//! How a peer's packets travel: the data plane follows it, the path machines in
//! [`crate::node::traversal`] choose it.

use std::net::SocketAddr;

/// How a peer's packets travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Path {
    /// No path known: packets are dropped (and a punch is started).
    None,
    /// Straight to this UDP address.
    Direct(SocketAddr),
    /// Wrapped in relay frames through this registry.
    Relay(SocketAddr),
}

impl Path {
    /// `"direct"`, `"relay"` or `"none"`, as `pilotctl peers` shows it.
    pub fn kind(&self) -> &'static str {
        match self {
            Path::None => "none",
            Path::Direct(_) => "direct",
            Path::Relay(_) => "relay",
        }
    }

    /// The address datagrams go to, if any.
    pub fn addr(&self) -> Option<SocketAddr> {
        match self {
            Path::None => None,
            Path::Direct(a) | Path::Relay(a) => Some(*a),
        }
    }
}
