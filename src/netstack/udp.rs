//! UDP on the netstack: a bound smoltcp UDP socket with tokio channels on the application side.
//!
//! [`Netstack::bind_udp`] returns a [`NetstackUdpSocket`] (port 0 picks an ephemeral port).
//! Datagrams go out with [`NetstackUdpSocket::send_to`] (waits for queue room: back-pressure)
//! or [`NetstackUdpSocket::try_send_to`] (drops and counts when the queue is full, as a NIC
//! would) and come in with [`NetstackUdpSocket::recv_from`]. Each direction queues at most the
//! `queue` datagrams given at bind time, besides smoltcp's own buffers of
//! [`UDP_SOCKET_PACKETS`] packets; a datagram arriving while the application's queue is full
//! is dropped and counted ([`NetstackUdpSocket::dropped`]). Payloads are at most
//! [`max_payload`] bytes (the MTU less the IPv6 and UDP headers: the stack does not fragment).
//! Dropping the socket closes it and frees its port.
//!
//! The API mirrors tokio's `UdpSocket` with owned buffers, so the SOCKS5 relay, exposed UDP
//! ports and the CLI's datagram verbs share it.

use std::net::SocketAddrV6;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{Command, Netstack, NetstackError};

/// One datagram and the far end's address (destination going out, source coming in).
pub type Datagram = (Vec<u8>, SocketAddrV6);

/// Packets smoltcp buffers per UDP socket, each way.
pub const UDP_SOCKET_PACKETS: usize = 64;

/// The largest UDP payload one packet of `mtu` carries (IPv6 header 40, UDP header 8).
pub fn max_payload(mtu: u16) -> usize {
    usize::from(mtu).saturating_sub(48)
}

/// What the driver needs to open a UDP socket.
pub(super) struct BindUdp {
    pub(super) port: u16,
    pub(super) queue: usize,
    pub(super) reply: oneshot::Sender<Result<NetstackUdpSocket, NetstackError>>,
}

/// A UDP socket on our overlay address. Dropping it closes the socket.
#[derive(Debug)]
pub struct NetstackUdpSocket {
    pub(super) local: SocketAddrV6,
    pub(super) mtu: u16,
    pub(super) to_stack: mpsc::Sender<Datagram>,
    pub(super) from_stack: mpsc::Receiver<Datagram>,
    pub(super) dropped: Arc<AtomicU64>,
}

impl Netstack {
    /// Binds a UDP socket to `port` of our overlay address (0: an ephemeral port), with
    /// `queue` datagrams of room each way (at least 1).
    pub async fn bind_udp(
        &self,
        port: u16,
        queue: usize,
    ) -> Result<NetstackUdpSocket, NetstackError> {
        let (reply, rx) = oneshot::channel();
        let bind = BindUdp {
            port,
            queue: queue.max(1),
            reply,
        };
        self.commands
            .send(Command::BindUdp(bind))
            .await
            .map_err(|_| NetstackError::Stopped)?;
        rx.await.map_err(|_| NetstackError::Stopped)?
    }
}

impl NetstackUdpSocket {
    /// Our address and port.
    pub fn local_addr(&self) -> SocketAddrV6 {
        self.local
    }

    /// The largest payload [`send_to`](Self::send_to) takes.
    pub fn max_payload(&self) -> usize {
        max_payload(self.mtu)
    }

    fn check(&self, data: &[u8], dst: SocketAddrV6) -> Result<(), NetstackError> {
        if dst.port() == 0 {
            return Err(NetstackError::PortZero(*dst.ip()));
        }
        if data.len() > self.max_payload() {
            return Err(NetstackError::DatagramTooLarge(
                data.len(),
                self.max_payload(),
            ));
        }
        Ok(())
    }

    /// Queues one datagram to `dst`, waiting while the queue is full.
    pub async fn send_to(&self, data: &[u8], dst: SocketAddrV6) -> Result<(), NetstackError> {
        self.check(data, dst)?;
        self.to_stack
            .send((data.to_vec(), dst))
            .await
            .map_err(|_| NetstackError::Stopped)
    }

    /// Queues one datagram to `dst`; `Ok(false)` when the queue is full (the datagram is
    /// dropped, and counted in [`dropped`](Self::dropped)).
    pub fn try_send_to(&self, data: Vec<u8>, dst: SocketAddrV6) -> Result<bool, NetstackError> {
        self.check(&data, dst)?;
        match self.to_stack.try_send((data, dst)) {
            Ok(()) => Ok(true),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                Ok(false)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(NetstackError::Stopped),
        }
    }

    /// The next datagram and its source; `None` once the netstack stopped.
    pub async fn recv_from(&mut self) -> Option<Datagram> {
        self.from_stack.recv().await
    }

    /// Datagrams dropped because a queue was full (either way).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests;
