//! The userspace TCP/IPv6 stack: a smoltcp [`Interface`] that owns our overlay address, driven
//! by one tokio task, with tokio streams on the application side and a queue of raw IPv6
//! packets on the network side. It lets a node without root (no TUN device) serve and reach
//! overlay ports.
//!
//! # The packet boundary (what the data plane plugs into)
//! The stack speaks whole raw IPv6 packets (no link header), one `Vec<u8>` each, through two
//! bounded tokio channels. [`Netstack::spawn`] makes them and hands the data plane a
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
//! the TUN device implements), which is how the daemon wires userspace mode.
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
//! the application's stream. Memory is bounded: per flow, two TCP buffers of
//! [`NetstackConfig::tcp_buffer`] bytes and two pipe buffers of
//! [`NetstackConfig::stream_buffer`] bytes; at most [`NetstackConfig::max_flows`] flows. A
//! full buffer anywhere is back-pressure (a smaller TCP window, a pending write), never a queue
//! that grows.
//!
//! # The driver
//! One task owns the interface. It sleeps until something happens (a packet in, an application
//! read or write, a command, or smoltcp's next timer from `poll_delay`), then drains inbound
//! packets in batches, services every socket, and transmits until smoltcp has nothing left to
//! send. It never spins: an idle stack makes no wakeups at all. Acknowledgements are not delayed
//! (one ACK per batch of received segments), and Nagle is off.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::io;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use smoltcp::iface::{
    Config as IfaceConfig, Interface, PollIngressSingleResult, PollResult, SocketHandle, SocketSet,
};
use smoltcp::phy::{Checksum, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpListenEndpoint};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::sync::{mpsc, oneshot};

use crate::config::{DEFAULT_MTU, MIN_MTU};
use crate::mapping::{Addr48, NetworkPrefix};

/// One raw IPv6 packet, starting with the IPv6 header.
pub type Packet = Vec<u8>;

/// The most inbound packets the driver takes from its channel before it services sockets.
const INGRESS_BATCH: usize = 256;
/// The most rounds one wakeup of the driver runs before it yields to other tasks.
const MAX_ROUNDS: usize = 16;
/// The shortest timer sleep: smoltcp's timers have millisecond granularity.
const MIN_SLEEP: Duration = Duration::from_millis(1);
/// How long a flow whose application dropped its stream may linger waiting for the peer.
const ORPHAN_TIMEOUT: Duration = Duration::from_secs(60);
/// First port of the ephemeral range for outgoing connections (IANA dynamic ports).
const EPHEMERAL_START: u16 = 49152;

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
    /// The peer answered with a reset.
    #[error("connection to {0} refused")]
    Refused(SocketAddrV6),
    /// The peer did not answer in time.
    #[error("connection to {0} timed out after {1:?}")]
    TimedOut(SocketAddrV6, Duration),
    /// The driver task has stopped.
    #[error("the netstack has stopped")]
    Stopped,
}

impl From<NetstackError> for io::Error {
    fn from(e: NetstackError) -> Self {
        let kind = match e {
            NetstackError::Config(_) | NetstackError::PortZero(_) => io::ErrorKind::InvalidInput,
            NetstackError::NotInOverlay(..) => io::ErrorKind::AddrNotAvailable,
            NetstackError::PortInUse(_) => io::ErrorKind::AddrInUse,
            NetstackError::TooManyFlows(_) => io::ErrorKind::OutOfMemory,
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
            NetstackError::Refused(_) => (
                ErrorCode::ConnectionFailed,
                "is anything listening on that port of the peer (`pilotctl listen PORT` there)?",
            ),
            NetstackError::TimedOut(..) => (
                ErrorCode::Timeout,
                "check `pilotctl peers` for a recent handshake",
            ),
            NetstackError::Stopped => (
                ErrorCode::Internal,
                "the userspace network stopped; see the daemon log ($PILOT_HOME/daemon.log)",
            ),
        };
        PilotError::new(code, e.to_string(), hint)
    }
}

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
    /// Listening sockets kept ready per listened port, and accepted streams queued for
    /// `accept`.
    pub backlog: usize,
    /// The most TCP sockets (flows, handshakes and listening sockets) at once. Memory is at
    /// most `max_flows × 2 × (tcp_buffer + stream_buffer)` (4.5 GiB with the defaults, if
    /// every buffer of every flow were full; buffers take memory only as they fill).
    pub max_flows: usize,
    /// How long `connect` waits for the handshake.
    pub connect_timeout: Duration,
    /// Capacity of each packet channel, in packets.
    pub packet_queue: usize,
    /// Verify checksums of received packets (off: the tunnel authenticates them).
    pub verify_rx_checksums: bool,
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
            backlog: 32,
            max_flows: 1024,
            connect_timeout: Duration::from_secs(10),
            packet_queue: 2048,
            verify_rx_checksums: false,
            congestion: Congestion::default(),
        }
    }

    /// Defaults for the node `addr` of the overlay `network`.
    pub fn for_node(network: &NetworkPrefix, addr: Addr48) -> Self {
        Self::new(network.ipv6(addr))
    }

    fn validate(&self) -> Result<(), NetstackError> {
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

    fn on_link(&self, ip: Ipv6Addr) -> bool {
        let bits = u32::from(self.prefix_len);
        let mask = if bits == 0 {
            0
        } else {
            u128::MAX << (128 - bits)
        };
        u128::from(ip) & mask == u128::from(self.address) & mask
    }
}

