//! The data-plane core in memory: cores exchange datagrams through queues, like a wire.

use std::collections::VecDeque;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::identity::{Identity, PublicKey};
use crate::wg::events::DataPlaneEvent;
use crate::wg::Path;
use crate::wire::classify::{ControlDatagram, ControlKind};
use crate::wire::relay;

/// A node in the simulated network: a core, its outer address, what reached its inner side.
struct Node {
    core: Arc<Core>,
    addr: SocketAddr,
    ip: Ipv6Addr,
    delivered: Vec<Vec<u8>>,
}

fn node(seed: u8, addr: &str) -> (Node, PublicKey) {
    let id = Identity::from_seed([seed; 32]);
    let ip = DEFAULT_NET.ipv6(id.addr48());
    let n = Node {
        core: Arc::new(Core::new(&id, DEFAULT_NET, 25, None, None, None)),
        addr: addr.parse().unwrap(),
        ip,
        delivered: Vec::new(),
    };
    (n, id.public_key())
}

const DEFAULT_NET: NetworkPrefix = crate::mapping::DEFAULT_NETWORK;

/// A node whose core reports data-plane events (on a queue of 4).
fn node_with_events(seed: u8, addr: &str) -> (Node, PublicKey, crate::wg::events::EventReceiver) {
    let (mut n, key) = node(seed, addr);
    let id = Identity::from_seed([seed; 32]);
    let (tx, rx) = crate::wg::events::channel(4);
    n.core = Arc::new(Core::new(&id, DEFAULT_NET, 25, None, None, Some(tx)));
    let rx = rx(Arc::clone(&n.core));
    (n, key, rx)
}

/// Two datagram queues between nodes, like a wire.
type Wire = VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>;

fn ipv6_packet(src: Ipv6Addr, dst: Ipv6Addr, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    p[6] = 59; // no next header
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    p.extend_from_slice(payload);
    p
}

fn send_inner(n: &Node, packet: &[u8], wire: &mut Wire) -> TxAction {
    let mut out = vec![0u8; 65535];
    let a = n.core.on_outbound(packet, &mut out);
    if let TxAction::Send { dst, len } = a {
        wire.push_back((n.addr, dst, out[..len].to_vec()));
    }
    a
}

/// Delivers datagrams until the wire is quiet (bounded).
fn pump(nodes: &mut [&mut Node], wire: &mut Wire) {
    let mut out = vec![0u8; 65535];
    for _ in 0..100 {
        let Some((from, to, d)) = wire.pop_front() else {
            return;
        };
        let Some(n) = nodes.iter_mut().find(|n| n.addr == to) else {
            continue;
        };
        let me = n.addr;
        let mut replies = Vec::new();
        let a = n.core.on_datagram(from, &d, &mut out, &mut |dst, p| {
            replies.push((me, dst, p.to_vec()))
        });
        if let RxAction::Tunnel { len } = a {
            n.delivered.push(out[..len].to_vec());
        }
        wire.extend(replies);
    }
    panic!("the wire did not go quiet");
}

fn pair() -> (Node, Node, PublicKey, PublicKey) {
    let (a, ka) = node(1, "198.51.100.1:51820");
    let (b, kb) = node(2, "198.51.100.2:51820");
    a.core.add_peer(kb, Some(b.addr)).unwrap();
    b.core.add_peer(ka, Some(a.addr)).unwrap();
    (a, b, ka, kb)
}

#[test]
fn handshake_completes_and_the_queued_packet_arrives() {
    let (mut a, mut b, _, _) = pair();
    let mut wire = Wire::new();
    let pkt = ipv6_packet(a.ip, b.ip, b"hello");
    // No session yet: the packet waits and a handshake initiation goes out.
    assert!(matches!(
        send_inner(&a, &pkt, &mut wire),
        TxAction::Send { len: 148, .. }
    ));
    pump(&mut [&mut a, &mut b], &mut wire);
    assert_eq!(b.delivered, vec![pkt.clone()]);
    assert!(a.core.peers()[0].last_handshake.is_some());
    assert!(b.core.peers()[0].last_handshake.is_some());
    // Now a packet goes straight through, both ways.
    let back = ipv6_packet(b.ip, a.ip, b"world");
    send_inner(&b, &back, &mut wire);
    pump(&mut [&mut a, &mut b], &mut wire);
    assert_eq!(a.delivered, vec![back.clone()]);
    let sa = &b.core.peers()[0];
    assert_eq!(sa.rx_bytes, pkt.len() as u64);
    assert_eq!(sa.tx_bytes, back.len() as u64);
}

