//! SOCKS5 UDP ASSOCIATE end to end, in memory: a UDP client on loopback goes through node A's
//! proxy and A's netstack, across packet channels, to a UDP echo socket on node B's netstack.

use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use pilot::mapping::{Addr48, Hostname, DEFAULT_NETWORK};
use pilot::netstack::{Netstack, NetstackConfig};
use pilot::userspace::overlay_net::OverlayNet;
use pilot::userspace::socks5::{
    encode_udp_header, parse_udp_header, Socks5Config, Socks5Server, StaticResolver, Target,
    UdpRelay, UdpRelayConfig,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;

const ECHO: u16 = 9999;

struct World {
    proxy: SocketAddr,
    relay: Arc<UdpRelay>,
    b_ip: Ipv6Addr,
    stranger_ip: Ipv6Addr,
}

fn ip(s: &str) -> Ipv6Addr {
    DEFAULT_NETWORK.ipv6(s.parse::<Addr48>().unwrap())
}

/// A and B wired crosswise; B echoes every datagram on port 9999; A runs the proxy.
async fn world(max_associations: usize) -> World {
    let (a_ip, b_ip) = (ip("000a.000a.000a"), ip("000b.000b.000b"));
    let stranger_ip = ip("0bad.0bad.0bad");
    let (ab_tx, ab_rx) = mpsc::channel(4096);
    let (ba_tx, ba_rx) = mpsc::channel(4096);
    let a = Netstack::spawn_with_channels(NetstackConfig::new(a_ip), ab_tx, ba_rx).unwrap();
    let b = Netstack::spawn_with_channels(NetstackConfig::new(b_ip), ba_tx, ab_rx).unwrap();
    let mut echo = b.bind_udp(ECHO, 4096).await.unwrap();
    tokio::spawn(async move {
        let _b = b;
        while let Some((d, from)) = echo.recv_from().await {
            let _ = echo.send_to(&d, from).await;
        }
    });
    let mut resolver =
        StaticResolver::default().with_peer(Some(Hostname::new("worker-node").unwrap()), b_ip);
    resolver
        .names
        .insert(Hostname::new("stranger").unwrap(), stranger_ip);
    let cfg = Socks5Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        udp: UdpRelayConfig {
            max_associations,
            queue: 256,
        },
        ..Socks5Config::default()
    };
    let server = Socks5Server::bind(
        cfg,
        OverlayNet::Userspace(a),
        DEFAULT_NETWORK,
        Arc::new(resolver),
    )
    .await
    .unwrap();
    let proxy = server.local_addr().unwrap();
    let relay = server.udp_relay();
    tokio::spawn(server.run());
    World {
        proxy,
        relay,
        b_ip,
        stranger_ip,
    }
}

/// UDP ASSOCIATE: the control connection and the relay's address, or the reply code.
async fn associate(proxy: SocketAddr) -> Result<(TcpStream, SocketAddr), u8> {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    let mut m = [0u8; 2];
    s.read_exact(&mut m).await.unwrap();
    s.write_all(&[5, 3, 0, 1, 0, 0, 0, 0, 0, 0]).await.unwrap();
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await.unwrap();
    let mut rest = vec![0u8; if head[3] == 4 { 18 } else { 6 }];
    s.read_exact(&mut rest).await.unwrap();
    if head[1] != 0 {
        return Err(head[1]);
    }
    assert_eq!(
        head[3], 1,
        "the relay listens on the proxy's loopback address"
    );
    let a = SocketAddr::from((
        [rest[0], rest[1], rest[2], rest[3]],
        u16::from_be_bytes([rest[4], rest[5]]),
    ));
    Ok((s, a))
}

fn datagram(dst: Target, data: &[u8]) -> Vec<u8> {
    let mut d = Vec::new();
    match dst {
        Target::Ip(a) => encode_udp_header(a, &mut d),
        Target::Domain(n, port) => {
            d.extend_from_slice(&[0, 0, 0, 3, n.len() as u8]);
            d.extend_from_slice(n.as_bytes());
            d.extend_from_slice(&port.to_be_bytes());
        }
    }
    d.extend_from_slice(data);
    d
}

