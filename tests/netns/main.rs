//! End-to-end tests with real daemons in network namespaces (root only; the lab is in
//! tests/support/netns.rs).
//! Hosts sit on a bridge in 198.51.100.0/24 and talk over pilot's overlay IPv6.

mod demo;
mod dns;
mod faults;
mod files;
mod home_relay;
mod nat;
mod pubsub_tasks;
mod registry_cluster;
mod services;
#[path = "../support/mod.rs"]
mod support;
mod tls_relay;
mod trust;
mod userspace;

use std::time::Duration;

use sha2::{Digest, Sha256};
use support::netns::{random_file, Host, Lab};
use support::process::wait_until;

/// Two hosts that trust each other, daemons running, tunnel up.
fn two_hosts(lab: &mut Lab, keepalive: u16) -> (Host, Host) {
    let mut a = lab.host("a", "198.51.100.1");
    let mut b = lab.host("b", "198.51.100.2");
    a.configure(keepalive, &[b.as_peer()]);
    b.configure(keepalive, &[a.as_peer()]);
    a.start_daemon();
    b.start_daemon();
    assert!(
        a.ping_until(b.ipv6(), Duration::from_secs(10)),
        "no tunnel:\nA:\n{}\nB:\n{}",
        a.daemon_log(),
        b.daemon_log()
    );
    (a, b)
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test.sh runs it with --include-ignored as root"]
fn curl_from_a_reaches_an_http_server_in_b_and_ping_works_both_ways() {
    let mut lab = Lab::new();
    let (a, mut b) = two_hosts(&mut lab, 25);
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("hello.txt"), "hello over pilot\n").unwrap();
    b.serve_http(www.path(), 8080);
    let url = format!("http://[{}]:8080/hello.txt", b.ipv6());
    let out = a.run("curl", &["-sS", "--max-time", "10", &url]);
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello over pilot\n");
    assert!(a.ping(b.ipv6()));
    assert!(b.ping(a.ipv6()));
    let peers = a.peers_json();
    let p = &peers["peers"][0];
    assert_eq!(p["public_key"], b.key.to_string());
    assert!(p["last_handshake"].is_u64());
    assert!(p["rx_bytes"].as_u64().unwrap() > 0);
    // The kernel's own link-local/multicast chatter on pilot0 is ignored, not counted.
    let c = &peers["counters"];
    for k in [
        "malformed",
        "not_overlay",
        "no_peer",
        "spoofed",
        "unknown_key_handshakes",
    ] {
        assert_eq!(c[k], 0, "{k} in {c}");
    }
    let info: serde_json::Value =
        serde_json::from_slice(&a.pilotctl(&["info", "--json"]).stdout).unwrap();
    assert_eq!(info["data"]["listen_port"], 51820);
    let text = a.pilotctl(&["peers"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains(&b.key.addr48().to_string()));
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test.sh runs it with --include-ignored as root"]
fn a_100_mb_transfer_arrives_intact() {
    let mut lab = Lab::new();
    let (a, mut b) = two_hosts(&mut lab, 25);
    let www = tempfile::tempdir().unwrap();
    let blob = www.path().join("blob");
    let want = random_file(&blob, "100M");
    b.serve_http(www.path(), 8081);
    let dl = tempfile::tempdir().unwrap();
    let got_path = dl.path().join("got");
    let url = format!("http://[{}]:8081/blob", b.ipv6());
    let out = a.run(
        "curl",
        &[
            "-sS",
            "--max-time",
            "60",
            "-o",
            got_path.to_str().unwrap(),
            &url,
        ],
    );
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = Sha256::digest(std::fs::read(&got_path).unwrap());
    assert_eq!(got, want, "the file changed in transit");
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test.sh runs it with --include-ignored as root"]
fn a_host_whose_key_b_does_not_know_cannot_reach_b_and_b_counts_it() {
    let mut lab = Lab::new();
    let (a, b) = two_hosts(&mut lab, 25);
    let mut c = lab.host("c", "198.51.100.3");
    // C knows B, but B does not know C.
    c.configure(25, &[b.as_peer()]);
    c.start_daemon();
    assert!(!c.ping_until(b.ipv6(), Duration::from_secs(3)));
    let counted = wait_until(Duration::from_secs(5), || {
        b.peers_json()["counters"]["unknown_key_handshakes"]
            .as_u64()
            .unwrap_or(0)
            > 0
    });
    assert!(
        counted,
        "B did not count C's handshakes: {}",
        b.peers_json()
    );
    // The trusted pair is not disturbed.
    assert!(a.ping(b.ipv6()));
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test.sh runs it with --include-ignored as root"]
fn traffic_resumes_after_a_daemon_restarts() {
    let mut lab = Lab::new();
    let (a, mut b) = two_hosts(&mut lab, 25);
    b.stop_daemon();
    assert!(!a.ping(b.ipv6()));
    b.start_daemon();
    assert!(
        a.ping_until(b.ipv6(), Duration::from_secs(10)),
        "A could not reach B after B restarted:\n{}",
        b.daemon_log()
    );
    assert!(b.ping(a.ipv6()));
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test.sh runs it with --include-ignored as root"]
fn traffic_resumes_when_b_changes_its_outer_address() {
    let mut lab = Lab::new();
    // Keepalive every second: B's keepalives from its new address tell A where it went.
    let (a, b) = two_hosts(&mut lab, 1);
    let run = |args: &[&str]| {
        let out = b.run("ip", args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // Without promote_secondaries, deleting the primary address also deletes .4.
    let out = b.run(
        "sysctl",
        &["-qw", "net.ipv4.conf.eth0.promote_secondaries=1"],
    );
    assert!(out.status.success());
    run(&["addr", "add", "198.51.100.4/24", "dev", "eth0"]);
    run(&["addr", "del", "198.51.100.2/24", "dev", "eth0"]);
    assert!(
        a.ping_until(b.ipv6(), Duration::from_secs(10)),
        "A lost B after it moved"
    );
    let ep = a.peers_json()["peers"][0]["endpoint"].clone();
    assert_eq!(ep, "198.51.100.4:51820");
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test.sh runs it with --include-ignored as root"]
fn a_lan_host_that_routes_our_overlay_address_to_our_ethernet_cannot_reach_overlay_services() {
    let mut lab = Lab::new();
    let (a, mut b) = two_hosts(&mut lab, 25);
    let c = lab.host("c", "198.51.100.3");
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("secret.txt"), "for trusted peers only\n").unwrap();
    b.serve_http(www.path(), 9000);
    let out = b.pilotctl(&["expose", "8080", "--to", "127.0.0.1:9000"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The trusted peer reaches the exposed port through the tunnel.
    let url = format!("http://[{}]:8080/secret.txt", b.ipv6());
    let out = a.run("curl", &["-sS", "--max-time", "10", &url]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "for trusted peers only\n"
    );

    // C, on the same Ethernet but no peer, routes B's overlay address straight at B's eth0.
    let ip6 = |h: &Host, args: &[&str]| {
        let out = h.run("ip", args);
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ip6(
        &b,
        &[
            "-6",
            "addr",
            "add",
            "2001:db8::b/64",
            "dev",
            "eth0",
            "nodad",
        ],
    );
    ip6(
        &c,
        &[
            "-6",
            "addr",
            "add",
            "2001:db8::c/64",
            "dev",
            "eth0",
            "nodad",
        ],
    );
    let target = format!("{}/128", b.ipv6());
    ip6(&c, &["-6", "route", "add", &target, "via", "2001:db8::b"]);
    // The route works at the IP level (B's kernel answers pings for any local address)...
    assert!(
        c.ping_until(b.ipv6(), Duration::from_secs(5)),
        "the bypass route does not work, so the test would prove nothing"
    );
    // ...but pilot's overlay services only accept what came out of the tunnel.
    for port in [8080u16, 7, 1001] {
        let url = format!("http://[{}]:{port}/secret.txt", b.ipv6());
        let out = c.run("curl", &["-sS", "--max-time", "3", &url]);
        assert!(
            !out.status.success(),
            "port {port} answered a host that is no peer: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