#[test]
fn the_peer_table_answers_lookups_by_ip_key_and_hostname() {
    let (a, b, _, kb) = pair();
    a.core.set_hostname(&kb, Some("node-b".into())).unwrap();
    let found = a.core.peer_by_ip(&b.ip).unwrap();
    assert_eq!(found.public_key, kb);
    assert_eq!(found.ipv6, b.ip);
    assert_eq!(found.hostname.as_deref(), Some("node-b"));
    assert_eq!(a.core.peer_by_key(&kb), Some(found.clone()));
    assert_eq!(a.core.peer_by_hostname("node-b"), Some(found));
    assert_eq!(a.core.peer_count(), 1);
    // Our own address, an unknown key and a name nobody has are no peers.
    assert_eq!(a.core.peer_by_ip(&a.ip), None);
    let (_, kc) = node(3, "198.51.100.3:51820");
    assert_eq!(a.core.peer_by_key(&kc), None);
    assert_eq!(a.core.peer_by_hostname("node-c"), None);
    // An address outside the overlay is no peer either.
    assert_eq!(a.core.peer_by_ip(&"2001:db8::1".parse().unwrap()), None);
}

#[test]
fn a_handshake_from_an_unknown_key_is_dropped_and_counted() {
    let (mut a, mut b, _, kb) = pair();
    let (mut c, _) = node(3, "198.51.100.3:51820");
    c.core.add_peer(kb, Some(b.addr)).unwrap();
    let mut wire = Wire::new();
    send_inner(&c, &ipv6_packet(c.ip, b.ip, b"let me in"), &mut wire);
    pump(&mut [&mut a, &mut b, &mut c], &mut wire);
    assert!(b.delivered.is_empty());
    assert_eq!(b.core.counters().unknown_key_handshakes, 1);
    assert!(c.core.peers()[0].last_handshake.is_none());
}

#[test]
fn a_spoofed_inner_source_is_dropped_and_counted() {
    let (mut a, mut b, _, _) = pair();
    let (c, _) = node(3, "198.51.100.3:51820");
    let mut wire = Wire::new();
    send_inner(&a, &ipv6_packet(a.ip, b.ip, b"hi"), &mut wire);
    pump(&mut [&mut a, &mut b], &mut wire);
    // A claims to be C inside its own tunnel.
    send_inner(&a, &ipv6_packet(c.ip, b.ip, b"i am c"), &mut wire);
    pump(&mut [&mut a, &mut b], &mut wire);
    assert_eq!(b.delivered.len(), 1);
    assert_eq!(b.core.counters().spoofed, 1);
    assert_eq!(b.core.peers()[0].drops.get("spoofed"), Some(&1));
}

#[test]
fn a_removed_peer_gets_nothing_through_at_once() {
    let (mut a, mut b, ka, _) = pair();
    let mut wire = Wire::new();
    send_inner(&a, &ipv6_packet(a.ip, b.ip, b"1"), &mut wire);
    pump(&mut [&mut a, &mut b], &mut wire);
    b.core.remove_peer(&ka).unwrap();
    send_inner(&a, &ipv6_packet(a.ip, b.ip, b"2"), &mut wire);
    pump(&mut [&mut a, &mut b], &mut wire);
    assert_eq!(b.delivered.len(), 1);
    assert_eq!(b.core.counters().unknown_index, 1);
    assert_eq!(
        send_inner(&b, &ipv6_packet(b.ip, a.ip, b"3"), &mut wire),
        TxAction::Dropped
    );
    assert_eq!(b.core.counters().no_peer, 1);
}

