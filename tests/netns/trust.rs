//! The seed flow of the control plane with real daemons: a registry on 203.0.113.0/24, an
//! orchestrator and a worker on 198.51.100.0/24 (no NAT), hostnames, a handshake, approval,
//! untrust, restarts, and a registry that goes away.

use std::time::{Duration, Instant};

use crate::support::netns::{Host, Lab};
use crate::support::process::wait_until;
use crate::support::registry::Registry;

const REGISTRY_PORT: u16 = 7946;

fn peer_keys(h: &Host) -> Vec<String> {
    h.ok(&["peers"])["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["public_key"].as_str().unwrap().to_string())
        .collect()
}

fn endpoint_of(h: &Host, key: &str) -> Option<String> {
    h.ok(&["peers"])["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["public_key"] == key)
        .and_then(|p| p["endpoint"].as_str().map(String::from))
}

fn curl(h: &Host, url: &str) -> bool {
    h.run("curl", &["-sS", "--max-time", "3", "-o", "/dev/null", url])
        .status
        .success()
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test.sh runs it with --include-ignored as root"]
fn handshake_approve_untrust_restart_and_registry_outage() {
    let mut lab = Lab::new();
    let reg_host = lab.public_host("reg", "203.0.113.10");
    let mut orch = lab.public_host("orch", "198.51.100.11");
    let mut work = lab.public_host("work", "198.51.100.12");
    let mut registry = Registry::start(&reg_host, REGISTRY_PORT);
    let reg_env = [("PILOT_REGISTRY", registry.addr.as_str())];
    orch.configure(25, &[]);
    work.configure(25, &[]);

    // The spec's commands, verbatim.
    orch.start_env(&["--hostname", "orchestrator-node"], &reg_env);
    work.start_env(&["--hostname", "worker-node"], &reg_env);

    // Both are registered: each finds the other by name, with the right key and address.
    let found = wait_until(Duration::from_secs(10), || {
        orch.json(&["find", "worker-node"]).0 == 0
    });
    assert!(found, "find failed:\n{}\n{}", orch.bg_log(), registry.log());
    let f = orch.ok(&["find", "worker-node"]);
    assert_eq!(f["public_key"], work.key.to_string());
    assert_eq!(f["ipv6"], work.ipv6().to_string());
    assert!(
        f.get("endpoint").is_none(),
        "lookups never carry endpoints: {f}"
    );

    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("hello.txt"), "hello worker\n").unwrap();
    work.serve_http(www.path(), 8080);
    let url = format!("http://[{}]:8080/hello.txt", work.ipv6());

    // The handshake reaches the worker by push, well under a second.
    let t = Instant::now();
    let h = orch.ok(&["handshake", "worker-node", "vector search for the swarm"]);
    assert_eq!(h["state"], "requested", "{h}");
    let pushed = wait_until(Duration::from_secs(3), || {
        work.ok(&["pending"])["pending"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
    });
    assert!(pushed, "no pending request:\n{}", work.bg_log());
    eprintln!("handshake pushed in {:?}", t.elapsed());
    let pending = work.ok(&["pending"]);
    let p = &pending["pending"][0];
    assert_eq!(p["public_key"], orch.key.to_string());
    assert_eq!(p["hostname"], "orchestrator-node");
    assert_eq!(p["justification"], "vector search for the swarm");

    // Before approval: no path, and the orchestrator holds no endpoint for the worker.
    assert!(!curl(&orch, &url), "curl worked before approval");
    assert_eq!(endpoint_of(&orch, &work.key.to_string()), None);
    assert!(!peer_keys(&work).contains(&orch.key.to_string()));

    // Approve: the tunnel forms and curl works.
    let a = work.ok(&["approve", "orchestrator-node"]);
    assert_eq!(a["state"], "trusted");
    assert!(
        orch.ping_until(work.ipv6(), Duration::from_secs(10)),
        "no tunnel after approval:\nORCH:\n{}\nWORK:\n{}",
        orch.bg_log(),
        work.bg_log()
    );
    let out = orch.run("curl", &["-sS", "--max-time", "10", &url]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello worker\n");
    let trust = orch.ok(&["trust"]);
    assert!(trust["peers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["public_key"] == work.key.to_string() && p["state"] == "trusted"));

    // Untrust from the worker: both sides drop the tunnel and the endpoint.
    let t = Instant::now();
    work.ok(&["untrust", "orchestrator-node"]);
    let gone = wait_until(Duration::from_secs(3), || {
        !peer_keys(&orch).contains(&work.key.to_string())
    });
    assert!(gone, "orchestrator kept the worker:\n{}", orch.bg_log());
    eprintln!("revocation applied on the other side in {:?}", t.elapsed());
    assert!(!peer_keys(&work).contains(&orch.key.to_string()));
    assert!(!orch.ping(work.ipv6()));
    assert!(!curl(&orch, &url));

    // Trust again, this time the worker asks and the orchestrator approves.
    work.ok(&["handshake", "orchestrator-node"]);
    assert!(wait_until(Duration::from_secs(3), || {
        orch.ok(&["pending"])["pending"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
    }));
    orch.ok(&["approve", "worker-node"]);
    assert!(orch.ping_until(work.ipv6(), Duration::from_secs(10)));

    // A restart of both daemons keeps the trust.
    orch.stop_daemon();
    work.stop_daemon();
    orch.start_env(&["--hostname", "orchestrator-node"], &reg_env);
    work.start_env(&["--hostname", "worker-node"], &reg_env);
    assert!(
        orch.ping_until(work.ipv6(), Duration::from_secs(15)),
        "no tunnel after restart:\nORCH:\n{}\nWORK:\n{}",
        orch.bg_log(),
        work.bg_log()
    );

    // The registry goes away: the tunnel keeps working.
    registry.stop();
    std::thread::sleep(Duration::from_secs(3));
    assert!(orch.ping(work.ipv6()));
    assert!(curl(&orch, &url));

    // The registry comes back with its state: names still resolve, nothing lost.
    registry.restart();
    let found = wait_until(Duration::from_secs(30), || {
        orch.json(&["find", "worker-node"]).0 == 0
    });
    assert!(found, "find after registry restart:\n{}", registry.log());
    assert_eq!(
        orch.ok(&["find", "worker-node"])["public_key"],
        work.key.to_string()
    );
    assert!(orch.ping(work.ipv6()));
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test.sh runs it with --include-ignored as root"]
fn a_hostname_held_by_one_key_cannot_be_taken_by_another() {
    let mut lab = Lab::new();
    let reg_host = lab.public_host("reg", "203.0.113.20");
    let a = lab.public_host("a", "198.51.100.21");
    let b = lab.public_host("b", "198.51.100.22");
    let registry = Registry::start(&reg_host, REGISTRY_PORT);
    let reg_env = [("PILOT_REGISTRY", registry.addr.as_str())];
    a.configure(25, &[]);
    b.configure(25, &[]);
    a.start_env(&["--hostname", "worker-node"], &reg_env);
    b.start_env(&[], &reg_env);
    assert!(wait_until(Duration::from_secs(10), || {
        b.json(&["find", "worker-node"]).0 == 0
    }));
    let (code, v) = b.json(&["set-hostname", "worker-node"]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["code"], "already_exists", "{v}");
    // An unknown name is not_found, and bad names are refused before asking anyone.
    let (code, v) = b.json(&["find", "nobody-here"]);
    assert_eq!(code, 1);
    assert_eq!(v["code"], "not_found", "{v}");
    let (code, v) = b.json(&["handshake", "Not_A_Name"]);
    assert_eq!(code, 1);
    assert_eq!(v["code"], "invalid_argument", "{v}");
}
