//! Two netstacks wired to each other in memory: A's outgoing packets are B's incoming ones and
//! the other way round, optionally through a lossy, reordering link.

mod support;

use std::net::SocketAddrV6;
use std::time::Duration;

use pilot::netstack::{Netstack, NetstackConfig, NetstackError, NetstackStream, Packet};
use support::netstack::{addr, dial_b, pair, pattern, send_pattern, A, B};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// A link that drops one packet in `drop_every` and, one time in `swap_every`, lets the next
/// packet overtake this one (only if a next packet is already queued, so nothing is held back).
fn lossy_link(
    mut rx: mpsc::Receiver<Packet>,
    tx: mpsc::Sender<Packet>,
    drop_every: u64,
    swap_every: u64,
) {
    tokio::spawn(async move {
        let mut n = 0u64;
        while let Some(p) = rx.recv().await {
            n += 1;
            if n % drop_every == 0 {
                continue;
            }
            let mut batch = vec![p];
            if n % swap_every == 0 {
                if let Ok(next) = rx.try_recv() {
                    n += 1;
                    batch.insert(0, next);
                }
            }
            for p in batch {
                if tx.send(p).await.is_err() {
                    return;
                }
            }
        }
    });
}

fn lossy_pair() -> (Netstack, Netstack) {
    let mut cfg_a = NetstackConfig::new(addr(A));
    let mut cfg_b = NetstackConfig::new(addr(B));
    cfg_a.tcp_buffer = 256 * 1024;
    cfg_b.tcp_buffer = 256 * 1024;
    // Checked here so that a segment our window clamping corrupted would be dropped and fail
    // the transfer.
    cfg_a.verify_rx_checksums = true;
    cfg_b.verify_rx_checksums = true;
    let (a, pa) = Netstack::spawn(cfg_a).unwrap();
    let (b, pb) = Netstack::spawn(cfg_b).unwrap();
    lossy_link(pa.from_stack, pb.to_stack, 101, 23);
    lossy_link(pb.from_stack, pa.to_stack, 103, 29);
    (a, b)
}

/// Echoes one connection to `stack`'s port 7 (all it reads, then closes); the task returns the
/// accepted stream's local port.
async fn echo_once(stack: &Netstack) -> tokio::task::JoinHandle<u16> {
    let mut l = stack.listen(7).await.unwrap();
    tokio::spawn(async move {
        let mut s = l.accept().await.unwrap();
        echo(&mut s).await;
        s.local_addr().port()
    })
}

/// Writes back all `s` reads, then closes it.
async fn echo(s: &mut NetstackStream) {
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    s.write_all(&buf).await.unwrap();
    s.shutdown().await.unwrap();
}

