//! Home relays (v1.4, issue 14) with real daemons: two agents behind fully random NATs (they
//! cannot punch, so everything is relayed) and two independent registries, both configured in
//! the same order. The agents relay through their home, the first registry; when it is killed
//! both move home to the second within the documented time (23 s at worst, docs/PROTOCOL.md
//! "Home relay (v1.4)"), the relayed path follows, and a relayed ping still works.

use std::time::{Duration, Instant};

use crate::support::netns::{Host, Lab, Nat};
use crate::support::process::wait_until;
use crate::support::registry::Registry;

const PORT: u16 = 7946;

fn configure(h: &Host, allow: &Host) {
    let c = format!(
        "mode = \"tun\"\nlog_level = \"info\"\n[tunnel]\nlisten_port = 51820\n\
         keepalive_secs = 25\n[trust]\nallow = [\"{}\"]\n",
        allow.key
    );
    std::fs::write(h.home().join("config.toml"), c).expect("write config");
}

/// `of`'s path and endpoint for `peer` in `pilotctl peers --json`.
fn path(of: &Host, peer: &Host) -> Option<(String, String)> {
    let p = of.peer_entry(peer)?;
    Some((
        p["path"].as_str()?.to_string(),
        p["endpoint"].as_str().unwrap_or_default().to_string(),
    ))
}

/// The registry `pilotctl netcheck` marks as `h`'s home.
fn home(h: &Host) -> Option<String> {
    let (code, v) = h.json(&["netcheck"]);
    if code != 0 {
        return None;
    }
    v["data"]["registries"]
        .as_array()?
        .iter()
        .find(|r| r["home"] == true)
        .and_then(|r| r["registry"].as_str().map(String::from))
}

fn relayed_via(a: &Host, b: &Host, registry: &str) -> bool {
    let want = Some(("relay".to_string(), registry.to_string()));
    path(a, b) == want && path(b, a) == want
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test.sh runs it with --include-ignored as root"]
fn relayed_agents_move_home_to_the_second_registry_when_the_first_dies() {
    let mut lab = Lab::new();
    let r1_host = lab.public_host("hr1", "203.0.113.51");
    let r2_host = lab.public_host("hr2", "203.0.113.52");
    let ra = lab.router("hra", "198.51.100.51", "10.5.1", Nat::FullyRandom);
    let rb = lab.router("hrb", "198.51.100.52", "10.5.2", Nat::FullyRandom);
    let a = lab.nat_host(&ra, "ha", 2);
    let b = lab.nat_host(&rb, "hb", 2);
    let mut r1 = Registry::start(&r1_host, PORT);
    let r2 = Registry::start(&r2_host, PORT);
    configure(&a, &b);
    configure(&b, &a);
    let both = format!("{},{}", r1.addr, r2.addr);
    for h in [&a, &b] {
        h.start_env(&[], &[("PILOT_REGISTRY", both.as_str())]);
    }
    let homes = wait_until(Duration::from_secs(10), || {
        home(&a) == Some(r1.addr.clone()) && home(&b) == Some(r1.addr.clone())
    });
    assert!(homes, "home is not r1: {:?} {:?}", home(&a), home(&b));
    let trusted = wait_until(Duration::from_secs(10), || {
        a.json(&["handshake", &b.key.to_string()]).0 == 0
    });
    assert!(trusted, "handshake failed:\n{}", a.bg_log());
    let relayed = wait_until(Duration::from_secs(20), || relayed_via(&a, &b, &r1.addr));
    assert!(
        relayed,
        "not relayed through r1: {:?} {:?}\n{}",
        path(&a, &b),
        path(&b, &a),
        a.bg_log()
    );
    assert!(
        a.ping_until(b.ipv6(), Duration::from_secs(5)),
        "no ping over the relay"
    );

    r1.kill();
    let t = Instant::now();
    let moved = wait_until(Duration::from_secs(30), || {
        home(&a) == Some(r2.addr.clone()) && home(&b) == Some(r2.addr.clone())
    });
    let took = t.elapsed();
    assert!(
        moved,
        "homes did not move to r2: {:?} {:?}\nA:\n{}\nB:\n{}",
        home(&a),
        home(&b),
        a.bg_log(),
        b.bg_log()
    );
    eprintln!("homes moved to r2 after {took:?}");
    for l in a.bg_log().lines().filter(|l| {
        l.contains("home relay") || l.contains("unanswered") || l.contains("registry lost")
    }) {
        eprintln!("a: {l}");
    }
    assert!(took <= Duration::from_secs(25), "after {took:?}");
    let followed = wait_until(Duration::from_secs(20), || relayed_via(&a, &b, &r2.addr));
    assert!(
        followed,
        "the relayed path did not move to r2: {:?} {:?}",
        path(&a, &b),
        path(&b, &a)
    );
    eprintln!("relayed through r2 after {:?}", t.elapsed());
    assert!(
        a.ping_until(b.ipv6(), Duration::from_secs(10)),
        "no ping over r2:\nA:\n{}\nB:\n{}",
        a.bg_log(),
        b.bg_log()
    );
    let (code, ping) = a.json(&["ping", &b.key.to_string(), "--count", "2"]);
    assert_eq!(code, 0, "{ping}");
    assert_eq!(ping["data"]["path"], "relay");
    assert_eq!(ping["data"]["endpoint"], r2.addr.as_str());
}