/// The data plane's side of the packet boundary (see the module docs).
#[derive(Debug)]
pub struct PacketPort {
    /// Packets the stack sends: encrypt each to the peer owning its destination.
    pub from_stack: mpsc::Receiver<Packet>,
    /// Packets for the stack: decrypted, source already checked.
    pub to_stack: mpsc::Sender<Packet>,
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
    /// Packets dropped on the way out (a reply while the channel was full).
    pub packets_dropped: u64,
    /// Flows (connected sockets) now open.
    pub flows: u64,
}

#[derive(Default)]
struct Counters {
    wakeups: AtomicU64,
    packets_in: AtomicU64,
    packets_out: AtomicU64,
    packets_dropped: AtomicU64,
    flows: AtomicU64,
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
        let stack = Self::spawn_with_channels(config, out_tx, in_rx)?;
        Ok((
            stack,
            PacketPort {
                from_stack: out_rx,
                to_stack: in_tx,
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
        config.validate()?;
        let (cmd_tx, cmd_rx) = mpsc::channel(256);
        let counters = Arc::new(Counters::default());
        let driver = Driver::new(config.clone(), to_net, from_net, cmd_rx, counters.clone());
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
            flows: c.flows.load(Ordering::Relaxed),
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

/// Connections accepted on one overlay port. Dropping it stops listening.
pub struct NetstackListener {
    port: u16,
    id: u64,
    address: Ipv6Addr,
    accepted: mpsc::Receiver<NetstackStream>,
    commands: mpsc::Sender<Command>,
}

impl std::fmt::Debug for NetstackListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetstackListener")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl NetstackListener {
    /// Waits for the next established connection.
    pub async fn accept(&mut self) -> Result<NetstackStream, NetstackError> {
        self.accepted.recv().await.ok_or(NetstackError::Stopped)
    }

    /// The listened address and port.
    pub fn local_addr(&self) -> SocketAddrV6 {
        SocketAddrV6::new(self.address, self.port, 0, 0)
    }
}

impl Drop for NetstackListener {
    fn drop(&mut self) {
        // If the command queue is full, the driver still notices the closed accept channel.
        let _ = self.commands.try_send(Command::Unlisten {
            port: self.port,
            id: self.id,
        });
    }
}

/// One TCP connection through the netstack: an `AsyncRead + AsyncWrite` like tokio's
/// `TcpStream`. `shutdown` sends a FIN; dropping it closes the connection.
///
/// A connection the peer resets reads as end of stream, and writes to it fail with
/// `BrokenPipe`.
#[derive(Debug)]
pub struct NetstackStream {
    io: DuplexStream,
    local: SocketAddrV6,
    peer: SocketAddrV6,
}

impl NetstackStream {
    /// Our end of the connection.
    pub fn local_addr(&self) -> SocketAddrV6 {
        self.local
    }

    /// The peer's end of the connection.
    pub fn peer_addr(&self) -> SocketAddrV6 {
        self.peer
    }
}

impl AsyncRead for NetstackStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for NetstackStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------------------------
// The device: smoltcp's view of the packet channels.

struct QueueDevice {
    rx: VecDeque<Packet>,
    tx: mpsc::Sender<Packet>,
    permit: Option<mpsc::OwnedPermit<Packet>>,
    caps: DeviceCapabilities,
    saw_syn: bool,
    sent: u64,
    dropped: u64,
}

impl QueueDevice {
    fn can_transmit(&self) -> bool {
        self.permit.is_some() || self.tx.capacity() > 0
    }
}

/// True for a TCP SYN without ACK in a plain IPv6 packet (no extension headers).
fn is_tcp_syn(p: &[u8]) -> bool {
    p.len() >= 54 && p[0] >> 4 == 6 && p[6] == 6 && p[53] & 0x12 == 0x02
}

struct RxTok(Packet);

impl smoltcp::phy::RxToken for RxTok {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

struct TxTok<'a> {
    tx: &'a mpsc::Sender<Packet>,
    permit: &'a mut Option<mpsc::OwnedPermit<Packet>>,
    sent: &'a mut u64,
    dropped: &'a mut u64,
}

/// Lowers the window of an outgoing TCP segment (not a SYN) by one unit of its scale, and
/// fixes the checksum (RFC 1624).
///
/// smoltcp advertises `floor(free space >> scale)`, so its right window edge can move back by
/// up to `2^scale - 1` bytes from one ACK to the next, and it then rejects segments beyond the
/// newest edge that the previous ACK allowed. A peer sending at full window (any bulk transfer)
/// loses the tails of such segments (a duplicate-ACK storm), and a FIN that arrives behind the
/// hole is disregarded and waits for the 1 s retransmission timeout. Offering
/// one unit less keeps every edge a sender may use at or below smoltcp's own newest edge:
/// the true edge (bytes read + buffer size) never moves back, and each advertised edge is
/// within one unit of it.
fn clamp_tcp_window(p: &mut [u8]) {
    if p.len() < 60 || p[0] >> 4 != 6 || p[6] != 6 {
        return;
    }
    let t = &mut p[40..];
    if t[13] & 0x02 != 0 {
        return; // SYN and SYN-ACK carry an unscaled window.
    }
    let old = u16::from_be_bytes([t[14], t[15]]);
    if old == 0 {
        return;
    }
    let new = old - 1;
    t[14..16].copy_from_slice(&new.to_be_bytes());
    let hc = u16::from_be_bytes([t[16], t[17]]);
    let mut sum = u32::from(!hc) + u32::from(!old) + u32::from(new);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    t[16..18].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

impl smoltcp::phy::TxToken for TxTok<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0u8; len];
        let r = f(&mut buf);
        clamp_tcp_window(&mut buf);
        if let Some(permit) = self.permit.take() {
            permit.send(buf);
            *self.sent += 1;
        } else if self.tx.try_send(buf).is_ok() {
            *self.sent += 1;
        } else {
            // Only a reply to an inbound packet can get here (transmit() checks capacity);
            // TCP recovers from its loss.
            *self.dropped += 1;
        }
        r
    }
}

impl Device for QueueDevice {
    type RxToken<'a> = RxTok;
    type TxToken<'a> = TxTok<'a>;

