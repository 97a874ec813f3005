//! The netstack's limits on a virtual clock: idle and half-open timeouts, and the memory bound;
//! and the packet boundary's buffer exchange (`port.rs`, `recycle.rs`).

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

/// A TCP SYN from `src` to `dst`:`port`, in a data-plane buffer (headroom, then the packet)
/// of capacity `cap`.
fn syn_in_buffer(src: Ipv6Addr, dst: Ipv6Addr, port: u16, cap: usize) -> Vec<u8> {
    use crate::wg::INNER_OFFSET;
    let mut b = Vec::with_capacity(cap);
    b.resize(INNER_OFFSET + 60, 0);
    let p = &mut b[INNER_OFFSET..];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&20u16.to_be_bytes());
    p[6] = 6;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    p[40..42].copy_from_slice(&40000u16.to_be_bytes());
    p[42..44].copy_from_slice(&port.to_be_bytes());
    p[44..48].copy_from_slice(&1u32.to_be_bytes());
    p[52] = 5 << 4;
    p[53] = 0x02;
    p[54..56].copy_from_slice(&1000u16.to_be_bytes());
    b
}

/// The data plane's threads hand packets to the stack and take its packets without a copy:
/// each side swaps buffers, and the buffers come back round (recycling) instead of new ones.
#[test]
fn packets_cross_the_boundary_by_swapping_buffers_that_come_back_round() {
    use crate::wg::INNER_OFFSET;
    const CAP: usize = 70_000;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (stack, port) = {
        let _g = rt.enter();
        Netstack::spawn(config(B)).unwrap()
    };
    let mut inner = port.into_inner(rt.handle().clone());
    let (a, b): (Ipv6Addr, Ipv6Addr) = (A.parse().unwrap(), B.parse().unwrap());
    let mut out = vec![vec![0u8; INNER_OFFSET + 1420]; 128];
    let mut sizes = vec![0usize; 128];
    let mut seen = std::collections::HashSet::new();
    for round in 0..20 {
        // A SYN to a closed port: the stack answers with a reset.
        let mut bufs = vec![syn_in_buffer(a, b, 9, CAP)];
        let sent_at = bufs[0].as_ptr();
        inner.writer.send_batch(&mut bufs).unwrap();
        assert_ne!(
            bufs[0].as_ptr(),
            sent_at,
            "round {round}: the packet was not swapped out"
        );
        assert!(
            bufs[0].capacity() >= CAP,
            "round {round}: the exchanged buffer is smaller"
        );

        let ours = out[0].as_ptr();
        let mut n = 0;
        for _ in 0..50 {
            n = inner
                .reader
                .recv_batch(&mut out, &mut sizes, Duration::from_millis(100))
                .unwrap();
            if n > 0 {
                break;
            }
        }
        assert_eq!(n, 1, "round {round}: no reset came out");
        let rst = &out[0][INNER_OFFSET..INNER_OFFSET + sizes[0]];
        assert_eq!(
            tcp_flags(&Packet::new(rst.to_vec())) & 0x04,
            0x04,
            "a reset"
        );
        assert_eq!(&rst[24..40], &a.octets(), "to the sender");
        assert!(
            out[0].len() >= INNER_OFFSET + 1420,
            "a buffer as long as the data plane's"
        );
        assert_ne!(
            out[0].as_ptr(),
            ours,
            "round {round}: the reset was copied, not swapped in"
        );
        seen.insert(out[0].as_ptr() as usize);
    }
    // The resets travel in the same few buffers: the one swapped out comes back round.
    assert!(
        seen.len() <= 3,
        "{} buffers for 20 packets: {seen:?}",
        seen.len()
    );
    // The driver counts at the end of its round, which may come just after the data plane
    // took the last reset.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let counted = |s: crate::netstack::NetstackStats| s.packets_in >= 20 && s.packets_out >= 20;
    while !counted(stack.stats()) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(stack.stats().packets_in, 20);
    assert_eq!(stack.stats().packets_out, 20);
}

