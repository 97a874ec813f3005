//! The PostgreSQL registry store against a real server (unprivileged; each test creates and
//! drops its own database, see tests/support/pg.rs): batches and reloads, first claim wins
//! across instances, notifications between instances, migrations refused when the database is
//! newer, and two in-process registry instances over one database serving a client each.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use pilot::clock::unix_ms_now;
use pilot::identity::{Identity, PublicKey};
use pilot::mapping::Hostname;
use pilot::node::registry_client::ClientEvent;
use pilot::node::trust::TrustStore;
use pilot::registry::pg::PgStore;
use pilot::registry::runner::{RegistryConfig, RegistryServer};
use pilot::registry::store::{HeldKind, HeldMessage, Store, StoreError, StoreOp};
use support::pg::TestDb;
use support::registry_client::{drive, Node};

fn key(n: u8) -> PublicKey {
    Identity::from_seed([n; 32]).public_key()
}

fn name(s: &str) -> Hostname {
    Hostname::new(s).unwrap()
}

#[test]
fn batches_are_applied_and_reloaded_and_presence_elsewhere_is_loaded() {
    let Some(db) = TestDb::create() else { return };
    let (mut a, _rx) = PgStore::connect(&db.url(), "one").unwrap();
    let held = |from: u8, ms: u64| HeldMessage {
        target: key(1),
        from: key(from),
        kind: HeldKind::TrustRequest,
        received_ms: ms,
        original: vec![0x50, from],
    };
    a.apply(&[
        StoreOp::SetName {
            name: name("alpha"),
            key: key(1),
        },
        StoreOp::SetName {
            name: name("beta"),
            key: key(2),
        },
        StoreOp::PutHeld(held(2, 10)),
        StoreOp::PutHeld(held(3, 11)),
        StoreOp::Seen {
            key: key(1),
            unix_ms: 5,
        },
        StoreOp::Seen {
            key: key(2),
            unix_ms: 6,
        },
        StoreOp::Presence {
            key: key(1),
            addr: "127.0.0.1:5000".parse().unwrap(),
            unix_ms: 5,
        },
    ])
    .unwrap();
    a.apply(&[
        StoreOp::RemoveName { name: name("beta") },
        StoreOp::PutHeld(held(2, 20)),
        StoreOp::RemoveHeld {
            target: key(1),
            from: key(3),
            kind: HeldKind::TrustRequest,
        },
        StoreOp::Forget { key: key(2) },
        StoreOp::Seen {
            key: key(1),
            unix_ms: 7,
        },
        // A rename: the key's old name goes with the claim.
        StoreOp::SetName {
            name: name("alpha-2"),
            key: key(1),
        },
    ])
    .unwrap();
    let snap = a.load().unwrap();
    assert_eq!(snap.names, vec![(name("alpha-2"), key(1))]);
    assert_eq!(snap.held, vec![held(2, 20)]);
    assert_eq!(snap.seen, vec![(key(1), 7)]);
    // Our own presence is not "elsewhere"; another instance sees it there.
    assert!(snap.elsewhere.is_empty());
    let (b, _rx) = PgStore::connect(&db.url(), "two").unwrap();
    assert_eq!(b.load().unwrap().elsewhere, vec![(key(1), 5)]);
    assert!(b.shared());
}

#[test]
fn a_hostname_claimed_at_the_same_moment_through_two_instances_has_exactly_one_owner() {
    let Some(db) = TestDb::create() else { return };
    let (a, _ra) = PgStore::connect(&db.url(), "one").unwrap();
    let (b, _rb) = PgStore::connect(&db.url(), "two").unwrap();
    let mut stores = vec![a, b];
    let mut wins = [0, 0];
    for round in 0..20u8 {
        let n = name(&format!("contested-{round}"));
        let barrier = Arc::new(Barrier::new(2));
        // Each store goes to a thread of its own; both claim the name at the barrier.
        let handles: Vec<_> = stores
            .drain(..)
            .enumerate()
            .map(|(i, mut st)| {
                let (barrier, n) = (barrier.clone(), n.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let r = st.apply(&[StoreOp::SetName {
                        name: n,
                        key: key(10 + i as u8 + 2 * round),
                    }]);
                    (st, r)
                })
            })
            .collect();
        let mut results = Vec::new();
        for h in handles {
            let (st, r) = h.join().unwrap();
            stores.push(st);
            results.push(r);
        }
        let ok: Vec<usize> = (0..2).filter(|i| results[*i].is_ok()).collect();
        assert_eq!(ok.len(), 1, "round {round}: {results:?}");
        let loser = 1 - ok[0];
        assert!(
            matches!(results[loser], Err(StoreError::Conflict { .. })),
            "{results:?}"
        );
        wins[ok[0]] += 1;
        let snap = stores[0].load().unwrap();
        let owner = snap.names.iter().find(|(m, _)| *m == n).unwrap().1;
        assert_eq!(owner, key(10 + ok[0] as u8 + 2 * round));
    }
    eprintln!("wins per instance: {wins:?}");
}

