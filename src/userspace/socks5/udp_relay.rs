//! UDP ASSOCIATE (RFC 1928 §7): the relay between a SOCKS5 client's UDP socket and a UDP
//! socket of the netstack, one pair per association.
//!
//! The association lives as long as its TCP control connection: when the client closes it
//! (or it fails), both sockets close. Only the control connection's host may use the relay
//! port: a datagram from another address is dropped; when the request names a port (DST.PORT
//! ≠ 0) only that port may, otherwise the first datagram fixes it. Each datagram's target goes
//! through the rules of CONNECT (an overlay address or a peer's name, a trusted peer only); as
//! UDP has no reply channel, a datagram CONNECT would refuse is dropped and counted under the
//! reply code CONNECT would have sent. Fragments (FRAG ≠ 0) are dropped and counted. Memory is
//! bounded: at most `max_associations` at once (one more is refused with 0x01), `queue`
//! datagrams each way per association, and a name cache of [`NAME_CACHE`] entries.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Semaphore;

use super::server::Resolver;
use super::udp_header::{encode_udp_header, parse_udp_header, REPLY_HEADER_LEN};
use super::wire::{classify, encode_reply, Destination, Reply, Target};
use crate::mapping::{Hostname, NetworkPrefix};
use crate::netstack::{Netstack, NetstackError, NetstackUdpSocket};

/// Names one association remembers (answers and misses), so a stream of datagrams to a name
/// asks the resolver once.
pub const NAME_CACHE: usize = 64;

/// Settings of the UDP relay.
#[derive(Debug, Clone, PartialEq)]
pub struct UdpRelayConfig {
    /// Associations open at once; one more is refused (reply 0x01).
    pub max_associations: usize,
    /// Datagrams queued each way per association.
    pub queue: usize,
}

impl Default for UdpRelayConfig {
    fn default() -> Self {
        UdpRelayConfig {
            max_associations: 64,
            queue: 256,
        }
    }
}

/// What the relay moved and dropped, all associations together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpRelayStats {
    /// Associations opened.
    pub associations: u64,
    /// Associations refused (the limit).
    pub refused: u64,
    /// Datagrams relayed to peers.
    pub to_peers: u64,
    /// Datagrams relayed back to clients.
    pub to_clients: u64,
    /// Dropped: FRAG ≠ 0.
    pub fragments: u64,
    /// Dropped: a header that does not parse, or a payload over one packet.
    pub malformed: u64,
    /// Dropped: from an address other than the client's.
    pub foreign: u64,
    /// Dropped: a target CONNECT would refuse (not trusted, unknown name, outside the overlay).
    pub not_allowed: u64,
    /// Dropped: a queue was full.
    pub full: u64,
}

#[derive(Debug, Default)]
struct Counters {
    associations: AtomicU64,
    refused: AtomicU64,
    to_peers: AtomicU64,
    to_clients: AtomicU64,
    fragments: AtomicU64,
    malformed: AtomicU64,
    foreign: AtomicU64,
    not_allowed: AtomicU64,
    full: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The relay's shared state: the association limit and the counters.
#[derive(Debug)]
pub struct UdpRelay {
    cfg: UdpRelayConfig,
    slots: Arc<Semaphore>,
    counters: Counters,
}

impl UdpRelay {
    /// A relay with `cfg`'s limits.
    pub fn new(cfg: UdpRelayConfig) -> Self {
        UdpRelay {
            slots: Arc::new(Semaphore::new(cfg.max_associations.max(1))),
            cfg,
            counters: Counters::default(),
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> UdpRelayStats {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        UdpRelayStats {
            associations: l(&c.associations),
            refused: l(&c.refused),
            to_peers: l(&c.to_peers),
            to_clients: l(&c.to_clients),
            fragments: l(&c.fragments),
            malformed: l(&c.malformed),
            foreign: l(&c.foreign),
            not_allowed: l(&c.not_allowed),
            full: l(&c.full),
        }
    }
}

/// What an association needs from the proxy.
pub(super) struct Context<'a> {
    pub(super) stack: Option<&'a Netstack>,
    pub(super) network: NetworkPrefix,
    pub(super) resolver: &'a dyn Resolver,
    pub(super) relay: &'a UdpRelay,
}

/// Serves one UDP ASSOCIATE request on its control connection: replies, then relays until
/// the control connection ends. `Err` carries the refusal sent.
pub(super) async fn associate(
    control: &mut TcpStream,
    expected: &Target,
    cx: Context<'_>,
) -> std::io::Result<Result<(), Reply>> {
    let (local, overlay, _slot) = match open(control, &cx).await {
        Ok(parts) => parts,
        Err(reply) => {
            control.write_all(&encode_reply(reply, None)).await?;
            return Ok(Err(reply));
        }
    };
    let bound = local.local_addr()?;
    control
        .write_all(&encode_reply(Reply::Succeeded, Some(bound)))
        .await?;
    bump(&cx.relay.counters.associations);
    let client_ip = control.peer_addr()?.ip();
    let fixed_port = match expected {
        Target::Ip(a) if a.port() != 0 => Some(a.port()),
        Target::Domain(_, p) if *p != 0 => Some(*p),
        _ => None,
    };
    let mut a = Association {
        cx,
        local,
        overlay,
        client_ip,
        client: fixed_port.map(|p| SocketAddr::new(client_ip, p)),
        names: HashMap::new(),
    };
    a.run(control).await;
    Ok(Ok(()))
}

type Opened = (
    UdpSocket,
    NetstackUdpSocket,
    tokio::sync::OwnedSemaphorePermit,
);

/// The association's two sockets and its slot, or the reply that refuses it.
async fn open(control: &TcpStream, cx: &Context<'_>) -> Result<Opened, Reply> {
    let Some(stack) = cx.stack else {
        return Err(Reply::CommandNotSupported);
    };
    let Ok(slot) = cx.relay.slots.clone().try_acquire_owned() else {
        bump(&cx.relay.counters.refused);
        return Err(Reply::GeneralFailure);
    };
    let ip = control
        .local_addr()
        .map_err(|_| Reply::GeneralFailure)?
        .ip();
    let local = bind_local(SocketAddr::new(ip, 0)).map_err(|_| Reply::GeneralFailure)?;
    let overlay = stack
        .bind_udp(0, cx.relay.cfg.queue)
        .await
        .map_err(|_| Reply::GeneralFailure)?;
    Ok((local, overlay, slot))
}

/// Receive buffer of the relay's client-side socket: room for a burst of datagrams while the
/// relay waits for queue room on the overlay side.
const CLIENT_RCVBUF: usize = 2 << 20;

/// The relay's client-side socket, with a larger receive buffer (best effort).
fn bind_local(at: SocketAddr) -> std::io::Result<UdpSocket> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(at),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    let _ = s.set_recv_buffer_size(CLIENT_RCVBUF);
    s.set_nonblocking(true)?;
    s.bind(&at.into())?;
    UdpSocket::from_std(s.into())
}

struct Association<'a> {
    cx: Context<'a>,
    local: UdpSocket,
    overlay: NetstackUdpSocket,
    client_ip: IpAddr,
    client: Option<SocketAddr>,
    names: HashMap<String, Option<Ipv6Addr>>,
}

