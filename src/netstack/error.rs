//! What can go wrong building a netstack or using it.

use std::io;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::time::Duration;

/// Errors from building a netstack or from its operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetstackError {
    /// The configuration breaks a rule.
    #[error("invalid netstack configuration: {0}")]
    Config(String),
    /// The destination is not an overlay address this stack can reach.
    #[error("{0} is outside the overlay route {1}/{2}")]
    NotInOverlay(SocketAddrV6, Ipv6Addr, u8),
    /// The destination port is 0.
    #[error("cannot connect to port 0 of {0}")]
    PortZero(Ipv6Addr),
    /// The destination is our own address (the stack has no loopback).
    #[error("{0} is this node's own address; the userspace stack cannot connect to itself")]
    OwnAddress(SocketAddrV6),
    /// Another listener holds the port.
    #[error("overlay port {0} is already being listened on")]
    PortInUse(u16),
    /// The flow limit is reached.
    #[error("too many connections: the netstack allows {0} at once")]
    TooManyFlows(usize),
    /// The memory bound is reached.
    #[error("the netstack's memory bound ({0} bytes of connections) is reached")]
    MemoryBound(usize),
    /// The peer answered with a reset.
    #[error("connection to {0} refused")]
    Refused(SocketAddrV6),
    /// The peer did not answer in time.
    #[error("connection to {0} timed out after {1:?}")]
    TimedOut(SocketAddrV6, Duration),
    /// The driver task has stopped.
    #[error("the netstack has stopped")]
    Stopped,
    /// A UDP payload larger than one packet carries (the stack does not fragment).
    #[error("a UDP payload of {0} bytes is over the {1} bytes one overlay packet carries")]
    DatagramTooLarge(usize, usize),
}

impl From<NetstackError> for io::Error {
    fn from(e: NetstackError) -> Self {
        let kind = match e {
            NetstackError::Config(_)
            | NetstackError::PortZero(_)
            | NetstackError::DatagramTooLarge(..) => io::ErrorKind::InvalidInput,
            NetstackError::NotInOverlay(..) => io::ErrorKind::AddrNotAvailable,
            NetstackError::PortInUse(_) => io::ErrorKind::AddrInUse,
            NetstackError::TooManyFlows(_) | NetstackError::MemoryBound(_) => {
                io::ErrorKind::OutOfMemory
            }
            NetstackError::Refused(_) | NetstackError::OwnAddress(_) => {
                io::ErrorKind::ConnectionRefused
            }
            NetstackError::TimedOut(..) => io::ErrorKind::TimedOut,
            NetstackError::Stopped => io::ErrorKind::NotConnected,
        };
        io::Error::new(kind, e)
    }
}

impl From<NetstackError> for crate::error::PilotError {
    fn from(e: NetstackError) -> Self {
        use crate::error::{ErrorCode, PilotError};
        let (code, hint) = match e {
            NetstackError::Config(_) => (
                ErrorCode::InvalidArgument,
                "check [tun] mtu and [network] in the config",
            ),
            NetstackError::NotInOverlay(..)
            | NetstackError::PortZero(_)
            | NetstackError::OwnAddress(_) => (
                ErrorCode::InvalidArgument,
                "name a peer's overlay address and a port other than 0",
            ),
            NetstackError::PortInUse(_) => (
                ErrorCode::AlreadyExists,
                "another listener or exposed port holds it; choose another port",
            ),
            NetstackError::TooManyFlows(_) => {
                (ErrorCode::Internal, "close some connections and retry")
            }
            NetstackError::MemoryBound(_) => (
                ErrorCode::Internal,
                "close some connections, or raise [netstack] max_memory_mib in the config",
            ),
            NetstackError::Refused(_) => (
                ErrorCode::ConnectionFailed,
                "is anything listening on that port of the peer (`pilotctl listen PORT` there)?",
            ),
            NetstackError::TimedOut(..) => (
                ErrorCode::Timeout,
                "check `pilotctl peers` for a recent handshake",
            ),
            NetstackError::DatagramTooLarge(..) => (
                ErrorCode::InvalidArgument,
                "send smaller datagrams (the overlay MTU less 48 bytes of headers)",
            ),
            NetstackError::Stopped => (
                ErrorCode::Internal,
                "the userspace network stopped; see the daemon log ($PILOT_HOME/daemon.log)",
            ),
        };
        PilotError::new(code, e.to_string(), hint)
    }
}