    fn receive(
        &mut self,
        _now: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let p = self.rx.pop_front()?;
        self.saw_syn |= is_tcp_syn(&p);
        Some((
            RxTok(p),
            TxTok {
                tx: &self.tx,
                permit: &mut self.permit,
                sent: &mut self.sent,
                dropped: &mut self.dropped,
            },
        ))
    }

    fn transmit(&mut self, _now: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        if !self.can_transmit() {
            return None;
        }
        Some(TxTok {
            tx: &self.tx,
            permit: &mut self.permit,
            sent: &mut self.sent,
            dropped: &mut self.dropped,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.caps.clone()
    }
}

// ---------------------------------------------------------------------------------------------
// The driver task.

/// A connected socket and the driver's end of its application pipe.
struct Flow {
    app: DuplexStream,
    /// The application shut down (or dropped) its write side; we sent a FIN.
    app_eof: bool,
    /// The application dropped its stream; received data is discarded.
    app_gone: bool,
    /// The peer's FIN was passed on to the application.
    net_eof: bool,
    local_port: Option<u16>,
}

struct Connecting {
    dst: SocketAddrV6,
    local_port: u16,
    deadline: tokio::time::Instant,
    reply: oneshot::Sender<Result<NetstackStream, NetstackError>>,
}

struct PortListener {
    id: u64,
    pool: Vec<SocketHandle>,
    accept: mpsc::Sender<NetstackStream>,
}

type ReserveFuture = Pin<
    Box<dyn Future<Output = Result<mpsc::OwnedPermit<Packet>, mpsc::error::SendError<()>>> + Send>,
>;

struct Driver {
    cfg: NetstackConfig,
    iface: Interface,
    device: QueueDevice,
    sockets: SocketSet<'static>,
    from_net: mpsc::Receiver<Packet>,
    from_net_closed: bool,
    commands: mpsc::Receiver<Command>,
    commands_closed: bool,
    flows: HashMap<SocketHandle, Flow>,
    connecting: HashMap<SocketHandle, Connecting>,
    /// Accepted sockets still in the handshake, with their port.
    handshaking: HashMap<SocketHandle, u16>,
    listeners: HashMap<u16, PortListener>,
    used_ports: HashSet<u16>,
    /// Sockets to remove after the next transmit (so an abort's RST goes out).
    doomed: Vec<SocketHandle>,
    reserve: Option<ReserveFuture>,
    sleep: Pin<Box<tokio::time::Sleep>>,
    epoch: std::time::Instant,
    rng: u64,
    counters: Arc<Counters>,
}

impl Driver {
    fn new(
        cfg: NetstackConfig,
        to_net: mpsc::Sender<Packet>,
        from_net: mpsc::Receiver<Packet>,
        commands: mpsc::Receiver<Command>,
        counters: Arc<Counters>,
    ) -> Self {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = usize::from(cfg.mtu);
        let mut cs = ChecksumCapabilities::default();
        if !cfg.verify_rx_checksums {
            cs.tcp = Checksum::Tx;
            cs.udp = Checksum::Tx;
            cs.icmpv6 = Checksum::Tx;
        }
        caps.checksum = cs;
        let mut device = QueueDevice {
            rx: VecDeque::with_capacity(INGRESS_BATCH),
            tx: to_net,
            permit: None,
            caps,
            saw_syn: false,
            sent: 0,
            dropped: 0,
        };
        let mut seed = [0u8; 8];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut seed);
        let seed = u64::from_le_bytes(seed) | 1;
        let mut icfg = IfaceConfig::new(HardwareAddress::Ip);
        icfg.random_seed = seed;
        let epoch = std::time::Instant::now();
        let mut iface = Interface::new(icfg, &mut device, smoltcp::time::Instant::ZERO);
        iface.update_ip_addrs(|addrs| {
            addrs
                .push(IpCidr::new(IpAddress::Ipv6(cfg.address), cfg.prefix_len))
                .expect("a fresh interface has room for one address");
        });
        Driver {
            cfg,
            iface,
            device,
            sockets: SocketSet::new(Vec::new()),
            from_net,
            from_net_closed: false,
            commands,
            commands_closed: false,
            flows: HashMap::new(),
            connecting: HashMap::new(),
            handshaking: HashMap::new(),
            listeners: HashMap::new(),
            used_ports: HashSet::new(),
            doomed: Vec::new(),
            reserve: None,
            sleep: Box::pin(tokio::time::sleep(Duration::from_secs(3600))),
            epoch,
            rng: seed,
            counters,
        }
    }

    fn now(&self) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros(self.epoch.elapsed().as_micros() as i64)
    }

