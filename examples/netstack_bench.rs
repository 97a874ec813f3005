//! In-memory netstack-to-netstack benchmark: single-stream throughput in each direction, the
//! same through the SOCKS5 proxy and an exposed port, and what an idle netstack costs.
//!
//! `cargo run --release --example netstack_bench [MEGABYTES]` (default 200). Exits 1 if a
//! transfer stalled (no packet for 150 ms), after printing both stacks' `describe()`.

use std::net::{Ipv6Addr, SocketAddrV6};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pilot::mapping::{Addr48, Hostname, DEFAULT_NETWORK};
use pilot::netstack::{Congestion, Netstack, NetstackConfig};
use pilot::userspace::expose::Exposer;
use pilot::userspace::overlay_net::OverlayNet;
use pilot::userspace::socks5::{Socks5Config, Socks5Server, StaticResolver};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// 150 ms periods in which neither stack sent a packet during a transfer: each is a stall
/// (a lost segment waiting for smoltcp's 1 s retransmission timeout, or a lost wakeup).
static STALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn ip(s: &str) -> Ipv6Addr {
    DEFAULT_NETWORK.ipv6(s.parse::<Addr48>().unwrap())
}

fn pair(congestion: Congestion) -> (Netstack, Netstack) {
    let (ab_tx, ab_rx) = mpsc::channel(2048);
    let (ba_tx, ba_rx) = mpsc::channel(2048);
    let mut ca = NetstackConfig::new(ip("000a.000a.000a"));
    let mut cb = NetstackConfig::new(ip("000b.000b.000b"));
    ca.congestion = congestion;
    cb.congestion = congestion;
    let a = Netstack::spawn_with_channels(ca, ab_tx, ba_rx).unwrap();
    let b = Netstack::spawn_with_channels(cb, ba_tx, ab_rx).unwrap();
    (a, b)
}

async fn pump<W: AsyncWriteExt + Unpin>(w: &mut W, bytes: u64) {
    let buf = vec![0x5au8; 256 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = (buf.len() as u64).min(left) as usize;
        w.write_all(&buf[..n]).await.unwrap();
        left -= n as u64;
    }
    w.shutdown().await.unwrap();
}

async fn drain<R: AsyncReadExt + Unpin>(r: &mut R) -> u64 {
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            return got;
        }
        got += n as u64;
    }
}

fn cpu_secs() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn report(name: &str, bytes: u64, start: Instant, cpu0: f64) {
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    println!(
        "{name:<40} {:>8.0} Mbit/s  ({} MB in {:.2} s, {:.2} CPU-s, {:.0}% of a core)",
        bytes as f64 * 8.0 / secs / 1e6,
        bytes >> 20,
        secs,
        cpu,
        cpu / secs * 100.0
    );
}

/// A connects to B's port; `upload` means A sends.
async fn single_stream(congestion: Congestion, bytes: u64, upload: bool) {
    let (a, b) = pair(congestion);
    let mut l = b.listen(5001).await.unwrap();
    let server = tokio::spawn(async move {
        let mut s = l.accept().await.unwrap();
        if upload {
            drain(&mut s).await
        } else {
            pump(&mut s, bytes).await;
            bytes
        }
    });
    let watch = {
        let (a, b) = (a.clone(), b.clone());
        tokio::spawn(async move {
            let mut last = (0, 0);
            for _ in 0..200 {
                tokio::time::sleep(Duration::from_millis(150)).await;
                let now = (a.stats().packets_out, b.stats().packets_out);
                if now == last {
                    STALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    println!(
                        "STALL\n{}{}",
                        a.describe().await.unwrap(),
                        b.describe().await.unwrap()
                    );
                }
                last = now;
            }
        })
    };
    let start = Instant::now();
    let cpu0 = cpu_secs();
    let mut c = a
        .connect(SocketAddrV6::new(ip("000b.000b.000b"), 5001, 0, 0))
        .await
        .unwrap();
    if upload {
        pump(&mut c, bytes).await;
        assert_eq!(server.await.unwrap(), bytes);
    } else {
        assert_eq!(drain(&mut c).await, bytes);
        server.await.unwrap();
    }
    watch.abort();
    let dir = if upload { "upload" } else { "download" };
    report(
        &format!("netstack {dir} ({congestion:?})"),
        bytes,
        start,
        cpu0,
    );
    let (sa, sb) = (a.stats(), b.stats());
    println!(
        "    packets A→B {} B→A {} ({} bytes of payload per data packet), wakeups A {} B {}, dropped {}",
        sa.packets_out,
        sb.packets_out,
        bytes / sa.packets_out.max(sb.packets_out).max(1),
        sa.wakeups,
        sb.wakeups,
        sa.packets_dropped + sb.packets_dropped
    );
}

/// Loopback client → SOCKS5 on A → netstacks → exposed port on B → loopback server.
async fn through_socks(bytes: u64) {
    let (a, b) = pair(Congestion::Cubic);
    let sink = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_addr = sink.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = sink.accept().await.unwrap();
        pump(&mut s, bytes).await;
    });
    let exposer = Exposer::new(OverlayNet::Userspace(b));
    exposer.add(8080, &sink_addr.to_string()).await.unwrap();
    let resolver = StaticResolver::default().with_peer(
        Some(Hostname::new("worker-node").unwrap()),
        ip("000b.000b.000b"),
    );
    let cfg = Socks5Config {
        listen: "127.0.0.1:0".parse().unwrap(),
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
    tokio::spawn(server.run());

    let start = Instant::now();
    let cpu0 = cpu_secs();
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let name = b"worker-node.pilot";
    let mut req = vec![5, 1, 0, 5, 1, 0, 3, name.len() as u8];
    req.extend_from_slice(name);
    req.extend_from_slice(&8080u16.to_be_bytes());
    s.write_all(&req).await.unwrap();
    let mut head = [0u8; 2 + 22];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(head[..2], [5, 0]);
    assert_eq!(head[3], 0, "SOCKS reply {}", head[3]);
    assert_eq!(drain(&mut s).await, bytes);
    report(
        "SOCKS5 → netstacks → exposed port (download)",
        bytes,
        start,
        cpu0,
    );
}

async fn idle(secs: u64) {
    let (a, b) = pair(Congestion::Cubic);
    let mut l = b.listen(7).await.unwrap();
    let _c = a
        .connect(SocketAddrV6::new(ip("000b.000b.000b"), 7, 0, 0))
        .await
        .unwrap();
    let _s = l.accept().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let w0 = a.stats().wakeups + b.stats().wakeups;
    let cpu0 = cpu_secs();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let w = a.stats().wakeups + b.stats().wakeups - w0;
    let cpu = cpu_secs() - cpu0;
    println!(
        "idle: two netstacks, one open connection, one listener: {w} driver wakeups and {:.1} ms CPU in {secs} s",
        cpu * 1e3
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mb: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let bytes = mb << 20;
    for congestion in [Congestion::Cubic, Congestion::None] {
        single_stream(congestion, bytes, true).await;
        single_stream(congestion, bytes, false).await;
    }
    through_socks(bytes).await;
    idle(5).await;
    let stalls = STALLS.load(std::sync::atomic::Ordering::Relaxed);
    println!("stalls (150 ms without a packet during a transfer): {stalls}");
    if stalls > 0 {
        std::process::exit(1);
    }
}