#[test]
fn an_authenticated_packet_from_a_new_address_moves_the_endpoint() {
    let (mut a, mut b, ka, _) = pair();
    let mut wire = Wire::new();
    send_inner(&a, &ipv6_packet(a.ip, b.ip, b"1"), &mut wire);
    pump(&mut [&mut a, &mut b], &mut wire);
    a.addr = "198.51.100.9:4000".parse().unwrap();
    send_inner(&a, &ipv6_packet(a.ip, b.ip, b"2"), &mut wire);
    pump(&mut [&mut a, &mut b], &mut wire);
    assert_eq!(b.delivered.len(), 2);
    let ep = b.core.peer(&ka).unwrap().status().endpoint;
    assert_eq!(ep, Some(a.addr));
    // Garbage from a third address does not move it.
    let mut out = vec![0u8; 2048];
    let junk = [4u8; 64];
    let other: SocketAddr = "198.51.100.66:1".parse().unwrap();
    b.core.on_datagram(other, &junk, &mut out, &mut |_, _| {});
    assert_eq!(b.core.peer(&ka).unwrap().status().endpoint, Some(a.addr));
}

#[test]
fn a_restarted_node_offers_a_new_handshake_to_a_peer_on_a_stale_session() {
    let (mut a, mut b, ka, kb) = pair();
    let mut wire = Wire::new();
    send_inner(&a, &ipv6_packet(a.ip, b.ip, b"1"), &mut wire);
    pump(&mut [&mut a, &mut b], &mut wire);
    // B restarts: same key, empty state.
    let (mut b2, _) = node(2, "198.51.100.2:51820");
    b2.core.add_peer(ka, Some(a.addr)).unwrap();
    send_inner(&a, &ipv6_packet(a.ip, b2.ip, b"lost"), &mut wire);
    pump(&mut [&mut a, &mut b2], &mut wire);
    assert!(b2.delivered.is_empty());
    assert_eq!(b2.core.counters().unknown_index, 1);
    // The handshake B offered completed, so A's next packet arrives.
    send_inner(&a, &ipv6_packet(a.ip, b2.ip, b"2"), &mut wire);
    pump(&mut [&mut a, &mut b2], &mut wire);
    assert_eq!(b2.delivered.len(), 1, "{:?}", b2.core.counters());
    let _ = kb;
}

#[test]
fn outbound_to_an_unknown_overlay_address_is_counted_and_reported() {
    let id = Identity::from_seed([1; 32]);
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = Arc::clone(&calls);
    let hook: NoPeerHook = Arc::new(move |_| {
        c2.fetch_add(1, Ordering::Relaxed);
    });
    let core = Core::new(&id, DEFAULT_NET, 25, None, Some(hook), None);
    let me = DEFAULT_NET.ipv6(id.addr48());
    let other = DEFAULT_NET.ipv6(Addr48::from_bytes([1, 2, 3, 4, 5, 6]));
    let mut out = vec![0u8; 2048];
    assert_eq!(
        core.on_outbound(&ipv6_packet(me, other, b"x"), &mut out),
        TxAction::Dropped
    );
    assert_eq!(core.counters().no_peer, 1);
    assert_eq!(calls.load(Ordering::Relaxed), 1);
    // Outside the overlay: counted apart.
    let outside: Ipv6Addr = "2001:db8::1".parse().unwrap();
    core.on_outbound(&ipv6_packet(me, outside, b"x"), &mut out);
    assert_eq!(core.counters().not_overlay, 1);
}

#[test]
fn kernel_chatter_is_ignored_without_counting() {
    let (a, _) = node(1, "198.51.100.1:1");
    let mut out = vec![0u8; 2048];
    let ll: Ipv6Addr = "fe80::1".parse().unwrap();
    let mc: Ipv6Addr = "ff02::2".parse().unwrap();
    assert_eq!(
        a.core.on_outbound(&ipv6_packet(ll, a.ip, b""), &mut out),
        TxAction::Ignored
    );
    assert_eq!(
        a.core.on_outbound(&ipv6_packet(a.ip, mc, b""), &mut out),
        TxAction::Ignored
    );
    assert_eq!(a.core.counters(), CountersSnapshot::default());
}