    fn socket_count(&self) -> usize {
        self.flows.len()
            + self.connecting.len()
            + self.handshaking.len()
            + self.listeners.values().map(|l| l.pool.len()).sum::<usize>()
    }

    fn new_socket(&self) -> tcp::Socket<'static> {
        let rx = tcp::SocketBuffer::new(vec![0u8; self.cfg.tcp_buffer]);
        let tx = tcp::SocketBuffer::new(vec![0u8; self.cfg.tcp_buffer]);
        let mut s = tcp::Socket::new(rx, tx);
        s.set_nagle_enabled(false);
        s.set_ack_delay(None);
        s.set_congestion_control(match self.cfg.congestion {
            Congestion::None => tcp::CongestionControl::None,
            Congestion::Cubic => tcp::CongestionControl::Cubic,
        });
        s
    }

    fn next_rand(&mut self) -> u64 {
        // xorshift64: port choice needs to be unpredictable-ish, not cryptographic.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    fn pick_port(&mut self) -> Option<u16> {
        let span = u64::from(u16::MAX - EPHEMERAL_START) + 1;
        for _ in 0..64 {
            let p = EPHEMERAL_START + (self.next_rand() % span) as u16;
            if !self.used_ports.contains(&p) && !self.listeners.contains_key(&p) {
                self.used_ports.insert(p);
                return Some(p);
            }
        }
        None
    }

    fn stream_pair(
        &self,
        local: SocketAddrV6,
        peer: SocketAddrV6,
    ) -> (DuplexStream, NetstackStream) {
        let (ours, theirs) = tokio::io::duplex(self.cfg.stream_buffer);
        (
            ours,
            NetstackStream {
                io: theirs,
                local,
                peer,
            },
        )
    }

    // --- commands -----------------------------------------------------------------------------

