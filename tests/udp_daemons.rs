//! UDP between two real userspace daemons on loopback (no TUN, no root): B exposes an overlay
//! UDP port to a local UDP echo server (`pilotctl expose 5353/udp --to …`), and a client on
//! A's host reaches it through A's SOCKS5 proxy with UDP ASSOCIATE, by name.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use support::pair::{pair_with, SOCKS_ANY};

/// A local UDP server that echoes every datagram; its port.
fn udp_echo() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = s.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    });
    port
}

/// UDP ASSOCIATE through `proxy`: the control connection and the relay's address.
fn associate(proxy: &str) -> (TcpStream, SocketAddr) {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&[5, 1, 0]).unwrap();
    let mut m = [0u8; 2];
    s.read_exact(&mut m).unwrap();
    s.write_all(&[5, 3, 0, 1, 0, 0, 0, 0, 0, 0]).unwrap();
    let mut r = [0u8; 10];
    s.read_exact(&mut r).unwrap();
    assert_eq!((r[1], r[3]), (0, 1), "UDP ASSOCIATE answered {r:?}");
    let relay = SocketAddr::from(([r[4], r[5], r[6], r[7]], u16::from_be_bytes([r[8], r[9]])));
    (s, relay)
}

fn to_name(name: &str, port: u16, data: &[u8]) -> Vec<u8> {
    let mut d = vec![0, 0, 0, 3, name.len() as u8];
    d.extend_from_slice(name.as_bytes());
    d.extend_from_slice(&port.to_be_bytes());
    d.extend_from_slice(data);
    d
}

/// The payload of a datagram from the relay (ATYP 4 header: 22 bytes).
fn payload(d: &[u8]) -> &[u8] {
    assert_eq!(&d[..4], &[0, 0, 0, 4], "reply header");
    &d[22..]
}

#[test]
fn a_socks_udp_client_reaches_a_udp_port_exposed_by_another_userspace_daemon() {
    let (a, b, _) = pair_with("pilot-udp", ["", ""], [SOCKS_ANY, SOCKS_ANY]);
    let echo = udp_echo();
    let added = b.ok(&["expose", "5353/udp", "--to", &format!("127.0.0.1:{echo}")]);
    assert_eq!(added["protocol"], "udp", "{added}");
    let listed = b.ok(&["expose", "--list"]);
    assert_eq!(listed["exposed"][0]["protocol"], "udp", "{listed}");

    let proxy = a.ok(&["info"])["socks5"].as_str().unwrap().to_string();
    let (_ctl, relay) = associate(&proxy);
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 2048];
    // The first datagram may wait for the tunnel's handshake.
    let mut first = false;
    for _ in 0..20 {
        c.send_to(&to_name("node-b.pilot", 5353, b"hello"), relay)
            .unwrap();
        if let Ok(n) = c.recv(&mut buf) {
            assert_eq!(payload(&buf[..n]), b"hello");
            first = true;
            break;
        }
    }
    assert!(first, "no echo through the exposed UDP port\n{}", b.logs());

    // 10,000 requests, 32 in flight at a time; loss is counted (0 expected on loopback).
    let mut answered = vec![false; 10_000];
    for window in (0..10_000u32).collect::<Vec<_>>().chunks(32) {
        for i in window {
            c.send_to(&to_name("node-b.pilot", 5353, &i.to_be_bytes()), relay)
                .unwrap();
        }
        for _ in window {
            let Ok(n) = c.recv(&mut buf) else { break };
            let p = payload(&buf[..n]);
            if p.len() == 4 {
                answered[u32::from_be_bytes(p.try_into().unwrap()) as usize] = true;
            }
        }
    }
    let lost = answered.iter().filter(|a| !**a).count();
    eprintln!("10000 UDP requests through SOCKS5 and an exposed port: {lost} lost");
    assert!(lost <= 20, "lost {lost} of 10000");

    let removed = b.ok(&["expose", "--remove", "5353/udp"]);
    assert_eq!(removed["port"], 5353, "{removed}");
    let (code, v) = b.json(&["expose", "--remove", "5353/udp"]);
    assert_eq!((code, v["code"].as_str()), (1, Some("not_found")), "{v}");
}
