//! A registry with its TLS transport on loopback: a node attached over TLS and a node on UDP
//! register, exchange endpoints and relay datagrams to each other; limits hold.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;

use super::framed::{read_frames, write_frames};
use super::pin;
use crate::clock::unix_ms_now;
use crate::identity::Identity;
use crate::mapping::Hostname;
use crate::node::registry_client::{Client, ClientConfig, ClientEvent};
use crate::registry::runner::{RegistryConfig, RegistryServer};
use crate::wire::relay;

/// How a test node reaches the registry.
enum Link {
    Udp(UdpSocket),
    Tls {
        tx: mpsc::Sender<Vec<u8>>,
        rx: mpsc::Receiver<Vec<u8>>,
    },
}

struct Node {
    client: Client,
    link: Link,
    registry: SocketAddr,
    events: Vec<ClientEvent>,
    relayed: Vec<Vec<u8>>,
}

impl Node {
    fn new(seed: u8, registry: SocketAddr, hostname: &str, link: Link) -> Node {
        let mut cfg = ClientConfig::new(vec![registry]);
        cfg.hostname = Some(Hostname::new(hostname).unwrap());
        let id = Arc::new(Identity::from_seed([seed; 32]));
        Node {
            client: Client::new(id, cfg, Instant::now(), unix_ms_now()),
            link,
            registry,
            events: Vec::new(),
            relayed: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: Vec<u8>) {
        match &self.link {
            Link::Udp(s) => {
                s.send_to(&bytes, self.registry).await.unwrap();
            }
            Link::Tls { tx, .. } => tx.send(bytes).await.unwrap(),
        }
    }

    fn received(&mut self) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        match &mut self.link {
            Link::Udp(s) => {
                while let Ok((n, _)) = s.try_recv_from(&mut buf) {
                    got.push(buf[..n].to_vec());
                }
            }
            Link::Tls { rx, .. } => {
                while let Ok(d) = rx.try_recv() {
                    got.push(d);
                }
            }
        }
        got
    }

    async fn step(&mut self) {
        while let Some((to, bytes)) = self.client.poll_transmit() {
            assert_eq!(to, self.registry);
            self.send(bytes).await;
        }
        for d in self.received() {
            if relay::parse(&d, relay::RELAY_DELIVER).is_some() {
                self.relayed.push(d);
            } else {
                self.client
                    .handle_datagram(Instant::now(), self.registry, &d);
            }
        }
        let now = Instant::now();
        if self.client.poll_timeout().is_some_and(|t| t <= now) {
            self.client.handle_timeout(now);
        }
        while let Some(e) = self.client.poll_event() {
            self.events.push(e);
        }
    }

    fn has(&self, pred: impl Fn(&ClientEvent) -> bool) -> bool {
        self.events.iter().any(pred)
    }
}

