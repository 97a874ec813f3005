//! Userspace mode end to end, in memory: a SOCKS5 client on loopback goes through node A's
//! proxy and A's netstack, across packet channels, into node B's netstack, to a port B exposes
//! to a local TCP server.

mod support;

use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use pilot::mapping::{Addr48, Hostname, DEFAULT_NETWORK};
use pilot::netstack::{Netstack, NetstackConfig};
use pilot::userspace::expose::Exposer;
use pilot::userspace::overlay_net::OverlayNet;
use pilot::userspace::socks5::{Socks5Config, Socks5Server, StaticResolver};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const EXPOSED: u16 = 8080;

fn a48(s: &str) -> Addr48 {
    s.parse().unwrap()
}

struct World {
    proxy: SocketAddr,
    b_ip: Ipv6Addr,
    stranger_ip: Ipv6Addr,
    _exposer: Exposer,
}

fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 7) as u8
}

/// A local "HTTP-ish" server: reads `GET n\n`, answers with n pattern bytes and closes; reads
/// `PUT n\n` then n bytes, answers with their SHA-256 in hex.
async fn local_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let mut r = BufReader::new(s);
                let mut line = String::new();
                if r.read_line(&mut line).await.is_err() {
                    return;
                }
                let mut parts = line.split_whitespace();
                let (Some(verb), Some(n)) = (parts.next(), parts.next()) else {
                    return;
                };
                let n: u64 = n.parse().unwrap();
                if verb == "GET" {
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut sent = 0u64;
                    while sent < n {
                        let k = (buf.len() as u64).min(n - sent) as usize;
                        for (j, b) in buf[..k].iter_mut().enumerate() {
                            *b = pattern(sent + j as u64);
                        }
                        if r.get_mut().write_all(&buf[..k]).await.is_err() {
                            return;
                        }
                        sent += k as u64;
                    }
                } else {
                    let mut h = Sha256::new();
                    let mut left = n;
                    let mut buf = vec![0u8; 64 * 1024];
                    while left > 0 {
                        let k = r.read(&mut buf).await.unwrap();
                        assert!(k > 0, "upload ended early");
                        h.update(&buf[..k]);
                        left -= k as u64;
                    }
                    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
                    let _ = r.get_mut().write_all(hex.as_bytes()).await;
                }
                let _ = r.get_mut().shutdown().await;
            });
        }
    });
    addr
}

/// A SOCKS5 proxy on a loopback port over `stack`, running in the background; its address.
async fn proxy(stack: Netstack, resolver: StaticResolver, connect_timeout: Duration) -> SocketAddr {
    let cfg = Socks5Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        connect_timeout,
        ..Socks5Config::default()
    };
    let server = Socks5Server::bind(
        cfg,
        OverlayNet::Userspace(stack),
        DEFAULT_NETWORK,
        Arc::new(resolver),
    )
    .await
    .unwrap();
    let proxy = server.local_addr().unwrap();
    tokio::spawn(server.run());
    proxy
}

async fn world() -> World {
    let a_ip = DEFAULT_NETWORK.ipv6(a48("000a.000a.000a"));
    let b_ip = DEFAULT_NETWORK.ipv6(a48("000b.000b.000b"));
    let stranger_ip = DEFAULT_NETWORK.ipv6(a48("0bad.0bad.0bad"));
    let (ab_tx, ab_rx) = mpsc::channel(2048);
    let (ba_tx, ba_rx) = mpsc::channel(2048);
    let a = Netstack::spawn_with_channels(NetstackConfig::new(a_ip), ab_tx, ba_rx).unwrap();
    let b = Netstack::spawn_with_channels(NetstackConfig::new(b_ip), ba_tx, ab_rx).unwrap();

    let exposer = Exposer::new(OverlayNet::Userspace(b));
    let local = local_server().await;
    exposer.add(EXPOSED, &local.to_string()).await.unwrap();

    let resolver = StaticResolver::default()
        .with_peer(Some(Hostname::new("worker-node").unwrap()), b_ip)
        .with_peer(Some(Hostname::new("a-self").unwrap()), a_ip);
    let mut resolver = resolver;
    resolver
        .names
        .insert(Hostname::new("stranger").unwrap(), stranger_ip);
    let proxy = proxy(a, resolver, Duration::from_millis(500)).await;
    World {
        proxy,
        b_ip,
        stranger_ip,
        _exposer: exposer,
    }
}