#[test]
fn control_datagrams_go_to_the_control_plane() {
    let id = Identity::from_seed([1; 32]);
    let (tx, mut rx) = crate::wire::classify::control_queues(4);
    let core = Core::new(&id, DEFAULT_NET, 25, Some(tx), None, None);
    let src: SocketAddr = "198.51.100.7:9".parse().unwrap();
    let mut out = vec![0u8; 2048];
    let a = core.on_datagram(src, b"Phello", &mut out, &mut |_, _| {});
    assert_eq!(a, RxAction::Control);
    assert_eq!(
        rx.try_recv().unwrap(),
        ControlDatagram {
            from: src,
            kind: ControlKind::Control,
            bytes: b"Phello".to_vec()
        }
    );
    assert_eq!(
        core.on_datagram(src, b"Xhello", &mut out, &mut |_, _| {}),
        RxAction::Dropped
    );
    assert_eq!(core.counters().malformed, 1);
}

/// Plays the registry's relay for frames on `wire` addressed to `reg`: RelaySend from a
/// node becomes RelayDeliver to the node it names.
fn relay_through(reg: SocketAddr, nodes: &[(&Node, PublicKey)], wire: &mut Wire) {
    for (from, to, d) in wire.iter_mut() {
        if *to != reg {
            continue;
        }
        let (target, payload) = relay::parse(d, relay::RELAY_SEND).expect("relay frame");
        let sender = nodes.iter().find(|(n, _)| n.addr == *from).unwrap().1;
        let dst = nodes
            .iter()
            .find(|(_, k)| k.addr48() == target)
            .unwrap()
            .0
            .addr;
        *d = relay::frame(relay::RELAY_DELIVER, sender.addr48(), payload);
        *from = reg;
        *to = dst;
    }
}

#[test]
fn relayed_packets_reach_the_peer_and_replies_go_back_through_the_relay() {
    let reg: SocketAddr = "203.0.113.10:7946".parse().unwrap();
    let (mut a, ka, mut a_events) = node_with_events(1, "10.0.0.1:51820");
    let (mut b, kb, mut b_events) = node_with_events(2, "10.0.0.2:51820");
    a.core.add_peer(kb, None).unwrap();
    b.core.add_peer(ka, None).unwrap();
    a.core.set_relays(vec![reg]);
    b.core.set_relays(vec![reg]);
    let mut wire = Wire::new();
    // A packet with no path is queued and reported, once however many follow.
    let pkt = ipv6_packet(a.ip, b.ip, b"via the relay");
    assert_eq!(send_inner(&a, &pkt, &mut wire), TxAction::Dropped);
    assert_eq!(send_inner(&a, &pkt, &mut wire), TxAction::Dropped);
    wire.clear();
    assert_eq!(a_events.try_recv(), Some(DataPlaneEvent::NeedsPath(kb)));
    assert_eq!(a_events.try_recv(), None);
    // Taken: the next packet without a path reports again.
    assert_eq!(send_inner(&a, &pkt, &mut wire), TxAction::Dropped);
    wire.clear();
    assert_eq!(a_events.try_recv(), Some(DataPlaneEvent::NeedsPath(kb)));
    // The control plane sets the relay: the handshake goes out through it at once.
    a.core
        .set_path(&kb, Path::Relay(reg), &mut |dst, d| {
            wire.push_back((a.addr, dst, d.to_vec()))
        })
        .unwrap();
    for _ in 0..4 {
        relay_through(reg, &[(&a, ka), (&b, kb)], &mut wire);
        let mut out = vec![0u8; 65535];
        let mut next = Wire::new();
        while let Some((from, to, d)) = wire.pop_front() {
            let n = if to == a.addr { &mut a } else { &mut b };
            let me = n.addr;
            if let RxAction::Tunnel { len } =
                n.core.on_datagram(from, &d, &mut out, &mut |dst, p| {
                    next.push_back((me, dst, p.to_vec()))
                })
            {
                n.delivered.push(out[..len].to_vec());
            }
        }
        wire = next;
    }
    assert_eq!(b.delivered, vec![pkt; 3], "the queued packets arrived");
    // B had no path: it took the relay the handshake came by, and said so.
    assert_eq!(b.core.path(&ka), Some(Path::Relay(reg)));
    let b_saw: Vec<_> = std::iter::from_fn(|| b_events.try_recv()).collect();
    assert!(
        b_saw.contains(&DataPlaneEvent::Roamed {
            key: ka,
            path: Path::Relay(reg)
        }),
        "{b_saw:?}"
    );
    assert!(
        b_saw.contains(&DataPlaneEvent::HandshakeDone(ka)),
        "{b_saw:?}"
    );
    // Each reported handshake is counted (the metrics endpoint shows the count).
    let done = b_saw
        .iter()
        .filter(|e| matches!(e, DataPlaneEvent::HandshakeDone(_)))
        .count() as u64;
    assert_eq!(b.core.counters().handshakes_completed, done);
    let st = b.core.peer(&ka).unwrap().status();
    assert_eq!((st.path.as_str(), st.endpoint), ("relay", Some(reg)));
    // A relay delivery from an address that is not a configured registry is not taken as
    // WireGuard.
    let mut out = vec![0u8; 2048];
    let frame = relay::frame(relay::RELAY_DELIVER, ka.addr48(), &[4u8; 64]);
    let other: SocketAddr = "192.0.2.7:7946".parse().unwrap();
    assert_eq!(
        b.core.on_datagram(other, &frame, &mut out, &mut |_, _| {}),
        RxAction::Dropped,
        "no control channel in this test, so it is dropped as control"
    );
}

