use super::*;

const SRC: [u8; 16] = [
    0xfd, 0xc5, 0x7a, 0x3e, 0x91, 0xb4, 0, 0, 0, 0, 0, 0xa, 0, 0xa, 0, 0xa,
];
const DST: [u8; 16] = [
    0xfd, 0xc5, 0x7a, 0x3e, 0x91, 0xb4, 0, 0, 0, 0, 0, 0xb, 0, 0xb, 0, 0xb,
];

/// The TCP checksum over the IPv6 pseudo-header, as a receiver computes it (0 = valid).
pub(in crate::netstack) fn tcp_checksum(p: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    };
    add(&p[8..40]);
    let len = (p.len() - 40) as u32;
    add(&len.to_be_bytes());
    add(&[0, 0, 0, 6]);
    add(&p[40..]);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A valid IPv6 TCP segment from port `sport` with `flags`, `seq`, 12 bytes of options
/// (timestamps) and `data`.
fn segment(sport: u16, flags: u8, seq: u32, data: &[u8]) -> Vec<u8> {
    let thl = 32;
    let mut p = vec![0u8; 40 + thl];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&((thl + data.len()) as u16).to_be_bytes());
    p[6] = 6;
    p[7] = 64;
    p[8..24].copy_from_slice(&SRC);
    p[24..40].copy_from_slice(&DST);
    let t = &mut p[40..];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&80u16.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&7777u32.to_be_bytes());
    t[12] = (thl as u8 / 4) << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&500u16.to_be_bytes());
    t[20..24].copy_from_slice(&[1, 1, 8, 10]);
    t[24..32].copy_from_slice(&[0, 0, 0, 9, 0, 0, 0, 3]);
    p.extend_from_slice(data);
    let c = tcp_checksum(&p);
    p[56..58].copy_from_slice(&c.to_be_bytes());
    p
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i * 7) as u8 ^ seed).collect()
}

/// `p` in a data plane buffer (headroom before it, 64 KiB of capacity).
fn in_buffer(p: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADROOM + 65536 + 64);
    b.resize(HEADROOM, 0);
    b.extend_from_slice(p);
    b
}

fn payload(p: &[u8]) -> &[u8] {
    &p[40 + usize::from(p[52] >> 4) * 4..]
}

fn flags(p: &[u8]) -> u8 {
    p[53]
}

/// `p` split at `mtu` into fresh buffers.
fn split_all(p: &[u8], mtu: usize) -> Vec<Vec<u8>> {
    let mut p = p.to_vec();
    let n = segment_count(&p, mtu).unwrap();
    let mut bufs = vec![vec![0u8; HEADROOM + mtu]; n];
    let mut sizes = vec![0usize; n];
    assert_eq!(split(&mut p, mtu, &mut bufs, &mut sizes).unwrap(), n);
    bufs.iter()
        .zip(&sizes)
        .map(|(b, &s)| b[HEADROOM..HEADROOM + s].to_vec())
        .collect()
}

#[test]
fn a_large_segment_splits_into_valid_segments_of_the_mtu_that_carry_it_in_order() {
    let body = data(10_000, 1);
    let big = segment(4000, ACK | PSH, 1000, &body);
    let segs = split_all(&big, 1420);
    assert_eq!(segs.len(), 10_000usize.div_ceil(1420 - 72));
    let mut joined = Vec::new();
    let mut next = 1000u32;
    for (i, s) in segs.iter().enumerate() {
        assert!(s.len() <= 1420);
        assert_eq!(tcp_checksum(s), 0, "segment {i}");
        assert_eq!(usize::from(u16::from_be_bytes([s[4], s[5]])), s.len() - 40);
        assert_eq!(seq(s), next);
        assert_eq!(s[60..72], big[60..72], "options copied");
        let last = i + 1 == segs.len();
        assert_eq!(flags(s) & PSH != 0, last, "PSH only on the last");
        next += payload(s).len() as u32;
        joined.extend_from_slice(payload(s));
    }
    assert_eq!(joined, body);
}

