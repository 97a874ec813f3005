//! The userspace TCP/IPv6 stack: a smoltcp [`Interface`] that owns our overlay address, driven
//! by one tokio task, with tokio streams on the application side and a queue of raw IPv6
//! packets on the network side. It lets a node without root (no TUN device) serve and reach
//! overlay ports.
//!
//! # The packet boundary (what the data plane plugs into)
//! The stack speaks whole raw IPv6 packets (no link header), one [`Packet`] each (a range of
//! an owned buffer), through two bounded tokio channels. [`Netstack::spawn`] makes them and hands the data plane a
//! [`PacketPort`]:
//!
//! ```text
//!   PacketPort::from_stack : mpsc::Receiver<Packet>  packets the stack emits; the data plane
//!                                                     encrypts each to the peer owning its
//!                                                     destination address (dst = bytes 24..40)
//!   PacketPort::to_stack   : mpsc::Sender<Packet>    decrypted packets for the stack; the data
//!                                                     plane has already checked that the inner
//!                                                     source is the sending peer's address
//! ```
//!
//! Both channels hold [`NetstackConfig::packet_queue`] packets. When `from_stack` is full the
//! stack stops emitting (TCP waits; nothing is dropped); when `to_stack` is full the data plane
//! should drop the packet (`try_send`) rather than wait, as a NIC would. A caller that owns its
//! channels already can use [`Netstack::spawn_with_channels`] instead, and
//! [`PacketPort::into_inner`] turns the port into the data plane's `wg::Inner` (the same trait
//! the TUN device implements), which is how the daemon wires userspace mode. Through that
//! inner side no packet is allocated or copied: the data plane's threads swap buffers with the
//! stack, and the buffers come back round (`recycle.rs`); the packets of one driver round are
//! handed over together at its end, so the encrypting thread wakes once per round.
//!
//! With [`NetstackConfig::tcp_offload`] (the default) smoltcp works in TCP segments of up to
//! 64 KiB, as the kernel's TCP does behind a TUN device with GSO/GRO: `into_inner` cuts them
//! to the tunnel MTU on the way out and joins in-order segments on the way in (`offload.rs`).
//! Whoever reads `from_stack` directly gets such large segments and must cut them itself.
//!
//! Received TCP checksums are not verified by default: every packet that reaches `to_stack`
//! came out of an authenticated WireGuard tunnel. Checksums of sent packets are always
//! computed, since the peer may be a kernel (TUN mode) that checks them.
//!
//! # Application side
//! [`Netstack::connect`] returns a [`NetstackStream`] once the handshake completes;
//! [`Netstack::listen`] returns a [`NetstackListener`] whose `accept` yields one stream per
//! established connection. smoltcp has no backlog (one listening socket takes one connection),
//! so each listened port keeps a pool of [`NetstackConfig::backlog`] listening sockets and
//! refills it after every SYN.
//!
//! Each flow moves bytes between its smoltcp socket and a tokio duplex pipe whose other end is
//! the application's stream. [`NetstackStream::splice`] replaces the pipe with a local TCP
//! socket (the SOCKS5 proxy's and the port exposer's path): the driver then reads and writes
//! that socket straight from and into smoltcp's buffers. Memory is bounded: per flow, two TCP buffers of
//! [`NetstackConfig::tcp_buffer`] bytes and two pipe buffers of
//! [`NetstackConfig::stream_buffer`] bytes; at most [`NetstackConfig::max_flows`] sockets and
//! [`NetstackConfig::max_memory`] bytes of flows (new ones beyond it are refused and counted).
//! A full buffer anywhere is back-pressure (a smaller TCP window, a pending write), never a
//! queue that grows. Peers cannot park sockets: a flow that moves no byte for
//! [`NetstackConfig::idle_timeout`] (or [`NetstackConfig::half_closed_timeout`] once a FIN
//! went either way), and a handshake not completed within
//! [`NetstackConfig::handshake_timeout`], is reset and counted.
//!
//! # The driver
//! One task owns the interface. It sleeps until something happens (a packet in, an application
//! read or write, a command, or smoltcp's next timer from `poll_delay`), then drains inbound
//! packets in batches, services every socket, and transmits until smoltcp has nothing left to
//! send. It never spins: an idle stack makes no wakeups at all. Acknowledgements are not delayed
//! (one ACK per batch of received segments), and Nagle is off.
//!
//! # Modules
//! `config` (settings), `error`, `device` (smoltcp's view of the channels), `offload` (TCP
//! segmentation and coalescing at the boundary), `recycle` (spare packet buffers going back
//! round), `driver`
//! (the task; `driver/commands`, `driver/sockets`, `driver/udp`), `stream` (the application
//! side), `udp` (UDP sockets: [`Netstack::bind_udp`]) and `port` (the packet boundary). This file holds the [`Netstack`] handle.