/// Moves batches from `from`'s outbound side to `to`'s inbound side as the data plane's threads
/// do (buffers of `INNER_OFFSET + mtu` bytes with 64 KiB of capacity, truncated to each packet
/// before the write), until `stop`; returns the most bytes one packet had and how many passed.
fn bridge(
    mut from: Box<dyn crate::wg::InnerReader>,
    mut to: Box<dyn crate::wg::InnerWriter>,
    mtu: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(usize, usize)> {
    use crate::wg::INNER_OFFSET;
    std::thread::spawn(move || {
        let mut bufs: Vec<Vec<u8>> = (0..256)
            .map(|_| Vec::with_capacity(INNER_OFFSET + 65_600))
            .collect();
        let mut sizes = vec![0usize; 256];
        let (mut largest, mut packets) = (0, 0);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !stop.load(std::sync::atomic::Ordering::Relaxed)
            && std::time::Instant::now() < deadline
        {
            for b in bufs.iter_mut() {
                b.resize(INNER_OFFSET + mtu, 0);
            }
            let n = from
                .recv_batch(&mut bufs, &mut sizes, Duration::from_millis(20))
                .unwrap();
            for (b, &s) in bufs[..n].iter_mut().zip(&sizes) {
                largest = largest.max(s);
                b.truncate(INNER_OFFSET + s);
            }
            packets += n;
            to.send_batch(&mut bufs[..n]).unwrap();
        }
        (largest, packets)
    })
}

/// What [`offload_transfer`] saw.
struct Crossing {
    /// The largest packet A's boundary handed over.
    largest_a_to_b: usize,
    /// Packets A's boundary handed over.
    crossed_a_to_b: usize,
    /// Packets that reached B's stack.
    into_b: usize,
}

/// Moves 4 MiB from stack A (tunnel MTU `mtu_a`) to stack B (`mtu_b`) through their packet
/// boundaries (`into_inner`) and two bridges as the data plane's threads; panics unless the
/// bytes arrive whole and in order and nothing is dropped on the way out.
fn offload_transfer(mtu_a: u16, mtu_b: u16) -> Crossing {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    const LEN: usize = 4 << 20;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (mut ca, mut cb) = (config(A), config(B));
    (ca.mtu, cb.mtu) = (mtu_a, mtu_b);
    let ((a, pa), (b, pb)) = {
        let _g = rt.enter();
        (Netstack::spawn(ca).unwrap(), Netstack::spawn(cb).unwrap())
    };
    let (ia, ib) = (
        pa.into_inner(rt.handle().clone()),
        pb.into_inner(rt.handle().clone()),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let ab = bridge(ia.reader, ib.writer, usize::from(mtu_a), stop.clone());
    let ba = bridge(ib.reader, ia.writer, usize::from(mtu_b), stop.clone());
    let pattern = |i: usize| ((i * 31) ^ (i >> 13)) as u8;
    let got = rt.block_on(async {
        let mut l = b.listen(80).await.unwrap();
        let mut client = a.connect(b_port(80)).await.unwrap();
        let mut server = l.accept().await.unwrap();
        let send = tokio::spawn(async move {
            let data: Vec<u8> = (0..LEN).map(pattern).collect();
            client.write_all(&data).await.unwrap();
            client.shutdown().await.unwrap();
            client
        });
        let mut got = Vec::with_capacity(LEN);
        tokio::time::timeout(Duration::from_secs(30), server.read_to_end(&mut got))
            .await
            .expect("the transfer finished")
            .unwrap();
        drop(send.await.unwrap());
        got
    });
    stop.store(true, Ordering::Relaxed);
    let ((largest_a_to_b, crossed_a_to_b), (largest_b_to_a, _)) =
        (ab.join().unwrap(), ba.join().unwrap());
    assert_eq!(got.len(), LEN);
    assert!(
        got.iter().enumerate().all(|(i, &v)| v == pattern(i)),
        "bytes arrived whole and in order"
    );
    assert!(largest_b_to_a <= usize::from(mtu_b));
    assert!(
        crossed_a_to_b >= LEN / usize::from(mtu_a),
        "{crossed_a_to_b} packets crossed"
    );
    assert_eq!(a.stats().packets_dropped, 0);
    Crossing {
        largest_a_to_b,
        crossed_a_to_b,
        into_b: b.stats().packets_in as usize,
    }
}

/// TCP offload end to end: smoltcp's large segments leave cut to the tunnel MTU, arrive joined
/// again (far fewer packets reach the stack than crossed), and the bytes arrive whole and in
/// order.
#[test]
fn large_segments_leave_cut_to_the_mtu_and_arrive_joined() {
    let c = offload_transfer(1420, 1420);
    assert!(
        c.largest_a_to_b <= 1420,
        "a {}-byte packet",
        c.largest_a_to_b
    );
    assert!(
        c.into_b * 4 < c.crossed_a_to_b,
        "{} packets reached B for {} that crossed: segments were not joined",
        c.into_b,
        c.crossed_a_to_b
    );
}

/// A peer whose tunnel MTU is below ours announces a smaller MSS in its SYN, and with offload
/// on we still never send it a packet larger than its MTU (the SYNs' MSS options are rewritten
/// both ways, `offload.rs`).
#[test]
fn a_peer_with_a_smaller_mtu_gets_no_packet_above_it() {
    let c = offload_transfer(1420, 1280);
    assert!(
        c.largest_a_to_b <= 1280,
        "a {}-byte packet",
        c.largest_a_to_b
    );
    assert!(c.largest_a_to_b > 1200, "full-sized segments");
}