#[test]
fn only_plain_ipv6_tcp_segments_are_split() {
    let mut udp = segment(4000, ACK, 1, &data(3000, 2));
    udp[6] = 17;
    assert_eq!(segment_count(&udp, 1420), None);
    let mut short = segment(4000, ACK, 1, &data(3000, 2));
    short.truncate(2000); // the IPv6 payload length no longer matches
    assert_eq!(segment_count(&short, 1420), None);
    let mut bufs = vec![vec![0u8; HEADROOM + 1420]; 4];
    let mut sizes = vec![0usize; 4];
    assert!(split(&mut udp, 1420, &mut bufs, &mut sizes).is_err());
}

#[test]
fn split_segments_coalesce_back_into_the_original_around_other_flows_and_protocols() {
    let a = segment(4000, ACK | PSH, 5000, &data(20_000, 3));
    let b = segment(4001, ACK, 9000, &data(6_000, 4));
    let mut udp = segment(4002, ACK, 1, &data(100, 5));
    udp[6] = 17;
    let (sa, sb) = (split_all(&a, 1420), split_all(&b, 1420));
    // Interleave the two flows, with a UDP packet in the middle.
    let mut batch = Vec::new();
    for i in 0..sa.len().max(sb.len()) {
        batch.extend(sa.get(i).map(|p| in_buffer(p)));
        batch.extend(sb.get(i).map(|p| in_buffer(p)));
        if i == 3 {
            batch.push(in_buffer(&udp));
        }
    }
    let total = batch.len();
    let joined = Coalescer::default().coalesce(&mut batch);
    let left: Vec<&[u8]> = batch
        .iter()
        .filter(|b| b.len() > HEADROOM)
        .map(|b| &b[HEADROOM..])
        .collect();
    assert_eq!(joined, total - 3);
    assert_eq!(left.len(), 3);
    let ((ja, jb), ju) = ((left[0], left[1]), left[2]);
    assert_eq!(ju, &udp[..]);
    for (j, orig) in [(ja, &a), (jb, &b)] {
        assert_eq!(payload(j), payload(orig));
        assert_eq!(
            j[..56],
            orig[..56],
            "headers, lengths and flags as the original's"
        );
        assert_eq!(j[58..72], orig[58..72]);
    }
}

#[test]
fn segments_that_do_not_continue_a_run_are_left_alone() {
    let d = data(1000, 6);
    let first = || in_buffer(&segment(4000, ACK, 100, &d));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a gap", segment(4000, ACK, 1101, &d)),
        ("a FIN", segment(4000, ACK | FIN, 1100, &d)),
        ("no data", segment(4000, ACK, 1100, &[])),
        ("other options", {
            let mut p = segment(4000, ACK, 1100, &d);
            p[71] = 4;
            p
        }),
        ("another ack", {
            let mut p = segment(4000, ACK, 1100, &d);
            p[51] = 1;
            p
        }),
    ];
    for (what, second) in cases {
        let mut batch = vec![first(), in_buffer(&second)];
        assert_eq!(Coalescer::default().coalesce(&mut batch), 0, "{what}");
        assert_eq!(&batch[1][HEADROOM..], &second[..], "{what}");
    }
    // A packet of the flow that cannot join ends the run: the next one may not pass it.
    let mut batch = vec![
        first(),
        in_buffer(&segment(4000, ACK, 1100, &[])),
        in_buffer(&segment(4000, ACK, 1100, &d)),
    ];
    assert_eq!(Coalescer::default().coalesce(&mut batch), 0);
    // A run stops before 64 KiB of IPv6 payload.
    let big = data(30_000, 7);
    let mut batch: Vec<Vec<u8>> = (0..3)
        .map(|i| in_buffer(&segment(4000, ACK, 100 + 30_000 * i, &big)))
        .collect();
    assert_eq!(Coalescer::default().coalesce(&mut batch), 1);
    assert_eq!(batch[2].len(), HEADROOM + 72 + 30_000);
}