#[test]
fn a_node_cannot_add_itself() {
    let (a, ka) = node(1, "198.51.100.1:1");
    assert_eq!(a.core.add_peer(ka, None), Err(PeerTableError::OwnKey(ka)));
}

proptest! {
    #[test]
    fn random_datagrams_never_panic(first in 0u8..6, body in proptest::collection::vec(any::<u8>(), 0..300)) {
        let (a, b, _, _) = pair();
        let mut d = body;
        if !d.is_empty() { d[0] = first; }
        let mut out = vec![0u8; 2048];
        let r = b.core.on_datagram(a.addr, &d, &mut out, &mut |_, _| {});
        prop_assert!(matches!(r, RxAction::Dropped | RxAction::Consumed));
    }

    #[test]
    fn random_inner_packets_never_panic(body in proptest::collection::vec(any::<u8>(), 0..300)) {
        let (a, _, _, _) = pair();
        let mut out = vec![0u8; 2048];
        let _ = a.core.on_outbound(&body, &mut out);
    }
}

#[test]
fn an_outbound_packet_longer_than_the_largest_packet_is_dropped_and_counted() {
    let (a, b, _, _) = pair();
    let max = a.core.max_packet();
    let mut out = vec![0u8; 65535];
    let big = ipv6_packet(a.ip, b.ip, &vec![0u8; max + 1 - 40]);
    assert_eq!(a.core.on_outbound(&big, &mut out), TxAction::Dropped);
    assert_eq!(a.core.counters().oversize, 1);
    // One byte less is the largest packet: it goes (a handshake first) and fits the room.
    let fits = ipv6_packet(a.ip, b.ip, &vec![0u8; max - 40]);
    let mut room = vec![0u8; a.core.out_room()];
    assert!(matches!(
        a.core.on_outbound(&fits, &mut room),
        TxAction::Send { .. }
    ));
}

#[test]
fn a_handshake_drains_full_size_queued_packets_into_a_buffer_of_out_room() {
    let (mut a, mut b, _, _) = pair();
    let mut wire = Wire::new();
    let pkt = ipv6_packet(a.ip, b.ip, &vec![9u8; a.core.max_packet() - 40]);
    send_inner(&a, &pkt, &mut wire);
    // Deliver with buffers of exactly the documented room, as the receive thread does.
    while let Some((from, to, d)) = wire.pop_front() {
        let n = if to == a.addr { &mut a } else { &mut b };
        let mut out = vec![0u8; d.len().max(n.core.out_room())];
        let me = n.addr;
        let mut replies = Vec::new();
        if let RxAction::Tunnel { len } = n.core.on_datagram(from, &d, &mut out, &mut |dst, p| {
            replies.push((me, dst, p.to_vec()))
        }) {
            n.delivered.push(out[..len].to_vec());
        }
        wire.extend(replies);
    }
    assert_eq!(b.delivered, vec![pkt]);
}