    fn take_commands(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        while !self.commands_closed {
            match self.commands.poll_recv(cx) {
                Poll::Ready(Some(c)) => {
                    progress = true;
                    self.command(c);
                }
                Poll::Ready(None) => self.commands_closed = true,
                Poll::Pending => break,
            }
        }
        progress
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Connect { dst, reply } => {
                let r = self.start_connect(dst, reply);
                if let Err((e, reply)) = r {
                    let _ = reply.send(Err(e));
                }
            }
            Command::Listen {
                port,
                id,
                accept,
                reply,
            } => {
                let _ = reply.send(self.start_listen(port, id, accept));
            }
            Command::Describe { reply } => {
                let _ = reply.send(self.describe());
            }
            Command::Unlisten { port, id } => {
                if self.listeners.get(&port).is_some_and(|l| l.id == id) {
                    self.stop_listen(port);
                }
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn start_connect(
        &mut self,
        dst: SocketAddrV6,
        reply: oneshot::Sender<Result<NetstackStream, NetstackError>>,
    ) -> Result<
        (),
        (
            NetstackError,
            oneshot::Sender<Result<NetstackStream, NetstackError>>,
        ),
    > {
        if dst.port() == 0 {
            return Err((NetstackError::PortZero(*dst.ip()), reply));
        }
        if *dst.ip() == self.cfg.address {
            return Err((NetstackError::OwnAddress(dst), reply));
        }
        if !self.cfg.on_link(*dst.ip()) {
            return Err((
                NetstackError::NotInOverlay(dst, self.cfg.address, self.cfg.prefix_len),
                reply,
            ));
        }
        if self.socket_count() >= self.cfg.max_flows {
            return Err((NetstackError::TooManyFlows(self.cfg.max_flows), reply));
        }
        let Some(local_port) = self.pick_port() else {
            return Err((NetstackError::TooManyFlows(self.cfg.max_flows), reply));
        };
        let mut s = self.new_socket();
        let local = IpListenEndpoint {
            addr: Some(IpAddress::Ipv6(self.cfg.address)),
            port: local_port,
        };
        if s.connect(self.iface.context(), dst, local).is_err() {
            self.used_ports.remove(&local_port);
            return Err((NetstackError::PortZero(*dst.ip()), reply));
        }
        let h = self.sockets.add(s);
        self.connecting.insert(
            h,
            Connecting {
                dst,
                local_port,
                deadline: tokio::time::Instant::now() + self.cfg.connect_timeout,
                reply,
            },
        );
        Ok(())
    }

    fn start_listen(
        &mut self,
        port: u16,
        id: u64,
        accept: mpsc::Sender<NetstackStream>,
    ) -> Result<(), NetstackError> {
        if port == 0 {
            return Err(NetstackError::Config("cannot listen on port 0".into()));
        }
        if let Some(l) = self.listeners.get(&port) {
            if !l.accept.is_closed() {
                return Err(NetstackError::PortInUse(port));
            }
            self.stop_listen(port);
        }
        if self.socket_count() + self.cfg.backlog > self.cfg.max_flows {
            return Err(NetstackError::TooManyFlows(self.cfg.max_flows));
        }
        self.listeners.insert(
            port,
            PortListener {
                id,
                pool: Vec::new(),
                accept,
            },
        );
        self.refill_listeners();
        Ok(())
    }

    fn stop_listen(&mut self, port: u16) {
        if let Some(l) = self.listeners.remove(&port) {
            for h in l.pool {
                self.sockets.remove(h);
            }
        }
    }

    // --- packets ------------------------------------------------------------------------------

    fn take_packets(&mut self, cx: &mut Context<'_>) -> bool {
        let mut n = 0;
        while !self.from_net_closed && n < INGRESS_BATCH {
            match self.from_net.poll_recv(cx) {
                Poll::Ready(Some(p)) => {
                    self.device.rx.push_back(p);
                    n += 1;
                }
                Poll::Ready(None) => self.from_net_closed = true,
                Poll::Pending => break,
            }
        }
        self.counters
            .packets_in
            .fetch_add(n as u64, Ordering::Relaxed);
        n > 0
    }

    fn ingress(&mut self, now: smoltcp::time::Instant) {
        loop {
            let r = self
                .iface
                .poll_ingress_single(now, &mut self.device, &mut self.sockets);
            if r == PollIngressSingleResult::None {
                break;
            }
            if std::mem::take(&mut self.device.saw_syn) {
                // smoltcp has no backlog: a SYN took a listening socket; put another in place
                // before the next SYN is processed.
                self.refill_listeners();
            }
        }
    }

    fn egress(&mut self, now: smoltcp::time::Instant) {
        for _ in 0..100_000 {
            if self
                .iface
                .poll_egress(now, &mut self.device, &mut self.sockets)
                == PollResult::None
            {
                break;
            }
        }
        for h in self.doomed.drain(..) {
            self.sockets.remove(h);
        }
    }

    fn refill_listeners(&mut self) {
        let ports: Vec<u16> = self.listeners.keys().copied().collect();
        for port in ports {
            let mut taken = Vec::new();
            if let Some(l) = self.listeners.get_mut(&port) {
                l.pool.retain(|&h| {
                    let s = self.sockets.get::<tcp::Socket>(h);
                    if s.is_listening() {
                        true
                    } else {
                        taken.push(h);
                        false
                    }
                });
            }
            for h in taken {
                self.handshaking.insert(h, port);
            }
            let want = self.cfg.backlog;
            while self
                .listeners
                .get(&port)
                .is_some_and(|l| l.pool.len() < want)
                && self.socket_count() < self.cfg.max_flows
            {
                let mut s = self.new_socket();
                let ep = IpListenEndpoint {
                    addr: Some(IpAddress::Ipv6(self.cfg.address)),
                    port,
                };
                if s.listen(ep).is_err() {
                    break;
                }
                let h = self.sockets.add(s);
                if let Some(l) = self.listeners.get_mut(&port) {
                    l.pool.push(h);
                }
            }
        }
    }

    // --- sockets ------------------------------------------------------------------------------

    fn service(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        progress |= self.service_connecting(cx);
        progress |= self.service_handshaking();
        progress |= self.service_flows(cx);
        if self
            .listeners
            .values()
            .any(|l| l.pool.len() < self.cfg.backlog)
        {
            // A pool left short by the flow limit fills up again as flows end.
            self.refill_listeners();
        }
        let closed: Vec<u16> = self
            .listeners
            .iter()
            .filter(|(_, l)| l.accept.is_closed())
            .map(|(p, _)| *p)
            .collect();
        for p in closed {
            self.stop_listen(p);
        }
        progress
    }

    fn service_connecting(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        let now = tokio::time::Instant::now();
        let handles: Vec<SocketHandle> = self.connecting.keys().copied().collect();
        for h in handles {
            let state = self.sockets.get::<tcp::Socket>(h).state();
            let c = self.connecting.get_mut(&h).expect("handle from the map");
            let caller_gone = c.reply.poll_closed(cx).is_ready();
            let outcome = match state {
                tcp::State::SynSent if caller_gone || now >= c.deadline => Some(Err(())),
                tcp::State::SynSent => None,
                tcp::State::Closed => Some(Err(())),
                _ => Some(Ok(())),
            };
            let Some(outcome) = outcome else { continue };
            progress = true;
            let c = self.connecting.remove(&h).expect("handle from the map");
            let local = SocketAddrV6::new(self.cfg.address, c.local_port, 0, 0);
            match outcome {
                Ok(()) => {
                    let (ours, theirs) = self.stream_pair(local, c.dst);
                    if c.reply.send(Ok(theirs)).is_ok() {
                        self.flows.insert(
                            h,
                            Flow {
                                app: ours,
                                app_eof: false,
                                app_gone: false,
                                net_eof: false,
                                local_port: Some(c.local_port),
                            },
                        );
                    } else {
                        self.sockets.get_mut::<tcp::Socket>(h).abort();
                        self.doomed.push(h);
                        self.used_ports.remove(&c.local_port);
                    }
                }
                Err(()) => {
                    let err = if state == tcp::State::Closed && now < c.deadline {
                        NetstackError::Refused(c.dst)
                    } else {
                        NetstackError::TimedOut(c.dst, self.cfg.connect_timeout)
                    };
                    self.sockets.get_mut::<tcp::Socket>(h).abort();
                    self.doomed.push(h);
                    self.used_ports.remove(&c.local_port);
                    let _ = c.reply.send(Err(err));
                }
            }
        }
        progress
    }

    fn service_handshaking(&mut self) -> bool {
        let mut progress = false;
        let handles: Vec<(SocketHandle, u16)> =
            self.handshaking.iter().map(|(h, p)| (*h, *p)).collect();
        for (h, port) in handles {
            let s = self.sockets.get_mut::<tcp::Socket>(h);
            match s.state() {
                tcp::State::SynReceived => continue,
                // Back in LISTEN (a reset during the handshake), CLOSED or TIME-WAIT: the
                // pool has its own listeners, so this socket goes.
                tcp::State::Listen | tcp::State::Closed | tcp::State::TimeWait => {
                    self.handshaking.remove(&h);
                    self.doomed.push(h);
                    progress = true;
                    continue;
                }
                _ => {}
            }
            progress = true;
            self.handshaking.remove(&h);
            let local = endpoint_v6(s.local_endpoint());
            let peer = endpoint_v6(s.remote_endpoint());
            let (Some(local), Some(peer)) = (local, peer) else {
                s.abort();
                self.doomed.push(h);
                continue;
            };
            let _ = s;
            let (ours, theirs) = self.stream_pair(local, peer);
            let delivered = self
                .listeners
                .get(&port)
                .is_some_and(|l| l.accept.try_send(theirs).is_ok());
            let s = self.sockets.get_mut::<tcp::Socket>(h);
            if delivered {
                self.flows.insert(
                    h,
                    Flow {
                        app: ours,
                        app_eof: false,
                        app_gone: false,
                        net_eof: false,
                        local_port: None,
                    },
                );
            } else {
                // Nobody accepts (listener gone or its queue full): refuse with a reset.
                s.abort();
                self.doomed.push(h);
            }
        }
        progress
    }

    fn service_flows(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        let mut finished = Vec::new();
        for (&h, f) in self.flows.iter_mut() {
            let s = self.sockets.get_mut::<tcp::Socket>(h);
            progress |= net_to_app(s, f, cx);
            progress |= app_to_net(s, f, cx);
            let state = s.state();
            let done_rx = f.net_eof || f.app_gone || !s.can_recv();
            match state {
                tcp::State::Closed | tcp::State::TimeWait if done_rx => {
                    if !f.net_eof {
                        let _ = Pin::new(&mut f.app).poll_shutdown(cx);
                    }
                    finished.push(h);
                }
                _ => {}
            }
        }
        for h in finished {
            progress = true;
            if let Some(f) = self.flows.remove(&h) {
                if let Some(p) = f.local_port {
                    self.used_ports.remove(&p);
                }
            }
            self.doomed.push(h);
        }
        progress
    }

    fn next_timer(&mut self, now: smoltcp::time::Instant) -> Option<Duration> {
        let mut d = if self.device.can_transmit() {
            self.iface
                .poll_delay(now, &self.sockets)
                .map(|d| Duration::from_micros(d.total_micros()))
        } else {
            // Every timer needs to transmit; the reserved send slot wakes us first.
            None
        };
        let t = tokio::time::Instant::now();
        for c in self.connecting.values() {
            let left = c.deadline.saturating_duration_since(t);
            d = Some(d.map_or(left, |d| d.min(left)));
        }
        d.map(|d| d.max(MIN_SLEEP))
    }

    fn poll_reserve(&mut self, cx: &mut Context<'_>) -> bool {
        if self.device.can_transmit() {
            self.reserve = None;
            return false;
        }
        let fut = self
            .reserve
            .get_or_insert_with(|| Box::pin(self.device.tx.clone().reserve_owned()));
        match fut.as_mut().poll(cx) {
            Poll::Ready(Ok(permit)) => {
                self.reserve = None;
                self.device.permit = Some(permit);
                true
            }
            Poll::Ready(Err(_)) => {
                // The data plane is gone: discard what we would send.
                self.reserve = None;
                false
            }
            Poll::Pending => false,
        }
    }

    fn describe(&mut self) -> String {
        use std::fmt::Write;
        let now = self.now();
        let mut out = format!(
            "netstack {}: rx queue {}, can transmit {}, reserve pending {}, poll delay {:?}\n",
            self.cfg.address,
            self.device.rx.len(),
            self.device.can_transmit(),
            self.reserve.is_some(),
            self.iface.poll_delay(now, &self.sockets),
        );
        for (h, f) in &self.flows {
            let s = self.sockets.get::<tcp::Socket>(*h);
            let _ = writeln!(
                out,
                "  flow {:?} -> {:?}: {} send_q {} recv_q {} app_eof {} app_gone {} net_eof {}",
                s.local_endpoint(),
                s.remote_endpoint(),
                s.state(),
                s.send_queue(),
                s.recv_queue(),
                f.app_eof,
                f.app_gone,
                f.net_eof
            );
        }
        let _ = writeln!(
            out,
            "  {} connecting, {} handshaking, {} listened ports",
            self.connecting.len(),
            self.handshaking.len(),
            self.listeners.len()
        );
        out
    }

    fn finished(&self) -> bool {
        self.commands_closed
            && self.flows.is_empty()
            && self.connecting.is_empty()
            && self.handshaking.is_empty()
    }

    fn publish_counters(&mut self) {
        let c = &self.counters;
        c.packets_out
            .fetch_add(std::mem::take(&mut self.device.sent), Ordering::Relaxed);
        c.packets_dropped
            .fetch_add(std::mem::take(&mut self.device.dropped), Ordering::Relaxed);
        c.flows.store(self.flows.len() as u64, Ordering::Relaxed);
    }
}

/// Moves received bytes from the socket to the application; passes the peer's FIN on.
fn net_to_app(s: &mut tcp::Socket<'static>, f: &mut Flow, cx: &mut Context<'_>) -> bool {
    let mut progress = false;
    if f.app_gone {
        while let Ok(n) = s.recv(|b| (b.len(), b.len())) {
            if n == 0 {
                break;
            }
        }
        return false;
    }
    if f.net_eof {
        return false;
    }
    // Two rounds: the ring buffer may hand out its data in two pieces.
    for _ in 0..2 {
        if !s.can_recv() {
            break;
        }
        let r = s.recv(|b| match Pin::new(&mut f.app).poll_write(cx, b) {
            Poll::Ready(Ok(n)) => (n, Poll::Ready(Ok(n))),
            Poll::Ready(Err(e)) => (0, Poll::Ready(Err(e))),
            Poll::Pending => (0, Poll::Pending),
        });
        match r {
            Ok(Poll::Ready(Ok(n))) if n > 0 => progress = true,
            Ok(Poll::Ready(Err(_))) => {
                // The application dropped its stream.
                f.app_gone = true;
                f.app_eof = true;
                s.close();
                s.set_timeout(Some(smoltcp::time::Duration::from_secs(
                    ORPHAN_TIMEOUT.as_secs(),
                )));
                return true;
            }
            _ => break,
        }
    }
    if !s.may_recv() && !s.can_recv() {
        // The peer sent FIN (or the connection is gone): end of stream for the application.
        let _ = Pin::new(&mut f.app).poll_shutdown(cx);
        f.net_eof = true;
        progress = true;
    }
    progress
}

/// Moves the application's bytes into the socket; turns its shutdown into our FIN.
fn app_to_net(s: &mut tcp::Socket<'static>, f: &mut Flow, cx: &mut Context<'_>) -> bool {
    let mut progress = false;
    if f.app_eof {
        return false;
    }
    for _ in 0..2 {
        if !s.may_send() || s.send_queue() >= s.send_capacity() {
            break;
        }
        let r = s.send(|b| {
            let mut rb = ReadBuf::new(b);
            match Pin::new(&mut f.app).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    (n, Poll::Ready(Ok(n)))
                }
                Poll::Ready(Err(e)) => (0, Poll::Ready(Err(e))),
                Poll::Pending => (0, Poll::Pending),
            }
        });
        match r {
            Ok(Poll::Ready(Ok(0))) | Ok(Poll::Ready(Err(_))) => {
                // End of the application's stream: send FIN after the queued data.
                s.close();
                f.app_eof = true;
                return true;
            }
            Ok(Poll::Ready(Ok(_))) => progress = true,
            _ => break,
        }
    }
    progress
}

