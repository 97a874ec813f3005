//! `pilotctl dgram send` / `dgram listen` between two userspace daemons on loopback (no TUN,
//! no root): datagrams arrive with their sender; bad ports and unknown peers get their codes.

mod support;

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use support::home::Home;
use support::net::free_udp_port;

fn config(listen: u16, peer_key: &str, peer_host: &str, peer_port: u16) -> String {
    format!(
        "mode = \"userspace\"\n[tunnel]\nlisten_port = {listen}\n[socks5]\nlisten = \"127.0.0.1:0\"\n\
         [[peer]]\npublic_key = \"{peer_key}\"\nhostname = \"{peer_host}\"\n\
         endpoint = \"127.0.0.1:{peer_port}\"\n"
    )
}

fn code_of(home: &Home, args: &[&str]) -> (i32, String) {
    let (code, v) = home.json(args);
    (code, v["code"].as_str().unwrap_or_default().to_string())
}

#[test]
fn datagrams_reach_a_listening_peer_with_their_sender_and_bad_input_gets_codes() {
    let a = Home::new("pilot-dgram");
    let b = Home::new("pilot-dgram");
    let keys = [a.identity_key(), b.identity_key()];
    let (pa, pb) = (free_udp_port(), free_udp_port());
    std::fs::write(
        a.path().join("config.toml"),
        config(pa, &keys[1], "node-b", pb),
    )
    .unwrap();
    std::fs::write(
        b.path().join("config.toml"),
        config(pb, &keys[0], "node-a", pa),
    )
    .unwrap();
    a.ok(&["daemon", "start"]);
    b.ok(&["daemon", "start"]);
    // Bring the tunnel up first: a datagram sent during the handshake may be lost.
    let ping = a.ok(&["ping", &keys[1], "--count", "1"]);
    assert_eq!(ping["received"], 1, "{ping}");

    let listener = b
        .command()
        .args([
            "--json",
            "dgram",
            "listen",
            "5000",
            "--count",
            "2",
            "--timeout",
            "20",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let sent = a.ok(&["dgram", "send", "node-b", "5000", "--data", "first"]);
    assert_eq!(sent["bytes"], 5, "{sent}");
    assert_eq!(sent["port"], 5000, "{sent}");
    assert_eq!(sent["peer"], keys[1].as_str(), "{sent}");
    std::thread::sleep(Duration::from_millis(100));
    // Binary data, base64 on both sides.
    a.ok(&[
        "dgram", "send", &keys[1], "5000", "--data", "AP8=", "--base64",
    ]);
    let out = listener.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let got = v["data"]["datagrams"].as_array().unwrap();
    assert_eq!(got.len(), 2, "{v}");
    assert_eq!(got[0]["data"], "first", "{v}");
    assert_eq!(got[0]["base64"], false, "{v}");
    assert_eq!(got[1]["data"], "AP8=", "{v}");
    assert_eq!(got[1]["base64"], true, "{v}");
    for g in got {
        assert_eq!(g["from"], keys[0].as_str(), "{v}");
        assert_eq!(g["hostname"], "node-a", "{v}");
    }
    assert_eq!(v["data"]["timed_out"], false, "{v}");

    // A listen that times out answers with what it has.
    let quiet = b.ok(&["dgram", "listen", "5001", "--timeout", "1"]);
    assert_eq!(quiet["timed_out"], true, "{quiet}");
    assert_eq!(quiet["datagrams"].as_array().unwrap().len(), 0);

    for port in ["0", "70000"] {
        assert_eq!(
            code_of(&a, &["dgram", "send", "node-b", port, "--data", "x"]),
            (1, "invalid_argument".into()),
            "send to port {port}"
        );
        assert_eq!(
            code_of(&b, &["dgram", "listen", port, "--timeout", "1"]),
            (1, "invalid_argument".into()),
            "listen on port {port}"
        );
    }
    assert_eq!(
        code_of(&a, &["dgram", "send", "nobody", "5000", "--data", "x"]).1,
        "not_found"
    );
    let stranger = Home::new("pilot-dgram").identity_key();
    assert_eq!(
        code_of(&a, &["dgram", "send", &stranger, "5000", "--data", "x"]).1,
        "unauthorized"
    );
    assert_eq!(
        code_of(
            &a,
            &["dgram", "send", "node-b", "5000", "--data", "!", "--base64"]
        )
        .1,
        "invalid_argument"
    );
}

#[test]
fn connect_timeout_bounds_a_plain_connect_to_a_peer_that_is_down() {
    let a = Home::new("pilot-dgram");
    let b = Home::new("pilot-dgram");
    let (pa, pb) = (free_udp_port(), free_udp_port());
    std::fs::write(
        a.path().join("config.toml"),
        config(pa, &b.identity_key(), "node-b", pb),
    )
    .unwrap();
    a.ok(&["daemon", "start"]);
    // B never starts: nothing answers at its endpoint.
    let started = std::time::Instant::now();
    let (code, err) = code_of(&a, &["connect", "node-b", "1000", "--timeout", "2"]);
    assert_eq!((code, err.as_str()), (1, "timeout"));
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}