#[test]
fn a_packet_from_a_trusted_peer_to_another_destination_is_dropped_and_counted() {
    let (mut a, mut b, _, kb) = pair();
    let mut wire = Wire::new();
    send_inner(&a, &ipv6_packet(a.ip, b.ip, b"hi"), &mut wire);
    pump(&mut [&mut a, &mut b], &mut wire);
    assert_eq!(b.delivered.len(), 1);
    // A (trusted, with its own source address) aims packets through its tunnel to B at other
    // addresses: another overlay node, a host address outside the overlay, multicast.
    let (c, _) = node(3, "198.51.100.3:51820");
    let others: [Ipv6Addr; 3] = [
        c.ip,
        "2001:db8::1".parse().unwrap(),
        "ff02::1".parse().unwrap(),
    ];
    for dst in others {
        let pkt = ipv6_packet(a.ip, dst, b"not for b");
        let mut out = vec![0u8; 2048];
        let peer = a.core.peer(&kb).unwrap();
        let len = match peer
            .state
            .lock()
            .tunn
            .as_mut()
            .unwrap()
            .encapsulate(&pkt, &mut out)
        {
            boringtun::noise::TunnResult::WriteToNetwork(d) => d.len(),
            _ => panic!("a session exists"),
        };
        wire.push_back((a.addr, b.addr, out[..len].to_vec()));
        pump(&mut [&mut a, &mut b], &mut wire);
    }
    assert_eq!(b.delivered.len(), 1, "nothing more was delivered");
    assert_eq!(b.core.counters().not_for_us, 3);
    assert_eq!(b.core.counters().spoofed, 0);
    assert_eq!(b.core.peers()[0].drops.get("not_for_us"), Some(&3));
}

/// A data message with a receiver index nobody handed out.
fn stale_data(index: u32) -> Vec<u8> {
    let mut d = vec![0u8; 64];
    d[0] = 4;
    d[4..8].copy_from_slice(&index.to_le_bytes());
    d
}

#[test]
fn an_unknown_receiver_index_is_dropped_at_once_without_touching_any_peer() {
    let (b, _) = node(2, "198.51.100.2:51820");
    for seed in 10..60u8 {
        let key = Identity::from_seed([seed; 32]).public_key();
        let ep: SocketAddr = format!("198.51.100.{seed}:51820").parse().unwrap();
        b.core.add_peer(key, Some(ep)).unwrap();
    }
    // Every peer is busy (its lock held): a scan of the peers would wait here forever.
    let table = b.core.table.load_full();
    let guards: Vec<_> = table.by_addr.values().map(|p| p.state.lock()).collect();
    let core = Arc::clone(&b.core);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let stranger: SocketAddr = "203.0.113.66:4444".parse().unwrap();
        let mut out = vec![0u8; 2048];
        let mut sent = 0;
        for i in 0..100u32 {
            let d = stale_data(i << 8 | 1);
            assert_eq!(
                core.on_datagram(stranger, &d, &mut out, &mut |_, _| sent += 1),
                RxAction::Dropped
            );
        }
        tx.send(sent).unwrap();
    });
    let sent = rx
        .recv_timeout(std::time::Duration::from_secs(5))
        .expect("unknown indices were handled without waiting for any peer's lock");
    drop(guards);
    assert_eq!(sent, 0, "nothing is sent to a stranger");
    assert_eq!(b.core.counters().unknown_index, 100);
}

#[test]
fn the_endpoint_index_follows_roaming_and_removal() {
    let (mut a, mut b, ka, _) = pair();
    let mut wire = Wire::new();
    send_inner(&a, &ipv6_packet(a.ip, b.ip, b"1"), &mut wire);
    pump(&mut [&mut a, &mut b], &mut wire);
    let old = a.addr;
    a.addr = "198.51.100.9:4000".parse().unwrap();
    send_inner(&a, &ipv6_packet(a.ip, b.ip, b"2"), &mut wire);
    pump(&mut [&mut a, &mut b], &mut wire);
    assert!(
        b.core.peer_at(old).is_none(),
        "the old endpoint left the index"
    );
    assert_eq!(b.core.peer_at(a.addr).unwrap().public_key, ka);
    b.core.remove_peer(&ka).unwrap();
    assert!(b.core.peer_at(a.addr).is_none());
}

