//! Pub/sub (1002) and tasks (1003) in TUN mode (kernel sockets on the overlay address), the
//! same services the unprivileged tests run on the userspace netstack.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use crate::support::netns::Lab;
use crate::support::process::wait_until;

#[test]
#[ignore = "needs root and network namespaces: scripts/test.sh runs it with --include-ignored as root"]
fn pubsub_and_a_task_work_in_tun_mode() {
    let mut lab = Lab::new();
    let (a, b) = crate::two_hosts(&mut lab, 25);
    let b_ip = b.ipv6().to_string();
    let sub = a
        .launched()
        .args([
            "--json",
            "subscribe",
            &b_ip,
            "tun.>",
            "--count",
            "3",
            "--timeout",
            "20",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        b.ok(&["pubsub"])["subscribers"]
            .as_array()
            .is_some_and(|s| s.len() == 1)
    }));
    for i in 1..=3 {
        let p = b.ok(&["publish", "--local", "tun.test", "--data", &format!("e{i}")]);
        assert_eq!(p["subscribers"], 1, "{p}");
    }
    let out = sub.wait_with_output().unwrap();
    let lines: Vec<serde_json::Value> = BufReader::new(&out.stdout[..])
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{}", String::from_utf8_lossy(&out.stderr));
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["event"]["seq"], i as u64 + 1);
        assert_eq!(l["event"]["data"], format!("e{}", i + 1));
    }

    let t = a.ok(&[
        "task",
        "submit",
        &b_ip,
        "--task",
        "{\"op\":\"tun\"}",
        "--deadline",
        "60",
    ]);
    let id = t["id"].as_str().unwrap().to_string();
    assert!(wait_until(Duration::from_secs(10), || {
        b.json(&["task", "accept", &id]).0 == 0
    }));
    b.ok(&["task", "result", &id, "--data", "ok"]);
    let done = a.ok(&["task", "wait", &id, "--timeout", "20"]);
    assert_eq!(done["state"], "DONE", "{done}");
    assert_eq!(done["result"]["data"], "ok");
}
