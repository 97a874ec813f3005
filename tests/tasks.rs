//! Task delegation (overlay port 1003) between real userspace daemons on loopback: a task goes
//! through every state across a restart of each side, the decline, failure and expiry paths,
//! and a result forged by a third node (signed by its own key) is refused.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use pilot::identity::Identity;
use pilot::services::tasks::record::{StateRecord, TaskState};
use pilot::services::tasks::wire::Frame;
use serde_json::Value;
use support::home::Home;
use support::mesh::{mesh, start_all};
use support::process::wait_until;
use support::socks::socks_connect_ip;

fn status(h: &Home, id: &str) -> Value {
    h.ok(&["task", "status", id])
}

fn wait_state(h: &Home, id: &str, state: &str) -> Value {
    let mut last = Value::Null;
    let ok = wait_until(Duration::from_secs(20), || {
        let (code, v) = h.json(&["task", "status", id]);
        last = v;
        code == 0 && last["data"]["state"] == state
    });
    assert!(ok, "task {id} never became {state}: {last}\n{}", h.logs());
    last["data"].clone()
}

fn restart(h: &Home) {
    h.ok(&["daemon", "stop", "--timeout", "5"]);
    h.ok(&["daemon", "start"]);
}

fn submit(h: &Home, worker: &str, task: &str, deadline: &str) -> String {
    let t = h.ok(&[
        "task",
        "submit",
        worker,
        "--task",
        task,
        "--deadline",
        deadline,
    ]);
    assert_eq!(t["state"], "NEW", "{t}");
    assert_eq!(t["role"], "submitter");
    t["id"].as_str().unwrap().to_string()
}

/// Every record verifies and is signed by the key the protocol says.
fn assert_signed(records: &Value, signers: &[(&str, &str)]) {
    let records: Vec<StateRecord> = serde_json::from_value(records.clone()).unwrap();
    assert_eq!(records.len(), signers.len(), "{records:?}");
    for (r, (state, key)) in records.iter().zip(signers) {
        assert!(r.verify(), "{r:?}");
        assert_eq!(
            (r.state.as_str(), r.signer.to_string()),
            (*state, key.to_string())
        );
    }
}

#[test]
fn a_task_goes_new_accepted_done_across_a_restart_of_each_side() {
    let (homes, keys) = mesh(2, "");
    start_all(&homes);
    let (sub, work) = (&homes[0], &homes[1]);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in put.txt");
    std::fs::write(&input, b"attached bytes").unwrap();
    let t = sub.ok(&[
        "task",
        "submit",
        "node-1",
        "--task",
        r#"{"op":"sum","args":[1,2]}"#,
        "--file",
        input.to_str().unwrap(),
        "--deadline",
        "300",
    ]);
    let id = t["id"].as_str().unwrap().to_string();
    let got = wait_state(work, &id, "NEW");
    assert_eq!(got["role"], "worker");
    assert_eq!(got["task"]["args"][1], 2);
    let path = got["file"]["path"]
        .as_str()
        .expect("the attached file is written");
    assert_eq!(std::fs::read(path).unwrap(), b"attached bytes");
    assert!(wait_until(Duration::from_secs(10), || status(sub, &id)
        ["undelivered"]
        == 0));

    restart(work);
    let listed = work.ok(&["task", "list"]);
    assert_eq!(listed["tasks"][0]["id"], id.as_str(), "{listed}");
    let a = work.ok(&["task", "accept", &id]);
    assert_eq!(a["state"], "ACCEPTED");
    wait_state(sub, &id, "ACCEPTED");

    // The submitter is down while the worker finishes: the result waits in the worker's
    // store and is delivered after the submitter restarts.
    sub.ok(&["daemon", "stop", "--timeout", "5"]);
    let d = work.ok(&["task", "result", &id, "--data", "3"]);
    assert_eq!(
        (d["state"].as_str(), d["undelivered"].as_u64()),
        (Some("DONE"), Some(1))
    );
    restart(work);
    sub.ok(&["daemon", "start"]);
    let done = sub.ok(&["task", "wait", &id, "--timeout", "30"]);
    assert_eq!(done["state"], "DONE", "{done}");
    assert_eq!(done["result"]["data"], "3");
    assert_signed(
        &done["records"],
        &[
            ("NEW", &keys[0]),
            ("ACCEPTED", &keys[1]),
            ("DONE", &keys[1]),
        ],
    );
    assert!(wait_until(Duration::from_secs(10), || status(work, &id)
        ["undelivered"]
        == 0));
    let submitted = sub.ok(&["task", "list", "--submitted"]);
    assert_eq!(submitted["tasks"].as_array().unwrap().len(), 1);
    assert_eq!(
        sub.ok(&["task", "list"])["tasks"].as_array().unwrap().len(),
        0
    );
}

