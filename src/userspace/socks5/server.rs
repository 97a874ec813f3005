//! The tokio half of the SOCKS5 proxy: bind a listener, accept clients, run the handshake through
//! the parsers of `wire.rs`, resolve and check the destination, connect through the overlay and
//! splice the two connections.

use std::future::Future;
use std::io;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::credentials::Credentials;
use super::udp_relay::{UdpRelay, UdpRelayConfig};
use super::wire::{
    classify, encode_auth_status, encode_reply, parse_auth, parse_greeting, parse_request, Command,
    Destination, ParseError, Parsed, Reply, Request, MAX_AUTH_LEN, METHOD_NONE_ACCEPTABLE,
    METHOD_USERNAME_PASSWORD, VERSION,
};
use crate::mapping::{Hostname, NetworkPrefix};
use crate::userspace::overlay_net::{OverlayNet, OverlayStream};

/// The default listening address.
pub use crate::config::DEFAULT_SOCKS5_LISTEN as DEFAULT_LISTEN;

/// A boxed future, for the object-safe [`Resolver`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Names and policy, as the daemon knows them: which address a hostname has, and whether this
/// node may connect to an address (the peer is trusted).
pub trait Resolver: Send + Sync + 'static {
    /// The overlay address of `name`, or `None` if no peer has it.
    fn resolve<'a>(&'a self, name: &'a Hostname) -> BoxFuture<'a, Option<Ipv6Addr>>;

    /// Whether connections to `ip` are allowed.
    fn permits(&self, ip: Ipv6Addr) -> bool;
}

/// A fixed table of names and trusted addresses: for tests, and for a daemon that knows only
/// its configured peers.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    /// Hostname → address.
    pub names: std::collections::HashMap<Hostname, Ipv6Addr>,
    /// Addresses connections may go to.
    pub trusted: std::collections::HashSet<Ipv6Addr>,
}

impl StaticResolver {
    /// Adds a trusted peer, with its name if it has one.
    pub fn with_peer(mut self, name: Option<Hostname>, ip: Ipv6Addr) -> Self {
        if let Some(n) = name {
            self.names.insert(n, ip);
        }
        self.trusted.insert(ip);
        self
    }
}

impl Resolver for StaticResolver {
    fn resolve<'a>(&'a self, name: &'a Hostname) -> BoxFuture<'a, Option<Ipv6Addr>> {
        let r = self.names.get(name).copied();
        Box::pin(async move { r })
    }

    fn permits(&self, ip: Ipv6Addr) -> bool {
        self.trusted.contains(&ip)
    }
}

/// Settings of the proxy.
#[derive(Debug, Clone, PartialEq)]
pub struct Socks5Config {
    /// Where to listen; loopback unless `allow_non_loopback`.
    pub listen: SocketAddr,
    /// Allow a non-loopback listening address (anyone who reaches it can use our trust).
    pub allow_non_loopback: bool,
    /// How long a connection to a peer may take.
    pub connect_timeout: Duration,
    /// How long a client may take to send its greeting and request.
    pub handshake_timeout: Duration,
    /// The most clients served at once; more wait in the kernel's accept queue.
    pub max_clients: usize,
    /// Buffer of each direction of a spliced connection, in bytes.
    pub splice_buffer: usize,
    /// Require these RFC 1929 credentials (no-auth is then not offered); `None`: no auth.
    pub auth: Option<Credentials>,
    /// Limits of UDP ASSOCIATE.
    pub udp: UdpRelayConfig,
}

impl Default for Socks5Config {
    fn default() -> Self {
        Socks5Config {
            listen: DEFAULT_LISTEN,
            allow_non_loopback: false,
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            max_clients: 1024,
            splice_buffer: 256 * 1024,
            auth: None,
            udp: UdpRelayConfig::default(),
        }
    }
}

/// Errors from starting the proxy.
#[derive(Debug, thiserror::Error)]
pub enum Socks5Error {
    /// A listening address that is not loopback, without permission.
    #[error("refusing to serve SOCKS5 on {0}: it is not a loopback address; anyone who reaches it could use this node's trust (set socks5.allow_non_loopback = true to do it anyway)")]
    NonLoopback(SocketAddr),
    /// The address could not be bound.
    #[error("cannot listen for SOCKS5 on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
}

