//! The TLS transport (issue 14) through a firewall that drops all UDP: an agent behind a
//! router whose forwarding chain drops UDP, a public agent, and a registry with `tls_listen`
//! on 203.0.113.10:443. The agent falls back to TLS by itself (`[relay] tls = "auto"`),
//! registers, exchanges trust, and a 20 MB transfer crosses the TLS relay intact; the same
//! wrapped in WebSocket (`[relay] websocket = true`).

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::support::netns::{Host, Lab, Nat};
use crate::support::process::wait_until;
use crate::support::registry::Registry;

const REGISTRY_PORT: u16 = 7946;

fn configure(h: &Host, allow: &Host, relay: &str) {
    let c = format!(
        "mode = \"tun\"\n[tunnel]\nlisten_port = 51820\nkeepalive_secs = 25\n[trust]\nallow = [\"{}\"]\n\
         [relay]\ntls_port = 443\nudp_timeout_ms = 2000\n{relay}",
        allow.key
    );
    std::fs::write(h.home().join("config.toml"), c).expect("write config");
}

fn peer_path(of: &Host, peer: &Host) -> Option<String> {
    let (code, v) = of.json(&["peers"]);
    if code != 0 {
        return None;
    }
    v["data"]["peers"]
        .as_array()?
        .iter()
        .find(|p| p["public_key"] == peer.key.to_string())
        .and_then(|p| p["path"].as_str().map(String::from))
}

/// The lab: a registry with its TLS transport, agent `a` behind a firewall that forwards no
/// UDP, public agent `b`; both running, trusting each other, on the TLS relay.
struct Setup {
    _lab: Lab,
    fw: String,
    a: Host,
    b: Host,
    _registry: Registry,
    _dir: tempfile::TempDir,
}

fn setup(tag: &str, octet: u8) -> Setup {
    setup_with(tag, octet, "")
}

/// [`setup`] with more `[relay]` lines for both agents.
fn setup_with(tag: &str, octet: u8, relay: &str) -> Setup {
    let mut lab = Lab::new();
    let reg_host = lab.public_host(&format!("{tag}reg"), "203.0.113.10");
    let fw = lab.router(
        &format!("{tag}fw"),
        &format!("198.51.100.{octet}"),
        &format!("10.{octet}.1"),
        Nat::PortPreserving,
    );
    let a = lab.nat_host(&fw, &format!("{tag}a"), 2);
    let b = lab.public_host(&format!("{tag}pub"), &format!("198.51.100.{}", octet + 1));
    // The firewall forwards no UDP at all, either way.
    assert!(fw_nft(
        &fw.ns,
        &[
            "insert",
            "rule",
            "ip",
            "pilotfw",
            "forwarding",
            "meta",
            "l4proto",
            "udp",
            "drop"
        ]
    ));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("registry.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"203.0.113.10:{REGISTRY_PORT}\"\nstate_dir = \"{}\"\ntls_listen = \"203.0.113.10:443\"\n\
             [limits]\nrelay_bytes_per_sec = 1000000000\nrelay_byte_burst = 1000000000\n\
             relay_packets_per_sec = 1000000\nrelay_packet_burst = 100000\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let registry = Registry::start_args(
        &reg_host,
        REGISTRY_PORT,
        &["--config", cfg.to_str().unwrap()],
    );
    configure(&a, &b, relay);
    configure(&b, &a, relay);
    for h in [&a, &b] {
        h.start_env(&[], &[("PILOT_REGISTRY", registry.addr.as_str())]);
    }
    let t = Instant::now();
    let registered = wait_until(Duration::from_secs(20), || {
        a.json(&["handshake", &b.key.to_string()]).0 == 0
    });
    assert!(registered, "no handshake over TLS:\n{}", a.bg_log());
    eprintln!(
        "registered and handshake sent over TLS after {:?}",
        t.elapsed()
    );
    let relayed = wait_until(Duration::from_secs(30), || {
        peer_path(&a, &b).as_deref() == Some("relay")
            && peer_path(&b, &a).as_deref() == Some("relay")
    });
    assert!(relayed, "no relay path:\n{}\n{}", a.bg_log(), b.bg_log());
    assert!(
        a.ping_until(b.ipv6(), Duration::from_secs(10)),
        "no ping over the TLS relay"
    );
    Setup {
        _lab: lab,
        fw: fw.ns.clone(),
        a,
        b,
        _registry: registry,
        _dir: dir,
    }
}

