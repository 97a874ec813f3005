//! The one UDP socket of the data plane: big buffers, GRO on receive, GSO on send (quinn-udp).

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};

/// Socket buffer size asked for (SO_RCVBUFFORCE/SO_SNDBUFFORCE when root, else capped by
/// `net.core.rmem_max`/`wmem_max`).
const SOCKET_BUFFER: usize = 8 << 20;

/// The data plane's UDP socket.
pub(crate) struct Udp {
    socket: UdpSocket,
    state: UdpSocketState,
    v6: bool,
    /// Registries reached over a stream transport instead (issue 14).
    pub(crate) divert: std::sync::Arc<super::divert::Diversion>,
}

impl Udp {
    /// Binds `[::]:port` (dual stack), or `0.0.0.0:port` where IPv6 is off.
    pub(crate) fn bind(port: u16) -> io::Result<Udp> {
        let (socket, v6) = match bind_dual_stack(port) {
            Ok(s) => (s, true),
            Err(_) => (UdpSocket::bind(("0.0.0.0", port))?, false),
        };
        let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
        set_buffer(&socket, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF);
        set_buffer(&socket, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF);
        let divert = std::sync::Arc::new(super::divert::Diversion::new()?);
        Ok(Udp {
            socket,
            state,
            v6,
            divert,
        })
    }

    pub(crate) fn local_port(&self) -> u16 {
        self.socket.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// How many equal segments one send may carry (1 = no GSO).
    pub(crate) fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// Receives a batch (recvmmsg, with GRO-coalesced datagrams split by `meta.stride`).
    /// `Err(WouldBlock)` when nothing is waiting.
    /// Datagrams a stream transport received from a diverted registry come first (at most
    /// half the batch), as if they had arrived over UDP from it.
    pub(crate) fn recv(
        &self,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> io::Result<usize> {
        let half = bufs.len().div_ceil(2);
        let k = self.divert.recv(&mut bufs[..half], &mut meta[..half]);
        match self.state.recv(
            UdpSockRef::from(&self.socket),
            &mut bufs[k..],
            &mut meta[k..],
        ) {
            Ok(n) => {
                self.divert.note_received(&meta[k..k + n], &bufs[k..k + n]);
                Ok(k + n)
            }
            Err(e) if k > 0 && e.kind() == io::ErrorKind::WouldBlock => Ok(k),
            Err(e) => Err(e),
        }
    }

    /// Waits until the socket (or the stream transport's queue) is readable or `timeout`
    /// passes.
    pub(crate) fn wait_readable(&self, timeout: Duration) {
        let mut p = [
            libc::pollfd {
                fd: self.socket.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.divert.fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: two valid pollfds.
        unsafe { libc::poll(p.as_mut_ptr(), 2, ms) };
    }

    /// Sends over UDP even to a diverted registry (the transport's UDP probes).
    pub(crate) fn send_undiverted(&self, dst: SocketAddr, contents: &[u8]) -> io::Result<()> {
        self.send_udp(dst, contents, None)
    }

    /// Sends `contents` to `dst`; with `segment_size`, as equal-sized datagrams in one syscall
    /// (UDP GSO; the last may be shorter). Waits briefly when the send buffer is full.
    pub(crate) fn send(
        &self,
        dst: SocketAddr,
        contents: &[u8],
        segment_size: Option<usize>,
    ) -> io::Result<()> {
        if self.divert.is_diverted(dst) {
            self.divert.send(dst, contents, segment_size);
            return Ok(());
        }
        self.divert.note_sent(dst, contents);
        self.send_udp(dst, contents, segment_size)
    }

    fn send_udp(
        &self,
        dst: SocketAddr,
        contents: &[u8],
        segment_size: Option<usize>,
    ) -> io::Result<()> {
        let destination = match (self.v6, dst) {
            (true, SocketAddr::V4(v4)) => {
                SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
            }
            _ => dst,
        };
        let t = Transmit {
            destination,
            ecn: None,
            contents,
            segment_size,
            src_ip: None,
        };
        let mut tries = 0;
        loop {
            match self.state.try_send(UdpSockRef::from(&self.socket), &t) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && tries < 20 => {
                    tries += 1;
                    poll_fd(
                        self.socket.as_raw_fd(),
                        libc::POLLOUT,
                        Duration::from_millis(5),
                    );
                }
                r => return r,
            }
        }
    }
}

fn bind_dual_stack(port: u16) -> io::Result<UdpSocket> {
    let s = socket2::Socket::new(
        socket2::Domain::IPV6,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    s.set_only_v6(false)?;
    s.bind(&SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port).into())?;
    Ok(s.into())
}

fn set_buffer(socket: &UdpSocket, force: libc::c_int, plain: libc::c_int) {
    let v = SOCKET_BUFFER as libc::c_int;
    for opt in [force, plain] {
        // SAFETY: setsockopt with a valid fd and a pointer to a c_int of the given size.
        let r = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                &v as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            return;
        }
    }
}

/// poll(2) on one fd for `events`, at most `timeout`.
pub(crate) fn poll_fd(fd: std::os::fd::RawFd, events: libc::c_short, timeout: Duration) -> bool {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut p, 1, timeout.as_millis().min(i32::MAX as u128) as i32) };
    r > 0
}
