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
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpListenEndpoint};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::sync::{mpsc, oneshot};

use super::device::QueueDevice;
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

pub(super) struct Driver {
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
    pub(super) fn new(
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
