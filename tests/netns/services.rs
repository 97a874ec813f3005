//! Agent services with real daemons: the spec's `connect` (stdin to a peer's port 1000, its
//! answer to stdout), `send-message` into a persistent inbox that loses nothing across a
//! restart, and echo on port 7.

use std::process::Stdio;
use std::time::Duration;

use crate::support::netns::{Host, Lab};
use crate::support::process::wait_until;
use crate::support::registry::Registry;

/// `pilotctl ARGS` in `h`'s namespace with `input` on stdin; returns (success, stdout).
fn pipe(h: &Host, args: &[&str], input: &str) -> (bool, String) {
    use std::io::Write;
    let mut c = h
        .launched()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pilotctl");
    c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = c.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn inbox_len(h: &Host) -> usize {
    h.ok(&["inbox"])["messages"]
        .as_array()
        .map_or(0, |a| a.len())
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test.sh runs it with --include-ignored as root"]
fn connect_send_message_inbox_and_echo_between_trusted_agents() {
    let mut lab = Lab::new();
    let reg_host = lab.public_host("reg", "203.0.113.30");
    let mut orch = lab.public_host("orch", "198.51.100.31");
    let mut work = lab.public_host("work", "198.51.100.32");
    let registry = Registry::start(&reg_host, 7946);
    let env = [("PILOT_REGISTRY", registry.addr.as_str())];
    orch.configure(25, &[]);
    work.configure(25, &[]);
    orch.start_env(&["--hostname", "orchestrator-node"], &env);
    work.start_env(&["--hostname", "worker-node"], &env);
    assert!(wait_until(Duration::from_secs(10), || {
        orch.json(&["find", "worker-node"]).0 == 0
    }));

    // Before trust: messages and streams are refused with a hint.
    let (code, v) = orch.json(&["send-message", "worker-node", "--data", "{}"]);
    assert_eq!(code, 1);
    assert_eq!(v["code"], "unauthorized", "{v}");

    orch.ok(&["handshake", "worker-node"]);
    assert!(wait_until(Duration::from_secs(3), || {
        work.json(&["approve", "orchestrator-node"]).0 == 0
    }));
    assert!(orch.ping_until(work.ipv6(), Duration::from_secs(10)));

    // Streams: the worker listens on 1000 and answers; the spec's command, verbatim.
    let listener = work
        .launched()
        .args(["listen", "1000"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut listener = listener;
    {
        use std::io::Write;
        let mut stdin = listener.stdin.take().unwrap();
        stdin.write_all(b"{\"result\":\"42 vectors\"}\n").unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let (success, out) = pipe(
        &orch,
        &["connect", "worker-node", "1000"],
        "{\"task\":\"vector_search\"}\n",
    );
    let got = listener.wait_with_output().unwrap();
    assert!(success, "connect: {out}");
    assert_eq!(
        out,
        "{\"result\":\"42 vectors\"}\n",
        "listener: {:?} {} {}\nWORK LOG:\n{}",
        got.status,
        String::from_utf8_lossy(&got.stdout),
        String::from_utf8_lossy(&got.stderr),
        work.bg_log()
    );
    assert!(got.status.success());
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        "{\"task\":\"vector_search\"}\n"
    );

    // Nothing listens on 1000 now: a clear error, not a hang.
    let (code, v) = orch.json(&["connect", "worker-node", "1000"]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["code"], "connection_failed", "{v}");

    // Echo on port 7.
    let (success, out) = pipe(&orch, &["connect", "worker-node", "7"], "ping over pilot\n");
    assert!(success, "{out}\nWORK LOG:\n{}", work.bg_log());
    assert_eq!(out, "ping over pilot\n");

    // Messages: the spec's command, verbatim; stored in the worker's inbox.
    let m = orch.ok(&[
        "send-message",
        "worker-node",
        "--data",
        "{\"status\":\"operational\"}",
        "--type",
        "json",
    ]);
    assert_eq!(m["status"], "delivered", "{m}");
    let inbox = work.ok(&["inbox"]);
    let first = &inbox["messages"][0];
    assert_eq!(first["data"], serde_json::json!({"status": "operational"}));
    assert_eq!(first["from"], orch.key.to_string());
    assert_eq!(first["from_hostname"], "orchestrator-node");
    assert_eq!(first["id"], m["id"]);
    let (code, v) = orch.json(&[
        "send-message",
        "worker-node",
        "--type",
        "json",
        "--data",
        "not json",
    ]);
    assert_eq!(code, 1);
    assert_eq!(v["code"], "invalid_argument", "{v}");

    // The worker is down: the message is queued, survives, and arrives once it is back.
    work.stop_daemon();
    let m2 = orch.ok(&[
        "send-message",
        "worker-node",
        "--data",
        "while you were out",
        "--type",
        "text",
    ]);
    assert_eq!(m2["status"], "queued", "{m2}");
    assert_eq!(orch.ok(&["outbox"])["outbox"].as_array().unwrap().len(), 1);
    // The sender restarts too: the outbox is on disk.
    orch.stop_daemon();
    orch.start_env(&["--hostname", "orchestrator-node"], &env);
    work.start_env(&["--hostname", "worker-node"], &env);
    let arrived = wait_until(Duration::from_secs(40), || inbox_len(&work) == 2);
    assert!(
        arrived,
        "queued message never arrived:\n{}\n{}",
        orch.bg_log(),
        work.bg_log()
    );
    let inbox = work.ok(&["inbox"]);
    assert_eq!(inbox["messages"][1]["data"], "while you were out");
    assert!(wait_until(Duration::from_secs(5), || {
        orch.ok(&["outbox"])["outbox"]
            .as_array()
            .unwrap()
            .is_empty()
    }));
    // Clearing empties it.
    work.ok(&["inbox", "--clear"]);
    assert_eq!(inbox_len(&work), 0);
}
