//! One way to listen on and connect to overlay TCP ports, whichever data path runs.
//!
//! In TUN mode the kernel owns our overlay address, so plain tokio sockets bound to it are
//! overlay sockets. In userspace mode the [`Netstack`] owns it. Services (echo on 7, streams on
//! 1000, messages on 1001), the SOCKS5 proxy and the port exposer take an [`OverlayNet`] and run
//! unchanged in both modes.

use std::io;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::netstack::{Netstack, NetstackListener, NetstackStream, NetstackUdpSocket};

/// The overlay as seen by services: listen on our address, connect to a peer's.
#[derive(Clone, Debug)]
pub enum OverlayNet {
    /// TUN mode: kernel sockets on our overlay address.
    Kernel {
        /// Our overlay IPv6 address (assigned to the TUN interface).
        address: Ipv6Addr,
        /// The TUN interface: listeners are bound to it (SO_BINDTODEVICE), so only packets
        /// that came out of the tunnel (from trusted peers) reach overlay services, never a
        /// host on the LAN that routes our overlay address to our Ethernet interface.
        device: Option<String>,
    },
    /// Userspace mode: the smoltcp netstack.
    Userspace(Netstack),
}

impl OverlayNet {
    /// Our overlay address.
    pub fn address(&self) -> Ipv6Addr {
        match self {
            OverlayNet::Kernel { address, .. } => *address,
            OverlayNet::Userspace(n) => n.address(),
        }
    }

    /// Listens on `port` of our overlay address.
    pub async fn listen(&self, port: u16) -> io::Result<OverlayListener> {
        match self {
            OverlayNet::Kernel { address, device } => {
                // A TUN address just added can be briefly unusable (EADDRNOTAVAIL) until the
                // kernel finishes bringing it up: retry for a bounded time.
                let addr = SocketAddrV6::new(*address, port, 0, 0);
                let mut tries = 0;
                loop {
                    match kernel_listener(addr, device.as_deref()) {
                        Ok(l) => return Ok(OverlayListener::Kernel(l)),
                        Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable && tries < 50 => {
                            tries += 1;
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            OverlayNet::Userspace(n) => Ok(OverlayListener::Userspace(n.listen(port).await?)),
        }
    }

    /// Connects to a peer's overlay port. Errors carry the usual kinds (`ConnectionRefused`,
    /// `TimedOut`, ...); the kernel side has no timeout of its own, so callers bound it.
    pub async fn connect(&self, dst: SocketAddrV6) -> io::Result<OverlayStream> {
        match self {
            OverlayNet::Kernel { .. } => {
                let s = TcpStream::connect(SocketAddr::V6(dst)).await?;
                s.set_nodelay(true)?;
                Ok(OverlayStream::Kernel(s))
            }
            OverlayNet::Userspace(n) => Ok(OverlayStream::Userspace(n.connect(dst).await?)),
        }
    }
}

impl OverlayNet {
    /// Binds a UDP socket to `port` of our overlay address (0: an ephemeral port), with
    /// `queue` datagrams of room each way in userspace mode.
    pub async fn bind_udp(&self, port: u16, queue: usize) -> io::Result<OverlayUdp> {
        match self {
            OverlayNet::Kernel { address, device } => {
                let s = UdpSocket::bind(SocketAddr::V6(SocketAddrV6::new(*address, port, 0, 0)))
                    .await?;
                if let Some(d) = device {
                    s.bind_device(Some(d.as_bytes()))?;
                }
                Ok(OverlayUdp::Kernel(s))
            }
            OverlayNet::Userspace(n) => Ok(OverlayUdp::Userspace(n.bind_udp(port, queue).await?)),
        }
    }
}

/// A UDP socket on our overlay address, in either mode.
#[derive(Debug)]
pub enum OverlayUdp {
    /// A kernel socket.
    Kernel(UdpSocket),
    /// A netstack socket.
    Userspace(NetstackUdpSocket),
}

impl OverlayUdp {
    /// Our address and port.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            OverlayUdp::Kernel(s) => s.local_addr(),
            OverlayUdp::Userspace(s) => Ok(SocketAddr::V6(s.local_addr())),
        }
    }

    /// Sends one datagram to `dst`.
    pub async fn send_to(&self, data: &[u8], dst: SocketAddrV6) -> io::Result<()> {
        match self {
            OverlayUdp::Kernel(s) => s.send_to(data, SocketAddr::V6(dst)).await.map(|_| ()),
            OverlayUdp::Userspace(s) => Ok(s.send_to(data, dst).await?),
        }
    }

    /// The next datagram and its source.
    pub async fn recv_from(&mut self) -> io::Result<(Vec<u8>, SocketAddrV6)> {
        match self {
            OverlayUdp::Kernel(s) => {
                let mut buf = vec![0u8; 65536];
                loop {
                    let (n, from) = s.recv_from(&mut buf).await?;
                    if let SocketAddr::V6(from) = from {
                        buf.truncate(n);
                        return Ok((buf, from));
                    }
                }
            }
            OverlayUdp::Userspace(s) => s
                .recv_from()
                .await
                .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "the netstack stopped")),
        }
    }
}