async fn check_pattern<R: AsyncReadExt + Unpin>(r: &mut R, len: usize) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        for (k, b) in buf[..n].iter().enumerate() {
            assert_eq!(*b, pattern(0, got + k), "byte {} differs", got + k);
        }
        got += n;
    }
    assert_eq!(got, len);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_carries_bytes_both_ways_and_closes_cleanly() {
    let (a, b) = pair();
    let server = echo_once(&b).await;
    let mut c = dial_b(&a, 7).await;
    c.write_all(b"hello over the overlay").await.unwrap();
    c.shutdown().await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, b"hello over the overlay");
    assert_eq!(server.await.unwrap(), 7, "the server's local port");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_megabytes_arrive_intact_in_each_direction() {
    let (a, b) = pair();
    let len = 8 << 20;
    let mut l = b.listen(1000).await.unwrap();
    let server = tokio::spawn(async move {
        let s = l.accept().await.unwrap();
        let (mut r, mut w) = tokio::io::split(s);
        tokio::join!(check_pattern(&mut r, len), send_pattern(&mut w, 0, len));
    });
    let c = dial_b(&a, 1000).await;
    let (mut r, mut w) = tokio::io::split(c);
    tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(send_pattern(&mut w, 0, len), check_pattern(&mut r, len))
    })
    .await
    .unwrap();
    server.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_recovers_from_a_link_that_drops_and_reorders() {
    let (a, b) = lossy_pair();
    let len = 2 << 20;
    let mut l = b.listen(1000).await.unwrap();
    let server = tokio::spawn(async move {
        let mut s = l.accept().await.unwrap();
        send_pattern(&mut s, 0, len).await;
    });
    let mut c = dial_b(&a, 1000).await;
    tokio::time::timeout(Duration::from_secs(60), check_pattern(&mut c, len))
        .await
        .unwrap();
    server.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_connections_all_complete() {
    let (a, b) = pair();
    let mut l = b.listen(1000).await.unwrap();
    tokio::spawn(async move {
        for _ in 0..50 {
            let mut s = l.accept().await.unwrap();
            tokio::spawn(async move { echo(&mut s).await });
        }
    });
    let mut tasks = Vec::new();
    for i in 0..50u32 {
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = dial_b(&a, 1000).await;
            let msg = vec![i as u8; 100_000];
            let (mut r, mut w) = tokio::io::split(&mut c);
            let (_, back) = tokio::join!(
                async {
                    w.write_all(&msg).await.unwrap();
                    w.shutdown().await.unwrap();
                },
                async {
                    let mut back = Vec::new();
                    r.read_to_end(&mut back).await.unwrap();
                    back
                }
            );
            assert_eq!(back, msg);
        }));
    }
    support::join_all_within(Duration::from_secs(60), tasks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_refuses_the_connection() {
    let (a, _b) = pair();
    let e = a
        .connect(SocketAddrV6::new(addr(B), 4444, 0, 0))
        .await
        .unwrap_err();
    assert!(matches!(e, NetstackError::Refused(_)), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_times_the_connection_out() {
    let mut cfg = NetstackConfig::new(addr(A));
    cfg.connect_timeout = Duration::from_millis(300);
    let (a, _port) = Netstack::spawn(cfg).unwrap();
    let e = a
        .connect(SocketAddrV6::new(addr(B), 80, 0, 0))
        .await
        .unwrap_err();
    assert!(matches!(e, NetstackError::TimedOut(..)), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_outside_the_overlay_are_refused_before_any_packet() {
    let (a, mut port) = Netstack::spawn(NetstackConfig::new(addr(A))).unwrap();
    let e = a
        .connect(SocketAddrV6::new("2001:db8::1".parse().unwrap(), 80, 0, 0))
        .await
        .unwrap_err();
    assert!(matches!(e, NetstackError::NotInOverlay(..)), "{e}");
    assert!(port.from_stack.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_cannot_be_listened_on_twice_until_released() {
    let (a, _port) = Netstack::spawn(NetstackConfig::new(addr(A))).unwrap();
    let l = a.listen(1001).await.unwrap();
    assert!(matches!(
        a.listen(1001).await.unwrap_err(),
        NetstackError::PortInUse(1001)
    ));
    drop(l);
    a.listen(1001).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_netstack_does_not_wake_up() {
    let (a, b) = pair();
    let mut l = b.listen(7).await.unwrap();
    let _c = dial_b(&a, 7).await;
    let _s = l.accept().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = a.stats().wakeups + b.stats().wakeups;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = a.stats().wakeups + b.stats().wakeups;
    assert!(
        after - before <= 2,
        "{} wakeups in an idle second",
        after - before
    );
}

/// Two stacks joined through the data plane's blocking inner-side interface, with one thread
/// per direction doing what the data plane's threads do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stacks_joined_through_the_data_plane_inner_interface_talk() {
    use pilot::wg::{InnerReader, InnerWriter, INNER_OFFSET};
    let (a, pa) = Netstack::spawn(NetstackConfig::new(addr(A))).unwrap();
    let (b, pb) = Netstack::spawn(NetstackConfig::new(addr(B))).unwrap();
    let rt = tokio::runtime::Handle::current();
    let ia = pa.into_inner(rt.clone());
    let ib = pb.into_inner(rt);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pump = |mut r: Box<dyn InnerReader>, mut w: Box<dyn InnerWriter>| {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut bufs: Vec<Vec<u8>> = (0..64).map(|_| vec![0u8; INNER_OFFSET + 1500]).collect();
            let mut sizes = vec![0usize; 64];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let n = r
                    .recv_batch(&mut bufs, &mut sizes, Duration::from_millis(50))
                    .unwrap();
                let mut out: Vec<Vec<u8>> = (0..n)
                    .map(|i| bufs[i][..INNER_OFFSET + sizes[i]].to_vec())
                    .collect();
                w.send_batch(&mut out).unwrap();
            }
        })
    };
    let t1 = pump(ia.reader, ib.writer);
    let t2 = pump(ib.reader, ia.writer);

    let server = echo_once(&b).await;
    let mut c = dial_b(&a, 7).await;
    let msg = vec![7u8; 300_000];
    let (mut r, mut w) = tokio::io::split(&mut c);
    let (_, back) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(
            async {
                w.write_all(&msg).await.unwrap();
                w.shutdown().await.unwrap();
            },
            async {
                let mut back = Vec::new();
                r.read_to_end(&mut back).await.unwrap();
                back
            }
        )
    })
    .await
    .unwrap();
    assert_eq!(back, msg);
    server.await.unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::task::spawn_blocking(move || {
        t1.join().unwrap();
        t2.join().unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_our_own_address_is_refused_not_sent() {
    let (a, mut port) = Netstack::spawn(NetstackConfig::new(addr(A))).unwrap();
    let e = a
        .connect(SocketAddrV6::new(addr(A), 80, 0, 0))
        .await
        .unwrap_err();
    assert!(matches!(e, NetstackError::OwnAddress(_)), "{e}");
    assert_eq!(
        std::io::Error::from(e).kind(),
        std::io::ErrorKind::ConnectionRefused
    );
    assert!(port.from_stack.try_recv().is_err());
}
