//! The driver task: owns the smoltcp interface and services every socket.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::net::SocketAddrV6;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use smoltcp::iface::{
    Config as IfaceConfig, Interface, PollIngressSingleResult, PollResult, SocketHandle, SocketSet,
};
use smoltcp::phy::{Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};
use tokio::io::DuplexStream;
use tokio::sync::{mpsc, oneshot};

mod commands;
mod sockets;
mod splice;
mod udp;

use super::app::AppEnd;
use super::buffers::socket_buffer;
use super::device::{Out, QueueDevice, HEADROOM};
use super::recycle::Recycler;
use super::{Command, Congestion, Counters, NetstackConfig, NetstackError, NetstackStream, Packet};

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

/// A connected socket and its application end (a pipe, or a spliced local socket).
struct Flow {
    app: AppEnd,
    /// The application shut down (or dropped) its write side; we sent a FIN.
    app_eof: bool,
    /// The application dropped its stream; received data is discarded.
    app_gone: bool,
    /// The peer's FIN was passed on to the application.
    net_eof: bool,
    local_port: Option<u16>,
    /// When a byte last moved in either direction (for the idle timeouts).
    last_active: tokio::time::Instant,
    /// A FIN went one way or the other: the shorter half-closed timeout applies.
    half_closed: bool,
}

impl Flow {
    fn new(app: DuplexStream, local_port: Option<u16>, now: tokio::time::Instant) -> Self {
        Flow {
            app: AppEnd::Pipe(app),
            app_eof: false,
            app_gone: false,
            net_eof: false,
            local_port,
            last_active: now,
            half_closed: false,
        }
    }
}

/// Where packet buffers go back to (see `recycle.rs`).
pub(super) struct Recycling {
    /// Buffers of inbound packets, once read.
    pub(super) inbound: Arc<Recycler>,
    /// Spare buffers for outbound packets.
    pub(super) outbound: Arc<Recycler>,
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

pub(super) struct Driver {
    cfg: NetstackConfig,
    iface: Interface,
    device: QueueDevice,
    sockets: SocketSet<'static>,
    from_net: mpsc::Receiver<Packet>,
    from_net_closed: bool,
    commands: mpsc::Receiver<Command>,
    commands_closed: bool,
    /// Our own command queue, for the streams we hand out (so they can ask for a splice).
    command_tx: mpsc::WeakSender<Command>,
    flows: HashMap<SocketHandle, Flow>,
    connecting: HashMap<SocketHandle, Connecting>,
    /// Accepted sockets still in the handshake, with their port and deadline.
    handshaking: HashMap<SocketHandle, (u16, tokio::time::Instant)>,
    listeners: HashMap<u16, PortListener>,
    used_ports: HashSet<u16>,
    /// Bound UDP sockets (`driver/udp.rs`).
    udp: HashMap<SocketHandle, udp::UdpFlow>,
    /// Sockets to remove after the next transmit (so an abort's RST goes out).
    doomed: Vec<SocketHandle>,
    reserve: Option<ReserveFuture>,
    sleep: Pin<Box<tokio::time::Sleep>>,
    /// smoltcp's time zero; tokio's clock, so tests can pause and advance it.
    epoch: tokio::time::Instant,
    rng: u64,
    counters: Arc<Counters>,
}

impl Driver {
    pub(super) fn new(
        cfg: NetstackConfig,
        to_net: mpsc::Sender<Packet>,
        from_net: mpsc::Receiver<Packet>,
        commands: (mpsc::Receiver<Command>, mpsc::WeakSender<Command>),
        counters: Arc<Counters>,
        recycle: Recycling,
    ) -> Self {
        let (commands, command_tx) = commands;
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = if cfg.tcp_offload {
            super::offload::OFFLOAD_MTU
        } else {
            usize::from(cfg.mtu)
        };
        let mut cs = ChecksumCapabilities::default();
        if !cfg.verify_rx_checksums {
            cs.tcp = Checksum::Tx;
            cs.udp = Checksum::Tx;
            cs.icmpv6 = Checksum::Tx;
        }
        caps.checksum = cs;
        let mut device = QueueDevice {
            rx: VecDeque::with_capacity(INGRESS_BATCH),
            used: Vec::with_capacity(INGRESS_BATCH),
            used_to: recycle.inbound,
            out: Out {
                tx: to_net,
                permit: None,
                pending: Vec::with_capacity(INGRESS_BATCH),
                sent: 0,
                dropped: 0,
                spare: recycle.outbound.spares(),
                buf_len: HEADROOM + usize::from(cfg.mtu).max(1280),
                offload_mtu: cfg.tcp_offload.then_some(usize::from(cfg.mtu)),
            },
            caps,
            saw_syn: false,
        };
        let mut seed = [0u8; 8];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut seed);
        let seed = u64::from_le_bytes(seed) | 1;
        let mut icfg = IfaceConfig::new(HardwareAddress::Ip);
        icfg.random_seed = seed;
        let epoch = tokio::time::Instant::now();
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
            command_tx,
            flows: HashMap::new(),
            connecting: HashMap::new(),
            handshaking: HashMap::new(),
            listeners: HashMap::new(),
            used_ports: HashSet::new(),
            udp: HashMap::new(),
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