mod app;
mod buffers;
mod config;
mod device;
mod driver;
mod error;
pub mod offload;
mod port;
mod recycle;
mod stream;
#[cfg(test)]
mod tests;
mod udp;

use std::net::{Ipv6Addr, SocketAddrV6};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

pub use self::config::{Congestion, NetstackConfig, MAX_TCP_BUFFER};
pub use self::error::NetstackError;
pub use self::port::PacketPort;
pub use self::stream::{NetstackListener, NetstackStream};
pub use self::udp::{max_payload, Datagram, NetstackUdpSocket, UDP_SOCKET_PACKETS};

use self::driver::{Driver, Recycling};
use self::recycle::Recycler;

/// Spare packet buffers kept per direction (see `recycle.rs`).
const RECYCLED: usize = 512;

/// One raw IPv6 packet, starting with the IPv6 header: a range of an owned buffer, so a
/// packet can travel in the buffer it was built in (with the data plane's headroom before it,
/// and spare room after it) and the buffer can be used again. Derefs to the packet's bytes.
#[derive(Clone)]
pub struct Packet {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Packet {
    /// A packet that is the whole of `bytes`.
    pub fn new(bytes: Vec<u8>) -> Self {
        let end = bytes.len();
        Packet {
            buf: bytes,
            start: 0,
            end,
        }
    }

    /// The packet `buf[start..end]`.
    ///
    /// # Panics
    /// If the range is not within `buf`.
    pub(crate) fn in_buffer(buf: Vec<u8>, start: usize, end: usize) -> Self {
        assert!(
            start <= end && end <= buf.len(),
            "packet range outside its buffer"
        );
        Packet { buf, start, end }
    }

    /// Where the packet starts in its buffer.
    pub(crate) fn start(&self) -> usize {
        self.start
    }

    /// The length of the whole buffer.
    pub(crate) fn buffer_len(&self) -> usize {
        self.buf.len()
    }

    /// The whole buffer (the packet's bytes are at `start()..start() + len()`).
    pub(crate) fn into_buffer(self) -> Vec<u8> {
        self.buf
    }
}

impl PartialEq for Packet {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Packet {}

impl From<Vec<u8>> for Packet {
    fn from(bytes: Vec<u8>) -> Self {
        Packet::new(bytes)
    }
}

impl std::ops::Deref for Packet {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }
}

impl std::ops::DerefMut for Packet {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }
}

impl std::fmt::Debug for Packet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Packet({} bytes)", self.end - self.start)
    }
}

/// Counters of one netstack, for benchmarks and `info`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetstackStats {
    /// Times the driver task ran.
    pub wakeups: u64,
    /// Packets taken from `to_stack`.
    pub packets_in: u64,
    /// Packets put on `from_stack`.
    pub packets_out: u64,
    /// Packets dropped on the way out (a reply while the channel was full, or a segment the
    /// boundary could not cut to the tunnel MTU).
    pub packets_dropped: u64,
    /// Packets the data plane dropped on the way in because `to_stack` was full.
    pub packets_in_dropped: u64,
    /// Flows (connected sockets) now open.
    pub flows: u64,
    /// New flows refused by the memory bound ([`NetstackConfig::max_memory`]).
    pub flows_refused: u64,
    /// Flows and handshakes reset by the idle, half-closed or handshake timeout.
    pub flows_timed_out: u64,
}

#[derive(Debug, Default)]
struct Counters {
    wakeups: AtomicU64,
    packets_in: AtomicU64,
    packets_out: AtomicU64,
    packets_dropped: AtomicU64,
    packets_in_dropped: AtomicU64,
    flows: AtomicU64,
    flows_refused: AtomicU64,
    flows_timed_out: AtomicU64,
}

enum Command {
    Connect {
        dst: SocketAddrV6,
        reply: oneshot::Sender<Result<NetstackStream, NetstackError>>,
    },
    Listen {
        port: u16,
        id: u64,
        accept: mpsc::Sender<NetstackStream>,
        reply: oneshot::Sender<Result<(), NetstackError>>,
    },
    Unlisten {
        port: u16,
        id: u64,
    },
    Describe {
        reply: oneshot::Sender<String>,
    },
    BindUdp(udp::BindUdp),
    Splice(stream::SpliceRequest),
}

/// A handle to a running netstack. Cheap to clone; the driver task stops once every handle,
/// listener and stream is gone.
#[derive(Clone)]
pub struct Netstack {
    commands: mpsc::Sender<Command>,
    address: Ipv6Addr,
    counters: Arc<Counters>,
    next_listener: Arc<AtomicU64>,
}