impl From<Socks5Error> for crate::error::PilotError {
    fn from(e: Socks5Error) -> Self {
        crate::error::PilotError::invalid(
            e.to_string(),
            "pick a free address with [socks5] listen in the config, or set [socks5] enabled = false",
        )
    }
}

struct Shared {
    cfg: Socks5Config,
    net: OverlayNet,
    network: NetworkPrefix,
    resolver: Arc<dyn Resolver>,
    udp: Arc<UdpRelay>,
}

/// The proxy: a bound listener; [`Socks5Server::run`] serves it.
pub struct Socks5Server {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl Socks5Server {
    /// Binds the listening socket. Connections go out through `net`; `network` tells overlay
    /// addresses from others; `resolver` names peers and says who may be reached.
    pub async fn bind(
        cfg: Socks5Config,
        net: OverlayNet,
        network: NetworkPrefix,
        resolver: Arc<dyn Resolver>,
    ) -> Result<Self, Socks5Error> {
        if !cfg.listen.ip().is_loopback() && !cfg.allow_non_loopback {
            return Err(Socks5Error::NonLoopback(cfg.listen));
        }
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| Socks5Error::Bind {
                addr: cfg.listen,
                source,
            })?;
        Ok(Socks5Server {
            listener,
            shared: Arc::new(Shared {
                udp: Arc::new(UdpRelay::new(cfg.udp.clone())),
                cfg,
                net,
                network,
                resolver,
            }),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The UDP relay's counters (they stay readable after [`run`](Self::run) takes the
    /// server).
    pub fn udp_relay(&self) -> Arc<UdpRelay> {
        self.shared.udp.clone()
    }

    /// Serves clients until the task is dropped or aborted.
    pub async fn run(self) {
        let permits = Arc::new(Semaphore::new(self.shared.cfg.max_clients.max(1)));
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let (client, from) = match self.listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, do not spin.
                    tracing::warn!(error = %e, "SOCKS5 accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let shared = self.shared.clone();
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(e) = serve(client, &shared).await {
                    tracing::debug!(client = %from, error = %e, "SOCKS5 session ended");
                }
            });
        }
    }
}

/// Reads until `parse` is done; returns the value and the bytes after it.
async fn read_message<T>(
    client: &mut TcpStream,
    buf: &mut Vec<u8>,
    parse: fn(&[u8]) -> Result<Parsed<T>, ParseError>,
) -> io::Result<Result<T, ParseError>> {
    // A request is at most 262 bytes, a greeting 257, a username/password message 513.
    const MAX: usize = MAX_AUTH_LEN;
    loop {
        match parse(buf) {
            Ok(Parsed::Done { value, len }) => {
                buf.drain(..len);
                return Ok(Ok(value));
            }
            Err(e) => return Ok(Err(e)),
            Ok(Parsed::Incomplete) => {}
        }
        if buf.len() >= MAX {
            return Ok(Err(ParseError::TooLong));
        }
        let mut chunk = [0u8; MAX];
        let n = client.read(&mut chunk[..MAX - buf.len()]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn reply_for(e: &io::Error) -> Reply {
    match e.kind() {
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset => {
            Reply::ConnectionRefused
        }
        io::ErrorKind::TimedOut => Reply::TtlExpired,
        io::ErrorKind::HostUnreachable => Reply::HostUnreachable,
        io::ErrorKind::NetworkUnreachable | io::ErrorKind::AddrNotAvailable => {
            Reply::NetworkUnreachable
        }
        io::ErrorKind::PermissionDenied => Reply::NotAllowed,
        _ => Reply::GeneralFailure,
    }
}

/// The session error type: I/O on the client socket, or the reply we refused with.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("client I/O: {0}")]
    Io(#[from] io::Error),
    #[error("malformed: {0}")]
    Parse(ParseError),
    #[error("refused with reply {0:?}")]
    Refused(Reply),
    #[error("handshake timed out")]
    HandshakeTimeout,
    #[error("wrong username or password")]
    BadCredentials,
}

/// Greeting, method choice and, when the proxy requires it, the RFC 1929 sub-negotiation.
async fn authenticate(
    client: &mut TcpStream,
    buf: &mut Vec<u8>,
    auth: Option<&Credentials>,
) -> Result<(), SessionError> {
    let greeting = read_message(client, buf, parse_greeting).await?;
    let method = greeting
        .map_err(SessionError::Parse)?
        .choose_method(auth.is_some());
    client.write_all(&[VERSION, method]).await?;
    if method == METHOD_NONE_ACCEPTABLE {
        return Err(SessionError::Refused(Reply::NotAllowed));
    }
    let Some(creds) = auth.filter(|_| method == METHOD_USERNAME_PASSWORD) else {
        return Ok(());
    };
    let req = match read_message(client, buf, parse_auth).await? {
        Ok(r) => r,
        Err(e) => {
            // RFC 1929: any non-zero status, then the server closes the connection.
            client.write_all(&encode_auth_status(false)).await?;
            return Err(SessionError::Parse(e));
        }
    };
    let ok = creds.accepts(&req);
    client.write_all(&encode_auth_status(ok)).await?;
    if ok {
        Ok(())
    } else {
        Err(SessionError::BadCredentials)
    }
}

async fn serve(mut client: TcpStream, shared: &Shared) -> Result<(), SessionError> {
    let _ = client.set_nodelay(true);
    let mut buf = Vec::with_capacity(512);
    let handshake = async {
        authenticate(&mut client, &mut buf, shared.cfg.auth.as_ref()).await?;
        match read_message(&mut client, &mut buf, parse_request).await? {
            Ok(r) => Ok(r),
            Err(e) => {
                if let Some(reply) = e.reply() {
                    client.write_all(&encode_reply(reply, None)).await?;
                }
                Err(SessionError::Parse(e))
            }
        }
    };
    let request = tokio::time::timeout(shared.cfg.handshake_timeout, handshake)
        .await
        .map_err(|_| SessionError::HandshakeTimeout)??;

    if request.command == Command::UdpAssociate {
        let cx = super::udp_relay::Context {
            stack: match &shared.net {
                OverlayNet::Userspace(s) => Some(s),
                OverlayNet::Kernel { .. } => None,
            },
            network: shared.network,
            resolver: shared.resolver.as_ref(),
            relay: &shared.udp,
        };
        return super::udp_relay::associate(&mut client, &request.target, cx)
            .await?
            .map_err(SessionError::Refused);
    }
    let outcome = open(&request, shared).await;
    let remote = match outcome {
        Ok(r) => r,
        Err(reply) => {
            client.write_all(&encode_reply(reply, None)).await?;
            return Err(SessionError::Refused(reply));
        }
    };
    let bound = remote.local_addr().ok();
    client
        .write_all(&encode_reply(Reply::Succeeded, bound))
        .await?;
    // The client may have sent data right behind its request (optimistic clients do): it
    // goes to the peer first.
    remote.splice(client, buf, shared.cfg.splice_buffer).await?;
    Ok(())
}

/// Checks, resolves and connects a request; the reply code on failure.
async fn open(request: &Request, shared: &Shared) -> Result<OverlayStream, Reply> {
    if request.command != Command::Connect {
        return Err(Reply::CommandNotSupported);
    }
    let dst = match classify(&request.target, &shared.network)? {
        Destination::Addr(a) => a,
        Destination::Name(name, port) => {
            let ip = shared
                .resolver
                .resolve(&name)
                .await
                .ok_or(Reply::HostUnreachable)?;
            SocketAddrV6::new(ip, port, 0, 0)
        }
    };
    if !shared.resolver.permits(*dst.ip()) {
        return Err(Reply::NotAllowed);
    }
    match tokio::time::timeout(shared.cfg.connect_timeout, shared.net.connect(dst)).await {
        Err(_) => Err(Reply::TtlExpired),
        Ok(Err(e)) => Err(reply_for(&e)),
        Ok(Ok(s)) => Ok(s),
    }
}

#[cfg(test)]
mod tests {
    use super::super::wire::METHOD_NO_AUTH;
    use super::*;

    /// A connected loopback pair: (our end, the client's end).
    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (ours, _) = l.accept().await.unwrap();
        (ours, client)
    }

    /// Runs `authenticate` against a client that sends `input`; what the server answered, and
    /// whether it let the client through.
    async fn auth_exchange(input: Vec<u8>, required: bool) -> (Vec<u8>, bool) {
        let (mut ours, mut client) = pair().await;
        let creds = Credentials::parse("pilot:s3cret").unwrap();
        let server = tokio::spawn(async move {
            let mut buf = Vec::new();
            let r = authenticate(&mut ours, &mut buf, required.then_some(&creds)).await;
            r.is_ok()
        });
        client.write_all(&input).await.unwrap();
        client.shutdown().await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        (answer, server.await.unwrap())
    }

    fn auth_msg(user: &[u8], pass: &[u8]) -> Vec<u8> {
        let mut m = vec![5, 1, METHOD_USERNAME_PASSWORD, 1, user.len() as u8];
        m.extend_from_slice(user);
        m.push(pass.len() as u8);
        m.extend_from_slice(pass);
        m
    }

    #[tokio::test]
    async fn with_a_password_required_only_the_right_credentials_pass() {
        assert_eq!(
            auth_exchange(auth_msg(b"pilot", b"s3cret"), true).await,
            (vec![5, 2, 1, 0], true)
        );
        assert_eq!(
            auth_exchange(auth_msg(b"pilot", b"wrong"), true).await,
            (vec![5, 2, 1, 1], false)
        );
        let long = vec![b'x'; 255];
        assert_eq!(
            auth_exchange(auth_msg(&long, &long), true).await,
            (vec![5, 2, 1, 1], false),
            "the largest message is read whole and refused"
        );
        // A malformed sub-negotiation gets the failure status, not a panic.
        assert_eq!(
            auth_exchange(vec![5, 1, 2, 1, 0, 1, b'p'], true).await,
            (vec![5, 2, 1, 1], false)
        );
        assert_eq!(
            auth_exchange(vec![5, 1, 2, 5, 1, 0], true).await,
            (vec![5, 2, 1, 1], false)
        );
        // No-auth is not offered when a password is required.
        assert_eq!(
            auth_exchange(vec![5, 1, 0], true).await,
            (vec![5, 0xff], false)
        );
        // Without the setting, no-auth still works.
        assert_eq!(
            auth_exchange(vec![5, 1, 0], false).await,
            (vec![5, 0], true)
        );
    }

    #[tokio::test]
    async fn a_message_split_across_reads_is_parsed_and_the_bytes_behind_it_are_kept() {
        let (mut ours, mut client) = pair().await;
        client.write_all(&[VERSION, 2]).await.unwrap();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            client.write_all(&[METHOD_NO_AUTH, 2, 0xaa]).await.unwrap();
            client
        });
        let mut buf = Vec::new();
        let greeting = read_message(&mut ours, &mut buf, parse_greeting)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(greeting.methods, vec![METHOD_NO_AUTH, 2]);
        assert_eq!(buf, vec![0xaa]);
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn a_message_that_never_ends_is_too_long_and_a_closed_client_is_eof() {
        fn never(_: &[u8]) -> Result<Parsed<()>, ParseError> {
            Ok(Parsed::Incomplete)
        }
        let (mut ours, mut client) = pair().await;
        client.write_all(&[0u8; 600]).await.unwrap();
        let mut buf = Vec::new();
        let r = read_message(&mut ours, &mut buf, never).await.unwrap();
        assert_eq!(r, Err(ParseError::TooLong));

        let (mut ours, client) = pair().await;
        drop(client);
        let e = read_message(&mut ours, &mut Vec::new(), never)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn connect_errors_become_the_replies_the_module_documents() {
        let reply = |k: io::ErrorKind| reply_for(&io::Error::from(k));
        assert_eq!(
            reply(io::ErrorKind::ConnectionRefused),
            Reply::ConnectionRefused
        );
        assert_eq!(
            reply(io::ErrorKind::ConnectionReset),
            Reply::ConnectionRefused
        );
        assert_eq!(reply(io::ErrorKind::TimedOut), Reply::TtlExpired);
        assert_eq!(
            reply(io::ErrorKind::HostUnreachable),
            Reply::HostUnreachable
        );
        assert_eq!(
            reply(io::ErrorKind::NetworkUnreachable),
            Reply::NetworkUnreachable
        );
        assert_eq!(reply(io::ErrorKind::PermissionDenied), Reply::NotAllowed);
        assert_eq!(reply(io::ErrorKind::Other), Reply::GeneralFailure);
    }
}
