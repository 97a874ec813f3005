//! NAT traversal with real daemons: agents behind nftables NAT routers (port-preserving or
//! fully random), a registry on 203.0.113.0/24, and the path each side reports in
//! `pilotctl peers --json`, checked together with traffic (curl, ping, a 20 MB transfer).

use std::time::{Duration, Instant};

use crate::support::netns::{Host, Lab, Nat};
use crate::support::process::wait_until;
use crate::support::registry::Registry;

const REGISTRY_PORT: u16 = 7946;

/// TUN mode, port 51820, and auto-approval of the other agents' keys.
fn configure(h: &Host, allow: &[&Host]) {
    let keys: Vec<String> = allow.iter().map(|p| format!("\"{}\"", p.key)).collect();
    let c = format!(
        "mode = \"tun\"\nlog_level = \"info,pilot::node::core=debug\"\n[tunnel]\nlisten_port = 51820\nkeepalive_secs = 25\n[trust]\nallow = [{}]\n",
        keys.join(", ")
    );
    std::fs::write(h.home().join("config.toml"), c).expect("write config");
}

/// Configures `a` and `b` to allow each other and starts both with `registry`.
fn start_both(a: &Host, b: &Host, registry: &Registry) {
    configure(a, &[b]);
    configure(b, &[a]);
    for h in [a, b] {
        h.start_env(&[], &[("PILOT_REGISTRY", registry.addr.as_str())]);
    }
}

/// `a` asks `b` (which allow-lists it) for trust; waits until both have the other as a peer.
fn trust(a: &Host, b: &Host) {
    let registered = wait_until(Duration::from_secs(10), || {
        a.json(&["handshake", &b.key.to_string()]).0 == 0
    });
    assert!(registered, "handshake failed:\n{}", a.bg_log());
    let both = wait_until(Duration::from_secs(10), || {
        a.peer_entry(b).is_some() && b.peer_entry(a).is_some()
    });
    assert!(
        both,
        "trust did not complete:\n{}\n{}",
        a.bg_log(),
        b.bg_log()
    );
}

/// Waits until `of` reports `path` (and an endpoint passing `ep_ok`) for `other`.
fn wait_path(
    of: &Host,
    other: &Host,
    path: &str,
    timeout: Duration,
    ep_ok: impl Fn(&str) -> bool,
) -> serde_json::Value {
    let t = Instant::now();
    let mut last = None;
    let ok = wait_until(timeout, || {
        last = of.peer_entry(other);
        last.as_ref()
            .is_some_and(|p| p["path"] == path && p["endpoint"].as_str().is_some_and(&ep_ok))
    });
    assert!(
        ok,
        "{} never reported path {path} for {} (last: {last:?})\nlog:\n{}",
        of.ns,
        other.ns,
        of.bg_log()
    );
    eprintln!(
        "{}: path {path} to {} after {:?}",
        of.ns,
        other.ns,
        t.elapsed()
    );
    last.unwrap()
}

