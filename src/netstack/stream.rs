//! The application side: listeners and streams backed by the driver's flows.

use std::io;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::sync::mpsc;

use super::{Command, NetstackError};

/// Connections accepted on one overlay port. Dropping it stops listening.
pub struct NetstackListener {
    pub(super) port: u16,
    pub(super) id: u64,
    pub(super) address: Ipv6Addr,
    pub(super) accepted: mpsc::Receiver<NetstackStream>,
    pub(super) commands: mpsc::Sender<Command>,
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
    pub(super) io: DuplexStream,
    pub(super) local: SocketAddrV6,
    pub(super) peer: SocketAddrV6,
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
