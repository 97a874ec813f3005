//! A load generator for the registry: simulated nodes with real Ed25519 keys and signatures,
//! over real UDP on loopback. bench/registry.sh starts the registries and runs it; each mode
//! prints `key=value` lines.
//!
//! ```text
//! registry_load verify  [--count N]                                signatures verified/s, one core
//! registry_load flood   --registry ADDR --pid PID [--nodes N] [--secs S] [--mix hb|trust]
//!                       signed requests answered per second of registry CPU
//! registry_load steady  --registry ADDR --pid PID [--nodes N] [--secs S] [--heartbeat-ms MS]
//!                       N nodes heartbeating: CPU share, RSS per node, p50/p99 answer latency
//! registry_load push    --registry ADDR --other ADDR2 [--pairs P]
//!                       trust requests sent to ADDR for nodes attached to ADDR2: push latency
//! ```
//!
//! Registries under load need limits above the defaults (bench/registry.sh writes them): the
//! per-IP bucket (every simulated node sends from 127.0.0.1), the global and per-key buckets.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pilot::clock::unix_ms_now;
use std::hint::black_box;

use pilot::identity::{Identity, PreparedKey, PublicKey};
use pilot::mapping::Hostname;
use pilot::wire::registry::{
    Header, Nonce, Request, RequestBody, Response, ResponseBody, Unverified,
};
use rand_core::{OsRng, RngCore};

/// Sockets the simulated nodes share (nodes are spread over them).
const SOCKETS: usize = 64;