impl Association<'_> {
    async fn run(&mut self, control: &mut TcpStream) {
        let mut ctl = [0u8; 256];
        let mut buf = vec![0u8; 65536];
        loop {
            tokio::select! {
                r = control.read(&mut ctl) => match r {
                    // The association ends with its control connection.
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
                r = self.local.recv_from(&mut buf) => match r {
                    Ok((n, from)) => {
                        let d = buf[..n].to_vec();
                        self.relay_out(&d, from).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "SOCKS5 UDP: receive failed"),
                },
                d = self.overlay.recv_from() => match d {
                    Some((data, src)) => self.relay_back(&data, src).await,
                    None => return,
                },
            }
        }
    }

    /// One datagram from the client: check, parse, resolve, relay.
    async fn relay_out(&mut self, d: &[u8], from: SocketAddr) {
        let c = &self.cx.relay.counters;
        if from.ip() != self.client_ip || self.client.is_some_and(|a| a != from) {
            return bump(&c.foreign);
        }
        self.client = Some(from);
        let Ok(h) = parse_udp_header(d) else {
            return bump(&c.malformed);
        };
        if h.frag != 0 {
            return bump(&c.fragments);
        }
        let Some(dst) = self.destination(&h.target).await else {
            return bump(&c.not_allowed);
        };
        // Waiting for queue room is back-pressure: the client's datagrams wait in the kernel.
        match self.overlay.send_to(&d[h.len..], dst).await {
            Ok(()) => bump(&c.to_peers),
            Err(NetstackError::DatagramTooLarge(..)) | Err(NetstackError::PortZero(_)) => {
                bump(&c.malformed)
            }
            Err(_) => bump(&c.full),
        }
    }

    /// The overlay destination of `target` if CONNECT would allow it.
    async fn destination(&mut self, target: &Target) -> Option<SocketAddrV6> {
        let dst = match classify(target, &self.cx.network).ok()? {
            Destination::Addr(a) => a,
            Destination::Name(name, port) => {
                SocketAddrV6::new(self.resolve(&name).await?, port, 0, 0)
            }
        };
        self.cx.resolver.permits(*dst.ip()).then_some(dst)
    }

    async fn resolve(&mut self, name: &Hostname) -> Option<Ipv6Addr> {
        if let Some(r) = self.names.get(name.as_str()) {
            return *r;
        }
        let r = self.cx.resolver.resolve(name).await;
        if self.names.len() >= NAME_CACHE {
            self.names.clear();
        }
        self.names.insert(name.as_str().to_string(), r);
        r
    }

    /// One datagram from a peer, with its header, to the client (once its address is known).
    async fn relay_back(&mut self, data: &[u8], src: SocketAddrV6) {
        let Some(client) = self.client else {
            return bump(&self.cx.relay.counters.foreign);
        };
        let mut out = Vec::with_capacity(REPLY_HEADER_LEN + data.len());
        encode_udp_header(SocketAddr::V6(src), &mut out);
        out.extend_from_slice(data);
        match self.local.send_to(&out, client).await {
            Ok(_) => bump(&self.cx.relay.counters.to_clients),
            Err(_) => bump(&self.cx.relay.counters.full),
        }
    }
}