impl std::fmt::Debug for Netstack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netstack")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Netstack {
    /// Starts a netstack on the current tokio runtime and returns it with the data plane's
    /// side of its packet channels.
    ///
    /// # Panics
    /// Outside a tokio runtime (it spawns the driver task).
    pub fn spawn(config: NetstackConfig) -> Result<(Netstack, PacketPort), NetstackError> {
        let (out_tx, out_rx) = mpsc::channel(config.packet_queue.max(1));
        let (in_tx, in_rx) = mpsc::channel(config.packet_queue.max(1));
        let inbound = Arc::new(Recycler::new(RECYCLED));
        let outbound = Arc::new(Recycler::new(RECYCLED));
        let recycling = Recycling {
            inbound: inbound.clone(),
            outbound: outbound.clone(),
        };
        let coalesce = config.tcp_offload && !config.verify_rx_checksums;
        let mtu = config.mtu;
        let stack = Self::spawn_recycling(config, out_tx, in_rx, recycling)?;
        let counters = stack.counters.clone();
        Ok((
            stack,
            PacketPort {
                from_stack: out_rx,
                to_stack: in_tx,
                counters,
                inbound,
                outbound,
                coalesce,
                mtu,
            },
        ))
    }

    /// Starts a netstack that sends its packets to `to_net` and reads packets from `from_net`.
    /// Two stacks wired crosswise (A's `to_net` is B's `from_net`) talk to each other.
    ///
    /// # Panics
    /// Outside a tokio runtime (it spawns the driver task).
    pub fn spawn_with_channels(
        config: NetstackConfig,
        to_net: mpsc::Sender<Packet>,
        from_net: mpsc::Receiver<Packet>,
    ) -> Result<Netstack, NetstackError> {
        // No data plane in between: the buffers of packets read become buffers to send in.
        let own = Arc::new(Recycler::new(RECYCLED));
        let recycling = Recycling {
            inbound: own.clone(),
            outbound: own,
        };
        Self::spawn_recycling(config, to_net, from_net, recycling)
    }

    fn spawn_recycling(
        config: NetstackConfig,
        to_net: mpsc::Sender<Packet>,
        from_net: mpsc::Receiver<Packet>,
        recycling: Recycling,
    ) -> Result<Netstack, NetstackError> {
        config.validate()?;
        buffers::reserve_for(config.tcp_buffer);
        let (cmd_tx, cmd_rx) = mpsc::channel(256);
        let counters = Arc::new(Counters::default());
        let weak = cmd_tx.downgrade();
        let driver = Driver::new(
            config.clone(),
            to_net,
            from_net,
            (cmd_rx, weak),
            counters.clone(),
            recycling,
        );
        tokio::spawn(tokio::task::unconstrained(driver));
        Ok(Netstack {
            commands: cmd_tx,
            address: config.address,
            counters,
            next_listener: Arc::new(AtomicU64::new(1)),
        })
    }

    /// Our overlay address.
    pub fn address(&self) -> Ipv6Addr {
        self.address
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> NetstackStats {
        let c = &self.counters;
        NetstackStats {
            wakeups: c.wakeups.load(Ordering::Relaxed),
            packets_in: c.packets_in.load(Ordering::Relaxed),
            packets_out: c.packets_out.load(Ordering::Relaxed),
            packets_dropped: c.packets_dropped.load(Ordering::Relaxed),
            packets_in_dropped: c.packets_in_dropped.load(Ordering::Relaxed),
            flows: c.flows.load(Ordering::Relaxed),
            flows_refused: c.flows_refused.load(Ordering::Relaxed),
            flows_timed_out: c.flows_timed_out.load(Ordering::Relaxed),
        }
    }

    /// Opens a TCP connection to `dst` and waits for the handshake. Fails with
    /// [`NetstackError::Refused`] on a reset and [`NetstackError::TimedOut`] after
    /// [`NetstackConfig::connect_timeout`].
    pub async fn connect(&self, dst: SocketAddrV6) -> Result<NetstackStream, NetstackError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Connect { dst, reply })
            .await
            .map_err(|_| NetstackError::Stopped)?;
        rx.await.map_err(|_| NetstackError::Stopped)?
    }

    /// A human-readable snapshot of the driver's state (flows, queues, timers), for debugging.
    pub async fn describe(&self) -> Result<String, NetstackError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Describe { reply })
            .await
            .map_err(|_| NetstackError::Stopped)?;
        rx.await.map_err(|_| NetstackError::Stopped)
    }

    /// Listens on an overlay TCP port of our address.
    pub async fn listen(&self, port: u16) -> Result<NetstackListener, NetstackError> {
        let id = self.next_listener.fetch_add(1, Ordering::Relaxed);
        // The accept queue is bounded by the flow limit anyway; a small queue means a slow
        // acceptor turns into resets rather than into memory.
        let (accept_tx, accept_rx) = mpsc::channel(64);
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Listen {
                port,
                id,
                accept: accept_tx,
                reply,
            })
            .await
            .map_err(|_| NetstackError::Stopped)?;
        rx.await.map_err(|_| NetstackError::Stopped)??;
        Ok(NetstackListener {
            port,
            id,
            address: self.address,
            accepted: accept_rx,
            commands: self.commands.clone(),
        })
    }
}
