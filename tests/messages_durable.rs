//! "No message ever lost" with group commit: messages whose `send-message` returned survive a
//! SIGKILL of the sender right after (their outbox records were committed together, and no
//! later cleanup ran) and arrive exactly once when both daemons are back. Two real daemons in
//! userspace mode on loopback, no root.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use support::pair::pair;

const MESSAGES: usize = 12;

#[test]
fn messages_sent_concurrently_survive_a_sigkill_of_the_sender_and_arrive_exactly_once() {
    let (mut a, mut b, _) = pair("pilot-durable", ["", ""]);
    // The recipient is away: every message stays in A's outbox.
    b.stop_daemon();
    let sends: Vec<_> = (0..MESSAGES)
        .map(|i| {
            a.command()
                .args(["--json", "send-message", "node-b", "--data"])
                .arg(format!("durable-{i}"))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for s in sends {
        let out = s.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["data"]["status"], "queued", "{v}");
    }
    a.kill_daemon();
    a.ok(&["daemon", "start"]);
    b.ok(&["daemon", "start"]);
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut got: Vec<String>;
    loop {
        let inbox = b.ok(&["inbox"]);
        got = inbox["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["data"].as_str().unwrap_or("").to_string())
            .collect();
        if got.len() >= MESSAGES || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Let any duplicate retry land before counting.
    std::thread::sleep(Duration::from_secs(2));
    let inbox = b.ok(&["inbox"]);
    got = inbox["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"].as_str().unwrap_or("").to_string())
        .collect();
    got.sort();
    let mut want: Vec<String> = (0..MESSAGES).map(|i| format!("durable-{i}")).collect();
    want.sort();
    assert_eq!(got, want, "{}", a.logs());
    assert_eq!(a.ok(&["outbox"])["outbox"], serde_json::json!([]));
}