#[test]
fn a_change_committed_by_one_instance_reaches_the_other_by_notification() {
    let Some(db) = TestDb::create() else { return };
    let (mut a, _ra) = PgStore::connect(&db.url(), "one").unwrap();
    let (_b, mut rb) = PgStore::connect(&db.url(), "two").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut lat = Vec::new();
    for i in 0..20u8 {
        let op = StoreOp::Forward {
            target: key(i),
            datagram: vec![i; 100],
            endpoint: None,
        };
        let t = Instant::now();
        a.apply(std::slice::from_ref(&op)).unwrap();
        let got = rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(5), rb.recv()).await })
            .expect("no notification within 5 s")
            .unwrap();
        lat.push(t.elapsed());
        assert_eq!(got.op, op);
    }
    lat.sort();
    eprintln!(
        "commit + notification: p50 {:?}, max {:?}",
        lat[lat.len() / 2],
        lat[lat.len() - 1]
    );
    // The bound is 100 ms; the median must be far inside it even on a busy machine.
    assert!(lat[lat.len() / 2] < Duration::from_millis(100), "{lat:?}");
}

#[test]
fn a_database_whose_schema_is_newer_than_the_binary_is_refused() {
    let Some(db) = TestDb::create() else { return };
    drop(PgStore::connect(&db.url(), "one").unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (c, conn) = tokio_postgres::connect(&db.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        c.batch_execute("INSERT INTO pilot_schema VALUES (999, 0)")
            .await
            .unwrap();
    });
    let e = PgStore::connect(&db.url(), "one").unwrap_err();
    assert!(
        matches!(e, StoreError::SchemaTooNew { found: 999, .. }),
        "{e}"
    );
    let p = pilot::error::PilotError::from(e);
    assert!(p.hint.contains("newer pilotctl"), "{}", p.hint);
}

async fn instance(
    db: &TestDb,
    name: &str,
    key_file: &std::path::Path,
    dir: &std::path::Path,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let mut cfg = RegistryConfig::new("127.0.0.1:0".parse().unwrap(), dir.join(name));
    cfg.store = Some(db.url());
    cfg.instance = Some(name.into());
    cfg.key_file = Some(key_file.into());
    let server = RegistryServer::bind(cfg).await.unwrap();
    let addr = server.local_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    (addr, tx)
}

#[tokio::test]
async fn two_instances_over_one_database_pass_lookups_trust_and_endpoints_between_their_nodes() {
    let Some(db) = TestDb::create() else { return };
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("registry.key");
    let (one, _stop1) = instance(&db, "one", &key_file, dir.path()).await;
    let (two, _stop2) = instance(&db, "two", &key_file, dir.path()).await;
    // The orchestrator knows only instance one, the worker only instance two.
    let mut a = Node::new(1, one, "orchestrator").await;
    let mut b = Node::new(2, two, "worker-node").await;
    let (ka, kb) = (a.client.public_key(), b.client.public_key());
    drive(&mut [&mut a, &mut b], "registration", |n| {
        n.iter()
            .all(|x| x.has(|e| matches!(e, ClientEvent::Registered { .. })))
    })
    .await;
    // Both instances answer with the one shared key.
    assert_eq!(a.client.registry_key(one), b.client.registry_key(two));

    // A name claimed at instance two resolves at instance one.
    let op = a.client.lookup(Instant::now(), name("worker-node"));
    drive(&mut [&mut a, &mut b], "lookup", |n| {
        n[0].has(
            |e| matches!(e, ClientEvent::LookupResult { op: o, key, .. } if *o == op && *key == kb),
        )
    })
    .await;

    // A trust request sent to instance one reaches the worker through instance two.
    let mut ta = TrustStore::in_memory(ka);
    let mut tb = TrustStore::in_memory(kb);
    a.send_trust(
        ta.request(kb, None, "cross-instance", unix_ms_now())
            .unwrap(),
    );
    let t = Instant::now();
    drive(&mut [&mut a, &mut b], "the pushed trust request", |n| {
        n[1].has(|e| matches!(e, ClientEvent::TrustRequestReceived { from, .. } if *from == ka))
    })
    .await;
    eprintln!("trust request crossed instances in {:?}", t.elapsed());
    assert!(
        b.has(|e| matches!(e,
        ClientEvent::TrustRequestReceived { hostname: Some(h), .. } if *h == name("orchestrator")))
    );
    b.trust_effects(&mut tb);
    b.send_trust(tb.approve(&ka, unix_ms_now()).unwrap());
    drive(&mut [&mut a, &mut b], "the pushed trust response", |n| {
        n[0].has(|e| matches!(e, ClientEvent::TrustResponseReceived { from, .. } if *from == kb))
    })
    .await;

    // An endpoint exchange crosses instances both ways.
    a.client.set_trusted(kb, true);
    b.client.set_trusted(ka, true);
    a.client.request_endpoints(Instant::now(), kb);
    drive(&mut [&mut a, &mut b], "the endpoint answer", |n| {
        n[0].has(|e| matches!(e, ClientEvent::EndpointInfo { .. }))
    })
    .await;
    assert!(b.has(|e| matches!(e, ClientEvent::EndpointRequested { .. })));
}