async fn recv(c: &UdpSocket, wait: Duration) -> Option<(Target, Vec<u8>)> {
    let mut buf = [0u8; 2048];
    let n = tokio::time::timeout(wait, c.recv(&mut buf))
        .await
        .ok()?
        .ok()?;
    let h = parse_udp_header(&buf[..n]).unwrap();
    Some((h.target, buf[h.len..n].to_vec()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datagram_by_name_and_by_address_comes_back_from_the_peers_echo() {
    let w = world(4).await;
    let (_ctl, relay) = associate(w.proxy).await.unwrap();
    let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let echo = SocketAddr::from((w.b_ip, ECHO));
    c.send_to(
        &datagram(Target::Domain("worker-node.pilot".into(), ECHO), b"by name"),
        relay,
    )
    .await
    .unwrap();
    let (from, data) = recv(&c, Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        (from, data.as_slice()),
        (Target::Ip(echo), b"by name".as_slice())
    );
    c.send_to(&datagram(Target::Ip(echo), b"by address"), relay)
        .await
        .unwrap();
    let (_, data) = recv(&c, Duration::from_secs(5)).await.unwrap();
    assert_eq!(data, b"by address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_requests_and_responses_cross_with_loss_counted() {
    let w = world(4).await;
    let (_ctl, relay) = associate(w.proxy).await.unwrap();
    let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let echo = Target::Ip(SocketAddr::from((w.b_ip, ECHO)));
    // Requests go out in windows of 64 in flight, as a request/response client sends them;
    // a response not back within 500 ms of its window is lost.
    let mut seen = vec![false; 10_000];
    for window in (0..10_000u32).collect::<Vec<_>>().chunks(64) {
        for i in window {
            let mut payload = i.to_be_bytes().to_vec();
            payload.resize(200, 0x5a);
            c.send_to(&datagram(echo.clone(), &payload), relay)
                .await
                .unwrap();
        }
        let mut left = window.len();
        while left > 0 {
            let Some((_, d)) = recv(&c, Duration::from_millis(500)).await else {
                break;
            };
            let i = u32::from_be_bytes(d[..4].try_into().unwrap()) as usize;
            if !std::mem::replace(&mut seen[i], true) && window.contains(&(i as u32)) {
                left -= 1;
            }
        }
    }
    let got = seen.iter().filter(|s| **s).count();
    let lost = 10_000 - got;
    eprintln!(
        "10000 requests: {got} answered, {lost} lost; relay {:?}",
        w.relay.stats()
    );
    assert!(lost <= 20, "lost {lost} of 10000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragments_strangers_and_foreign_sources_are_dropped_and_counted() {
    let w = world(4).await;
    let (_ctl, relay) = associate(w.proxy).await.unwrap();
    let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let echo = SocketAddr::from((w.b_ip, ECHO));
    let mut frag = datagram(Target::Ip(echo), b"fragment");
    frag[2] = 1;
    c.send_to(&frag, relay).await.unwrap();
    let stranger = SocketAddr::from((w.stranger_ip, ECHO));
    c.send_to(&datagram(Target::Ip(stranger), b"x"), relay)
        .await
        .unwrap();
    c.send_to(
        &datagram(Target::Domain("nobody.pilot".into(), 7), b"x"),
        relay,
    )
    .await
    .unwrap();
    c.send_to(&[0, 0], relay).await.unwrap();
    // The first datagram fixed the client's port: another port of the same host is foreign.
    let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    other
        .send_to(&datagram(Target::Ip(echo), b"other"), relay)
        .await
        .unwrap();
    assert!(recv(&c, Duration::from_millis(500)).await.is_none());
    assert!(recv(&other, Duration::from_millis(100)).await.is_none());
    let s = w.relay.stats();
    assert_eq!(
        (
            s.fragments,
            s.not_allowed,
            s.malformed,
            s.foreign,
            s.to_peers
        ),
        (1, 2, 1, 1, 0),
        "{s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_association_ends_with_its_control_connection_and_the_limit_holds() {
    let w = world(1).await;
    let (ctl, relay) = associate(w.proxy).await.unwrap();
    assert_eq!(associate(w.proxy).await.err(), Some(1), "over the limit");
    drop(ctl);
    let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let echo = SocketAddr::from((w.b_ip, ECHO));
    // The slot frees once the relay saw the close; the old relay port no longer answers.
    let mut again = None;
    for _ in 0..50 {
        if let Ok(a) = associate(w.proxy).await {
            again = Some(a);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_ctl2, relay2) = again.expect("a slot frees when the association ends");
    let _ = c.send_to(&datagram(Target::Ip(echo), b"late"), relay).await;
    assert!(recv(&c, Duration::from_millis(300)).await.is_none());
    c.send_to(&datagram(Target::Ip(echo), b"new"), relay2)
        .await
        .unwrap();
    assert_eq!(recv(&c, Duration::from_secs(5)).await.unwrap().1, b"new");
    assert_eq!(w.relay.stats().refused, 1);
}