enum Dst<'a> {
    Name(&'a str),
    V6(Ipv6Addr),
    V4([u8; 4]),
}

/// A SOCKS5 CONNECT; returns the stream on success or the reply code.
async fn socks_connect_cmd(
    proxy: SocketAddr,
    dst: Dst<'_>,
    port: u16,
    cmd: u8,
) -> Result<TcpStream, u8> {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    let mut m = [0u8; 2];
    s.read_exact(&mut m).await.unwrap();
    assert_eq!(m, [5, 0]);
    let mut req = vec![5, cmd, 0];
    match dst {
        Dst::Name(n) => {
            req.push(3);
            req.push(n.len() as u8);
            req.extend_from_slice(n.as_bytes());
        }
        Dst::V6(ip) => {
            req.push(4);
            req.extend_from_slice(&ip.octets());
        }
        Dst::V4(ip) => {
            req.push(1);
            req.extend_from_slice(&ip);
        }
    }
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req).await.unwrap();
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await.unwrap();
    let rest = match head[3] {
        1 => 6,
        4 => 18,
        t => panic!("bound address type {t}"),
    };
    let mut bound = vec![0u8; rest];
    s.read_exact(&mut bound).await.unwrap();
    if head[1] == 0 {
        Ok(s)
    } else {
        Err(head[1])
    }
}

async fn socks_connect(proxy: SocketAddr, dst: Dst<'_>, port: u16) -> Result<TcpStream, u8> {
    socks_connect_cmd(proxy, dst, port, 1).await
}