fn pilotctl_json(args: &[&str]) -> (i32, serde_json::Value) {
    let out = std::process::Command::new(support::home::BIN)
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    let code = out.status.code().unwrap_or(-1);
    let text = if code == 0 { &out.stdout } else { &out.stderr };
    let v = serde_json::from_slice(text).unwrap_or_else(|e| {
        panic!("not JSON ({e}): {}", String::from_utf8_lossy(text));
    });
    (code, v)
}

#[test]
fn registry_run_with_a_postgres_store_and_registry_status_show_both_instances() {
    let Some(db) = TestDb::create() else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("registry.key");
    let (url, key) = (db.url(), key.to_str().unwrap().to_string());
    let start = |name: &str| {
        support::registry::Registry::start_with_args(
            std::path::Path::new(support::home::BIN),
            Vec::new(),
            "127.0.0.1:0",
            &["--store", &url, "--instance", name, "--key-file", &key],
        )
    };
    let r1 = start("one");
    let r2 = start("two");
    let both = support::process::wait_until(Duration::from_secs(10), || {
        let (code, v) = pilotctl_json(&["registry", "status", "--store", &url]);
        code == 0
            && v["data"]["cluster"]
                .as_array()
                .is_some_and(|c| c.len() == 2)
    });
    assert!(both, "{}\n{}", r1.log(), r2.log());
    let (_, v) = pilotctl_json(&["registry", "status", "--store", &url]);
    let cluster = v["data"]["cluster"].as_array().unwrap();
    assert_eq!(cluster[0]["instance"], "one");
    assert_eq!(cluster[1]["instance"], "two");
    // One key for the whole cluster.
    assert_eq!(cluster[0]["status"]["key"], cluster[1]["status"]["key"]);
    assert!(cluster[0]["status"]["store"]
        .as_str()
        .unwrap()
        .contains(&db.name));
    // The local view, from the instance's state directory.
    let state = r1.state();
    let (code, v) = pilotctl_json(&["registry", "status", "--state", state.to_str().unwrap()]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["data"]["local"]["instance"], "one");
    // A store that is neither redb nor PostgreSQL is refused at start.
    let out = std::process::Command::new(support::home::BIN)
        .args([
            "--json",
            "registry",
            "run",
            "--listen",
            "127.0.0.1:0",
            "--store",
            "mysql",
        ])
        .arg("--state")
        .arg(dir.path().join("x"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown store"));
}

#[test]
fn parked_holds_are_committed_together_and_each_is_answered_and_kept() {
    use pilot::registry::writer::BatchingStore;
    let Some(db) = TestDb::create() else { return };
    let (pg, _rx) = PgStore::connect(&db.url(), "one").unwrap();
    let mut store = BatchingStore::spawn(Box::new(pg), 1000).unwrap();
    let mut results = store.take_commits().expect("a shared store parks");
    let senders: Vec<PublicKey> = (1..=200u8).map(key).collect();
    let held = |i: usize| HeldMessage {
        target: key(0),
        from: senders[i],
        kind: HeldKind::TrustRequest,
        received_ms: i as u64,
        original: vec![0x50, i as u8],
    };
    let ops: Vec<StoreOp> = (0..200).map(|i| StoreOp::PutHeld(held(i))).collect();
    let start = Instant::now();
    for (ticket, op) in (1..).zip(&ops) {
        assert!(store
            .apply_or_park(std::slice::from_ref(op), ticket)
            .is_none());
    }
    for ticket in 1..=200 {
        let c = results.blocking_recv().expect("a result per parked batch");
        assert_eq!(c.ticket, ticket, "answered in order");
        assert!(c.result.is_ok(), "hold {ticket}: {:?}", c.result);
    }
    eprintln!("200 parked holds committed in {:?}", start.elapsed());
    drop(store);
    let (b, _rx) = PgStore::connect(&db.url(), "two").unwrap();
    let mut got = b.load().unwrap().held;
    got.sort_by_key(|m| m.received_ms);
    assert_eq!(got, (0..200).map(held).collect::<Vec<_>>());
}