/// Nodes of a flood that claim a hostname (`flood-0` ...), for the lookups.
const NAMED: usize = 100;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn num(args: &[String], name: &str, default: u64) -> u64 {
    arg(args, name).map_or(default, |v| v.parse().expect("a number"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("verify") => verify(num(&args, "--count", 20_000)),
        Some("flood") => flood(&args),
        Some("steady") => steady(&args),
        Some("push") => push(&args),
        _ => {
            eprintln!("usage: registry_load verify|flood|steady|push [options] (see the source)");
            std::process::exit(2);
        }
    }
}

fn nonce() -> Nonce {
    let mut n = [0u8; 16];
    OsRng.fill_bytes(&mut n);
    n
}

fn sign(id: &Identity, body: RequestBody) -> (Nonce, Vec<u8>) {
    let n = nonce();
    let r = Request {
        header: Header {
            sender: id.public_key(),
            nonce: n,
            timestamp_ms: unix_ms_now(),
        },
        body,
    };
    (n, r.encode_signed(id).expect("encodes"))
}

fn in_reply_to(b: &[u8]) -> Option<Nonce> {
    b.get(3..19).map(|s| s.try_into().expect("16"))
}

/// Signature verification alone: the floor of the registry's cost per request.
fn verify(count: u64) {
    // 256 distinct senders, as at a registry (a key is decompressed for every request).
    let ids: Vec<Identity> = (0..=255u8).map(|i| Identity::from_seed([i; 32])).collect();
    let reqs: Vec<Vec<u8>> = (0..1024)
        .map(|i| sign(&ids[i % ids.len()], RequestBody::Heartbeat).1)
        .collect();
    let (t, cpu) = (Instant::now(), thread_cpu_s());
    for i in 0..count {
        Request::decode_verified(&reqs[i as usize % reqs.len()]).expect("verifies");
    }
    let (wall, cpu) = (t.elapsed().as_secs_f64(), thread_cpu_s() - cpu);
    // Per second of CPU: the machine may be shared, so wall time understates a core.
    let single = count as f64 / cpu.max(1e-9);
    println!("verify_per_cpu_sec={single:.0} (decode_verified, one by one)");
    println!("verify_per_wall_sec={:.0}", count as f64 / wall);
    // The same, with the sender's key decompressed a second time for the check: what the
    // registry did before decoding kept the point (decode, then `PublicKey::verify`).
    let twice = per_cpu_sec(&reqs, count, 1, |chunk| {
        let u = Unverified::decode(chunk[0]).expect("decodes");
        black_box(PreparedKey::from(&u.request.header.sender));
        assert!(u.verify());
    });
    println!(
        "verify_decompress_twice_per_cpu_sec={twice:.0} once_over_twice={:.2}",
        single / twice
    );
    // The same run: decode, then verify in batches of n (what the registry does with the
    // requests one wake-up reads; its batches are at most 32).
    for n in [2usize, 4, 8, 16, 32, 64] {
        let rate = verify_batched(&reqs, count, n);
        println!(
            "batch{n}_verify_per_cpu_sec={rate:.0} ratio_over_single={:.2}",
            rate / single
        );
    }
    compare_batches(&reqs, count);
    let answers = answer_costs(&ids[0], &reqs, count);
    let per_req_us = |r: f64| 1e6 / r;
    println!(
        "us_per_request: verify_single={:.1} verify_batch32={:.1} answer={:.1}",
        per_req_us(single),
        per_req_us(verify_batched(&reqs, count, 32)),
        per_req_us(answers)
    );
}

/// Batches of 32 three ways in one run: ours (the sender's point kept from decoding), ours
/// with the point decompressed again (as before), and ed25519-dalek's `verify_batch` after the
/// same strict pre-checks.
fn compare_batches(reqs: &[Vec<u8>], count: u64) {
    for round in 1..=2 {
        let ours = verify_batched(reqs, count, 32);
        let twice = per_cpu_sec(reqs, count, 32, |chunk| {
            let items = decode_all(chunk);
            for u in &items {
                black_box(PreparedKey::from(&u.request.header.sender));
            }
            assert!(Unverified::verify_batch(&items));
        });
        let dalek = per_cpu_sec(reqs, count, 32, |chunk| {
            assert!(dalek_verify_batch(&decode_all(chunk)));
        });
        println!(
            "round{round}: batch32_ours={ours:.0} batch32_decompress_twice={twice:.0} \
             batch32_dalek_verify_batch={dalek:.0} ours_over_twice={:.2} ours_over_dalek={:.2}",
            ours / twice,
            ours / dalek
        );
    }
}

/// ed25519-dalek's batch verification (feature "batch": merlin transcript, deterministic
/// weights) after the strict pre-checks ours makes per signature.
fn dalek_verify_batch(items: &[Unverified<'_>]) -> bool {
    let signed: Vec<_> = items.iter().map(Unverified::signed).collect();
    if !signed.iter().all(|s| s.strict_prechecks()) {
        return false;
    }
    let msgs: Vec<Vec<u8>> = signed.iter().map(|s| [s.prefix, s.msg].concat()).collect();
    let msgs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
    let sigs: Vec<ed25519_dalek::Signature> = signed
        .iter()
        .map(|s| ed25519_dalek::Signature::from_bytes(s.signature))
        .collect();
    let keys: Vec<ed25519_dalek::VerifyingKey> =
        signed.iter().map(|s| *s.key.verifying_key()).collect();
    ed25519_dalek::verify_batch(&msgs, &sigs, &keys).is_ok()
}

/// Signing and the registry's answer (an `Ack`, encoded and signed), per CPU-second; returns
/// the answer's rate.
fn answer_costs(id: &Identity, reqs: &[Vec<u8>], count: u64) -> f64 {
    let cpu = thread_cpu_s();
    for i in 0..count {
        black_box(id.sign(&reqs[i as usize % reqs.len()]));
    }
    let signing = count as f64 / (thread_cpu_s() - cpu).max(1e-9);
    println!("sign_per_cpu_sec={signing:.0} (the registry signs each answer)");
    let ack = Response {
        in_reply_to: [7; 16],
        body: ResponseBody::Ack {
            observed: "198.51.100.7:4000".parse().expect("an address"),
        },
    };
    let cpu = thread_cpu_s();
    for _ in 0..count {
        black_box(ack.encode_signed(id).expect("encodes"));
    }
    let answers = count as f64 / (thread_cpu_s() - cpu).max(1e-9);
    println!("answer_encode_sign_per_cpu_sec={answers:.0}");
    answers
}

fn decode_all<'a>(chunk: &[&'a Vec<u8>]) -> Vec<Unverified<'a>> {
    chunk
        .iter()
        .map(|b| Unverified::decode(b).expect("decodes"))
        .collect()
}

/// Requests decoded and verified per CPU-second, `n` signatures per batch (what the registry
/// does: decode keeping the sender's point, then one batch check).
fn verify_batched(reqs: &[Vec<u8>], count: u64, n: usize) -> f64 {
    per_cpu_sec(reqs, count, n, |chunk| {
        assert!(Unverified::verify_batch(&decode_all(chunk)));
    })
}

