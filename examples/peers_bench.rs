//! Helpers for `bench/peers.sh` (issues 15 and 18: one daemon holding 10,000 idle peers).
//!
//! ```text
//! peers_bench gen N TRUST_JSON [KEY...]   write a trust store with N generated trusted peers
//!                                         (Ed25519 identities from seeds) plus the KEYs given
//! peers_bench core N                      the data-plane core alone, in this process: time to
//!                                         add a peer, lookups and a timer tick with 1 and N peers
//! ```
//! `gen` writes the same `trust.json` the daemon writes after approving peers (version 1, mode
//! 0600), so the daemon loads them through its real start-up path. `core` prints one table row
//! per measure (name, value with 1 peer, value with N peers, ratio) as tab-separated text.

use std::hint::black_box;
use std::time::{Duration, Instant};

use pilot::identity::{Identity, PublicKey};
use pilot::mapping::DEFAULT_NETWORK;
use pilot::wg::core::Core;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("gen") if args.len() >= 3 => gen(args[1].parse()?, &args[2], &args[3..]),
        Some("core") if args.len() == 2 => {
            core(args[1].parse()?);
            Ok(())
        }
        _ => {
            eprintln!("usage: peers_bench gen N TRUST_JSON [KEY...] | peers_bench core N");
            std::process::exit(2);
        }
    }
}

/// The `i`th generated peer (distinct seeds, never our own).
fn peer_key(i: u32) -> PublicKey {
    let mut seed = [0x5au8; 32];
    seed[..4].copy_from_slice(&i.to_le_bytes());
    Identity::from_seed(seed).public_key()
}

fn gen(n: u32, out: &str, extra: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let since_ms = pilot::clock::unix_ms_now();
    let mut peers: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "key": peer_key(i).to_base64(),
                "hostname": format!("sim-{i}"),
                "state": "trusted",
                "since_ms": since_ms,
            })
        })
        .collect();
    for k in extra {
        peers.push(serde_json::json!({"key": k, "state": "trusted", "since_ms": since_ms}));
    }
    let file = serde_json::json!({"version": 1, "peers": peers, "watermarks": {}});
    let text = serde_json::to_string_pretty(&file)? + "\n";
    pilot::state::paths::write_private_atomic(std::path::Path::new(out), text.as_bytes())?;
    Ok(())
}

/// Median time of `f` over `rounds` rounds of `per_round` calls, per call.
fn per_call(rounds: usize, per_round: usize, mut f: impl FnMut(usize)) -> Duration {
    let mut times: Vec<Duration> = (0..rounds)
        .map(|r| {
            let t = Instant::now();
            for i in 0..per_round {
                f(r * per_round + i);
            }
            t.elapsed() / per_round as u32
        })
        .collect();
    times.sort();
    times[rounds / 2]
}

struct Loaded {
    core: Core,
    keys: Vec<PublicKey>,
    add_mean: Duration,
    add_last: Duration,
    rss_delta_kib: u64,
}

fn loaded(n: u32) -> Loaded {
    let me = Identity::from_seed([0xa5; 32]);
    let core = Core::new(&me, DEFAULT_NETWORK, 25, None, None, None);
    let keys: Vec<PublicKey> = (0..=n).map(peer_key).collect();
    let rss0 = rss_kib();
    // As the daemon loads its trust store at start: one batch.
    let batch: Vec<_> = keys[..n as usize].iter().map(|k| (*k, None)).collect();
    let t = Instant::now();
    assert!(core.add_peers(&batch).iter().all(|r| r.is_ok()));
    let add_mean = t.elapsed() / n.max(1);
    let rss_delta_kib = rss_kib().saturating_sub(rss0);
    let t = Instant::now();
    core.add_peer(keys[n as usize], None).expect("add");
    let add_last = t.elapsed();
    Loaded {
        core,
        keys,
        add_mean,
        add_last,
        rss_delta_kib,
    }
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

struct Row {
    name: &'static str,
    value: f64,
    unit: &'static str,
}

fn measure(l: &Loaded) -> Vec<Row> {
    let n = l.keys.len();
    let ips: Vec<_> = l
        .keys
        .iter()
        .map(|k| DEFAULT_NETWORK.ipv6(k.addr48()))
        .collect();
    let idx: Vec<u32> = l
        .keys
        .iter()
        .map(|k| l.core.receiver_index_of(k).expect("index"))
        .collect();
    let by_addr = per_call(21, 2000, |i| {
        black_box(l.core.peer_by_ip(&ips[i % n]));
    });
    let by_index = per_call(21, 2000, |i| {
        black_box(l.core.peer_by_receiver_index(idx[i % n]));
    });
    let by_key = per_call(21, 2000, |i| {
        black_box(l.core.peer_by_key(&l.keys[i % n]));
    });
    let mut buf = vec![0u8; l.core.out_room()];
    let tick = per_call(11, 4, |_| {
        l.core.tick(false, &mut buf, &mut |_, _| {});
    });
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let ns = |d: Duration| d.as_secs_f64() * 1e9;
    vec![
        Row {
            name: "add a peer (mean, loading the trust store at start)",
            value: us(l.add_mean),
            unit: "us",
        },
        Row {
            name: "add one more peer (an approval)",
            value: us(l.add_last),
            unit: "us",
        },
        Row {
            name: "lookup by addr48 (overlay IP)",
            value: ns(by_addr),
            unit: "ns",
        },
        Row {
            name: "lookup by receiver index",
            value: ns(by_index),
            unit: "ns",
        },
        Row {
            name: "lookup by key",
            value: ns(by_key),
            unit: "ns",
        },
        Row {
            name: "timer tick (all peers idle)",
            value: us(tick),
            unit: "us",
        },
        Row {
            name: "data-plane memory per peer",
            value: l.rss_delta_kib as f64 * 1024.0 / (n - 1).max(1) as f64,
            unit: "B",
        },
    ]
}

fn core(n: u32) {
    let one = measure(&loaded(1));
    let many = measure(&loaded(n));
    println!("measure\t1 peer\t{n} peers\tratio");
    for (a, b) in one.iter().zip(many) {
        let ratio = if a.value > 0.0 {
            b.value / a.value
        } else {
            0.0
        };
        println!(
            "{} ({})\t{:.2}\t{:.2}\t{:.2}",
            a.name, a.unit, a.value, b.value, ratio
        );
    }
}