    /// How long `f` may stay without moving a byte.
    fn idle_limit(&self, f: &Flow) -> Duration {
        if f.half_closed {
            self.cfg.half_closed_timeout
        } else {
            self.cfg.idle_timeout
        }
    }

    /// Sockets that count against the memory bound: all but the listening pools.
    fn charged(&self) -> usize {
        self.flows.len() + self.connecting.len() + self.handshaking.len()
    }

    /// Whether one more charged socket fits the memory bound; counts a refusal if not.
    fn admit(&mut self) -> bool {
        if self.charged() < self.cfg.memory_flow_limit() {
            return true;
        }
        self.counters.flows_refused.fetch_add(1, Ordering::Relaxed);
        false
    }

    fn socket_count(&self) -> usize {
        self.flows.len()
            + self.connecting.len()
            + self.handshaking.len()
            + self.listeners.values().map(|l| l.pool.len()).sum::<usize>()
            + self.udp.len()
    }

    fn new_socket(&self) -> tcp::Socket<'static> {
        let rx = tcp::SocketBuffer::new(socket_buffer(self.cfg.tcp_buffer));
        let tx = tcp::SocketBuffer::new(socket_buffer(self.cfg.tcp_buffer));
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
                commands: self.command_tx.upgrade(),
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
            if r == PollIngressSingleResult::SocketStateChanged && !self.udp.is_empty() {
                // smoltcp keeps few datagrams per UDP socket: hand them on before the next
                // packet of the batch, so a batch larger than that buffer loses none.
                self.drain_udp();
            }
            if std::mem::take(&mut self.device.saw_syn) {
                // smoltcp has no backlog: a SYN took a listening socket; put another in place
                // before the next SYN is processed.
                self.refill_listeners();
            }
        }
        self.device.recycle_used();
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
        self.device.out.flush();
        for h in self.doomed.drain(..) {
            self.sockets.remove(h);
        }
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
        let deadlines = self
            .connecting
            .values()
            .map(|c| c.deadline)
            .chain(self.handshaking.values().map(|(_, d)| *d))
            .chain(
                self.flows
                    .values()
                    .map(|f| f.last_active + self.idle_limit(f)),
            );
        for deadline in deadlines {
            let left = deadline.saturating_duration_since(t);
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
            .get_or_insert_with(|| Box::pin(self.device.out.tx.clone().reserve_owned()));
        match fut.as_mut().poll(cx) {
            Poll::Ready(Ok(permit)) => {
                self.reserve = None;
                self.device.out.permit = Some(permit);
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
            "netstack {}: rx queue {}, can transmit {}, reserve pending {}, poll delay {:?}, dropped out {} in {}\n",
            self.cfg.address,
            self.device.rx.len(),
            self.device.can_transmit(),
            self.reserve.is_some(),
            self.iface.poll_delay(now, &self.sockets),
            self.counters.packets_dropped.load(Ordering::Relaxed),
            self.counters.packets_in_dropped.load(Ordering::Relaxed),
        );
        for (h, f) in &self.flows {
            let s = self.sockets.get::<tcp::Socket>(*h);
            let _ = writeln!(
                out,
                "  flow {:?} -> {:?}: {} send_q {} recv_q {} can_send {} app_eof {} app_gone {} net_eof {} spliced {}",
                s.local_endpoint(),
                s.remote_endpoint(),
                s.state(),
                s.send_queue(),
                s.recv_queue(),
                s.can_send(),
                f.app_eof,
                f.app_gone,
                f.net_eof,
                matches!(f.app, AppEnd::Spliced(_))
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
            && self.udp.is_empty()
    }

    fn publish_counters(&mut self) {
        let c = &self.counters;
        c.packets_out
            .fetch_add(std::mem::take(&mut self.device.out.sent), Ordering::Relaxed);
        c.packets_dropped.fetch_add(
            std::mem::take(&mut self.device.out.dropped),
            Ordering::Relaxed,
        );
        c.flows.store(self.flows.len() as u64, Ordering::Relaxed);
    }
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
            progress |= this.udp_unblocked();
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
