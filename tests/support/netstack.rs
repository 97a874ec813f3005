//! Two netstacks cross-wired in memory (A's outgoing packets are B's incoming ones and the other
//! way round), and the byte pattern the transfers over them carry.

use std::net::{Ipv6Addr, SocketAddrV6};

use pilot::netstack::{Netstack, NetstackConfig, NetstackStream};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Stack A's overlay address.
pub const A: &str = "fdc5:7a3e:91b4::a:a:a";
/// Stack B's overlay address.
pub const B: &str = "fdc5:7a3e:91b4::b:b:b";

pub fn addr(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// Directly cross-wired stacks at `A` and `B`.
pub fn pair() -> (Netstack, Netstack) {
    let (ab_tx, ab_rx) = mpsc::channel(2048);
    let (ba_tx, ba_rx) = mpsc::channel(2048);
    let a = Netstack::spawn_with_channels(NetstackConfig::new(addr(A)), ab_tx, ba_rx).unwrap();
    let b = Netstack::spawn_with_channels(NetstackConfig::new(addr(B)), ba_tx, ab_rx).unwrap();
    (a, b)
}

/// A connection from `from` to stack B's `port`; panics unless it is accepted.
pub async fn dial_b(from: &Netstack, port: u16) -> NetstackStream {
    from.connect(SocketAddrV6::new(addr(B), port, 0, 0))
        .await
        .unwrap()
}

/// Byte `i` of the pattern `seed` (seeds tell the directions of one test apart).
pub fn pattern(seed: u8, i: usize) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 11)) as u8 ^ seed
}

/// Writes `len` bytes of pattern `seed` in 64 KiB writes, then shuts `w` down.
pub async fn send_pattern<W: AsyncWriteExt + Unpin>(w: &mut W, seed: u8, len: usize) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0;
    while sent < len {
        let n = buf.len().min(len - sent);
        for (k, b) in buf[..n].iter_mut().enumerate() {
            *b = pattern(seed, sent + k);
        }
        w.write_all(&buf[..n]).await.unwrap();
        sent += n;
    }
    w.shutdown().await.unwrap();
}