async fn drive(a: &mut Node, b: &mut Node, mut done: impl FnMut(&Node, &Node) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done(a, b) {
        assert!(Instant::now() < deadline, "timed out");
        a.step().await;
        b.step().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A TLS link to `at` verifying `expected`: frames in both directions through tasks.
async fn tls_link(at: SocketAddr, expected: crate::identity::PublicKey) -> Link {
    tls_link_as(at, expected, crate::wire::stream::ALPN, false).await
}

/// A TLS link offering ALPN `alpn` (none if empty), wrapped in WebSocket if `websocket`.
async fn tls_link_as(
    at: SocketAddr,
    expected: crate::identity::PublicKey,
    alpn: &[u8],
    websocket: bool,
) -> Link {
    let tcp = TcpStream::connect(at).await.unwrap();
    let (tls, key) = pin::connect_alpn(tcp, Some(expected), &at.to_string(), alpn)
        .await
        .unwrap();
    assert_eq!(key, expected);
    let (tx, out_rx) = mpsc::channel(256);
    let (in_tx, rx) = mpsc::channel(256);
    let (keepalive, idle) = (Some(Duration::from_secs(5)), Duration::from_secs(60));
    if websocket {
        let s = super::ws::connect(tls, pin::SERVER_NAME).await.unwrap();
        let (w, r) = futures_util::StreamExt::split(s);
        tokio::spawn(super::ws::write_messages(w, out_rx, keepalive));
        tokio::spawn(async move {
            super::ws::read_messages(r, 2048, idle, &in_tx, |f| f.to_vec()).await
        });
    } else {
        let (r, w) = tokio::io::split(tls);
        tokio::spawn(write_frames(w, out_rx, keepalive));
        tokio::spawn(async move { read_frames(r, 2048, idle, &in_tx, |f| f.to_vec()).await });
    }
    Link::Tls { tx, rx }
}

/// A registry running on loopback with its TLS transport; `stop` ends it.
struct Running {
    udp: SocketAddr,
    tls: SocketAddr,
    key: crate::identity::PublicKey,
    stats: crate::registry::metrics::SharedStats,
    stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn start(mut cfg: RegistryConfig) -> Running {
    let dir = tempfile::tempdir().unwrap();
    cfg.state_dir = dir.path().join("registry");
    cfg.tls_listen = Some("127.0.0.1:0".parse().unwrap());
    let server = RegistryServer::bind(cfg).await.unwrap();
    let (udp, tls, key, stats) = (
        server.local_addr(),
        server.tls_addr().unwrap(),
        server.public_key(),
        server.stats(),
    );
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = stop_rx.await;
    }));
    Running {
        udp,
        tls,
        key,
        stats,
        stop,
        _dir: dir,
    }
}

/// Drives both nodes until each has registered.
async fn register(a: &mut Node, b: &mut Node) {
    drive(a, b, |a, b| {
        [a, b]
            .iter()
            .all(|n| n.has(|e| matches!(e, ClientEvent::Registered { .. })))
    })
    .await;
}

/// Both trust each other; `a` asks for `b`'s endpoints and gets the answer, so the pair may
/// relay from now on. Returns their keys.
async fn introduce(
    a: &mut Node,
    b: &mut Node,
) -> (crate::identity::PublicKey, crate::identity::PublicKey) {
    let (ka, kb) = (a.client.public_key(), b.client.public_key());
    a.client.set_trusted(kb, true);
    b.client.set_trusted(ka, true);
    let op = a.client.request_endpoints(Instant::now(), kb);
    drive(a, b, |a, _| {
        a.has(|e| matches!(e, ClientEvent::EndpointInfo { op: o, .. } if *o == op))
    })
    .await;
    (ka, kb)
}

fn config() -> RegistryConfig {
    RegistryConfig::new("127.0.0.1:0".parse().unwrap(), "/nonexistent".into())
}

#[tokio::test]
async fn a_node_over_tls_registers_exchanges_endpoints_and_relays_with_a_node_on_udp() {
    let reg = start(config()).await;
    let mut a = Node::new(
        1,
        reg.udp,
        "behind-firewall",
        tls_link(reg.tls, reg.key).await,
    );
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut b = Node::new(2, reg.udp, "public-node", Link::Udp(socket));
    register(&mut a, &mut b).await;
    // The TLS node's observed address is its connection address, never a UDP one.
    assert!(
        a.has(
            |e| matches!(e, ClientEvent::ReflexiveAddress { addr: observed, .. }
        if super::is_conn_range(observed))
        ),
        "{:?}",
        a.events
    );

    // Both trust each other; a asks b for endpoints: the answer comes back over TLS and the
    // pair may relay from now on.
    let (ka, kb) = introduce(&mut a, &mut b).await;

    // Relayed datagrams both ways: a → b leaves over TLS and arrives over UDP, and back.
    let to_b = relay::frame(relay::RELAY_SEND, kb.addr48(), &[4u8; 1400]);
    let to_a = relay::frame(relay::RELAY_SEND, ka.addr48(), &[4u8; 900]);
    a.send(to_b).await;
    b.send(to_a).await;
    drive(&mut a, &mut b, |a, b| {
        !a.relayed.is_empty() && !b.relayed.is_empty()
    })
    .await;
    assert_eq!(
        relay::parse(&b.relayed[0], relay::RELAY_DELIVER),
        Some((ka.addr48(), &[4u8; 1400][..]))
    );
    assert_eq!(
        relay::parse(&a.relayed[0], relay::RELAY_DELIVER),
        Some((kb.addr48(), &[4u8; 900][..]))
    );
    reg.stop.send(()).unwrap();
}

