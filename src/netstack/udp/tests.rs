//! UDP between two stacks wired crosswise.

use std::net::{Ipv6Addr, SocketAddrV6};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::netstack::{Netstack, NetstackConfig, NetstackError, Packet};

const A: &str = "fdc5:7a3e:91b4::a:a:a";
const B: &str = "fdc5:7a3e:91b4::b:b:b";

fn pair() -> (Netstack, Netstack) {
    let (ab_tx, ab_rx) = mpsc::channel::<Packet>(4096);
    let (ba_tx, ba_rx) = mpsc::channel::<Packet>(4096);
    let cfg = |s: &str| NetstackConfig::new(s.parse::<Ipv6Addr>().unwrap());
    let a = Netstack::spawn_with_channels(cfg(A), ab_tx, ba_rx).unwrap();
    let b = Netstack::spawn_with_channels(cfg(B), ba_tx, ab_rx).unwrap();
    (a, b)
}

fn at(addr: &str, port: u16) -> SocketAddrV6 {
    SocketAddrV6::new(addr.parse().unwrap(), port, 0, 0)
}

#[tokio::test]
async fn datagrams_cross_both_ways_in_order_and_replies_reach_the_ephemeral_port() {
    let (a, b) = pair();
    let sa = a.bind_udp(0, 256).await.unwrap();
    let mut sb = b.bind_udp(5353, 2048).await.unwrap();
    assert!(sa.local_addr().port() >= 49152);
    assert_eq!(sb.local_addr(), at(B, 5353));
    for i in 0..1000u32 {
        sa.send_to(&i.to_be_bytes(), at(B, 5353)).await.unwrap();
    }
    for i in 0..1000u32 {
        let (d, from) = tokio::time::timeout(Duration::from_secs(5), sb.recv_from())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(d, i.to_be_bytes());
        assert_eq!(from, sa.local_addr());
    }
    let mut sa = sa;
    sb.send_to(b"pong", sa.local_addr()).await.unwrap();
    let (d, from) = sa.recv_from().await.unwrap();
    assert_eq!((d.as_slice(), from), (b"pong".as_slice(), at(B, 5353)));
    assert_eq!(sb.dropped(), 0);
}

#[tokio::test]
async fn a_payload_over_one_packet_and_port_zero_are_refused() {
    let (a, _b) = pair();
    let s = a.bind_udp(0, 4).await.unwrap();
    assert_eq!(s.max_payload(), 1420 - 48);
    let big = vec![0u8; s.max_payload() + 1];
    assert_eq!(
        s.send_to(&big, at(B, 9)).await,
        Err(NetstackError::DatagramTooLarge(1373, 1372))
    );
    assert!(matches!(
        s.send_to(b"x", at(B, 0)).await,
        Err(NetstackError::PortZero(_))
    ));
    s.send_to(&vec![7u8; s.max_payload()], at(B, 9))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_bound_port_is_taken_until_its_socket_is_dropped() {
    let (a, _b) = pair();
    let s = a.bind_udp(7000, 4).await.unwrap();
    assert!(matches!(
        a.bind_udp(7000, 4).await,
        Err(NetstackError::PortInUse(7000))
    ));
    drop(s);
    let mut again = None;
    for _ in 0..100 {
        if let Ok(s) = a.bind_udp(7000, 4).await {
            again = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(again.is_some(), "the port was not freed");
}

#[tokio::test]
async fn datagrams_beyond_a_full_receive_queue_are_dropped_and_counted() {
    let (a, b) = pair();
    let sa = a.bind_udp(0, 512).await.unwrap();
    let mut sb = b.bind_udp(6000, 4).await.unwrap();
    for i in 0..200u32 {
        sa.send_to(&i.to_be_bytes(), at(B, 6000)).await.unwrap();
    }
    let mut got = 0;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(300), sb.recv_from()).await {
        got += 1;
    }
    assert!((4..200).contains(&got), "{got}");
    assert_eq!(
        sb.dropped() + got,
        200,
        "every datagram is received or counted"
    );
}
