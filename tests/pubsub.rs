//! Publish/subscribe (overlay port 1002) between real userspace daemons on loopback: a broker
//! fans events out to three subscribers, one of them stalled on purpose (its API client never
//! reads); the other two get every event in order, and the stalled one's drops are counted,
//! without ever slowing the broker or the others.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Stdio};
use std::time::Duration;

use pilot::api::{Client, PublishedData, PubsubData, Request};
use support::home::Home;
use support::mesh::{mesh, start_all};
use support::process::wait_until;

const EVENTS: u64 = 600;
const BATCH: u64 = 32;

/// `pilotctl --json subscribe PEER PATTERN --count N`, its stdout piped.
fn subscriber(h: &Home, peer: &str, pattern: &str, count: u64) -> Child {
    h.command()
        .args(["--json", "subscribe", peer, pattern, "--count"])
        .arg(count.to_string())
        .args(["--timeout", "120"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Reads a subscriber's NDJSON lines on a thread (so its pipe never fills).
fn collect(mut c: Child) -> std::thread::JoinHandle<(Vec<serde_json::Value>, String)> {
    std::thread::spawn(move || {
        let out = c.stdout.take().unwrap();
        let lines: Vec<serde_json::Value> = BufReader::new(out)
            .lines()
            .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
            .collect();
        let mut err = String::new();
        c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        c.wait().unwrap();
        (lines, err)
    })
}

/// A raw API client that asks for a subscription and then never reads again.
fn stalled_subscriber(h: &Home, peer: &str, pattern: &str) -> UnixStream {
    let mut s = UnixStream::connect(h.path().join("pilot.sock")).unwrap();
    let target = pilot::api::subscribe_target(Some(peer), pattern);
    write!(s, "GET {target} HTTP/1.1\r\nHost: pilot\r\n\r\n").unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(
        &head, b"HTTP/1.1 200",
        "the stalled subscription was refused"
    );
    s
}

fn status(c: &mut Client) -> PubsubData {
    c.get(&Request::PubsubStatus {}).unwrap()
}

#[test]
fn a_stalled_subscriber_loses_events_alone_and_its_drops_are_counted() {
    // Small buffers so the stalled path fills after a few hundred 16 KiB events.
    let extra = "[pubsub]\nsubscriber_queue = 64\n[netstack]\ntcp_buffer_kib = 64\n";
    let (homes, keys) = mesh(3, extra);
    start_all(&homes);
    let (broker, a, c) = (&homes[0], &homes[1], &homes[2]);
    let fast_a = collect(subscriber(a, "node-0", "load.>", EVENTS));
    let fast_c = collect(subscriber(c, &keys[0], "load.*", EVENTS));
    let _stalled = stalled_subscriber(a, "node-0", "load.x");
    let mut api = Client::connect(&broker.path().join("pilot.sock")).unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || status(&mut api)
            .subscribers
            .len()
            == 3),
        "three subscribers at the broker: {:?}\n{}",
        status(&mut api),
        broker.logs()
    );

    let payload = "p".repeat(16 * 1024 - 16);
    for seq in 1..=EVENTS {
        let req = Request::Publish {
            peer: None,
            topic: "load.x".into(),
            data: format!("{seq:08}{payload}"),
        };
        let p: PublishedData = api.get(&req).unwrap();
        assert_eq!(p.seq, seq);
        if seq % BATCH == 0 {
            // Pace the publisher to what the two readers take, so only the stalled queue
            // can fill.
            let drained = wait_until(Duration::from_secs(30), || {
                let s = status(&mut api);
                s.subscribers.iter().filter(|s| s.queued == 0).count() >= 2
            });
            assert!(drained, "the readers fell behind: {:?}", status(&mut api));
        }
    }

    let at_end = status(&mut api);
    let readers = at_end.subscribers.iter().filter(|s| s.dropped == 0).count();
    let dropping = at_end.subscribers.iter().filter(|s| s.dropped > 0).count();
    assert_eq!(dropping, 1, "only the stalled subscriber drops: {at_end:?}");
    assert!(readers <= 2, "{at_end:?}");
    for (name, reader) in [("node-1", fast_a), ("node-2", fast_c)] {
        let (lines, err) = reader.join().unwrap();
        assert_eq!(
            lines.len() as u64,
            EVENTS,
            "{name} got too few events: {err}"
        );
        for (i, l) in lines.iter().enumerate() {
            assert_eq!(l["type"], "pubsub_event", "{l}");
            assert_eq!(l["broker"], keys[0].as_str());
            let e = &l["event"];
            assert_eq!(e["seq"], i as u64 + 1, "{name}: out of order or a gap");
            assert_eq!(e["topic"], "load.x");
            assert_eq!(e["publisher"], keys[0].as_str());
            assert!(e["data"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{:08}", i + 1)));
        }
    }
    let s = status(&mut api);
    assert_eq!(s.drop_policy, "drop_newest");
    assert_eq!(s.topics[0].seq, EVENTS);
    // The readers' subscriptions ended with their `--count`; the stalled one remains.
    assert_eq!(s.subscribers.len(), 1, "{s:?}");
    let stalled = &s.subscribers[0];
    assert!(
        stalled.dropped > 0,
        "the stalled subscriber dropped nothing: {s:?}"
    );
    assert_eq!(stalled.peer.map(|k| k.to_string()), Some(keys[1].clone()));
    assert_eq!(
        stalled.delivered + stalled.queued + stalled.dropped,
        EVENTS,
        "every event is delivered, queued or counted as dropped: {s:?}"
    );
    assert_eq!(stalled.patterns, vec!["load.x".to_string()]);
}

#[test]
fn publish_and_subscribe_refuse_bad_topics_and_work_on_the_local_broker() {
    let (homes, keys) = mesh(2, "");
    start_all(&homes);
    let (a, b) = (&homes[0], &homes[1]);
    let (code, v) = a.json(&["publish", "--local", "a.*", "--data", "x"]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["code"], "invalid_argument", "{v}");
    assert!(v["message"].as_str().unwrap().contains("wildcard"), "{v}");
    let (code, v) = a.json(&["subscribe", "node-1", "a.>.b", "--count", "1"]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["code"], "invalid_argument", "{v}");

    // A local subscriber on B, and A publishing on B's broker: the publisher is A's key.
    let local = collect(subscriber(b, "local", "jobs.*", 2));
    assert!(wait_until(Duration::from_secs(10), || {
        b.ok(&["pubsub"])["subscribers"].as_array().unwrap().len() == 1
    }));
    let p = a.ok(&["publish", "node-1", "jobs.new", "--data", "one"]);
    assert_eq!(
        (p["seq"].as_u64(), p["subscribers"].as_u64()),
        (Some(1), Some(1)),
        "{p}"
    );
    assert_eq!(p["broker"], keys[1].as_str());
    b.ok(&["publish", "--local", "jobs.new", "--data", "two"]);
    let (lines, err) = local.join().unwrap();
    assert_eq!(lines.len(), 2, "{err}");
    assert_eq!(lines[0]["event"]["publisher"], keys[0].as_str());
    assert_eq!(lines[0]["event"]["data"], "one");
    assert_eq!(lines[1]["event"]["publisher"], keys[1].as_str());
    assert_eq!(lines[1]["event"]["seq"], 2);
}

/// Waits until `h`'s broker has `n` subscribers.
fn wait_subscribers(h: &Home, n: usize) {
    assert!(
        wait_until(Duration::from_secs(20), || {
            h.ok(&["pubsub"])["subscribers"].as_array().unwrap().len() == n
        }),
        "{} subscribers never reached the broker: {}",
        n,
        h.logs()
    );
}

#[test]
fn a_broker_restart_starts_a_new_epoch_so_a_subscriber_tells_it_from_a_gap() {
    let (mut homes, _) = mesh(2, "");
    start_all(&homes);
    let sub = collect(subscriber(&homes[0], "node-1", "jobs.*", 2));
    wait_subscribers(&homes[1], 1);
    for d in ["one", "two"] {
        homes[1].ok(&["publish", "--local", "jobs.new", "--data", d]);
    }
    let (before, err) = sub.join().unwrap();
    assert_eq!(before.len(), 2, "{err}");
    let epoch = before[0]["event"]["epoch"].as_u64().unwrap();
    assert!(epoch >= 1, "{:?}", before[0]);
    assert_eq!(before[1]["event"]["epoch"], epoch);
    assert_eq!(before[1]["event"]["seq"], 2);

    homes[1].stop_daemon();
    homes[1].ok(&["daemon", "start"]);
    let sub = collect(subscriber(&homes[0], "node-1", "jobs.*", 1));
    wait_subscribers(&homes[1], 1);
    homes[1].ok(&["publish", "--local", "jobs.new", "--data", "three"]);
    let (after, err) = sub.join().unwrap();
    assert_eq!(after.len(), 1, "{err}");
    // Sequence numbers restarted with the broker; the epoch says so.
    assert_eq!(after[0]["event"]["seq"], 1, "{:?}", after[0]);
    assert_eq!(after[0]["event"]["epoch"], epoch + 1, "{:?}", after[0]);
}
