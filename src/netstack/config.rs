//! The settings of one netstack and their rules.

use std::net::Ipv6Addr;
use std::time::Duration;

use super::NetstackError;
use crate::config::{DEFAULT_MTU, MIN_MTU};
use crate::mapping::{Addr48, NetworkPrefix};

/// The largest TCP or pipe buffer, in bytes (16 MiB): windows beyond it buy nothing on the
/// overlay and make the memory bound meaningless.
pub const MAX_TCP_BUFFER: usize = 16 * 1024 * 1024;

/// Congestion control for the stack's TCP sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Congestion {
    /// None: send whatever the peer's window allows. Best on loss-free paths.
    None,
    /// CUBIC (RFC 8312): backs off on loss. The default, for real networks.
    #[default]
    Cubic,
}

/// Settings of one netstack.
#[derive(Debug, Clone, PartialEq)]
pub struct NetstackConfig {
    /// Our overlay IPv6 address.
    pub address: Ipv6Addr,
    /// Length of the on-link prefix: every address in it is reachable through the packet
    /// channels (80 for the overlay route).
    pub prefix_len: u8,
    /// Largest packet, in bytes (at least 1280).
    pub mtu: u16,
    /// Receive and send buffer of each TCP socket, in bytes. Large buffers give large windows
    /// (window scaling follows the buffer size).
    pub tcp_buffer: usize,
    /// Each direction of the pipe between a socket and the application's stream, in bytes.
    pub stream_buffer: usize,
    /// Listening sockets kept ready per listened port (the pool is refilled after every SYN,
    /// so a burst of connections larger than it is still accepted). Small on purpose: smoltcp
    /// walks every socket for each segment it sends, listening ones included.
    pub backlog: usize,
    /// The most TCP sockets (flows, handshakes and listening sockets) at once.
    pub max_flows: usize,
    /// The memory bound of the stack, in bytes: flows, connections in progress and handshakes
    /// each count `2 × (tcp_buffer + stream_buffer)` (4.5 MiB with the defaults), and a new
    /// one beyond the bound is refused (a reset for an inbound SYN) and counted
    /// (`flows_refused`). Listening sockets do not count: their buffers are never touched
    /// until a SYN takes one, and then it counts.
    pub max_memory: usize,
    /// A flow that moved no byte in either direction for this long is reset (counted in
    /// `flows_timed_out`).
    pub idle_timeout: Duration,
    /// A half-closed flow (one side sent its FIN) that moved no byte for this long is reset.
    pub half_closed_timeout: Duration,
    /// An inbound handshake (SYN received, our SYN-ACK not acknowledged) older than this is
    /// reset: half-open connections cannot hold sockets.
    pub handshake_timeout: Duration,
    /// How long `connect` waits for the handshake.
    pub connect_timeout: Duration,
    /// Capacity of each packet channel, in packets.
    pub packet_queue: usize,
    /// Verify checksums of received packets (off: the tunnel authenticates them).
    pub verify_rx_checksums: bool,
    /// TCP segmentation and receive offload (`offload.rs`): smoltcp sends and receives TCP
    /// segments of up to 64 KiB; [`PacketPort::into_inner`](super::PacketPort::into_inner) cuts
    /// outgoing ones to the tunnel's MTU and, unless received checksums are verified, joins
    /// the in-order segments of a flow that arrive together. A caller that reads
    /// `PacketPort::from_stack` itself receives TCP packets above `mtu` with this on.
    pub tcp_offload: bool,
    /// Congestion control of new sockets.
    pub congestion: Congestion,
}

impl NetstackConfig {
    /// Defaults for a stack owning `address`, with a /80 on-link prefix.
    pub fn new(address: Ipv6Addr) -> Self {
        NetstackConfig {
            address,
            prefix_len: 80,
            mtu: DEFAULT_MTU,
            tcp_buffer: 2 * 1024 * 1024,
            stream_buffer: 256 * 1024,
            backlog: 4,
            max_flows: 1024,
            max_memory: 1024 * 1024 * 1024,
            idle_timeout: Duration::from_secs(3600),
            half_closed_timeout: Duration::from_secs(120),
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            packet_queue: 2048,
            verify_rx_checksums: false,
            tcp_offload: true,
            congestion: Congestion::default(),
        }
    }

