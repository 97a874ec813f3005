//! The driver's side of UDP sockets: binding, moving datagrams between smoltcp's buffers and
//! the application's queues, closing sockets whose application is gone.

use std::net::SocketAddrV6;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use smoltcp::socket::udp;
use smoltcp::wire::{IpAddress, IpEndpoint, IpListenEndpoint};
use tokio::sync::mpsc;

use super::{Driver, EPHEMERAL_START};
use crate::netstack::udp::{BindUdp, Datagram, NetstackUdpSocket, UDP_SOCKET_PACKETS};
use crate::netstack::NetstackError;

/// A bound UDP socket and the driver's ends of its queues.
pub(in crate::netstack) struct UdpFlow {
    port: u16,
    /// Datagrams the application sends.
    outbound: mpsc::Receiver<Datagram>,
    /// A datagram taken from `outbound` that smoltcp had no room for yet.
    held: Option<Datagram>,
    /// Datagrams for the application.
    inbound: mpsc::Sender<Datagram>,
    dropped: Arc<AtomicU64>,
}

impl Driver {
    pub(super) fn bind_udp(&mut self, b: BindUdp) {
        let r = self.open_udp(b.port, b.queue);
        let _ = b.reply.send(r);
    }

    fn udp_port(&mut self, port: u16) -> Result<u16, NetstackError> {
        let taken = |d: &Driver, p: u16| d.udp.values().any(|f| f.port == p);
        if port != 0 {
            return if taken(self, port) {
                Err(NetstackError::PortInUse(port))
            } else {
                Ok(port)
            };
        }
        let span = u64::from(u16::MAX - EPHEMERAL_START) + 1;
        for _ in 0..64 {
            let p = EPHEMERAL_START + (self.next_rand() % span) as u16;
            if !taken(self, p) {
                return Ok(p);
            }
        }
        Err(NetstackError::TooManyFlows(self.cfg.max_flows))
    }

    fn open_udp(&mut self, port: u16, queue: usize) -> Result<NetstackUdpSocket, NetstackError> {
        if self.socket_count() >= self.cfg.max_flows {
            return Err(NetstackError::TooManyFlows(self.cfg.max_flows));
        }
        let port = self.udp_port(port)?;
        let mtu = usize::from(self.cfg.mtu);
        let buffer = || {
            udp::PacketBuffer::new(
                vec![udp::PacketMetadata::EMPTY; UDP_SOCKET_PACKETS],
                vec![0u8; UDP_SOCKET_PACKETS * mtu],
            )
        };
        let mut s = udp::Socket::new(buffer(), buffer());
        let ep = IpListenEndpoint {
            addr: Some(IpAddress::Ipv6(self.cfg.address)),
            port,
        };
        s.bind(ep)
            .map_err(|e| NetstackError::Config(format!("cannot bind UDP port {port}: {e}")))?;
        let h = self.sockets.add(s);
        let (out_tx, out_rx) = mpsc::channel(queue);
        let (in_tx, in_rx) = mpsc::channel(queue);
        let dropped = Arc::new(AtomicU64::new(0));
        self.udp.insert(
            h,
            UdpFlow {
                port,
                outbound: out_rx,
                held: None,
                inbound: in_tx,
                dropped: dropped.clone(),
            },
        );
        Ok(NetstackUdpSocket {
            local: SocketAddrV6::new(self.cfg.address, port, 0, 0),
            mtu: self.cfg.mtu,
            to_stack: out_tx,
            from_stack: in_rx,
            dropped,
        })
    }

    /// Moves datagrams both ways for every UDP socket; closes those whose application is gone.
    pub(super) fn service_udp(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        let mut closed = Vec::new();
        for (h, f) in self.udp.iter_mut() {
            let s = self.sockets.get_mut::<udp::Socket>(*h);
            progress |= deliver(s, f);
            let (moved, gone) = transmit(s, f, cx);
            progress |= moved;
            if gone || f.inbound.is_closed() {
                closed.push(*h);
            }
        }
        for h in closed {
            self.udp.remove(&h);
            self.sockets.remove(h);
            progress = true;
        }
        progress
    }
}

/// Received datagrams to the application; a full queue drops (and counts) them.
fn deliver(s: &mut udp::Socket<'_>, f: &mut UdpFlow) -> bool {
    let mut progress = false;
    while let Ok((data, meta)) = s.recv() {
        progress = true;
        let IpAddress::Ipv6(src) = meta.endpoint.addr;
        let d = (
            data.to_vec(),
            SocketAddrV6::new(src, meta.endpoint.port, 0, 0),
        );
        if f.inbound.try_send(d).is_err() {
            f.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
    progress
}

/// Queued datagrams into smoltcp while it has room; whether any moved, and whether the
/// application dropped its socket.
fn transmit(s: &mut udp::Socket<'_>, f: &mut UdpFlow, cx: &mut Context<'_>) -> (bool, bool) {
    let mut progress = false;
    loop {
        let d = match f.held.take() {
            Some(d) => d,
            None => match f.outbound.poll_recv(cx) {
                Poll::Ready(Some(d)) => d,
                Poll::Ready(None) => return (progress, true),
                Poll::Pending => return (progress, false),
            },
        };
        let ep = IpEndpoint::new(IpAddress::Ipv6(*d.1.ip()), d.1.port());
        match s.send_slice(&d.0, ep) {
            Ok(()) => progress = true,
            Err(udp::SendError::BufferFull) => {
                f.held = Some(d);
                return (progress, false);
            }
            Err(udp::SendError::Unaddressable) => {
                f.dropped.fetch_add(1, Ordering::Relaxed);
                progress = true;
            }
        }
    }
}

impl Driver {
    /// Hands every UDP socket's received datagrams to its application.
    pub(super) fn drain_udp(&mut self) {
        for (h, f) in self.udp.iter_mut() {
            deliver(self.sockets.get_mut::<udp::Socket>(*h), f);
        }
    }

    /// Whether a UDP socket holds a datagram that smoltcp now has room for (after egress
    /// freed its buffer): another round should run.
    pub(super) fn udp_unblocked(&mut self) -> bool {
        self.udp
            .iter()
            .any(|(h, f)| f.held.is_some() && self.sockets.get::<udp::Socket>(*h).can_send())
    }
}