/// Requests per CPU-second through `check`, called with `n` of `reqs` at a time until `count`.
fn per_cpu_sec(reqs: &[Vec<u8>], count: u64, n: usize, mut check: impl FnMut(&[&Vec<u8>])) -> f64 {
    let cpu = thread_cpu_s();
    let mut done = 0u64;
    let mut at = 0usize;
    while done < count {
        let chunk: Vec<&Vec<u8>> = (0..n).map(|k| &reqs[(at + k) % reqs.len()]).collect();
        at += n;
        check(&chunk);
        done += n as u64;
    }
    done as f64 / (thread_cpu_s() - cpu).max(1e-9)
}

/// CPU time of the calling thread (s).
fn thread_cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Registry CPU time so far (s) and resident memory (KiB), from /proc.
fn proc_stats(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    (ticks / hz, rss)
}

/// Simulated nodes spread over [`SOCKETS`] loopback sockets.
struct Swarm {
    ids: Vec<Arc<Identity>>,
    socks: Vec<Arc<UdpSocket>>,
}

impl Swarm {
    fn new(n: usize, seed: u32) -> Swarm {
        let ids = (0..n)
            .map(|i| {
                let mut s = [0u8; 32];
                s[..4].copy_from_slice(&seed.to_be_bytes());
                s[4..12].copy_from_slice(&(i as u64).to_be_bytes());
                Arc::new(Identity::from_seed(s))
            })
            .collect();
        let socks = (0..SOCKETS)
            .map(|_| {
                let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
                s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
                Arc::new(s)
            })
            .collect();
        Swarm { ids, socks }
    }

    fn sock_of(&self, i: usize) -> &UdpSocket {
        &self.socks[i % SOCKETS]
    }

    /// Registers every node (Register, Challenge, Register with the cookie, Registered), one
    /// thread per socket, a window of nodes at a time; returns how many registered.
    fn register(&self, registry: SocketAddr, names: Option<&str>) -> usize {
        let done = AtomicU64::new(0);
        std::thread::scope(|s| {
            for k in 0..SOCKETS {
                let done = &done;
                s.spawn(move || {
                    let mine: Vec<usize> = (k..self.ids.len()).step_by(SOCKETS).collect();
                    for chunk in mine.chunks(32) {
                        let n = self.register_chunk(registry, k, chunk, names);
                        done.fetch_add(n as u64, Ordering::Relaxed);
                    }
                });
            }
        });
        done.load(Ordering::Relaxed) as usize
    }

    fn register_chunk(
        &self,
        to: SocketAddr,
        k: usize,
        chunk: &[usize],
        names: Option<&str>,
    ) -> usize {
        let sock = &self.socks[k];
        // Only the first NAMED nodes claim a hostname (the lookups' targets): a claim is a
        // synchronous commit on a shared store, and real nodes claim once, not at every start.
        let body = |i: usize, cookie| RequestBody::Register {
            hostname: names
                .filter(|_| i < NAMED)
                .map(|p| Hostname::new(&format!("{p}{i}")).unwrap()),
            candidates: vec![],
            cookie,
        };
        let mut registered = 0;
        let mut waiting: HashMap<Nonce, usize> = HashMap::new();
        for &i in chunk {
            let (n, b) = sign(&self.ids[i], body(i, None));
            waiting.insert(n, i);
            let _ = sock.send_to(&b, to);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 2048];
        while !waiting.is_empty() && Instant::now() < deadline {
            let Ok((len, _)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let Some(i) = in_reply_to(&buf[..len]).and_then(|n| waiting.remove(&n)) else {
                continue;
            };
            match Response::decode(&buf[..len]).map(|r| r.body) {
                Ok(ResponseBody::Challenge { cookie }) => {
                    let (n, b) = sign(&self.ids[i], body(i, Some(cookie)));
                    waiting.insert(n, i);
                    let _ = sock.send_to(&b, to);
                }
                Ok(ResponseBody::Registered { .. }) => registered += 1,
                _ => {}
            }
        }
        registered
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p) as usize]
}