#[test]
fn decline_failure_and_expiry_end_a_task_on_both_sides() {
    let (homes, keys) = mesh(2, "");
    start_all(&homes);
    let (sub, work) = (&homes[0], &homes[1]);

    let declined = submit(sub, "node-1", r#"{"op":"x"}"#, "300");
    wait_state(work, &declined, "NEW");
    work.ok(&["task", "decline", &declined, "--reason", "busy"]);
    let v = sub.ok(&["task", "wait", &declined, "--timeout", "20"]);
    assert_eq!(
        (v["state"].as_str(), v["reason"].as_str()),
        (Some("DECLINED"), Some("busy"))
    );
    let (code, e) = work.json(&["task", "accept", &declined]);
    assert_eq!(
        (code, e["code"].as_str()),
        (1, Some("already_exists")),
        "{e}"
    );

    let failed = submit(sub, "node-1", r#"{"op":"y"}"#, "300");
    wait_state(work, &failed, "NEW");
    let (code, e) = work.json(&["task", "result", &failed, "--data", "early"]);
    assert_eq!(code, 1, "a result needs ACCEPTED first: {e}");
    work.ok(&["task", "accept", &failed]);
    work.ok(&[
        "task",
        "result",
        &failed,
        "--failed",
        "--data",
        "out of memory",
    ]);
    let v = sub.ok(&["task", "wait", &failed, "--timeout", "20"]);
    assert_eq!(v["state"], "FAILED");
    assert_eq!(v["result"]["data"], "out of memory");
    assert_signed(
        &v["records"],
        &[
            ("NEW", &keys[0]),
            ("ACCEPTED", &keys[1]),
            ("FAILED", &keys[1]),
        ],
    );

    let expired = submit(sub, "node-1", r#"{"op":"z"}"#, "2");
    wait_state(work, &expired, "NEW");
    let v = sub.ok(&["task", "wait", &expired, "--timeout", "20"]);
    assert_eq!(v["state"], "EXPIRED");
    wait_state(work, &expired, "EXPIRED");
    let (code, e) = work.json(&["task", "accept", &expired]);
    assert_eq!(code, 1, "{e}");
    assert!(e["message"].as_str().unwrap().contains("deadline"), "{e}");
    let (code, e) = sub.json(&["task", "status", "00000000000000000000000000000000"]);
    assert_eq!((code, e["code"].as_str()), (1, Some("not_found")), "{e}");
}

/// A well-formed DONE payload (so only the signature can be wrong).
const PAYLOAD: &str = r#"{"data":"42"}"#;

fn send_frame(s: &mut TcpStream, f: &Frame) -> Frame {
    let body = serde_json::to_vec(f).unwrap();
    s.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
    s.write_all(&body).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut b = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut b).unwrap();
    serde_json::from_slice(&b).unwrap()
}

#[test]
fn a_result_signed_by_a_third_key_is_refused() {
    let (homes, keys) = mesh(3, "[socks5]\nlisten = \"127.0.0.1:0\"\n");
    start_all(&homes);
    let (sub, work, third) = (&homes[0], &homes[1], &homes[2]);
    let id = submit(sub, "node-1", r#"{"op":"sign-me"}"#, "300");
    wait_state(work, &id, "NEW");
    work.ok(&["task", "accept", &id]);
    let accepted = wait_state(sub, &id, "ACCEPTED");
    let deadline = accepted["deadline_ms"].as_u64().unwrap();

    // The third node (trusted by the submitter) sends a DONE signed by its own key.
    let forger = Identity::load(&third.path().join("identity.key")).unwrap();
    let (s_key, w_key) = (keys[0].parse().unwrap(), keys[1].parse().unwrap());
    let now = pilot::clock::unix_ms_now();
    let forged = StateRecord::sign(
        &forger,
        &id,
        s_key,
        w_key,
        TaskState::Done,
        PAYLOAD,
        now,
        deadline,
    );
    let proxy = third.ok(&["info"])["socks5"].as_str().unwrap().to_string();
    let sub_ip: std::net::Ipv6Addr = sub.ok(&["info"])["ipv6"].as_str().unwrap().parse().unwrap();
    let mut s = socks_connect_ip(&proxy, sub_ip, 1003);
    let f = Frame::State {
        v: 1,
        record: forged.clone(),
        payload: PAYLOAD.into(),
    };
    match send_frame(&mut s, &f) {
        Frame::Refused { code, .. } => assert_eq!(code.as_str(), "wrong_signer"),
        other => panic!("the forged result was not refused: {other:?}"),
    }
    // The same record claiming to be the worker's: not signed by the peer that sends it.
    let mut claimed = forged;
    claimed.signer = w_key;
    let f = Frame::State {
        v: 1,
        record: claimed,
        payload: PAYLOAD.into(),
    };
    assert!(matches!(send_frame(&mut s, &f), Frame::Refused { .. }));
    let v = status(sub, &id);
    assert_eq!(
        (v["state"].as_str(), v["records"].as_array().unwrap().len()),
        (Some("ACCEPTED"), 2)
    );

    // The worker's own result is taken.
    work.ok(&["task", "result", &id, "--data", "real"]);
    let v = sub.ok(&["task", "wait", &id, "--timeout", "20"]);
    assert_eq!(
        (v["state"].as_str(), v["result"]["data"].as_str()),
        (Some("DONE"), Some("real"))
    );
}
