//! Request/reply round trips through the local API of two running daemons (bench/reqreply.sh
//! starts them): A asks with `POST /v1/messages` + `wait_ms`; a responder on B answers each
//! request it sees on B's event stream with `POST /v1/messages/{id}/reply`. Prints p50, p99
//! and max of the round trip, and in the same run of a plain send (until B's ack) and of a
//! path probe (`POST /v1/ping`), with the ratios.
//!
//! `cargo run --release --example reqreply -- SOCK_A SOCK_B PEER [N]` (default N = 1000).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use pilot::api::{ApiEvent, Client, Request, StreamEvent};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// p50, p99, max in ms of `samples`.
fn summary(samples: &mut [Duration]) -> (f64, f64, f64) {
    samples.sort();
    (
        ms(percentile(samples, 0.5)),
        ms(percentile(samples, 0.99)),
        ms(*samples.last().expect("samples")),
    )
}

/// Answers every request B receives (a message that is not itself a reply) with "pong".
fn responder(sock_b: PathBuf) {
    let events = Client::connect(&sock_b)
        .expect("B's socket")
        .events()
        .expect("events");
    let mut replier = Client::connect(&sock_b).expect("B's socket");
    for e in events {
        let Ok(ApiEvent::Api(StreamEvent::MessageReceived(m))) = e else {
            continue;
        };
        if m.message.in_reply_to.is_some() {
            continue;
        }
        let req = Request::Reply {
            id: m.message.id,
            data: "pong".into(),
            kind: None,
        };
        if let Err(e) = replier.call(&req) {
            eprintln!("reply failed: {e}");
        }
    }
}

/// Times `n` calls of `req` on one keep-alive connection; `check` vets each answer.
fn time_calls(
    c: &mut Client,
    req: &Request,
    n: usize,
    check: impl Fn(&serde_json::Value) -> bool,
) -> Vec<Duration> {
    (0..n)
        .map(|i| {
            let t = Instant::now();
            let v = c
                .call_within(req, Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("call {i} failed: {e}"));
            let took = t.elapsed();
            assert!(check(&v), "unexpected answer {i}: {v}");
            took
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: reqreply SOCK_A SOCK_B PEER [N]");
        std::process::exit(2);
    }
    let (sock_a, sock_b, peer) = (PathBuf::from(&args[1]), PathBuf::from(&args[2]), &args[3]);
    let n: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(1000);
    std::thread::spawn(move || responder(sock_b));
    std::thread::sleep(Duration::from_millis(300));
    let mut a = Client::connect(&sock_a).expect("A's socket");
    let ask = Request::SendMessage {
        peer: peer.clone(),
        data: "ping".into(),
        kind: None,
        wait_ms: Some(10_000),
    };
    let answered = |v: &serde_json::Value| v["reply"]["data"] == "pong";
    time_calls(&mut a, &ask, n / 10 + 10, answered); // warm-up
    let mut rr = time_calls(&mut a, &ask, n, answered);
    let send = Request::SendMessage {
        peer: peer.clone(),
        data: "one way".into(),
        kind: None,
        wait_ms: None,
    };
    let mut one_way = time_calls(&mut a, &send, n, |v| v["status"] == "delivered");
    // The probe names the peer by key (a hostname there is looked up at the registries).
    let peers = a.peers().expect("peers");
    let key = peers
        .peers
        .iter()
        .find(|p| p.hostname.as_deref() == Some(peer.as_str()))
        .map(|p| p.public_key.to_string())
        .unwrap_or_else(|| peer.clone());
    let ping = Request::Ping {
        peer: key,
        count: Some(1),
    };
    // The probe's own round trip as the node measured it (the API call around it also waits
    // for the ping machinery's timers).
    let mut probe: Vec<Duration> = (0..(n / 10).max(20))
        .filter_map(|_| {
            let v = a.call(&ping).expect("ping");
            v["rtt_ms"][0]
                .as_f64()
                .map(|m| Duration::from_secs_f64(m / 1000.0))
        })
        .collect();
    let (rr50, rr99, rrmax) = summary(&mut rr);
    let (s50, s99, smax) = summary(&mut one_way);
    let (p50, p99, pmax) = summary(&mut probe);
    println!(
        "{:<34} {:>9} {:>9} {:>9}",
        "through A's local API (n)", "p50 ms", "p99 ms", "max ms"
    );
    println!(
        "{:<34} {rr50:>9.3} {rr99:>9.3} {rrmax:>9.3}",
        format!("request/reply ({n})")
    );
    println!(
        "{:<34} {s50:>9.3} {s99:>9.3} {smax:>9.3}",
        format!("send until acked ({n})")
    );
    println!(
        "{:<34} {p50:>9.3} {p99:>9.3} {pmax:>9.3}",
        format!("path probe RTT ({})", probe.len())
    );
    println!(
        "ratios: request/reply / send p50 {:.2}, p99 {:.2}; request/reply / ping p50 {:.2}",
        rr50 / s50,
        rr99 / s99,
        rr50 / p50
    );
    println!(
        "target p99 <= 1 ms: {}",
        if rr99 <= 1.0 { "met" } else { "NOT met" }
    );
}
