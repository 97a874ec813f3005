//! The application side: listeners and streams backed by the driver's flows.

use std::io;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

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
    /// The driver's command queue (for [`NetstackStream::splice`]); `None` once the stack's
    /// handles were all gone when the stream was made.
    pub(super) commands: Option<mpsc::Sender<Command>>,
}

/// A request to splice a local socket to a flow (`Command::Splice`).
pub(super) struct SpliceRequest {
    pub(super) stream: NetstackStream,
    pub(super) tcp: TcpStream,
    pub(super) initial: Vec<u8>,
    pub(super) reply: oneshot::Sender<SpliceOutcome>,
}

/// The driver's answer to a [`SpliceRequest`].
pub(super) enum SpliceOutcome {
    /// The driver moves the bytes now; the receiver ends when the connection does.
    Spliced(oneshot::Receiver<()>),
    /// Not possible (the flow is half closed or gone): the pieces come back.
    Refused(NetstackStream, TcpStream, Vec<u8>),
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

    /// Joins this connection to a local TCP socket until both directions have ended: the
    /// peer first gets `initial`, then whatever `tcp` sends; `tcp` gets what the peer sends.
    /// A half close passes through (a FIN becomes `shutdown(Write)` and back).
    ///
    /// The netstack's driver moves the bytes itself, between smoltcp's buffers and the socket
    /// (no pipe, no copy task: two copies and a task hop fewer per byte each way). Bytes already
    /// written to or received on this stream are kept, in order. When the flow cannot be handed
    /// over (already half closed), it falls back to a copy loop with `buffer`-byte buffers.
    pub async fn splice(self, tcp: TcpStream, initial: Vec<u8>, buffer: usize) -> io::Result<()> {
        let Some(commands) = self.commands.clone() else {
            return copy_splice(self, tcp, initial, buffer).await;
        };
        let (reply, outcome) = oneshot::channel();
        let request = SpliceRequest {
            stream: self,
            tcp,
            initial,
            reply,
        };
        if let Err(mpsc::error::SendError(c)) = commands.send(Command::Splice(request)).await {
            return match c {
                Command::Splice(r) => copy_splice(r.stream, r.tcp, r.initial, buffer).await,
                _ => Err(io::ErrorKind::BrokenPipe.into()),
            };
        }
        match outcome.await {
            Ok(SpliceOutcome::Spliced(done)) => {
                let _ = done.await;
                Ok(())
            }
            Ok(SpliceOutcome::Refused(s, t, i)) => copy_splice(s, t, i, buffer).await,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the netstack stopped",
            )),
        }
    }
}

/// The splice as a copy loop through the stream's pipe.
async fn copy_splice(
    mut stream: NetstackStream,
    mut tcp: TcpStream,
    initial: Vec<u8>,
    buffer: usize,
) -> io::Result<()> {
    use tokio::io::AsyncWriteExt;
    if !initial.is_empty() {
        stream.write_all(&initial).await?;
    }
    let n = buffer.max(4096);
    tokio::io::copy_bidirectional_with_sizes(&mut tcp, &mut stream, n, n).await?;
    Ok(())
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
