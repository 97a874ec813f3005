//! Exposed UDP ports: datagrams from peers to an overlay UDP port are forwarded to a local
//! `HOST:PORT`, each peer through a local socket of its own (so the target's replies find
//! their way back to that peer), as a NAT would. A peer silent for `idle` is forgotten; at
//! most `max_peers` are served at once (the least recently active is dropped for a new one).
//! Only trusted peers reach the overlay port (the data plane drops everyone else's packets).

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::restricted_ip;
use crate::netstack::NetstackUdpSocket;
use crate::userspace::overlay_net::OverlayNet;

/// Limits of one exposed UDP port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpExposeLimits {
    /// Peers served at once.
    pub max_peers: usize,
    /// A peer silent this long is forgotten.
    pub idle: Duration,
    /// Datagrams queued each way on the netstack socket.
    pub queue: usize,
}

impl Default for UdpExposeLimits {
    fn default() -> Self {
        UdpExposeLimits {
            max_peers: 256,
            idle: Duration::from_secs(120),
            queue: 256,
        }
    }
}

/// The overlay side of an exposed UDP port in either mode.
enum OverlayUdp {
    Kernel(UdpSocket),
    Userspace(NetstackUdpSocket),
}

impl OverlayUdp {
    async fn bind(net: &OverlayNet, port: u16, queue: usize) -> io::Result<Self> {
        match net {
            OverlayNet::Userspace(stack) => Ok(OverlayUdp::Userspace(
                stack.bind_udp(port, queue).await.map_err(io::Error::from)?,
            )),
            OverlayNet::Kernel { address, device } => {
                let s = socket2::Socket::new(
                    socket2::Domain::IPV6,
                    socket2::Type::DGRAM,
                    Some(socket2::Protocol::UDP),
                )?;
                if let Some(d) = device {
                    s.bind_device(Some(d.as_bytes()))?;
                }
                s.set_nonblocking(true)?;
                s.bind(&SocketAddr::from((*address, port)).into())?;
                Ok(OverlayUdp::Kernel(UdpSocket::from_std(s.into())?))
            }
        }
    }

    async fn recv_from(&mut self, buf: &mut [u8]) -> io::Result<(Vec<u8>, SocketAddrV6)> {
        match self {
            OverlayUdp::Userspace(s) => s
                .recv_from()
                .await
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "the netstack stopped")),
            OverlayUdp::Kernel(s) => {
                let (n, from) = s.recv_from(buf).await?;
                let SocketAddr::V6(from) = from else {
                    return Err(io::Error::other("an IPv4 source on the overlay"));
                };
                Ok((buf[..n].to_vec(), from))
            }
        }
    }

    async fn send_to(&self, data: &[u8], to: SocketAddrV6) -> io::Result<()> {
        match self {
            OverlayUdp::Userspace(s) => s.send_to(data, to).await.map_err(io::Error::from),
            OverlayUdp::Kernel(s) => s.send_to(data, SocketAddr::V6(to)).await.map(|_| ()),
        }
    }
}

/// One peer's local socket and the task that carries the target's replies back.
struct Session {
    local: Arc<UdpSocket>,
    last: Instant,
    replies: JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.replies.abort();
    }
}

/// Binds overlay UDP `port` and returns the task that forwards it to `to`.
pub(super) async fn start(
    net: &OverlayNet,
    port: u16,
    to: Arc<str>,
    allow_link_local: bool,
    limits: UdpExposeLimits,
) -> io::Result<JoinHandle<()>> {
    let overlay = OverlayUdp::bind(net, port, limits.queue).await?;
    Ok(tokio::spawn(async move {
        let mut f = Forwarder {
            overlay,
            to,
            allow_link_local,
            limits,
            sessions: HashMap::new(),
        };
        f.run(port).await;
    }))
}

struct Forwarder {
    overlay: OverlayUdp,
    to: Arc<str>,
    allow_link_local: bool,
    limits: UdpExposeLimits,
    sessions: HashMap<SocketAddrV6, Session>,
}

impl Forwarder {
    async fn run(&mut self, port: u16) {
        let (reply_tx, mut reply_rx) = mpsc::channel::<(Vec<u8>, SocketAddrV6)>(256);
        let mut buf = vec![0u8; 65536];
        let mut sweep = tokio::time::interval(self.limits.idle / 4 + Duration::from_millis(1));
        loop {
            tokio::select! {
                r = self.overlay.recv_from(&mut buf) => match r {
                    Ok((data, peer)) => self.forward(&data, peer, &reply_tx).await,
                    Err(e) => {
                        tracing::warn!(port, error = %e, "exposed UDP port stopped");
                        return;
                    }
                },
                Some((data, peer)) = reply_rx.recv() => {
                    if let Err(e) = self.overlay.send_to(&data, peer).await {
                        tracing::debug!(port, %peer, error = %e, "exposed UDP reply dropped");
                    }
                }
                _ = sweep.tick() => {
                    let idle = self.limits.idle;
                    self.sessions.retain(|_, s| s.last.elapsed() < idle);
                }
            }
        }
    }

    /// One datagram from `peer` to the target, through the peer's session.
    async fn forward(
        &mut self,
        data: &[u8],
        peer: SocketAddrV6,
        replies: &mpsc::Sender<(Vec<u8>, SocketAddrV6)>,
    ) {
        if !self.sessions.contains_key(&peer) {
            match self.open(peer, replies.clone()).await {
                Ok(s) => {
                    self.make_room();
                    self.sessions.insert(peer, s);
                }
                Err(e) => {
                    tracing::debug!(to = %self.to, error = %e, "exposed UDP target unreachable");
                    return;
                }
            }
        }
        let Some(s) = self.sessions.get_mut(&peer) else {
            return;
        };
        s.last = Instant::now();
        let _ = s.local.send(data).await;
    }

    fn make_room(&mut self) {
        while self.sessions.len() >= self.limits.max_peers.max(1) {
            let oldest = self
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.last)
                .map(|(p, _)| *p);
            match oldest {
                Some(p) => self.sessions.remove(&p),
                None => break,
            };
        }
    }

    /// A local socket connected to the target for `peer`, and its reply task.
    async fn open(
        &self,
        peer: SocketAddrV6,
        replies: mpsc::Sender<(Vec<u8>, SocketAddrV6)>,
    ) -> io::Result<Session> {
        let target = tokio::net::lookup_host(&*self.to)
            .await?
            .find(|a| self.allow_link_local || restricted_ip(a.ip()).is_none())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "{} resolves only to link-local or metadata addresses",
                        self.to
                    ),
                )
            })?;
        let any: SocketAddr = if target.is_ipv4() {
            "0.0.0.0:0".parse().expect("literal")
        } else {
            "[::]:0".parse().expect("literal")
        };
        let local = Arc::new(UdpSocket::bind(any).await?);
        local.connect(target).await?;
        let reader = local.clone();
        let replies = tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = reader.recv(&mut buf).await {
                if replies.send((buf[..n].to_vec(), peer)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Session {
            local,
            last: Instant::now(),
            replies,
        })
    }
}