#[test]
fn a_push_ends_a_run_and_stays_on_the_joined_packet() {
    let d = data(500, 8);
    let mut batch = vec![
        in_buffer(&segment(4000, ACK, 0, &d)),
        in_buffer(&segment(4000, ACK | PSH, 500, &d)),
        in_buffer(&segment(4000, ACK, 1000, &d)),
    ];
    assert_eq!(Coalescer::default().coalesce(&mut batch), 1);
    assert_ne!(flags(&batch[0][HEADROOM..]) & PSH, 0);
    assert_eq!(payload(&batch[0][HEADROOM..]).len(), 1000);
    assert_eq!(batch[2].len(), HEADROOM + 72 + 500);
}

/// A SYN (or SYN-ACK with `ack`) with `nops` NOPs before an MSS option of `mss`, then
/// window scale; a valid checksum.
fn syn(mss: u16, nops: usize, ack: bool) -> Vec<u8> {
    let mut opts = vec![1u8; nops];
    opts.extend_from_slice(&[2, 4]);
    opts.extend_from_slice(&mss.to_be_bytes());
    opts.extend_from_slice(&[3, 3, 7]);
    while opts.len() % 4 != 0 {
        opts.push(0);
    }
    let mut p = segment(4000, if ack { SYN | ACK } else { SYN }, 1, &[]);
    p.truncate(60);
    p[52] = ((20 + opts.len()) as u8 / 4) << 4;
    p.extend_from_slice(&opts);
    let len = (p.len() - 40) as u16;
    p[4..6].copy_from_slice(&len.to_be_bytes());
    p[56..58].fill(0);
    let c = tcp_checksum(&p);
    p[56..58].copy_from_slice(&c.to_be_bytes());
    p
}

fn mss_of(p: &[u8]) -> u16 {
    let at = mss_option(p).expect("an MSS option");
    u16::from_be_bytes([p[at], p[at + 1]])
}

#[test]
fn our_syns_announce_what_one_tunnel_packet_carries() {
    for nops in [0, 1, 2, 3] {
        for ack in [false, true] {
            let mut p = syn(65475, nops, ack);
            clamp_syn_mss(&mut p, 1420);
            assert_eq!(mss_of(&p), 1360, "nops {nops}");
            assert_eq!(tcp_checksum(&p), 0, "checksum, nops {nops}");
            let mut small = syn(1000, nops, ack);
            let before = small.clone();
            clamp_syn_mss(&mut small, 1420);
            assert_eq!(small, before, "a smaller MSS is kept");
        }
    }
}

#[test]
fn a_peers_mss_that_fills_our_packets_is_raised_and_a_smaller_one_kept() {
    for nops in [0, 1, 3] {
        let mut p = syn(1360, nops, true);
        raise_syn_mss(&mut p, 1420);
        assert_eq!(mss_of(&p), wire_mss(OFFLOAD_MTU));
        assert_eq!(tcp_checksum(&p), 0, "checksum, nops {nops}");
        let mut smaller = syn(1220, nops, false);
        let before = smaller.clone();
        raise_syn_mss(&mut smaller, 1420);
        assert_eq!(smaller, before, "the peer's MTU is below ours");
    }
    // Not a SYN, or an option list that runs past the header: left alone.
    let mut data = segment(4000, ACK, 1, &[2, 4, 5, 0x50]);
    let before = data.clone();
    raise_syn_mss(&mut data, 1420);
    assert_eq!(data, before);
    let mut bad = syn(1360, 0, false);
    bad[61] = 40; // the MSS option's length
    let before = bad.clone();
    raise_syn_mss(&mut bad, 1420);
    assert_eq!(bad, before);
}