fn endpoint_v6(ep: Option<smoltcp::wire::IpEndpoint>) -> Option<SocketAddrV6> {
    let ep = ep?;
    match ep.addr {
        IpAddress::Ipv6(a) => Some(SocketAddrV6::new(a, ep.port, 0, 0)),
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        this.counters.wakeups.fetch_add(1, Ordering::Relaxed);
        for _ in 0..MAX_ROUNDS {
            let mut progress = this.take_commands(cx);
            progress |= this.take_packets(cx);
            let now = this.now();
            this.iface.poll_maintenance(now);
            this.ingress(now);
            progress |= this.service(cx);
            this.egress(now);
            progress |= this.poll_reserve(cx);
            this.publish_counters();
            if this.finished() {
                return Poll::Ready(());
            }
            let now = this.now();
            if let Some(d) = this.next_timer(now) {
                this.sleep.as_mut().reset(tokio::time::Instant::now() + d);
                if this.sleep.as_mut().poll(cx).is_ready() {
                    progress = true;
                }
            }
            if !progress {
                return Poll::Pending;
            }
        }
        // Still busy: let other tasks run, then continue.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

// ---------------------------------------------------------------------------------------------
// The data plane's inner side.

impl PacketPort {
    /// This port as the data plane's inner side ([`crate::wg::Inner`]), for
    /// `DataPlane::start`: its threads read what the stack sends (`from_stack`, waiting on
    /// `rt`'s timer) and write decrypted packets to the stack (`to_stack`; a full queue drops,
    /// as a full NIC ring would).
    pub fn into_inner(self, mtu: u16, rt: tokio::runtime::Handle) -> crate::wg::Inner {
        crate::wg::Inner {
            reader: Box::new(StackReader {
                rx: self.from_stack,
                rt,
            }),
            writer: Box::new(StackWriter { tx: self.to_stack }),
            mtu,
        }
    }
}

struct StackReader {
    rx: mpsc::Receiver<Packet>,
    rt: tokio::runtime::Handle,
}

impl crate::wg::InnerReader for StackReader {
    fn recv_batch(
        &mut self,
        bufs: &mut [Vec<u8>],
        sizes: &mut [usize],
        timeout: Duration,
    ) -> io::Result<usize> {
        use crate::wg::INNER_OFFSET;
        if bufs.is_empty() {
            return Ok(0);
        }
        let first = match self.rx.try_recv() {
            Ok(p) => Some(p),
            Err(mpsc::error::TryRecvError::Empty) => {
                let rx = &mut self.rx;
                self.rt
                    .block_on(async { tokio::time::timeout(timeout, rx.recv()).await })
                    .ok()
                    .flatten()
            }
            Err(mpsc::error::TryRecvError::Disconnected) => {
                std::thread::sleep(timeout);
                None
            }
        };
        let mut n = 0;
        let mut next = first;
        while let Some(p) = next {
            let room = bufs[n].len().saturating_sub(INNER_OFFSET);
            let len = p.len().min(room);
            bufs[n][INNER_OFFSET..INNER_OFFSET + len].copy_from_slice(&p[..len]);
            sizes[n] = len;
            n += 1;
            next = if n < bufs.len() {
                self.rx.try_recv().ok()
            } else {
                None
            };
        }
        Ok(n)
    }
}

struct StackWriter {
    tx: mpsc::Sender<Packet>,
}

impl crate::wg::InnerWriter for StackWriter {
    fn send_batch(&mut self, bufs: &mut [Vec<u8>]) -> io::Result<()> {
        for b in bufs.iter() {
            if let Some(p) = b.get(crate::wg::INNER_OFFSET..) {
                let _ = self.tx.try_send(p.to_vec());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syn_detection_reads_the_tcp_flags_of_plain_ipv6() {
        let mut p = vec![0u8; 60];
        p[0] = 0x60;
        p[6] = 6;
        p[53] = 0x02;
        assert!(is_tcp_syn(&p));
        p[53] = 0x12; // SYN+ACK
        assert!(!is_tcp_syn(&p));
        p[53] = 0x02;
        p[6] = 17; // UDP
        assert!(!is_tcp_syn(&p));
        assert!(!is_tcp_syn(&p[..40]));
    }

    /// The TCP checksum over the IPv6 pseudo-header, as a receiver computes it (0 = valid).
    fn tcp_checksum(p: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        let mut add = |b: &[u8]| {
            for c in b.chunks(2) {
                sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
            }
        };
        add(&p[8..40]);
        let len = (p.len() - 40) as u32;
        add(&len.to_be_bytes());
        add(&[0, 0, 0, 6]);
        add(&p[40..]);
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    fn tcp_packet(flags: u8, window: u16) -> Vec<u8> {
        let mut p = vec![0u8; 40 + 20 + 7];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&27u16.to_be_bytes());
        p[6] = 6;
        p[8] = 0xfd;
        p[23] = 1;
        p[24] = 0xfd;
        p[39] = 2;
        p[40 + 12] = 5 << 4;
        p[40 + 13] = flags;
        p[40 + 14..40 + 16].copy_from_slice(&window.to_be_bytes());
        p[60..].copy_from_slice(b"payload");
        let c = tcp_checksum(&p);
        p[40 + 16..40 + 18].copy_from_slice(&c.to_be_bytes());
        assert_eq!(tcp_checksum(&p), 0);
        p
    }

    #[test]
    fn window_clamping_lowers_the_window_by_one_and_keeps_the_checksum_valid() {
        for w in [1u16, 2, 0x00ff, 0x0100, 0x8000, 0xffff] {
            let mut p = tcp_packet(0x10, w);
            clamp_tcp_window(&mut p);
            assert_eq!(u16::from_be_bytes([p[54], p[55]]), w - 1);
            assert_eq!(tcp_checksum(&p), 0, "window {w}");
        }
    }

    #[test]
    fn window_clamping_leaves_syns_and_zero_windows_alone() {
        for (flags, w) in [(0x02, 1000), (0x12, 1000), (0x10, 0)] {
            let p0 = tcp_packet(flags, w);
            let mut p = p0.clone();
            clamp_tcp_window(&mut p);
            assert_eq!(p, p0);
        }
    }

    #[test]
    fn on_link_covers_exactly_the_prefix() {
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
        assert!(NetstackConfig::new(Ipv6Addr::LOCALHOST).validate().is_ok());
    }
}