async fn download(mut s: TcpStream, n: u64) {
    s.write_all(format!("GET {n}\n").as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    loop {
        let k = s.read(&mut buf).await.unwrap();
        if k == 0 {
            break;
        }
        for (j, b) in buf[..k].iter().enumerate() {
            assert_eq!(
                *b,
                pattern(got + j as u64),
                "byte {} differs",
                got + j as u64
            );
        }
        got += k as u64;
    }
    assert_eq!(got, n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socks_client_downloads_ten_megabytes_intact_from_an_exposed_port() {
    let w = world().await;
    let s = socks_connect(w.proxy, Dst::Name("worker-node.pilot"), EXPOSED)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(60), download(s, 10 << 20))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socks_client_uploads_ten_megabytes_and_the_checksum_matches() {
    let w = world().await;
    let mut s = socks_connect(w.proxy, Dst::V6(w.b_ip), EXPOSED)
        .await
        .unwrap();
    let n = 10u64 << 20;
    s.write_all(format!("PUT {n}\n").as_bytes()).await.unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0u64;
    let up = async {
        while sent < n {
            let k = (buf.len() as u64).min(n - sent) as usize;
            for (j, b) in buf[..k].iter_mut().enumerate() {
                *b = pattern(sent + j as u64) ^ 0x5a;
            }
            h.update(&buf[..k]);
            s.write_all(&buf[..k]).await.unwrap();
            sent += k as u64;
        }
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        answer
    };
    let answer = tokio::time::timeout(Duration::from_secs(60), up)
        .await
        .unwrap();
    let want: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(answer, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_socks_connections_all_complete() {
    let w = world().await;
    let mut tasks = Vec::new();
    for i in 0..50u64 {
        let proxy = w.proxy;
        tasks.push(tokio::spawn(async move {
            // Name every way the proxy understands.
            let s = match i % 3 {
                0 => socks_connect(proxy, Dst::Name("worker-node.pilot"), EXPOSED).await,
                1 => socks_connect(proxy, Dst::Name("000b.000b.000b"), EXPOSED).await,
                _ => socks_connect(proxy, Dst::Name("000b.000b.000b.pilot"), EXPOSED).await,
            };
            download(s.unwrap(), 100_000 + i * 1000).await;
        }));
    }
    support::join_all_within(Duration::from_secs(60), tasks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_name_is_host_unreachable() {
    let w = world().await;
    let r = socks_connect(w.proxy, Dst::Name("nobody.pilot"), EXPOSED).await;
    assert_eq!(r.err(), Some(4));
    let r = socks_connect(w.proxy, Dst::Name("example.com"), 80).await;
    assert_eq!(r.err(), Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_peer_is_not_allowed() {
    let w = world().await;
    let r = socks_connect(w.proxy, Dst::Name("stranger.pilot"), EXPOSED).await;
    assert_eq!(r.err(), Some(2));
    let r = socks_connect(w.proxy, Dst::V6(w.stranger_ip), EXPOSED).await;
    assert_eq!(r.err(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_nobody_listens_on_is_refused() {
    let w = world().await;
    let r = socks_connect(w.proxy, Dst::Name("worker-node.pilot"), 9).await;
    assert_eq!(r.err(), Some(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_peer_that_never_answers_times_out_as_ttl_expired() {
    let w = world().await;
    // Trusted by name, but no netstack owns this address: packets go nowhere.
    let mut resolver = StaticResolver::default();
    let ghost = DEFAULT_NETWORK.ipv6(a48("0000.0000.0009"));
    resolver = resolver.with_peer(Some(Hostname::new("ghost").unwrap()), ghost);
    let (a, _port) = Netstack::spawn(NetstackConfig::new(
        DEFAULT_NETWORK.ipv6(a48("000a.0000.0001")),
    ))
    .unwrap();
    let proxy = proxy(a, resolver, Duration::from_millis(300)).await;
    drop(w);
    let r = socks_connect(proxy, Dst::Name("ghost.pilot"), 80).await;
    assert_eq!(r.err(), Some(6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_and_unknown_commands_are_not_supported() {
    // UDP ASSOCIATE (3) is supported since issue 13: tests/socks5_udp.rs.
    let w = world().await;
    for cmd in [2, 9] {
        let r = socks_connect_cmd(w.proxy, Dst::Name("worker-node.pilot"), EXPOSED, cmd).await;
        assert_eq!(r.err(), Some(7), "command {cmd}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_and_addresses_outside_the_overlay_are_refused() {
    let w = world().await;
    let r = socks_connect(w.proxy, Dst::V4([10, 0, 0, 1]), 80).await;
    assert_eq!(r.err(), Some(8));
    let r = socks_connect(w.proxy, Dst::V6("2001:db8::1".parse().unwrap()), 80).await;
    assert_eq!(r.err(), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_request_gets_a_failure_reply_and_a_closed_socket() {
    let w = world().await;
    let mut s = TcpStream::connect(w.proxy).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    let mut m = [0u8; 2];
    s.read_exact(&mut m).await.unwrap();
    s.write_all(&[5, 1, 0, 7, 1, 2, 3]).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rest[..2], [5, 8]);

    // A SOCKS4 greeting is closed without a word.
    let mut s = TcpStream::connect(w.proxy).await.unwrap();
    s.write_all(&[4, 1, 0, 80, 10, 0, 0, 1, 0]).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(rest.is_empty());

    // A client that only offers username/password is told no method is acceptable.
    let mut s = TcpStream::connect(w.proxy).await.unwrap();
    s.write_all(&[5, 1, 2]).await.unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, [5, 0xff]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_refuses_to_listen_beyond_loopback_unless_allowed() {
    let (a, _port) = Netstack::spawn(NetstackConfig::new(
        DEFAULT_NETWORK.ipv6(a48("000a.0000.0002")),
    ))
    .unwrap();
    let cfg = Socks5Config {
        listen: "0.0.0.0:0".parse().unwrap(),
        ..Socks5Config::default()
    };
    let r = Socks5Server::bind(
        cfg,
        OverlayNet::Userspace(a),
        DEFAULT_NETWORK,
        Arc::new(StaticResolver::default()),
    )
    .await;
    assert!(r.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exposed_ports_can_be_listed_and_removed() {
    let (b, _port) = Netstack::spawn(NetstackConfig::new(
        DEFAULT_NETWORK.ipv6(a48("000b.0000.0001")),
    ))
    .unwrap();
    let e = Exposer::new(OverlayNet::Userspace(b.clone()));
    e.add(8080, "127.0.0.1:3000").await.unwrap();
    e.add(22, "[::1]:22").await.unwrap();
    assert!(e.add(8080, "127.0.0.1:3001").await.is_err());
    assert!(e.add(8081, "nonsense").await.is_err());
    let list: Vec<(u16, String)> = e.list().into_iter().map(|x| (x.port, x.to)).collect();
    assert_eq!(
        list,
        vec![
            (22, "[::1]:22".to_string()),
            (8080, "127.0.0.1:3000".to_string())
        ]
    );
    e.remove(8080).unwrap();
    assert!(e.remove(8080).is_err());
    assert_eq!(e.list().len(), 1);
    // The port is free again once its task has stopped.
    let mut freed = false;
    for _ in 0..50 {
        if b.listen(8080).await.is_ok() {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(freed);
}