fn blob(mb: u32) -> Vec<u8> {
    (0..mb << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test.sh runs it with --include-ignored as root"]
fn an_agent_behind_a_udp_blocking_firewall_relays_20_mb_over_tls() {
    let mut s = setup("t", 61);
    transfer_20_mb(&mut s, "TLS");
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test.sh runs it with --include-ignored as root"]
fn an_agent_behind_a_udp_blocking_firewall_relays_20_mb_over_websocket() {
    let mut s = setup_with("w", 69, "websocket = true\n");
    let (code, v) = s.a.json(&["netcheck"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["data"]["registries"][0]["transport"], "wss", "{v}");
    transfer_20_mb(&mut s, "WebSocket");
}

/// 20 MB from `b` to `a` over HTTP on the overlay (on the relay): intact.
fn transfer_20_mb(s: &mut Setup, over: &str) {
    let (a, b) = (&s.a, &mut s.b);
    let www = tempfile::tempdir().unwrap();
    let data = blob(20);
    std::fs::write(www.path().join("blob"), &data).unwrap();
    b.serve_http(www.path(), 8080);
    let url = format!("http://[{}]:8080/blob", b.ipv6());
    let t = Instant::now();
    let out = a.run("curl", &["-sS", "--max-time", "60", &url]);
    assert!(
        out.status.success(),
        "curl over the {over} relay: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(out.stdout.len(), data.len());
    assert_eq!(
        Sha256::digest(&out.stdout),
        Sha256::digest(&data),
        "sha256 differs"
    );
    eprintln!(
        "20 MB over the {over} relay in {secs:.2} s ({:.1} Mbit/s, busy machine)",
        data.len() as f64 * 8.0 / secs / 1e6
    );
}

fn fw_nft(ns: &str, args: &[&str]) -> bool {
    std::process::Command::new("ip")
        .args(["netns", "exec", ns, "nft"])
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

/// UDP comes back in the middle of a long transfer: the agent moves back to UDP (its probes
/// are answered), then the peers punch a direct path, and the transfer completes intact.
#[test]
#[ignore = "needs root and network namespaces: scripts/test.sh runs it with --include-ignored as root"]
fn udp_unblocked_mid_transfer_moves_the_path_to_direct_and_the_transfer_completes() {
    let mut s = setup("u", 65);
    let www = tempfile::tempdir().unwrap();
    let data = blob(14);
    std::fs::write(www.path().join("blob"), &data).unwrap();
    s.b.serve_http(www.path(), 8080);
    let url = format!("http://[{}]:8080/blob", s.b.ipv6());
    // About 14 s at 1 MB/s: long enough to move paths under it (direct came ~2 s after UDP).
    let curl =
        s.a.cmd("curl")
            .args([
                "-sS",
                "--limit-rate",
                "1M",
                "--max-time",
                "90",
                "-o",
                "-",
                &url,
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(fw_nft(
        &s.fw,
        &["flush", "chain", "ip", "pilotfw", "forwarding"]
    ));
    assert!(fw_nft(
        &s.fw,
        &[
            "add",
            "rule",
            "ip",
            "pilotfw",
            "forwarding",
            "ct",
            "state",
            "established,related",
            "accept"
        ]
    ));
    assert!(fw_nft(
        &s.fw,
        &[
            "add",
            "rule",
            "ip",
            "pilotfw",
            "forwarding",
            "iifname",
            "lanbr",
            "accept"
        ]
    ));
    let t = Instant::now();
    let direct = wait_until(Duration::from_secs(45), || {
        peer_path(&s.a, &s.b).as_deref() == Some("direct")
    });
    assert!(direct, "never direct:\n{}", s.a.bg_log());
    eprintln!("direct {:?} after UDP came back", t.elapsed());
    let out = curl.wait_with_output().unwrap();
    assert!(out.status.success(), "the transfer broke");
    assert_eq!(out.stdout.len(), data.len());
    assert_eq!(
        Sha256::digest(&out.stdout),
        Sha256::digest(&data),
        "sha256 differs"
    );
}