/// Both wrappings on one port, told apart by ALPN or, without ALPN, by the first bytes: nodes
/// over WebSocket (ALPN `http/1.1`, and none) and over plain frames without ALPN register and
/// relay to each other; the counters see them, and see them go.
#[tokio::test]
async fn websocket_and_plain_nodes_share_the_port_with_or_without_alpn() {
    use crate::wire::websocket::ALPN_HTTP;
    let reg = start(config()).await;
    let (udp, tls, key) = (reg.udp, reg.tls, reg.key);
    for (alpn, other_alpn, other_ws) in [(ALPN_HTTP, &b""[..], false), (&b""[..], &b""[..], true)] {
        let mut a = Node::new(5, udp, "ws-node", tls_link_as(tls, key, alpn, true).await);
        let link = tls_link_as(tls, key, other_alpn, other_ws).await;
        let mut b = Node::new(6, udp, "other-node", link);
        register(&mut a, &mut b).await;
        let (_, kb) = introduce(&mut a, &mut b).await;
        for _ in 0..50 {
            a.send(relay::frame(relay::RELAY_SEND, kb.addr48(), &[9u8; 1400]))
                .await;
        }
        drive(&mut a, &mut b, |_, b| b.relayed.len() == 50).await;
    }
    // The shared stats are published every second: wait for a publication that has seen the
    // four connections come and go (one from before them has open == 0 too).
    let deadline = Instant::now() + Duration::from_secs(10);
    let t = loop {
        let t = reg.stats.lock().tls.unwrap_or_default();
        if (t.accepted >= 4 && t.open == 0) || Instant::now() > deadline {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The nodes are gone: every connection, WebSocket or not, was closed and counted down.
    assert_eq!(
        (t.accepted, t.websocket_accepted, t.open, t.websocket_open),
        (4, 3, 0, 0),
        "{t:?}"
    );
    assert!(t.frames_in >= 100 && t.frames_out >= 100, "{t:?}");
    assert!(t.bytes_in >= 100 * 1400, "{t:?}");
    reg.stop.send(()).unwrap();
}

#[tokio::test]
async fn the_connection_cap_idle_timeout_and_oversized_frames_close_connections() {
    let mut cfg = config();
    cfg.tls_max_connections = 1;
    cfg.tls_idle_timeout_ms = 300;
    cfg.tls_handshake_timeout_ms = 300;
    let reg = start(cfg).await;
    let (tls, key) = (reg.tls, reg.key);
    // A silent TCP client (slowloris) holds the only slot until the handshake timeout.
    let mut silent = TcpStream::connect(tls).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let refused = pin::connect(TcpStream::connect(tls).await.unwrap(), Some(key), "t").await;
    assert!(refused.is_err(), "the cap holds");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut buf = [0u8; 1];
    let n = tokio::io::AsyncReadExt::read(&mut silent, &mut buf)
        .await
        .unwrap_or(0);
    assert_eq!(n, 0, "the silent client was closed");
    // Once it is gone, a real client gets in; an oversized frame closes it.
    let (mut s, _) = pin::connect(TcpStream::connect(tls).await.unwrap(), Some(key), "t")
        .await
        .unwrap();
    s.write_all(&[0xff, 0xff]).await.unwrap();
    s.flush().await.unwrap();
    let n = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::io::AsyncReadExt::read(&mut s, &mut buf),
    )
    .await
    .unwrap()
    .unwrap_or(0);
    assert_eq!(n, 0, "closed after a frame larger than the maximum");
    reg.stop.send(()).unwrap();
}
