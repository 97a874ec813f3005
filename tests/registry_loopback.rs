//! An in-process registry on UDP loopback with two node clients (the client core over real
//! sockets, tests/support/registry_client.rs): registration, lookup by name, a trust request
//! and its approval, then a graceful stop and a restart on the same state.

mod support;

use std::time::Instant;

use pilot::clock::unix_ms_now;
use pilot::identity::PublicKey;
use pilot::mapping::Hostname;
use pilot::node::registry_client::ClientEvent;
use pilot::node::trust::{TrustEffect, TrustStore};
use pilot::registry::runner::{RegistryConfig, RegistryServer};
use support::registry_client::{drive, Node};

#[tokio::test]
async fn two_clients_register_look_up_and_exchange_trust_over_udp_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("registry");
    let server = RegistryServer::bind(RegistryConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        state.clone(),
    ))
    .await
    .unwrap();
    let addr = server.local_addr();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stop_rx.await;
    }));

    let mut a = Node::new(1, addr, "orchestrator").await;
    let mut b = Node::new(2, addr, "worker-node").await;
    let (ka, kb): (PublicKey, PublicKey) = (a.client.public_key(), b.client.public_key());
    drive(&mut [&mut a, &mut b], "registration", |n| {
        n.iter()
            .all(|x| x.has(|e| matches!(e, ClientEvent::Registered { .. })))
    })
    .await;

    // a looks b up by name: key and address, nothing else.
    let op = a
        .client
        .lookup(Instant::now(), Hostname::new("worker-node").unwrap());
    drive(&mut [&mut a, &mut b], "the lookup", |n| {
        n[0].has(|e| matches!(e, ClientEvent::LookupResult { op: o, .. } if *o == op))
    })
    .await;
    assert!(a.has(|e| matches!(e,
        ClientEvent::LookupResult { key, addr48, .. } if *key == kb && *addr48 == kb.addr48())));

    // a asks b for trust; b approves; both trust each other.
    let mut ta = TrustStore::in_memory(ka);
    let mut tb = TrustStore::in_memory(kb);
    a.events.clear();
    b.events.clear();
    a.send_trust(
        ta.request(kb, None, "I run your jobs", unix_ms_now())
            .unwrap(),
    );
    drive(&mut [&mut a, &mut b], "the trust request", |n| {
        n[1].has(|e| matches!(e, ClientEvent::TrustRequestReceived { .. }))
    })
    .await;
    assert!(b.has(|e| matches!(e,
        ClientEvent::TrustRequestReceived { from, hostname: Some(h), justification, .. }
            if *from == ka && h.as_str() == "orchestrator" && justification == "I run your jobs")));
    let fx = b.trust_effects(&mut tb);
    assert!(matches!(fx[..], [TrustEffect::AwaitingApproval { .. }]));
    b.send_trust(tb.approve(&ka, unix_ms_now()).unwrap());
    drive(&mut [&mut a, &mut b], "the trust response", |n| {
        n[0].has(|e| matches!(e, ClientEvent::TrustResponseReceived { .. }))
    })
    .await;
    let fx = a.trust_effects(&mut ta);
    assert_eq!(fx, vec![TrustEffect::Trusted(kb)]);
    assert!(ta.is_trusted(&kb) && tb.is_trusted(&ka));

    // Graceful stop, then a restart on the same state: the names survived.
    stop_tx.send(()).unwrap();
    task.await.unwrap().unwrap();
    let server = RegistryServer::bind(RegistryConfig::new(addr, state))
        .await
        .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stop_rx.await;
    }));
    let mut c = Node::new(3, addr, "newcomer").await;
    drive(&mut [&mut c], "the newcomer's registration", |n| {
        n[0].has(|e| matches!(e, ClientEvent::Registered { .. }))
    })
    .await;
    let op = c
        .client
        .lookup(Instant::now(), Hostname::new("orchestrator").unwrap());
    drive(&mut [&mut c], "the lookup after the restart", |n| {
        n[0].has(
            |e| matches!(e, ClientEvent::LookupResult { op: o, key, .. } if *o == op && *key == ka),
        )
    })
    .await;
    stop_tx.send(()).unwrap();
    task.await.unwrap().unwrap();
}
