//! Request/reply, message types and inbox filters between two real daemons in userspace mode
//! on loopback (static peers, no root): `send-message --wait` answered by `pilotctl reply`,
//! the same through the local API (`wait_ms`, `POST /v1/messages/{id}/reply`), a reply to an
//! unknown id refused with `unknown_message`, a late reply landing in the inbox, JSON
//! validation, binary payloads from a file and from stdin, and `inbox --from --since --limit
//! --clear` and `inbox read ID`.

mod support;

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use support::home::Home;
use support::pair::{api, pair};

/// The id of the first inbox message whose data is `data`, waiting up to 20 s for it.
fn wait_for_message(h: &Home, data: &Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let inbox = h.ok(&["inbox"]);
        let hit = inbox["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["data"] == *data)
            .cloned();
        if let Some(m) = hit {
            return m;
        }
        assert!(Instant::now() < deadline, "{data} never arrived: {inbox}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_request_is_answered_through_the_cli_and_through_the_api() {
    let (a, b, keys) = pair("pilot-req", ["", ""]);

    // The CLI: A waits for B's answer; B replies to the id it finds in its inbox.
    let asking = a
        .command()
        .args([
            "--json",
            "send-message",
            "node-b",
            "--data",
            "ping",
            "--wait",
            "20",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let request = wait_for_message(&b, &json!("ping"));
    assert_eq!(
        request["type"], "text",
        "text is the default type: {request}"
    );
    assert_eq!(request["from"], keys[0].as_str());
    let id = request["id"].as_str().unwrap().to_string();
    let replied = b.ok(&["reply", &id, "--data", "pong"]);
    assert_eq!(replied["in_reply_to"], id.as_str(), "{replied}");
    assert_eq!(replied["to"], keys[0].as_str(), "{replied}");
    let out = asking.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent: Value = serde_json::from_slice(&out.stdout).unwrap();
    let reply = &sent["data"]["reply"];
    assert_eq!(sent["data"]["id"], id.as_str(), "{sent}");
    assert_eq!(reply["data"], "pong", "{sent}");
    assert_eq!(reply["in_reply_to"], id.as_str(), "{sent}");
    assert_eq!(reply["from"], keys[1].as_str(), "{sent}");
    // A reply handed to its waiting request does not also sit in the inbox.
    assert_eq!(a.ok(&["inbox"])["messages"], json!([]));

    // The API: the same with a JSON payload, `wait_ms`, and the reply route.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let body =
                json!({"peer": "node-b", "type": "json", "data": "{\"q\":42}", "wait_ms": 20000});
            tx.send(api(&a, "POST", "/v1/messages", Some(&body)))
                .unwrap();
        });
        let request = wait_for_message(&b, &json!({"q": 42}));
        let id = request["id"].as_str().unwrap();
        let (status, v) = api(
            &b,
            "POST",
            &format!("/v1/messages/{id}/reply"),
            Some(&json!({"data": "{\"a\":43}", "kind": "json"})),
        );
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["data"]["in_reply_to"], id, "{v}");
        let (status, v) = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["data"]["status"], "delivered", "{v}");
        assert_eq!(v["data"]["reply"]["data"], json!({"a": 43}), "{v}");
        assert_eq!(v["data"]["reply"]["type"], "json", "{v}");
    });

    // A reply to an id nobody sent is refused with its code, through the CLI and the API.
    let (code, v) = b.json(&["reply", "0123456789abcdef0123456789abcdef", "--data", "x"]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["code"], "unknown_message", "{v}");
    assert!(
        v["hint"].as_str().unwrap().contains("pilotctl inbox"),
        "{v}"
    );
    let (status, v) = api(
        &b,
        "POST",
        "/v1/messages/not-an-id/reply",
        Some(&json!({"data": "x"})),
    );
    assert_eq!(
        (status, v["code"].as_str()),
        (404, Some("unknown_message")),
        "{v}"
    );

    // A reply that comes after the request gave up lands in the inbox.
    let (code, v) = a.json(&["send-message", "node-b", "--data", "slow", "--wait", "0.3"]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["code"], "timeout", "{v}");
    let request = wait_for_message(&b, &json!("slow"));
    let id = request["id"].as_str().unwrap();
    assert!(v["message"].as_str().unwrap().contains(id), "{v}");
    b.ok(&["reply", id, "--data", "late"]);
    let late = wait_for_message(&a, &json!("late"));
    assert_eq!(late["in_reply_to"], id, "{late}");
}

