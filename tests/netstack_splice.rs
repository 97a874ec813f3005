//! Splicing a netstack connection to a local TCP socket (`NetstackStream::splice`, the path of
//! the SOCKS5 proxy and the port exposer): bytes arrive intact and in order both ways,
//! including those the pipe held before the splice, and half closes pass through.

mod support;

use std::time::Duration;

use support::netstack::{dial_b, pair, pattern, send_pattern};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A connected loopback pair: (one end, the other end).
async fn loopback() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (s, _) = l.accept().await.unwrap();
    (c, s)
}

/// Reads to the end; checks `prefix`, then `len` bytes of the pattern.
async fn check<R: AsyncReadExt + Unpin>(r: &mut R, prefix: &[u8], seed: u8, len: usize) {
    let mut all = Vec::new();
    r.read_to_end(&mut all).await.unwrap();
    assert_eq!(all.len(), prefix.len() + len, "bytes received");
    assert_eq!(
        &all[..prefix.len()],
        prefix,
        "the bytes from before the splice come first"
    );
    for (k, b) in all[prefix.len()..].iter().enumerate() {
        assert_eq!(*b, pattern(seed, k), "byte {k} differs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spliced_connection_carries_eight_megabytes_each_way_with_the_earlier_bytes_first() {
    let (a, b) = pair();
    let len = 8 << 20;
    let mut l = b.listen(8080).await.unwrap();
    let mut c = dial_b(&a, 8080).await;
    // Bytes the peer sends before B splices: they wait in B's pipe.
    c.write_all(b"early ").await.unwrap();
    let mut s = l.accept().await.unwrap();
    // Bytes B's application wrote to the stream itself before splicing.
    s.write_all(b"hello ").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (local, mut far) = loopback().await;
    let splice = tokio::spawn(s.splice(local, b"first ".to_vec(), 64 * 1024));
    let (mut cr, mut cw) = tokio::io::split(c);
    let (mut fr, mut fw) = far.split();
    tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(
            send_pattern(&mut cw, 1, len),
            check(&mut fr, b"early ", 1, len),
            send_pattern(&mut fw, 2, len),
            check(&mut cr, b"hello first ", 2, len),
        )
    })
    .await
    .expect("both directions complete");
    tokio::time::timeout(Duration::from_secs(10), splice)
        .await
        .expect("the splice ends with the connection")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_close_passes_through_a_splice_both_ways() {
    let (a, b) = pair();
    let mut l = b.listen(8080).await.unwrap();
    let mut c = dial_b(&a, 8080).await;
    let s = l.accept().await.unwrap();
    let (local, mut far) = loopback().await;
    let splice = tokio::spawn(s.splice(local, Vec::new(), 4096));
    // The driver itself moves the bytes (not the copy loop the splice falls back to).
    let mut spliced = false;
    for _ in 0..100 {
        spliced = b.describe().await.unwrap().contains("spliced true");
        if spliced {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(spliced, "{}", b.describe().await.unwrap());
    // The peer finishes first: the local socket reads the end, and can still answer.
    c.write_all(b"request").await.unwrap();
    c.shutdown().await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), far.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, b"request");
    far.write_all(b"response").await.unwrap();
    far.shutdown().await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, b"response");
    tokio::time::timeout(Duration::from_secs(10), splice)
        .await
        .expect("the splice ends with the connection")
        .unwrap()
        .unwrap();
}
