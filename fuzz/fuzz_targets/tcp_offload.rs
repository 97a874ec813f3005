//! The userspace netstack's TCP offload (`pilot::netstack::offload`): a batch of decrypted
//! packets (whatever a trusted peer's tunnel delivers) is coalesced, and its first packet is
//! split at two MTUs, and its SYN MSS option rewritten both ways. None of it panics; coalescing removes exactly the headers of the segments it
//! joined, changes no other packet but the runs' first ones (which only grow), and a split
//! carries the packet's payload whole in segments of at most the MTU; an MSS rewrite changes at
//! most the option's value and the checksum.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pilot::netstack::offload::{clamp_syn_mss, raise_syn_mss, segment_count, split, Coalescer};
use pilot::wg::INNER_OFFSET;

fuzz_target!(|data: &[u8]| {
    // The batch: packets after 2-byte lengths, in buffers like the data plane's.
    let mut bufs = Vec::new();
    let mut rest = data;
    while rest.len() >= 2 && bufs.len() < 64 {
        let n = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let mut b = Vec::with_capacity(INNER_OFFSET + 65_600);
        b.resize(INNER_OFFSET, 0);
        b.extend_from_slice(&rest[2..2 + n]);
        bufs.push(b);
        rest = &rest[2 + n..];
    }
    if let Some(first) = bufs.first() {
        check_split(&first[INNER_OFFSET..]);
        check_mss(&first[INNER_OFFSET..]);
    }
    let before = bufs.clone();
    let joined = Coalescer::default().coalesce(&mut bufs);
    let mut headers = 0;
    let mut emptied = 0;
    for (b, a) in bufs.iter().zip(&before) {
        if b == a {
            continue;
        }
        if b.len() == INNER_OFFSET {
            emptied += 1;
            headers += 40 + usize::from(a[INNER_OFFSET + 52] >> 4) * 4;
            continue;
        }
        assert!(b.len() > a.len(), "a changed packet that is not a run's first");
        for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
            let field = i - INNER_OFFSET.min(i);
            let may_change = i >= INNER_OFFSET && matches!(field, 4 | 5 | 53 | 54 | 55);
            assert!(x == y || may_change, "byte {i} of a run's first packet changed");
        }
    }
    assert_eq!(joined, emptied);
    let total = |v: &[Vec<u8>]| v.iter().map(Vec::len).sum::<usize>();
    assert_eq!(total(&bufs) + headers, total(&before));
});

fn check_split(p: &[u8]) {
    for mtu in [1280usize, 1420] {
        let Some(k) = segment_count(p, mtu).filter(|&k| k <= 64) else {
            continue;
        };
        let mut input = p.to_vec();
        let mut out = vec![vec![0u8; INNER_OFFSET + mtu]; k];
        let mut sizes = vec![0usize; k];
        let Ok(n) = split(&mut input, mtu, &mut out, &mut sizes) else {
            continue;
        };
        assert!(n <= k);
        let thl = usize::from(p[52] >> 4) * 4;
        let mut payload = Vec::new();
        for (b, &s) in out[..n].iter().zip(&sizes) {
            assert!(s <= mtu, "a {s}-byte segment at MTU {mtu}");
            let seg = &b[INNER_OFFSET..INNER_OFFSET + s];
            payload.extend_from_slice(&seg[40 + thl..]);
        }
        assert_eq!(payload, p[40 + thl..], "the payload, whole and in order");
    }
}

fn check_mss(p: &[u8]) {
    for rewrite in [raise_syn_mss, clamp_syn_mss] {
        let mut q = p.to_vec();
        rewrite(&mut q, 1420);
        assert_eq!(q.len(), p.len());
        let changed = p.iter().zip(&q).filter(|(a, b)| a != b).count();
        assert!(changed <= 4, "{changed} bytes changed");
    }
}