/// Sends pre-signed requests as fast as answers come back (a window per socket) for `secs`;
/// returns (sent, answered, latencies in ms).
fn blast(
    sw: &Swarm,
    to: SocketAddr,
    reqs: Vec<Vec<(Nonce, Vec<u8>)>>,
    secs: u64,
) -> (u64, u64, Vec<f64>) {
    let stop = Instant::now() + Duration::from_secs(secs);
    let (sent, answered) = (AtomicU64::new(0), AtomicU64::new(0));
    let lat = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for (k, list) in reqs.into_iter().enumerate() {
            let (sock, sent, answered, lat) = (&sw.socks[k], &sent, &answered, &lat);
            s.spawn(move || {
                let mut inflight: HashMap<Nonce, Instant> = HashMap::new();
                let mut my_lat = Vec::new();
                let mut it = list.into_iter();
                let mut buf = [0u8; 2048];
                while Instant::now() < stop {
                    while inflight.len() < 16 {
                        let Some((n, b)) = it.next() else { break };
                        inflight.insert(n, Instant::now());
                        let _ = sock.send_to(&b, to);
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    match sock.recv_from(&mut buf) {
                        Ok((len, _)) => {
                            if let Some(t) =
                                in_reply_to(&buf[..len]).and_then(|n| inflight.remove(&n))
                            {
                                my_lat.push(t.elapsed().as_secs_f64() * 1000.0);
                                answered.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(_) => inflight.retain(|_, t| t.elapsed() < Duration::from_millis(500)),
                    }
                    if inflight.is_empty() && it.len() == 0 {
                        break;
                    }
                }
                lat.lock().unwrap().extend(my_lat);
            });
        }
    });
    (
        sent.into_inner(),
        answered.into_inner(),
        lat.into_inner().unwrap(),
    )
}

/// Most signed requests the registry answers per second of its own CPU time.
fn flood(args: &[String]) {
    let to: SocketAddr = arg(args, "--registry")
        .expect("--registry")
        .parse()
        .unwrap();
    let pid: u32 = num(args, "--pid", 0) as u32;
    let n = num(args, "--nodes", 2000) as usize;
    let secs = num(args, "--secs", 10);
    let mix = arg(args, "--mix").unwrap_or_else(|| "hb".into());
    let sw = Swarm::new(n, 1);
    let ok = sw.register(to, Some("flood-"));
    // Pre-signed, so the generator's signing does not compete with the registry while it runs.
    let per_sock = num(args, "--requests", 200_000) as usize / SOCKETS;
    let reqs: Vec<Vec<(Nonce, Vec<u8>)>> = (0..SOCKETS)
        .map(|k| {
            (0..per_sock)
                .map(|j| {
                    let i = (k + SOCKETS * (j % (n / SOCKETS).max(1))) % n;
                    let body = match (mix.as_str(), j % 2) {
                        ("trust", _) => RequestBody::TrustRequest {
                            target: sw.ids[(i + 1) % n].public_key(),
                            justification: "load".into(),
                        },
                        (_, 0) => RequestBody::Heartbeat,
                        _ => RequestBody::Lookup {
                            hostname: Hostname::new(&format!("flood-{}", (i * 7) % NAMED.min(n)))
                                .unwrap(),
                        },
                    };
                    sign(&sw.ids[i], body)
                })
                .collect()
        })
        .collect();
    let (cpu0, _) = proc_stats(pid);
    let t = Instant::now();
    let (sent, answered, mut lat) = blast(&sw, to, reqs, secs);
    let wall = t.elapsed().as_secs_f64();
    let (cpu1, _) = proc_stats(pid);
    println!("registered={ok}");
    println!("mix={mix}");
    println!("sent={sent}");
    println!("answered={answered}");
    println!("answered_per_sec={:.0}", answered as f64 / wall);
    println!("registry_cpu_s={:.2}", cpu1 - cpu0);
    println!(
        "per_core_per_sec={:.0}",
        answered as f64 / (cpu1 - cpu0).max(0.001)
    );
    println!("p50_ms={:.2}", percentile(&mut lat, 0.5));
    println!("p99_ms={:.2}", percentile(&mut lat, 0.99));
}

/// N nodes registered and heartbeating at the default interval.
fn steady(args: &[String]) {
    let to: SocketAddr = arg(args, "--registry")
        .expect("--registry")
        .parse()
        .unwrap();
    let pid: u32 = num(args, "--pid", 0) as u32;
    let n = num(args, "--nodes", 100_000) as usize;
    let secs = num(args, "--secs", 40);
    let every = num(args, "--heartbeat-ms", 20_000);
    let sw = Swarm::new(n, 2);
    let (_, rss0) = proc_stats(pid);
    let t = Instant::now();
    let ok = sw.register(to, None);
    println!("registered={ok}");
    println!("register_secs={:.1}", t.elapsed().as_secs_f64());
    std::thread::sleep(Duration::from_secs(2));
    let (_, rss1) = proc_stats(pid);
    println!("rss_idle_kib={rss0}");
    println!("rss_registered_kib={rss1}");
    println!(
        "rss_per_node_bytes={:.0}",
        (rss1.saturating_sub(rss0) * 1024) as f64 / ok.max(1) as f64
    );
    let (cpu0, _) = proc_stats(pid);
    let t = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let lat = Mutex::new(Vec::new());
    let (sent, answered) = (AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|s| {
        for k in 0..SOCKETS {
            let (sw, lat, sent, answered, stop) = (&sw, &lat, &sent, &answered, stop.clone());
            s.spawn(move || heartbeat_loop(sw, to, k, n, every, secs, &stop, lat, sent, answered));
        }
    });
    let wall = t.elapsed().as_secs_f64();
    let (cpu1, rss2) = proc_stats(pid);
    let mut lat = lat.into_inner().unwrap();
    println!("heartbeats_sent={}", sent.into_inner());
    println!("heartbeats_answered={}", answered.into_inner());
    println!("cpu_share_pct={:.1}", 100.0 * (cpu1 - cpu0) / wall);
    println!("rss_end_kib={rss2}");
    println!("p50_ms={:.2}", percentile(&mut lat, 0.5));
    println!("p99_ms={:.2}", percentile(&mut lat, 0.99));
}

/// One socket's nodes, each heartbeating every `every` ms at its own phase.
#[allow(clippy::too_many_arguments)]
fn heartbeat_loop(
    sw: &Swarm,
    to: SocketAddr,
    k: usize,
    n: usize,
    every: u64,
    secs: u64,
    stop: &AtomicBool,
    lat: &Mutex<Vec<f64>>,
    sent: &AtomicU64,
    answered: &AtomicU64,
) {
    let sock = sw.sock_of(k);
    sock.set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let mine: Vec<usize> = (k..n).step_by(SOCKETS).collect();
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut inflight: HashMap<Nonce, Instant> = HashMap::new();
    let mut my = Vec::new();
    let mut next = 0usize; // index into the schedule: (round, node)
    let mut buf = [0u8; 2048];
    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
        loop {
            let (round, j) = (next / mine.len().max(1), next % mine.len().max(1));
            let due = start
                + Duration::from_millis(
                    round as u64 * every + (j as u64 * every) / mine.len().max(1) as u64,
                );
            if due > Instant::now() || mine.is_empty() {
                break;
            }
            let (nc, b) = sign(&sw.ids[mine[j]], RequestBody::Heartbeat);
            inflight.insert(nc, Instant::now());
            let _ = sock.send_to(&b, to);
            sent.fetch_add(1, Ordering::Relaxed);
            next += 1;
        }
        if let Ok((len, _)) = sock.recv_from(&mut buf) {
            if let Some(t) = in_reply_to(&buf[..len]).and_then(|n| inflight.remove(&n)) {
                my.push(t.elapsed().as_secs_f64() * 1000.0);
                answered.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    lat.lock().unwrap().extend(my);
}

/// Trust requests sent to one instance for nodes attached to the other: push latency.
fn push(args: &[String]) {
    let one: SocketAddr = arg(args, "--registry")
        .expect("--registry")
        .parse()
        .unwrap();
    let two: SocketAddr = arg(args, "--other").expect("--other").parse().unwrap();
    let pairs = num(args, "--pairs", 200) as usize;
    let senders = Swarm::new(pairs, 3);
    let targets = Swarm::new(pairs, 4);
    let a = senders.register(one, None);
    let b = targets.register(two, None);
    println!("registered={a}+{b}");
    // Let the registrations reach the other instance.
    std::thread::sleep(Duration::from_millis(500));
    let mut lat = Vec::new();
    let mut buf = [0u8; 2048];
    for i in 0..pairs {
        let target: PublicKey = targets.ids[i].public_key();
        let body = RequestBody::TrustRequest {
            target,
            justification: "latency".into(),
        };
        let (n, bytes) = sign(&senders.ids[i], body);
        let t = Instant::now();
        let _ = senders.sock_of(i).send_to(&bytes, one);
        let sock = targets.sock_of(i);
        while t.elapsed() < Duration::from_secs(2) {
            let Ok((len, _)) = sock.recv_from(&mut buf) else {
                continue;
            };
            if in_reply_to(&buf[..len]) == Some(n) {
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("pushes={}/{pairs}", lat.len());
    println!("push_p50_ms={:.2}", percentile(&mut lat, 0.5));
    println!("push_p99_ms={:.2}", percentile(&mut lat, 0.99));
}
