//! The netstack's limits on a virtual clock: idle and half-open timeouts, and the memory bound.

use std::net::{Ipv6Addr, SocketAddrV6};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::{Netstack, NetstackConfig, NetstackError, Packet};

const A: &str = "fdc5:7a3e:91b4::a:a:a";
const B: &str = "fdc5:7a3e:91b4::b:b:b";

fn config(s: &str) -> NetstackConfig {
    NetstackConfig::new(s.parse::<Ipv6Addr>().unwrap())
}

/// Two stacks wired crosswise; `a_to_b` decides which of A's packets reach B.
fn pair_with(
    ca: NetstackConfig,
    cb: NetstackConfig,
    a_to_b: fn(&Packet) -> bool,
) -> (Netstack, Netstack) {
    let (ab_tx, mut ab_rx) = mpsc::channel::<Packet>(2048);
    let (ab2_tx, ab2_rx) = mpsc::channel(2048);
    let (ba_tx, ba_rx) = mpsc::channel(2048);
    tokio::spawn(async move {
        while let Some(p) = ab_rx.recv().await {
            if a_to_b(&p) && ab2_tx.send(p).await.is_err() {
                return;
            }
        }
    });
    let a = Netstack::spawn_with_channels(ca, ab_tx, ba_rx).unwrap();
    let b = Netstack::spawn_with_channels(cb, ba_tx, ab2_rx).unwrap();
    (a, b)
}

fn b_port(port: u16) -> SocketAddrV6 {
    SocketAddrV6::new(B.parse().unwrap(), port, 0, 0)
}

/// The TCP flags of a plain IPv6 TCP packet.
fn tcp_flags(p: &Packet) -> u8 {
    p.get(53).copied().unwrap_or(0)
}

#[tokio::test(start_paused = true)]
async fn an_idle_flow_is_reset_after_the_idle_timeout_and_counted() {
    let mut cb = config(B);
    cb.idle_timeout = Duration::from_secs(30);
    let (a, b) = pair_with(config(A), cb, |_| true);
    let mut l = b.listen(80).await.unwrap();
    let mut client = a.connect(b_port(80)).await.unwrap();
    let mut server = l.accept().await.unwrap();
    client.write_all(b"hi").await.unwrap();
    let mut buf = [0u8; 2];
    server.read_exact(&mut buf).await.unwrap();

    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(b.stats().flows, 1, "not idle long enough yet");
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(b.stats().flows_timed_out, 1);
    assert_eq!(b.stats().flows, 0);
    // Both ends see the end of the connection (B's reset reached A).
    assert_eq!(server.read(&mut buf).await.unwrap(), 0);
    assert_eq!(client.read(&mut buf).await.unwrap_or(0), 0);
}

#[tokio::test(start_paused = true)]
async fn a_busy_flow_is_not_idle() {
    let mut cb = config(B);
    cb.idle_timeout = Duration::from_secs(30);
    let (a, b) = pair_with(config(A), cb, |_| true);
    let mut l = b.listen(80).await.unwrap();
    let mut client = a.connect(b_port(80)).await.unwrap();
    let mut server = l.accept().await.unwrap();
    let mut buf = [0u8; 1];
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_secs(10)).await;
        client.write_all(b"x").await.unwrap();
        server.read_exact(&mut buf).await.unwrap();
    }
    assert_eq!(b.stats().flows_timed_out, 0);
    assert_eq!(b.stats().flows, 1);
}

#[tokio::test(start_paused = true)]
async fn a_half_closed_flow_is_reset_after_the_shorter_timeout() {
    let mut cb = config(B);
    cb.half_closed_timeout = Duration::from_secs(5);
    let (a, b) = pair_with(config(A), cb, |_| true);
    let mut l = b.listen(80).await.unwrap();
    let mut client = a.connect(b_port(80)).await.unwrap();
    let _server = l.accept().await.unwrap();
    // A sends its FIN; B's application never answers nor closes.
    client.shutdown().await.unwrap();
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(b.stats().flows_timed_out, 1);
    assert_eq!(b.stats().flows, 0);
}

#[tokio::test(start_paused = true)]
async fn a_handshake_never_completed_frees_its_socket_after_the_handshake_timeout() {
    let mut cb = config(B);
    cb.handshake_timeout = Duration::from_secs(3);
    // Only A's SYNs reach B: B answers SYN-ACK and never hears the final ACK.
    let (a, b) = pair_with(config(A), cb, |p| tcp_flags(p) & 0x02 != 0);
    let _l = b.listen(80).await.unwrap();
    let c = tokio::spawn(async move { a.connect(b_port(80)).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(b.describe().await.unwrap().contains("1 handshaking"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(b.describe().await.unwrap().contains("0 handshaking"));
    assert_eq!(b.stats().flows_timed_out, 1);
    drop(c);
}

#[tokio::test(start_paused = true)]
async fn outgoing_flows_beyond_the_memory_bound_are_refused_and_counted() {
    let mut ca = config(A);
    ca.max_memory = 2 * ca.flow_memory();
    let (a, b) = pair_with(ca, config(B), |_| true);
    let mut l = b.listen(80).await.unwrap();
    let _c1 = a.connect(b_port(80)).await.unwrap();
    let _c2 = a.connect(b_port(80)).await.unwrap();
    let e = a.connect(b_port(80)).await.unwrap_err();
    assert!(matches!(e, NetstackError::MemoryBound(_)), "{e:?}");
    assert_eq!(a.stats().flows_refused, 1);
    let _s1 = l.accept().await.unwrap();
    let _s2 = l.accept().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn inbound_syns_beyond_the_memory_bound_are_reset_and_counted() {
    let mut cb = config(B);
    cb.max_memory = cb.flow_memory();
    let (a, b) = pair_with(config(A), cb, |_| true);
    let mut l = b.listen(80).await.unwrap();
    let _c1 = a.connect(b_port(80)).await.unwrap();
    let _s1 = l.accept().await.unwrap();
    let e = a.connect(b_port(80)).await.unwrap_err();
    assert!(matches!(e, NetstackError::Refused(_)), "{e:?}");
    assert_eq!(b.stats().flows_refused, 1);
    assert_eq!(b.stats().flows, 1);
}