fn curl_ok(h: &Host, url: &str) -> bool {
    h.run("curl", &["-sS", "--max-time", "5", "-o", "/dev/null", url])
        .status
        .success()
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test.sh runs it with --include-ignored as root"]
fn port_preserving_nats_punch_a_direct_path_that_survives_a_nat_remap() {
    let mut lab = Lab::new();
    let reg_host = lab.public_host("reg", "203.0.113.10");
    let ra = lab.router("ra", "198.51.100.21", "10.1.1", Nat::PortPreserving);
    let rb = lab.router("rb", "198.51.100.22", "10.1.2", Nat::PortPreserving);
    let a = lab.nat_host(&ra, "a", 2);
    let mut b = lab.nat_host(&rb, "b", 2);
    let registry = Registry::start(&reg_host, REGISTRY_PORT);
    start_both(&a, &b, &registry);
    trust(&a, &b);

    let pa = wait_path(&a, &b, "direct", Duration::from_secs(10), |e| {
        e == "198.51.100.22:51820"
    });
    assert!(pa["last_change"].is_u64(), "{pa}");
    let measured = wait_until(Duration::from_secs(3), || {
        a.peer_entry(&b)
            .is_some_and(|p| p["rtt_ms"].as_f64().is_some_and(|r| r > 0.0))
    });
    assert!(measured, "no rtt_ms: {:?}", a.peer_entry(&b));
    wait_path(&b, &a, "direct", Duration::from_secs(10), |e| {
        e == "198.51.100.21:51820"
    });
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("hello.txt"), "hello through two NATs\n").unwrap();
    b.serve_http(www.path(), 8080);
    let url = format!("http://[{}]:8080/hello.txt", b.ipv6());
    assert!(
        wait_until(Duration::from_secs(5), || curl_ok(&a, &url)),
        "curl over the direct path failed"
    );
    let (code, ping) = a.json(&["ping", &b.key.to_string(), "--count", "3"]);
    assert_eq!(code, 0, "{ping}");
    assert_eq!(ping["data"]["path"], "direct");
    assert_eq!(ping["data"]["received"], 3);

    // The NAT in front of a moves every mapping to another port range while traffic runs
    // (a ping every 50 ms; its own deadline ends it).
    let flood = a
        .cmd("ping")
        .args([
            "-6",
            "-n",
            "-q",
            "-i",
            "0.05",
            "-w",
            "12",
            &b.ipv6().to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("ping");
    std::thread::sleep(Duration::from_millis(500));
    ra.set_nat(Nat::Range(20000, 29999));
    let t = Instant::now();
    let ep = wait_path(&b, &a, "direct", Duration::from_secs(15), |e| {
        e.strip_prefix("198.51.100.21:")
            .and_then(|p| p.parse::<u16>().ok())
            .is_some_and(|p| (20000..=29999).contains(&p))
    });
    assert!(
        wait_until(Duration::from_secs(10), || a.ping(b.ipv6())
            && curl_ok(&a, &url)),
        "traffic did not recover after the NAT remap"
    );
    eprintln!(
        "recovered after the remap in {:?} (endpoint {})",
        t.elapsed(),
        ep["endpoint"]
    );
    let out = flood.wait_with_output().expect("ping output");
    let summary = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("ping during the remap: {}", summary.trim());
    // About 240 probes in 12 s; a few seconds of outage loses under half of them.
    let received: u32 = summary
        .split(", ")
        .find_map(|p| p.strip_suffix(" received")?.parse().ok())
        .unwrap_or(0);
    assert!(received > 100, "too little got through: {summary}");
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test.sh runs it with --include-ignored as root"]
fn fully_random_nats_relay_through_the_registry_then_upgrade_when_the_nat_allows() {
    let mut lab = Lab::new();
    let reg_host = lab.public_host("reg", "203.0.113.10");
    let ra = lab.router("ra", "198.51.100.31", "10.3.1", Nat::FullyRandom);
    let rb = lab.router("rb", "198.51.100.32", "10.3.2", Nat::FullyRandom);
    let a = lab.nat_host(&ra, "a", 2);
    let mut b = lab.nat_host(&rb, "b", 2);
    let registry = Registry::start(&reg_host, REGISTRY_PORT);
    start_both(&a, &b, &registry);
    trust(&a, &b);

    let reg_ep = |e: &str| e == registry.addr;
    wait_path(&a, &b, "relay", Duration::from_secs(15), reg_ep);
    wait_path(&b, &a, "relay", Duration::from_secs(15), reg_ep);
    assert!(
        a.ping_until(b.ipv6(), Duration::from_secs(5)),
        "no ping over the relay"
    );
    let (code, ping) = a.json(&["ping", &b.key.to_string(), "--count", "2"]);
    assert_eq!(code, 0, "{ping}");
    assert_eq!(ping["data"]["path"], "relay");

    // 20 MB through the relay, intact.
    let blob = b.serve_blob(20, 8080);
    let secs = a.fetch_intact(&blob, 60);
    eprintln!(
        "20 MB over the relay in {secs:.2} s ({:.1} Mbit/s)",
        blob.data.len() as f64 * 8.0 / secs / 1e6
    );
    assert_eq!(a.peer_entry(&b).unwrap()["path"], "relay");

    // The NATs become port-preserving: a later punch succeeds and the path upgrades.
    ra.set_nat(Nat::PortPreserving);
    rb.set_nat(Nat::PortPreserving);
    wait_path(&a, &b, "direct", Duration::from_secs(45), |e| {
        e.starts_with("198.51.100.32:")
    });
    assert!(curl_ok(&a, &format!("http://[{}]:8080/", b.ipv6())));
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test.sh runs it with --include-ignored as root"]
fn a_public_agent_and_one_behind_a_nat_connect_directly() {
    let mut lab = Lab::new();
    let reg_host = lab.public_host("reg", "203.0.113.10");
    let a = lab.public_host("pub", "198.51.100.41");
    let rb = lab.router("rb", "198.51.100.42", "10.4.2", Nat::FullyRandom);
    let b = lab.nat_host(&rb, "b", 2);
    let registry = Registry::start(&reg_host, REGISTRY_PORT);
    start_both(&a, &b, &registry);
    trust(&b, &a);
    // Even a fully random NAT: b's probe to a's public address comes from a mapping made for
    // a, which a learns as a peer-reflexive candidate and answers.
    wait_path(&b, &a, "direct", Duration::from_secs(10), |e| {
        e == "198.51.100.41:51820"
    });
    wait_path(&a, &b, "direct", Duration::from_secs(10), |e| {
        e.starts_with("198.51.100.42:")
    });
    assert!(b.ping_until(a.ipv6(), Duration::from_secs(5)));
    assert!(a.ping_until(b.ipv6(), Duration::from_secs(5)));
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test.sh runs it with --include-ignored as root"]
fn two_agents_behind_one_nat_use_their_lan_addresses() {
    let mut lab = Lab::new();
    let reg_host = lab.public_host("reg", "203.0.113.10");
    let r = lab.router("r", "198.51.100.51", "10.5.1", Nat::PortPreserving);
    let a = lab.nat_host(&r, "a", 2);
    let mut b = lab.nat_host(&r, "b", 3);
    let registry = Registry::start(&reg_host, REGISTRY_PORT);
    start_both(&a, &b, &registry);
    trust(&a, &b);
    wait_path(&a, &b, "direct", Duration::from_secs(10), |e| {
        e == "10.5.1.3:51820"
    });
    wait_path(&b, &a, "direct", Duration::from_secs(10), |e| {
        e == "10.5.1.2:51820"
    });
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("hello.txt"), "hello neighbour\n").unwrap();
    b.serve_http(www.path(), 8080);
    assert!(curl_ok(
        &a,
        &format!("http://[{}]:8080/hello.txt", b.ipv6())
    ));
}