#[test]
fn a_small_order_key_is_refused_as_a_peer() {
    let (a, _) = node(1, "198.51.100.1:1");
    // The identity point and the point of order 2, both valid encodings.
    let mut order2 = [0xffu8; 32];
    order2[0] = 0xec;
    order2[31] = 0x7f;
    let mut identity = [0u8; 32];
    identity[0] = 1;
    for bytes in [identity, order2] {
        // PublicKey::from_bytes refuses them; the peer table checks again (defence in depth).
        assert!(PublicKey::from_bytes(bytes).is_err());
        let weak = PublicKey::from_bytes_allowing_weak(bytes).expect("a valid point");
        assert_eq!(
            a.core.add_peer(weak, None),
            Err(PeerTableError::WeakKey(weak))
        );
    }
    assert_eq!(a.core.peer_count(), 0);
    let err = crate::error::PilotError::from(PeerTableError::WeakKey(
        PublicKey::from_bytes_allowing_weak(identity).unwrap(),
    ));
    assert!(err.to_string().contains("small-order"), "{err}");
}

#[test]
fn a_stranger_flooding_handshakes_does_not_starve_a_trusted_peer() {
    let (mut a, mut b, _, kb) = pair();
    // C knows B's key (so its initiations carry a valid MAC1) but B does not trust it.
    let (c, _) = node(3, "203.0.113.3:51820");
    c.core.add_peer(kb, Some(b.addr)).unwrap();
    let to_b = c.core.peer(&kb).unwrap();
    let mut buf = vec![0u8; 2048];
    let mut out = vec![0u8; 2048];
    let mut cookies = 0;
    for _ in 0..1000 {
        let init = match to_b
            .state
            .lock()
            .tunn
            .as_mut()
            .expect("a peer with an endpoint has its Tunn")
            .format_handshake_initiation(&mut buf, true)
        {
            boringtun::noise::TunnResult::WriteToNetwork(d) => d.to_vec(),
            _ => panic!("an initiation"),
        };
        b.core
            .on_datagram(c.addr, &init, &mut out, &mut |_, _| cookies += 1);
    }
    // B answered C's share only; the rest got cookie replies (smaller than what came in).
    let counted = b.core.counters();
    assert_eq!(
        counted.unknown_key_handshakes,
        u64::from(DEFAULT_HANDSHAKES_PER_SOURCE)
    );
    assert_eq!(cookies, 1000 - DEFAULT_HANDSHAKES_PER_SOURCE as usize);
    // In the same second, A's handshake completes at once, with no cookie round trip.
    let mut wire = Wire::new();
    let pkt = ipv6_packet(a.ip, b.ip, b"still welcome");
    send_inner(&a, &pkt, &mut wire);
    pump(&mut [&mut a, &mut b], &mut wire);
    assert_eq!(b.delivered, vec![pkt]);
}