#[test]
fn message_types_and_inbox_filters() {
    let (a, b, keys) = pair("pilot-types", ["", ""]);

    // json is validated before anything is queued; text and json arrive as such.
    let (code, v) = a.json(&["send-message", "node-b", "--type", "json", "--data", "{bad"]);
    assert_eq!(code, 1);
    assert_eq!(v["code"], "invalid_argument", "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("not valid JSON"),
        "{v}"
    );
    let (status, v) = api(
        &a,
        "POST",
        "/v1/messages",
        Some(&json!({"peer": "node-b", "type": "json", "data": "[1,"})),
    );
    assert_eq!(
        (status, v["code"].as_str()),
        (400, Some("invalid_argument")),
        "{v}"
    );
    let (code, v) = a.json(&["send-message", "node-b", "--type", "yaml", "--data", "x"]);
    assert_eq!(
        (code, v["code"].as_str()),
        (1, Some("invalid_argument")),
        "{v}"
    );
    let m = a.ok(&["send-message", "node-b", "--data", "hello"]);
    assert_eq!(m["status"], "delivered", "{m}");

    // binary: from a file and from stdin, base64 in JSON output, bytes intact.
    let bytes: Vec<u8> = (0..=255u8).chain([0, 0, 255]).collect();
    let file = a.path().join("blob.bin");
    std::fs::write(&file, &bytes).unwrap();
    let m = a.ok(&[
        "send-message",
        "node-b",
        "--type",
        "binary",
        "--file",
        file.to_str().unwrap(),
    ]);
    assert_eq!(m["status"], "delivered", "{m}");
    let got = b.ok(&["inbox", "read", m["id"].as_str().unwrap()]);
    assert_eq!(got["type"], "binary", "{got}");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(got["data"].as_str().unwrap())
        .unwrap();
    assert_eq!(decoded, bytes);
    let mut child = a
        .command()
        .args(["--json", "send-message", "node-b", "--type", "binary"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&[9, 8, 7, 0])
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let id = serde_json::from_slice::<Value>(&out.stdout).unwrap()["data"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, v) = api(&b, "GET", &format!("/v1/messages/inbox/{id}"), None);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["data"], "CQgHAA==", "{v}");
    let text = String::from_utf8(b.pilotctl(&["inbox"]).stdout).unwrap();
    assert!(text.contains("<binary, 259 bytes"), "{text}");

    // Filters: by sender (name, key, address), by time, by count; clear removes only those.
    for from in ["node-a", keys[0].as_str()] {
        let v = b.ok(&["inbox", "--from", from]);
        assert_eq!(v["messages"].as_array().unwrap().len(), 3, "{from}: {v}");
    }
    let v = b.ok(&["inbox", "--from", &keys[1]]);
    assert_eq!(v["messages"], json!([]), "{v}");
    assert_eq!(
        b.ok(&["inbox", "--since", "1h"])["messages"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let future = (std::time::SystemTime::now() + Duration::from_secs(3600))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    assert_eq!(b.ok(&["inbox", "--since", &future])["messages"], json!([]));
    let (code, v) = b.json(&["inbox", "--since", "yesterday"]);
    assert_eq!(
        (code, v["code"].as_str()),
        (1, Some("invalid_argument")),
        "{v}"
    );
    let two = b.ok(&["inbox", "--limit", "2"]);
    let two = two["messages"].as_array().unwrap();
    assert_eq!(two.len(), 2);
    assert_eq!(two[0]["data"], "hello", "oldest first");
    let cleared = b.ok(&["inbox", "--limit", "1", "--clear"]);
    assert_eq!(cleared["messages"][0]["data"], "hello", "{cleared}");
    assert_eq!(b.ok(&["inbox"])["messages"].as_array().unwrap().len(), 2);
    let gone = cleared["messages"][0]["id"].as_str().unwrap();
    let (code, v) = b.json(&["inbox", "read", gone]);
    assert_eq!(
        (code, v["code"].as_str()),
        (1, Some("unknown_message")),
        "{v}"
    );
    // A cleared message can still be answered: its id and sender are remembered.
    let r = b.ok(&["reply", gone, "--type", "json", "--data", "{\"seen\":true}"]);
    assert_eq!(r["status"], "delivered", "{r}");
    let back = wait_for_message(&a, &json!({"seen": true}));
    assert_eq!(back["in_reply_to"], gone);
}
