//! Discovery at a real registry on loopback (issue 12): `lookup` by hostname, address, IPv6
//! and key (key, address, IPv6, hostname, tags; never an endpoint), `set-tags`/`clear-tags`,
//! `clear-hostname` and `deregister`, with one bad input each.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::home::Home;
use support::process::wait_until;
use support::registry::Registry;

fn code(home: &Home, args: &[&str]) -> String {
    let (c, v) = home.json(args);
    assert_eq!(c, 1, "{args:?}: {v}");
    v["code"].as_str().unwrap_or_default().to_string()
}

/// `lookup` until the registry answers with a node whose `field` is `want` (registrations
/// and tag updates are asynchronous).
fn lookup_until(home: &Home, peer: &str, field: &str, want: &Value) -> Value {
    let mut last = Value::Null;
    let found = wait_until(Duration::from_secs(15), || {
        let (c, v) = home.json(&["lookup", peer]);
        last = v.clone();
        c == 0 && &v["data"][field] == want
    });
    assert!(found, "lookup {peer}: {field} never became {want}: {last}");
    last["data"].clone()
}

#[test]
fn lookup_tags_clear_hostname_and_deregister_at_a_registry() {
    let reg = Registry::loopback();
    let a = Home::new("pilot-disc");
    let b = Home::new("pilot-disc");
    a.start(&[
        "--mode",
        "userspace",
        "--registry",
        &reg.addr,
        "--hostname",
        "node-a",
    ]);
    b.start(&[
        "--mode",
        "userspace",
        "--registry",
        &reg.addr,
        "--hostname",
        "node-b",
    ]);
    let b_info = b.ok(&["info"]);

    // By hostname: key, address, IPv6, hostname, tags; never an endpoint.
    let n = lookup_until(&a, "node-b", "hostname", &"node-b".into());
    assert_eq!(n["public_key"], b_info["public_key"]);
    assert_eq!(n["address"], b_info["address"]);
    assert_eq!(n["ipv6"], b_info["ipv6"]);
    assert_eq!(n["tags"], serde_json::json!([]));
    let text = n.to_string();
    assert!(
        !text.contains("127.0.0.1") && n.get("endpoint").is_none(),
        "{n}"
    );
    for by in ["address", "ipv6", "public_key"] {
        let v = a.ok(&["lookup", b_info[by].as_str().unwrap()]);
        assert_eq!(v["public_key"], b_info["public_key"], "by {by}");
    }
    assert_eq!(code(&a, &["lookup", "nobody-here"]), "not_found");
    assert_eq!(code(&a, &["lookup", "not a peer!"]), "invalid_argument");

    // Tags: set, shown by lookup, kept across a daemon restart, cleared.
    let r = b.ok(&["set-tags", "gpu", "vector-search"]);
    assert_eq!(r["tags"], serde_json::json!(["gpu", "vector-search"]));
    assert_eq!(r["hostname"], "node-b");
    let tags = serde_json::json!(["gpu", "vector-search"]);
    lookup_until(&a, "node-b", "tags", &tags);
    assert_eq!(code(&b, &["set-tags", "GPU"]), "invalid_argument");
    assert_eq!(code(&b, &["set-tags", "a", "a"]), "invalid_argument");
    b.ok(&["daemon", "stop"]);
    b.start(&["--mode", "userspace", "--registry", &reg.addr]);
    lookup_until(&a, "node-b", "tags", &tags);
    let human = String::from_utf8_lossy(&a.pilotctl(&["lookup", "node-b"]).stdout).into_owned();
    assert!(human.contains("tags        gpu vector-search"), "{human}");
    assert_eq!(b.ok(&["clear-tags"])["tags"], serde_json::json!([]));
    lookup_until(&a, "node-b", "tags", &serde_json::json!([]));

    // clear-hostname: the name is free, the node still found by key.
    let r = b.ok(&["clear-hostname"]);
    assert!(r["hostname"].is_null(), "{r}");
    assert!(b.ok(&["info"])["hostname"].is_null());
    assert!(wait_until(Duration::from_secs(10), || {
        a.json(&["lookup", "node-b"]).1["code"] == "not_found"
    }));
    let key = b_info["public_key"].as_str().unwrap();
    assert!(a.ok(&["lookup", key])["hostname"].is_null());

    // deregister: the registry forgets the node entirely; our hostname is gone for good.
    b.ok(&["set-hostname", "node-b"]);
    lookup_until(&a, "node-b", "hostname", &"node-b".into());
    let r = b.ok(&["deregister"]);
    assert_eq!(r["registered"], false);
    assert!(wait_until(Duration::from_secs(10), || {
        a.json(&["lookup", key]).1["code"] == "not_found"
    }));
    assert_eq!(code(&a, &["lookup", "node-b"]), "not_found");
    assert!(b.ok(&["info"])["hostname"].is_null());

    // netcheck: the registry is reachable, sees us on loopback (no NAT), with an RTT.
    let n = a.ok(&["netcheck"]);
    let r = &n["registries"][0];
    assert_eq!(r["registry"], reg.addr.as_str(), "{n}");
    assert_eq!(r["registered"], true, "{n}");
    let port = a.ok(&["info"])["listen_port"].as_u64().unwrap();
    assert_eq!(r["reflexive"], format!("127.0.0.1:{port}"), "{n}");
    assert!(r["rtt_ms"].as_f64().is_some_and(|v| v >= 0.0), "{n}");
    assert_eq!(n["nat"], "no-nat", "{n}");
    assert_eq!(n["reflexive"].as_array().unwrap().len(), 1);
    assert!(n["tun_available"].is_boolean());
    assert_eq!(
        n["tun_available"] == false,
        n["tun_unavailable_reason"].is_string(),
        "{n}"
    );
    let human = String::from_utf8_lossy(&a.pilotctl(&["netcheck"]).stdout).into_owned();
    assert!(
        human.contains("reachable") && human.contains("nat         no-nat"),
        "{human}"
    );

    // Without a registry, lookup says so.
    let lone = Home::new("pilot-disc");
    lone.start(&["--mode", "userspace"]);
    assert_eq!(code(&lone, &["lookup", "node-a"]), "connection_failed");
    let n = lone.ok(&["netcheck"]);
    assert_eq!(n["nat"], "unknown");
    assert!(n["registries"].as_array().unwrap().is_empty());
    let stopped = Home::new("pilot-disc");
    assert_eq!(code(&stopped, &["netcheck"]), "not_running");
}
