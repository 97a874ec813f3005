//! The verbs added for parity with Pilot Protocol's pilotctl (issue 12), against the real
//! binary: bootstrap (`init`, `config`, `version`), `daemon status --check`, the `context`
//! catalogue, completions and man pages without a daemon; then two userspace daemons on
//! loopback for `health`, `peers/trust --search`, `connect --message`, `send`, `recv` and
//! `bench`. Each verb also gets one bad input and the error code it must give.

mod support;

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use support::home::Home;
use support::pair::{pair_with, SOCKS_ANY};

fn code_of(home: &Home, args: &[&str]) -> (i32, String) {
    let (code, v) = home.json(args);
    (code, v["code"].as_str().unwrap_or_default().to_string())
}

#[test]
fn init_writes_a_commented_config_that_config_shows_with_sources_and_set_edits() {
    let home = Home::new("pilot-parity");
    let file = home.path().join("config.toml");
    // The kit wrote a config.toml: init keeps it without --force.
    assert_eq!(
        code_of(&home, &["init", "--hostname", "worker-node"]),
        (1, "already_exists".into())
    );
    let args = [
        "init",
        "--force",
        "--hostname",
        "worker-node",
        "--registry",
        "198.51.100.1:7000",
    ];
    let v = home.ok(&args);
    assert_eq!(v["replaced"], true);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("# pilot daemon configuration"),
        "commented: {text}"
    );
    assert!(text.contains("hostname = \"worker-node\""), "{text}");
    assert!(text.contains("\"198.51.100.1:7000\""), "{text}");
    assert_eq!(
        code_of(&home, &["init", "--force", "--hostname", "Bad_Name"]).1,
        "invalid_argument"
    );

    let shown = home.ok(&["config", "--mode", "userspace"]);
    let get = |v: &Value, k: &str| -> Value {
        v["settings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["key"] == k)
            .cloned()
            .unwrap()
    };
    assert_eq!(get(&shown, "hostname")["source"], "file");
    assert_eq!(
        get(&shown, "tun.mtu")["source"],
        "file",
        "the template sets it"
    );
    assert_eq!(get(&shown, "peer")["source"], "default");
    assert_eq!(get(&shown, "mode")["value"], "userspace");
    assert_eq!(get(&shown, "mode")["source"], "flag");
    let out = home
        .command()
        .args(["--json", "config"])
        .env("PILOT_REGISTRY", "203.0.113.9:7000")
        .output()
        .unwrap();
    let env: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(get(&env["data"], "registries")["source"], "environment");
    assert_eq!(
        get(&env["data"], "registries")["value"][0],
        "203.0.113.9:7000"
    );

    let set = home.ok(&[
        "config",
        "--set",
        "tun.mtu=1400",
        "--set",
        "trust.allow=[\"orchestrator-node\"]",
    ]);
    assert_eq!(set["set"][0]["value"], 1400);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("mtu = 1400"), "{text}");
    assert!(text.contains("# Inner MTU."), "comments kept: {text}");
    assert_eq!(get(&home.ok(&["config"]), "tun.mtu")["value"], 1400);
    for bad in ["tun.mtu", "tun.mtu=1000", "no.such=1", "tun.mtu=many"] {
        assert_eq!(
            code_of(&home, &["config", "--set", bad]).1,
            "invalid_argument",
            "{bad}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        text,
        "refused edits change nothing"
    );

    let v = home.ok(&["version"]);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["daemon"].is_null());
    // status --check: silent, 1 without a daemon.
    let out = home.pilotctl(&["daemon", "status", "--check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
    assert_eq!(code_of(&home, &["health"]).1, "not_running");
}

#[test]
fn context_lists_every_command_and_completions_and_man_pages_come_from_the_same_tree() {
    let home = Home::new("pilot-parity");
    let cat = home.ok(&["context"]);
    let names: Vec<&str> = cat["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["command"].as_str().unwrap())
        .collect();
    for c in [
        "daemon status",
        "connect",
        "init",
        "config",
        "health",
        "context",
        "send",
        "recv",
        "bench",
        "man",
    ] {
        assert!(names.contains(&c), "{c} missing from {names:?}");
    }
    let one = home.ok(&["context", "connect"]);
    let c = &one["commands"][0];
    assert_eq!(c["arguments"][1]["default"], "1000");
    assert!(c["flags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["long"] == "--message"));
    assert_eq!(code_of(&home, &["context", "no-such-verb"]).1, "not_found");

    let script = home.pilotctl(&["completions", "bash"]);
    assert!(script.status.success());
    let file = home.path().join("pilotctl.bash");
    std::fs::write(&file, &script.stdout).unwrap();
    let check = std::process::Command::new("bash")
        .arg("-n")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    for shell in ["zsh", "fish"] {
        let out = home.pilotctl(&["completions", shell]);
        assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("pilotctl"));
    }
    assert_eq!(
        home.pilotctl(&["completions", "tcsh"]).status.code(),
        Some(2)
    );
    let json = home.ok(&["completions", "bash"]);
    assert_eq!(json["shell"], "bash");
    assert_eq!(
        json["script"].as_str().unwrap().trim_end(),
        String::from_utf8_lossy(&script.stdout).trim_end()
    );

    let dir = home.path().join("man");
    let v = home.ok(&["man", dir.to_str().unwrap()]);
    let pages = v["pages"].as_array().unwrap();
    assert!(pages.len() > 30, "{v}");
    assert!(dir.join("pilotctl-daemon-status.1").exists());
    let blocked = home.path().join("a-file");
    std::fs::write(&blocked, "").unwrap();
    let (code, e) = code_of(&home, &["man", blocked.join("x").to_str().unwrap()]);
    assert_eq!((code, e.as_str()), (1, "invalid_argument"));

    let help = String::from_utf8_lossy(&home.pilotctl(&["connect", "--help"]).stdout).into_owned();
    assert!(
        help.trim_end()
            .lines()
            .last()
            .unwrap()
            .contains("pilotctl connect"),
        "{help}"
    );
}

#[test]
fn shared_verbs_and_streams_work_between_two_userspace_daemons() {
    let (a, b, keys) = pair_with("pilot-parity", ["", ""], [SOCKS_ANY, SOCKS_ANY]);
    let out = a.pilotctl(&["daemon", "status", "--check"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty() && out.stderr.is_empty());

    // connect --message through the echo port; the default port is 1000.
    let v = a.ok(&[
        "connect",
        "node-b",
        "7",
        "--message",
        "hello",
        "--timeout",
        "10",
    ]);
    assert_eq!(v["reply"], "hello", "{v}");
    assert_eq!(v["peer"], keys[1].as_str());
    let human = a.pilotctl(&["connect", "node-b", "7", "--message", "plain"]);
    assert_eq!(String::from_utf8_lossy(&human.stdout).trim_end(), "plain");
    let (code, e) = code_of(&a, &["connect", "nobody-here", "--message", "x"]);
    assert_eq!(code, 1);
    assert!(e == "not_found", "unknown peer: {e}");

    let v = a.ok(&["send", "node-b", "7", "--data", "{\"task\":\"x\"}"]);
    assert_eq!(v["reply"], "{\"task\":\"x\"}");
    assert_eq!(v["complete"], true);
    assert_eq!(
        code_of(&a, &["send", "node-b", "70000", "--data", "x"]),
        (2, "invalid_argument".into())
    );

    // recv: two connections from a trusted peer.
    let recv = b
        .command()
        .args(["--json", "recv", "1000", "--count", "2", "--timeout", "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for msg in ["first", "second"] {
        let sent = support::process::wait_until(Duration::from_secs(15), || {
            a.json(&["send", "node-b", "1000", "--data", msg, "--timeout", "5"])
                .0
                == 0
        });
        assert!(sent, "send {msg}");
    }
    let out = recv.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    let data: Vec<&str> = got["data"]["received"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["data"].as_str().unwrap())
        .collect();
    assert_eq!(data, ["first", "second"]);
    assert_eq!(got["data"]["received"][0]["peer"], keys[0].as_str());
    assert_eq!(
        code_of(&b, &["recv", "1005", "--timeout", "1"]).1,
        "timeout"
    );

    let bench = a.ok(&["bench", "node-b", "2"]);
    assert_eq!(bench["bytes"], 2 << 20);
    assert!(bench["mbit_s"].as_f64().unwrap() > 0.0, "{bench}");
    assert_eq!(bench["rtt_ms"].as_array().unwrap().len(), 5);
    assert_eq!(code_of(&a, &["bench", "node-b", "0"]).1, "invalid_argument");

    // connections lists an open stream with its bytes; disconnect aborts it.
    let mut open = a
        .command()
        .args(["connect", "node-b", "7"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        open.stdin.as_mut().unwrap().write_all(b"ping\n").unwrap();
    }
    let mut listed = Value::Null;
    let seen = support::process::wait_until(Duration::from_secs(10), || {
        listed = a.ok(&["connections"]);
        listed["connections"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["port"] == 7 && c["tx_bytes"] == 5)
    });
    assert!(seen, "{listed}");
    let c = listed["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["port"] == 7)
        .unwrap()
        .clone();
    assert_eq!(c["service"], "connect");
    assert_eq!(c["rx_bytes"], 5, "the echo came back: {c}");
    let id = c["id"].as_u64().unwrap().to_string();
    assert_eq!(a.ok(&["disconnect", &id])["id"], c["id"]);
    let gone = support::process::wait_until(Duration::from_secs(10), || {
        a.ok(&["connections"])["connections"]
            .as_array()
            .unwrap()
            .is_empty()
    });
    assert!(gone, "the aborted stream's pump ended");
    // The client saw its stream end; it exits once its stdin does.
    drop(open.stdin.take());
    let ended = support::process::wait_until(Duration::from_secs(10), || {
        open.try_wait().unwrap().is_some()
    });
    assert!(ended, "the connect process ends");
    assert_eq!(code_of(&a, &["disconnect", &id]).1, "not_found");

    // traceroute over a direct path: one leg, measured.
    let t = a.ok(&["traceroute", &keys[1], "--count", "2"]);
    assert_eq!(t["path"], "direct", "{t}");
    assert_eq!(t["hops"].as_array().unwrap().len(), 1, "{t}");
    assert!(t["hops"][0]["rtt_ms"].as_f64().is_some(), "{t}");
    assert_eq!(t["hops"][0]["estimated"], false);
    assert_eq!(code_of(&a, &["traceroute", "nobody-here"]).1, "not_found");

    // Search filters.
    let found = a.ok(&["peers", "--search", "NODE-B"]);
    assert_eq!(found["peers"].as_array().unwrap().len(), 1, "{found}");
    let none = a.ok(&["peers", "--search", "no-such-peer"]);
    assert!(none["peers"].as_array().unwrap().is_empty());
    let t = a.ok(&["trust", "--search", &keys[1][..8]]);
    assert_eq!(t["peers"].as_array().unwrap().len(), 1, "{t}");
    assert!(a.ok(&["trust", "--search", "zzzz-none"])["peers"]
        .as_array()
        .unwrap()
        .is_empty());

    let h = a.ok(&["health"]);
    assert_eq!(h["peers"], 1, "{h}");
    assert_eq!(h["peers_up"], 1, "{h}");
    assert_eq!(h["data_plane_alive"], true);
    assert_eq!(h["mode"], "userspace");
    assert!(h["inbox"].is_number() && h["last_errors"].is_array(), "{h}");
    let human = String::from_utf8_lossy(&a.pilotctl(&["health"]).stdout).into_owned();
    assert!(human.contains("peers       1 up of 1"), "{human}");
    assert_eq!(a.ok(&["version"])["daemon"], env!("CARGO_PKG_VERSION"));
}