#[test]
fn a_tick_with_ten_thousand_idle_peers_visits_none_of_them() {
    let (a, _) = node(1, "198.51.100.1:51820");
    let (b, kb) = node(2, "198.51.100.2:51820");
    let idle: Vec<(PublicKey, Option<SocketAddr>)> = (0..10_000u32)
        .map(|i| {
            let mut seed = [0x33u8; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            (Identity::from_seed(seed).public_key(), None)
        })
        .collect();
    assert!(a.core.add_peers(&idle).iter().all(|r| r.is_ok()));
    a.core.add_peer(kb, None).unwrap();
    assert_eq!(a.core.peer_count(), 10_001);
    // Nobody talked yet: no peer holds a WireGuard state machine, none is in the timer set.
    assert_eq!(a.core.active_peers(), 0);
    assert!(a.core.peer(&idle[0].0).unwrap().state.lock().tunn.is_none());
    let mut buf = vec![0u8; a.core.out_room()];
    let mut sent = 0;
    assert_eq!(a.core.tick(true, &mut buf, &mut |_, _| sent += 1), 0);
    // A packet for one peer (no path yet: it waits in WireGuard): that peer alone joins.
    let mut wire = Wire::new();
    send_inner(&a, &ipv6_packet(a.ip, b.ip, b"hi"), &mut wire);
    assert_eq!(a.core.active_peers(), 1);
    assert_eq!(a.core.tick(false, &mut buf, &mut |_, _| sent += 1), 1);
    assert!(a.core.peer(&idle[0].0).unwrap().state.lock().tunn.is_none());
    // Once it is removed, a tick visits nobody again.
    a.core.remove_peer(&kb).unwrap();
    assert_eq!(a.core.active_peers(), 0);
    assert_eq!(a.core.tick(false, &mut buf, &mut |_, _| sent += 1), 0);
    assert_eq!(sent, 0, "no path: nothing was sent");
}

#[test]
fn junk_with_an_idle_peers_receiver_index_does_not_wake_it() {
    let (a, _) = node(1, "198.51.100.1:51820");
    let (_, kb) = node(2, "198.51.100.2:51820");
    a.core.add_peer(kb, None).unwrap();
    let idx = a.core.receiver_index_of(&kb).unwrap();
    assert_eq!(a.core.peer_by_receiver_index(idx).unwrap().public_key, kb);
    // A data message (type 4) naming the idle peer's index.
    let mut junk = vec![0u8; 64];
    junk[0] = 4;
    junk[4..8].copy_from_slice(&idx.to_le_bytes());
    let mut out = vec![0u8; a.core.out_room() + junk.len()];
    let r = a.core.on_datagram(
        "198.51.100.9:1".parse().unwrap(),
        &junk,
        &mut out,
        &mut |_, _| {},
    );
    assert_eq!(r, RxAction::Dropped);
    assert_eq!(a.core.active_peers(), 0);
    assert!(a.core.peer(&kb).unwrap().state.lock().tunn.is_none());
}

#[test]
fn peers_added_together_are_each_checked_as_one_at_a_time() {
    let (a, ka) = node(1, "198.51.100.1:51820");
    let (_, kb) = node(2, "198.51.100.2:51820");
    let (_, kc) = node(3, "198.51.100.3:51820");
    let ep: SocketAddr = "198.51.100.2:51820".parse().unwrap();
    let r = a
        .core
        .add_peers(&[(kb, None), (ka, None), (kc, None), (kb, Some(ep))]);
    assert_eq!(r[0], Ok(()));
    assert_eq!(r[1], Err(PeerTableError::OwnKey(ka)));
    assert_eq!(r[2], Ok(()));
    assert_eq!(r[3], Ok(()), "a repeat updates the endpoint");
    assert_eq!(a.core.peer_count(), 2);
    assert_eq!(a.core.path(&kb), Some(Path::Direct(ep)));
    // A peer with an endpoint runs its timers (persistent keepalives start the tunnel).
    assert_eq!(a.core.active_peers(), 1);
}

#[test]
fn the_hostname_index_follows_renames_and_removal() {
    let (a, _, _, kb) = pair();
    let (_, kc) = node(3, "198.51.100.3:51820");
    a.core.add_peer(kc, None).unwrap();
    a.core.set_hostname(&kb, Some("node-b".into())).unwrap();
    a.core.set_hostname(&kc, Some("node-c".into())).unwrap();
    assert_eq!(a.core.peer_by_hostname("node-c").unwrap().public_key, kc);
    // Renamed: the old name no longer resolves, the new one does.
    a.core.set_hostname(&kb, Some("worker".into())).unwrap();
    assert_eq!(a.core.peer_by_hostname("node-b"), None);
    assert_eq!(a.core.peer_by_hostname("worker").unwrap().public_key, kb);
    // A name taken over by another peer belongs to the last one named.
    a.core.set_hostname(&kc, Some("worker".into())).unwrap();
    assert_eq!(a.core.peer_by_hostname("worker").unwrap().public_key, kc);
    assert_eq!(a.core.peer_by_hostname("node-c"), None);
    // Removed: its name goes with it.
    a.core.remove_peer(&kc).unwrap();
    assert_eq!(a.core.peer_by_hostname("worker"), None);
    a.core.set_hostname(&kb, None).unwrap();
    assert_eq!(a.core.peer_by_hostname("worker"), None);
}
