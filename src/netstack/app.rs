//! The application end of a flow, as the driver sees it: the driver's half of a tokio pipe
//! (the application holds a [`NetstackStream`](super::NetstackStream)), or a local TCP socket
//! spliced straight to the flow ([`NetstackStream::splice`](super::NetstackStream::splice)).
//!
//! A spliced socket saves two copies per byte and a task hop each way: the driver moves bytes
//! between smoltcp's buffers and the kernel socket itself, with no pipe and no copy task in
//! between. That is the SOCKS5 proxy's and the port exposer's whole job, so it is their path.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// A local socket that replaced a flow's pipe.
pub(super) struct Spliced {
    pub(super) tcp: TcpStream,
    /// Bytes for the peer that come before the socket's own (the application wrote them to
    /// its stream before it spliced it).
    pub(super) to_net: Vec<u8>,
    pub(super) to_net_at: usize,
    /// Bytes from the peer that the driver had written to the pipe and the application had not
    /// read: the socket gets them first.
    pub(super) to_app: Vec<u8>,
    pub(super) to_app_at: usize,
    /// Dropped with the flow: tells the splicing task that the connection is over.
    pub(super) _done: oneshot::Sender<()>,
}

/// Where a flow's bytes come from and go to on our side.
pub(super) enum AppEnd {
    /// The driver's end of the pipe to a [`NetstackStream`](super::NetstackStream).
    Pipe(DuplexStream),
    /// A local TCP socket spliced to the flow.
    Spliced(Box<Spliced>),
}

impl AppEnd {
    /// Writes the bytes held back for the application; `Ready(Ok)` once there are none left.
    pub(super) fn poll_flush_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let AppEnd::Spliced(s) = self else {
            return Poll::Ready(Ok(()));
        };
        while s.to_app_at < s.to_app.len() {
            match Pin::new(&mut s.tcp).poll_write(cx, &s.to_app[s.to_app_at..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => s.to_app_at += n,
                other => return other.map_ok(|_| ()),
            }
        }
        if !s.to_app.is_empty() {
            s.to_app = Vec::new();
            s.to_app_at = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for AppEnd {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AppEnd::Pipe(p) => Pin::new(p).poll_read(cx, buf),
            AppEnd::Spliced(s) => {
                if s.to_net_at < s.to_net.len() {
                    let n = buf.remaining().min(s.to_net.len() - s.to_net_at);
                    buf.put_slice(&s.to_net[s.to_net_at..s.to_net_at + n]);
                    s.to_net_at += n;
                    if s.to_net_at == s.to_net.len() {
                        s.to_net = Vec::new();
                        s.to_net_at = 0;
                    }
                    return Poll::Ready(Ok(()));
                }
                Pin::new(&mut s.tcp).poll_read(cx, buf)
            }
        }
    }
}

impl AsyncWrite for AppEnd {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Poll::Ready(Err(e)) = self.poll_flush_held(cx) {
            return Poll::Ready(Err(e));
        }
        match self.get_mut() {
            AppEnd::Pipe(p) => Pin::new(p).poll_write(cx, buf),
            AppEnd::Spliced(s) if s.to_app_at < s.to_app.len() => Poll::Pending,
            AppEnd::Spliced(s) => Pin::new(&mut s.tcp).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AppEnd::Pipe(p) => Pin::new(p).poll_flush(cx),
            AppEnd::Spliced(s) => Pin::new(&mut s.tcp).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The held bytes go out before the end of the stream.
        match self.poll_flush_held(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        match self.get_mut() {
            AppEnd::Pipe(p) => Pin::new(p).poll_shutdown(cx),
            AppEnd::Spliced(s) => Pin::new(&mut s.tcp).poll_shutdown(cx),
        }
    }
}
