//! Two registry instances over one PostgreSQL database (a cluster), with real daemons in
//! namespaces: nodes attached to different instances find each other, shake hands and reach
//! each other; a hostname claimed at the same moment through both instances has one owner;
//! after instance 1 is killed with SIGKILL, a node configured with both moves on with
//! instance 2 and a message held by instance 1 is not lost.
//!
//! PostgreSQL runs on the machine (`.ci/run` installs and starts it); the registries reach it
//! over its Unix socket, which network namespaces do not separate.

use std::time::{Duration, Instant};

use crate::support::netns::{Host, Lab};
use crate::support::pg::TestDb;
use crate::support::process::wait_until;
use crate::support::registry::Registry;

const PORT: u16 = 7946;

fn pending_from(h: &Host, key: &str) -> bool {
    h.ok(&["pending"])["pending"]
        .as_array()
        .is_some_and(|p| p.iter().any(|e| e["public_key"] == key))
}

fn instance(host: &Host, db: &TestDb, name: &str, key_file: &str) -> Registry {
    let url = db.url();
    Registry::start_args(
        host,
        PORT,
        &["--store", &url, "--instance", name, "--key-file", key_file],
    )
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test.sh runs it with --include-ignored as root"]
fn two_registry_instances_over_one_postgresql_serve_nodes_attached_to_either_and_survive_a_kill() {
    let Some(db) = TestDb::create() else { return };
    let mut lab = Lab::new();
    let r1_host = lab.public_host("r1", "203.0.113.41");
    let r2_host = lab.public_host("r2", "203.0.113.42");
    let mut orch = lab.public_host("orch", "198.51.100.41");
    let mut work = lab.public_host("work", "198.51.100.42");
    let c = lab.public_host("c", "198.51.100.43");
    let mut w2 = lab.public_host("w2", "198.51.100.44");
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("registry.key");
    let key_file = key_file.to_str().unwrap();
    // The first instance creates the shared key; the second loads the same file.
    let mut r1 = instance(&r1_host, &db, "one", key_file);
    let r2 = instance(&r2_host, &db, "two", key_file);
    let (e1, e2) = (
        [("PILOT_REGISTRY", r1.addr.as_str())],
        [("PILOT_REGISTRY", r2.addr.as_str())],
    );
    for h in [&orch, &work, &c, &w2] {
        h.configure(25, &[]);
    }
    orch.start_env(&["--hostname", "orchestrator-node"], &e1);
    work.start_env(&["--hostname", "worker-node"], &e2);
    c.start_env(&[], &e1);
    w2.start_env(&[], &e2);

    // Lookups cross instances.
    let found = wait_until(Duration::from_secs(10), || {
        orch.json(&["find", "worker-node"]).0 == 0
            && work.json(&["find", "orchestrator-node"]).0 == 0
    });
    assert!(found, "find across instances:\n{}\n{}", r1.log(), r2.log());

    // One name claimed at the same moment through both instances: exactly one owner.
    let (ra, rb) = std::thread::scope(|s| {
        let a = s.spawn(|| c.json(&["set-hostname", "contested"]));
        let b = s.spawn(|| w2.json(&["set-hostname", "contested"]));
        (a.join().unwrap(), b.join().unwrap())
    });
    let winners = [&ra, &rb].iter().filter(|r| r.0 == 0).count();
    assert_eq!(winners, 1, "both or neither won: {ra:?} {rb:?}");
    let loser = if ra.0 == 0 { &rb } else { &ra };
    assert_eq!(loser.1["code"], "already_exists", "{loser:?}");
    let winner_key = if ra.0 == 0 { c.key } else { w2.key }.to_string();
    for h in [&c, &w2] {
        assert!(wait_until(Duration::from_secs(5), || {
            h.json(&["find", "contested"]).1["data"]["public_key"] == winner_key.as_str()
        }));
    }

    // Handshake, pending, approve, curl: orchestrator on instance 1, worker on instance 2.
    let t = Instant::now();
    orch.ok(&["handshake", "worker-node", "cluster jobs"]);
    assert!(
        wait_until(Duration::from_secs(3), || pending_from(
            &work,
            &orch.key.to_string()
        )),
        "no pending request at the worker:\n{}\n{}\n{}",
        work.bg_log(),
        r1.log(),
        r2.log()
    );
    eprintln!("trust request crossed instances in {:?}", t.elapsed());
    work.ok(&["approve", "orchestrator-node"]);
    assert!(
        orch.ping_until(work.ipv6(), Duration::from_secs(10)),
        "no tunnel across instances:\nORCH:\n{}\nWORK:\n{}",
        orch.bg_log(),
        work.bg_log()
    );
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("hello.txt"), "hello from the cluster\n").unwrap();
    work.serve_http(www.path(), 8080);
    let url = format!("http://[{}]:8080/hello.txt", work.ipv6());
    let out = orch.run("curl", &["-sS", "--max-time", "10", &url]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from the cluster\n"
    );

    // A message held by instance 1 for a node that is away (w2), from a node attached only to
    // instance 1 (c).
    w2.stop_daemon();
    c.ok(&["handshake", &w2.key.to_string(), "held across a crash"]);

    // The orchestrator now knows both instances; instance 1 dies.
    orch.stop_daemon();
    let both = format!("{},{}", r1.addr, r2.addr);
    orch.start_env(
        &["--hostname", "orchestrator-node"],
        &[("PILOT_REGISTRY", both.as_str())],
    );
    assert!(wait_until(Duration::from_secs(10), || orch
        .json(&["find", "worker-node"])
        .0
        == 0));
    std::thread::sleep(Duration::from_secs(1));
    r1.kill();

    // The held message is delivered by instance 2 when w2 comes back (attached to 2 only).
    w2.start_env(&[], &e2);
    assert!(
        wait_until(Duration::from_secs(10), || pending_from(
            &w2,
            &c.key.to_string()
        )),
        "the message held before the kill was lost:\n{}\n{}",
        w2.bg_log(),
        r2.log()
    );
    // A new trust request reaches the orchestrator through instance 2.
    let t = Instant::now();
    w2.ok(&["handshake", "orchestrator-node", "after the crash"]);
    assert!(
        wait_until(Duration::from_secs(5), || pending_from(
            &orch,
            &w2.key.to_string()
        )),
        "no request at the orchestrator after instance 1 died:\n{}\n{}",
        orch.bg_log(),
        r2.log()
    );
    eprintln!(
        "trust request via the surviving instance in {:?}",
        t.elapsed()
    );
    // The tunnel never depended on the registry.
    assert!(orch.ping(work.ipv6()));
}