    /// Defaults for the node `addr` of the overlay `network`.
    pub fn for_node(network: &NetworkPrefix, addr: Addr48) -> Self {
        Self::new(network.ipv6(addr))
    }

    /// Bytes one flow may take: two TCP buffers and two pipe buffers.
    pub fn flow_memory(&self) -> usize {
        2 * (self.tcp_buffer + self.stream_buffer)
    }

    /// The most flows (and connections in progress and handshakes) the memory bound allows.
    pub fn memory_flow_limit(&self) -> usize {
        self.max_memory / self.flow_memory().max(1)
    }

    pub(super) fn validate(&self) -> Result<(), NetstackError> {
        let bad = |m: String| Err(NetstackError::Config(m));
        if self.mtu < MIN_MTU {
            return bad(format!("mtu {} is below {MIN_MTU}", self.mtu));
        }
        if self.prefix_len > 128 {
            return bad(format!("prefix length {} is above 128", self.prefix_len));
        }
        if self.tcp_buffer < 2 * usize::from(self.mtu) {
            return bad(format!(
                "tcp_buffer {} is below two packets",
                self.tcp_buffer
            ));
        }
        if self.tcp_buffer > MAX_TCP_BUFFER || self.stream_buffer > MAX_TCP_BUFFER {
            return bad(format!(
                "tcp_buffer {} or stream_buffer {} is above {MAX_TCP_BUFFER}",
                self.tcp_buffer, self.stream_buffer
            ));
        }
        if self.memory_flow_limit() == 0 {
            return bad(format!(
                "max_memory {} is below one flow ({} bytes)",
                self.max_memory,
                self.flow_memory()
            ));
        }
        if [
            self.idle_timeout,
            self.half_closed_timeout,
            self.handshake_timeout,
        ]
        .contains(&Duration::ZERO)
        {
            return bad("idle, half-closed and handshake timeouts must be above 0".into());
        }
        if self.stream_buffer == 0 || self.backlog == 0 || self.packet_queue == 0 {
            return bad("stream_buffer, backlog and packet_queue must be above 0".into());
        }
        if self.max_flows < self.backlog {
            return bad(format!(
                "max_flows {} is below backlog {}",
                self.max_flows, self.backlog
            ));
        }
        Ok(())
    }

    pub(super) fn on_link(&self, ip: Ipv6Addr) -> bool {
        let bits = u32::from(self.prefix_len);
        let mask = if bits == 0 {
            0
        } else {
            u128::MAX << (128 - bits)
        };
        u128::from(ip) & mask == u128::from(self.address) & mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn on_link_covers_exactly_the_prefix() {
        let c = NetstackConfig::new("fdc5:7a3e:91b4::1:2:3".parse().unwrap());
        assert!(c.on_link("fdc5:7a3e:91b4::aaaa:bbbb:cccc".parse().unwrap()));
        assert!(!c.on_link("fdc5:7a3e:91b4:0:1::1".parse().unwrap()));
        assert!(!c.on_link("::1".parse().unwrap()));
    }

    #[test]
    fn configs_below_the_minimums_are_refused() {
        let mut c = NetstackConfig::new(Ipv6Addr::LOCALHOST);
        c.mtu = 1000;
        assert!(c.validate().is_err());
        let mut c = NetstackConfig::new(Ipv6Addr::LOCALHOST);
        c.backlog = 0;
        assert!(c.validate().is_err());
        let mut c = NetstackConfig::new(Ipv6Addr::LOCALHOST);
        c.tcp_buffer = MAX_TCP_BUFFER + 1;
        assert!(c.validate().is_err());
        let mut c = NetstackConfig::new(Ipv6Addr::LOCALHOST);
        c.max_memory = c.flow_memory() - 1;
        assert!(c.validate().is_err());
        let mut c = NetstackConfig::new(Ipv6Addr::LOCALHOST);
        c.idle_timeout = Duration::ZERO;
        assert!(c.validate().is_err());
        assert!(NetstackConfig::new(Ipv6Addr::LOCALHOST).validate().is_ok());
    }
}