/// A kernel listener on `addr`, bound to `device` when given.
fn kernel_listener(addr: SocketAddrV6, device: Option<&str>) -> io::Result<TcpListener> {
    let sock = tokio::net::TcpSocket::new_v6()?;
    sock.set_reuseaddr(true)?;
    if let Some(d) = device {
        sock.bind_device(Some(d.as_bytes()))?;
    }
    sock.bind(SocketAddr::V6(addr))?;
    sock.listen(1024)
}

/// A listening overlay port.
#[derive(Debug)]
pub enum OverlayListener {
    /// A kernel listener.
    Kernel(TcpListener),
    /// A netstack listener.
    Userspace(NetstackListener),
}

impl OverlayListener {
    /// Waits for the next connection.
    pub async fn accept(&mut self) -> io::Result<OverlayStream> {
        match self {
            OverlayListener::Kernel(l) => {
                let (s, _) = l.accept().await?;
                s.set_nodelay(true)?;
                Ok(OverlayStream::Kernel(s))
            }
            OverlayListener::Userspace(l) => Ok(OverlayStream::Userspace(l.accept().await?)),
        }
    }

    /// The listened address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            OverlayListener::Kernel(l) => l.local_addr(),
            OverlayListener::Userspace(l) => Ok(SocketAddr::V6(l.local_addr())),
        }
    }
}

/// A TCP connection over the overlay.
#[derive(Debug)]
pub enum OverlayStream {
    /// A kernel socket.
    Kernel(TcpStream),
    /// A netstack flow.
    Userspace(NetstackStream),
}

impl OverlayStream {
    /// Our end.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            OverlayStream::Kernel(s) => s.local_addr(),
            OverlayStream::Userspace(s) => Ok(SocketAddr::V6(s.local_addr())),
        }
    }

    /// The peer's end.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        match self {
            OverlayStream::Kernel(s) => s.peer_addr(),
            OverlayStream::Userspace(s) => Ok(SocketAddr::V6(s.peer_addr())),
        }
    }

    /// Joins this connection to a local socket until both directions end: the peer first gets
    /// `initial`, then what `local` sends, and `local` gets what the peer sends. In userspace
    /// mode the netstack moves the bytes itself ([`NetstackStream::splice`]); in TUN mode a
    /// copy loop with `buffer`-byte buffers does.
    pub async fn splice(self, local: TcpStream, initial: Vec<u8>, buffer: usize) -> io::Result<()> {
        match self {
            OverlayStream::Userspace(s) => s.splice(local, initial, buffer).await,
            OverlayStream::Kernel(mut s) => {
                let mut local = local;
                if !initial.is_empty() {
                    tokio::io::AsyncWriteExt::write_all(&mut s, &initial).await?;
                }
                let n = buffer.max(4096);
                tokio::io::copy_bidirectional_with_sizes(&mut local, &mut s, n, n).await?;
                Ok(())
            }
        }
    }
}

impl AsyncRead for OverlayStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            OverlayStream::Kernel(s) => Pin::new(s).poll_read(cx, buf),
            OverlayStream::Userspace(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for OverlayStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            OverlayStream::Kernel(s) => Pin::new(s).poll_write(cx, buf),
            OverlayStream::Userspace(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            OverlayStream::Kernel(s) => Pin::new(s).poll_flush(cx),
            OverlayStream::Userspace(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            OverlayStream::Kernel(s) => Pin::new(s).poll_shutdown(cx),
            OverlayStream::Userspace(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn the_kernel_side_listens_and_connects_with_plain_sockets() {
        let net = OverlayNet::Kernel {
            address: Ipv6Addr::LOCALHOST,
            device: None,
        };
        let mut l = match net.listen(0).await {
            Ok(l) => l,
            // A sandbox without IPv6 loopback: nothing to test here.
            Err(_) => return,
        };
        let port = l.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let mut s = l.accept().await.unwrap();
            let mut b = [0u8; 4];
            s.read_exact(&mut b).await.unwrap();
            s.write_all(&b).await.unwrap();
        });
        let mut c = net
            .connect(SocketAddrV6::new(Ipv6Addr::LOCALHOST, port, 0, 0))
            .await
            .unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut b = [0u8; 4];
        c.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"ping");
        server.await.unwrap();
    }
}
