//! Live events for agents against real daemons in userspace mode on loopback: `pilotctl
//! events --json` and a webhook (a small HTTP server in this test) both get a trust request
//! (through a loopback registry) and a message; a webhook at a dead port, or one that never
//! answers, does not delay message delivery, and what it could not take is counted.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use support::home::Home;
use support::net::free_tcp_port;
use support::pair::{api, pair};
use support::registry::Registry;

/// Reads one HTTP request from `s`: the `pilot-event` header and the JSON body.
fn read_request(s: &mut TcpStream) -> Option<(String, Value)> {
    let mut r = BufReader::new(s.try_clone().ok()?);
    let (mut len, mut kind) = (0usize, String::new());
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').unwrap_or((line, ""));
        match k.to_ascii_lowercase().as_str() {
            "content-length" => len = v.trim().parse().ok()?,
            "pilot-event" => kind = v.trim().to_string(),
            _ => {}
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    Some((kind, serde_json::from_slice(&body).ok()?))
}

/// A webhook receiver on 127.0.0.1: answers 200 to each POST and passes on what it got.
fn receiver() -> (String, mpsc::Receiver<(String, Value)>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/pilot-events", l.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            if let Some(got) = read_request(&mut s) {
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                if tx.send(got).is_err() {
                    return;
                }
            }
        }
    });
    (url, rx)
}

/// The first event of type `kind` that `rx` gets within 20 s.
fn next_of(rx: &mpsc::Receiver<(String, Value)>, kind: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (header, body) = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no {kind} event within 20 s"));
        assert_eq!(
            body["type"],
            header.as_str(),
            "the pilot-event header names the type"
        );
        if header == kind {
            return body;
        }
    }
}

#[test]
fn a_webhook_and_the_event_stream_get_a_trust_request_and_a_message() {
    let reg = Registry::loopback();
    let b_extra = format!("hostname = \"node-b\"\nregistries = [\"{}\"]\n", reg.addr);
    let (a, b, keys) = pair("pilot-hook", ["", &b_extra]);
    let (url, hook) = receiver();
    let set = b.ok(&["set-webhook", &url]);
    assert_eq!(set["url"], url.as_str(), "{set}");
    assert!(b.path().join("webhook.json").exists());
    let (code, v) = b.json(&["set-webhook", "https://127.0.0.1/x"]);
    assert_eq!(
        (code, v["code"].as_str()),
        (1, Some("invalid_argument")),
        "{v}"
    );
    assert!(
        v["message"].as_str().unwrap().contains("only http://"),
        "{v}"
    );

    // `pilotctl events --json` on B, read line by line.
    let mut events = b
        .command()
        .args(["--json", "events", "--count", "50", "--timeout", "60"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (ltx, lines) = mpsc::channel();
    let out = BufReader::new(events.stdout.take().unwrap());
    std::thread::spawn(move || {
        for l in out.lines() {
            let Ok(l) = l else { return };
            if ltx.send(l).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));

    // A third node asks B for trust through the registry.
    let c = Home::new("pilot-hook");
    c.start(&[
        "--mode",
        "userspace",
        "--registry",
        &reg.addr,
        "--hostname",
        "node-c",
    ]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while c.json(&["handshake", "node-b", "webhook test"]).0 != 0 {
        assert!(
            Instant::now() < deadline,
            "node-b never reachable at the registry"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let request = next_of(&hook, "trust_request");
    assert_eq!(request["justification"], "webhook test", "{request}");
    assert_eq!(request["hostname"], "node-c", "{request}");

    // A message from the static peer A.
    let m = a.ok(&["send-message", "node-b", "--data", "hook me"]);
    assert_eq!(m["status"], "delivered", "{m}");
    let got = next_of(&hook, "message_received");
    assert_eq!(got["message"]["data"], "hook me", "{got}");
    assert_eq!(got["message"]["from"], keys[0].as_str(), "{got}");

    // The CLI's stream saw both, one JSON object per line.
    let (mut trust, mut message) = (false, false);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(trust && message) {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .expect("events --json stopped early");
        let e: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not NDJSON: {line}"));
        trust |= e["type"] == "trust_request" && e["justification"] == "webhook test";
        message |= e["type"] == "message_received" && e["message"]["data"] == "hook me";
    }
    let _ = events.kill();
    let _ = events.wait();

    let status = b.ok(&["webhook"]);
    assert!(status["delivered"].as_u64().unwrap() >= 2, "{status}");
    assert_eq!(status["dropped"], 0, "{status}");
    let cleared = b.ok(&["clear-webhook"]);
    assert_eq!(cleared["url"], Value::Null, "{cleared}");
    assert!(!b.path().join("webhook.json").exists());

    // `events --count` ends by itself; `--timeout` ends a quiet stream with success.
    let t = Instant::now();
    let out = b.pilotctl(&["events", "--timeout", "0.5"]);
    assert!(out.status.success());
    assert!(t.elapsed() < Duration::from_secs(10));
}

/// Sends `n` messages A → B through A's API; the longest time one took to be delivered.
fn slowest_delivery(a: &Home, n: usize) -> Duration {
    let mut worst = Duration::ZERO;
    for i in 0..n {
        let t = Instant::now();
        let body = json!({"peer": "node-b", "data": format!("m{i}")});
        let (status, v) = api(a, "POST", "/v1/messages", Some(&body));
        let took = t.elapsed();
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["data"]["status"], "delivered", "{v}");
        worst = worst.max(took);
    }
    worst
}

#[test]
fn a_dead_or_silent_webhook_does_not_delay_message_delivery() {
    let (a, b, _) = pair(
        "pilot-hook",
        ["", "[webhook]\nqueue = 4\ntimeout_ms = 3000\n"],
    );
    slowest_delivery(&a, 2); // warm up: the first message brings the tunnel up
    let baseline = slowest_delivery(&a, 8);
    let margin = Duration::from_millis(750);

    let dead = format!("http://127.0.0.1:{}/", free_tcp_port());
    b.ok(&["set-webhook", &dead]);
    let with_dead = slowest_delivery(&a, 12);
    assert!(
        with_dead <= baseline + margin,
        "a dead webhook delayed delivery: {with_dead:?} vs {baseline:?} without"
    );

    // A server that accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", silent.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming() {
            held.push(s);
        }
    });
    b.ok(&["set-webhook", &url]);
    let with_silent = slowest_delivery(&a, 12);
    assert!(
        with_silent <= baseline + margin,
        "a silent webhook delayed delivery: {with_silent:?} vs {baseline:?} without"
    );
    let t = Instant::now();
    b.ok(&["info"]);
    assert!(t.elapsed() < Duration::from_secs(2), "the API slowed down");
    let status = b.ok(&["webhook"]);
    assert!(
        status["dropped"].as_u64().unwrap() > 0,
        "a full queue drops and counts: {status}"
    );
    assert!(status["queued"].as_u64().unwrap() <= 4, "{status}");
    assert_eq!(b.ok(&["inbox"])["messages"].as_array().unwrap().len(), 34);
}
